#!/usr/bin/env node
// The studio live in picture-in-picture while each paint takes longer than the frame
// interval (lib/studio.js SLOW_DRAW: every canvas drawImage busy-waits --draw-ms, two a
// paint), as on a starved CPU: how long the page takes to answer an evaluation and to
// run a requestAnimationFrame callback (what Playwright's click waits for), the paints per
// second, and how long a click on Stop takes.
//
//   SKYLARK_BIN=/path/to/skylark node tests/e2e/bench/studio-starved.mjs [--draw-ms 40] [--seconds 12] [--json]
//
// A probe that gets no answer within 15 s says so (`null` in --json).

import { parseArgs } from 'node:util';
import { withCleanup } from '../lib/harness.js';
import { serverAndApp } from '../lib/fixtures.js';
import { goLiveInStudio, openStudioAs, SLOW_DRAW } from '../lib/studio.js';

const { values: opt } = parseArgs({
  options: {
    'draw-ms': { type: 'string', default: '40' },
    seconds: { type: 'string', default: '12' },
    json: { type: 'boolean', default: false },
  },
});
const DRAW_MS = Number(opt['draw-ms']);
const SECONDS = Number(opt.seconds);
const PROBE_CAP_MS = 15_000;
const log = (m) => console.error(`[studio-starved] ${m}`);

/** Milliseconds `fn()` takes, or null past PROBE_CAP_MS. */
async function timed(fn) {
  const t0 = performance.now();
  let timer;
  const capped = new Promise((r) => {
    timer = setTimeout(() => r(null), PROBE_CAP_MS);
  });
  const ms = await Promise.race([fn().then(() => Math.round(performance.now() - t0)), capped]);
  clearTimeout(timer);
  return ms;
}

async function probe(page) {
  const answerMs = await timed(() => page.evaluate(() => 1));
  const frameMs = await timed(() => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r()))));
  return { answerMs, frameMs };
}

const result = await withCleanup(async (defer) => {
  const { sk, app } = await serverAndApp(defer, 'studio-starved');
  const creator = await sk.signup();
  await sk.createRoom(creator.access_token, { title: 'Studio starved' });
  const page = await openStudioAs(app, sk, creator, 'studio', '', { initScript: SLOW_DRAW });
  // No studio.stop() on cleanup: a page that answers nothing would hold it; closing the
  // browser ends the WHIP session.
  await goLiveInStudio(page);
  const idle = await probe(page);
  log(`live, paints at full speed: answer ${idle.answerMs} ms, frame ${idle.frameMs} ms`);
  await page.evaluate((ms) => (window.slowDrawMs = ms), DRAW_MS);
  const t0 = Date.now();
  const probes = [];
  while (Date.now() - t0 < SECONDS * 1000) {
    const tp = Date.now();
    const p = await probe(page);
    await new Promise((r) => setTimeout(r, 2000));
    let calls = null;
    await timed(() => page.evaluate(() => window.slowDraws).then((n) => (calls = n)));
    // Two drawImage calls a paint (camera and screen).
    const paintsPerS = calls === null ? null : Math.round((calls / 2 / ((Date.now() - t0) / 1000)) * 10) / 10;
    const row = { atS: Math.round((tp - t0) / 1000), ...p, paintsPerS };
    probes.push(row);
    log(`+${row.atS} s: answer ${p.answerMs ?? '> 15000'} ms, frame ${p.frameMs ?? '> 15000'} ms, paints/s since slow ${paintsPerS ?? '?'}`);
  }
  const tc = Date.now();
  const stopMs = await page
    .getByRole('button', { name: 'Stop', exact: true })
    .click({ timeout: 20_000 })
    .then(() => Date.now() - tc)
    .catch(() => null);
  log(`Stop click: ${stopMs === null ? 'timed out (20 s)' : `${stopMs} ms`}`);
  return { drawMs: DRAW_MS, idle, probes, stopClickMs: stopMs };
}, { capMs: (SECONDS + 120) * 1000 });

if (opt.json) console.log(JSON.stringify(result));
else console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(0);
