// WebRTC end to end with real Chromium peers against the skylark binary:
//   1. WHIP publish (page A) → WHEP watch (page B);
//   2. WebSocket signaling, both join orders (viewer first, publisher first).
// Each test starts its own server and browser, fails fast with the server's or the
// browser's own words, and prints its timings (TIMING lines) for benchmarking.

import assert from 'node:assert/strict';
import { noBrowser, waitForStatus, waitForPlayback } from '../lib/browser.js';
import { probeWebSocket } from '../lib/server.js';
import { deadline, span, reportTimings } from '../lib/harness.js';
import { serverAndBrowser, creatorWithRoom, fixtureTest } from '../lib/fixtures.js';

/** Time for a publisher to reach `connected`. */
const PUBLISH_CAP_MS = 20_000;
/** Time for a viewer to decode its first frame. */
const PLAY_CAP_MS = 20_000;
/** Hard cap on one whole test (server + browser start, media, teardown). */
const TEST_CAP_MS = 90_000;
/** Cap on a test's body: past it the body fails and the cleanup still runs. */
const BODY_CAP = { capMs: 60_000 };

const skip = noBrowser() ?? false;

/** A server, a browser, a creator and a public sfu room, all torn down by `defer`. */
async function setup(defer, label) {
  // Clean exit is part of the test when it passed; after a failure just kill it.
  const { sk, b } = await serverAndBrowser(defer, label);
  const { creator, created, room } = await creatorWithRoom(sk, label);
  return { sk, b, creator, room, key: created.stream_key, whipUrl: created.ingest.whip_url };
}


async function requireWebSocketEndpoint(sk) {
  const status = await probeWebSocket(sk.baseUrl);
  if (status !== 101) throw new Error(`GET /ws with a WebSocket upgrade returned ${status} (expected 101 Switching Protocols)`);
}

/** Where a failure's explanation points: the server log and the browser console. */
const logs = (ctx) => ({ 'server log': ctx.sk.logFile, 'browser console': ctx.b.logFile });

/** A test with its own server, browser and room (`label`): `body(ctx, defer)`. */
const webrtcTest = (name, label, body) =>
  fixtureTest(name, { timeout: TEST_CAP_MS, skip, bodyCap: BODY_CAP }, { setup: (defer) => setup(defer, label), logs }, body);

/** Opens the test page `page` with `query` in the test's browser; `window.stop()` on cleanup. */
async function openPage(ctx, defer, page, query, tag) {
  const p = await ctx.b.newPage(page, query, { tag });
  defer(() => p.evaluate(() => window.stop()).catch(() => {}));
  return p;
}

webrtcTest('WHIP publish (Chromium) → WHEP watch (Chromium) decodes H.264', 'whip-whep', async (ctx, defer) => {
  const { sk, room, key, whipUrl } = ctx;
  const publisher = await openPage(ctx, defer, 'publish.html', { whip: whipUrl, key }, 'publisher');
  const pub = await waitForStatus(publisher, 'live', { timeoutMs: PUBLISH_CAP_MS, what: 'WHIP publisher' });
  assert.match(pub.location ?? '', new RegExp(`/whip/${room}/`), `WHIP Location: ${pub.location}`);

  const tViewerOpen = Date.now();
  const viewer = await openPage(ctx, defer, 'watch.html', { whep: `${sk.baseUrl}/whep/${room}` }, 'viewer');
  const { first, second } = await waitForPlayback(viewer, { timeoutMs: PLAY_CAP_MS, what: 'WHEP viewer' });
  assert.equal(first.codec?.toLowerCase(), 'video/h264', `negotiated codec: ${first.codec}`);
  // The SFU (DTLS server) picks AES-128-GCM: the cheapest seal per forwarded packet
  // (docs/benchmarks.md, "SRTP seal cost").
  assert.equal(second.dtlsRole, 'client', 'Chromium is the DTLS client');
  assert.equal(second.srtpCipher, 'SRTP_AEAD_AES_128_GCM', `SRTP profile: ${second.srtpCipher}`);
  assert.equal(second.videoWidth, 640);
  // Audio and video in one stream, so Chromium plays them in sync.
  assert.ok(second.trackStreams?.video, `video track stream: ${JSON.stringify(second.trackStreams)}`);
  assert.equal(second.trackStreams.audio, second.trackStreams.video, 'audio and video in one MediaStream');
  // The SFU's answer negotiates no RTP header extension (no MID): Chromium binds both
  // streams by the SSRCs the answer lists.
  assert.ok(second.audioPacketsReceived > first.audioPacketsReceived, `audio packets: ${first.audioPacketsReceived} → ${second.audioPacketsReceived}`);

  const v = second.timings;
  const p = pub.timings;
  const viewerStop = await viewer.evaluate(() => window.stop());
  const publisherStop = await publisher.evaluate(() => window.stop());
  assert.ok([200, 204].includes(viewerStop.deleteStatus), `WHEP DELETE returned ${viewerStop.deleteStatus}`);
  assert.ok([200, 204].includes(publisherStop.deleteStatus), `WHIP DELETE returned ${publisherStop.deleteStatus}`);

  reportTimings('webrtc/whip-whep', {
    whip_gather_ms: span(p.negotiating, p.offerReady),
    whip_post_to_answer_ms: span(p.postSent, p.answerReceived),
    whip_post_to_connected_ms: span(p.postSent, p['pc:connected']),
    whep_gather_ms: span(v.negotiating, v.offerReady),
    whep_post_to_answer_ms: span(v.postSent, v.answerReceived),
    whep_post_to_connected_ms: span(v.postSent, v['pc:connected']),
    whep_post_to_first_frame_ms: span(v.postSent, v.firstFrame),
    viewer_open_to_first_frame_ms: span(tViewerOpen, v.firstFrame),
    frames_decoded_over_2s: second.framesDecoded - first.framesDecoded,
  });
});

/** The timings both WebSocket tests report: the publisher's and the viewer's offer to
 *  answer, connection and first frame; frames decoded over the 2 s playback check. */
function wsTimings(pub, { first, second }) {
  const v = second.timings;
  const p = pub.timings;
  return {
    publish_offer_to_answer_ms: span(p.postSent, p.answerReceived),
    publish_offer_to_connected_ms: span(p.postSent, p['pc:connected']),
    viewer_offer_to_answer_ms: span(v.postSent, v.answerReceived),
    viewer_offer_to_first_frame_ms: span(v.postSent, v.firstFrame),
    frames_decoded_over_2s: second.framesDecoded - first.framesDecoded,
  };
}

/** The WebSocket publisher page on the room, live. */
async function wsPublisherLive(ctx, defer) {
  const { sk, room, key } = ctx;
  const publisher = await openPage(ctx, defer, 'ws-publish.html', { server: sk.baseUrl, room, key }, 'publisher');
  return waitForStatus(publisher, 'live', { timeoutMs: PUBLISH_CAP_MS, what: 'WS publisher' });
}

webrtcTest('WebSocket signaling: viewer first (waiting → plays once the publisher is live)', 'ws-viewer-first', async (ctx, defer) => {
  const { sk, room } = ctx;
  await deadline(requireWebSocketEndpoint(sk), 6000, 'GET /ws');
  const viewer = await openPage(ctx, defer, 'ws-watch.html', { server: sk.baseUrl, room }, 'viewer');
  const waiting = await waitForStatus(viewer, 'waiting', { timeoutMs: 10_000, what: 'WS viewer' });

  const pub = await wsPublisherLive(ctx, defer);
  const playback = await waitForPlayback(viewer, { timeoutMs: PLAY_CAP_MS, what: 'WS viewer' });
  const { first, second } = playback;
  assert.equal(first.codec?.toLowerCase(), 'video/h264', `negotiated codec: ${first.codec}`);
  assert.ok(waiting.timings.waiting < second.timings.postSent, 'the viewer offered only after being told the room is live');

  const v = second.timings;
  const p = pub.timings;
  reportTimings('webrtc/ws-viewer-first', {
    ...wsTimings(pub, playback),
    publisher_offer_to_viewer_told_live_ms: span(p.postSent, v['ws<room']),
    publisher_connected_to_viewer_first_frame_ms: span(p['pc:connected'], v.firstFrame),
  });
});

webrtcTest('WebSocket signaling: publisher first (viewer plays at once)', 'ws-publisher-first', async (ctx, defer) => {
  const { sk, room } = ctx;
  await deadline(requireWebSocketEndpoint(sk), 6000, 'GET /ws');
  const pub = await wsPublisherLive(ctx, defer);

  const tViewerOpen = Date.now();
  const viewer = await openPage(ctx, defer, 'ws-watch.html', { server: sk.baseUrl, room }, 'viewer');
  const playback = await waitForPlayback(viewer, { timeoutMs: PLAY_CAP_MS, what: 'WS viewer' });
  const { first, second } = playback;
  assert.equal(first.codec?.toLowerCase(), 'video/h264', `negotiated codec: ${first.codec}`);
  const viewerState = await viewer.evaluate(() => window.state);
  assert.equal(viewerState.waitingCount, 0, 'a viewer of a live room is never told `waiting`');

  const v = second.timings;
  reportTimings('webrtc/ws-publisher-first', {
    ...wsTimings(pub, playback),
    viewer_ws_open_to_live_ms: span(v.wsOpen, v['ws<room']),
    viewer_open_to_first_frame_ms: span(tViewerOpen, v.firstFrame),
  });
});
