#!/usr/bin/env node
// Opens a Skylark watch page in headless Chromium (the Debian package, never a
// download) and reports what the player does, one JSON object per line on stdout,
// for tests in other languages (tests/cascade_netns.rs) to read:
//
//   {"type":"ready","version":"156.…"}                     the page is open
//   {"type":"whep","t":…,"sent":…,"status":201,"node":"sfu-2"}   each WHEP answer (sent: when its POST left) and its serving node
//   {"type":"event","t":…,"name":"reconnect","detail":…}   each player event (window.player.state.events)
//   {"type":"stats","t":…,"framesDecoded":…,"status":…,"transport":…,"pair":…}   every --every ms;
//     pair: the selected ICE candidate pair of the page's live peer connection, from getStats
//     ({protocol, localType, remoteType, relayProtocol, remotePort}), or null
//   {"type":"timecode","t":…,"latencies":[…],"misreads":…}   with --timecode, every --every ms: the
//     glass-to-glass latency (ms) of each new frame shown, read the way pages/latency-sink.html
//     does: the wall clock when requestVideoFrameCallback reports the frame − the time drawn
//     on it by a pages/latency-source.html publisher (source-cli.js; one machine, one clock)
//
//   node tests/e2e/lib/watch-cli.js http://127.0.0.1:PORT/watch/ROOM [--every 500] [--api URL] [--ignore-certificate-errors] [--timecode]
//
// With --api (services run apart, no ingress in front), the page's /api requests go to
// that API base the way the Helm chart's ingress routes them: /api/v1/rooms/*/playback
// stays with signaling (the page's origin), the rest of /api goes to the API.
//
// It runs until stdin closes (the parent went away) or SIGTERM, and closes the browser.

import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, exitWithParent, noBrowser } from './browser.js';

const args = process.argv.slice(2);
const url = args.find((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const everyAt = args.indexOf('--every');
const every = everyAt >= 0 ? Number(args[everyAt + 1]) : 500;
// --ignore-certificate-errors: passed to Chromium (a test's self-signed `turns:` certificate).
const extraArgs = args.includes('--ignore-certificate-errors') ? ['--ignore-certificate-errors'] : [];
const timecode = args.includes('--timecode');
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

const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 30_000 });
exitWithParent(() => browser.close());

// --timecode injects its reader as an inline script, which the page's CSP forbids.
const page = await browser.newPage({ bypassCSP: timecode });
// Every peer connection the page makes, so the path it took can be read from getStats.
await page.addInitScript(() => {
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  const pcs = [];
  window.__skylarkPeerConnections = pcs;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      pcs.push(this);
    }
  };
});
page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => console.error(`pageerror: ${e.stack ?? e}`));
const whepSent = new Map();
page.on('request', (req) => {
  if (req.method() === 'POST' && new URL(req.url()).pathname.startsWith('/whep/')) whepSent.set(req, Date.now());
});
page.on('response', (res) => {
  const req = res.request();
  if (req.method() === 'POST' && new URL(req.url()).pathname.startsWith('/whep/')) {
    out({ type: 'whep', t: Date.now(), sent: whepSent.get(req) ?? null, status: res.status(), node: res.headers()['skylark-node'] ?? null });
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
if (timecode) await readTimecodes(page);
out({ type: 'ready', version: browser.version() });

/**
 * Reads the time code (pages/timecode.js) off every frame the watch page's <video> shows,
 * as pages/latency-sink.html does, into window.__skylarkTimecode.
 */
async function readTimecodes(page) {
  const code = fs.readFileSync(new URL('../pages/timecode.js', import.meta.url), 'utf8');
  await page.addScriptTag({ type: 'module', content: `${code}\nwindow.__readTimecode = readTimecode;` });
  await page.waitForFunction(() => !!window.__readTimecode, null, { timeout: 5_000 });
  await page.evaluate(() => {
    const video = document.getElementById('video');
    // A quarter of 640x480 each way, as the sink reads it: blocks stay 16x15 px.
    const reader = document.createElement('canvas');
    reader.width = 160;
    reader.height = 120;
    const rctx = reader.getContext('2d', { willReadFrequently: true });
    const tc = { latencies: [], misreads: 0 };
    window.__skylarkTimecode = tc;
    let lastMs = null;
    const onFrame = (_step, meta) => {
      const now = performance.timeOrigin + performance.now();
      video.requestVideoFrameCallback(onFrame);
      rctx.drawImage(video, 0, 0, reader.width, reader.height);
      const read = window.__readTimecode(rctx.getImageData(0, 0, reader.width, reader.height));
      if (read.ms === null) {
        tc.misreads++;
        return;
      }
      // A frame shown twice is one sample; a newer frame than this callback's (drawn
      // after it arrived) is measured at its own callback.
      const received = meta.receiveTime ? performance.timeOrigin + meta.receiveTime : null;
      if (read.ms === lastMs || (received !== null && (received < read.ms || received > now))) return;
      lastMs = read.ms;
      tc.latencies.push(now - read.ms);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

const seen = new Set();
for (;;) {
  try {
    const snap = await page.evaluate(async () => {
      const p = window.player;
      if (!p) return null;
      let pair = null;
      const pc = (window.__skylarkPeerConnections ?? []).filter((c) => c.connectionState !== 'closed').at(-1);
      if (pc) {
        const report = await pc.getStats();
        let selected = null;
        report.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) selected = report.get(s.selectedCandidatePairId) ?? selected;
        });
        const local = selected && report.get(selected.localCandidateId);
        const remote = selected && report.get(selected.remoteCandidateId);
        if (local && remote) {
          pair = { protocol: local.protocol, localType: local.candidateType, remoteType: remote.candidateType, relayProtocol: local.relayProtocol ?? null, remotePort: remote.port };
        }
      }
      // The frames read since the last poll (the page keeps no history).
      const tc = window.__skylarkTimecode;
      const timecode = tc && { latencies: tc.latencies.splice(0), misreads: tc.misreads };
      return { stats: await p.stats(), events: p.state.events.slice(), pair, timecode };
    });
    if (snap) {
      // The page keeps its last 300 events: report each once.
      for (const e of snap.events) {
        const key = JSON.stringify(e);
        if (seen.has(key)) continue;
        seen.add(key);
        out({ type: 'event', ...e });
      }
      if (snap.timecode) out({ type: 'timecode', t: Date.now(), ...snap.timecode });
      const s = snap.stats;
      out({ type: 'stats', t: Date.now(), framesDecoded: s.framesDecoded, status: s.status, transport: s.transport, width: s.videoWidth, pair: snap.pair });
    }
  } catch (e) {
    out({ type: 'error', error: String(e?.message ?? e) });
  }
  await new Promise((r) => setTimeout(r, every));
}
