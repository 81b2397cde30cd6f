// Shared by the test pages: capture, H.264 preference, ICE gathering, WHIP/WHEP POST,
// remote playback and stats. Plain browser JavaScript (an ES module), no dependencies.
//
// Every page exposes `window.state` = {status, error, location, timings, events}.
// `timings` are epoch milliseconds (Date.now()), so the test can compare pages.

export const params = new URLSearchParams(location.search);

/**
 * A WHEP path's ICE settings from `?ice=` (JSON): RTCConfiguration members (`iceServers`,
 * `iceTransportPolicy`) in `rtc`, and `onlyTcp: true` → `answer` drops the server's UDP
 * candidates from its answer, so ICE can only take its TCP one (RFC 6544), as for a
 * viewer whose UDP is blocked.
 */
export function iceSettings(json) {
  const { onlyTcp = false, ...rtc } = JSON.parse(json || '{}');
  const answer = (sdp) => (onlyTcp ? sdp.split('\r\n').filter((l) => !/^a=candidate:\S+ \d+ udp /i.test(l)).join('\r\n') : sdp);
  return { rtc, answer };
}

/** Time budget for ICE gathering before the offer is sent as it is (non-trickle). */
export const GATHER_CAP_MS = 2000;
/** Time budget for one signaling HTTP request. */
export const HTTP_TIMEOUT_MS = 10_000;

export function newState() {
  const state = { status: 'idle', error: null, location: null, timings: {}, events: [] };
  window.state = state;
  return state;
}

/** Records a timestamped event and (once) a named timing. */
export function mark(state, name, detail) {
  const t = Date.now();
  if (state.timings[name] === undefined) state.timings[name] = t;
  state.events.push(detail === undefined ? { t, name } : { t, name, detail });
  console.log(`[${name}]${detail === undefined ? '' : ' ' + JSON.stringify(detail)}`);
}

/** Puts the page in the `error` state (first error wins) and logs it. */
export function fail(state, message) {
  if (state.error) return;
  state.error = String(message);
  state.status = 'error';
  mark(state, 'error', state.error);
}

export function trackInfo(track) {
  const s = track.getSettings();
  return {
    kind: track.kind,
    label: track.label,
    readyState: track.readyState,
    enabled: track.enabled,
    width: s.width ?? null,
    height: s.height ?? null,
    frameRate: s.frameRate ?? null,
    sampleRate: s.sampleRate ?? null,
    channelCount: s.channelCount ?? null,
  };
}

/** getUserMedia with the fake camera and microphone (Chromium's fake-device flags). */
export async function captureMedia(constraints = { video: true, audio: true }) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('navigator.mediaDevices.getUserMedia is missing: is the page a secure context?');
  }
  return navigator.mediaDevices.getUserMedia(constraints);
}

function isH264(c) {
  return c.mimeType.toLowerCase() === 'video/h264';
}
function pm1(c) {
  return /packetization-mode=1/.test(c.sdpFmtpLine ?? '');
}
function baseline(c) {
  return /profile-level-id=42e01f/i.test(c.sdpFmtpLine ?? '');
}

/** Codec list with H.264 packetization-mode=1 first (constrained baseline 42e01f first of all). */
export function h264First(codecs) {
  const rank = (c) => (isH264(c) ? (pm1(c) ? (baseline(c) ? 0 : 1) : 2) : 3);
  return [...codecs].sort((a, b) => rank(a) - rank(b));
}

/**
 * setCodecPreferences on a video transceiver: H.264 packetization-mode=1 first, the rest
 * after (RTX etc. stay available). Returns the first preferred codec's description.
 */
export function preferH264(transceiver, direction) {
  const sources =
    direction === 'recvonly'
      ? [() => RTCRtpReceiver.getCapabilities('video'), () => RTCRtpSender.getCapabilities('video')]
      : [() => RTCRtpSender.getCapabilities('video'), () => RTCRtpReceiver.getCapabilities('video')];
  let lastError;
  for (const caps of sources) {
    const codecs = caps()?.codecs ?? [];
    const ordered = h264First(codecs);
    if (!ordered.length || !isH264(ordered[0]) || !pm1(ordered[0])) {
      lastError = new Error('this browser offers no H.264 packetization-mode=1');
      continue;
    }
    try {
      transceiver.setCodecPreferences(ordered);
      return `${ordered[0].mimeType} ${ordered[0].sdpFmtpLine}`;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(`setCodecPreferences(H.264 first) failed: ${lastError?.message ?? lastError}`);
}

/** Resolves when ICE gathering completes, or after `capMs` (the offer then has what it has). */
export function waitIceGathering(pc, capMs = GATHER_CAP_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(false);
    }, capMs);
    function check() {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve(true);
      }
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** createOffer → setLocalDescription → wait for gathering (2 s cap) → the full offer SDP. */
export async function makeOffer(pc, state) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const complete = await waitIceGathering(pc);
  mark(state, 'offerReady', { gatheringComplete: complete, candidates: countCandidates(pc.localDescription.sdp) });
  return pc.localDescription.sdp;
}

export function countCandidates(sdp) {
  return (sdp.match(/^a=candidate:/gm) ?? []).length;
}

/**
 * WHIP/WHEP: POST the offer; expects 201 with an SDP answer and a Location header.
 * Throws "<WHAT> POST returned <status> <statusText>: <body>" otherwise.
 */
export async function postOffer(what, url, sdp, bearer) {
  const headers = { 'Content-Type': 'application/sdp' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers, body: sdp, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  } catch (e) {
    throw new Error(`${what} POST ${url} failed: ${e.name === 'TimeoutError' ? `no answer within ${HTTP_TIMEOUT_MS / 1000} s` : e.message}`);
  }
  const body = await res.text();
  if (res.status !== 201) {
    throw new Error(`${what} POST returned ${res.status} ${res.statusText}: ${body.slice(0, 300)}`);
  }
  const loc = res.headers.get('Location');
  if (!loc) throw new Error(`${what} POST returned 201 without a readable Location header (CORS Access-Control-Expose-Headers?)`);
  if (!body.startsWith('v=0')) throw new Error(`${what} POST returned 201 but the body is not an SDP answer: ${body.slice(0, 200)}`);
  return { answer: body, location: new URL(loc, url).toString(), status: res.status };
}

/** DELETE the session resource; returns the status (or the error text). */
export async function deleteSession(url) {
  try {
    const res = await fetch(url, { method: 'DELETE', signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    await res.text();
    return res.status;
  } catch (e) {
    return `DELETE failed: ${e.message}`;
  }
}

/** Follows connectionState: `onConnected` once, `onFailed` on failure. */
export function watchConnection(pc, state, { onConnected, onFailed }) {
  pc.addEventListener('iceconnectionstatechange', () => mark(state, `ice:${pc.iceConnectionState}`));
  pc.addEventListener('connectionstatechange', () => {
    mark(state, `pc:${pc.connectionState}`);
    if (pc.connectionState === 'connected') onConnected?.();
    if (pc.connectionState === 'failed') {
      onFailed?.(`WebRTC connection failed (ice ${pc.iceConnectionState}, connection ${pc.connectionState})`);
    }
  });
}

/** Attaches remote tracks to the <video> element and marks the first rendered frame. */
export function attachRemote(pc, video, state) {
  const stream = new MediaStream();
  video.srcObject = stream;
  state.trackStreams = {};
  pc.addEventListener('track', (ev) => {
    mark(state, `track:${ev.track.kind}`);
    // The stream each track arrives in: one stream for both is what lip-syncs them.
    state.trackStreams[ev.track.kind] = ev.streams[0]?.id ?? null;
    stream.addTrack(ev.track);
    video.play().catch((e) => mark(state, 'playRejected', e.message));
  });
  const onFrame = () => mark(state, 'firstFrame', { width: video.videoWidth, height: video.videoHeight });
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(onFrame);
  else video.addEventListener('loadeddata', onFrame, { once: true });
  video.addEventListener('resize', () => mark(state, 'videoResize', { width: video.videoWidth, height: video.videoHeight }));
}

/** The selected ICE pair of `pc`: {protocol, localType, remoteType, relayProtocol, remotePort}, or null. */
export async function selectedPair(pc) {
  const report = await pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
  });
  const local = pair && report.get(pair.localCandidateId);
  const remote = pair && report.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  return { protocol: local.protocol, localType: local.candidateType, remoteType: remote.candidateType, relayProtocol: local.relayProtocol ?? null, remotePort: remote.port };
}

/** {videoWidth, framesDecoded, iceState, …} for the test to poll. */
export async function playbackStats(pc, video, state) {
  let framesDecoded = 0;
  let packetsReceived = 0;
  let bytesReceived = 0;
  let codec = null;
  let audioPacketsReceived = 0;
  // The transport's SRTP profile and DTLS role: which cipher seals every forwarded packet.
  let srtpCipher = null;
  let dtlsRole = null;
  if (pc) {
    const report = await pc.getStats();
    const codecs = new Map();
    report.forEach((s) => {
      if (s.type === 'codec') codecs.set(s.id, s.mimeType);
    });
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        framesDecoded += s.framesDecoded ?? 0;
        packetsReceived += s.packetsReceived ?? 0;
        bytesReceived += s.bytesReceived ?? 0;
        codec = codecs.get(s.codecId) ?? codec;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audioPacketsReceived += s.packetsReceived ?? 0;
      if (s.type === 'transport') {
        srtpCipher = s.srtpCipher ?? srtpCipher;
        dtlsRole = s.dtlsRole ?? dtlsRole;
      }
    });
  }
  return {
    videoWidth: video.videoWidth,
    videoHeight: video.videoHeight,
    framesDecoded,
    packetsReceived,
    bytesReceived,
    audioPacketsReceived,
    srtpCipher,
    dtlsRole,
    codec,
    iceState: pc?.iceConnectionState ?? 'new',
    connectionState: pc?.connectionState ?? 'new',
    status: state.status,
    error: state.error,
    timings: state.timings,
    trackStreams: state.trackStreams,
  };
}

/** The WebSocket URL: `?ws=` as given, else `?server=` (http base) + /ws. */
export function wsUrl() {
  if (params.get('ws')) return params.get('ws');
  const server = params.get('server');
  if (!server) return null;
  const u = new URL('/ws', server);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/**
 * Opens the signaling WebSocket (5 s cap). `onMessage(msg)` gets parsed JSON; an
 * unexpected close calls `onClose(text)`. Returns {send(obj), close()}.
 */
export function openSignaling(url, state, { onMessage, onClose }) {
  return new Promise((resolve, reject) => {
    let opened = false;
    let closing = false;
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`WebSocket ${url} did not open within 5 s`));
    }, 5000);
    ws.onopen = () => {
      opened = true;
      clearTimeout(timer);
      mark(state, 'wsOpen');
      resolve({
        send(obj) {
          mark(state, `ws>${obj.type}`);
          ws.send(JSON.stringify(obj));
        },
        close() {
          closing = true;
          ws.close(1000);
        },
      });
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        mark(state, 'ws<garbage', String(ev.data).slice(0, 100));
        return;
      }
      const { sdp, ...rest } = msg;
      mark(state, `ws<${msg.type}`, sdp ? { ...rest, sdp: `${sdp.length} bytes` } : rest);
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      clearTimeout(timer);
      if (!opened) {
        reject(new Error(`WebSocket ${url} failed to open (close code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`));
        return;
      }
      mark(state, 'wsClose', { code: ev.code, reason: ev.reason });
      if (!closing) onClose?.(`WebSocket closed by the server (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
    };
  });
}

/** Adds a server `candidate` message ({candidate: RTCIceCandidateInit | string}). */
export async function addRemoteCandidate(pc, msg, state) {
  const c = msg.candidate;
  const init = typeof c === 'string' ? { candidate: c, sdpMid: msg.sdpMid ?? '0', sdpMLineIndex: msg.sdpMLineIndex ?? 0 } : c;
  try {
    await pc.addIceCandidate(init);
  } catch (e) {
    mark(state, 'candidateRejected', e.message);
  }
}

/** A page's `setStatus(s)`: records `s` in `state` (unless the page already failed),
 *  shows it in `el` and marks when it was first reached. */
export function statusSetter(state, el) {
  return (s) => {
    if (state.status === 'error') return;
    state.status = s;
    el.textContent = s;
    mark(state, s);
  };
}

/** The page's WHIP or WHEP URL (`kind`): `?whip=` / `?whep=`, or `?server=&room=`. */
export function endpointUrl(kind) {
  const server = params.get('server');
  const room = params.get('room');
  return params.get(kind) ?? (server && room ? new URL(`/${kind}/${encodeURIComponent(room)}`, server).toString() : null);
}

/** The capture step of a publishing page: the fake camera and microphone, once, shown
 *  in `preview`. `capture()` returns the tracks' settings; `stream()` the stream. */
export function capturer(preview, setStatus) {
  let stream = null;
  return {
    stream: () => stream,
    capture: async () => {
      if (!stream) {
        setStatus('capturing');
        stream = await captureMedia({ video: true, audio: true });
        preview.srcObject = stream;
        setStatus('captured');
      }
      return {
        video: stream.getVideoTracks().map(trackInfo),
        audio: stream.getAudioTracks().map(trackInfo),
      };
    },
  };
}

/** Sends `stream`'s video and audio on `pc`; returns the video codec preferred (H.264). */
export function sendStream(pc, stream) {
  const [video] = stream.getVideoTracks();
  const [audio] = stream.getAudioTracks();
  const vt = pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
  pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
  return preferH264(vt, 'sendonly');
}

/** Asks for video and audio on `pc`; returns the video codec preferred (H.264). */
export function receiveMedia(pc) {
  const vt = pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  return preferH264(vt, 'recvonly');
}

/** The server's SDP answer to our offer, applied to `pc` (over HTTP or the signaling
 *  socket). `connectedStatus` is the status the page has once connected ('live',
 *  'playing'): short of it, it is now 'connecting'. */
export async function acceptAnswer(pc, state, setStatus, sdp, connectedStatus) {
  mark(state, 'answerReceived');
  await pc.setRemoteDescription({ type: 'answer', sdp });
  if (state.status !== connectedStatus) setStatus('connecting');
}

/** WHIP or WHEP (`what`) on `pc`: the offer POSTed to `url` (with `bearer`), the answer
 *  applied (see [`acceptAnswer`]; `editAnswer` first); the session's URL goes to `state.location`. */
export async function negotiateOverHttp(pc, state, setStatus, { what, url, bearer, connectedStatus, editAnswer = (sdp) => sdp }) {
  setStatus('negotiating');
  const offer = await makeOffer(pc, state);
  mark(state, 'postSent');
  const { answer, location } = await postOffer(what, url, offer, bearer);
  state.location = location;
  await acceptAnswer(pc, state, setStatus, editAnswer(answer), connectedStatus);
}

/** Ends a WHIP/WHEP page's session: DELETE it (if it has one), close `pc`. */
export async function endHttpSession(pc, state) {
  const result = { deleteStatus: null };
  if (state.location) result.deleteStatus = await deleteSession(state.location);
  pc?.close();
  return result;
}

/** Says `leave` on the signaling socket (if still open), closes it and `pc`. */
export function leaveSignaling(sig, pc) {
  try {
    sig?.send({ type: 'leave' });
  } catch {
    /* socket already closed */
  }
  sig?.close();
  pc?.close();
}
