// The player: /watch/{room}[?token=…]. Asks /playback how to watch, plays WebRTC (WHEP)
// first and falls back to HLS (hls.js, or native HLS) when WebRTC is missing, the server
// recommends HLS, ICE fails, or no frame arrives within a few seconds; and from HLS to
// HTTP-FLV (mpegts.js) when HLS can't be played. Waits for a room that isn't live yet and
// starts by itself; reconnects by itself when the stream drops.
//
// `?transports=webrtc,hls,flv` sets the order of the fallbacks (that one is the default;
// leave one out to never use it); `?transport=hls|webrtc|flv` forces one path (for checks
// by hand). For tests, `window.player` exposes `state` and `stats()`.
//
// The quality menu lists "Auto" and each simulcast layer (WebRTC: the WHEP layer
// extension) or rendition (HLS: hls.js' levels) by height, when there are several.
//
// Peer-to-peer rooms play only from the broadcaster's browser: it offers over the
// WebSocket, the player answers; no HLS or FLV exists for them. A viewer who can't reach
// the broadcaster directly is told so (status `unreachable`) and may try again.
//
// The seek bar (when the server keeps a DVR window) goes back in the live stream over
// HLS; a WebRTC viewer who drags it moves to HLS, and "Go live" brings them back to
// WebRTC (an HLS viewer to the HLS live edge).

import { api, ApiError, errorFrom, request } from './api.js';
import { LAYER_REL, deleteSession, makeOffer, postOffer, preferH264, receiverStats } from './rtc.js';
import { $, el, formatMs, say, viewersText } from './ui.js';
import { iceServersOf } from './p2p.js';

/** No decoded frame this long after the WHEP answer → HLS. */
const FIRST_FRAME_TIMEOUT_MS = 6000;
/**
 * Frames stopped this long while the room is live → reconnect through signaling, which
 * places the viewer on a node that is alive. Shorter than ICE's own failure detection
 * (Chromium: ~5 s to "disconnected", ~30 s to "failed"), so a dead or cut-off SFU costs a
 * viewer about 3 s of frozen picture instead of 7 or more.
 */
const STALL_MS = 2000;
const HLS_STALL_MS = 12_000;
/** HLS sessions ending without a frame, in a row, before the next transport (FLV) is tried. */
const HLS_TRIES_BEFORE_NEXT = 2;
const POLL_WAITING_MS = 3000;
const POLL_PLAYING_MS = 5000;
const WATCHDOG_MS = 1000;
/** The WebRTC watchdog looks more often: a stall is measured against STALL_MS. */
const WEBRTC_WATCHDOG_MS = 250;
/** Wait before the first reconnect in the window; later ones wait RECONNECT_BACKOFF_MS. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_BACKOFF_MS = 1000;
/** WebRTC reconnects within this window before giving up on WebRTC for HLS. */
const RECONNECT_WINDOW_MS = 60_000;
const MAX_RECONNECTS = 3;
/**
 * How often a WebRTC viewer asks the server which layers the room has (one request per
 * viewer: kept rare). What plays now comes from the decoder on every watchdog tick.
 */
const LAYER_REFRESH_MS = 10_000;
/** The first layer request after the first frame: simulcast layers start one by one. */
const LAYER_FIRST_MS = 1000;
/** p2p: the broadcaster's offer should come this soon after the room is live. */
const P2P_OFFER_TIMEOUT_MS = 8000;
/** p2p: no picture this long after the offer → the viewer can't reach the broadcaster. */
const P2P_CONNECT_TIMEOUT_MS = 15_000;

const video = $('video');
const message = $('message');
const params = new URLSearchParams(location.search);
const token = params.get('token') || null;
/** `?ice=relay`: WebRTC through TURN only (`iceTransportPolicy: 'relay'`), e.g. to check a relay. */
const relayOnly = params.get('ice') === 'relay';
const KNOWN = ['webrtc', 'hls', 'flv'];
const forced = KNOWN.includes(params.get('transport')) ? params.get('transport') : null;
/** The transports to try, in order: `?transport=` alone, else `?transports=`, else all. */
const order = (() => {
  if (forced) return [forced];
  const asked = (params.get('transports') ?? '')
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t, i, all) => KNOWN.includes(t) && all.indexOf(t) === i);
  return asked.length ? asked : [...KNOWN];
})();
const roomParam = (() => {
  const m = location.pathname.match(/^\/watch\/([^/]+)/);
  try {
    return m ? decodeURIComponent(m[1]) : '';
  } catch {
    return '';
  }
})();

const state = {
  status: 'loading', // loading | waiting | connecting | playing | stalled | offline | unreachable | error
  transport: null, // 'webrtc' | 'hls' | 'hls-native' | 'flv' | 'p2p'
  order,
  room: roomParam,
  title: null,
  live: null,
  viewers: null,
  latencyMs: null,
  fallbackReason: null,
  error: null,
  sessions: { webrtc: 0, hls: 0, flv: 0 },
  /**
   * The quality menu: `options` [{value, label, height}] largest first (a layer's
   * encodingId, or an hls.js level index), `value` ('auto' or an option's value),
   * `playingHeight` (the decoded picture's), `wantedHeight` (the viewer's pick, kept
   * across sessions and transports; null = Auto); over WebRTC also the server's `choice`
   * and the layer it forwards (`following`).
   */
  quality: { source: null, options: [], value: 'auto', playingHeight: null, wantedHeight: null, layerUrl: null, choice: null, following: null },
  events: [],
};

let playback = null;
/** The current transport session; replaced (and torn down) as a whole. */
let current = null;
let starting = false;
let wantLowLatency = forced === 'webrtc';
let reconnectTimes = [];
let pollTimer = null;
let ws = null;
let wsRetry = 0;
let hlsModule = null;
let mpegtsModule = null;
/** ICE servers the signaling server hands out (TURN); none: host and STUN-less ICE. */
let iceServers = [];
let p2pOfferTimer = null;
let p2pOfferRetried = false;

function note(name, detail) {
  state.events.push({ t: Date.now(), name, ...(detail === undefined ? {} : { detail }) });
  if (state.events.length > 300) state.events.shift();
  console.log(`[player] ${name}${detail === undefined ? '' : ` ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
}

// --- what the viewer sees -----------------------------------------------------------

const OVERLAY = {
  loading: 'Loading…',
  waiting: 'This stream hasn’t started yet. It will start by itself when the broadcaster goes live.',
  connecting: 'Connecting…',
  stalled: 'The stream is interrupted. Reconnecting…',
  offline: 'The broadcaster is offline. Playback resumes by itself when they are back.',
};
/** Why a p2p viewer sees nothing: their network and the broadcaster's can't meet. */
const P2P_UNREACHABLE = (why) =>
  `Can't connect to the broadcaster peer to peer (${why}). In this room the video comes straight from the broadcaster's browser, and a firewall or NAT between you blocks it. Try again, try another network, or ask the broadcaster to use a server (SFU) room.`;
const STATUS = {
  loading: 'Loading',
  waiting: 'Waiting for the broadcaster',
  connecting: 'Connecting',
  playing: 'Playing',
  stalled: 'Reconnecting',
  offline: 'Broadcaster offline',
  unreachable: 'Can’t connect',
  error: 'Error',
};
const TRANSPORT = { webrtc: 'WebRTC', hls: 'HLS (hls.js)', 'hls-native': 'HLS (native)', flv: 'FLV (mpegts.js)', p2p: 'WebRTC, peer-to-peer' };

function setStatus(s, text) {
  if (state.status === 'error' && s !== 'error') return;
  if (state.status !== s) note(`status:${s}`);
  state.status = s;
  $('stat-status').textContent = STATUS[s] ?? s;
  const overlay = $('overlay');
  const shown = s !== 'playing';
  overlay.hidden = !shown;
  $('spinner').hidden = !['loading', 'connecting', 'stalled'].includes(s);
  $('overlay-text').textContent = text ?? OVERLAY[s] ?? '';
  $('live-badge').hidden = s !== 'playing';
  $('live-badge').classList.toggle('live', s === 'playing');
}

function setTransport(t) {
  state.transport = t;
  $('stat-transport').textContent = t ? TRANSPORT[t] : '–';
  $('low-latency').hidden = !['hls', 'hls-native', 'flv'].includes(t) || typeof window.RTCPeerConnection !== 'function' || !playback?.webrtc;
}

function setViewers(n) {
  if (typeof n !== 'number') return;
  state.viewers = n;
  $('stat-viewers').textContent = viewersText(n);
}

function setLatency(ms, how) {
  state.latencyMs = ms === null || ms === undefined || !Number.isFinite(ms) ? null : Math.round(ms);
  $('stat-latency').textContent = state.latencyMs === null ? '–' : `≈ ${formatMs(state.latencyMs)}${how ? ` (${how})` : ''}`;
}

function fail(text) {
  state.error = text;
  note('error', text);
  teardown();
  setStatus('error', text);
  say(message, text, 'error');
  clearTimeout(pollTimer);
  ws?.close();
}

function updateMuteButton() {
  $('unmute').hidden = !video.muted;
}

$('unmute').addEventListener('click', () => {
  video.muted = false;
  video.volume = 1;
  video.play().catch(() => {});
  updateMuteButton();
});
video.addEventListener('volumechange', updateMuteButton);
$('fullscreen').addEventListener('click', () => {
  const p = $('player');
  if (document.fullscreenElement) document.exitFullscreen?.().catch(() => {});
  else (p.requestFullscreen?.() ?? Promise.resolve()).catch(() => {});
});
$('fullscreen').hidden = !document.fullscreenEnabled;

function play() {
  const p = video.play();
  p?.catch?.((e) => {
    // Autoplay with sound can be refused; muted playback never is.
    if (e?.name === 'NotAllowedError' && !video.muted) {
      video.muted = true;
      updateMuteButton();
      video.play().catch(() => {});
    }
  });
}

// --- room state: REST poll + WebSocket events ----------------------------------------

/**
 * A playback URL this browser can reach. The server builds them from its public URL,
 * which defaults to http://localhost:8080: a phone that opened this page at the laptop's
 * LAN address would otherwise be sent to itself.
 */
function reachable(u) {
  if (!u) return u;
  try {
    const url = new URL(u, location.href);
    const loopback = ['localhost', '127.0.0.1', '[::1]'];
    if (url.host !== location.host && loopback.includes(url.hostname) && !loopback.includes(location.hostname)) {
      const secure = location.protocol === 'https:';
      url.protocol = url.protocol.startsWith('ws') ? (secure ? 'wss:' : 'ws:') : location.protocol;
      url.host = location.host;
    }
    return url.toString();
  } catch {
    return u;
  }
}

async function fetchPlayback() {
  const p = await api('GET', `/rooms/${encodeURIComponent(roomParam)}/playback`, { token, what: 'Loading the stream' });
  if (p?.webrtc?.whep_url) p.webrtc.whep_url = reachable(p.webrtc.whep_url);
  if (p?.hls?.url) p.hls.url = reachable(p.hls.url);
  if (p?.flv?.url) p.flv.url = reachable(p.flv.url);
  if (p?.ws_url) p.ws_url = reachable(p.ws_url);
  return p;
}

/**
 * Asks /playback again before an HLS/FLV retry: a private room's URLs carry a playback
 * token that expires, and a fresh answer renews it.
 */
async function refreshPlayback() {
  try {
    playback = await fetchPlayback();
  } catch (e) {
    const why = explainLoadError(e);
    if (why) fail(why);
    // Otherwise keep the last answer; the next retry asks again.
  }
}

function explainLoadError(e) {
  if (e instanceof ApiError) {
    if (e.status === 404) return 'This room does not exist (or was deleted). Check the link.';
    if (e.status === 401 || e.status === 403) {
      return token
        ? 'This viewer link is not valid (any more): ask the broadcaster for a new one.'
        : 'This room is private: you need a viewer link from the broadcaster.';
    }
  }
  return null;
}

async function poll() {
  clearTimeout(pollTimer);
  try {
    const r = await api('GET', `/rooms/${encodeURIComponent(state.room)}`, { token, what: 'Checking the room' });
    if (r.title && r.title !== state.title) {
      state.title = r.title;
      $('title').textContent = r.title;
      document.title = `${r.title} · Skylark`;
    }
    setViewers(r.viewers);
    onLive(!!r.live, 'poll');
  } catch (e) {
    const why = explainLoadError(e);
    if (why) {
      fail(why);
      return;
    }
  }
  if (state.status !== 'error') {
    pollTimer = setTimeout(poll, ['waiting', 'offline', 'loading'].includes(state.status) ? POLL_WAITING_MS : POLL_PLAYING_MS);
  }
}

function openEvents() {
  if (typeof WebSocket !== 'function' || !playback?.ws_url || state.status === 'error') return;
  let sock;
  try {
    sock = new WebSocket(playback.ws_url);
  } catch {
    return;
  }
  ws = sock;
  sock.onopen = () => {
    wsRetry = 0;
    sock.send(JSON.stringify(token ? { type: 'watch', room: state.room, token } : { type: 'watch', room: state.room }));
  };
  sock.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type !== 'candidate') note(`ws:${msg.type}`, msg.type === 'room' ? { live: msg.live, viewers: msg.viewers } : undefined);
    if (iceServersOf(msg)) iceServers = iceServersOf(msg);
    switch (msg.type) {
      case 'waiting':
        onLive(false, 'ws');
        break;
      case 'room':
        setViewers(msg.viewers);
        if (typeof msg.live === 'boolean') onLive(msg.live, 'ws');
        break;
      case 'offer':
        if (typeof msg.sdp === 'string') answerP2p(msg, sock).catch((e) => note('p2p:error', e.message));
        break;
      case 'candidate':
        if (current?.kind === 'p2p' && msg.candidate && msg.from === current.from) {
          // Before the offer is applied a candidate has nowhere to go yet.
          if (current.pc.remoteDescription) current.pc.addIceCandidate(msg.candidate).catch(() => {});
          else current.pending.push(msg.candidate);
        }
        break;
      case 'error':
        note('ws:error', `${msg.code}: ${msg.message}`);
        break;
      default:
        break;
    }
  };
  sock.onclose = () => {
    if (ws !== sock || state.status === 'error') return;
    ws = null;
    // Room events are a convenience (the poll covers them): come back slowly.
    const delay = Math.min(30_000, 2000 * 2 ** wsRetry++);
    setTimeout(openEvents, delay);
  };
}

/** The room's live state, from the poll or a WebSocket event. */
function onLive(live, source) {
  const was = state.live;
  state.live = live;
  if (was !== live) note('live', { live, source });
  if (!live && current?.kind === 'p2p') {
    // The broadcaster left: their connections are gone with them.
    teardown();
    setStatus('offline');
    return;
  }
  if (!live) clearTimeout(p2pOfferTimer);
  if (live) {
    if (['waiting', 'offline', 'loading'].includes(state.status) && !current) start();
  } else if (!current && state.status !== 'loading') {
    setStatus(was ? 'offline' : state.status === 'offline' ? 'offline' : 'waiting');
  }
  // A live session whose room went offline is ended by the watchdog once frames stop,
  // so a publisher that reconnects within seconds never interrupts playback.
}

// --- transports ---------------------------------------------------------------------

function webrtcUnavailable() {
  if (!order.includes('webrtc') && !wantLowLatency) return forced ? `${forced.toUpperCase()} was asked for in the address` : 'the address leaves WebRTC out';
  if (typeof window.RTCPeerConnection !== 'function') return 'this browser has no WebRTC';
  if (!playback?.webrtc) return 'the server offers no WebRTC for this room';
  if (playback.recommended === 'hls' && !wantLowLatency) return 'the server recommends HLS';
  return null;
}

async function start() {
  if (starting || current || state.status === 'error') return;
  starting = true;
  try {
    try {
      playback = await fetchPlayback();
    } catch (e) {
      const why = explainLoadError(e);
      if (why) {
        fail(why);
        return;
      }
      // Keep the last answer; the poll retries.
    }
    if (!playback?.live) {
      state.live = false;
      setStatus(state.status === 'offline' ? 'offline' : 'waiting');
      return;
    }
    if (playback.recommended === 'p2p') {
      // Peer-to-peer rooms: the broadcaster offers over the WebSocket (answerP2p), which
      // may have happened while /playback was asked.
      if (current?.kind === 'p2p') return;
      setTransport('p2p');
      setStatus('connecting', 'Waiting for the broadcaster to connect…');
      awaitOffer();
      return;
    }
    const why = webrtcUnavailable();
    if (!why && (wantLowLatency || order[0] === 'webrtc')) await startWebRtc();
    else await startAfter(null, why ?? `${order[0].toUpperCase()} comes first in the address`);
  } finally {
    starting = false;
  }
}

function teardown() {
  const s = current;
  current = null;
  if (!s) return;
  clearTimeout(s.firstFrameTimer);
  clearInterval(s.watchdog);
  if (s.pc) {
    s.pc.close();
    if (s.location) deleteSession(s.location, token);
  }
  if (s.hls) s.hls.destroy();
  if (s.flv) {
    try {
      s.flv.pause();
      s.flv.unload();
      s.flv.detachMediaElement();
      s.flv.destroy();
    } catch {
      /* already torn down */
    }
  }
  if (s.kind === 'hls-native' || s.hls || s.flv) {
    video.removeAttribute('src');
    video.load();
  }
  video.srcObject = null;
  setLatency(null);
  resetQuality(null);
  renderDvr();
  note(`teardown:${s.kind}`);
}

/** Marks the first frame of a session (once). */
function firstFrame(s) {
  if (current !== s || s.gotFrame) return;
  s.gotFrame = true;
  s.lastProgress = performance.now();
  clearTimeout(s.firstFrameTimer);
  note('firstFrame', { transport: s.kind, width: video.videoWidth, height: video.videoHeight });
  setStatus('playing');
  say(message, '');
  // Peer-to-peer rooms have no HLS to seek in.
  if (s.kind === 'webrtc' || s.kind === 'hls') loadDvrInfo();
}

function watchFrames(s) {
  const onFrame = () => firstFrame(s);
  if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(onFrame);
  video.addEventListener('playing', () => video.videoWidth > 0 && onFrame(), { once: true });
}

/** Waits (at most `ms`) for the WebSocket's watch reply to bring TURN servers. */
async function iceServersArrive(ms) {
  const until = performance.now() + ms;
  while (!iceServers.length && performance.now() < until) await new Promise((r) => setTimeout(r, 100));
}

async function startWebRtc() {
  // TURN comes with the WebSocket's watch reply; relay-only has nothing without it.
  if (relayOnly && !iceServers.length) await iceServersArrive(5000);
  teardown();
  const pc = new RTCPeerConnection({
    bundlePolicy: 'max-bundle',
    ...(iceServers.length ? { iceServers } : {}),
    ...(relayOnly ? { iceTransportPolicy: 'relay' } : {}),
  });
  const s = { kind: 'webrtc', pc, location: null, gotFrame: false, frames: 0, lastProgress: performance.now(), prev: null, started: performance.now() };
  current = s;
  state.sessions.webrtc += 1;
  setTransport('webrtc');
  setStatus('connecting');
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addEventListener('track', (ev) => {
    stream.addTrack(ev.track);
    play();
  });
  const vt = pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  preferH264(vt, 'recvonly');
  pc.addEventListener('connectionstatechange', () => {
    if (current !== s) return;
    note(`pc:${pc.connectionState}`);
    if (pc.connectionState === 'failed') {
      if (!s.gotFrame) fallbackToHls('the WebRTC connection could not be established (ICE failed)');
      else reconnect('the WebRTC connection was lost');
    }
  });
  watchFrames(s);
  let res;
  try {
    const offer = await makeOffer(pc);
    if (current !== s) return;
    res = await postOffer('WHEP', playback.webrtc.whep_url, offer, token);
  } catch (e) {
    if (current !== s) return;
    if (e instanceof ApiError && e.status === 409) {
      // Not live (any more): wait for it.
      teardown();
      state.live = false;
      setStatus('waiting');
      return;
    }
    const why = explainLoadError(e);
    if (why) {
      fail(why);
      return;
    }
    fallbackToHls(`WebRTC signaling failed: ${e.message}`);
    return;
  }
  if (current !== s) {
    deleteSession(res.location, token);
    return;
  }
  s.location = res.location;
  // The server names the layer resource in a Link header; the draft's default otherwise.
  s.layerUrl = res.links.find((l) => l.rel === LAYER_REL)?.url ?? (res.location ? `${res.location}/layer` : null);
  resetQuality('webrtc', s.layerUrl);
  await pc.setRemoteDescription({ type: 'answer', sdp: res.answer });
  s.firstFrameTimer = setTimeout(() => {
    if (current === s && !s.gotFrame) fallbackToHls(`no video arrived over WebRTC within ${FIRST_FRAME_TIMEOUT_MS / 1000} s`);
  }, FIRST_FRAME_TIMEOUT_MS);
  s.watchdog = setInterval(() => webrtcWatchdog(s), WEBRTC_WATCHDOG_MS);
}

/**
 * A WebRTC session's figures every watchdog tick: first frame, progress (`lastProgress`),
 * latency and the video line. Returns the stats, or null when the session is gone.
 */
async function rtcProgress(s) {
  if (current !== s) return null;
  let st;
  try {
    st = await receiverStats(s.pc, s.prev);
  } catch {
    return null;
  }
  if (current !== s) return null;
  s.prev = st;
  s.stats = st;
  const now = performance.now();
  if (st.framesDecoded > s.frames) {
    s.frames = st.framesDecoded;
    s.lastProgress = now;
    if (!s.gotFrame && video.videoWidth > 0) firstFrame(s);
    if (state.status === 'stalled' || state.status === 'offline') setStatus('playing');
  }
  setLatency(st.latencyMs, st.rttMs === null ? 'jitter buffer' : 'network + jitter buffer');
  $('stat-video').textContent = st.width ? `${st.width}×${st.height}${st.fps ? `, ${Math.round(st.fps)} fps` : ''}${st.codec ? `, ${st.codec}` : ''}` : '–';
  return st;
}

async function webrtcWatchdog(s) {
  const st = await rtcProgress(s);
  if (!st) return;
  const now = performance.now();
  if (s.gotFrame && s.layerUrl) {
    s.layersAt ??= now - LAYER_REFRESH_MS + LAYER_FIRST_MS;
    if (now - s.layersAt >= LAYER_REFRESH_MS) {
      s.layersAt = now;
      layerRequest(s).catch((e) => note('layers:error', e.message));
    }
    if (st.height && st.height !== state.quality.playingHeight) {
      state.quality.playingHeight = st.height;
      renderQuality();
    }
  }
  renderDvr();
  if (!s.gotFrame) return;
  const still = now - s.lastProgress;
  if (still > 1500 && state.status === 'playing') setStatus(state.live === false ? 'offline' : 'stalled');
  if (state.live === false && still > 2000) {
    // The broadcaster left: end this session and wait for them.
    teardown();
    setStatus('offline');
    return;
  }
  if (still > STALL_MS) reconnect('the video stopped');
}

/** Starts a new WebRTC session after a drop; repeated drops give up on WebRTC for HLS. */
function reconnect(why) {
  const now = performance.now();
  reconnectTimes = reconnectTimes.filter((t) => now - t < RECONNECT_WINDOW_MS);
  reconnectTimes.push(now);
  note('reconnect', why);
  teardown();
  if (reconnectTimes.length > MAX_RECONNECTS && forced !== 'webrtc') {
    fallbackToHls(`${why}, ${reconnectTimes.length} times within a minute`);
    return;
  }
  setStatus('stalled');
  setTimeout(() => {
    if (!current && state.status !== 'error') start();
  }, reconnectTimes.length > 1 ? RECONNECT_BACKOFF_MS : RECONNECT_FIRST_MS);
}

function fallbackToHls(reason) {
  note('fallback', reason);
  teardown();
  if (!order.some((t) => t !== 'webrtc')) {
    setStatus('stalled', `WebRTC: ${reason}. Retrying…`);
    setTimeout(() => !current && start(), 3000);
    return;
  }
  wantLowLatency = false;
  startAfter('webrtc', reason);
}

/**
 * Starts the first transport after `kind` in the order (from the start for null), other
 * than WebRTC: `reason` says why the ones before were not used.
 */
async function startAfter(kind, reason) {
  const rest = order.slice(kind === null ? 0 : order.indexOf(kind) + 1).filter((t) => t !== 'webrtc');
  const next = rest[0] ?? order.find((t) => t !== 'webrtc');
  if (next === 'flv') await startFlv(reason);
  else if (next === 'hls') await startHls(reason);
  else fail(`This stream can't be played here: ${reason}.`);
}

/** The transports after `kind` in the order that aren't WebRTC (what is left to try). */
const nextAfter = (kind) => order.slice(order.indexOf(kind) + 1).filter((t) => t !== 'webrtc');

async function loadHls() {
  if (hlsModule !== null) return hlsModule;
  try {
    const m = await import(new URL('../vendor/hls.min.mjs', import.meta.url).toString());
    hlsModule = m.default ?? m.Hls ?? false;
  } catch (e) {
    note('hls.js unavailable', e.message);
    hlsModule = false;
  }
  return hlsModule;
}

async function startHls(reason) {
  teardown();
  const url = playback?.hls?.url;
  state.fallbackReason = reason;
  const note_ = $('fallback-note');
  note_.textContent = `Playing HLS (higher latency than WebRTC) because ${reason}.`;
  note_.hidden = false;
  if (!url) {
    if (nextAfter('hls').length) startAfter('hls', `${reason}, and the stream has no HLS version`);
    else fail('This stream has no HLS version, and WebRTC could not be used: ' + reason + '.');
    return;
  }
  const s = { kind: 'hls', hls: null, gotFrame: false, lastProgress: performance.now(), lastTime: 0, started: performance.now(), retries: 0 };
  current = s;
  state.sessions.hls += 1;
  setStatus('connecting');
  const Hls = await loadHls();
  if (current !== s) return;
  if (Hls && Hls.isSupported()) {
    setTransport('hls');
    const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30, liveDurationInfinity: true });
    s.hls = hls;
    hls.on(Hls.Events.ERROR, (_ev, data) => {
      if (current !== s || !data.fatal) return;
      note('hls:fatal', `${data.type} ${data.details}`);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !s.recovered) {
        s.recovered = true;
        hls.recoverMediaError();
        return;
      }
      retryHls(s, `${data.details}`);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      if (current !== s) return;
      resetQuality('hls');
      const wanted = hlsLevelOfHeight(hls, state.quality.wantedHeight);
      if (wanted >= 0) hls.currentLevel = wanted;
      hlsLevels(s);
      play();
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_ev, data) => {
      if (current !== s) return;
      note('hls:level', { level: data.level, height: hls.levels[data.level]?.height ?? null, auto: hls.autoLevelEnabled });
      hlsLevels(s);
    });
    hls.on(Hls.Events.LEVELS_UPDATED, () => current === s && hlsLevels(s));
    hls.attachMedia(video);
    hls.loadSource(url);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    s.kind = 'hls-native';
    setTransport('hls-native');
    video.src = url;
    video.addEventListener('error', () => current === s && retryHls(s, 'the browser could not load the HLS stream'), { once: true });
    play();
  } else {
    teardown();
    if (nextAfter('hls').length) startAfter('hls', `${reason}, and this browser can't play HLS`);
    else fail(`This browser can play neither WebRTC nor HLS (${reason}).`);
    return;
  }
  watchFrames(s);
  s.watchdog = setInterval(() => hlsWatchdog(s), WATCHDOG_MS);
}

/** HLS failed (the packager may not have the room yet): start over after a pause. */
function retryHls(s, why) {
  if (current !== s) return;
  teardown();
  if (state.live === false) {
    setStatus('offline');
    return;
  }
  // HLS that never showed a frame, twice in a row: the next transport (FLV), if any.
  const failures = s.gotFrame ? 0 : (s.failures ?? 0) + 1;
  if (failures >= HLS_TRIES_BEFORE_NEXT && nextAfter('hls').length) {
    note('fallback', `HLS: ${why}`);
    startAfter('hls', `HLS could not be played (${why})`);
    return;
  }
  setStatus('stalled', 'Waiting for the stream…');
  const delay = Math.min(5000, 1000 * 2 ** Math.min(s.retries, 3));
  note('hls:retry', { why, delay });
  setTimeout(async () => {
    if (current || state.status === 'error') return;
    await refreshPlayback();
    if (current || state.status === 'error') return;
    await startHls(state.fallbackReason ?? why);
    if (current?.kind?.startsWith('hls')) {
      current.retries = s.retries + 1;
      current.failures = failures;
    }
  }, delay);
}

function hlsWatchdog(s) {
  watchPlayback(s, hlsLatency, retryHls);
  if (current !== s) return;
  if (s.hls) hlsLevels(s);
  // A WebRTC viewer who rewound: HLS started at its live edge; now go where they asked.
  if (s.gotFrame && dvr.pendingBehind !== null && video.seekable.length) {
    const behind = dvr.pendingBehind;
    dvr.pendingBehind = null;
    seekHls(s, behind);
  }
  renderDvr();
}

/** Latency: program-date-time of the playing position vs now, else hls.js' estimate. */
function hlsLatency(s) {
  const pdt = s.hls?.playingDate ?? (typeof video.getStartDate === 'function' ? dateAt(video) : null);
  if (pdt && Number.isFinite(pdt.getTime()) && pdt.getTime() > 0) {
    return [Date.now() - pdt.getTime(), 'program date-time'];
  }
  if (s.hls && Number.isFinite(s.hls.latency)) return [s.hls.latency * 1000, 'from the live edge'];
  return [null, null];
}

/**
 * What HLS and FLV playback watch alike, every WATCHDOG_MS: progress and the first frame,
 * latency (`latency(s)` → [ms, how]), stalls, the room going offline, and `retry(s, why)`
 * when no picture comes or it stops.
 */
function watchPlayback(s, latency, retry) {
  if (current !== s) return;
  const now = performance.now();
  // Any move counts (a seek back in the DVR window moves the position backwards).
  if (Math.abs(video.currentTime - s.lastTime) > 0.01) {
    s.lastTime = video.currentTime;
    s.lastProgress = now;
    if (!s.gotFrame && video.videoWidth > 0) firstFrame(s);
    if (state.status === 'stalled' || state.status === 'offline') setStatus('playing');
  }
  setLatency(...latency(s));
  $('stat-video').textContent = video.videoWidth ? `${video.videoWidth}×${video.videoHeight}` : '–';
  if (!s.gotFrame) {
    // Loaded but never showing a picture (segments or tags failing without a fatal error).
    if (now - s.started > HLS_STALL_MS) retry(s, 'no video arrived');
    return;
  }
  const still = now - s.lastProgress;
  if (still > 2000 && state.status === 'playing') setStatus(state.live === false ? 'offline' : 'stalled');
  if (state.live === false && still > 3000) {
    teardown();
    setStatus('offline');
    return;
  }
  if (still > HLS_STALL_MS) retry(s, 'the video stopped');
}

// --- quality: simulcast layers (WebRTC) and renditions (HLS) ----------------------------

const qualityMenu = $('quality');

/** A new menu for a session of `source` ('webrtc' | 'hls'; null: none); keeps the viewer's pick. */
function resetQuality(source, layerUrl = null) {
  Object.assign(state.quality, { source, options: [], value: 'auto', playingHeight: null, layerUrl, choice: null, following: null });
  renderQuality();
}

/** "720p"; a second option of the same height gets its bitrate too. */
function labelled(options) {
  const seen = new Set();
  for (const o of options) {
    o.label = o.height ? `${o.height}p` : o.fallback;
    if (seen.has(o.label) && o.kbps) o.label += ` (${o.kbps} kb/s)`;
    seen.add(o.label);
  }
  return options;
}

function renderQuality() {
  const q = state.quality;
  const shown = q.options.length > 1;
  qualityMenu.hidden = !shown;
  if (!shown) {
    qualityMenu.replaceChildren();
    return;
  }
  const auto = `Auto${q.playingHeight ? ` (${q.playingHeight}p)` : ''}`;
  const wanted = ['auto', ...q.options.map((o) => o.value)];
  const have = [...qualityMenu.options].map((o) => o.value);
  if (have.join('\n') === wanted.join('\n')) {
    // Same choices: relabel in place (a rebuilt <select> would close under the pointer).
    qualityMenu.options[0].textContent = auto;
    q.options.forEach((o, i) => (qualityMenu.options[i + 1].textContent = o.label));
  } else {
    qualityMenu.replaceChildren(el('option', { value: 'auto' }, auto), ...q.options.map((o) => el('option', { value: o.value }, o.label)));
  }
  if (qualityMenu.value !== q.value) qualityMenu.value = q.value;
}

qualityMenu.addEventListener('change', () => {
  const s = current;
  const v = qualityMenu.value;
  const picked = state.quality.options.find((o) => o.value === v);
  state.quality.wantedHeight = picked?.height ?? null;
  state.quality.value = v;
  note('quality', { choice: v, height: picked?.height ?? null });
  if (s?.kind === 'webrtc' && s.layerUrl) {
    layerRequest(s, v).catch((e) => {
      note('layers:error', e.message);
      if (current === s) say(message, e.message, 'error');
      layerRequest(s).catch(() => {});
    });
  } else if (s?.hls) {
    s.hls.currentLevel = v === 'auto' ? -1 : Number(v);
    hlsLevels(s);
  }
});

/**
 * The WHEP layer resource: GET (no `choice`) lists the layers and the one this viewer
 * gets; POST `{encodingId}` chooses one, `{}` goes back to Auto. Only the answer to the
 * latest request is shown (an older GET finishing late would undo a choice).
 */
async function layerRequest(s, choice) {
  const seq = (s.layerSeq = (s.layerSeq ?? 0) + 1);
  const init =
    choice === undefined
      ? { method: 'GET' }
      : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(choice === 'auto' ? {} : { encodingId: choice }) };
  const what = choice === undefined ? 'Loading the qualities' : 'Choosing the quality';
  const res = await request(s.layerUrl, { ...init, timeoutMs: 5000 }, what);
  if (!res.ok) throw await errorFrom(res, what);
  const j = await res.json();
  if (current !== s || seq !== s.layerSeq) return j;
  applyLayers(s, j);
  return j;
}

function applyLayers(s, j) {
  const q = state.quality;
  const layers = (Array.isArray(j?.layers) ? j.layers : []).filter((l) => typeof l?.encodingId === 'string');
  q.options = labelled(layers.map((l) => ({ value: l.encodingId, height: l.height || null, fallback: l.encodingId })));
  q.choice = j.choice ?? 'auto';
  q.following = j.following ?? null;
  q.value = q.options.some((o) => o.value === q.choice) ? q.choice : 'auto';
  q.playingHeight = video.videoHeight || layers.find((l) => l.encodingId === q.following)?.height || null;
  renderQuality();
  // A new session (a reconnect, or WebRTC again after HLS) keeps the viewer's pick.
  if (q.wantedHeight !== null && q.choice === 'auto' && !s.restoredChoice) {
    s.restoredChoice = true;
    const same = q.options.find((o) => o.height === q.wantedHeight);
    if (same) layerRequest(s, same.value).catch((e) => note('layers:error', e.message));
  }
}

/** hls.js' level index of that height, or -1. */
function hlsLevelOfHeight(hls, height) {
  if (height === null) return -1;
  return (hls.levels ?? []).findIndex((l) => l.height === height);
}

/** The menu from hls.js' levels (the multivariant playlist's renditions). */
function hlsLevels(s) {
  const q = state.quality;
  const hls = s.hls;
  const levels = hls.levels ?? [];
  q.options = labelled(
    levels
      .map((l, i) => ({ value: String(i), height: l.height || null, kbps: Math.round((l.bitrate ?? 0) / 1000), fallback: `${Math.round((l.bitrate ?? 0) / 1000)} kb/s` }))
      .sort((a, b) => (b.height ?? 0) - (a.height ?? 0) || b.kbps - a.kbps),
  );
  q.value = hls.autoLevelEnabled ? 'auto' : String(hls.manualLevel);
  q.playingHeight = levels[hls.currentLevel]?.height || video.videoHeight || null;
  renderQuality();
}

// --- HTTP-FLV (mpegts.js) -------------------------------------------------------------

/** mpegts.js is a UMD bundle (no ES module): loaded with a classic <script>, once. */
function loadMpegts() {
  if (mpegtsModule !== null) return Promise.resolve(mpegtsModule);
  if (window.mpegts) return Promise.resolve((mpegtsModule = window.mpegts));
  return new Promise((resolve) => {
    const el = document.createElement('script');
    el.src = new URL('../vendor/mpegts.js', import.meta.url).toString();
    el.onload = () => resolve((mpegtsModule = window.mpegts ?? false));
    el.onerror = () => {
      note('mpegts.js unavailable');
      resolve((mpegtsModule = false));
    };
    document.head.append(el);
  });
}

async function startFlv(reason) {
  teardown();
  // HTTP-FLV by default; `?flv=ws` uses the WebSocket form of the same URL.
  let url = playback?.flv?.url;
  if (url && params.get('flv') === 'ws') url = url.replace(/^http/, 'ws');
  state.fallbackReason = reason;
  const note_ = $('fallback-note');
  note_.textContent = `Playing FLV (higher latency than WebRTC) because ${reason}.`;
  note_.hidden = false;
  if (!url) {
    fail(`This stream has no FLV version, and nothing else could be used: ${reason}.`);
    return;
  }
  const s = { kind: 'flv', flv: null, gotFrame: false, lastProgress: performance.now(), lastTime: 0, started: performance.now(), retries: 0 };
  current = s;
  state.sessions.flv += 1;
  setStatus('connecting');
  const mpegts = await loadMpegts();
  if (current !== s) return;
  if (!mpegts || !mpegts.isSupported?.() || !mpegts.getFeatureList?.().mseLivePlayback) {
    fail(`This browser can't play this stream (${reason}, and FLV needs Media Source Extensions).`);
    return;
  }
  mpegts.LoggingControl.enableVerbose = false;
  mpegts.LoggingControl.enableDebug = false;
  mpegts.LoggingControl.enableInfo = false;
  setTransport('flv');
  const player = mpegts.createPlayer(
    { type: 'flv', isLive: true, url },
    {
      enableStashBuffer: false,
      lazyLoad: false,
      liveBufferLatencyChasing: true,
      liveBufferLatencyMaxLatency: 2.0,
      liveBufferLatencyMinRemain: 0.5,
      autoCleanupSourceBuffer: true,
    },
  );
  s.flv = player;
  player.on(mpegts.Events.ERROR, (type, details, info) => {
    if (current !== s) return;
    note('flv:error', `${type} ${details}${info?.msg ? ` ${info.msg}` : ''}`);
    retryFlv(s, `${details || type}`);
  });
  player.on(mpegts.Events.LOADING_COMPLETE, () => current === s && retryFlv(s, 'the stream ended'));
  player.attachMediaElement(video);
  player.load();
  play();
  watchFrames(s);
  s.watchdog = setInterval(() => flvWatchdog(s), WATCHDOG_MS);
}

/** FLV failed or ended: start it over after a pause (or wait, when the room is offline). */
function retryFlv(s, why) {
  if (current !== s) return;
  teardown();
  if (state.live === false) {
    setStatus('offline');
    return;
  }
  setStatus('stalled', 'Waiting for the stream…');
  const delay = Math.min(5000, 1000 * 2 ** Math.min(s.retries, 3));
  note('flv:retry', { why, delay });
  setTimeout(async () => {
    if (current || state.status === 'error') return;
    await refreshPlayback();
    if (current || state.status === 'error') return;
    await startFlv(state.fallbackReason ?? why);
    if (current?.kind === 'flv') current.retries = s.gotFrame ? 0 : s.retries + 1;
  }, delay);
}

function flvWatchdog(s) {
  watchPlayback(s, flvLatency, retryFlv);
}

/**
 * Latency: what is buffered ahead of the playing position (the FLV stream carries no
 * wall-clock time), i.e. how far behind the newest received frame the picture is.
 */
function flvLatency() {
  const b = video.buffered;
  const ahead = b.length ? b.end(b.length - 1) - video.currentTime : null;
  return [ahead === null || ahead < 0 ? null : ahead * 1000, 'buffered ahead'];
}

function dateAt(v) {
  const start = v.getStartDate();
  const t = start?.getTime?.();
  return Number.isFinite(t) && t > 0 ? new Date(t + v.currentTime * 1000) : null;
}

/** From HLS (or FLV) back to WebRTC, as the viewer asked. */
function backToWebRtc() {
  wantLowLatency = true;
  reconnectTimes = [];
  dvr.returnTo = null;
  dvr.pendingBehind = null;
  $('fallback-note').hidden = true;
  state.fallbackReason = null;
  teardown();
  start();
}

$('low-latency').addEventListener('click', backToWebRtc);

// --- DVR: back in the live stream (HLS), and back to the live edge ---------------------

/** Further than this behind the live edge, the player is "behind" (Go live shows). */
const DVR_BEHIND_S = 6;
/** A seek to within this of the live edge is going live. */
const DVR_LIVE_S = 3;
/** The multivariant playlist's session data on the server's DVR window. */
const DVR_WINDOW_ID = 'io.skylark.dvr-window';
const DVR_AVAILABLE_ID = 'io.skylark.dvr-available';

const dvr = {
  window: null, // seconds the server keeps (null or 0: no seeking back)
  available: null, // seconds of it the room had when asked (at `fetchedAt`)
  fetchedAt: 0,
  returnTo: null, // 'webrtc' when a WebRTC viewer rewound: Go live returns there
  pendingBehind: null, // seconds to seek back once HLS plays
  dragging: false,
};

/**
 * Reads the DVR window from the multivariant playlist (EXT-X-SESSION-DATA). Loading it
 * counts as no HLS viewer (media playlists do), so a WebRTC viewer can ask too.
 */
async function loadDvrInfo() {
  const url = playback?.hls?.url;
  if (!url) return;
  try {
    const res = await request(url, { timeoutMs: 10_000 }, 'Loading the stream’s window');
    if (!res.ok) return;
    const text = await res.text();
    const value = (id) => {
      const line = text.split('\n').find((l) => l.startsWith(`#EXT-X-SESSION-DATA:DATA-ID="${id}",`));
      const n = Number(line?.match(/VALUE="(\d+)"/)?.[1]);
      return Number.isFinite(n) ? n : null;
    };
    dvr.window = value(DVR_WINDOW_ID);
    dvr.available = value(DVR_AVAILABLE_ID);
    dvr.fetchedAt = performance.now();
    note('dvr:window', { window: dvr.window, available: dvr.available });
  } catch {
    /* no seek bar this time */
  }
  renderDvr();
}

/** hls.js' live position (the live edge less its hold-back) on the media timeline. */
function liveEdge(s) {
  const b = video.seekable;
  const end = b.length ? b.end(b.length - 1) : video.currentTime;
  const sync = s.hls?.liveSyncPosition;
  return Number.isFinite(sync) && sync > 0 ? Math.min(sync, end) : end;
}

/** How far back the viewer can go (`range`) and is (`behind`), in seconds; null: no seeking. */
function dvrRange() {
  const s = current;
  if (!s?.gotFrame || !dvr.window) return null;
  if (s.kind === 'webrtc') {
    const have = (dvr.available ?? 0) + (performance.now() - dvr.fetchedAt) / 1000;
    return { range: Math.min(dvr.window, have), behind: 0 };
  }
  if (s.kind === 'hls' && s.hls && video.seekable.length) {
    const edge = liveEdge(s);
    return { range: Math.max(0, edge - video.seekable.start(0)), behind: Math.max(0, edge - video.currentTime) };
  }
  return null;
}

function behindText(sec) {
  if (sec < DVR_BEHIND_S) return 'Live';
  const t = Math.round(sec);
  return `−${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

function renderDvr() {
  const r = dvrRange();
  const shown = !!r && r.range >= 1;
  $('dvr').hidden = !shown;
  const behind = shown && r.behind > DVR_BEHIND_S;
  $('go-live').hidden = !shown || (!behind && dvr.returnTo === null);
  if (!shown) return;
  if (state.status === 'playing') $('live-badge').hidden = behind;
  const seek = $('seek');
  if (dvr.dragging) return;
  seek.min = String(-Math.max(1, Math.floor(r.range)));
  seek.value = String(-Math.round(r.behind));
  seek.setAttribute('aria-valuetext', behind ? `${Math.round(r.behind)} seconds behind live` : 'Live');
  $('seek-label').textContent = behindText(r.behind);
}

function seekHls(s, behind) {
  const start = video.seekable.length ? video.seekable.start(0) : 0;
  const to = Math.max(start, liveEdge(s) - behind);
  note('dvr:seek', { behind: Math.round(behind), to: Math.round(to * 10) / 10 });
  video.currentTime = to;
  s.lastProgress = performance.now();
  play();
  renderDvr();
}

/** The viewer let go of the seek bar `behind` seconds before the live edge. */
function seekTo(behind) {
  const s = current;
  if (!s) return;
  if (behind < DVR_LIVE_S) {
    goLive();
    return;
  }
  if (s.kind === 'webrtc') {
    // WebRTC carries the live edge only: rewind over HLS, and come back here later.
    note('dvr:rewind', { behind: Math.round(behind) });
    dvr.returnTo = 'webrtc';
    dvr.pendingBehind = behind;
    wantLowLatency = false;
    startHls('you went back in time (WebRTC plays the live edge only)');
  } else if (s.kind === 'hls' && s.hls) {
    seekHls(s, behind);
  }
}

function goLive() {
  note('dvr:live', { returnTo: dvr.returnTo });
  dvr.pendingBehind = null;
  if (dvr.returnTo === 'webrtc' && typeof window.RTCPeerConnection === 'function' && playback?.webrtc) {
    backToWebRtc();
    return;
  }
  dvr.returnTo = null;
  if (current?.kind === 'hls' && current.hls) seekHls(current, 0);
  renderDvr();
}

const seekInput = $('seek');
seekInput.addEventListener('input', () => {
  dvr.dragging = true;
  $('seek-label').textContent = behindText(-Number(seekInput.value));
});
seekInput.addEventListener('change', () => {
  dvr.dragging = false;
  seekTo(-Number(seekInput.value));
});
$('go-live').addEventListener('click', goLive);
video.addEventListener('timeupdate', () => current?.kind === 'hls' && renderDvr());

// --- peer-to-peer rooms: the broadcaster offers over the WebSocket ------------------

/** p2p: the offer should come soon; if not, join again once (the server announces us anew), then say so. */
function awaitOffer() {
  clearTimeout(p2pOfferTimer);
  p2pOfferTimer = setTimeout(() => {
    if (current || state.transport !== 'p2p' || state.status !== 'connecting') return;
    if (!p2pOfferRetried) {
      p2pOfferRetried = true;
      note('p2p:no-offer');
      rejoin();
      awaitOffer();
    } else {
      p2pUnreachable(null, `the broadcaster's browser did not call within ${(2 * P2P_OFFER_TIMEOUT_MS) / 1000} s`);
    }
  }, P2P_OFFER_TIMEOUT_MS);
}

/** A new signaling connection: the broadcaster hears of this viewer again and offers anew. */
function rejoin() {
  const old = ws;
  ws = null;
  old?.close();
  openEvents();
}

/** p2p: the viewer can't reach the broadcaster; says why, offers to try again. */
function p2pUnreachable(s, why) {
  if (s && current !== s) return;
  teardown();
  const text = P2P_UNREACHABLE(why);
  note('p2p:unreachable', why);
  setStatus('unreachable', text);
  say(message, text, 'error');
  $('p2p-retry').hidden = false;
}

$('p2p-retry').addEventListener('click', () => {
  $('p2p-retry').hidden = true;
  say(message, '');
  p2pOfferRetried = false;
  setStatus('connecting', 'Waiting for the broadcaster to connect…');
  rejoin();
  awaitOffer();
});

async function answerP2p(msg, sock) {
  if (typeof window.RTCPeerConnection !== 'function') {
    fail('This room is peer to peer, which needs WebRTC: this browser has none.');
    return;
  }
  clearTimeout(p2pOfferTimer);
  p2pOfferRetried = false;
  teardown();
  const pc = new RTCPeerConnection({
    bundlePolicy: 'max-bundle',
    ...(iceServers.length ? { iceServers } : {}),
    ...(relayOnly ? { iceTransportPolicy: 'relay' } : {}),
  });
  const s = { kind: 'p2p', pc, from: msg.from, pending: [], gotFrame: false, frames: 0, lastProgress: performance.now(), prev: null, started: performance.now() };
  current = s;
  state.sessions.webrtc += 1;
  $('p2p-retry').hidden = true;
  if (state.status === 'unreachable') say(message, '');
  setTransport('p2p');
  setStatus('connecting', 'Connecting to the broadcaster…');
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addEventListener('track', (ev) => {
    stream.addTrack(ev.track);
    play();
  });
  pc.addEventListener('icecandidate', (ev) => {
    if (ev.candidate && current === s && sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'candidate', candidate: ev.candidate.toJSON(), to: msg.from }));
  });
  pc.addEventListener('connectionstatechange', () => {
    if (current !== s) return;
    note(`pc:${pc.connectionState}`);
    if (pc.connectionState === 'failed') {
      if (!s.gotFrame) p2pUnreachable(s, 'ICE failed: no network path between you');
      else {
        // It played, then broke: ask the broadcaster for a new connection.
        teardown();
        setStatus('stalled', 'The connection to the broadcaster was lost. Reconnecting…');
        rejoin();
        awaitOffer();
      }
    } else if (pc.connectionState === 'disconnected' && state.status === 'playing') {
      setStatus('stalled');
    }
  });
  watchFrames(s);
  s.firstFrameTimer = setTimeout(() => {
    if (current === s && !s.gotFrame) p2pUnreachable(s, `no picture within ${P2P_CONNECT_TIMEOUT_MS / 1000} s`);
  }, P2P_CONNECT_TIMEOUT_MS);
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  for (const c of s.pending.splice(0)) pc.addIceCandidate(c).catch(() => {});
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  if (current !== s) return;
  // Trickle ICE: the answer goes at once, candidates follow as they are found.
  if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'answer', sdp: pc.localDescription.sdp, to: msg.from }));
  note('p2p:answered', { from: msg.from });
  s.watchdog = setInterval(() => p2pWatchdog(s), WEBRTC_WATCHDOG_MS);
}

/** p2p playback: progress and figures as over WebRTC; a stall waits (no other path exists). */
async function p2pWatchdog(s) {
  const st = await rtcProgress(s);
  if (!st || !s.gotFrame) return;
  const still = performance.now() - s.lastProgress;
  if (still > 1500 && state.status === 'playing') setStatus(state.live === false ? 'offline' : 'stalled');
}

// --- start --------------------------------------------------------------------------

window.player = {
  state,
  async stats() {
    let framesDecoded = 0;
    let codec = null;
    if (current?.pc && current.pc.connectionState !== 'closed') {
      try {
        const st = await receiverStats(current.pc, null);
        framesDecoded = st.framesDecoded;
        codec = st.codec;
      } catch {
        /* closed */
      }
    } else if (typeof video.getVideoPlaybackQuality === 'function') {
      framesDecoded = video.getVideoPlaybackQuality().totalVideoFrames;
    }
    return {
      status: state.status,
      transport: state.transport,
      transportLabel: $('stat-transport').textContent,
      error: state.error,
      fallbackReason: state.fallbackReason,
      live: state.live,
      viewers: state.viewers,
      latencyMs: state.latencyMs,
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      currentTime: video.currentTime,
      paused: video.paused,
      muted: video.muted,
      framesDecoded,
      codec,
      sessions: { ...state.sessions },
      quality: JSON.parse(JSON.stringify(state.quality)),
      dvr: (() => {
        const r = dvrRange();
        return { shown: !$('dvr').hidden, goLive: !$('go-live').hidden, window: dvr.window, rangeS: r?.range ?? null, behindS: r?.behind ?? null, returnTo: dvr.returnTo };
      })(),
      // Read from hls.js itself: what it plays and whether a level was chosen.
      hlsLevel: current?.hls ? { current: current.hls.currentLevel, manual: current.hls.manualLevel, auto: current.hls.autoLevelEnabled, heights: current.hls.levels.map((l) => l.height) } : null,
    };
  },
};

// --- recordings: `?recording=<id>` plays a recording (HLS VOD; EVENT while recording) -

const recordingParam = params.get('recording');

/**
 * The recording's playlist: on the server of the room's HLS URL, with its playback
 * token if the room is private (`/playback` is asked as for live playback: reading the
 * recording itself through the API is its owner's).
 */
function recordingUrl(p) {
  const url = new URL(p.hls.url, location.href);
  url.pathname = url.pathname.replace(/\/hls\/[^/]+\/index\.m3u8$/, `/recordings/${encodeURIComponent(recordingParam)}/index.m3u8`);
  return url.toString();
}

async function playRecording() {
  let url;
  try {
    url = recordingUrl(await fetchPlayback());
  } catch (e) {
    fail(explainLoadError(e) ?? e.message);
    return;
  }
  video.controls = true;
  $('live-badge').hidden = true;
  const Hls = await loadHls();
  if (Hls && Hls.isSupported()) {
    setTransport('hls');
    // From the start, also while it is still recording (an EVENT playlist hls.js
    // would otherwise start at its end).
    const hls = new Hls({ lowLatencyMode: false, startPosition: 0 });
    hls.on(Hls.Events.ERROR, (_ev, data) => {
      if (!data.fatal) return;
      const status = data.response?.code;
      if (status === 404) fail('This recording does not exist (or was deleted). Check the link.');
      else if (status === 401 || status === 403) fail(explainLoadError(new ApiError(status, 'unauthorized', '')));
      else fail(`The recording could not be played (${data.details}).`);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    window.__recordingHls = hls;
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    setTransport('hls-native');
    video.src = url;
  } else {
    fail('This browser plays neither hls.js nor HLS: download the MP4 instead.');
    return;
  }
  video.addEventListener('playing', () => setStatus('playing', ''), { once: true });
  video.play().catch(() => {});
}

updateMuteButton();
setStatus('loading');
(async () => {
  if (!roomParam) {
    fail('No room in the address: open /watch/<room>.');
    return;
  }
  if (recordingParam) {
    await playRecording();
    return;
  }
  for (let attempt = 0; ; attempt++) {
    try {
      playback = await fetchPlayback();
      break;
    } catch (e) {
      const why = explainLoadError(e);
      if (why) {
        fail(why);
        return;
      }
      say(message, `${e.message}. Retrying…`, 'info');
      await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * 2 ** attempt)));
    }
  }
  say(message, '');
  state.room = playback.room ?? roomParam;
  state.live = !!playback.live;
  openEvents();
  poll();
  if (playback.live) start();
  else setStatus('waiting');
})();

// Leaving the page ends the WHEP session (keepalive lets the DELETE outlive the page).
window.addEventListener('pagehide', () => {
  if (current?.location) deleteSession(current.location, token, { keepalive: true });
});

