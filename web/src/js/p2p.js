// Peer-to-peer broadcasting for the studio: one RTCPeerConnection per viewer, signaled
// over the WebSocket (`publish`, then `viewer-joined` → offer, trickled candidates,
// `answer`; `viewer-left` closes it). Every viewer gets the same tracks (the canvas and
// the microphone), so a track change is a replaceTrack on every sender.
//
// The broadcaster's uplink carries one copy of the stream per viewer: `uplinkWarning`
// says when it can't carry more (DESIGN.md §1: p2p suits a few viewers).

/** Past this many viewers the studio suggests an SFU room. */
export const MANY_VIEWERS = 4;
/** A viewer whose connection isn't up within this is dropped (it can ask again). */
export const PEER_CONNECT_TIMEOUT_MS = 20_000;
/** A `publish` the server doesn't answer within this fails. */
const PUBLISH_TIMEOUT_MS = 10_000;
/** Failed or closed viewers stay listed this long, so the broadcaster sees what happened. */
const GONE_KEEP_MS = 30_000;

/** The page's WebSocket signaling URL (same origin). */
export function signalingUrl(loc = location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/** `?ice=relay` on the page: peer connections through TURN only (`iceTransportPolicy: 'relay'`). */
export const RELAY_ONLY = typeof location !== 'undefined' && new URLSearchParams(location.search).get('ice') === 'relay';

/** `iceServers` of a server message, when it carries a usable list (TURN comes this way). */
export function iceServersOf(msg) {
  return Array.isArray(msg?.iceServers) ? msg.iceServers.filter((s) => s && (typeof s.urls === 'string' || Array.isArray(s.urls))) : null;
}

/**
 * Whether the uplink carries every viewer, from per-viewer figures: `peers` =
 * [{state, availableBps, limitation}] (getStats: the selected pair's
 * availableOutgoingBitrate, outbound video's qualityLimitationReason), `needBps` = what
 * one copy of the stream needs (the encoder ceiling). Returns null or
 * {reason: 'viewers' | 'bandwidth', text}.
 */
export function uplinkWarning(peers, needBps, manyViewers = MANY_VIEWERS) {
  const up = peers.filter((p) => p.state === 'connected');
  const total = (needBps * Math.max(1, up.length)) / 1e6;
  // The estimate starts low and ramps up: only a sender the encoder also reports
  // limited by bandwidth counts.
  const starved = up.filter((p) => p.limitation === 'bandwidth' && typeof p.availableBps === 'number' && p.availableBps < needBps * 0.9);
  if (starved.length) {
    const worst = Math.min(...starved.map((p) => p.availableBps));
    return {
      reason: 'bandwidth',
      text: `Your upload can't carry more: ${starved.length} of ${up.length} viewers get a reduced picture (about ${Math.round(worst / 1000)} kb/s available of ${Math.round(needBps / 1000)} kb/s needed). Lower the resolution, or use a server (SFU) room.`,
    };
  }
  if (peers.length > manyViewers) {
    return {
      reason: 'viewers',
      text: `${peers.length} viewers: peer to peer sends your stream once per viewer (about ${total.toFixed(1)} Mb/s of upload now). It suits a few viewers; for more, use a server (SFU) room.`,
    };
  }
  return null;
}

/**
 * One p2p broadcast: `start()` publishes (resolves once the room is live, rejects with
 * the server's words), viewers are connected as they come, `stop()` ends it all.
 * `onEvent(name, detail)` hears of every step; `onClose(why)` of a signaling connection
 * lost while live (the studio publishes again: viewers' media keeps flowing meanwhile).
 */
export class P2pBroadcast {
  constructor({ url = signalingUrl(), room, credential, video, audio, encoding, onEvent = () => {}, onClose = () => {} }) {
    this.url = url;
    this.room = room;
    this.credential = credential; // {token} or {stream_key}
    this.video = video;
    this.audio = audio ?? null;
    this.encoding = encoding; // () => {maxBitrate, maxFramerate}
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.iceServers = [];
    /** viewer id → peer {viewer, pc, video, audio, state, since, pending, offered, timer, prev, stats} */
    this.peers = new Map();
    /** Viewers whose connection ended: [{viewer, state, closed, at}], newest last. */
    this.gone = [];
    this.ws = null;
    this.id = null;
    this.stopped = false;
  }

  /** Opens the signaling connection and publishes; resolves with the server's `room` message. */
  start() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      const timer = setTimeout(() => settle(new Error(`the signaling server did not answer within ${PUBLISH_TIMEOUT_MS / 1000} s: check your connection and go live again`)), PUBLISH_TIMEOUT_MS);
      const settle = (err, msg) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          ws.onclose = null;
          ws.close();
          reject(err);
        } else resolve(msg);
      };
      ws.onopen = () => ws.send(JSON.stringify({ type: 'publish', room: this.room, ...this.credential }));
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        if (!settled) {
          settle(new Error(`the signaling connection closed (${ev.code}) before the room went live: check your connection and go live again`));
          return;
        }
        if (this.ws === ws && !this.stopped) this.onClose('the signaling connection closed');
      };
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (!settled) {
          if (msg.type === 'error') {
            const e = new Error(msg.message ?? msg.code);
            e.code = msg.code;
            settle(e);
          } else if (msg.type === 'room' && msg.role === 'publisher') {
            this.iceServers = iceServersOf(msg) ?? this.iceServers;
            this.onEvent('p2p:live', { room: msg.room });
            settle(null, msg);
          }
          return;
        }
        this.handle(msg);
      };
    });
  }

  handle(msg) {
    switch (msg.type) {
      case 'viewer-joined':
        if (typeof msg.viewer === 'string') this.connect(msg.viewer).catch((e) => this.onEvent('p2p:error', `${msg.viewer}: ${e.message}`));
        break;
      case 'viewer-left':
        if (typeof msg.viewer === 'string') this.drop(msg.viewer, 'left');
        break;
      case 'answer':
        this.onAnswer(msg).catch((e) => this.onEvent('p2p:error', `answer from ${msg.from}: ${e.message}`));
        break;
      case 'candidate':
        this.onCandidate(msg);
        break;
      case 'error':
        this.onEvent('p2p:server-error', `${msg.code}: ${msg.message}`);
        // The server ends the connection after these; say why.
        if (msg.code === 'publish_ended' || msg.code === 'room_busy' || msg.code === 'publish_taken_over') {
          this.endReason = msg.message;
          this.endCode = msg.code;
        }
        break;
      default:
        if (iceServersOf(msg)) this.iceServers = iceServersOf(msg);
        break;
    }
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** A new viewer (or one asking again): a fresh connection and an offer. */
  async connect(viewer) {
    if (this.stopped) return;
    if (this.peers.has(viewer)) this.drop(viewer, 'replaced');
    const pc = new RTCPeerConnection({
      bundlePolicy: 'max-bundle',
      ...(this.iceServers.length ? { iceServers: this.iceServers } : {}),
      ...(RELAY_ONLY ? { iceTransportPolicy: 'relay' } : {}),
    });
    const stream = new MediaStream([this.video]);
    const vt = pc.addTransceiver(this.video, { direction: 'sendonly', streams: [stream] });
    // Always an audio transceiver: a microphone picked later is swapped in.
    const at = pc.addTransceiver(this.audio ?? 'audio', { direction: 'sendonly', streams: [stream] });
    const peer = { viewer, pc, video: vt.sender, audio: at.sender, state: 'new', since: Date.now(), pending: [], offered: false, outbox: [], timer: null, prev: null, stats: null, connectedAt: null };
    this.peers.set(viewer, peer);
    this.onEvent('p2p:viewer', { viewer });
    pc.addEventListener('icecandidate', (ev) => {
      if (!ev.candidate) return;
      const m = { type: 'candidate', to: viewer, candidate: ev.candidate.toJSON() };
      // Candidates follow the offer they belong to.
      if (peer.offered) this.send(m);
      else peer.outbox.push(m);
    });
    pc.addEventListener('connectionstatechange', () => this.onState(peer));
    peer.timer = setTimeout(() => {
      if (this.peers.get(viewer) === peer && pc.connectionState !== 'connected') this.drop(viewer, 'timeout');
    }, PEER_CONNECT_TIMEOUT_MS);
    this.applyEncodingTo(peer);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.peers.get(viewer) !== peer) return;
    this.send({ type: 'offer', to: viewer, sdp: pc.localDescription.sdp });
    peer.offered = true;
    for (const m of peer.outbox.splice(0)) this.send(m);
    this.onEvent('p2p:offer', { viewer });
  }

  async onAnswer(msg) {
    const peer = this.peers.get(msg.from);
    if (!peer || typeof msg.sdp !== 'string' || peer.pc.signalingState !== 'have-local-offer') return;
    await peer.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    for (const c of peer.pending.splice(0)) peer.pc.addIceCandidate(c).catch(() => {});
    this.onEvent('p2p:answer', { viewer: msg.from });
  }

  onCandidate(msg) {
    const peer = this.peers.get(msg.from);
    if (!peer || !msg.candidate) return;
    // Before the answer, a candidate has nowhere to go yet.
    if (!peer.pc.remoteDescription) peer.pending.push(msg.candidate);
    else peer.pc.addIceCandidate(msg.candidate).catch(() => {});
  }

  onState(peer) {
    if (this.peers.get(peer.viewer) !== peer) return;
    const s = peer.pc.connectionState;
    peer.state = s;
    this.onEvent('p2p:state', { viewer: peer.viewer, state: s });
    if (s === 'connected') {
      clearTimeout(peer.timer);
      peer.connectedAt ??= Date.now();
    } else if (s === 'failed') {
      this.drop(peer.viewer, 'failed');
    }
  }

  /** Closes a viewer's connection (it left, failed, timed out, or asked again). */
  drop(viewer, why) {
    const peer = this.peers.get(viewer);
    if (!peer) return;
    this.peers.delete(viewer);
    clearTimeout(peer.timer);
    peer.pc.close();
    this.gone.push({ viewer, state: why, closed: peer.pc.signalingState === 'closed', at: Date.now() });
    const cutoff = Date.now() - GONE_KEEP_MS;
    this.gone = this.gone.filter((g) => g.at >= cutoff).slice(-20);
    this.onEvent('p2p:closed', { viewer, why });
  }

  /** Sends `track` as the microphone to every viewer (null: silence). */
  async setAudio(track) {
    this.audio = track ?? null;
    await Promise.all([...this.peers.values()].map((p) => p.audio.replaceTrack(this.audio).catch(() => {})));
  }

  /** Sends `track` as the picture to every viewer. */
  async setVideo(track) {
    this.video = track;
    await Promise.all([...this.peers.values()].map((p) => p.video.replaceTrack(track).catch(() => {})));
  }

  /** The encoder ceiling and frame rate of the moment, on every viewer's sender. */
  applyEncoding() {
    for (const p of this.peers.values()) this.applyEncodingTo(p);
  }

  applyEncodingTo(peer) {
    const want = this.encoding?.();
    if (!want) return;
    try {
      const params = peer.video.getParameters();
      if (!params.encodings?.length) return;
      for (const e of params.encodings) Object.assign(e, want);
      peer.video.setParameters(params).catch(() => {});
    } catch {
      /* before negotiation some browsers have no encodings yet: set at the next change */
    }
  }

  /**
   * Every viewer's figures and the total: {viewers: [{viewer, state, bitrate, availableBps,
   * limitation, rttMs, width, height}], uploadBps, connected}.
   */
  async stats(senderStats) {
    const viewers = [];
    let uploadBps = 0;
    for (const p of [...this.peers.values()]) {
      let s = null;
      let availableBps = null;
      try {
        if (p.pc.connectionState !== 'closed') {
          s = await senderStats(p.pc, p.prev);
          p.prev = s;
          p.stats = s;
          availableBps = await availableOutgoing(p.pc);
        }
      } catch {
        /* closed under us */
      }
      if (s?.bitrate) uploadBps += s.bitrate;
      viewers.push({ viewer: p.viewer, state: p.state, since: p.since, connectedAt: p.connectedAt, bitrate: s?.bitrate ?? null, availableBps, limitation: s?.limitation ?? null, rttMs: s?.rttMs ?? null, width: s?.width ?? null, height: s?.height ?? null, codec: s?.codec ?? null, framesSent: s?.framesSent ?? 0 });
    }
    return { viewers, uploadBps, connected: viewers.filter((v) => v.state === 'connected').length };
  }

  /** Closes every viewer's connection and the signaling connection. */
  stop() {
    this.stopped = true;
    for (const v of [...this.peers.keys()]) this.drop(v, 'stopped');
    const ws = this.ws;
    if (ws) {
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'leave' }));
      ws.close();
    }
  }
}

/** The selected candidate pair's availableOutgoingBitrate (the congestion controller's estimate). */
async function availableOutgoing(pc) {
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  const pair = pairId ? report.get(pairId) : null;
  return typeof pair?.availableOutgoingBitrate === 'number' ? pair.availableOutgoingBitrate : null;
}
