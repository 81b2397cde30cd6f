// The live DVR window in the player (/watch/{room}): Debian FFmpeg publishes over RTMP
// (1 s keyframes, 1 s HLS segments, so a seek lands on a keyframe soon), and once the
// room has more than a minute of past, two viewers drag the seek bar 60 s back:
//   - one watching over WebRTC: it moves to HLS (hls.js) at the position asked for;
//   - one watching over HLS (?transport=hls): hls.js seeks within its playlist.
// Each then plays from there (frames decode, currentTime advances, the latency read off
// the program date-time is ~60 s), and "Go live" brings it back: the WebRTC viewer to
// WebRTC, the HLS viewer to the HLS live edge, with the latency back near what it was.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { noBrowser } from '../lib/browser.js';
import { requestJson, artifactPath } from '../lib/server.js';
import { withCleanup, reportTimings } from '../lib/harness.js';
import { until, screenshot } from '../lib/app.js';
import { serverFor, browserFor, appFor, creatorWithRoom, rtmpPush, explainFailure } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const stats = () => window.player.stats();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const BACK_S = 60;
/** Past the room needs before the seek: the 60 s asked for and a margin. */
const PAST_S = 68;

async function playing(page, transport, what, timeoutMs = 25_000) {
  return until(page, stats, (s) => s.status === 'playing' && s.transport === transport && s.videoWidth > 0 && s.latencyMs !== null, {
    what: `${what} playing over ${transport}`,
    timeoutMs,
    intervalMs: 250,
  });
}

/** Drags `page`'s seek bar 60 s back and checks it plays from there; returns figures. */
async function rewind(page, what) {
  const before = await page.evaluate(stats);
  assert.equal(before.dvr.shown, true, `${what}: the seek bar shows (${JSON.stringify(before.dvr)})`);
  assert.ok(before.dvr.rangeS >= BACK_S, `${what}: ${before.dvr.rangeS} s to seek in`);
  const t0 = Date.now();
  await page.getByRole('slider', { name: /Position in the stream/ }).fill(String(-BACK_S));
  const back = await until(page, stats, (s) => s.status === 'playing' && s.transport === 'hls' && s.latencyMs > (BACK_S - 10) * 1000, {
    what: `${what} playing ${BACK_S} s back over HLS`,
    timeoutMs: 25_000,
    intervalMs: 250,
  });
  const rewindMs = Date.now() - t0;
  await page.waitForTimeout(3000);
  const later = await page.evaluate(stats);
  assert.equal(later.transport, 'hls', `${what}: still on HLS`);
  assert.ok(later.currentTime > back.currentTime + 1.5, `${what}: time advances from there (${back.currentTime} → ${later.currentTime})`);
  assert.ok(later.framesDecoded > back.framesDecoded, `${what}: frames decode (${back.framesDecoded} → ${later.framesDecoded})`);
  assert.ok(later.latencyMs > (BACK_S - 10) * 1000 && later.latencyMs < (BACK_S + 15) * 1000, `${what}: ~${BACK_S} s behind live, is ${later.latencyMs} ms`);
  assert.equal(later.dvr.goLive, true, `${what}: Go live offered`);
  assert.ok(later.dvr.behindS > BACK_S - 10, `${what}: the seek bar says ${later.dvr.behindS} s behind`);
  assert.match(await page.locator('#seek-label').innerText(), /^−[01]:\d\d$/);
  return { rewindMs, behindLatencyMs: later.latencyMs };
}

test('DVR: viewers seek 60 s back in a live stream, play from there, and Go live returns them (WebRTC to WebRTC, HLS to the live edge)', { timeout: 170_000, skip }, () =>
  withCleanup(async (defer) => {
    const sk = await serverFor(defer, { label: 'dvr', env: { SKYLARK_HLS_SEGMENT_MS: '1000', SKYLARK_DVR_WINDOW_S: '120' } });
    const b = await browserFor(defer, 'dvr');
    const app = appFor(defer, b, 'dvr');
    const { created, room } = await creatorWithRoom(sk, 'DVR e2e');
    const ffLog = artifactPath('dvr-ffmpeg.log');
    rtmpPush(defer, sk, created.stream_key, { seconds: 160, loglevel: 'warning', stdio: ['ignore', 'ignore', fs.openSync(ffLog, 'w')] });
    await explainFailure(
      async () => {
        const deadline = Date.now() + 20_000;
        while ((await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`)).json?.live !== true) {
          if (Date.now() > deadline) throw new Error('the RTMP publish never made the room live');
          await sleep(200);
        }
        const tLive = Date.now();
        const rtc = await app.open(`${sk.baseUrl}/watch/${room}`, { tag: 'viewer-webrtc' });
        const hls = await app.open(`${sk.baseUrl}/watch/${room}?transport=hls`, { tag: 'viewer-hls' });
        await playing(rtc, 'webrtc', 'WebRTC viewer');
        await playing(hls, 'hls', 'HLS viewer');

        // The usual latency of each, sampled while the past builds up.
        const usual = { rtc: [], hls: [] };
        while (Date.now() - tLive < PAST_S * 1000) {
          usual.rtc.push((await rtc.evaluate(stats)).latencyMs);
          usual.hls.push((await hls.evaluate(stats)).latencyMs);
          await sleep(2000);
        }
        const usualRtc = median(usual.rtc.filter((x) => x !== null));
        const usualHls = median(usual.hls.filter((x) => x !== null));
        for (const [page, what] of [[rtc, 'WebRTC viewer'], [hls, 'HLS viewer']]) {
          await until(page, stats, (s) => s.dvr.shown && s.dvr.rangeS >= BACK_S + 2, { what: `${what}: ${BACK_S + 2} s to seek in`, timeoutMs: 15_000 });
        }
        assert.equal((await rtc.evaluate(stats)).dvr.window, 120, 'the window from the multivariant playlist');

        const [r, h] = await Promise.all([rewind(rtc, 'WebRTC viewer'), rewind(hls, 'HLS viewer')]);
        const rtcBack = await rtc.evaluate(stats);
        assert.equal(rtcBack.dvr.returnTo, 'webrtc');
        assert.match(await rtc.locator('#fallback-note').innerText(), /went back in time/);
        await screenshot(rtc, 'dvr-rewound');

        // Go live: the WebRTC viewer back on WebRTC, the HLS one at its live edge.
        const t0 = Date.now();
        await Promise.all([rtc, hls].map((p) => p.getByRole('button', { name: 'Go live' }).click()));
        const rtcLive = await until(rtc, stats, (s) => s.status === 'playing' && s.transport === 'webrtc' && s.latencyMs !== null && s.latencyMs < Math.max(2000, 3 * usualRtc), {
          what: 'WebRTC viewer back on WebRTC at its usual latency',
          timeoutMs: 25_000,
          intervalMs: 250,
        });
        const rtcLiveMs = Date.now() - t0;
        assert.equal(rtcLive.sessions.webrtc, 2, 'a new WebRTC session');
        const hlsLive = await until(hls, stats, (s) => s.status === 'playing' && s.transport === 'hls' && s.latencyMs < usualHls + 3000, {
          what: `HLS viewer back at its usual latency (${usualHls} ms)`,
          timeoutMs: 20_000,
          intervalMs: 250,
        });
        const hlsLiveMs = Date.now() - t0;
        // A jump to the live edge lands past what is buffered: hls.js loads the newest
        // parts first, then plays on.
        const hlsAfter = await until(hls, stats, (s) => s.currentTime > hlsLive.currentTime + 2, {
          what: 'HLS viewer plays on at the live edge',
          timeoutMs: 10_000,
          intervalMs: 250,
        });
        assert.ok(hlsAfter.latencyMs < usualHls + 3000, `HLS latency stays near the usual: ${hlsAfter.latencyMs} ms`);
        assert.equal(hlsAfter.dvr.goLive, false, 'no Go live at the live edge');
        assert.equal(await hls.locator('#seek-label').innerText(), 'Live');
        assert.equal(hlsAfter.sessions.hls, 1, 'the HLS viewer kept its session');

        assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
        reportTimings('dvr', {
          usual_webrtc_latency_ms: usualRtc,
          usual_hls_latency_ms: usualHls,
          webrtc_viewer_rewind_to_playing_ms: r.rewindMs,
          hls_viewer_rewind_to_playing_ms: h.rewindMs,
          behind_latency_ms: [r.behindLatencyMs, h.behindLatencyMs],
          go_live_to_webrtc_ms: rtcLiveMs,
          go_live_to_hls_edge_ms: hlsLiveMs,
          webrtc_latency_after_ms: rtcLive.latencyMs,
          hls_latency_after_ms: hlsAfter.latencyMs,
        });
      },
      () => ({ 'server log': sk.logFile, 'ffmpeg log': ffLog, 'page console': app.logFile }),
    );
  }),
);
