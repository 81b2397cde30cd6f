// HTTP-FLV and WS-FLV with a real player: Debian FFmpeg pushes H.264 + AAC over RTMP,
// and mpegts.js (from npm) in Chromium plays /flv/{room}.flv over HTTP and over a
// WebSocket: time advances, the picture has the source's size.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { noBrowser, pollPage } from '../lib/browser.js';
import { withCleanup } from '../lib/harness.js';
import { serverAndBrowser, creatorWithRoom, rtmpPush } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('RTMP (FFmpeg) → HTTP-FLV and WS-FLV play in mpegts.js', { timeout: 90_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b } = await serverAndBrowser(defer, 'flv');
    const { created, room } = await creatorWithRoom(sk, 'flv');
    rtmpPush(defer, sk, created.stream_key, { seconds: 40 });

    const url = `${sk.baseUrl}/flv/${room}.flv`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await fetch(`${sk.baseUrl}/hls/${room}/index.m3u8`).catch(() => null);
      if (r?.ok) break;
      if (Date.now() > deadline) throw new Error(`room never packaged; server log ${sk.logFile}`);
      await sleep(250);
    }
    for (const [label, src] of [['HTTP-FLV', url], ['WS-FLV', url.replace(/^http/, 'ws')]]) {
      const player = await b.newPage('flv.html', { src }, { tag: label });
      const first = await pollPage(player, () => window.stats(), (s) => s.currentTime > 0.5 && s.videoWidth > 0, {
        timeoutMs: 20_000,
        what: `mpegts.js over ${label}`,
      });
      await sleep(2000);
      const second = await player.evaluate(() => window.stats());
      assert.equal(second.error, null, `${label}: ${second.error}`);
      assert.ok(second.currentTime > first.currentTime + 0.5, `${label} advances: ${first.currentTime} → ${second.currentTime}`);
      assert.equal(second.videoWidth, 640);
      await player.close();
    }
  }),
);
