//! What the core keeps per session: the WebRTC peer and its role in the room.

use super::counters::StreamTotals;
use super::datagram::Route;
use super::direct::DirectTx;
use super::forward::{Gate, Outgoing};
use super::quality::Quality;
use super::sync::SourceClock;
use super::Role;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::Rtc;

pub(super) struct Peer {
    /// Keyed by (egress, mid, rid).
    pub stream_totals: HashMap<(bool, Mid, Option<Rid>), StreamTotals>,
    /// Latest fraction of packets lost from this publisher (receiver-side estimate).
    pub loss: f32,
    pub session: String,
    pub room: String,
    pub rtc: Rtc,
    pub role: PeerRole,
    pub next_timeout: Instant,
    pub created: Instant,
    pub connected: bool,
    /// Our ICE ufrag: its STUN checks name it (`by_ufrag`).
    pub ufrag: String,
    /// Sources routed to it (`by_addr`), oldest first.
    pub addrs: VecDeque<Route>,
    /// A publisher's capture clock (its sender reports), for lip sync.
    pub clock: SourceClock,
    /// Its ICE checks until it nominates a path; the core nominates the one its DTLS
    /// comes on if it has not (`nominate`).
    pub path: PathState,
    /// Where str0m sends the session's datagrams (its nominated path), learnt from
    /// what it sends and its stats: where the core sends what it seals itself.
    pub send_to: Option<Route>,
    /// A subscriber's SRTP keys once its DTLS connects (`SendPath::Direct`).
    pub keys: Option<skylark_dtls::KeysSlot>,
    /// A subscriber's own send path, from `Connected` on (`SendPath::Direct`).
    pub direct: Option<Box<DirectTx>>,
}

/// What the core keeps of a peer's ICE checks until it has nominated a path.
pub(super) struct PathState {
    /// Our ICE password: it signs the check the core makes in the peer's name.
    pub ice_pass: String,
    /// The peer nominated a path, or the core did for it: nothing more to do.
    pub nominated: bool,
    /// The peer's latest check, not yet nominating.
    pub check: Option<PeerCheck>,
    /// Transaction id of the core's check: its response is not sent.
    pub own_check: Option<[u8; 12]>,
}

impl PathState {
    pub fn new(ice_pass: String) -> Self {
        Self {
            ice_pass,
            nominated: false,
            check: None,
            own_check: None,
        }
    }
}

/// A check of the peer's: where from, and what a nominating copy of it repeats.
pub(super) struct PeerCheck {
    pub source: Route,
    pub username: String,
    pub prio: u32,
    pub tie_breaker: u64,
}

pub(super) enum PeerRole {
    Publisher { tracks: Vec<PublisherTrack> },
    Subscriber(Box<SubscriberState>),
}

impl PeerRole {
    pub fn role(&self) -> Role {
        match self {
            PeerRole::Publisher { .. } => Role::Publisher,
            PeerRole::Subscriber(_) => Role::Subscriber,
        }
    }
}

pub(super) struct PublisherTrack {
    pub mid: Mid,
    pub kind: MediaKind,
}

pub(super) struct SubscriberState {
    pub video_mid: Option<Mid>,
    pub audio_mid: Option<Mid>,
    pub gate: Gate,
    /// The layer it chose, or how its link has carried the layers (Auto).
    pub quality: Quality,
    pub video: Outgoing,
    pub audio: Outgoing,
}

impl SubscriberState {
    /// `seed` picks the first sequence numbers (random per session, as RFC 3550 asks).
    pub fn new(seed: u32) -> Self {
        Self {
            video_mid: None,
            audio_mid: None,
            gate: Gate::default(),
            quality: Quality::default(),
            video: Outgoing::new(seed as u16),
            audio: Outgoing::new((seed >> 16) as u16),
        }
    }
}

/// A publisher fed by a local ingest (RTMP) or a relay from another node (an edge
/// pull) rather than a WebRTC peer.
pub(super) struct LocalPublisher {
    pub session: String,
    pub room: String,
    /// An edge pull: the room's origin is elsewhere, keyframe wants go upstream.
    pub relayed: bool,
    /// Its capture clock: media time (RTMP) or the origin's (relayed), for lip sync.
    pub clock: SourceClock,
}
