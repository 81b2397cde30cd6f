//! Who may be relayed to, and how much each credential may take: what the sans-IO
//! server has no hook for, shared by every listener of the process.
//!
//! Relay targets follow the credential's scope (`skylark_auth::TurnScope`): an SFU
//! session's reach the SFU nodes' announced addresses; a p2p room's participant the
//! addresses the other side of its room announced (`skylark_bus::peers`, read through a
//! short cache), if public, allow-listed or this server's; an unscoped credential
//! what [`Unscoped`] says.

use ipnet::IpNet;
use skylark_auth::{P2pSide, TurnScope};
use skylark_bus::peers::RoomAddrs;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Caps of one TURN server process.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Allocations at once, all credentials together.
    pub allocations: usize,
    /// Allocations at once per credential (TURN username).
    pub per_user: usize,
    /// Bytes per second all allocations of one credential relay together, both ways
    /// (UDP and TCP relays); past it UDP packets are dropped and TCP relays wait.
    pub bytes_per_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            allocations: 1000,
            per_user: 4,
            // 25 Mbit/s: a p2p studio's top tier (4.5 Mbit/s) to the 4 viewers it
            // suits, with audio and RTCP, through one credential.
            bytes_per_s: 3_125_000,
        }
    }
}

/// What a credential without a scope (an `expiry:id` of older signaling or an
/// operator's own tooling) may relay to: `SKYLARK_TURN_UNSCOPED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unscoped {
    /// The SFU nodes only, as an SFU session's credential.
    #[default]
    Sfu,
    /// Any public address, the allow-list, the SFU nodes and this server's allocations
    /// (an open relay within those: for tooling that needs it, with a short TTL).
    Public,
}

impl std::str::FromStr for Unscoped {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "sfu" | "" => Ok(Self::Sfu),
            "public" => Ok(Self::Public),
            other => {
                anyhow::bail!("SKYLARK_TURN_UNSCOPED: {other:?} is neither `sfu` nor `public`")
            }
        }
    }
}

/// What one credential may reach, from its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The SFU nodes' announced addresses.
    Sfu,
    /// The addresses the other side of a p2p room announced: `side`'s.
    Room { room: String, side: P2pSide },
    /// Public addresses, the allow-list, SFU nodes, this server's allocations.
    Open,
}

/// A credential's reach and how its scope is named in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scoped {
    pub(crate) reach: Reach,
    /// `sfu`, `p2p` or `unscoped`: the `scope` label.
    pub(crate) label: &'static str,
}

/// A relay target being decided.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// CreatePermission (permissions are per IP).
    Ip(IpAddr),
    /// ChannelBind, Send.
    Udp(SocketAddr),
    /// Connect (RFC 6062).
    Tcp(SocketAddr),
}

impl Target {
    fn ip(self) -> IpAddr {
        match self {
            Target::Ip(ip) => ip,
            Target::Udp(a) | Target::Tcp(a) => a.ip(),
        }
    }
}

/// Why a relay target was refused (the `reason` label of
/// `skylark_turn_peers_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    /// An SFU-scoped (or unscoped) credential, a target that is no SFU node's address.
    NotSfu,
    /// A p2p credential, an address the other side of its room did not announce.
    NotRoomPeer,
    /// Loopback, private, link-local… and not allow-listed nor this server's.
    Private,
    /// Too many peer connections or lookups waiting.
    Backlog,
}

impl PeerRefusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            PeerRefusal::NotSfu => "not_sfu",
            PeerRefusal::NotRoomPeer => "not_room_peer",
            PeerRefusal::Private => "private",
            PeerRefusal::Backlog => "backlog",
        }
    }
}

/// A relay target's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Refuse(PeerRefusal),
    /// Read the room's announced addresses from the bus once `after` has passed (reads
    /// of one room are spaced [`ROOM_REREAD_AFTER`] apart), then decide again.
    Lookup(String, Duration),
}

/// How long a room's addresses read from the bus are trusted for an address they hold.
const ROOM_CACHE_TTL: Duration = Duration::from_secs(10);
/// An address a room's copy lacks is looked up again once the copy is this old (the
/// request waits until then): at most a few bus reads per room and second, whatever
/// clients ask, and no refusal of a candidate announced just after the last read.
const ROOM_REREAD_AFTER: Duration = Duration::from_millis(300);
/// Rooms whose addresses are cached at once.
const MAX_ROOMS_CACHED: usize = 4096;

/// A room's announced addresses as last read, and when.
#[derive(Debug)]
struct RoomPeers {
    addrs: RoomAddrs,
    at: Instant,
}

/// Why an allocation was refused (the `reason` label of
/// `skylark_turn_allocations_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UserCap,
    TotalCap,
    Family,
    Transport,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::UserCap => "per_credential_cap",
            Refusal::TotalCap => "total_cap",
            Refusal::Family => "address_family",
            Refusal::Transport => "transport",
        }
    }
}

/// A token bucket of one credential, one second deep.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One allocation: whose, what it may reach, and whether its relayed address is TCP
/// (RFC 6062).
#[derive(Debug)]
struct Held {
    user: String,
    scoped: Scoped,
    tcp: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Relayed address → who holds it (the shell keeps UDP and TCP ports apart).
    relays: HashMap<SocketAddr, Held>,
    /// The bandwidth budget of each TURN username holding a relay, from its first
    /// relayed byte until its last relay goes.
    budgets: HashMap<String, Bucket>,
    /// The SFU nodes' addresses, as the node registry last listed them.
    sfu: SfuAddrs,
    /// p2p rooms' announced addresses, as last read from the bus.
    rooms: HashMap<String, RoomPeers>,
}

/// The addresses SFU nodes announce in the node registry: exactly these are relay
/// targets on the nodes' (private) IPs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SfuAddrs {
    /// Media (UDP): ChannelBind and Send.
    pub(crate) udp: HashSet<SocketAddr>,
    /// ICE-TCP (RFC 6544): Connect of TCP relays (RFC 6062).
    pub(crate) tcp: HashSet<SocketAddr>,
}

impl SfuAddrs {
    /// From the registry's records: each node's media and ICE-TCP address, where it
    /// announces one that parses.
    pub(crate) fn of(nodes: &[skylark_bus::NodeInfo]) -> SfuAddrs {
        let parse = |a: &str| a.parse::<SocketAddr>().ok();
        SfuAddrs {
            udp: nodes.iter().filter_map(|n| parse(&n.media_addr)).collect(),
            tcp: nodes
                .iter()
                .filter_map(|n| parse(&n.ice_tcp_addr))
                .collect(),
        }
    }

    fn has_ip(&self, ip: IpAddr) -> bool {
        self.udp.iter().chain(&self.tcp).any(|a| a.ip() == ip)
    }
}

/// Shared by every listener: allocations held, SFU addresses, the allow-list.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) limits: Limits,
    allow: Vec<IpNet>,
    /// This server's relay IPs (one per address family).
    relay_ips: Vec<IpAddr>,
    unscoped: Unscoped,
    state: Mutex<State>,
}

impl Policy {
    pub(crate) fn new(
        limits: Limits,
        allow: Vec<IpNet>,
        relay_ips: Vec<IpAddr>,
        unscoped: Unscoped,
    ) -> Self {
        Self {
            limits,
            allow,
            relay_ips,
            unscoped,
            state: Mutex::default(),
        }
    }

    /// What a credential of `scope` may reach.
    pub(crate) fn scoped(&self, scope: TurnScope) -> Scoped {
        match scope {
            TurnScope::Sfu { .. } => Scoped {
                reach: Reach::Sfu,
                label: "sfu",
            },
            TurnScope::P2p { room, side, .. } => Scoped {
                reach: Reach::Room {
                    room,
                    side: side.other(),
                },
                label: "p2p",
            },
            TurnScope::Unscoped { .. } => Scoped {
                reach: match self.unscoped {
                    Unscoped::Sfu => Reach::Sfu,
                    Unscoped::Public => Reach::Open,
                },
                label: "unscoped",
            },
        }
    }

    /// What `username` may reach; a malformed one (never authenticated) the SFU nodes
    /// at most.
    pub(crate) fn scope_of(&self, username: &str) -> Scoped {
        match TurnScope::of_username(username) {
            Ok((_, scope)) => self.scoped(scope),
            Err(_) => Scoped {
                reach: Reach::Sfu,
                label: "unscoped",
            },
        }
    }

    /// Whether a credential reaching `reach` may relay to `target` (a request's peer).
    /// A p2p room's address its cached copy lacks (or holds in a copy past
    /// [`ROOM_CACHE_TTL`]) is [`Verdict::Lookup`] unless `looked_up` (the copy was just
    /// read).
    pub(crate) fn decide(
        &self,
        reach: &Reach,
        target: Target,
        looked_up: bool,
        now: Instant,
    ) -> Verdict {
        let refuse = Verdict::Refuse;
        match reach {
            Reach::Open if self.open(target) => Verdict::Allow,
            Reach::Open => refuse(PeerRefusal::Private),
            Reach::Sfu if self.is_sfu(target) => Verdict::Allow,
            Reach::Sfu => refuse(PeerRefusal::NotSfu),
            Reach::Room { .. } if !self.open(target) => refuse(PeerRefusal::Private),
            Reach::Room { room, side } => {
                let st = self.state();
                let cached = st.rooms.get(room);
                let age = cached.map(|c| now.saturating_duration_since(c.at));
                let holds =
                    cached.is_some_and(|c| c.addrs.announced_by(*side).contains(&target.ip()));
                if holds && (looked_up || age.is_some_and(|a| a < ROOM_CACHE_TTL)) {
                    Verdict::Allow
                } else if looked_up {
                    refuse(PeerRefusal::NotRoomPeer)
                } else {
                    let after = age.map_or(Duration::ZERO, |a| ROOM_REREAD_AFTER.saturating_sub(a));
                    Verdict::Lookup(room.clone(), after)
                }
            }
        }
    }

    /// Keeps `addrs`, `room`'s announced addresses read at `now`.
    pub(crate) fn cache_room(&self, room: String, addrs: RoomAddrs, now: Instant) {
        let mut st = self.state();
        if st.rooms.len() >= MAX_ROOMS_CACHED && !st.rooms.contains_key(&room) {
            st.rooms
                .retain(|_, c| now.saturating_duration_since(c.at) < ROOM_CACHE_TTL);
            if st.rooms.len() >= MAX_ROOMS_CACHED {
                let oldest = st
                    .rooms
                    .iter()
                    .min_by_key(|(_, c)| c.at)
                    .map(|(r, _)| r.clone());
                if let Some(r) = oldest {
                    st.rooms.remove(&r);
                }
            }
        }
        st.rooms.insert(room, RoomPeers { addrs, at: now });
    }

    /// Whether data of the allocation at `relay` may go to `to`: the last word before a
    /// datagram leaves (a p2p room's peer was checked when its permission was made);
    /// else the credential's scope label and why not.
    pub(crate) fn may_send(
        &self,
        relay: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), (&'static str, PeerRefusal)> {
        let (sfu_only, label) = match self.state().relays.get(&relay) {
            Some(h) => (h.scoped.reach == Reach::Sfu, h.scoped.label),
            None => return Err(("unscoped", PeerRefusal::Private)),
        };
        if sfu_only {
            if self.is_sfu(Target::Udp(to)) {
                return Ok(());
            }
            return Err((label, PeerRefusal::NotSfu));
        }
        if self.open(Target::Udp(to)) || self.open(Target::Ip(to.ip())) {
            return Ok(());
        }
        Err((label, PeerRefusal::Private))
    }

    fn is_sfu(&self, target: Target) -> bool {
        let st = self.state();
        match target {
            Target::Ip(ip) => st.sfu.has_ip(ip),
            Target::Udp(a) => st.sfu.udp.contains(&a),
            Target::Tcp(a) => st.sfu.tcp.contains(&a),
        }
    }

    fn open(&self, target: Target) -> bool {
        match target {
            Target::Ip(ip) => self.permits_ip(ip),
            Target::Udp(a) => self.permits_addr(a),
            Target::Tcp(a) => self.permits_tcp(a),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it leaves plain counters: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The SFU nodes' addresses now; whether they changed.
    pub(crate) fn set_sfu_addrs(&self, addrs: SfuAddrs) -> bool {
        let mut st = self.state();
        let changed = st.sfu != addrs;
        st.sfu = addrs;
        changed
    }

    /// Whether a CreatePermission for `ip` (no port: permissions are per IP) is open:
    /// public addresses, the allow-list, SFU nodes, and this server's relay IPs (other
    /// allocations; ChannelBind and Send then check the port).
    fn permits_ip(&self, ip: IpAddr) -> bool {
        is_public(ip)
            || self.relay_ips.contains(&ip)
            || self.allow.iter().any(|n| n.contains(&ip))
            || self.state().sfu.has_ip(ip)
    }

    /// Whether data may go to `addr` (ChannelBind, Send): public addresses, the
    /// allow-list, an SFU node's media address, or another allocation of this server.
    fn permits_addr(&self, addr: SocketAddr) -> bool {
        if is_public(addr.ip()) || self.allow.iter().any(|n| n.contains(&addr.ip())) {
            return true;
        }
        let st = self.state();
        st.sfu.udp.contains(&addr) || st.relays.get(&addr).is_some_and(|h| !h.tcp)
    }

    /// Whether a TCP connection may go to `addr` (Connect, RFC 6062): public addresses,
    /// the allow-list, an SFU node's ICE-TCP address, or a TCP allocation of this server.
    fn permits_tcp(&self, addr: SocketAddr) -> bool {
        if is_public(addr.ip()) || self.allow.iter().any(|n| n.contains(&addr.ip())) {
            return true;
        }
        let st = self.state();
        st.sfu.tcp.contains(&addr) || st.relays.get(&addr).is_some_and(|h| h.tcp)
    }

    /// Whether `user` may take one more allocation.
    pub(crate) fn may_allocate(&self, user: &str) -> Result<(), Refusal> {
        let st = self.state();
        if st.relays.len() >= self.limits.allocations {
            return Err(Refusal::TotalCap);
        }
        if st.relays.values().filter(|h| h.user == user).count() >= self.limits.per_user {
            return Err(Refusal::UserCap);
        }
        Ok(())
    }

    /// Counts an allocation `user` got at `relay`.
    pub(crate) fn allocated(&self, relay: SocketAddr, user: &str, tcp: bool) -> usize {
        let scoped = self.scope_of(user);
        let mut st = self.state();
        let user = user.to_string();
        st.relays.insert(relay, Held { user, scoped, tcp });
        st.relays.len()
    }

    /// Forgets the allocation at `relay`; the allocations left.
    pub(crate) fn released(&self, relay: SocketAddr) -> usize {
        let mut st = self.state();
        if let Some(held) = st.relays.remove(&relay) {
            if !st.relays.values().any(|h| h.user == held.user) {
                st.budgets.remove(&held.user);
            }
        }
        st.relays.len()
    }

    /// Takes `bytes` from the budget of `relay`'s credential; `false`: over its rate
    /// (or no longer allocated), drop the packet.
    pub(crate) fn spend(&self, relay: SocketAddr, bytes: usize, now: Instant) -> bool {
        self.bucket(relay, now, |tokens| {
            if *tokens < bytes as f64 {
                return false;
            }
            *tokens -= bytes as f64;
            true
        })
        .unwrap_or(false)
    }

    /// Takes `bytes` from the budget of `relay`'s credential even past it; how long to
    /// wait before sending them (a TCP relay slows down where UDP drops). An allocation
    /// gone meanwhile waits for nothing: its relaying is ending.
    pub(crate) fn debit(&self, relay: SocketAddr, bytes: usize, now: Instant) -> Duration {
        let rate = self.limits.bytes_per_s.max(1) as f64;
        self.bucket(relay, now, |tokens| {
            *tokens -= bytes as f64;
            Duration::from_secs_f64((-*tokens / rate).max(0.0))
        })
        .unwrap_or(Duration::ZERO)
    }

    /// The bucket of `relay`'s credential refilled to `now`, handed to `f`; `None` when
    /// `relay` is not allocated.
    fn bucket<T>(
        &self,
        relay: SocketAddr,
        now: Instant,
        f: impl FnOnce(&mut f64) -> T,
    ) -> Option<T> {
        let rate = self.limits.bytes_per_s as f64;
        let mut guard = self.state();
        let st = &mut *guard;
        let user = &st.relays.get(&relay)?.user;
        if !st.budgets.contains_key(user) {
            // Once per credential, not per packet: the username copied at its first byte.
            let full = Bucket {
                tokens: rate,
                at: now,
            };
            st.budgets.insert(user.clone(), full);
        }
        let b = st.budgets.get_mut(user)?;
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        Some(f(&mut b.tokens))
    }
}

/// Not loopback, private, link-local, shared (CGNAT), multicast or otherwise special.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylark_bus::NodeInfo;

    fn policy() -> Policy {
        Policy::new(
            Limits {
                allocations: 3,
                per_user: 2,
                bytes_per_s: 1000,
            },
            vec!["10.9.0.0/16".parse().unwrap()],
            vec!["127.0.0.1".parse().unwrap()],
            Unscoped::Public,
        )
    }

    /// The registry's SFU records: (media, ICE-TCP) each, "" for none.
    fn sfu_nodes(addrs: &[(&str, &str)]) -> SfuAddrs {
        let nodes: Vec<NodeInfo> = addrs
            .iter()
            .map(|(udp, tcp)| NodeInfo {
                media_addr: (*udp).into(),
                ice_tcp_addr: (*tcp).into(),
                ..NodeInfo::default()
            })
            .collect();
        SfuAddrs::of(&nodes)
    }

    #[test]
    fn private_peers_are_refused_unless_listed() {
        let p = policy();
        for ip in [
            "127.0.0.2",
            "10.0.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a00:1450::1", "10.9.3.4", "127.0.0.1"] {
            assert!(p.permits_ip(ip.parse().unwrap()), "{ip}");
        }
        // The relay IP admits only this server's allocations and SFU nodes, by port.
        let sfu: SocketAddr = "127.0.0.1:7882".parse().unwrap();
        assert!(!p.permits_addr(sfu));
        p.set_sfu_addrs(sfu_nodes(&[("127.0.0.1:7882", "")]));
        assert!(p.permits_addr(sfu));
        let relay: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert!(!p.permits_addr(relay));
        p.allocated(relay, "u", false);
        assert!(p.permits_addr(relay));
        p.released(relay);
        assert!(!p.permits_addr(relay));
    }

    #[test]
    fn ipv6_peers_follow_the_same_rules() {
        let p = Policy::new(
            Limits::default(),
            Vec::new(),
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            Unscoped::Public,
        );
        for ip in ["fe80::1", "fd12::1", "::ffff:127.0.0.2", "ff02::1"] {
            assert!(!p.permits_ip(ip.parse().unwrap()), "{ip}");
        }
        // ::1 is a relay IP of ours: by port, only its allocations.
        let relay: SocketAddr = "[::1]:50000".parse().unwrap();
        assert!(p.permits_ip(relay.ip()));
        assert!(!p.permits_addr(relay));
        p.allocated(relay, "u", false);
        assert!(p.permits_addr(relay));
        assert!(p.permits_addr("[2a00:1450::1]:9".parse().unwrap()));
    }

    #[test]
    fn tcp_targets_are_sfu_ice_tcp_addresses_listed_peers_and_our_tcp_relays() {
        let p = policy();
        p.set_sfu_addrs(sfu_nodes(&[("10.1.0.5:7882", "10.1.0.5:7881")]));
        assert!(p.permits_tcp("10.1.0.5:7881".parse().unwrap()), "ICE-TCP");
        assert!(!p.permits_tcp("10.1.0.5:22".parse().unwrap()));
        assert!(!p.permits_tcp("10.1.0.5:7882".parse().unwrap()), "UDP port");
        assert!(
            !p.permits_addr("10.1.0.5:7881".parse().unwrap()),
            "TCP port"
        );
        assert!(
            p.permits_tcp("10.9.1.1:80".parse().unwrap()),
            "allow-listed"
        );
        assert!(!p.permits_tcp("127.0.0.1:6379".parse().unwrap()));
        let (udp, tcp): (SocketAddr, SocketAddr) = (
            "127.0.0.1:50001".parse().unwrap(),
            "127.0.0.1:50002".parse().unwrap(),
        );
        p.allocated(udp, "u", false);
        p.allocated(tcp, "u", true);
        assert!(!p.permits_tcp(udp) && p.permits_tcp(tcp));
        assert!(p.permits_addr(udp) && !p.permits_addr(tcp));
    }

    /// Nodes need not share one ICE-TCP port: each node's own announced address is a
    /// target, another port on its host is not; a node announcing none (off, or a
    /// record from before the field) is reached over UDP only.
    #[test]
    fn each_sfu_nodes_announced_ice_tcp_address_and_no_other() {
        let p = policy();
        p.set_sfu_addrs(sfu_nodes(&[
            ("10.1.0.5:7882", "10.1.0.5:7881"),
            ("10.1.0.5:17882", "10.1.0.5:17881"),
            ("10.1.0.6:7882", ""),
        ]));
        for a in ["10.1.0.5:7881", "10.1.0.5:17881"] {
            assert!(p.permits_tcp(a.parse().unwrap()), "{a}");
        }
        for a in ["10.1.0.5:7883", "10.1.0.5:17882", "10.1.0.6:7881"] {
            assert!(!p.permits_tcp(a.parse().unwrap()), "{a}");
        }
        assert!(p.permits_addr("10.1.0.6:7882".parse().unwrap()));
        // A node gone from the registry is no target any more.
        assert!(p.set_sfu_addrs(sfu_nodes(&[("10.1.0.5:7882", "10.1.0.5:7881")])));
        assert!(!p.permits_tcp("10.1.0.5:17881".parse().unwrap()));
        assert!(!p.set_sfu_addrs(sfu_nodes(&[("10.1.0.5:7882", "10.1.0.5:7881")])));
    }

    fn scope(s: &str) -> Reach {
        let p = policy();
        p.scope_of(&format!("1:{s}")).reach
    }

    #[test]
    fn scopes_map_to_what_they_reach() {
        assert_eq!(scope("sfu:s1"), Reach::Sfu);
        let room_1 = |side| Reach::Room {
            room: "room_1".into(),
            side,
        };
        assert_eq!(scope("p2p:room_1:c1:v"), room_1(P2pSide::Broadcaster));
        assert_eq!(scope("p2p:room_1:c1:b"), room_1(P2pSide::Viewer));
        assert_eq!(scope("legacy"), Reach::Open, "policy() keeps unscoped open");
        let strict = Policy::new(Limits::default(), Vec::new(), Vec::new(), Unscoped::Sfu);
        assert_eq!(strict.scope_of("1:legacy").reach, Reach::Sfu);
        assert_eq!(strict.scope_of("1:legacy").label, "unscoped");
        assert_eq!(strict.scope_of("1:p2p:bad").reach, Reach::Sfu, "malformed");
        assert_eq!(strict.scope_of("1:p2p:r:c").reach, Reach::Sfu, "no side");
        assert_eq!("public".parse::<Unscoped>().unwrap(), Unscoped::Public);
        assert_eq!("sfu".parse::<Unscoped>().unwrap(), Unscoped::Sfu);
        assert!("open".parse::<Unscoped>().is_err());
    }

    /// An SFU session reaches the SFU nodes' announced addresses and nothing else, not
    /// even a public or allow-listed one.
    #[test]
    fn an_sfu_scope_reaches_the_sfu_nodes_only() {
        let p = policy();
        p.set_sfu_addrs(sfu_nodes(&[("10.1.0.5:7882", "10.1.0.5:7881")]));
        let now = Instant::now();
        let d = |t| p.decide(&Reach::Sfu, t, false, now);
        let ip = |s: &str| Target::Ip(s.parse().unwrap());
        let udp = |s: &str| Target::Udp(s.parse().unwrap());
        let tcp = |s: &str| Target::Tcp(s.parse().unwrap());
        assert_eq!(d(ip("10.1.0.5")), Verdict::Allow);
        assert_eq!(d(udp("10.1.0.5:7882")), Verdict::Allow);
        assert_eq!(d(tcp("10.1.0.5:7881")), Verdict::Allow);
        for t in [
            ip("8.8.8.8"),
            ip("10.9.1.1"),
            ip("127.0.0.1"),
            udp("10.1.0.5:7881"),
            udp("8.8.8.8:53"),
            tcp("10.1.0.5:7882"),
        ] {
            assert_eq!(d(t), Verdict::Refuse(PeerRefusal::NotSfu), "{t:?}");
        }
        // Open reach: the policy before scopes.
        assert_eq!(
            p.decide(&Reach::Open, ip("8.8.8.8"), false, now),
            Verdict::Allow
        );
        assert_eq!(
            p.decide(&Reach::Open, ip("10.0.0.1"), false, now),
            Verdict::Refuse(PeerRefusal::Private)
        );
    }

    /// A p2p room's participant reaches the addresses the other side of its room
    /// announced (public, allow-listed or this server's relays), read from the bus on a
    /// miss and cached; never one its own side announced.
    #[test]
    fn a_p2p_scope_reaches_its_rooms_announced_addresses() {
        let p = policy();
        let viewer_of = |room: &str| Reach::Room {
            room: room.into(),
            side: P2pSide::Broadcaster,
        };
        let room = viewer_of("r1");
        let t0 = Instant::now();
        let ip = |s: &str| Target::Ip(s.parse().unwrap());
        let peer = ip("93.184.216.34");
        // Nothing cached: read the room first, at once.
        assert_eq!(
            p.decide(&room, peer, false, t0),
            Verdict::Lookup("r1".into(), Duration::ZERO)
        );
        // Read and holding it: allowed; another room's copy does not count.
        let announced = ["93.184.216.34", "10.9.0.3", "127.0.0.1", "10.0.0.8"];
        let addrs = RoomAddrs {
            broadcaster: announced.iter().map(|s| s.parse().unwrap()).collect(),
            viewers: HashSet::from(["93.184.216.77".parse().unwrap()]),
        };
        p.cache_room("r1".into(), addrs, t0);
        assert_eq!(p.decide(&room, peer, true, t0), Verdict::Allow);
        assert_eq!(p.decide(&room, peer, false, t0), Verdict::Allow);
        // A viewer's own side's address (one it could have announced itself): no; the
        // broadcaster reaches it.
        let viewers_ip = ip("93.184.216.77");
        assert_eq!(
            p.decide(&room, viewers_ip, true, t0),
            Verdict::Refuse(PeerRefusal::NotRoomPeer)
        );
        let broadcaster = Reach::Room {
            room: "r1".into(),
            side: P2pSide::Viewer,
        };
        assert_eq!(
            p.decide(&broadcaster, viewers_ip, false, t0),
            Verdict::Allow
        );
        assert_eq!(
            p.decide(&broadcaster, peer, true, t0),
            Verdict::Refuse(PeerRefusal::NotRoomPeer)
        );
        let other = viewer_of("r2");
        assert_eq!(
            p.decide(&other, peer, false, t0),
            Verdict::Lookup("r2".into(), Duration::ZERO)
        );
        p.cache_room("r2".into(), RoomAddrs::default(), t0);
        assert_eq!(
            p.decide(&other, peer, true, t0),
            Verdict::Refuse(PeerRefusal::NotRoomPeer)
        );
        // Allow-listed and relay IPs announced: allowed; a private one announced: not.
        assert_eq!(p.decide(&room, ip("10.9.0.3"), false, t0), Verdict::Allow);
        assert_eq!(p.decide(&room, ip("127.0.0.1"), false, t0), Verdict::Allow);
        assert_eq!(
            p.decide(&room, ip("10.0.0.8"), false, t0),
            Verdict::Refuse(PeerRefusal::Private)
        );
        // A public address not announced: read again (it may have been announced just
        // after the last read), no sooner than ROOM_REREAD_AFTER after it; refused once
        // read.
        let unknown = ip("1.1.1.1");
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(
            p.decide(&room, unknown, false, soon),
            Verdict::Lookup("r1".into(), ROOM_REREAD_AFTER - Duration::from_millis(100))
        );
        let later = t0 + ROOM_REREAD_AFTER;
        assert_eq!(
            p.decide(&room, unknown, false, later),
            Verdict::Lookup("r1".into(), Duration::ZERO)
        );
        assert_eq!(
            p.decide(&room, unknown, true, later),
            Verdict::Refuse(PeerRefusal::NotRoomPeer)
        );
        // An old copy is read again even for an address it holds.
        let stale = t0 + ROOM_CACHE_TTL;
        assert_eq!(
            p.decide(&room, peer, false, stale),
            Verdict::Lookup("r1".into(), Duration::ZERO)
        );
        // By port: a relay IP's other ports are not ours.
        let sock = Target::Udp("127.0.0.1:50000".parse().unwrap());
        assert_eq!(
            p.decide(&room, sock, false, t0),
            Verdict::Refuse(PeerRefusal::Private)
        );
        p.allocated("127.0.0.1:50000".parse().unwrap(), "1:p2p:r1:c2:b", false);
        assert_eq!(p.decide(&room, sock, false, t0), Verdict::Allow);
    }

    #[test]
    fn the_room_cache_stays_bounded() {
        let p = policy();
        let t0 = Instant::now();
        for i in 0..MAX_ROOMS_CACHED + 10 {
            p.cache_room(
                format!("r{i}"),
                RoomAddrs::default(),
                t0 + Duration::from_millis(i as u64),
            );
        }
        let st = p.state();
        assert_eq!(st.rooms.len(), MAX_ROOMS_CACHED);
        assert!(!st.rooms.contains_key("r0"), "the oldest went first");
    }

    /// Each datagram's last check follows its allocation's scope.
    #[test]
    fn datagrams_follow_their_allocations_scope() {
        let p = policy();
        p.set_sfu_addrs(sfu_nodes(&[("10.1.0.5:7882", "")]));
        let (sfu, p2p, open): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        );
        p.allocated(sfu, "1:sfu:s", false);
        p.allocated(p2p, "1:p2p:r:c:v", false);
        p.allocated(open, "1:legacy", false);
        let (node, public) = (
            "10.1.0.5:7882".parse().unwrap(),
            "8.8.8.8:53".parse().unwrap(),
        );
        assert_eq!(p.may_send(sfu, node), Ok(()));
        assert_eq!(p.may_send(sfu, public), Err(("sfu", PeerRefusal::NotSfu)));
        assert_eq!(p.may_send(p2p, public), Ok(()));
        let private = "10.0.0.1:9".parse().unwrap();
        assert_eq!(p.may_send(p2p, private), Err(("p2p", PeerRefusal::Private)));
        assert_eq!(p.may_send(open, public), Ok(()));
        assert!(
            p.may_send("127.0.0.1:4".parse().unwrap(), public).is_err(),
            "no allocation"
        );
    }

    #[test]
    fn caps_per_credential_and_in_total() {
        let p = policy();
        p.allocated("127.0.0.1:1".parse().unwrap(), "a", false);
        p.allocated("127.0.0.1:2".parse().unwrap(), "a", true);
        assert_eq!(p.may_allocate("a"), Err(Refusal::UserCap));
        assert_eq!(p.may_allocate("b"), Ok(()));
        p.allocated("127.0.0.1:3".parse().unwrap(), "b", false);
        assert_eq!(p.may_allocate("c"), Err(Refusal::TotalCap));
        p.released("127.0.0.1:1".parse().unwrap());
        assert_eq!(p.may_allocate("a"), Ok(()));
    }

    #[test]
    fn bandwidth_past_the_rate_is_dropped() {
        let p = policy();
        let r: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        assert!(!p.spend(r, 1, t0), "not allocated");
        p.allocated(r, "u", false);
        assert!(p.spend(r, 600, t0));
        assert!(!p.spend(r, 600, t0));
        assert!(p.spend(r, 600, t0 + Duration::from_millis(300)));
    }

    #[test]
    fn tcp_past_the_rate_waits_for_it() {
        let p = policy();
        let r: SocketAddr = "127.0.0.1:9".parse().unwrap();
        p.allocated(r, "u", true);
        let t0 = Instant::now();
        assert_eq!(p.debit(r, 1000, t0), Duration::ZERO);
        assert_eq!(p.debit(r, 500, t0), Duration::from_millis(500));
        assert_eq!(p.debit(r, 500, t0), Duration::from_secs(1));
    }

    /// One budget per credential: its UDP and TCP relays draw on it together, another
    /// credential has its own, and it starts afresh only once all its relays are gone.
    #[test]
    fn a_credentials_relays_share_one_budget() {
        let p = policy();
        let (udp, tcp, other): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        );
        p.allocated(udp, "a", false);
        p.allocated(tcp, "a", true);
        p.allocated(other, "b", false);
        let t0 = Instant::now();
        assert!(p.spend(udp, 500, t0));
        assert_eq!(p.debit(tcp, 1000, t0), Duration::from_millis(500));
        assert!(!p.spend(udp, 1, t0), "the TCP relay took the rest");
        assert!(
            p.spend(other, 1000, t0),
            "another credential's budget is whole"
        );
        // a's budget outlives one of its relays: 200 bytes refilled after 700 ms.
        p.released(tcp);
        let t1 = t0 + Duration::from_millis(700);
        assert!(p.spend(udp, 200, t1));
        assert!(!p.spend(udp, 1, t1));
    }
}
