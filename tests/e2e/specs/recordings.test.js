// Recordings in the browser: the studio's "Record" setting turned on, Chromium publishing
// its fake camera over WHIP for ~15 s; once the stream ends the studio lists the
// recording, and the watch page (/watch/{room}?recording={id}) plays its HLS VOD with
// hls.js: a finite duration, time advancing, no fatal error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noBrowser, waitForStatus } from '../lib/browser.js';
import { requestJson } from '../lib/server.js';
import { withCleanup } from '../lib/harness.js';
import { until } from '../lib/app.js';
import { serverAndApp, explainFailure } from '../lib/fixtures.js';
import { openStudioAs } from '../lib/studio.js';

const skip = noBrowser() ?? false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Seconds the publisher streams. */
const PUBLISH_S = 15;

test('recordings: Record in the studio, a WHIP stream, listed when it ends, hls.js plays the VOD on the watch page', { timeout: 240_000, skip }, () =>
  withCleanup(async (defer) => {
    const { sk, b, app } = await serverAndApp(defer, 'recordings');
    await explainFailure(
      async () => {
        const creator = await sk.signup();
        const created = await sk.createRoom(creator.access_token, { title: 'Recordings e2e', visibility: 'public' });
        const room = created.room.id;

        // The studio's room settings: Record on, saved.
        const studio = await openStudioAs(app, sk, creator, 'studio');
        await studio.locator('details.settings summary', { hasText: 'Room settings' }).click();
        await studio.getByRole('checkbox', { name: 'Record' }).check();
        await studio.locator('#edit-form').getByRole('button', { name: 'Save' }).click();
        await studio.getByText('Saved.').waitFor({ timeout: 15_000 });
        const view = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`, { expect: 200 });
        assert.equal(view.json.record, true, 'the studio saved record=true');

        // Publish over WHIP, then stop.
        const publisher = await b.newPage('publish.html', { whip: created.ingest.whip_url, key: created.stream_key }, { tag: 'publisher' });
        await waitForStatus(publisher, 'live', { timeoutMs: 20_000, what: 'WHIP publisher' });
        await sleep(PUBLISH_S * 1000);
        await publisher.evaluate(() => window.stop());

        // Listed once the stream has ended (offline detection, finalizing, registering).
        let rec = null;
        const deadline = Date.now() + 120_000;
        while (!rec) {
          const { json } = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}/recordings`, { expect: 200 });
          rec = json.recordings[0] ?? null;
          if (!rec && Date.now() > deadline) throw new Error('no recording listed 120 s after the stream ended');
          if (!rec) await sleep(500);
        }
        assert.ok(rec.duration_s > PUBLISH_S / 2 && rec.duration_s < PUBLISH_S + 5, `recorded ${rec.duration_s} s of ~${PUBLISH_S} s`);

        // The studio lists it.
        await studio.locator('#recordings-box summary').click();
        await studio.locator(`#recordings-list li[data-recording="${rec.id}"]`).waitFor({ timeout: 15_000 });

        // The watch page plays the VOD with hls.js.
        const player = await app.open(`${sk.baseUrl}/watch/${room}?recording=${rec.id}`, { tag: 'watch-recording' });
        const video = () => {
          const v = document.getElementById('video');
          return { currentTime: v.currentTime, duration: v.duration, width: v.videoWidth, hls: !!window.__recordingHls, error: window.player?.stats?.().error ?? null };
        };
        const first = await until(player, video, (s) => s.hls && s.width > 0 && s.currentTime > 0.5, { what: 'the recording playing', timeoutMs: 30_000 });
        assert.ok(Number.isFinite(first.duration) && Math.abs(first.duration - rec.duration_s) < 2, `VOD duration ${first.duration} vs ${rec.duration_s}`);
        await sleep(2000);
        const second = await player.evaluate(video);
        assert.ok(second.currentTime > first.currentTime, `time advances: ${first.currentTime} → ${second.currentTime}`);
      },
      () => ({ 'server log': sk.logFile, 'page console': app.logFile }),
    );
  }),
);
