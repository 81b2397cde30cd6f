#!/usr/bin/env node
// Opens a Skylark watch page in headless Chromium (the Debian package, never a
// download) and reports what the player does, one JSON object per line on stdout,
// for tests in other languages (tests/cascade_netns.rs) to read:
//
//   {"type":"ready","version":"156.…"}                     the page is open
//   {"type":"whep","status":201,"node":"sfu-2"}            each WHEP answer and its serving node
//   {"type":"event","t":…,"name":"reconnect","detail":…}   each player event (window.player.state.events)
//   {"type":"stats","t":…,"framesDecoded":…,"status":…,"transport":…}   every --every ms
//
//   node tests/e2e/lib/watch-cli.js http://127.0.0.1:PORT/watch/ROOM [--every 500] [--api URL]
//
// With --api (services run apart, no ingress in front), the page's /api requests go to
// that API base the way the Helm chart's ingress routes them: /api/v1/rooms/*/playback
// stays with signaling (the page's origin), the rest of /api goes to the API.
//
// It runs until stdin closes (the parent went away) or SIGTERM, and closes the browser.

import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, noBrowser } from './browser.js';

const args = process.argv.slice(2);
const url = args.find((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const everyAt = args.indexOf('--every');
const every = everyAt >= 0 ? Number(args[everyAt + 1]) : 500;
const apiAt = args.indexOf('--api');
const api = apiAt >= 0 ? args[apiAt + 1] : null;
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

if (!url) {
  console.error('usage: watch-cli.js WATCH_URL [--every MS]');
  process.exit(2);
}
const why = noBrowser();
if (why) {
  out({ type: 'error', error: why });
  process.exit(3);
}

const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
let closing = false;
const close = async (code) => {
  if (closing) return;
  closing = true;
  await browser.close().catch(() => {});
  process.exit(code);
};
process.on('SIGTERM', () => close(0));
process.on('SIGINT', () => close(0));
// The parent holds our stdin: when it dies, so do we (and the browser with us).
process.stdin.on('end', () => close(0));
process.stdin.resume();

const page = await browser.newPage();
page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => console.error(`pageerror: ${e.stack ?? e}`));
page.on('response', (res) => {
  const req = res.request();
  if (req.method() === 'POST' && new URL(req.url()).pathname.startsWith('/whep/')) {
    out({ type: 'whep', status: res.status(), node: res.headers()['skylark-node'] ?? null });
  }
});
if (api) {
  await page.route('**/api/**', async (route) => {
    const u = new URL(route.request().url());
    if (/^\/api\/v1\/rooms\/[^/]+\/playback$/.test(u.pathname)) return route.continue();
    try {
      const response = await route.fetch({ url: new URL(u.pathname + u.search, api).toString() });
      await route.fulfill({ response });
    } catch {
      await route.abort();
    }
  });
}
await page.goto(url, { timeout: 15_000, waitUntil: 'domcontentloaded' });
out({ type: 'ready', version: browser.version() });

const seen = new Set();
for (;;) {
  try {
    const snap = await page.evaluate(async () => {
      const p = window.player;
      if (!p) return null;
      return { stats: await p.stats(), events: p.state.events.slice() };
    });
    if (snap) {
      // The page keeps its last 300 events: report each once.
      for (const e of snap.events) {
        const key = JSON.stringify(e);
        if (seen.has(key)) continue;
        seen.add(key);
        out({ type: 'event', ...e });
      }
      const s = snap.stats;
      out({ type: 'stats', t: Date.now(), framesDecoded: s.framesDecoded, status: s.status, transport: s.transport, width: s.videoWidth });
    }
  } catch (e) {
    out({ type: 'error', error: String(e?.message ?? e) });
  }
  await new Promise((r) => setTimeout(r, every));
}
