// Peer-to-peer rooms from the studio (/studio) to the player (/watch/{room}), every page
// the product's own, in Debian's Chromium with fake devices:
//   - one viewer waits before go-live, two arrive after: the studio offers each its own
//     RTCPeerConnection and all three decode frames at once, with no SFU session on the
//     server; a microphone switch reaches every viewer (replaceTrack on each sender); the
//     studio lists each viewer's connection, the upload it spends, and warns past its
//     viewer limit; a viewer leaving frees its connection; Stop ends every viewer's stream;
//   - a second connection with the studio's credential takes the room over at once (a
//     reconnect); the studio that lost it stops and says why;
//   - a viewer whose network can't reach the broadcaster (ICE with no usable candidate)
//     is told so;
//   - the studio's uplink rule and `iceServers` pick-up, on figures (no browser).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noBrowser } from '../lib/browser.js';
import { metrics, requestJson } from '../lib/server.js';
import { reportTimings } from '../lib/harness.js';
import { until } from '../lib/app.js';
import { serverAndApp, fixtureTest } from '../lib/fixtures.js';
import { goLiveInStudio, openStudioAs } from '../lib/studio.js';
import { iceServersOf, uplinkWarning } from '../../../web/src/js/p2p.js';

const TEST_CAP_MS = 150_000;
const BODY_CAP = { capMs: 130_000 };
const PLAY_CAP_MS = 25_000;
const skip = noBrowser() ?? false;

const logs = (ctx) => ({ 'server log': ctx.sk.logFile, 'page console': ctx.app.logFile });

async function setup(defer, label) {
  const { sk, b, app } = await serverAndApp(defer, label);
  const creator = await sk.signup();
  const created = await sk.createRoom(creator.access_token, { title: `P2P e2e: ${label}`, mode: 'p2p' });
  return { sk, b, app, creator, room: created.room.id };
}

const p2pTest = (name, label, body) => fixtureTest(name, { timeout: TEST_CAP_MS, skip, bodyCap: BODY_CAP }, { setup: (defer) => setup(defer, label), logs }, body);

const playerStats = () => window.player.stats();

/** The player decoding over p2p: playing, frames decoded, the picture sized. */
const playingP2p = (s) => s.status === 'playing' && s.transport === 'p2p' && s.videoWidth > 0 && s.framesDecoded > 0;

/** The studio, signed in, live in its p2p room at 360p (three encoders share two cores). */
async function studioLive(ctx, defer) {
  const studio = await openStudioAs(ctx.app, ctx.sk, ctx.creator);
  defer(() => studio.evaluate(() => window.studio.stop()).catch(() => {}));
  assert.match(await studio.locator("#room-badges").innerText(), /peer to peer/i);
  await studio.getByLabel('Resolution', { exact: true }).selectOption('640x360');
  const live = await goLiveInStudio(studio);
  return { studio, ...live };
}

p2pTest('p2p: the studio broadcasts to three viewers (one waiting, two late), none through the SFU; a leaving viewer frees its connection; Stop ends every stream', 'p2p-three', async (ctx, defer) => {
  const { sk, app, room } = ctx;

  // Viewer 1 arrives before the broadcaster.
  const v1 = await app.open(`${sk.baseUrl}/watch/${room}`, { tag: 'viewer1' });
  await until(v1, () => window.player.state.status, (s) => s === 'waiting', { what: 'viewer 1 waiting' });

  const { studio, goLiveMs } = await studioLive(ctx, defer);
  const tLive = Date.now();
  const panel = await studio.locator('#p2p-panel').isVisible();
  assert.ok(panel, 'the studio shows its p2p viewers panel');

  // The waiting viewer is offered at once and plays, saying how.
  await until(v1, playerStats, playingP2p, { what: 'viewer 1 (waiting before go-live) playing peer to peer', timeoutMs: PLAY_CAP_MS, intervalMs: 250 });
  const waitingToFrameMs = Date.now() - tLive;
  assert.match(await v1.locator('#stat-transport').innerText(), /peer-to-peer/);

  // Viewers 2 and 3 arrive while live.
  const joins = [];
  const late = [];
  for (const tag of ['viewer2', 'viewer3']) {
    const t0 = Date.now();
    const page = await app.open(`${sk.baseUrl}/watch/${room}`, { tag });
    await until(page, playerStats, playingP2p, { what: `${tag} (arrived while live) playing peer to peer`, timeoutMs: PLAY_CAP_MS, intervalMs: 250 });
    // Where the time goes: until the broadcaster's offer is answered, then to the first frame.
    const ev = await page.evaluate(() => window.player.state.events.map((e) => ({ name: e.name, t: e.t })));
    const at = (name) => ev.find((e) => e.name === name)?.t ?? null;
    joins.push({ total: Date.now() - t0, toAnswer: at('p2p:answered') - t0, answerToFrame: at('firstFrame') - at('p2p:answered') });
    late.push(page);
  }
  const viewers = [v1, ...late];

  // All three decode at the same time: frames advance on each over 2 s.
  const before = await Promise.all(viewers.map((p) => p.evaluate(playerStats)));
  await studio.waitForTimeout(2000);
  const after = await Promise.all(viewers.map((p) => p.evaluate(playerStats)));
  after.forEach((s, i) => {
    assert.equal(s.transport, 'p2p', `viewer ${i + 1} on p2p`);
    assert.ok(s.framesDecoded > before[i].framesDecoded + 10, `viewer ${i + 1} keeps decoding (${before[i].framesDecoded} → ${s.framesDecoded})`);
    assert.equal(s.videoWidth, 640, `viewer ${i + 1} sees the 360p composite (${s.videoWidth}×${s.videoHeight})`);
  });

  // The studio: one connection per viewer, each connected; the upload it spends.
  const peers = await until(studio, () => window.studio.peers(), (p) => p.live.length === 3 && p.live.every((x) => x.pcState === 'connected'), { what: 'studio: three connected viewers' });
  const figures = await until(studio, () => window.studio.p2pStats, (s) => s && s.connected === 3 && s.viewers.every((v) => v.bitrate > 30_000), {
    what: 'studio: upload figures for three viewers',
    timeoutMs: 10_000,
  });
  const listed = await studio.locator('#p2p-peers li').allInnerTexts();
  assert.equal(listed.filter((t) => /connected/.test(t)).length, 3, `each viewer's state listed: ${JSON.stringify(listed)}`);
  assert.equal(await studio.locator('#p2p-count').innerText(), '3');
  assert.match(await studio.locator('#p2p-upload').innerText(), /[\d.]+ [kM]b\/s/);
  assert.ok(Math.abs(figures.uploadBps - figures.viewers.reduce((n, v) => n + v.bitrate, 0)) < 1, 'upload = the sum of the viewers');
  assert.equal(await studio.locator('#p2p-warning').isVisible(), false, 'three viewers: no warning at the default limit');

  // The server carried signaling only: live in the API (viewers counted), no SFU publisher, subscriber, WHIP/WHEP session or media byte.
  const api = await requestJson('GET', `${sk.baseUrl}/api/v1/rooms/${room}`, { expect: 200 });
  assert.equal(api.json.live, true, 'the API reports the p2p room live');
  assert.equal(api.json.viewers, 3, `the broadcaster's viewers are counted: ${JSON.stringify(api.json)}`);
  const m = await metrics(sk);
  assert.ok(m.skylark_ws_connections >= 4, `the studio and three viewers on /ws (${m.skylark_ws_connections})`);
  for (const name of ['skylark_sfu_publishers', 'skylark_sfu_subscribers', 'skylark_sfu_bytes_in_total', 'skylark_sfu_packets_in_total']) {
    assert.ok(name in m, `the SFU reports ${name} (it runs in this process)`);
  }
  for (const name of ['skylark_sfu_publishers', 'skylark_sfu_subscribers', 'skylark_whip_sessions_total', 'skylark_whep_sessions_total', 'skylark_sfu_bytes_in_total', 'skylark_sfu_packets_in_total']) {
    assert.equal(m[name] ?? 0, 0, `${name} = ${m[name]}: no media through the SFU`);
  }

  // A microphone switch reaches every viewer's sender.
  const mics = await studio.locator('#mic-select option').evaluateAll((os) => os.map((o) => ({ value: o.value, label: o.textContent })));
  const oldMic = await studio.evaluate(() => window.studio.media.mic.label);
  const otherMic = mics.find((x) => x.value !== 'none' && x.label !== oldMic);
  assert.ok(otherMic, `a second fake microphone: ${JSON.stringify(mics)}`);
  await studio.getByLabel('Microphone', { exact: true }).selectOption(otherMic.value);
  const switched = await until(
    studio,
    () => ({ mic: window.studio.media.mic?.id, label: window.studio.media.mic?.label, peers: window.studio.peers().live }),
    (v) => v.label !== oldMic && v.peers.length === 3 && v.peers.every((p) => p.audio === v.mic),
    { what: 'every viewer gets the new microphone' },
  );
  const canvas = switched.peers[0].video;
  assert.ok(switched.peers.every((p) => p.video === canvas), 'every viewer gets the same canvas track');

  // Mute and a layout change: the shared tracks carry them to everyone, no renegotiation.
  await studio.getByRole('button', { name: 'Mute mic' }).click();
  await studio.getByLabel('Camera only', { exact: true }).check();
  const muted = await studio.evaluate(() => ({ enabled: window.studio.media.mic.enabled, mic: window.studio.media.mic.id, peers: window.studio.peers().live, layout: window.studio.compositor.layout }));
  assert.equal(muted.enabled, false, 'the microphone every viewer gets is muted');
  assert.ok(muted.peers.every((p) => p.audio === muted.mic && p.video === canvas), 'same senders, same tracks after mute and layout change');
  assert.equal(muted.layout, 'camera');

  // Past the viewer limit the studio warns (the limit lowered for the test).
  await studio.evaluate(() => (window.studio.p2pLimits.manyViewers = 2));
  const warned = await until(studio, () => ({ shown: !document.getElementById('p2p-warning').hidden, text: document.getElementById('p2p-warning').textContent, reason: document.getElementById('p2p-warning').dataset.reason }), (w) => w.shown, {
    what: 'the studio warns past its viewer limit',
    timeoutMs: 5000,
  });
  assert.equal(warned.reason, 'viewers');
  assert.match(warned.text, /3 viewers: peer to peer sends your stream once per viewer/);
  await studio.evaluate((n) => (window.studio.p2pLimits.manyViewers = n), 4);
  await until(studio, () => document.getElementById('p2p-warning').hidden, (h) => h, { what: 'the warning goes away under the limit', timeoutMs: 5000 });

  // Viewer 2 leaves: the studio closes its connection; the others play on.
  const ids = peers.live.map((p) => p.viewer);
  const tLeave = Date.now();
  await late[0].context().close();
  const left = await until(studio, () => window.studio.peers(), (p) => p.live.length === 2, { what: 'studio: the leaving viewer dropped', timeoutMs: 10_000 });
  const leaveMs = Date.now() - tLeave;
  const goneId = ids.find((id) => !left.live.some((p) => p.viewer === id));
  const gone = left.gone.find((g) => g.viewer === goneId);
  assert.deepEqual({ state: gone?.state, closed: gone?.closed }, { state: 'left', closed: true }, `the leaver's RTCPeerConnection is closed: ${JSON.stringify(left.gone)}`);
  await until(studio, () => document.getElementById('p2p-count').textContent, (n) => n === '2', { what: 'studio: two connected', timeoutMs: 5000 });
  for (const [i, p] of [v1, late[1]].entries()) {
    const a = await p.evaluate(playerStats);
    await p.waitForTimeout(1000);
    const b = await p.evaluate(playerStats);
    assert.ok(b.framesDecoded > a.framesDecoded, `remaining viewer ${i + 1} keeps decoding`);
  }

  // Stop: every remaining viewer's stream ends and shows offline; every connection closed.
  const tStop = Date.now();
  await studio.getByRole('button', { name: 'Stop', exact: true }).click();
  for (const [i, p] of [v1, late[1]].entries()) {
    await until(p, playerStats, (s) => s.status === 'offline', { what: `viewer ${i + 1} offline after Stop`, timeoutMs: 10_000 });
    assert.match(await p.locator('#overlay-text').innerText(), /offline/);
  }
  const offlineMs = Date.now() - tStop;
  const ended = await studio.evaluate(() => window.studio.peers());
  assert.equal(ended.live.length, 0);
  assert.ok(ended.gone.filter((g) => g.state === 'stopped').length === 2 && ended.gone.every((g) => g.closed), `every connection closed: ${JSON.stringify(ended.gone)}`);
  const off = await until(studio, (id) => fetch(`/api/v1/rooms/${id}`).then((r) => r.json()), (r) => r.live === false, { what: 'API: room offline', arg: room });
  assert.equal(off.live, false);

  reportTimings('p2p_three_viewers', {
    go_live_ms: goLiveMs,
    waiting_viewer_live_to_first_frame_ms: waitingToFrameMs,
    late_viewer_open_to_first_frame_ms: Math.max(...joins.map((j) => j.total)),
    late_viewer_open_to_answer_ms: Math.max(...joins.map((j) => j.toAnswer)),
    late_viewer_answer_to_first_frame_ms: Math.max(...joins.map((j) => j.answerToFrame)),
    upload_total_bps: Math.round(figures.uploadBps),
    upload_per_viewer_bps: Math.round(figures.uploadBps / 3),
    viewer_leave_to_closed_ms: leaveMs,
    stop_to_all_offline_ms: offlineMs,
  });
  assert.deepEqual(app.unexpectedErrors(), [], 'no console errors');
});

p2pTest('p2p: another connection with the same account takes the room over at once; the studio that lost it stops and says why', 'p2p-takeover', async (ctx, defer) => {
  const { sk, app, room, creator } = ctx;
  const { studio } = await studioLive(ctx, defer);
  // A second connection publishing with the studio's credential (the account), as the
  // studio itself does when it reconnects after a network drop.
  const other = await app.open(`${sk.baseUrl}/`, { tag: 'second-connection' });
  const t0 = Date.now();
  const reply = await other.evaluate(
    ({ url, room, token }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        window.__second = ws;
        ws.onopen = () => ws.send(JSON.stringify({ type: 'publish', room, token }));
        ws.onmessage = (ev) => {
          const m = JSON.parse(ev.data);
          if (m.type === 'room' || m.type === 'error') resolve(m);
        };
        ws.onerror = () => reject(new Error('the WebSocket failed'));
        setTimeout(() => reject(new Error('no reply within 10 s')), 10_000);
      }),
    { url: sk.wsUrl, room, token: creator.access_token },
  );
  assert.deepEqual({ type: reply.type, live: reply.live, role: reply.role }, { type: 'room', live: true, role: 'publisher' }, JSON.stringify(reply));
  const takeoverMs = Date.now() - t0;
  await until(studio, () => window.studio.state.status, (st) => st === 'error', { what: 'the studio stops', timeoutMs: 10_000 });
  assert.match(await studio.locator('#message').innerText(), /taken over/);
  // It does not publish again (that would take the room back and forth).
  await studio.waitForTimeout(3000);
  assert.equal(await studio.evaluate(() => window.studio.state.status), 'error');
  const live = await until(studio, (id) => fetch(`/api/v1/rooms/${id}`).then((r) => r.json()), (r) => r.live === true, { what: 'API: still live', arg: room });
  assert.equal(live.live, true);
  await other.evaluate(() => window.__second.close());
  reportTimings('p2p_takeover', { publish_to_live_ms: takeoverMs });
});

p2pTest('p2p: a viewer who cannot reach the broadcaster peer to peer is told so', 'p2p-unreachable', async (ctx, defer) => {
  const { sk, app, room } = ctx;
  await studioLive(ctx, defer);
  // This viewer's network lets no direct path through: ICE may use relays only, and the
  // room has none, so no candidate pair can ever form.
  const viewer = await app.open(`${sk.baseUrl}/watch/${room}`, {
    tag: 'blocked-viewer',
    initScript: `{
      const Native = window.RTCPeerConnection;
      window.RTCPeerConnection = class extends Native {
        constructor(config = {}) { super({ ...config, iceTransportPolicy: 'relay' }); }
      };
    }`,
  });
  const t0 = Date.now();
  const s = await until(viewer, playerStats, (x) => x.status === 'unreachable', { what: 'blocked viewer told it cannot connect', timeoutMs: 30_000, intervalMs: 250 });
  assert.equal(s.transport, 'p2p');
  const shown = await viewer.locator('#message').innerText();
  assert.match(shown, /Can't connect to the broadcaster peer to peer/);
  assert.match(shown, /firewall or NAT/);
  assert.ok(await viewer.getByRole('button', { name: 'Try again' }).isVisible(), 'a Try again button');
  assert.equal(await viewer.locator('#stat-status').innerText(), 'Can’t connect');
  reportTimings('p2p_unreachable', { open_to_message_ms: Date.now() - t0 });
});

/** The local and remote candidate types of the page's last peer connection's selected pair. */
const selectedPair = async () => {
  const pc = window.__pcs.at(-1);
  const report = await pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  const local = pair && report.get(pair.localCandidateId);
  const remote = pair && report.get(pair.remoteCandidateId);
  return local && remote ? { local: local.candidateType, remote: remote.candidateType, relayProtocol: local.relayProtocol ?? null } : null;
};
const CAPTURE_PCS = `{
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
}`;

fixtureTest(
  'p2p: a broadcaster and a viewer that may use relays only connect through the embedded TURN server',
  { timeout: TEST_CAP_MS, skip, bodyCap: BODY_CAP },
  {
    setup: async (defer) => {
      const { sk, b, app } = await serverAndApp(defer, 'p2p-turn', { SKYLARK_TURN_ADDR: '127.0.0.1:0', SKYLARK_TURN_SECRET: 'p2p-e2e-turn-secret-0123' });
      const creator = await sk.signup();
      const created = await sk.createRoom(creator.access_token, { title: 'P2P e2e: through TURN', mode: 'p2p' });
      return { sk, b, app, creator, room: created.room.id };
    },
    logs,
  },
  async (ctx, defer) => {
    const { sk, app, room, creator } = ctx;
    // Both ends relay-only (`?ice=relay`): no host candidate may pair, as for two peers
    // behind NATs that can't reach each other; the TURN server and credentials come in
    // the WebSocket replies.
    const studio = await openStudioAs(app, sk, creator, 'studio', '?ice=relay');
    defer(() => studio.evaluate(() => window.studio.stop()).catch(() => {}));
    await studio.getByLabel('Resolution', { exact: true }).selectOption('640x360');
    await goLiveInStudio(studio, { screen: false });
    const t0 = Date.now();
    const viewer = await app.open(`${sk.baseUrl}/watch/${room}?ice=relay`, { tag: 'relay-viewer', initScript: CAPTURE_PCS });
    await until(viewer, playerStats, playingP2p, { what: 'relay-only viewer playing peer to peer through TURN', timeoutMs: PLAY_CAP_MS, intervalMs: 250 });
    const pair = await viewer.evaluate(selectedPair);
    assert.equal(pair?.local, 'relay', `the viewer's selected pair is relayed: ${JSON.stringify(pair)}`);
    assert.equal(pair?.remote, 'relay', `to the broadcaster's relayed address: ${JSON.stringify(pair)}`);
    const m = await metrics(sk);
    assert.ok(m.skylark_turn_allocations >= 2, `both ends hold allocations (${m.skylark_turn_allocations})`);
    assert.ok(m.skylark_turn_relayed_packets_total > 0, 'media went through the relay');
    assert.equal(m.skylark_sfu_subscribers ?? 0, 0, 'and never through the SFU');
    reportTimings('p2p_turn', { open_to_playing_ms: Date.now() - t0, relay_protocol: pair.relayProtocol });
  },
);

test('p2p: the uplink warning (viewer count, bandwidth-limited senders) and iceServers from server messages', () => {
  const up = (availableBps, limitation = 'none') => ({ state: 'connected', availableBps, limitation });
  const need = 2_500_000;
  assert.equal(uplinkWarning([up(8e6), up(8e6)], need), null, 'two viewers with room to spare');
  const many = uplinkWarning([up(8e6), up(8e6), up(8e6), up(8e6), up(8e6)], need);
  assert.equal(many?.reason, 'viewers');
  assert.match(many.text, /^5 viewers: .*about 12\.5 Mb\/s of upload/);
  // A low estimate alone is the ramp-up after connecting: only a sender the encoder also
  // reports limited by bandwidth counts.
  assert.equal(uplinkWarning([up(600_000)], need), null);
  const starved = uplinkWarning([up(8e6), up(600_000, 'bandwidth')], need);
  assert.equal(starved?.reason, 'bandwidth');
  assert.match(starved.text, /1 of 2 viewers get a reduced picture \(about 600 kb\/s available of 2500 kb\/s needed\)/);
  assert.equal(uplinkWarning([up(3e6, 'bandwidth')], need), null, 'limited, but the estimate covers the need: the encoder catches up');
  assert.equal(uplinkWarning([{ state: 'connecting', availableBps: 1000, limitation: 'bandwidth' }], need), null, 'connecting viewers have no estimate worth a warning');

  assert.equal(iceServersOf({ type: 'room' }), null);
  assert.deepEqual(iceServersOf({ iceServers: [{ urls: 'turn:t.example:3478', username: 'u', credential: 'c' }, { nope: 1 }, null] }), [{ urls: 'turn:t.example:3478', username: 'u', credential: 'c' }]);
});
