#!/usr/bin/env node
// Opens Skylark's studio in headless Chromium (the Debian package) signed in with a
// token, goes live in the creator's room with the fake camera and microphone, and
// reports one JSON object per line on stdout, for tests in other languages
// (tests/turn_embedded.rs) to drive a broadcaster inside a network namespace:
//
//   {"type":"live","t":…}                          the studio is live
//   {"type":"error","error":"…"}                   it could not go live
//
//   node tests/e2e/lib/studio-cli.js http://HOST:PORT/studio TOKEN [--insecure-origin]
//
// --insecure-origin: the page's origin counts as secure (getUserMedia needs one; a
// namespace's address is not localhost). Runs until stdin closes or SIGTERM.

import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, exitWithParent, noBrowser } from './browser.js';

const [url, token] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
if (!url || !token) {
  console.error('usage: studio-cli.js STUDIO_URL TOKEN [--insecure-origin]');
  process.exit(2);
}
const why = noBrowser();
if (why) {
  out({ type: 'error', error: why });
  process.exit(3);
}
const extra = process.argv.includes('--insecure-origin') ? [`--unsafely-treat-insecure-origin-as-secure=${new URL(url).origin}`] : [];
const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, ...extra], timeout: 30_000 });
exitWithParent(() => browser.close());

try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  await context.addInitScript(`localStorage.setItem('skylark.access_token', ${JSON.stringify(token)})`);
  const page = await context.newPage();
  page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`pageerror: ${e.stack ?? e}`));
  await page.goto(url, { timeout: 15_000, waitUntil: 'domcontentloaded' });
  await page.locator('#room').waitFor({ state: 'visible', timeout: 15_000 });
  await page.getByLabel('Resolution', { exact: true }).selectOption('640x360');
  await page.getByRole('button', { name: 'Start camera & mic' }).click();
  await page.waitForFunction(() => !!window.studio.media.camera && !!window.studio.media.mic, null, { timeout: 15_000 });
  await page.getByRole('button', { name: 'Go live' }).click();
  const status = await page.waitForFunction(() => ['live', 'error'].includes(window.studio.state.status) && window.studio.state.status, null, { timeout: 20_000 });
  if ((await status.jsonValue()) !== 'live') throw new Error(await page.evaluate(() => String(window.studio.state.error)));
  out({ type: 'live', t: Date.now() });
} catch (e) {
  out({ type: 'error', error: String(e?.message ?? e) });
}
