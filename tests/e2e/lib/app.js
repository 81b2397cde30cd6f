// The product's own pages (/, /studio, /watch/{room}) served by the skylark binary, opened
// in the harness' Chromium: one browser context per "person", every console line logged
// to an artifact, console errors and uncaught page errors collected so a spec can assert
// there are none.

import fs from 'node:fs';
import { artifactPath, ARTIFACTS_DIR } from './server.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Wraps a browser from `launchBrowser()` for opening the server's pages.
 * @param {{browser: import('playwright-core').Browser}} b
 * @param {string} label artifact name prefix
 */
export function appBrowser(b, label) {
  const logFile = artifactPath(`${label}-app-console.log`);
  const log = fs.createWriteStream(logFile);
  const contexts = [];
  /** {tag, type, text} for console.error and uncaught exceptions, in every page. */
  const errors = [];
  let n = 0;
  return {
    logFile,
    errors,
    /**
     * Opens `url` in a fresh context (its own storage, like another person).
     * `initScript` runs before the page's scripts (e.g. to remove RTCPeerConnection);
     * `setup(context)` runs before the page opens (e.g. `context.route(…)` to fail requests).
     */
    async open(url, { tag, initScript, viewport, setup } = {}) {
      const id = tag ?? `page#${++n}`;
      const context = await b.browser.newContext(viewport ? { viewport } : {});
      contexts.push(context);
      context.setDefaultTimeout(20_000);
      if (initScript) await context.addInitScript(initScript);
      if (setup) await setup(context);
      const page = await context.newPage();
      const at = () => new Date().toISOString();
      page.on('console', (m) => {
        log.write(`[${at()}] ${id} console.${m.type()}: ${m.text()}\n`);
        if (m.type() === 'error') errors.push({ tag: id, type: 'console.error', text: m.text(), url: m.location()?.url });
      });
      page.on('pageerror', (e) => {
        log.write(`[${at()}] ${id} pageerror: ${e.stack ?? e}\n`);
        errors.push({ tag: id, type: 'pageerror', text: String(e.message ?? e) });
      });
      page.on('requestfailed', (r) => log.write(`[${at()}] ${id} requestfailed ${r.method()} ${r.url()}: ${r.failure()?.errorText}\n`));
      page.on('response', (r) => {
        if (r.status() >= 400) log.write(`[${at()}] ${id} HTTP ${r.status()} ${r.request().method()} ${r.url()}\n`);
      });
      page.on('crash', () => log.write(`[${at()}] ${id} CRASHED\n`));
      log.write(`[${at()}] ${id} open ${url}\n`);
      const res = await page.goto(url, { timeout: 15_000, waitUntil: 'domcontentloaded' });
      if (!res || res.status() !== 200) throw new Error(`opening ${url} returned ${res?.status()}`);
      return page;
    },
    /** Console errors and page errors, minus those matching `allowed` (RegExps). */
    unexpectedErrors(allowed = []) {
      return errors.filter((e) => !allowed.some((re) => re.test(e.text)));
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await new Promise((r) => log.end(r));
    },
  };
}

/**
 * Polls `fn(arg)` in the page until `done(value)`; fails with the last value (and the
 * page's visible message, if any) after `timeoutMs`.
 */
export async function until(page, fn, done, { timeoutMs = 20_000, what, intervalMs = 200, arg } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await page.evaluate(fn, arg);
    if (done(last)) return last;
    if (Date.now() > deadline) {
      const shown = await page
        .locator('#message:visible')
        .textContent({ timeout: 500 })
        .catch(() => null);
      throw new Error(`${what}: not reached within ${timeoutMs / 1000} s; last ${JSON.stringify(last).slice(0, 1500)}${shown ? `; page says: ${shown}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Saves a full-page PNG under artifacts/ and returns its path. */
export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = artifactPath(`${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
