// Picking a quality (issue #16), in Chromium against the skylark binary:
//   - the studio publishes H.264 simulcast (rids h/m/l at full, ½ and ¼ size) and shows
//     the sizes it sends; the room then has several layers (the WHEP layer resource of a
//     viewer's session lists them); with the Simulcast setting off (kept across reloads)
//     it sends one;
//   - the watch page over WebRTC lists Auto + each layer by height; choosing the smallest
//     makes the decoded picture smaller, Auto again is accepted;
//   - over HLS (forced with ?transport=hls) the menu lists the renditions and choosing one
//     switches hls.js' level; the pick (by height) is kept when the viewer goes to WebRTC.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noBrowser } from '../lib/browser.js';
import { requestJson } from '../lib/server.js';
import { withCleanup, reportTimings } from '../lib/harness.js';
import { until, screenshot } from '../lib/app.js';
import { serverAndApp, explainFailure } from '../lib/fixtures.js';
import { goLiveInStudio, openStudioAs } from '../lib/studio.js';

const TEST_CAP_MS = 150_000;
const BODY_CAP = { capMs: 130_000 };
const skip = noBrowser() ?? false;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const playerStats = () => window.player.stats();
// The stats and the menu in one snapshot: a layers refresh between two reads could change
// the menu after the stats were taken.
const statsAndMenu = async () => {
  const stats = await window.player.stats();
  const menu = document.getElementById('quality');
  return { ...stats, menu: { labels: [...menu.options].map((o) => o.textContent), value: menu.value } };
};
const studioStats = () => window.studio.stats;

/** A server, the app's pages, a creator with one SFU room and the studio open on it. */
async function setup(defer, label) {
  const { sk, b, app } = await serverAndApp(defer, label);
  const creator = await sk.signup();
  const created = await sk.createRoom(creator.access_token, { title: `Quality e2e: ${label}`, visibility: 'public' });
  const studio = await openStudioAs(app, sk, creator);
  defer(() => studio.evaluate(() => window.studio.stop()).catch(() => {}));
  return { sk, b, app, creator, room: created.room.id, studio };
}

const explained = (ctx, fn) => explainFailure(fn, () => ({ 'server log': ctx.sk.logFile, 'page console': ctx.app.logFile }));

/** Waits until the studio sends `n` layers (getStats outbound-rtp with a frame size each). */
async function studioSends(studio, n, what) {
  return until(studio, studioStats, (s) => s?.layers?.length === n && s.layers.every((l) => l.width > 0), {
    what,
    timeoutMs: 25_000,
    intervalMs: 250,
  });
}

/**
 * Every 100 ms, the RTP timestamp of the newest video packet the page's latest
 * RTCPeerConnection received, against the page's clock: `window.rtpSamples` [[ms, rtp]].
 */
const SAMPLE_RTP = `{
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  window.rtpSamples = [];
  setInterval(() => {
    const r = pcs.at(-1)?.getReceivers().find((x) => x.track?.kind === 'video');
    const s = r?.getSynchronizationSources?.()[0];
    if (s) window.rtpSamples.push([performance.now(), s.rtpTimestamp]);
  }, 100);
}`;

/** The largest gap between the RTP clock (90 kHz) and the page's clock over two samples, ms. */
function worstRtpJumpMs(samples) {
  let worst = 0;
  for (let i = 1; i < samples.length; i++) {
    const rtpMs = ((samples[i][1] - samples[i - 1][1]) | 0) / 90;
    worst = Math.max(worst, Math.abs(rtpMs - (samples[i][0] - samples[i - 1][0])));
  }
  return worst;
}

/** Opens a watch page and waits until it plays over WebRTC. */
async function watchOverWebRtc(ctx, tag, query = '', initScript = undefined) {
  const page = await ctx.app.open(`${ctx.sk.baseUrl}/watch/${ctx.room}${query}`, { tag, initScript });
  await until(page, playerStats, (s) => s.status === 'playing' && s.transport === 'webrtc' && s.framesDecoded > 0, {
    what: `${tag} playing over WebRTC`,
    timeoutMs: 25_000,
    intervalMs: 250,
  });
  return page;
}

/** GET of the viewer session's WHEP layer resource, from outside the page. */
async function layerResource(page) {
  const url = await page.evaluate(() => window.player.state.quality.layerUrl);
  assert.ok(url, 'the watch page knows its session’s layer resource');
  const r = await requestJson('GET', url, { expect: 200 });
  return { url, json: r.json };
}

test('quality: the studio publishes simulcast (≥ 2 layers in the room, sizes shown); with the setting off, one layer', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'quality-studio');
    const { studio } = ctx;
    await explained(ctx, async () => {
      assert.equal(await studio.getByLabel('Simulcast').isChecked(), true, 'simulcast is on by default');
      await goLiveInStudio(studio);
      const tLive = Date.now();
      // 1280×720 composited: h, m and l (180 px tall) are all worth sending.
      const three = await studioSends(studio, 3, 'the studio sending three layers');
      const liveToThreeMs = Date.now() - tLive;
      assert.deepEqual(three.layers.map((l) => l.rid), ['h', 'm', 'l'], `largest first: ${JSON.stringify(three.layers)}`);
      assert.deepEqual(three.layers.map((l) => l.codec?.toLowerCase()), ['h264', 'h264', 'h264'], 'simulcast over H.264');
      const sizes = three.layers.map((l) => `${l.width}×${l.height}`);
      assert.equal(await studio.locator('#stat-layers').innerText(), sizes.join(', '));
      console.log(`studio sends: ${sizes.join(', ')} (encoder: ${three.layers[0].encoder})`);
      await screenshot(studio, 'quality-studio-simulcast');
      await sleep(3000);
      const later = await studio.evaluate(studioStats);
      const dt = (later.at - three.at) / 1000;
      const kbps = Object.fromEntries(
        later.layers.map((l) => [l.rid, Math.round(((l.bytesSent - (three.layers.find((x) => x.rid === l.rid)?.bytesSent ?? 0)) * 8) / dt / 1000)]),
      );
      // The 720p bitrate ceiling for h, a third and an eighth of it for m and l.
      const enc = await studio.evaluate(() => window.studio.encodings());
      assert.deepEqual(enc.map((e) => [e.rid, e.active, e.maxBitrate, e.scaleResolutionDownBy]), [
        ['h', true, 2_500_000, 1],
        ['m', true, 833_333, 2],
        ['l', true, 312_500, 4],
      ]);
      // 360p while live: the ¼ layer would be 90 px tall, so it pauses; 720p brings it back.
      await studio.getByLabel('Resolution').selectOption('640x360');
      const two = await until(studio, studioStats, (s) => s?.layers?.length === 2 && s.layers[0].height === 360, {
        what: 'two layers at 360p',
        timeoutMs: 15_000,
        intervalMs: 250,
      });
      assert.deepEqual(two.layers.map((l) => [l.rid, l.height]), [['h', 360], ['m', 180]]);
      const enc360 = await studio.evaluate(() => window.studio.encodings());
      assert.deepEqual(enc360.map((e) => [e.rid, e.active, e.maxBitrate]), [
        ['h', true, 800_000],
        ['m', true, 266_667],
        ['l', false, 100_000],
      ]);
      await studio.getByLabel('Resolution').selectOption('1280x720');
      await until(studio, studioStats, (s) => s?.layers?.length === 3 && s.layers[0].height === 720, { what: 'three layers at 720p again', timeoutMs: 15_000, intervalMs: 250 });
      // Turned off while live: m and l pause (nothing to renegotiate); on again: back.
      await studio.getByLabel('Simulcast').uncheck();
      await until(studio, studioStats, (s) => s?.layers?.length === 1 && s.layers[0].rid === 'h', { what: 'one layer with simulcast turned off live', timeoutMs: 15_000, intervalMs: 250 });
      await until(studio, () => document.getElementById('stat-layers').textContent, (t) => / \(simulcast off\)$/.test(t), { what: 'the studio saying simulcast is off' });
      await studio.getByLabel('Simulcast').check();
      await until(studio, studioStats, (s) => s?.layers?.length === 3, { what: 'three layers with simulcast on again', timeoutMs: 15_000, intervalMs: 250 });

      const viewer = await watchOverWebRtc(ctx, 'viewer');
      const q = await until(viewer, playerStats, (s) => s.quality.options.length >= 2, {
        what: 'the watch page listing the room’s layers',
        timeoutMs: 15_000,
      });
      const { url, json } = await layerResource(viewer);
      assert.ok(json.layers.length >= 2, `the room has several layers: ${JSON.stringify(json)}`);
      assert.deepEqual(json.layers.map((l) => l.encodingId), q.quality.options.map((o) => o.value), 'the menu lists the server’s layers');
      const heights = json.layers.map((l) => l.height);
      assert.deepEqual([...heights].sort((a, b) => b - a), heights, `largest first: ${JSON.stringify(json)}`);
      assert.equal(await viewer.getByLabel('Quality').isVisible(), true);

      // The setting off, kept across a reload; live again: one layer.
      await studio.getByRole('button', { name: 'Stop', exact: true }).click();
      await until(studio, () => window.studio.state.status, (s) => s === 'offline', { what: 'studio stopped' });
      await studio.getByLabel('Simulcast').uncheck();
      await studio.reload({ waitUntil: 'domcontentloaded' });
      await studio.locator('#room').waitFor({ state: 'visible' });
      assert.equal(await studio.getByLabel('Simulcast').isChecked(), false, 'the setting is kept across a reload');
      await goLiveInStudio(studio);
      const one = await studioSends(studio, 1, 'the studio sending one layer');
      assert.equal(one.layers[0].rid, null, 'no simulcast: no RTP stream id');
      assert.match(await studio.locator('#stat-layers').innerText(), /^\d+×\d+ \(simulcast off\)$/);

      // The viewer plays the republished room (in the same session if the SFU kept it,
      // else in a new one); its layer resource lists at most one layer now.
      const framesBefore = (await viewer.evaluate(playerStats)).framesDecoded;
      const again = await until(viewer, playerStats, (s) => s.status === 'playing' && s.framesDecoded > framesBefore + 30, {
        what: 'the viewer playing the republished room',
        timeoutMs: 30_000,
        intervalMs: 250,
      });
      await sleep(2000); // a second layer would be seen by now
      const single = await layerResource(viewer);
      assert.ok(single.json.layers.length <= 1, `one layer without simulcast: ${JSON.stringify(single.json)}`);
      // The page learns it at its next layer request (every 10 s).
      await until(viewer, () => document.getElementById('quality').hidden, (hidden) => hidden, { what: 'no menu for a single layer', timeoutMs: 15_000 });
      console.log(`sessions: ${JSON.stringify(again.sessions)}, layer resource ${url === single.url ? 'of the same session' : 'of a new session'}`);
      assert.ok(again.videoHeight > 0);
      assert.deepEqual(ctx.app.unexpectedErrors(), [], 'no console errors');
      reportTimings('quality/studio', { live_to_three_layers_ms: liveToThreeMs, ...Object.fromEntries(Object.entries(kbps).map(([rid, k]) => [`layer_${rid}_kbps`, k])) });
    });
  }, BODY_CAP),
);

test('quality: over WebRTC the watch page lists Auto + each layer; the smallest makes the picture smaller; Auto again is accepted', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'quality-webrtc');
    await explained(ctx, async () => {
      await goLiveInStudio(ctx.studio);
      await studioSends(ctx.studio, 3, 'the studio sending three layers');
      const viewer = await watchOverWebRtc(ctx, 'viewer', '', SAMPLE_RTP);
      const listed = await until(viewer, statsAndMenu, (s) => s.quality.options.length === 3 && s.quality.playingHeight > 0, {
        what: 'Auto + three layers in the menu',
        timeoutMs: 15_000,
      });
      const menu = viewer.getByLabel('Quality');
      const labels = listed.menu.labels;
      const heights = listed.quality.options.map((o) => o.height);
      assert.deepEqual(labels.slice(1), heights.map((h) => `${h}p`), `each layer by height: ${labels}`);
      assert.match(labels[0], /^Auto \(\d+p\)$/, 'Auto says what plays now');
      assert.equal(listed.menu.value, 'auto');
      const smallest = listed.quality.options.at(-1);
      // Auto may start low while the publisher's bandwidth estimate ramps up (its upper
      // layers paused): it climbs once they send.
      const before = await until(viewer, playerStats, (s) => s.videoHeight > smallest.height, { what: 'Auto above the smallest layer', timeoutMs: 30_000 });
      await screenshot(viewer, 'quality-menu');

      // The smallest layer: the decoded picture shrinks to it.
      const t0 = Date.now();
      await menu.selectOption({ label: `${smallest.height}p` });
      const small = await until(viewer, playerStats, (s) => s.videoHeight === smallest.height && s.quality.choice === smallest.value, {
        what: `the picture at ${smallest.height}p after choosing it`,
        timeoutMs: 15_000,
      });
      const switchMs = Date.now() - t0;
      assert.ok(small.videoHeight < before.videoHeight, `smaller: ${before.videoHeight} → ${small.videoHeight}`);
      const framesThen = small.framesDecoded;
      await sleep(2000);
      const still = await viewer.evaluate(playerStats);
      assert.equal(still.videoHeight, smallest.height, 'a chosen layer holds');
      assert.ok(still.framesDecoded > framesThen, 'frames keep coming on the chosen layer');
      // One timeline across the switch: Chromium starts each layer's RTP clock at its own
      // random value (hours apart), and a jump makes the receiver hold or drop frames.
      const jump = worstRtpJumpMs(await viewer.evaluate(() => window.rtpSamples));
      assert.ok(jump < 1000, `the RTP clock follows the wall clock across the switch (worst gap ${Math.round(jump)} ms)`);

      // Auto again: accepted by the server; the label says what plays.
      await menu.selectOption('auto');
      const auto = await until(viewer, playerStats, (s) => s.quality.choice === 'auto' && s.quality.value === 'auto', {
        what: 'Auto accepted',
        timeoutMs: 10_000,
      });
      assert.match(await menu.locator('option').first().innerText(), /^Auto \(\d+p\)$/);
      // On a clean link Auto climbs back up (the SFU probes up with backoff): measured.
      const t1 = Date.now();
      const up = await until(viewer, playerStats, (s) => s.videoHeight > smallest.height, { what: 'Auto climbing up', timeoutMs: 30_000 }).catch(() => null);
      assert.deepEqual(ctx.app.unexpectedErrors(), [], 'no console errors');
      reportTimings('quality/webrtc', {
        choose_smallest_to_picture_ms: switchMs,
        auto_to_larger_picture_ms: up ? Date.now() - t1 : null,
        worst_rtp_vs_wall_ms: Math.round(worstRtpJumpMs(await viewer.evaluate(() => window.rtpSamples))),
        auto_playing_height: auto.quality.playingHeight,
      });
    });
  }, BODY_CAP),
);

/** Waits until the room's multivariant playlist lists `n` renditions, each with a segment. */
async function renditions(sk, room, n) {
  const base = `${sk.baseUrl}/hls/${room}`;
  const deadline = Date.now() + 30_000;
  let last = null;
  for (;;) {
    const r = await requestJson('GET', `${base}/index.m3u8`);
    last = r.text;
    const uris = r.status === 200 ? r.text.split('\n').filter((l) => l && !l.startsWith('#')) : [];
    if (uris.length >= n) {
      const media = await Promise.all(uris.map((u) => requestJson('GET', `${base}/${u}`)));
      if (media.every((m) => m.text?.includes('#EXTINF'))) return r.text;
    }
    if (Date.now() > deadline) throw new Error(`${base}/index.m3u8 did not list ${n} renditions with segments within 30 s; last:\n${last}`);
    await sleep(500);
  }
}

test('quality: over HLS the menu lists the renditions and choosing one switches hls.js’ level; WebRTC then keeps the pick', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'quality-hls');
    const { sk, app, room } = ctx;
    await explained(ctx, async () => {
      await goLiveInStudio(ctx.studio);
      await studioSends(ctx.studio, 3, 'the studio sending three layers');
      const multivariant = await renditions(sk, room, 3);
      const viewer = await app.open(`${sk.baseUrl}/watch/${room}?transport=hls`, { tag: 'hls-viewer' });
      const listed = await until(viewer, statsAndMenu, (s) => s.status === 'playing' && s.transport === 'hls' && s.quality.options.length === 3, {
        what: 'hls.js playing with three renditions in the menu',
        timeoutMs: 30_000,
        intervalMs: 250,
      });
      const levels = listed.hlsLevel;
      assert.equal(levels.heights.length, 3, `hls.js levels: ${JSON.stringify(levels)}\n${multivariant}`);
      const menu = viewer.getByLabel('Quality');
      const labels = listed.menu.labels;
      const byHeight = [...levels.heights].sort((a, b) => b - a);
      assert.deepEqual(labels.slice(1), byHeight.map((h) => `${h}p`), `each rendition by height: ${labels}`);
      assert.equal(listed.hlsLevel.auto, true, 'Auto at first');
      assert.match(labels[0], /^Auto( \(\d+p\))?$/);

      // Choose the smallest rendition: hls.js switches to that level and the picture follows.
      const small = Math.min(...levels.heights);
      const index = levels.heights.indexOf(small);
      await menu.selectOption({ label: `${small}p` });
      const chosen = await until(viewer, playerStats, (s) => s.hlsLevel?.manual === index && s.hlsLevel.current === index && s.videoHeight === small, {
        what: `hls.js on level ${index} (${small}p)`,
        timeoutMs: 20_000,
        intervalMs: 250,
      });
      assert.equal(chosen.hlsLevel.auto, false);
      assert.equal(await menu.inputValue(), String(index));

      // Back to Auto: hls.js' automatic level selection again.
      await menu.selectOption('auto');
      const auto = await until(viewer, playerStats, (s) => s.hlsLevel?.auto === true, { what: 'hls.js back on Auto', timeoutMs: 5000 });
      assert.equal(auto.quality.value, 'auto');

      // The pick is kept by height when the viewer goes to WebRTC ("Try low latency").
      await menu.selectOption({ label: `${small}p` });
      await until(viewer, playerStats, (s) => s.hlsLevel?.manual === index, { what: `hls.js told level ${index}`, timeoutMs: 5000 });
      await viewer.getByRole('button', { name: 'Try low latency (WebRTC)' }).click();
      // (The menu shows once two layers send: the publisher may have paused the others.)
      const rtc = await until(viewer, playerStats, (s) => s.transport === 'webrtc' && s.status === 'playing' && s.quality.options.length >= 2 && s.quality.choice !== null && s.quality.choice !== 'auto' && s.videoHeight === small, {
        what: `WebRTC on the ${small}p layer picked over HLS`,
        timeoutMs: 25_000,
        intervalMs: 250,
      });
      assert.equal(await menu.inputValue(), rtc.quality.choice, 'the menu shows the layer chosen');
      assert.equal(rtc.quality.options.find((o) => o.value === rtc.quality.choice)?.height, small);
      assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
    });
  }, BODY_CAP),
);

// Chromium pauses its upper layers whenever its bandwidth estimate drops, and turning
// simulcast off while live pauses m and l on purpose: an HLS viewer who picked a paused
// layer's rendition by hand (hls.js does not move away from it) keeps a moving picture,
// from the layer the packager puts in its place.
test('quality: an HLS viewer on a rendition whose layer pauses keeps a moving picture', { timeout: TEST_CAP_MS, skip }, () =>
  withCleanup(async (defer) => {
    const ctx = await setup(defer, 'quality-hls-pause');
    const { sk, app, room, studio } = ctx;
    await explained(ctx, async () => {
      await goLiveInStudio(studio);
      await studioSends(studio, 3, 'the studio sending three layers');
      await renditions(sk, room, 3);
      const viewer = await app.open(`${sk.baseUrl}/watch/${room}?transport=hls`, { tag: 'hls-viewer' });
      const listed = await until(viewer, playerStats, (s) => s.status === 'playing' && s.quality.options.length === 3, {
        what: 'hls.js playing with three renditions',
        timeoutMs: 30_000,
        intervalMs: 250,
      });
      const small = Math.min(...listed.hlsLevel.heights);
      await viewer.getByLabel('Quality').selectOption({ label: `${small}p` });
      await until(viewer, playerStats, (s) => s.videoHeight === small, { what: `playing ${small}p`, timeoutMs: 20_000 });
      await studio.getByLabel('Simulcast').uncheck();
      await studioSends(studio, 1, 'the studio sending h only');
      await sleep(3000); // what was buffered before the pause plays out
      const a = await viewer.evaluate(playerStats);
      await sleep(4000);
      const b = await viewer.evaluate(playerStats);
      assert.ok(b.currentTime > a.currentTime + 2, `time goes on: ${a.currentTime} → ${b.currentTime}`);
      assert.ok(b.framesDecoded > a.framesDecoded + 30, `pictures keep coming: ${a.framesDecoded} → ${b.framesDecoded}`);
    });
  }, BODY_CAP),
);
