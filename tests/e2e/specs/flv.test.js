// HTTP-FLV and WS-FLV with a real player: Debian FFmpeg pushes H.264 + AAC over RTMP,
// and mpegts.js (from npm) in Chromium plays /flv/{room}.flv over HTTP and over a
// WebSocket: time advances, the picture has the source's size.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { launchBrowser, noBrowser, pollPage } from '../lib/browser.js';
import { startServer } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('RTMP (FFmpeg) → HTTP-FLV and WS-FLV play in mpegts.js', { timeout: 90_000, skip }, () =>
  withCleanup(async (defer) => {
    const sk = await startServer({ label: 'flv' });
    defer(async (failed) => (failed ? sk.kill() : sk.stop()));
    const b = await launchBrowser({ label: 'flv' });
    defer(() => b.close());
    const creator = await sk.signup();
    const created = await sk.createRoom(creator.access_token, { title: 'flv', visibility: 'public', mode: 'sfu' });
    const room = created.room.id;
    const ff = spawn('ffmpeg', [
      '-hide_banner', '-loglevel', 'error', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
      '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-c:a', 'aac',
      '-t', '40', '-f', 'flv', `rtmp://127.0.0.1:${sk.rtmpPort}/live/${created.stream_key}`,
    ], { stdio: 'ignore' });
    defer(() => ff.kill('SIGKILL'));

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
