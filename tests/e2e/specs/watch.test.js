// The player (/watch/{room}) and the home page (/) served by the skylark binary, with the
// studio (/studio) publishing from Chromium's fake camera + screen:
//   - before go-live the player waits, then starts by itself over WebRTC; viewer counts
//     reach the studio, the player and the home page; it follows the broadcaster going
//     offline and coming back;
//   - with RTCPeerConnection removed from the page it plays HLS by itself (hls.js), and
//     from HLS "Try low latency" goes back to WebRTC;
//   - a missing room, a private room without a token, and with one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noBrowser, waitForStatus } from '../lib/browser.js';
import { requestJson } from '../lib/server.js';
import { withCleanup, reportTimings, span } from '../lib/harness.js';
import { until, screenshot } from '../lib/app.js';
import { serverAndApp, explainFailure } from '../lib/fixtures.js';
import { goLiveInStudio, openStudioAs } from '../lib/studio.js';

const TEST_CAP_MS = 150_000;
const BODY_CAP = { capMs: 130_000 };
const PLAY_CAP_MS = 25_000;
const skip = noBrowser() ?? false;
const requireHls = process.env.SKYLARK_E2E_REQUIRE_HLS === '1';

async function setup(defer, label) {
  const { sk, b, app } = await serverAndApp(defer, label);
  const creator = await sk.signup();
  return { sk, b, app, creator };
}

const explained = (ctx, fn) => explainFailure(fn, () => ({ 'server log': ctx.sk.logFile, 'page console': ctx.app.logFile }));

/** The studio, signed in as `creator`, with its one room selected. */
const openStudio = (ctx, tag) => openStudioAs(ctx.app, ctx.sk, ctx.creator, tag);

const stats = () => window.player.stats();

/** Waits until the player decodes frames over `transport`, and they keep coming for 2 s. */
async function waitPlaying(page, transport, what) {
  const first = await until(page, stats, (s) => s.status === 'playing' && s.transport === transport && s.videoWidth > 0 && s.framesDecoded > 0, {
    what: `${what} playing over ${transport}`,
    timeoutMs: PLAY_CAP_MS,
    intervalMs: 250,
  });
  await page.waitForTimeout(2000);
  const second = await page.evaluate(stats);
  const seen = (s) => JSON.stringify({ status: s.status, paused: s.paused, currentTime: s.currentTime, framesDecoded: s.framesDecoded, latencyMs: s.latencyMs });
  assert.ok(second.framesDecoded > first.framesDecoded, `${what}: frames keep coming (${seen(first)} → ${seen(second)})`);
  assert.equal(second.transport, transport, `${what}: still on ${transport}`);
  return { first, second };
}

test('watch: waits before go-live, starts by itself over WebRTC, counts viewers, follows the broadcaster offline and back', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'watch-webrtc');
    const { sk, app, creator } = ctx;
    await explained(ctx, async () => {
      const created = await sk.createRoom(creator.access_token, { title: 'Watch e2e: live', visibility: 'public' });
      const room = created.room.id;

      // The viewer arrives first: a waiting screen.
      const tOpen = Date.now();
      const viewer = await app.open(`${sk.baseUrl}/watch/${room}`, { tag: 'viewer' });
      await until(viewer, () => window.player.state.status, (s) => s === 'waiting', { what: 'viewer waiting' });
      const tWaiting = Date.now();
      assert.match(await viewer.locator('#overlay-text').innerText(), /hasn’t started yet/);
      // The title comes with the room's own GET, which may answer after the page says it waits.
      await until(viewer, () => document.getElementById('title').textContent, (t) => t === 'Watch e2e: live', { what: 'the room title shown', timeoutMs: 10_000 });

      // The studio goes live; the viewer starts by itself over WebRTC.
      const studio = await openStudio(ctx);
      defer(() => studio.evaluate(() => window.studio.stop()).catch(() => {}));
      const { goLiveMs } = await goLiveInStudio(studio);
      const { second } = await waitPlaying(viewer, 'webrtc', 'viewer');
      const tLive = await studio.evaluate(() => window.studio.state.events.find((e) => e.name === 'status:live')?.t);
      const tPlaying = await viewer.evaluate(() => window.player.state.events.find((e) => e.name === 'firstFrame')?.t);
      assert.equal(second.codec?.toLowerCase(), 'h264');
      assert.equal(await viewer.locator('#stat-transport').innerText(), 'WebRTC');
      await until(viewer, () => window.player.state.latencyMs, (ms) => ms !== null && ms >= 0 && ms < 5000, { what: 'latency shown' });
      assert.match(await viewer.locator('#stat-latency').innerText(), /≈ \d+ ms/);

      // Autoplay is muted, with an Unmute button.
      assert.equal(second.muted, true, 'autoplay starts muted');
      await viewer.getByRole('button', { name: 'Unmute' }).click();
      assert.equal(await viewer.evaluate(() => document.getElementById('video').muted), false);
      assert.equal(await viewer.getByRole('button', { name: 'Unmute' }).isVisible(), false);

      // Viewer counts: the studio, the player and the home page (which links to /watch).
      await until(studio, () => document.getElementById('stat-viewers').textContent, (t) => t === '1 viewer', { what: 'studio shows 1 viewer', timeoutMs: 10_000 });
      await until(studio, () => document.getElementById('stat-audience').textContent, (t) => t === 'WebRTC 1 · HLS 0 · FLV 0', { what: 'studio splits the count by transport', timeoutMs: 10_000 });
      await until(viewer, () => window.player.state.viewers, (n) => n === 1, { what: 'player shows 1 viewer', timeoutMs: 10_000 });
      const home = await app.open(`${sk.baseUrl}/`, { tag: 'home' });
      const card = home.getByRole('link', { name: /Watch e2e: live, 1 viewer/ });
      await card.waitFor({ timeout: 10_000 });
      assert.equal(await card.getAttribute('href'), `/watch/${room}`);
      await screenshot(home, 'home-live');
      await card.click();
      await home.waitForURL(`**/watch/${room}`);
      await waitPlaying(home, 'webrtc', 'second viewer (from the home page)');
      await until(viewer, () => window.player.state.viewers, (n) => n === 2, { what: 'player shows 2 viewers', timeoutMs: 10_000 });
      const shot = await screenshot(viewer, 'watch-webrtc');
      console.log(`watch screenshot (WebRTC): ${shot}`);

      // The broadcaster stops: the player says so; they come back: it plays again by itself.
      await studio.getByRole('button', { name: 'Stop', exact: true }).click();
      await until(viewer, () => window.player.state.status, (s) => s === 'offline', { what: 'viewer sees the broadcaster offline', timeoutMs: 15_000 });
      // Offline for good: the player ends its session and waits; when the broadcaster is
      // back it starts a new one by itself. (Had they come back within a second or two, the
      // SFU would have resumed the same session in place.)
      await until(viewer, () => window.player.state.events.some((e) => e.name === 'teardown:webrtc'), (v) => v, {
        what: 'viewer ends its session once the broadcaster is gone',
        timeoutMs: 10_000,
      });
      await goLiveInStudio(studio);
      const back = await waitPlaying(viewer, 'webrtc', 'viewer after the broadcaster came back');
      assert.equal(back.second.sessions.webrtc, 2, 'a new WebRTC session after the broadcaster came back');
      const tBack = await viewer.evaluate(
        () => window.player.state.events.findLast((e) => e.name === 'firstFrame' || e.name === 'status:playing')?.t,
      );
      const tStudioBack = await studio.evaluate(() => window.studio.state.events.findLast((e) => e.name === 'status:live')?.t);

      assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
      reportTimings('watch/webrtc', {
        open_to_waiting_ms: tWaiting - tOpen,
        studio_go_live_ms: goLiveMs,
        studio_live_to_viewer_playing_ms: span(tLive, tPlaying),
        studio_back_live_to_viewer_playing_ms: span(tStudioBack, tBack),
        latency_ms: await viewer.evaluate(() => window.player.state.latencyMs),
      });
    });
  }, BODY_CAP),
);

/** Whether /hls/{room}/index.m3u8 answers 200 within `ms` (null: no /hls route at all). */
async function hlsAvailable(sk, room, ms = 15_000) {
  const deadline = Date.now() + ms;
  let last = null;
  while (Date.now() < deadline) {
    const r = await requestJson('GET', `${sk.baseUrl}/hls/${room}/index.m3u8`);
    if (r.status === 200) return { ok: true };
    last = r;
    if (r.status === 404 && !r.text) return { ok: false, why: 'the server has no /hls route (404 with an empty body)' };
    await new Promise((res) => setTimeout(res, 500));
  }
  return { ok: false, why: `GET /hls/${room}/index.m3u8 did not answer 200 within ${ms / 1000} s (last ${last?.status}: ${last?.text?.slice(0, 200)})` };
}

test('watch: without RTCPeerConnection, or when WebRTC delivers no frame, it plays HLS by itself; from HLS, "Try low latency" returns to WebRTC', { timeout: TEST_CAP_MS, skip }, async (t) => {
  let skipped = null;
  await withCleanup(async (defer) => {
    const ctx = await setup(defer, 'watch-hls');
    const { sk, app, creator } = ctx;
    await explained(ctx, async () => {
      const created = await sk.createRoom(creator.access_token, { title: 'Watch e2e: HLS' });
      const room = created.room.id;
      const studio = await openStudio(ctx);
      defer(() => studio.evaluate(() => window.studio.stop()).catch(() => {}));
      // One layer: this checks the fallbacks, and the rendition of a simulcast layer that
      // Chromium pauses (its bandwidth estimate starts low) has no video meanwhile
      // (quality.test.js, the todo test).
      await studio.getByLabel('Simulcast').uncheck();
      await goLiveInStudio(studio);
      const hls = await hlsAvailable(sk, room);
      if (!hls.ok) {
        if (requireHls) throw new Error(`HLS required (SKYLARK_E2E_REQUIRE_HLS=1) but ${hls.why}`);
        skipped = `HLS not available: ${hls.why} (set SKYLARK_E2E_REQUIRE_HLS=1 to fail instead)`;
        console.log(`SKIP: ${skipped}`);
        return;
      }

      // No WebRTC in this page at all: HLS by itself.
      const tOpen = Date.now();
      const noRtc = await app.open(`${sk.baseUrl}/watch/${room}`, {
        tag: 'viewer-no-webrtc',
        initScript: 'delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;',
      });
      assert.equal(await noRtc.evaluate(() => typeof window.RTCPeerConnection), 'undefined');
      const { second } = await waitPlaying(noRtc, 'hls', 'viewer without WebRTC');
      const tPlaying = await noRtc.evaluate(() => window.player.state.events.find((e) => e.name === 'firstFrame')?.t);
      assert.equal(await noRtc.locator('#stat-transport').innerText(), 'HLS (hls.js)');
      assert.match(second.fallbackReason ?? '', /no WebRTC/);
      assert.match(await noRtc.locator('#fallback-note').innerText(), /because this browser has no WebRTC/);
      assert.equal(await noRtc.getByRole('button', { name: /Try low latency/ }).isVisible(), false, 'no low-latency button without WebRTC');
      const lat = await until(noRtc, () => window.player.state.latencyMs, (ms) => ms !== null && ms > 0 && ms < 20_000, { what: 'HLS latency shown' });
      await screenshot(noRtc, 'watch-hls');
      // Honest counts: the HLS player is counted (it keeps reloading its playlist).
      await until(studio, () => document.getElementById('stat-audience').textContent, (t) => /HLS [1-9]/.test(t), { what: 'studio counts the HLS viewer', timeoutMs: 15_000 });

      // WebRTC that never delivers a frame (the WHEP answer's candidates removed, so ICE
      // can't connect): HLS after a few seconds, by itself.
      const tNoMedia = Date.now();
      const noMedia = await app.open(`${sk.baseUrl}/watch/${room}`, {
        tag: 'viewer-webrtc-no-media',
        initScript: `{
          const srd = RTCPeerConnection.prototype.setRemoteDescription;
          RTCPeerConnection.prototype.setRemoteDescription = function (d) {
            if (d && d.type === 'answer') d = { type: 'answer', sdp: d.sdp.split('\\r\\n').filter((l) => !l.startsWith('a=candidate')).join('\\r\\n') };
            return srd.call(this, d);
          };
        }`,
      });
      const fellBack = await waitPlaying(noMedia, 'hls', 'viewer whose WebRTC gets no frames');
      assert.match(fellBack.second.fallbackReason ?? '', /no video arrived over WebRTC within \d+ s/);
      assert.equal(fellBack.second.sessions.webrtc, 1, 'WebRTC was tried first');
      const noMediaEvents = await noMedia.evaluate(() => window.player.state.events);
      const tFallback = noMediaEvents.find((e) => e.name === 'fallback')?.t;
      const tHlsFrame = noMediaEvents.find((e) => e.name === 'firstFrame')?.t;

      // HLS asked for in the address; the button goes back to WebRTC.
      const forced = await app.open(`${sk.baseUrl}/watch/${room}?transport=hls`, { tag: 'viewer-forced-hls' });
      await waitPlaying(forced, 'hls', 'viewer with ?transport=hls');
      const button = forced.getByRole('button', { name: 'Try low latency (WebRTC)' });
      assert.equal(await button.isVisible(), true);
      await button.click();
      await waitPlaying(forced, 'webrtc', 'viewer after "Try low latency"');
      assert.equal(await forced.locator('#stat-transport').innerText(), 'WebRTC');

      // hls.js logs nothing as an error on a healthy stream; nor may the pages.
      assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
      reportTimings('watch/hls', {
        open_to_hls_playing_ms: tPlaying - tOpen,
        hls_latency_ms: lat,
        no_frame_open_to_fallback_ms: span(tNoMedia, tFallback),
        no_frame_fallback_to_hls_playing_ms: span(tFallback, tHlsFrame),
      });
    });
  }, BODY_CAP);
  if (skipped) t.skip(skipped);
});

test('watch: a missing room, a private room without a token and with one', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'watch-errors');
    const { sk, b, app, creator } = ctx;
    await explained(ctx, async () => {
      // No such room.
      const missing = await app.open(`${sk.baseUrl}/watch/room_doesnotexist`, { tag: 'missing' });
      await until(missing, () => window.player.state.status, (s) => s === 'error', { what: 'missing room error' });
      assert.match(await missing.getByRole('alert').innerText(), /does not exist/);

      // A private room: refused without a token, plays with a viewer token.
      const created = await sk.createRoom(creator.access_token, { title: 'Watch e2e: private', visibility: 'private' });
      const room = created.room.id;
      const refused = await app.open(`${sk.baseUrl}/watch/${room}`, { tag: 'private-no-token' });
      await until(refused, () => window.player.state.status, (s) => s === 'error', { what: 'private room refused' });
      assert.match(await refused.getByRole('alert').innerText(), /private/);

      const { json } = await requestJson('POST', `${sk.baseUrl}/api/v1/rooms/${room}/viewer-tokens`, {
        token: creator.access_token,
        body: { ttl_s: 600 },
      });
      assert.ok(json?.token, `viewer token: ${JSON.stringify(json)}`);
      const viewer = await app.open(`${sk.baseUrl}/watch/${room}?token=${encodeURIComponent(json.token)}`, { tag: 'private-viewer' });
      await until(viewer, () => window.player.state.status, (s) => s === 'waiting', { what: 'private viewer waiting' });
      // Publish with the stream key from the harness' WHIP page (like OBS would).
      const publisher = await b.newPage('publish.html', { whip: created.ingest.whip_url, key: created.stream_key }, { tag: 'publisher' });
      defer(() => publisher.evaluate(() => window.stop()).catch(() => {}));
      await waitForStatus(publisher, 'live', { what: 'WHIP publisher' });
      await waitPlaying(viewer, 'webrtc', 'private viewer with a token');

      const bad = await app.open(`${sk.baseUrl}/watch/${room}?token=not-a-token`, { tag: 'private-bad-token' });
      await until(bad, () => window.player.state.status, (s) => s === 'error', { what: 'bad token refused' });
      assert.match(await bad.getByRole('alert').innerText(), /viewer link is not valid/);

      // The refusals are logged by Chromium as failed requests (404/401/403); nothing else.
      assert.deepEqual(app.unexpectedErrors([/status of (401|403|404)/]), [], 'no unexpected console errors');
    });
  }, BODY_CAP),
);
