//! The SFU's routing core, sans-IO in the style of str0m: datagrams, timeouts and API
//! calls go in; datagrams to send, relay frames and events come out. It owns every
//! `Rtc` of the node, so the hot path has no locks, tasks or channels — the worker
//! (`crate::worker`) is a thin loop around it, and tests drive it with simulated time.
//!
//! # The run loop
//!
//! The core reads no clock, no socket and no random source. Time comes in as the
//! `now: Instant` of each input; wall time is derived from that `now` and the
//! [`WallClock`] reading in [`CoreConfig`]; session ids come from the [`IdSeed`] there.
//! The same inputs give the same outputs, so a test controls everything.
//!
//! A *change* is any call that takes input: [`Core::handle_datagram`],
//! [`Core::handle_tcp_frame`], [`Core::handle_timeout`], and the API calls ([`Core::publish`],
//! [`Core::subscribe`], [`Core::publish_local`], [`Core::push_local`],
//! [`Core::add_candidate`], [`Core::close`], [`Core::end_publisher`],
//! [`Core::publish_relayed`], [`Core::push_relayed`],
//! [`Core::attach_relay`], [`Core::detach_relay`], [`Core::relay_keyframe_request`],
//! [`Core::set_draining`]). The rule:
//!
//! 1. After every change, call [`Core::poll_output`] until it returns `None`, and act
//!    on each output (send the datagram, hand the relay frame on, publish the event).
//!    Outputs queue in order, so a late drain loses nothing, but it delays every send.
//! 2. Call [`Core::handle_timeout`] once [`Core::next_timeout`] has passed, also while
//!    datagrams keep arriving; wait for the next datagram or command at most until then.
//! 3. `now` never goes backwards.
//!
//! Read-only calls (`counters`, `room_stats`, `session_room`, …) are not changes.
//!
//! ```no_run
//! use skylark_sfu::core::{Core, Output};
//! use std::io::ErrorKind;
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//!
//! fn run(mut core: Core, socket: UdpSocket) -> std::io::Result<()> {
//!     let mut buf = vec![0; 2048];
//!     loop {
//!         // Drain everything the last change produced.
//!         while let Some(output) = core.poll_output() {
//!             match output {
//!                 Output::Transmit { destination, contents, .. } => {
//!                     socket.send_to(&contents, destination)?;
//!                 }
//!                 // To relay sinks, the bus, an edge pull's parent, a sibling worker.
//!                 Output::Relay { .. }
//!                 | Output::CloseTcp { .. }
//!                 | Output::Event(_)
//!                 | Output::UpstreamKeyframe { .. }
//!                 | Output::Steer { .. } => {}
//!             }
//!         }
//!         let now = Instant::now();
//!         let next = core.next_timeout().unwrap_or(now + Duration::from_millis(100));
//!         if next <= now {
//!             core.handle_timeout(now);
//!             continue;
//!         }
//!         // Wait for a datagram, at most until the core's timeout.
//!         socket.set_read_timeout(Some((next - now).max(Duration::from_millis(1))))?;
//!         match socket.recv_from(&mut buf) {
//!             Ok((n, source)) => core.handle_datagram(Instant::now(), source, &buf[..n]),
//!             Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//! ```
//!
//! One file per concern: `admission` (new sessions), `codec` (what the SFU
//! negotiates), `datagram` (which session a datagram is for, by source address or by
//! the ICE ufrag `stun` reads), `translate` (str0m's events into routing), `fanout` (a
//! frame to subscribers and relays), `keyframe` (when to ask a publisher for one),
//! `nominate` (the path a peer's DTLS comes on, before the peer nominates it),
//! `room` (who is in a room), `counters`, [`forward`] (per-subscriber forwarding
//! state), [`sdp`] (offer checks), and the injected inputs `clock` and `ids`.

mod admission;
mod clock;
mod codec;
mod counters;
mod datagram;
mod direct;
mod fanout;
pub mod forward;
mod ids;
mod join;
mod keyframe;
mod keymap;
mod nominate;
mod output;
mod packetize;
mod peer;
pub mod quality;
mod room;
pub mod sdp;
mod slot;
mod stun;
mod sync;
mod translate;

pub use admission::{admit, publisher_reserve, Role, SessionError};
pub use clock::WallClock;
pub use codec::FrameCodec;
pub use counters::Counters;
pub use datagram::{DropReason, IndexSizes};
pub use direct::SendPath;
pub use fanout::RelayedFrame;
pub use ids::IdSeed;
pub use join::JoinFrames;
pub use output::{CloseReason, CoreEvent, Output};
pub use quality::{Choice, LayerReport};
pub use slot::{session_worker, stun_worker, WorkerSlot, MAX_WORKERS};

use keymap::KeyMap;
use peer::{LocalPublisher, Peer};
use room::Room;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::crypto::dtls::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::Input;

/// Default of [`CoreConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Address the UDP socket is bound to (destination of received datagrams).
    pub local_addr: SocketAddr,
    /// Address announced in ICE candidates.
    pub announce_addr: SocketAddr,
    /// Address announced as the ICE-TCP passive candidate (RFC 6544), beside the UDP
    /// one and below it in priority; frames of its connections arrive through
    /// [`Core::handle_tcp_frame`]. `None`: UDP only.
    pub tcp_addr: Option<SocketAddr>,
    /// Most concurrent sessions this node takes; subscribers leave
    /// [`publisher_reserve`] of them to publishers.
    pub max_sessions: usize,
    /// A WebRTC session whose ICE/DTLS has not completed this long after its offer is
    /// dropped, freeing its slot.
    pub connect_timeout: Duration,
    /// The wall clock, read once by the shell; the core advances it with `now`.
    pub wall_clock: WallClock,
    /// Secret the session ids are derived from (random in the worker, fixed in tests).
    pub id_seed: IdSeed,
    /// Which of the node's workers this core is ([`WorkerSlot::default`]: the only one).
    pub worker: WorkerSlot,
}

/// The routing core of one SFU node.
pub struct Core {
    config: CoreConfig,
    crypto: Arc<CryptoProvider>,
    /// This worker's DTLS certificate, presented to all its peers as mediasoup does:
    /// no key generation per join, and their associations share one OpenSSL context.
    /// `None` if OpenSSL could not make one: each `Rtc` then tries for itself.
    dtls_cert: Option<DtlsCert>,
    peers: KeyMap<Peer>,
    locals: KeyMap<LocalPublisher>,
    by_session: HashMap<String, u64>,
    /// Source (UDP address or ICE-TCP connection) → session (`datagram`), at most
    /// `MAX_ADDRS_PER_PEER` each.
    by_addr: HashMap<datagram::Route, u64>,
    /// Our ICE ufrag → session, for STUN from new addresses (`datagram`).
    by_ufrag: HashMap<String, u64>,
    rooms: HashMap<String, Room>,
    next_key: u64,
    out: VecDeque<Output>,
    counters: Counters,
    /// Shutting down: live sessions go on, new ones are refused.
    draining: bool,
    /// Bytes received per (room, track), for per-track bitrate.
    track_bytes: HashMap<(String, String), u64>,
    /// Source addresses whose datagrams belong to another worker's session, learnt
    /// from their STUN checks (`datagram`), with when they were last seen.
    steered: HashMap<SocketAddr, (u8, Instant)>,
    next_steer_sweep: Option<Instant>,
    join_frames: JoinFrames,
    send_path: SendPath,
    /// Subscribers whose video is paced (a joiner's cached GOP draining): the only
    /// peers [`Core::handle_timeout`] looks at for it.
    pacing: std::collections::HashSet<u64>,
    /// The worker is past its busy threshold: resends are shed first (see
    /// [`Core::shed_resends`]).
    resends_shed: bool,
    /// The worker is near its busy threshold: keyframe requests are spaced further
    /// apart (see [`Core::space_keyframes`]).
    keyframes_spaced: bool,
}

impl Core {
    pub fn new(config: CoreConfig) -> Self {
        let first_key = config.worker.first_key();
        let crypto = skylark_dtls::crypto_provider();
        let dtls_cert = crypto.dtls_provider.generate_certificate();
        Self {
            config,
            crypto: Arc::new(crypto),
            dtls_cert,
            peers: KeyMap::default(),
            locals: KeyMap::default(),
            by_session: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            rooms: HashMap::new(),
            next_key: first_key,
            out: VecDeque::new(),
            counters: Counters::default(),
            draining: false,
            resends_shed: false,
            keyframes_spaced: false,
            track_bytes: HashMap::new(),
            steered: HashMap::new(),
            next_steer_sweep: None,
            join_frames: JoinFrames::default(),
            send_path: SendPath::default(),
            pacing: Default::default(),
        }
    }

    /// What viewers joining mid-GOP get from a publisher that can't be asked for a
    /// keyframe (RTMP, an edge pull).
    pub fn set_join_frames(&mut self, mode: JoinFrames) {
        self.join_frames = mode;
    }

    /// Who seals subscribers' packets; sessions created after the call follow it.
    pub fn set_send_path(&mut self, path: SendPath) {
        self.send_path = path;
    }

    /// Next output for the worker.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the core next needs `handle_timeout`.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .map(|p| match p.connected {
                true => p.next_timeout,
                false => p.next_timeout.min(p.created + self.config.connect_timeout),
            })
            .chain(self.pacing.iter().filter_map(|k| {
                self.peers
                    .get(k)
                    .and_then(|p| p.direct.as_ref()?.pace_due())
            }))
            .min()
    }

    /// Advances time for every peer whose timeout is due; drops peers that did not
    /// connect in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sweep_steered(now);
        let limit = self.config.connect_timeout;
        let stale: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && now >= p.created + limit)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            if let Some(p) = self.peers.get(&key) {
                tracing::info!(session = %p.session, room_id = %p.room, "session never connected; dropping it");
            }
            self.counters.connect_timeouts += 1;
            self.remove_peer(key, CloseReason::NeverConnected);
        }
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(p) = self.peers.get_mut(&key) {
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(session = %p.session, error = %e, "timeout handling failed; closing session");
                    p.rtc.disconnect();
                }
            }
            self.drain(key, now);
        }
        self.send_paced(now);
        let pending: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(id, r)| r.keyframes.pending().into_iter().map(|t| (id.clone(), t)))
            .collect();
        for (room, track) in pending {
            let want = if track.is_empty() {
                keyframe::Want::All
            } else {
                keyframe::Want::Track(track)
            };
            self.request_keyframe(&room, want, now);
        }
    }
}
