// WebRTC plumbing shared by the studio and the player: H.264 preference, non-trickle
// offers, WHIP/WHEP requests (RFC 9725) and getStats summaries.

import { errorFrom, request } from './api.js';

/** Time budget for ICE gathering before the offer goes out with what it has. */
export const GATHER_CAP_MS = 2000;
/** Time budget for one WHIP/WHEP request. */
export const SIGNAL_TIMEOUT_MS = 10_000;

const isH264 = (c) => c.mimeType.toLowerCase() === 'video/h264';
const pm1 = (c) => /packetization-mode=1/.test(c.sdpFmtpLine ?? '');
const baseline = (c) => /profile-level-id=42e01f/i.test(c.sdpFmtpLine ?? '');

/**
 * Puts H.264 packetization-mode=1 first (constrained baseline 42e01f first of all) on a
 * video transceiver: the SFU carries H.264 only, so the same track feeds WebRTC viewers
 * and HLS. Returns the preferred codec's description, or null where the browser can't
 * set preferences (the SFU then picks H.264 from the offer, or says why it can't).
 */
export function preferH264(transceiver, direction = 'sendonly') {
  if (typeof transceiver.setCodecPreferences !== 'function') return null;
  const caps = direction === 'recvonly' ? [RTCRtpReceiver, RTCRtpSender] : [RTCRtpSender, RTCRtpReceiver];
  for (const side of caps) {
    const codecs = side.getCapabilities?.('video')?.codecs ?? [];
    const rank = (c) => (isH264(c) ? (pm1(c) ? (baseline(c) ? 0 : 1) : 2) : 3);
    const ordered = [...codecs].sort((a, b) => rank(a) - rank(b));
    if (!ordered.length || !isH264(ordered[0]) || !pm1(ordered[0])) continue;
    try {
      transceiver.setCodecPreferences(ordered);
      return `${ordered[0].mimeType} ${ordered[0].sdpFmtpLine ?? ''}`.trim();
    } catch {
      /* try the other side's list */
    }
  }
  return null;
}

/** Resolves when ICE gathering completes, or after `capMs`. */
export function waitIceGathering(pc, capMs = GATHER_CAP_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (v) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(v);
    };
    const timer = setTimeout(() => done(false), capMs);
    function check() {
      if (pc.iceGatheringState === 'complete') done(true);
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** createOffer → setLocalDescription → gathering (capped) → the offer SDP with candidates. */
export async function makeOffer(pc) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitIceGathering(pc);
  return pc.localDescription.sdp;
}

/**
 * WHIP/WHEP: POSTs the offer and returns {answer, location}. Throws ApiError carrying the
 * status and the server's words ("WHIP: the stream key is not valid (401 unauthorized)").
 */
export async function postOffer(what, url, sdp, bearer) {
  const headers = { 'Content-Type': 'application/sdp' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await request(url, { method: 'POST', headers, body: sdp, timeoutMs: SIGNAL_TIMEOUT_MS }, what);
  if (res.status !== 201) throw await errorFrom(res, what);
  const answer = await res.text();
  const base = new URL(url, location.href);
  const loc = res.headers.get('Location');
  return { answer, location: loc ? new URL(loc, base).toString() : null, links: parseLinks(res.headers.get('Link'), base) };
}

/** The WHEP extension where a viewer lists and picks simulcast layers. */
export const LAYER_REL = 'urn:ietf:params:whep:ext:core:layer';

/**
 * A `Link` header (RFC 8288; several headers arrive joined by ", ") → [{url, rel}], URLs
 * resolved against `base`. Commas inside <…> or quotes don't split.
 */
export function parseLinks(header, base) {
  if (!header) return [];
  const links = [];
  for (const part of header.match(/<[^>]*>(?:[^,"]|"[^"]*")*/g) ?? []) {
    const target = part.match(/^<([^>]*)>/)?.[1];
    const rel = part.match(/;\s*rel="?([^";]+)"?/i)?.[1];
    if (target === undefined || !rel) continue;
    try {
      links.push({ url: new URL(target, base).toString(), rel });
    } catch {
      /* not a URL (e.g. a malformed target): skip it */
    }
  }
  return links;
}

/** DELETEs a WHIP/WHEP session (best effort); `keepalive` lets it outlive the page. */
export async function deleteSession(url, bearer, { keepalive = false } = {}) {
  if (!url) return null;
  const headers = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  try {
    const res = await fetch(url, { method: 'DELETE', headers, keepalive, signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer().catch(() => {});
    return res.status;
  } catch {
    return 0;
  }
}

function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
  });
  if (pair) return pair;
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
  });
  return pair;
}

function codecName(report, s) {
  const c = s?.codecId ? report.get(s.codecId) : null;
  return c?.mimeType?.split('/')[1] ?? null;
}

/**
 * A publisher's figures: {bitrate (b/s, audio + video), fps, width, height, lossPct,
 * rttMs, codec, limitation, layers}. `layers` lists each simulcast encoding being sent,
 * largest first ({rid, width, height, fps, codec, encoder, bytesSent}): those that encoded a
 * frame since `prev`; width/height/fps are the largest one's.
 * Pass the previous result to get rates.
 */
export async function senderStats(pc, prev) {
  const report = await pc.getStats();
  const now = performance.now();
  let bytes = 0;
  const videos = [];
  let packetsLost = 0;
  let remote = null;
  let packetsSent = 0;
  report.forEach((s) => {
    if (s.type === 'outbound-rtp') {
      bytes += s.bytesSent ?? 0;
      if (s.kind === 'video') {
        videos.push(s);
        packetsSent += s.packetsSent ?? 0;
      }
    }
    if (s.type === 'remote-inbound-rtp' && s.kind === 'video') {
      remote = s;
      packetsLost += s.packetsLost ?? 0;
    }
  });
  // A paused encoding (active: false, or dropped by the encoder for bandwidth or CPU)
  // keeps its last frame size in the report: sending means frames encoded since `prev`.
  const framesByRid = Object.fromEntries(videos.map((v) => [v.rid ?? '', v.framesEncoded ?? 0]));
  const sending = videos
    .filter((v) => v.active !== false && v.frameWidth > 0 && (prev?.framesByRid?.[v.rid ?? ''] ?? -1) < (v.framesEncoded ?? 0))
    .sort((a, b) => b.frameWidth * b.frameHeight - a.frameWidth * a.frameHeight);
  const video = sending[0] ?? videos[0] ?? null;
  const pair = selectedPair(report);
  const dt = prev ? (now - prev.at) / 1000 : 0;
  let lossPct = null;
  if (remote && prev && remote.packetsLost !== undefined && packetsSent > prev.packetsSent) {
    const lost = Math.max(0, packetsLost - (prev.packetsLost ?? 0));
    lossPct = (100 * lost) / (packetsSent - prev.packetsSent + lost);
  } else if (remote?.fractionLost !== undefined) {
    lossPct = remote.fractionLost * 100;
  }
  const rtt = pair?.currentRoundTripTime ?? remote?.roundTripTime;
  return {
    at: now,
    bytes,
    packetsSent,
    packetsLost,
    bitrate: prev && dt > 0 ? ((bytes - prev.bytes) * 8) / dt : null,
    fps: video?.framesPerSecond ?? null,
    width: video?.frameWidth ?? null,
    height: video?.frameHeight ?? null,
    framesSent: videos.reduce((n, v) => n + (v.framesSent ?? 0), 0),
    framesByRid,
    lossPct,
    rttMs: rtt === undefined ? null : rtt * 1000,
    codec: codecName(report, video),
    limitation: video?.qualityLimitationReason ?? null,
    layers: sending.map((v) => ({ rid: v.rid ?? null, width: v.frameWidth, height: v.frameHeight, fps: v.framesPerSecond ?? null, codec: codecName(report, v), encoder: v.encoderImplementation ?? null, bytesSent: v.bytesSent ?? 0 })),
  };
}

/**
 * A viewer's figures: {framesDecoded, fps, bitrate, width, height, rttMs, jitterBufferMs,
 * latencyMs (≈ half the RTT + jitter buffer + decode), codec, packetsLost}.
 */
export async function receiverStats(pc, prev) {
  const report = await pc.getStats();
  const now = performance.now();
  let video = null;
  let bytes = 0;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      bytes += s.bytesReceived ?? 0;
      if (s.kind === 'video') video = s;
    }
  });
  const pair = selectedPair(report);
  const dt = prev ? (now - prev.at) / 1000 : 0;
  const jbDelay = video?.jitterBufferDelay ?? 0;
  const jbCount = video?.jitterBufferEmittedCount ?? 0;
  const decodeTime = video?.totalDecodeTime ?? 0;
  const frames = video?.framesDecoded ?? 0;
  const dCount = jbCount - (prev?.jbCount ?? 0);
  const jitterBufferMs = dCount > 0 ? ((jbDelay - (prev?.jbDelay ?? 0)) / dCount) * 1000 : jbCount > 0 ? (jbDelay / jbCount) * 1000 : null;
  const dFrames = frames - (prev?.framesDecoded ?? 0);
  const decodeMs = dFrames > 0 ? ((decodeTime - (prev?.decodeTime ?? 0)) / dFrames) * 1000 : null;
  const rttMs = pair?.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null;
  const latencyMs = jitterBufferMs === null ? null : (rttMs ?? 0) / 2 + jitterBufferMs + (decodeMs ?? 0);
  return {
    at: now,
    bytes,
    jbDelay,
    jbCount,
    decodeTime,
    framesDecoded: frames,
    fps: video?.framesPerSecond ?? (prev && dt > 0 ? dFrames / dt : null),
    bitrate: prev && dt > 0 ? ((bytes - prev.bytes) * 8) / dt : null,
    width: video?.frameWidth ?? null,
    height: video?.frameHeight ?? null,
    packetsLost: video?.packetsLost ?? 0,
    rttMs,
    jitterBufferMs,
    decodeMs,
    latencyMs,
    codec: codecName(report, video),
  };
}
