// Recordings in the browser: the studio's "Record" setting turned on, Chromium publishing
// its fake camera over WHIP for ~15 s; once the stream ends the studio lists the
// recording, ffprobe reads its VOD playlist and MP4 (the listed duration, H.264 + Opus),
// and its "Play" link (/watch/{room}?recording={id}&token=…: the room is private, the
// link carries a viewer token the studio minted) plays the HLS VOD with hls.js: a finite
// duration, time advancing, no fatal error. Then the same playback of a recording kept
// in S3-compatible storage (SKYLARK_RECORDINGS_URL=s3://…, moto's S3 emulator
// `moto_server` from the test venv that scripts/test fills), an FFmpeg RTMP stream
// recorded, in a public room, by URL as an anonymous viewer (the listing is the owner's;
// the recording plays by URL).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { noBrowser, waitForStatus } from '../lib/browser.js';
import { requestJson, freePort } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { until } from '../lib/app.js';
import { serverAndApp, explainFailure, serverFor, browserFor, appFor, rtmpPush } from '../lib/fixtures.js';
import { openStudioAs } from '../lib/studio.js';

const skip = noBrowser() ?? false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Seconds the publisher streams. */
const PUBLISH_S = 15;
const MOTO = path.join(os.homedir(), '.cache/skylark-test-venv/bin/moto_server');
/** Why the S3 test can't run, if it can't: a failure under CI=true. */
const noMoto = fs.existsSync(MOTO) ? null : `${MOTO} missing: run scripts/test to install moto[server]`;
if (noMoto && process.env.CI === 'true') throw new Error(noMoto);

/** The room's first recording once the API lists it (to its owner, `token`) with `status` (120 s at most). */
async function listed(sk, token, room, status = 'ready') {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const { json } = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}/recordings`, { token, expect: 200 });
    if (json.recordings[0]?.status === status) return json.recordings[0];
    if (Date.now() > deadline) throw new Error(`no recording listed as ${status} within 120 s: ${JSON.stringify(json.recordings)}`);
    await sleep(500);
  }
}

/** ffprobe of `url`: its duration (s) and the codecs of its streams. */
function probe(url) {
  const out = spawnSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration:stream=codec_name', '-of', 'json', url], { encoding: 'utf8' });
  assert.equal(out.status, 0, `ffprobe ${url}: ${out.stderr}`);
  const v = JSON.parse(out.stdout);
  return { duration: Number(v.format.duration), codecs: v.streams.map((s) => s.codec_name) };
}

/** ffprobe reads recording `rec`'s top VOD playlist and its MP4 (a private room's, with
 *  the owner's playback token): the listed duration within 1 s, H.264 and Opus. */
async function probesAsListed(sk, token, room, rec) {
  const { json } = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}/playback`, { token, expect: 200 });
  const ptoken = new URL(json.hls.url).searchParams.get('token');
  assert.ok(ptoken, `a playback token: ${JSON.stringify(json)}`);
  const index = await (await fetch(`${rec.playlist_url}?token=${ptoken}`)).text();
  const top = index.split('\n').find((l) => l && !l.startsWith('#'));
  assert.ok(top?.includes(`token=${ptoken}`), `the rendition's URI carries the token: ${index}`);
  const base = rec.playlist_url.replace(/\/index\.m3u8$/, '');
  for (const url of [`${base}/${top}`, `${rec.mp4_url}?token=${ptoken}`]) {
    const p = probe(url);
    assert.ok(Math.abs(p.duration - rec.duration_s) <= 1, `${url}: ${p.duration} s, listed ${rec.duration_s} s`);
    assert.deepEqual([...p.codecs].sort(), ['h264', 'opus'], `${url}: ${p.codecs}`);
  }
}

/** hls.js on the watch page (`url`, or the recording's by its id) plays recording `rec`: finite duration near its own, time advancing. */
async function playsOnWatchPage(app, sk, room, rec, url = `${sk.baseUrl}/watch/${room}?recording=${rec.id}`) {
  const player = await app.open(url, { tag: 'watch-recording' });
  const video = () => {
    const v = document.getElementById('video');
    return { currentTime: v.currentTime, duration: v.duration, width: v.videoWidth, hls: !!window.__recordingHls, error: window.player?.stats?.().error ?? null };
  };
  const first = await until(player, video, (s) => s.hls && s.width > 0 && s.currentTime > 0.5, { what: 'the recording playing', timeoutMs: 30_000 });
  assert.ok(Number.isFinite(first.duration) && Math.abs(first.duration - rec.duration_s) < 2, `VOD duration ${first.duration} vs ${rec.duration_s}`);
  await sleep(2000);
  const second = await player.evaluate(video);
  assert.ok(second.currentTime > first.currentTime, `time advances: ${first.currentTime} → ${second.currentTime}`);
}

test('recordings: Record in the studio, a WHIP stream, listed when it ends, hls.js plays the VOD on the watch page', { timeout: 240_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b, app } = await serverAndApp(defer, 'recordings');
    await explainFailure(
      async () => {
        const creator = await sk.signup();
        const created = await sk.createRoom(creator.access_token, { title: 'Recordings e2e', visibility: 'private' });
        const room = created.room.id;

        // The studio's room settings: Record on, saved.
        const studio = await openStudioAs(app, sk, creator, 'studio');
        await studio.locator('details.settings summary', { hasText: 'Room settings' }).click();
        await studio.getByRole('checkbox', { name: 'Record' }).check();
        await studio.locator('#edit-form').getByRole('button', { name: 'Save' }).click();
        await studio.getByText('Saved.').waitFor({ timeout: 15_000 });
        const view = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`, { token: creator.access_token, expect: 200 });
        assert.equal(view.json.record, true, 'the studio saved record=true');

        // Publish over WHIP, then stop.
        const publisher = await b.newPage('publish.html', { whip: created.ingest.whip_url, key: created.stream_key }, { tag: 'publisher' });
        await waitForStatus(publisher, 'live', { timeoutMs: 20_000, what: 'WHIP publisher' });
        const wentLive = Date.now();
        // While live, the studio lists it in progress.
        const open = await listed(sk, creator.access_token, room, 'recording');
        assert.equal(open.mp4_url, null, 'no download while recording');
        // The list refreshes every 5 s while recording; its private links' tokens are
        // minted once, not on every refresh.
        let mints = 0;
        studio.on('request', (r) => {
          if (r.method() === 'POST' && r.url().includes('/viewer-tokens')) mints += 1;
        });
        await studio.locator('#recordings-box summary').click();
        await studio.locator(`#recordings-list li[data-recording="${open.id}"][data-status="recording"]`, { hasText: 'recording…' }).waitFor({ timeout: 15_000 });
        await sleep(Math.max(0, PUBLISH_S * 1000 - (Date.now() - wentLive)));
        await publisher.evaluate(() => window.stop());

        // Ready once the stream has ended (offline detection, finalizing, registering).
        const rec = await listed(sk, creator.access_token, room);
        assert.equal(rec.id, open.id, 'the same recording');
        assert.ok(rec.duration_s > PUBLISH_S / 2 && rec.duration_s < PUBLISH_S + 5, `recorded ${rec.duration_s} s of ~${PUBLISH_S} s`);
        await probesAsListed(sk, creator.access_token, room, rec);

        // The studio's open list follows it to ready.
        await studio.locator(`#recordings-list li[data-recording="${rec.id}"][data-status="ready"]`).waitFor({ timeout: 30_000 });
        assert.equal(mints, 1, 'one viewer token for the list, kept across its refreshes');

        // The studio's Play link (a private room: with a viewer token) plays the VOD with hls.js.
        const href = await studio.locator(`#recordings-list li[data-recording="${rec.id}"] a`, { hasText: 'Play' }).getAttribute('href');
        assert.match(href, /[?&]token=/, `the Play link of a private room's recording carries a viewer token: ${href}`);
        await playsOnWatchPage(app, sk, room, rec, new URL(href, sk.baseUrl).toString());
      },
      () => ({ 'server log': sk.logFile, 'page console': app.logFile }),
    );
  }),
);

test('recordings in S3: an RTMP stream recorded into moto_server, hls.js plays the VOD served from the bucket', { timeout: 240_000, skip: skip || noMoto || false }, () =>
  withCleanup(async (defer) => {
    const port = await freePort();
    const moto = spawn(MOTO, ['-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    defer(() => moto.kill());
    const endpoint = `http://127.0.0.1:${port}`;
    const bucket = 'skylark-e2e';
    const made = Date.now() + 60_000;
    for (;;) {
      const r = await fetch(`${endpoint}/${bucket}`, { method: 'PUT' }).catch(() => null);
      if (r?.ok) break;
      if (Date.now() > made) throw new Error(`moto_server on ${endpoint} did not create the bucket`);
      await sleep(300);
    }
    const env = {
      SKYLARK_RECORDINGS_URL: `s3://${bucket}/rec`,
      AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL: endpoint, AWS_ALLOW_HTTP: 'true',
    };
    const sk = await serverFor(defer, { label: 'recordings-s3', env });
    const app = appFor(defer, await browserFor(defer, 'recordings-s3'), 'recordings-s3');
    await explainFailure(
      async () => {
        const creator = await sk.signup();
        const body = { title: 'Recordings S3 e2e', visibility: 'public', record: true };
        const { json: created } = await requestJson('POST', `${sk.baseUrl}/api/v1/rooms`, { token: creator.access_token, body, expect: 201 });
        const room = created.room.id;
        assert.equal(created.room.record, true);
        const ff = rtmpPush(defer, sk, created.stream_key, { seconds: PUBLISH_S });
        await new Promise((resolve) => ff.on('exit', resolve));
        const rec = await listed(sk, creator.access_token, room);
        assert.ok(Math.abs(rec.duration_s - PUBLISH_S) <= 1.5, `recorded ${rec.duration_s} s of ${PUBLISH_S} s`);
        // The objects are in the bucket (listing needs no signature on moto).
        const list = await (await fetch(`${endpoint}/${bucket}?list-type=2&prefix=rec/${room}/${rec.id}/`)).text();
        assert.ok(list.includes(`rec/${room}/${rec.id}/recording.mp4`), 'the MP4 is in the bucket');
        await playsOnWatchPage(app, sk, room, rec);
      },
      () => ({ 'server log': sk.logFile, 'page console': app.logFile }),
    );
  }),
);
