//! The SFU's routing core, sans-IO in the style of str0m: datagrams, timeouts and API
//! calls go in; datagrams to send, relay frames and events come out. It owns every
//! `Rtc` of the node, so the hot path has no locks, tasks or channels — the worker
//! (`crate::worker`) is a thin loop around it, and tests drive it with simulated time.
//!
//! The core reads no clock and no random source: time comes in as the `now: Instant`
//! of each input, wall time is derived from it and the [`WallClock`] reading in
//! [`CoreConfig`], and session ids come from the [`IdSeed`] there.
//!
//! One file per concern: `admission` (new sessions), `codec` (what the SFU
//! negotiates), `datagram` (which session a datagram is for), `translate` (str0m's
//! events into routing), `fanout` (a frame to subscribers and relays), `keyframe` (when
//! to ask a publisher for one), `room` (who is in a room), `counters`, [`forward`]
//! (per-subscriber forwarding state), [`sdp`] (offer checks), and the injected inputs
//! `clock` and `ids`.

mod admission;
mod clock;
mod codec;
mod counters;
mod datagram;
mod fanout;
pub mod forward;
mod ids;
mod keyframe;
mod output;
mod peer;
mod room;
pub mod sdp;
mod translate;

pub use admission::{Role, SessionError};
pub use clock::WallClock;
pub use codec::FrameCodec;
pub use counters::Counters;
pub use ids::IdSeed;
pub use output::{CoreEvent, Output};

use peer::{LocalPublisher, Peer};
use room::Room;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::crypto::CryptoProvider;
use str0m::Input;

/// A peer that never connects is dropped after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Address the UDP socket is bound to (destination of received datagrams).
    pub local_addr: SocketAddr,
    /// Address announced in ICE candidates.
    pub announce_addr: SocketAddr,
    /// Most concurrent sessions this node takes.
    pub max_sessions: usize,
    /// The wall clock, read once by the shell; the core advances it with `now`.
    pub wall_clock: WallClock,
    /// Secret the session ids are derived from (random in the worker, fixed in tests).
    pub id_seed: IdSeed,
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

    /// Next output for the worker.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the core next needs `handle_timeout`.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.next_timeout).min()
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
            .filter(|(_, r)| r.keyframes.pending())
            .map(|(id, _)| id.clone())
            .collect();
        for room in pending {
            self.request_keyframe(&room, now);
        }
    }
}
