// Smoke tests that need no media path on the server: Chromium's fake capture on a
// 127.0.0.1 page, and the skylark binary's lifecycle (start, REST signup + room,
// SIGTERM, clean exit).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, noBrowser } from '../lib/browser.js';
import { startServer } from '../lib/server.js';
import { withCleanup, reportTimings } from '../lib/harness.js';

test('Chromium fake camera + microphone on a 127.0.0.1 page', { timeout: 75_000, skip: noBrowser() ?? false }, () =>
  withCleanup(async (defer) => {
    const t0 = performance.now();
    const b = await launchBrowser({ label: 'smoke-capture' });
    defer(() => b.close());
    const tLaunched = performance.now();
    // publish.html without a WHIP URL loads and waits: only its capture step runs.
    const page = await b.newPage('publish.html', { autostart: 0 });
    assert.equal(await page.evaluate(() => window.isSecureContext), true, 'the page is a secure context');
    assert.equal(await page.evaluate(() => window.state.status), 'idle');
    const tCapture = performance.now();
    const tracks = await page.evaluate(() => window.capture());
    const tCaptured = performance.now();

    assert.equal(tracks.video.length, 1, `one video track: ${JSON.stringify(tracks)}`);
    assert.equal(tracks.audio.length, 1, `one audio track: ${JSON.stringify(tracks)}`);
    const [v] = tracks.video;
    const [a] = tracks.audio;
    assert.equal(v.readyState, 'live');
    assert.equal(a.readyState, 'live');
    assert.deepEqual([v.width, v.height], [640, 480], `fake camera size: ${JSON.stringify(v)}`);
    assert.equal(await page.evaluate(() => window.state.status), 'captured');

    // The preview shows the camera, and stop() releases every device.
    await page.waitForFunction(() => document.getElementById('preview').videoWidth > 0, null, { timeout: 5000 });
    const stopped = await page.evaluate(() => window.stop());
    assert.deepEqual(stopped.tracks, ['ended', 'ended'], 'stop() ends every track');

    reportTimings('smoke/capture', {
      chromium: b.version,
      launch_ms: Math.round(tLaunched - t0),
      get_user_media_ms: Math.round(tCaptured - tCapture),
      total_ms: Math.round(performance.now() - t0),
    });
  }, { capMs: 45_000 }),
);

test('skylark lifecycle: start, signup + create room over REST, SIGTERM → clean exit', { timeout: 75_000 }, () =>
  withCleanup(async (defer) => {
    const t0 = performance.now();
    const sk = await startServer({ label: 'smoke-lifecycle' });
    let stopped = false;
    defer(() => (stopped ? undefined : sk.kill()));

    const tReady = performance.now();
    const creator = await sk.signup();
    assert.ok(creator.user, 'signup returns the user');
    const created = await sk.createRoom(creator.access_token, { title: 'Smoke', visibility: 'public', mode: 'sfu' });
    const tRoom = performance.now();
    const id = created.room.id;
    assert.match(id, /\S/);
    assert.ok(created.stream_key.length >= 16, 'a stream key');
    assert.equal(created.ingest.whip_url, `${sk.baseUrl}/whip/${id}`, 'the WHIP URL uses SKYLARK_PUBLIC_URL');
    assert.match(created.ingest.rtmp_url, /^rtmp:\/\/127\.0\.0\.1:\d+\/live/);

    // The room is readable anonymously (public) and not live.
    const r = await fetch(`${sk.baseUrl}/api/v1/rooms/${id}`, { signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 200);
    const room = await r.json();
    assert.equal(room.live ?? room.room?.live, false, JSON.stringify(room));

    const tStop = performance.now();
    await sk.stop(); // asserts exit code 0 within 15 s of SIGTERM
    stopped = true;
    const tExited = performance.now();
    assert.ok(!sk.output().includes(created.stream_key), 'the stream key never appears in the log');

    reportTimings('smoke/lifecycle', {
      startup_to_ready_ms: sk.startupMs,
      signup_and_room_ms: Math.round(tRoom - tReady),
      sigterm_to_exit_ms: Math.round(tExited - tStop),
      total_ms: Math.round(performance.now() - t0),
    });
  }, { capMs: 45_000 }),
);
