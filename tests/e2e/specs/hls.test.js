// LL-HLS with real players: Chromium publishes its fake camera over WHIP, and another
// page plays the room's /hls/{room}/index.m3u8 with hls.js (from npm) in low-latency
// mode: time advances, no fatal error. Prints the latency hls.js sees (program-date-time
// of the frame on screen vs the wall clock).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noBrowser, waitForStatus, pollPage } from '../lib/browser.js';
import { withCleanup } from '../lib/harness.js';
import { serverAndBrowser, creatorWithRoom } from '../lib/fixtures.js';

const skip = noBrowser() ?? false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('Chromium WHIP publish → hls.js (LL-HLS) plays in another page', { timeout: 90_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b } = await serverAndBrowser(defer, 'hls');
    const { created, room } = await creatorWithRoom(sk, 'hls');

    const publisher = await b.newPage('publish.html', { whip: created.ingest.whip_url, key: created.stream_key }, { tag: 'publisher' });
    defer(() => publisher.evaluate(() => window.stop()).catch(() => {}));
    await waitForStatus(publisher, 'live', { timeoutMs: 20_000, what: 'WHIP publisher' });

    // The packager picks the room up within a second or two.
    const src = `${sk.baseUrl}/hls/${room}/index.m3u8`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await fetch(src).catch(() => null);
      if (r?.ok) break;
      if (Date.now() > deadline) throw new Error(`${src} not available within 20 s (last status ${r?.status}); server log ${sk.logFile}`);
      await sleep(250);
    }

    const player = await b.newPage('hls.html', { src }, { tag: 'hls-player' });
    const first = await pollPage(player, () => window.stats(), (s) => s.currentTime > 0.5 && s.videoWidth > 0, {
      timeoutMs: 20_000,
      what: 'hls.js player',
    });
    assert.equal(first.lowLatencyMode, true);
    await sleep(3000);
    const second = await player.evaluate(() => window.stats());
    assert.equal(second.error, null, `hls.js fatal error: ${second.error}`);
    // Advancing is what counts; how smoothly depends on the machine's load (not asserted).
    assert.ok(second.currentTime > first.currentTime + 0.5, `currentTime advances: ${first.currentTime} → ${second.currentTime}`);
    assert.equal(second.videoWidth, 640);
    console.log(
      `TIMING ${JSON.stringify({ test: 'hls', hlsjs_latency_s: second.latency, behind_wall_clock_ms: second.behindWallClockMs, non_fatal_errors: second.errors })}`,
    );
  }),
);
