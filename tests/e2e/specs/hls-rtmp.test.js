// LL-HLS of RTMP sources with a real player: Debian FFmpeg pushes H.264 over RTMP, with
// and without audio, and hls.js (from npm, low-latency mode) in Chromium plays the
// room's /hls/{room}/index.m3u8: time advances, the picture has the source's size.

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

const cases = [
  // OBS's and FFmpeg's default: the publisher's AAC goes into the HLS as it is.
  {
    name: 'with AAC',
    audio: ['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100', '-c:a', 'aac'],
    codecs: /^CODECS="avc1\.[0-9a-f]{6},mp4a\.40\.2"$/,
  },
  // A screen capture without a mic: no audio track at all.
  { name: 'video only', audio: [], codecs: /^CODECS="avc1\.[0-9a-f]{6}"$/ },
];

for (const c of cases) {
  test(`RTMP (FFmpeg, ${c.name}) → hls.js (LL-HLS) plays`, { timeout: 90_000, skip }, () =>
    withCleanup(async (defer) => {
      const { sk, b } = await serverAndBrowser(defer, 'hls-rtmp');
      const { created, room } = await creatorWithRoom(sk, 'hls-rtmp');
      rtmpPush(defer, sk, created.stream_key, { seconds: 40, audio: c.audio });

      const src = `${sk.baseUrl}/hls/${room}/index.m3u8`;
      const deadline = Date.now() + 20_000;
      let multivariant;
      for (;;) {
        const r = await fetch(src).catch(() => null);
        if (r?.ok) {
          multivariant = await r.text();
          break;
        }
        if (Date.now() > deadline) throw new Error(`room never packaged; server log ${sk.logFile}`);
        await sleep(250);
      }
      const codecs = multivariant.match(/CODECS="[^"]*"/)?.[0];
      assert.match(codecs ?? '', c.codecs, multivariant);

      const player = await b.newPage('hls.html', { src }, { tag: `hls-rtmp-${c.name}` });
      const first = await pollPage(player, () => window.stats(), (s) => s.currentTime > 0.5 && s.videoWidth > 0, {
        timeoutMs: 20_000,
        what: `hls.js playing RTMP ${c.name}`,
      });
      await sleep(2000);
      const second = await player.evaluate(() => window.stats());
      assert.equal(second.error, null, `hls.js fatal error: ${second.error}`);
      assert.ok(second.currentTime > first.currentTime + 0.5, `currentTime advances: ${first.currentTime} → ${second.currentTime}`);
      assert.equal(second.videoWidth, 640);
      console.log(`TIMING ${JSON.stringify({ test: `hls-rtmp ${c.name}`, hlsjs_latency_s: second.latency, non_fatal_errors: second.errors })}`);
    }),
  );
}
