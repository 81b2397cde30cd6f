// Headless Chromium (the Debian package) driven by playwright-core, plus a tiny static
// server for pages/ on http://127.0.0.1:<port> (a secure context, so getUserMedia works).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import { once } from 'node:events';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { E2E_DIR, artifactPath } from './server.js';

export const PAGES_DIR = path.join(E2E_DIR, 'pages');
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

const LAUNCH_TIMEOUT_MS = 30_000;

/** Why browser tests can't run here, or null. For `test(name, {skip: noBrowser()})`. */
export function noBrowser() {
  if (process.env.SKYLARK_E2E_SKIP_BROWSER) return `SKYLARK_E2E_SKIP_BROWSER set: ${process.env.SKYLARK_E2E_SKIP_BROWSER}`;
  if (!fs.existsSync(CHROMIUM_PATH)) return `no Chromium at ${CHROMIUM_PATH} (apt-get install chromium)`;
  return null;
}

/**
 * For the *-cli.js scripts other languages' tests run: on SIGTERM, SIGINT or the end of
 * stdin (the parent holds it: when it dies, so do we), runs `cleanup` (closes the
 * browser) once and exits.
 */
export function exitWithParent(cleanup) {
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    await Promise.resolve()
      .then(cleanup)
      .catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  process.stdin.on('end', close);
  process.stdin.resume();
}

/** Browser libraries from npm (package-lock.json pins them), served at fixed paths. */
const VENDOR = {
  '/vendor/hls.js': 'hls.js/dist/hls.min.js',
  '/vendor/mpegts.js': 'mpegts.js/dist/mpegts.js',
  '/vendor/shaka-player.js': 'shaka-player/dist/shaka-player.compiled.js',
  // The debug build logs why Shaka stalls or skips (pages/latency-player.html?debug=1).
  '/vendor/shaka-player.debug.js': 'shaka-player/dist/shaka-player.compiled.debug.js',
  // video.js with VHS (its HLS/DASH engine) bundled.
  '/vendor/video.js': 'video.js/dist/video.min.js',
};

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** Serves pages/ (read-only, no directory listing) on 127.0.0.1:<free port>. */
export async function startPageServer() {
  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://127.0.0.1');
    // npm-installed browser libraries, by exact name only (no path from the request).
    const vendor = VENDOR[u.pathname];
    if (vendor && req.method === 'GET') {
      try {
        const body = await fsp.readFile(path.join(E2E_DIR, 'node_modules', vendor));
        res.writeHead(200, { 'content-type': TYPES['.js'], 'cache-control': 'no-store' });
        res.end(body);
      } catch {
        res.writeHead(404).end('not installed: run npm ci in tests/e2e');
      }
      return;
    }
    const rel = path.normalize(decodeURIComponent(u.pathname)).replace(/^([/\\])+/, '') || 'index.html';
    const file = path.join(PAGES_DIR, rel);
    if (!file.startsWith(PAGES_DIR + path.sep) || req.method !== 'GET') {
      res.writeHead(404).end('not found');
      return;
    }
    try {
      const body = await fsp.readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    url: (page, params = {}) => {
      const u = new URL(`/${page}`, origin);
      for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
      return u.toString();
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

/**
 * Launches headless Chromium with the fake camera/mic flags and starts the page server.
 * Playwright's `launch` gives every launch a fresh temporary user-data dir (removed on
 * close), so no profile state leaks between runs.
 * @param {{label?: string, args?: string[]}} [opts] (args: extra Chromium flags)
 */
export async function launchBrowser(opts = {}) {
  const why = noBrowser();
  if (why) throw new Error(why);
  const label = opts.label ?? 'browser';
  const t0 = performance.now();
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS, ...(opts.args ?? [])],
    timeout: LAUNCH_TIMEOUT_MS,
  });
  const launchMs = Math.round(performance.now() - t0);
  const pages = await startPageServer();
  const logFile = artifactPath(`${label}-console.log`);
  const log = fs.createWriteStream(logFile);
  log.write(`# ${CHROMIUM_PATH} ${browser.version()} pages on ${pages.origin}\n`);
  const contexts = [];
  let n = 0;

  return {
    browser,
    version: browser.version(),
    launchMs,
    origin: pages.origin,
    logFile,
    /**
     * Opens pages/<name>?params in its own browser context (its own cookies and
     * storage, like a separate user) and logs its console to the artifacts log.
     */
    async newPage(name, params = {}, { tag } = {}) {
      const id = tag ?? `${name.replace(/\.html$/, '')}#${++n}`;
      const context = await browser.newContext();
      contexts.push(context);
      context.setDefaultTimeout(20_000);
      const page = await context.newPage();
      page.on('console', (m) => log.write(`[${new Date().toISOString()}] ${id} console.${m.type()}: ${m.text()}\n`));
      page.on('pageerror', (e) => log.write(`[${new Date().toISOString()}] ${id} pageerror: ${e.stack ?? e}\n`));
      page.on('crash', () => log.write(`[${new Date().toISOString()}] ${id} CRASHED\n`));
      const url = pages.url(name, params);
      log.write(`[${new Date().toISOString()}] ${id} open ${url}\n`);
      // Not 'load': a <video> with a srcObject delays the load event until its first
      // frame, which never comes when playback fails. Module scripts have run by
      // DOMContentLoaded, so window.state exists then.
      const res = await page.goto(url, { timeout: 10_000, waitUntil: 'domcontentloaded' });
      if (!res || res.status() !== 200) throw new Error(`opening ${name} returned ${res?.status()}`);
      return page;
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await browser.close().catch(() => {});
      await pages.close();
      await new Promise((r) => log.end(r));
    },
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn()` in the page (a function returning a JSON-able value) until `done(value)`
 * is true. Throws at once if `value.error` is set, or after `timeoutMs` with the last
 * value in the message.
 */
export async function pollPage(page, fn, done, { timeoutMs, what, intervalMs = 100 }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await page.evaluate(fn);
    if (last?.error) throw new Error(`${what}: ${last.error}`);
    if (done(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached within ${timeoutMs / 1000} s; last state ${JSON.stringify(last)}`);
    }
    await sleep(intervalMs);
  }
}

/** Waits until `window.state.status` is one of `wanted` (fails fast on `error`). */
export function waitForStatus(page, wanted, { timeoutMs = 20_000, what = 'page' } = {}) {
  const list = Array.isArray(wanted) ? wanted : [wanted];
  return pollPage(page, () => JSON.parse(JSON.stringify(window.state)), (s) => list.includes(s?.status), {
    timeoutMs,
    what: `${what} waiting for status ${list.join('|')}`,
  });
}

/**
 * Waits for a watch page to decode video (videoWidth > 0, framesDecoded > 0), then
 * checks that framesDecoded keeps growing over `growMs`. Returns both samples.
 */
export async function waitForPlayback(page, { timeoutMs = 20_000, growMs = 2000, what = 'viewer' } = {}) {
  const first = await pollPage(page, () => window.stats(), (s) => s.videoWidth > 0 && s.framesDecoded > 0, {
    timeoutMs,
    what: `${what} waiting for decoded frames`,
  });
  await sleep(growMs);
  const second = await page.evaluate(() => window.stats());
  if (second.error) throw new Error(`${what}: ${second.error}`);
  if (!(second.framesDecoded > first.framesDecoded)) {
    throw new Error(
      `${what}: framesDecoded did not grow over ${growMs} ms (${first.framesDecoded} → ${second.framesDecoded}); ${JSON.stringify(second)}`,
    );
  }
  return { first, second };
}
