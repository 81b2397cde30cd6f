// A private room over HLS and FLV with real players: Debian FFmpeg pushes H.264 + AAC
// over RTMP into a private room; the plain /hls and /flv URLs are refused (401, and
// hls.js fails on them), while the URLs /playback hands out for the owner's viewer
// token play in hls.js and in mpegts.js (HTTP-FLV and WS-FLV), and the product's player
// (/watch/{room}?token=…) plays the room forced onto HLS and onto FLV.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { noBrowser, pollPage } from '../lib/browser.js';
import { requestJson, artifactPath } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { until } from '../lib/app.js';
import { serverAndApp, creatorWithRoom, rtmpPush } from '../lib/fixtures.js';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status === 0 ? null : 'Debian ffmpeg not installed';
const skip = noBrowser() ?? noFfmpeg ?? false;
if (noFfmpeg && process.env.CI === 'true') throw new Error(`${noFfmpeg}: scripts/test installs it`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until a test page's player advances with a picture, then for 2 s more. */
async function plays(page, what) {
  const first = await pollPage(page, () => window.stats(), (s) => s.currentTime > 0.5 && s.videoWidth > 0, {
    timeoutMs: 25_000,
    what,
  });
  await sleep(2000);
  const second = await page.evaluate(() => window.stats());
  assert.equal(second.error, null, `${what}: ${second.error}`);
  assert.ok(second.currentTime > first.currentTime + 0.5, `${what} advances: ${first.currentTime} → ${second.currentTime}`);
  assert.equal(second.videoWidth, 640, what);
}

test('private room: /hls and /flv refused without a token; the /playback URLs play in hls.js, mpegts.js and the watch page', { timeout: 150_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b, app } = await serverAndApp(defer, 'private-hls-flv');
    const { creator, created, room } = await creatorWithRoom(sk, 'private HLS/FLV', 'private');
    // The owner's viewer token, as the studio's viewer link carries it.
    const vt = await requestJson('POST', `${sk.baseUrl}/api/v1/rooms/${room}/viewer-tokens`, {
      token: creator.access_token,
      body: { ttl_s: 3600 },
    });
    const viewerToken = vt.json?.token;
    assert.ok(viewerToken, `viewer token: ${JSON.stringify(vt.json)}`);
    const ffLog = artifactPath('private-hls-flv-ffmpeg.log');
    rtmpPush(defer, sk, created.stream_key, { seconds: 120, loglevel: 'warning', stdio: ['ignore', 'ignore', fs.openSync(ffLog, 'w')] });

    try {
      const p = (await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}/playback`, { token: viewerToken })).json;
      assert.match(p?.hls?.url ?? '', /\/index\.m3u8\?token=pt2\./, JSON.stringify(p));
      assert.match(p?.flv?.url ?? '', /\.flv\?token=pt2\./, JSON.stringify(p));
      const plainHls = `${sk.baseUrl}/hls/${room}/index.m3u8`;
      const deadline = Date.now() + 25_000;
      for (;;) {
        const r = await fetch(p.hls.url).catch(() => null);
        if (r?.ok) break;
        if (Date.now() > deadline) throw new Error(`${p.hls.url} not available within 25 s (last status ${r?.status})`);
        await sleep(250);
      }

      // Without the token: 401 naming /playback, for plain HTTP and for hls.js.
      for (const url of [plainHls, `${sk.baseUrl}/flv/${room}.flv`]) {
        const r = await fetch(url);
        const body = await r.json().catch(() => null);
        assert.equal(r.status, 401, url);
        assert.equal(body?.error?.code, 'unauthorized', JSON.stringify(body));
        assert.match(body.error.message, /\/playback/);
      }
      const refused = await b.newPage('hls.html', { src: plainHls }, { tag: 'hls-no-token' });
      const failed = await until(refused, () => window.stats(), (s) => s.error !== null, { what: 'hls.js without a token fails' });
      assert.match(failed.error, /manifestLoadError/, failed.error);
      assert.equal(failed.videoWidth, 0);
      await refused.close();

      // With the /playback URLs: hls.js, mpegts.js over HTTP and over a WebSocket.
      const hls = await b.newPage('hls.html', { src: p.hls.url }, { tag: 'hls-token' });
      await plays(hls, 'hls.js with the /playback URL');
      await hls.close();
      for (const [label, src] of [['HTTP-FLV', p.flv.url], ['WS-FLV', p.flv.url.replace(/^http/, 'ws')]]) {
        const player = await b.newPage('flv.html', { src }, { tag: label });
        await plays(player, `mpegts.js over ${label} with the /playback URL`);
        await player.close();
      }

      // The product's player with the viewer link, forced onto HLS and onto FLV.
      for (const transport of ['hls', 'flv']) {
        const page = await app.open(`${sk.baseUrl}/watch/${room}?token=${encodeURIComponent(viewerToken)}&transport=${transport}`, {
          tag: `watch-${transport}`,
        });
        const stats = () => window.player.stats();
        const first = await until(page, stats, (s) => s.status === 'playing' && s.transport === transport && s.videoWidth > 0 && s.currentTime > 0.3, {
          what: `watch page playing the private room over ${transport}`,
          timeoutMs: 30_000,
          intervalMs: 250,
        });
        await page.waitForTimeout(2000);
        const second = await page.evaluate(stats);
        assert.ok(second.currentTime > first.currentTime + 1, `watch over ${transport} advances: ${first.currentTime} → ${second.currentTime}`);
        assert.equal(second.transport, transport);
        await page.close();
      }
    } catch (e) {
      e.message += `\n  server log: ${sk.logFile}\n  ffmpeg log: ${ffLog}\n  page console: ${app.logFile}`;
      throw e;
    }
  }),
);
