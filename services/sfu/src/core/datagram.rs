//! Datagram routing: which session a received datagram belongs to, in O(1) whoever
//! sends it. A STUN Binding request names its session by our ICE ufrag (its USERNAME);
//! anything else must come from an address an accepted request came from. Junk from
//! strangers is dropped before any peer sees it, so a flood costs a header check each.
//! ICE-TCP frames (RFC 4571, one per datagram) take the same path, routed by their
//! connection's remote address over TCP: a UDP source with the same address is another
//! route.

use super::nominate;
use super::slot::ufrag_worker;
use super::stun::{self, Kind};
use super::{Core, Output};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::net::{Protocol, Receive};
use str0m::Input;

/// Where a peer's datagrams come from: an address over UDP, or one ICE-TCP connection
/// (its remote address over [`Protocol::Tcp`]).
pub(super) type Route = (Protocol, SocketAddr);

/// Source addresses one session keeps routed: a client's candidates that reach us
/// (host, server-reflexive, relayed; v4 and v6) fit, a client spraying ports does not
/// grow the table.
pub(super) const MAX_ADDRS_PER_PEER: usize = 8;

/// Why a datagram reached no session (a metric label: keep the set small and fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, from an address no session has used.
    UnknownSource,
    /// STUN that names no session here (no USERNAME, unknown ufrag, not a request).
    UnknownUfrag,
    /// The session it maps to refused it (failed integrity, not its traffic).
    Rejected,
    /// Not a datagram str0m can parse.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::Rejected,
        DropReason::Malformed,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::Rejected => "rejected",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Source addresses a core remembers as another worker's (a bound on what strangers'
/// STUN can make it hold).
const MAX_STEERED: usize = 65_536;
/// A steered address not seen for this long is forgotten (ICE consent checks come
/// every ~5 s, RFC 7675).
const STEERED_FOR: Duration = Duration::from_secs(30);
const STEER_SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Core {
    /// One datagram received on this worker's socket. Garbage and datagrams of no
    /// session are counted and dropped; those of another worker's session are handed
    /// on ([`Output::Steer`]).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.receive(now, (Protocol::Udp, source), contents, true);
    }

    /// A datagram another worker received for a session of this one: never handed on
    /// again.
    pub fn handle_steered_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.receive(now, (Protocol::Udp, source), contents, false);
    }

    /// One RFC 4571 frame received on the ICE-TCP connection from `source`. The shell
    /// hands a connection to the worker its first STUN check names
    /// ([`crate::core::stun_worker`]), so frames are never handed on.
    pub fn handle_tcp_frame(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.receive(now, (Protocol::Tcp, source), contents, false);
    }

    fn receive(&mut self, now: Instant, route: Route, contents: &[u8], may_steer: bool) {
        self.counters.datagrams_in += 1;
        let (proto, source) = route;
        let stun = stun::classify(contents);
        // Decided from the two indexes alone: no peer is consulted for strangers.
        let key = match stun {
            Kind::Request { local_ufrag } => self.by_ufrag.get(local_ufrag),
            Kind::NotStun | Kind::Other => self.by_addr.get(&route),
        }
        .copied();
        let Some(key) = key else {
            if may_steer && self.steer(now, source, stun, contents) {
                return;
            }
            self.counters.drop(match stun {
                Kind::NotStun => DropReason::UnknownSource,
                Kind::Request { .. } | Kind::Other => DropReason::UnknownUfrag,
            });
            return;
        };
        let Ok(datagram) = contents.try_into() else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let destination = match proto {
            Protocol::Udp => self.config.local_addr,
            // Only a node with a TCP candidate gets frames; str0m matches its address.
            _ => self.config.tcp_addr.unwrap_or(self.config.local_addr),
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents: datagram,
            },
        );
        let Some(p) = self.peers.get_mut(&key) else {
            self.counters.drop(DropReason::Rejected);
            return;
        };
        // The ufrag is no secret: the request's integrity (checked here) is.
        if !p.rtc.accepts(&input) {
            self.counters.drop(DropReason::Rejected);
            return;
        }
        tracing::trace!(session = %p.session, %source, "datagram");
        match stun {
            Kind::Request { .. } => nominate::note_check(p, route, contents),
            Kind::NotStun if nominate::is_dtls(contents) => {
                nominate::nominate_dtls_path(p, &self.crypto, destination, route, now)
            }
            Kind::NotStun | Kind::Other => {}
        }
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(session = %p.session, error = %e, "input refused; closing session");
            p.rtc.disconnect();
        }
        if matches!(stun, Kind::Request { .. }) {
            self.route_addr(route, key);
        }
        self.drain(key, now);
    }

    /// Hands a datagram of another worker's session to that worker: a STUN check
    /// names it by its ufrag (and teaches which worker `source` belongs to), anything
    /// else follows what the checks taught. `false`: no other worker's either.
    fn steer(&mut self, now: Instant, source: SocketAddr, stun: Kind<'_>, contents: &[u8]) -> bool {
        let slot = self.config.worker;
        if slot.is_alone() {
            return false;
        }
        let worker = match stun {
            Kind::Request { local_ufrag } => {
                let Some(w) = ufrag_worker(local_ufrag, slot.count).filter(|w| *w != slot.index)
                else {
                    return false;
                };
                if self.steered.len() < MAX_STEERED || self.steered.contains_key(&source) {
                    self.steered.insert(source, (w, now));
                }
                w
            }
            Kind::NotStun | Kind::Other => match self.steered.get_mut(&source) {
                Some((w, seen)) => {
                    *seen = now;
                    *w
                }
                None => return false,
            },
        };
        self.counters.datagrams_steered += 1;
        self.out.push_back(Output::Steer {
            worker,
            source,
            contents: contents.to_vec(),
        });
        true
    }

    /// Forgets steered addresses gone quiet (run from `handle_timeout`).
    pub(super) fn sweep_steered(&mut self, now: Instant) {
        if self.next_steer_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_steer_sweep = Some(now + STEER_SWEEP_EVERY);
        self.steered
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < STEERED_FOR);
    }

    /// Routes `source` to session `key` (an accepted ICE check came from it), most
    /// recent last; the session's oldest address goes when it has too many.
    fn route_addr(&mut self, source: Route, key: u64) {
        if let Some(old) = self.by_addr.insert(source, key) {
            if old != key {
                if let Some(o) = self.peers.get_mut(&old) {
                    o.addrs.retain(|a| *a != source);
                }
            }
        }
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        p.addrs.retain(|a| *a != source);
        p.addrs.push_back(source);
        let excess = p.addrs.len().saturating_sub(MAX_ADDRS_PER_PEER);
        let gone: Vec<Route> = p.addrs.drain(..excess).collect();
        for gone in gone {
            if self.by_addr.get(&gone) == Some(&key) {
                self.by_addr.remove(&gone);
                self.close_tcp(gone);
            }
        }
    }

    /// Forgets session `key`'s routes (it is being removed); its ICE-TCP connections
    /// are closed.
    pub(super) fn unroute(&mut self, key: u64, ufrag: &str, addrs: &[Route]) {
        for a in addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
                self.close_tcp(*a);
            }
        }
        if self.by_ufrag.get(ufrag) == Some(&key) {
            self.by_ufrag.remove(ufrag);
        }
    }

    /// A route no session uses any more: if it is an ICE-TCP connection, the shell
    /// closes it (the peer would otherwise keep it open with consent checks no one
    /// answers).
    fn close_tcp(&mut self, (proto, remote): Route) {
        if proto == Protocol::Tcp {
            self.out.push_back(Output::CloseTcp { remote });
        }
    }

    /// Whether the ICE-TCP connection from `remote` carries a session's accepted checks.
    pub fn has_tcp_route(&self, remote: SocketAddr) -> bool {
        self.by_addr.contains_key(&(Protocol::Tcp, remote))
    }

    /// Sizes of the routing indexes, to check they shrink with the sessions.
    pub fn index_sizes(&self) -> IndexSizes {
        IndexSizes {
            peers: self.peers.len(),
            sessions: self.by_session.len(),
            addrs: self.by_addr.len(),
            ufrags: self.by_ufrag.len(),
        }
    }
}

/// Entries in the core's session indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSizes {
    pub peers: usize,
    /// Session ids (WebRTC peers and local publishers).
    pub sessions: usize,
    /// Source addresses routed to a session.
    pub addrs: usize,
    /// ICE ufrags routed to a session.
    pub ufrags: usize,
}
