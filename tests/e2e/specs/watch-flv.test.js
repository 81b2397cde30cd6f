// The player's third fallback: HTTP-FLV with mpegts.js. Debian FFmpeg publishes H.264 +
// AAC over RTMP; the player (/watch/{room}) is opened in a page without RTCPeerConnection
// and with every /hls/ request failing, and must end up playing over FLV by itself (time
// advancing, the source's picture size, "FLV (mpegts.js)" shown with a latency). Then
// `?transports=flv,hls` puts FLV first even where WebRTC and HLS would work.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { noBrowser } from '../lib/browser.js';
import { requestJson, artifactPath } from '../lib/server.js';
import { withCleanup, reportTimings, span } from '../lib/harness.js';
import { until, screenshot } from '../lib/app.js';
import { serverAndApp, creatorWithRoom, rtmpPush } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const stats = () => window.player.stats();

/** Waits until the player plays over FLV, then checks time keeps advancing for 2 s. */
async function waitPlayingFlv(page, what) {
  const first = await until(page, stats, (s) => s.status === 'playing' && s.transport === 'flv' && s.videoWidth > 0 && s.currentTime > 0.3, {
    what: `${what} playing over FLV`,
    timeoutMs: 30_000,
    intervalMs: 250,
  });
  await page.waitForTimeout(2000);
  const second = await page.evaluate(stats);
  assert.ok(second.currentTime > first.currentTime + 1, `${what}: time advances (${first.currentTime} → ${second.currentTime})`);
  assert.equal(second.transport, 'flv', `${what}: still on FLV`);
  assert.equal(second.videoWidth, 640, `${what}: the source's width`);
  assert.equal(await page.locator('#stat-transport').innerText(), 'FLV (mpegts.js)');
  return { first, second };
}

test('watch: without WebRTC and with HLS failing, the player falls back to HTTP-FLV (mpegts.js) by itself; ?transports= orders the fallbacks', { timeout: 120_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b, app } = await serverAndApp(defer, 'watch-flv');
    const { created, room } = await creatorWithRoom(sk, 'Watch e2e: FLV');
    const ffLog = artifactPath('watch-flv-ffmpeg.log');
    rtmpPush(defer, sk, created.stream_key, { seconds: 90, loglevel: 'warning', stdio: ['ignore', 'ignore', fs.openSync(ffLog, 'w')] });
    const explain = (e) => {
      e.message += `\n  server log: ${sk.logFile}\n  ffmpeg log: ${ffLog}\n  page console: ${app.logFile}`;
      throw e;
    };

    try {
      const deadline = Date.now() + 20_000;
      while ((await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`)).json?.live !== true) {
        if (Date.now() > deadline) throw new Error('the RTMP publish never made the room live');
        await sleep(200);
      }

      // No WebRTC, HLS failing: FLV by itself.
      const tOpen = Date.now();
      const hlsRequests = [];
      const viewer = await app.open(`${sk.baseUrl}/watch/${room}`, {
        tag: 'viewer-flv-fallback',
        initScript: 'delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;',
        setup: (context) =>
          context.route('**/hls/**', (r) => {
            hlsRequests.push(r.request().url());
            return r.abort();
          }),
      });
      const { second } = await waitPlayingFlv(viewer, 'viewer without WebRTC, HLS failing');
      assert.ok(hlsRequests.length > 0, 'HLS was tried before FLV');
      assert.ok(second.sessions.hls >= 1 && second.sessions.webrtc === 0, `sessions ${JSON.stringify(second.sessions)}`);
      assert.match(second.fallbackReason ?? '', /HLS could not be played/);
      assert.match(await viewer.locator('#fallback-note').innerText(), /Playing FLV .*because .*HLS could not be played/);
      const lat = await until(viewer, () => window.player.state.latencyMs, (ms) => ms !== null && ms >= 0 && ms < 10_000, { what: 'FLV latency shown' });
      assert.match(await viewer.locator('#stat-latency').innerText(), /≈ \d/);
      const events = await viewer.evaluate(() => window.player.state.events);
      const tFallback = events.findLast((e) => e.name === 'fallback')?.t;
      const tFrame = events.find((e) => e.name === 'firstFrame')?.t;
      await screenshot(viewer, 'watch-flv');

      // FLV first by choice, though WebRTC and HLS would work.
      const chosen = await app.open(`${sk.baseUrl}/watch/${room}?transports=flv,hls`, { tag: 'viewer-transports-flv' });
      const picked = await waitPlayingFlv(chosen, 'viewer with ?transports=flv,hls');
      assert.deepEqual(picked.second.sessions, { webrtc: 0, hls: 0, flv: 1 });
      assert.deepEqual(await chosen.evaluate(() => window.player.state.order), ['flv', 'hls']);

      // The aborted /hls/ requests are the only console errors.
      assert.deepEqual(app.unexpectedErrors([/Failed to load resource/]), [], 'no other console errors');
      reportTimings('watch/flv', {
        open_to_flv_playing_ms: span(tOpen, tFrame),
        hls_fallback_to_flv_playing_ms: span(tFallback, tFrame),
        flv_latency_ms: lat,
      });
    } catch (e) {
      explain(e);
    }
  }),
);
