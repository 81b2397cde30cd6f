//! The SFU's routing core, sans-IO in the style of str0m: datagrams, timeouts and API
//! calls go in; datagrams to send, relay frames and events come out. It owns every
//! `Rtc` of the node, so the hot path has no locks, tasks or channels — the worker
//! (`crate::worker`) is a thin loop around it, and tests drive it with simulated time.

pub mod forward;
pub mod sdp;

use forward::{h264_is_keyframe, Gate, Timeline};
use skylark_proto::sfu::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use str0m::change::SdpOffer;
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc, RtcConfig};

/// Keyframe requests to a publisher are coalesced to at most one per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// A peer that never connects is dropped after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("{0}")]
    UnsupportedCodec(String),
    #[error("no such session")]
    UnknownSession,
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("node at capacity: try another node")]
    AtCapacity,
    #[error("node draining (shutting down): retry and another node takes the session")]
    Draining,
}

/// Whether a session sends into the room or receives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// What a published frame carries, whatever the source (WebRTC or a local ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    H264,
    Opus,
    /// Relayed only (HLS/FLV of RTMP sources); WebRTC viewers get the Opus transcode.
    Aac,
}

impl FrameCodec {
    fn kind(self) -> MediaKind {
        match self {
            FrameCodec::H264 => MediaKind::Video,
            FrameCodec::Opus | FrameCodec::Aac => MediaKind::Audio,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FrameCodec::H264 => "H264",
            FrameCodec::Opus => "opus",
            FrameCodec::Aac => "aac",
        }
    }

    fn clock_rate(self) -> u32 {
        match self {
            FrameCodec::H264 => 90_000,
            FrameCodec::Opus => 48_000,
            // RTMP sources time AAC in ms; the relay rebases it to 48 kHz.
            FrameCodec::Aac => 48_000,
        }
    }
}

/// A frame entering the router.
struct InFrame {
    codec: FrameCodec,
    /// The publisher's codec parameters, when it negotiated them (WebRTC).
    spec: Option<str0m::format::CodecSpec>,
    track: String,
    rid: Option<Rid>,
    /// RTP time in the codec's clock rate, extended to 64 bits.
    time: u64,
    network_time: Instant,
    data: Arc<[u8]>,
    contiguous: bool,
    /// Codec configuration for relay consumers (e.g. the AAC AudioSpecificConfig, hex).
    fmtp: String,
}

/// What the worker must do after feeding the core.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram; dropping it when the socket is full is fine (never block).
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Deliver to a relay sink (edge SFU or packager); drop if its queue is full.
    Relay {
        sink: u64,
        msg: pb::RelayMessage,
    },
    Event(CoreEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// The room got a publisher (first, or after having none).
    RoomLive { room: String },
    /// The room's publisher left.
    RoomOffline { room: String },
    /// Subscriber count of a room changed.
    Viewers { room: String, count: usize },
    /// A session ended (closed, timed out, replaced, failed).
    SessionClosed {
        session: String,
        room: String,
        role: Role,
    },
}

/// Totals since start, for `/metrics` and `Stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub datagrams_unmatched: u64,
    /// Keyframe requests the SFU sent to publishers (coalesced).
    pub keyframe_requests: u64,
    /// RTP packets received from publishers / sent to subscribers (incl. resends).
    pub packets_in: u64,
    pub packets_out: u64,
    /// NACKs: sent to publishers for lost packets / received from subscribers.
    pub nacks_to_publishers: u64,
    pub nacks_from_subscribers: u64,
    /// PLIs received from subscribers (each may trigger one coalesced request upstream).
    pub plis_from_subscribers: u64,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Address the UDP socket is bound to (destination of received datagrams).
    pub local_addr: SocketAddr,
    /// Address announced in ICE candidates.
    pub announce_addr: SocketAddr,
    /// Most concurrent sessions this node takes.
    pub max_sessions: usize,
}

struct SubscriberState {
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    gate: Gate,
    video_time: Timeline,
    audio_time: Timeline,
}

struct PublisherTrack {
    mid: Mid,
    kind: MediaKind,
}

enum PeerRole {
    Publisher { tracks: Vec<PublisherTrack> },
    Subscriber(Box<SubscriberState>),
}

/// Last cumulative stream stats seen, to turn str0m's totals into deltas.
#[derive(Default, Clone, Copy)]
struct StreamTotals {
    packets: u64,
    nacks: u64,
    plis: u64,
}

struct Peer {
    stream_totals: HashMap<(bool, Mid, Option<Rid>), StreamTotals>,
    /// Latest fraction of packets lost from this publisher (receiver-side estimate).
    loss: f32,
    session: String,
    room: String,
    rtc: Rtc,
    role: PeerRole,
    next_timeout: Instant,
    created: Instant,
    connected: bool,
}

/// A publisher fed by a local ingest (RTMP) rather than a WebRTC peer.
struct LocalPublisher {
    session: String,
    room: String,
}

#[derive(Default)]
struct Room {
    publisher: Option<u64>,
    subscribers: Vec<u64>,
    relays: Vec<u64>,
    /// Increments with each new publisher, so subscribers re-base their timelines.
    epoch: u64,
    tracks: Vec<pb::TrackInfo>,
    last_keyframe_request: Option<Instant>,
    keyframe_pending: bool,
}

/// The routing core of one SFU node.
pub struct Core {
    config: CoreConfig,
    crypto: Arc<CryptoProvider>,
    peers: HashMap<u64, Peer>,
    locals: HashMap<u64, LocalPublisher>,
    by_session: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    rooms: HashMap<String, Room>,
    next_key: u64,
    out: VecDeque<Output>,
    counters: Counters,
    /// Shutting down: live sessions go on, new ones are refused.
    draining: bool,
    /// Bytes received per (room, track), for per-track bitrate.
    track_bytes: HashMap<(String, String), u64>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn track_id(mid: Mid, rid: Option<Rid>) -> String {
    match rid {
        Some(r) => format!("{mid}:{r}"),
        None => mid.to_string(),
    }
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            crypto: Arc::new(skylark_dtls::crypto_provider()),
            peers: HashMap::new(),
            locals: HashMap::new(),
            by_session: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            next_key: 1,
            out: VecDeque::new(),
            counters: Counters::default(),
            draining: false,
            track_bytes: HashMap::new(),
        }
    }

    /// The codecs the SFU speaks: H.264 packetization-mode 1 in the profiles browsers
    /// offer, and Opus. Nothing else, so viewers get exactly what publishers send.
    ///
    /// Subscribers get no transport-wide congestion control (TWCC): its feedback (about 20
    /// RTCP packets a second from each viewer) only feeds a sender's bandwidth estimate,
    /// which the SFU does not run per viewer, and processing it was a fifth of the SFU's
    /// CPU at 300 viewers (docs/benchmarks.md). Publishers keep it: browsers size their
    /// encoder bitrate from it.
    fn rtc_config(&self, subscriber: bool) -> RtcConfig {
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(self.crypto.clone());
        let codecs = cfg.codec_config();
        for (pt, rtx, profile) in [
            (102u8, 103u8, 0x42e01f_u32),
            (104, 105, 0x42001f),
            (106, 107, 0x4d001f),
            (108, 109, 0x64001f),
        ] {
            codecs.add_h264(pt.into(), Some(rtx.into()), true, profile);
        }
        if subscriber {
            let mut without_twcc = ExtensionMap::empty();
            for (id, ext) in ExtensionMap::standard().iter() {
                if *ext != Extension::TransportSequenceNumber {
                    without_twcc.set(id, ext.clone());
                }
            }
            cfg = cfg.set_extension_map(without_twcc);
        }
        cfg
    }

    /// Bytes received so far per (room, track) of live rooms.
    pub fn track_bytes(&self) -> &HashMap<(String, String), u64> {
        &self.track_bytes
    }

    /// Refuse new sessions from now on; live ones continue until they end.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Sessions by role (local publishers count as publishers).
    pub fn session_counts(&self) -> (usize, usize) {
        let publishers = self
            .peers
            .values()
            .filter(|p| matches!(p.role, PeerRole::Publisher { .. }))
            .count();
        (
            publishers + self.locals.len(),
            self.peers.len() - publishers,
        )
    }

    pub fn room_stats(&self) -> Vec<pb::RoomStats> {
        let mut v: Vec<_> = self
            .rooms
            .iter()
            .map(|(id, r)| pb::RoomStats {
                room_id: id.clone(),
                live: r.publisher.is_some(),
                subscribers: r.subscribers.len() as u32,
                tracks: r.tracks.len() as u32,
            })
            .collect();
        v.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        v
    }

    /// Mean receive loss over publishers (0–1), for the loss gauge.
    pub fn publisher_loss(&self) -> f32 {
        let losses: Vec<f32> = self
            .peers
            .values()
            .filter(|p| matches!(p.role, PeerRole::Publisher { .. }))
            .map(|p| p.loss)
            .collect();
        if losses.is_empty() {
            0.0
        } else {
            losses.iter().sum::<f32>() / losses.len() as f32
        }
    }

    /// The room a session belongs to.
    pub fn session_room(&self, session: &str) -> Option<(&str, Role)> {
        let p = self.peers.get(self.by_session.get(session)?)?;
        let role = match p.role {
            PeerRole::Publisher { .. } => Role::Publisher,
            PeerRole::Subscriber(_) => Role::Subscriber,
        };
        Some((p.room.as_str(), role))
    }

    /// Next output for the worker.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the core next needs `handle_timeout`.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next_timeout).min()
    }

    fn new_session(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
        role: PeerRole,
    ) -> Result<(u64, String, String), SessionError> {
        if self.draining {
            return Err(SessionError::Draining);
        }
        if self.peers.len() >= self.config.max_sessions {
            return Err(SessionError::AtCapacity);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let subscriber = matches!(role, PeerRole::Subscriber(_));
        let mut rtc = self.rtc_config(subscriber).build(now);
        let candidate = Candidate::host(self.config.announce_addr, "udp")
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let key = self.next_key;
        self.next_key += 1;
        let session = format!("{:016x}{:016x}", key, rand_u64());
        self.peers.insert(
            key,
            Peer {
                stream_totals: HashMap::new(),
                loss: 0.0,
                session: session.clone(),
                room: room.to_string(),
                rtc,
                role,
                next_timeout: now,
                created: now,
                connected: false,
            },
        );
        self.by_session.insert(session.clone(), key);
        Ok((key, session, answer.to_sdp_string()))
    }

    /// A publisher's offer → `(session id, answer)`. Replaces the room's current publisher.
    pub fn publish(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
    ) -> Result<(String, String), SessionError> {
        sdp::check_publish_offer(offer)?;
        let (key, session, answer) =
            self.new_session(now, room, offer, PeerRole::Publisher { tracks: Vec::new() })?;
        self.install_publisher(room, key);
        self.drain(key, now);
        Ok((session, answer))
    }

    /// Makes `key` the room's publisher: a new epoch for subscribers and relays, and the
    /// previous publisher (a reconnect's old session) is closed.
    fn install_publisher(&mut self, room: &str, key: u64) {
        let r = self.rooms.entry(room.to_string()).or_default();
        let old = r.publisher.replace(key);
        r.epoch += 1;
        r.tracks.clear();
        r.last_keyframe_request = None;
        let relays = r.relays.clone();
        for sink in relays {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::PublisherChanged(pb::Empty {})),
            });
        }
        let subs = self
            .rooms
            .get(room)
            .map(|r| r.subscribers.clone())
            .unwrap_or_default();
        for s in subs {
            if let Some(PeerRole::Subscriber(st)) = self.peers.get_mut(&s).map(|p| &mut p.role) {
                st.gate = Gate::default();
            }
        }
        match old {
            Some(old) => self.remove_peer(old, false),
            None => self.out.push_back(Output::Event(CoreEvent::RoomLive {
                room: room.to_string(),
            })),
        }
    }

    /// A publisher that is not a WebRTC peer (RTMP ingest): its frames arrive through
    /// [`Core::push_local`]. Replaces the room's current publisher like a WHIP reconnect.
    pub fn publish_local(&mut self, room: &str) -> Result<String, SessionError> {
        if self.draining {
            return Err(SessionError::Draining);
        }
        if self.peers.len() + self.locals.len() >= self.config.max_sessions {
            return Err(SessionError::AtCapacity);
        }
        let key = self.next_key;
        self.next_key += 1;
        let session = format!("{:016x}{:016x}", key, rand_u64());
        self.locals.insert(
            key,
            LocalPublisher {
                session: session.clone(),
                room: room.to_string(),
            },
        );
        self.by_session.insert(session.clone(), key);
        self.install_publisher(room, key);
        Ok(session)
    }

    /// One frame of a local publisher: `time` in the codec's clock (90 kHz video, 48 kHz
    /// audio), `config` the codec configuration relay consumers need (AAC).
    pub fn push_local(
        &mut self,
        now: Instant,
        session: &str,
        codec: FrameCodec,
        time: u64,
        data: Arc<[u8]>,
        config: &str,
    ) -> Result<(), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        let Some(local) = self.locals.get(&key) else {
            return Err(SessionError::UnknownSession);
        };
        let room = local.room.clone();
        let frame = InFrame {
            codec,
            spec: None,
            track: format!("local-{}", codec.name()),
            rid: None,
            time,
            network_time: now,
            data,
            contiguous: true,
            fmtp: config.to_string(),
        };
        self.route(key, &room, frame, now);
        Ok(())
    }

    /// A subscriber's offer → `(session id, answer)`. The room need not be live yet.
    pub fn subscribe(
        &mut self,
        now: Instant,
        room: &str,
        offer: &str,
    ) -> Result<(String, String), SessionError> {
        sdp::check_size(offer)?;
        let state = SubscriberState {
            video_mid: None,
            audio_mid: None,
            gate: Gate::default(),
            video_time: Timeline::default(),
            audio_time: Timeline::default(),
        };
        let (key, session, answer) =
            self.new_session(now, room, offer, PeerRole::Subscriber(Box::new(state)))?;
        let r = self.rooms.entry(room.to_string()).or_default();
        r.subscribers.push(key);
        let count = r.subscribers.len();
        self.out.push_back(Output::Event(CoreEvent::Viewers {
            room: room.to_string(),
            count,
        }));
        self.drain(key, now);
        Ok((session, answer))
    }

    /// A trickled remote candidate (`candidate:…`, with or without `a=`).
    pub fn add_candidate(&mut self, session: &str, candidate: &str) -> Result<(), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        let line = candidate.trim().trim_start_matches("a=");
        if line.is_empty() || line.len() > 1024 {
            return Err(SessionError::BadCandidate(
                "empty or over 1024 bytes".into(),
            ));
        }
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        if let Some(p) = self.peers.get_mut(&key) {
            p.rtc.add_remote_candidate(c);
        }
        Ok(())
    }

    pub fn close(&mut self, session: &str) -> Result<(), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        self.remove_peer(key, true);
        Ok(())
    }

    /// Ends the room's publisher session (stream key rotated, room deleted).
    pub fn end_publisher(&mut self, room: &str) -> bool {
        match self.rooms.get(room).and_then(|r| r.publisher) {
            Some(key) => {
                self.remove_peer(key, true);
                true
            }
            None => false,
        }
    }

    /// Registers a relay sink for a room; it gets the current tracks at once and every
    /// frame from now on, starting at a keyframe.
    pub fn attach_relay(&mut self, now: Instant, room: &str, sink: u64) {
        let r = self.rooms.entry(room.to_string()).or_default();
        r.relays.push(sink);
        let tracks = r.tracks.clone();
        for t in tracks {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Track(t)),
            });
        }
        self.request_keyframe(room, now);
    }

    pub fn detach_relay(&mut self, room: &str, sink: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.relays.retain(|s| *s != sink);
        }
        self.gc_room(room);
    }

    /// A keyframe request from a relay consumer.
    pub fn relay_keyframe_request(&mut self, room: &str, now: Instant) {
        self.request_keyframe(room, now);
    }

    /// One received datagram. Garbage and datagrams of no session are counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.counters.datagrams_in += 1;
        let Ok(contents) = contents.try_into() else {
            self.counters.datagrams_unmatched += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.config.local_addr,
                contents,
            },
        );
        let cached = self
            .by_addr
            .get(&source)
            .copied()
            .filter(|k| self.peers.get(k).is_some_and(|p| p.rtc.accepts(&input)));
        let key = cached.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(k, _)| *k)
        });
        let Some(key) = key else {
            self.counters.datagrams_unmatched += 1;
            return;
        };
        self.by_addr.insert(source, key);
        if let Some(p) = self.peers.get_mut(&key) {
            tracing::trace!(session = %p.session, %source, "datagram");
            if let Err(e) = p.rtc.handle_input(input) {
                tracing::debug!(session = %p.session, error = %e, "input refused; closing session");
                p.rtc.disconnect();
            }
        }
        self.drain(key, now);
    }

    /// Advances time for every peer whose timeout is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(p) = self.peers.get_mut(&key) {
                if !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT {
                    tracing::info!(session = %p.session, "session never connected; dropping it");
                    p.rtc.disconnect();
                } else if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(session = %p.session, error = %e, "timeout handling failed; closing session");
                    p.rtc.disconnect();
                }
            }
            self.drain(key, now);
        }
        let pending: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.keyframe_pending)
            .map(|(id, _)| id.clone())
            .collect();
        for room in pending {
            self.request_keyframe(&room, now);
        }
    }

    /// Polls a peer until it has nothing more to say, routing what it produced.
    fn drain(&mut self, key: u64, now: Instant) {
        let mut media: Vec<MediaData> = Vec::new();
        let mut want_keyframe = false;
        let mut alive = true;
        {
            let Some(p) = self.peers.get_mut(&key) else {
                return;
            };
            loop {
                if !p.rtc.is_alive() {
                    alive = false;
                    break;
                }
                match p.rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => {
                        p.next_timeout = t;
                        break;
                    }
                    Ok(RtcOutput::Transmit(t)) => {
                        self.counters.datagrams_out += 1;
                        self.out.push_back(Output::Transmit {
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                    Ok(RtcOutput::Event(e)) => match e {
                        Event::Connected => {
                            p.connected = true;
                            tracing::debug!(session = %p.session, "connected");
                            if matches!(p.role, PeerRole::Subscriber(_)) {
                                want_keyframe = true;
                            }
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            p.rtc.disconnect();
                        }
                        Event::MediaAdded(m) => match &mut p.role {
                            PeerRole::Subscriber(st) => match m.kind {
                                MediaKind::Video => st.video_mid = st.video_mid.or(Some(m.mid)),
                                MediaKind::Audio => st.audio_mid = st.audio_mid.or(Some(m.mid)),
                            },
                            PeerRole::Publisher { tracks } => tracks.push(PublisherTrack {
                                mid: m.mid,
                                kind: m.kind,
                            }),
                        },
                        Event::MediaData(d) => {
                            if matches!(p.role, PeerRole::Publisher { .. }) {
                                media.push(d);
                            }
                        }
                        Event::KeyframeRequest(_) => want_keyframe = true,
                        Event::MediaIngressStats(st) => {
                            let t = p.stream_totals.entry((false, st.mid, st.rid)).or_default();
                            self.counters.packets_in += st.packets.saturating_sub(t.packets);
                            self.counters.nacks_to_publishers += st.nacks.saturating_sub(t.nacks);
                            *t = StreamTotals {
                                packets: st.packets,
                                nacks: st.nacks,
                                plis: st.plis,
                            };
                            if let Some(l) = st.loss {
                                p.loss = l;
                            }
                        }
                        Event::MediaEgressStats(st) => {
                            let t = p.stream_totals.entry((true, st.mid, st.rid)).or_default();
                            self.counters.packets_out += st.packets.saturating_sub(t.packets);
                            self.counters.nacks_from_subscribers +=
                                st.nacks.saturating_sub(t.nacks);
                            self.counters.plis_from_subscribers += st.plis.saturating_sub(t.plis);
                            *t = StreamTotals {
                                packets: st.packets,
                                nacks: st.nacks,
                                plis: st.plis,
                            };
                        }
                        _ => {}
                    },
                    Err(e) => {
                        tracing::debug!(session = %p.session, error = %e, "session failed");
                        p.rtc.disconnect();
                    }
                }
            }
        }
        if !alive {
            self.remove_peer(key, false);
            return;
        }
        let room = match self.peers.get(&key) {
            Some(p) => p.room.clone(),
            None => return,
        };
        for d in media {
            let codec = match d.params.spec().codec {
                Codec::H264 => FrameCodec::H264,
                Codec::Opus => FrameCodec::Opus,
                _ => continue,
            };
            let spec = d.params.spec();
            let frame = InFrame {
                codec,
                spec: Some(spec),
                track: track_id(d.mid, d.rid),
                rid: d.rid,
                time: d.time.numer(),
                network_time: d.network_time,
                data: d.data,
                contiguous: d.contiguous,
                fmtp: spec.format.to_string(),
            };
            self.route(key, &room, frame, now);
        }
        if want_keyframe {
            self.request_keyframe(&room, now);
        }
    }

    /// A frame from a room's publisher: to each subscriber and relay sink.
    fn route(&mut self, publisher: u64, room_id: &str, d: InFrame, now: Instant) {
        let kind = d.codec.kind();
        self.counters.frames_in += 1;
        self.counters.bytes_in += d.data.len() as u64;
        *self
            .track_bytes
            .entry((room_id.to_string(), d.track.clone()))
            .or_default() += d.data.len() as u64;
        let keyframe = kind == MediaKind::Video && h264_is_keyframe(&d.data);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.publisher != Some(publisher) {
            return;
        }
        let tid = d.track.clone();
        if !room.tracks.iter().any(|t| t.track_id == tid) {
            let info = pb::TrackInfo {
                track_id: tid.clone(),
                kind: match kind {
                    MediaKind::Video => pb::TrackKind::Video,
                    MediaKind::Audio => pb::TrackKind::Audio,
                } as i32,
                codec: d.codec.name().into(),
                clock_rate: d.codec.clock_rate(),
                fmtp: d.fmtp.clone(),
                rid: d.rid.map(|r| r.to_string()).unwrap_or_default(),
            };
            room.tracks.push(info.clone());
            for sink in room.relays.clone() {
                self.out.push_back(Output::Relay {
                    sink,
                    msg: relay_msg(pb::relay_message::Msg::Track(info.clone())),
                });
            }
        }
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let epoch = room.epoch;
        let subscribers = room.subscribers.clone();
        for sink in room.relays.clone() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Frame(pb::Frame {
                    track_id: tid.clone(),
                    rtp_time: d.time,
                    keyframe,
                    data: d.data.to_vec(),
                    received_at_us: now_us(),
                    contiguous: d.contiguous,
                })),
            });
        }
        if d.codec == FrameCodec::Aac {
            return;
        }
        let mut sent = Vec::with_capacity(subscribers.len());
        let mut need_keyframe = false;
        for s in subscribers {
            let Some(p) = self.peers.get_mut(&s) else {
                continue;
            };
            if !p.connected {
                continue;
            }
            let PeerRole::Subscriber(st) = &mut p.role else {
                continue;
            };
            let (mid, timeline, step) = match kind {
                MediaKind::Video => {
                    if !st.gate.pass_video(d.rid, keyframe) {
                        need_keyframe |= st.gate.wants_keyframe;
                        continue;
                    }
                    (st.video_mid, &mut st.video_time, 3000)
                }
                MediaKind::Audio => (st.audio_mid, &mut st.audio_time, 960),
            };
            let Some(mid) = mid else { continue };
            let out_time = timeline.map(epoch, d.time, step);
            let Some(writer) = p.rtc.writer(mid) else {
                continue;
            };
            // Among the codecs this subscriber negotiated: the publisher's exact format
            // first; else, for video, any H.264 in packetization mode 1 — the publisher's
            // profile-level-id (FFmpeg offers 42001e, browsers 42e01f) only bounds what
            // a decoder must handle, and every H.264 receiver decodes these streams.
            // (`Writer::match_params` searches the whole codec config, negotiated or not.)
            let pt = writer
                .payload_params()
                .find(|p| Some(p.spec()) == d.spec)
                .or_else(|| {
                    writer.payload_params().find(|p| match kind {
                        MediaKind::Video => {
                            p.spec().codec == Codec::H264
                                && p.spec().format.packetization_mode == Some(1)
                        }
                        MediaKind::Audio => p.spec().codec == Codec::Opus,
                    })
                })
                .map(|p| p.pt());
            let Some(pt) = pt else {
                tracing::debug!(session = %p.session, "subscriber did not negotiate the publisher's codec");
                continue;
            };
            let freq = if kind == MediaKind::Video {
                Frequency::NINETY_KHZ
            } else {
                Frequency::FORTY_EIGHT_KHZ
            };
            let time = MediaTime::new(out_time, freq);
            if let Err(e) = writer.write(pt, d.network_time, time, d.data.clone()) {
                tracing::debug!(session = %p.session, error = %e, "write failed");
                continue;
            }
            self.counters.frames_out += 1;
            self.counters.bytes_out += d.data.len() as u64;
            sent.push(s);
        }
        for s in sent {
            self.drain(s, now);
        }
        if need_keyframe {
            self.request_keyframe(room_id, now);
        }
    }

    /// Asks the room's publisher for a keyframe, at most once per interval (later asks
    /// are coalesced into one sent when the interval has passed).
    fn request_keyframe(&mut self, room_id: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(pk) = room.publisher else {
            room.keyframe_pending = false;
            return;
        };
        if let Some(last) = room.last_keyframe_request {
            if now.duration_since(last) < KEYFRAME_REQUEST_INTERVAL {
                room.keyframe_pending = true;
                return;
            }
        }
        room.last_keyframe_request = Some(now);
        room.keyframe_pending = false;
        let rids: Vec<Option<Rid>> = room
            .tracks
            .iter()
            .filter(|t| t.kind == pb::TrackKind::Video as i32)
            .map(|t| (!t.rid.is_empty()).then(|| Rid::from(t.rid.as_str())))
            .collect();
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        if !p.connected {
            return;
        }
        let PeerRole::Publisher { tracks } = &p.role else {
            return;
        };
        let mids: Vec<Mid> = tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| t.mid)
            .collect();
        for mid in mids {
            let layers = if rids.is_empty() {
                vec![None]
            } else {
                rids.clone()
            };
            for rid in layers {
                if let Some(mut w) = p.rtc.writer(mid) {
                    if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                        && w.request_keyframe(rid, KeyframeRequestKind::Pli).is_ok()
                    {
                        self.counters.keyframe_requests += 1;
                    }
                }
            }
        }
        self.drain(pk, now);
    }

    fn remove_peer(&mut self, key: u64, explicit: bool) {
        if let Some(l) = self.locals.remove(&key) {
            self.by_session.remove(&l.session);
            self.publisher_gone(&l.room, key);
            tracing::info!(session = %l.session, room_id = %l.room, "local publisher closed");
            self.out.push_back(Output::Event(CoreEvent::SessionClosed {
                session: l.session,
                room: l.room.clone(),
                role: Role::Publisher,
            }));
            self.gc_room(&l.room);
            return;
        }
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        if explicit {
            p.rtc.disconnect();
        }
        self.by_session.remove(&p.session);
        self.by_addr.retain(|_, k| *k != key);
        let role = match p.role {
            PeerRole::Publisher { .. } => Role::Publisher,
            PeerRole::Subscriber(_) => Role::Subscriber,
        };
        if let Some(r) = self.rooms.get_mut(&p.room) {
            match role {
                Role::Publisher => {}
                Role::Subscriber => {
                    r.subscribers.retain(|s| *s != key);
                    let count = r.subscribers.len();
                    self.out.push_back(Output::Event(CoreEvent::Viewers {
                        room: p.room.clone(),
                        count,
                    }));
                }
            }
        }
        if role == Role::Publisher {
            self.publisher_gone(&p.room, key);
        }
        tracing::info!(session = %p.session, room_id = %p.room, ?role, "session closed");
        self.out.push_back(Output::Event(CoreEvent::SessionClosed {
            session: p.session,
            room: p.room.clone(),
            role,
        }));
        self.gc_room(&p.room);
    }

    /// The room's publisher `key` left: the room goes offline, and relay consumers learn
    /// the stream stopped (a returning publisher is a new stream: timestamps restart).
    fn publisher_gone(&mut self, room: &str, key: u64) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.publisher != Some(key) {
            return;
        }
        r.publisher = None;
        self.out.push_back(Output::Event(CoreEvent::RoomOffline {
            room: room.to_string(),
        }));
        for sink in r.relays.clone() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Ended(pb::Empty {})),
            });
        }
    }

    fn gc_room(&mut self, room: &str) {
        if self.rooms.get(room).is_none_or(|r| r.publisher.is_none()) {
            self.track_bytes.retain(|(r, _), _| r != room);
        }
        if self.rooms.get(room).is_some_and(|r| {
            r.publisher.is_none() && r.subscribers.is_empty() && r.relays.is_empty()
        }) {
            self.rooms.remove(room);
        }
    }
}

fn relay_msg(msg: pb::relay_message::Msg) -> pb::RelayMessage {
    pb::RelayMessage { msg: Some(msg) }
}

/// Unpredictable session-id suffix (ids are capabilities for PATCH/DELETE).
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to the clock: ids stay unique through the counter prefix.
        return now_us();
    }
    u64::from_le_bytes(b)
}
