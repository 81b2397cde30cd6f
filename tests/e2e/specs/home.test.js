// The home page (/) as a visitor sees it while a room is live: the room's tile shows a
// recent picture of the stream (a one-keyframe MP4 from the packager, decoded by
// Chromium), refreshed every few seconds, and the viewer count. The source is Debian
// FFmpeg over RTMP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { noBrowser } from '../lib/browser.js';
import { requestJson } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { until } from '../lib/app.js';
import { serverAndApp, creatorWithRoom, rtmpPush, explainFailure } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);

test('home: a live room\'s tile shows a picture of the stream, refreshed', { timeout: 90_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, app } = await serverAndApp(defer, 'home');
    const { created, room } = await creatorWithRoom(sk, 'Thumbnail room');
    rtmpPush(defer, sk, created.stream_key, { seconds: 60 });
    await explainFailure(async () => {
      // Opened as soon as the room is live: its first still may not exist yet, and the
      // tile's request for it must wait for it, not fail (no console error).
      const liveBy = Date.now() + 20_000;
      while (!(await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`)).json?.live) {
        assert.ok(Date.now() < liveBy, 'the room goes live within 20 s');
        await new Promise((r) => setTimeout(r, 100));
      }
      const home = await app.open(`${sk.baseUrl}/`, { tag: 'home', viewport: { width: 1200, height: 900 } });
      const tile = async () =>
        home.evaluate((id) => {
          const a = document.querySelector(`a[href="/watch/${id}"]`);
          const v = a?.querySelector('.thumb video');
          return { listed: !!a, shown: window.home.state.thumbs[id] ?? 0, width: v?.videoWidth ?? 0, height: v?.videoHeight ?? 0 };
        }, room);
      await until(home, () => window.home.state.loads, (n) => n > 0, { what: 'home loaded' });
      const start = Date.now();
      let t;
      for (;;) {
        t = await tile();
        if (t.shown >= 1 && t.width > 0) break;
        assert.ok(Date.now() - start < 40_000, `the tile shows a picture within 40 s: ${JSON.stringify(t)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      const firstPictureMs = Date.now() - start;
      assert.deepEqual([t.width, t.height], [640, 360], 'the picture is the stream\'s');
      const shown = t.shown;
      for (;;) {
        t = await tile();
        if (t.shown > shown) break;
        assert.ok(Date.now() - start < 60_000, `the picture is refreshed: ${JSON.stringify(t)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      console.log(`TIMING ${JSON.stringify({ test: 'home thumbnail', first_picture_ms: firstPictureMs, refreshed_after_ms: Date.now() - start })}`);
      assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
    }, () => ({ 'server log': sk.logFile, 'page console': app.logFile }));
  }),
);
