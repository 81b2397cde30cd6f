//! The I/O shell of one listener: owns a sans-IO `TurnServer`, the relayed sockets it
//! asks for (UDP, and TCP listeners for RFC 6062 allocations), the client connections
//! (TCP, TLS) and its timers. One task per listener; readers feed it events, it alone
//! touches the server.

use crate::policy::{PeerRefusal, Policy, Refusal, Scoped, Target, Verdict};
use crate::tcp::{self, Relayed, Splice};
use skylark_auth::TurnSecret;
use skylark_bus::AnyBus;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::stun::types::attribute::AttributeStaticType;
use turn_server_proto::stun::types::attribute::{ErrorCode, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};
use turn_server_proto::stun::types::TransportType;
use turn_server_proto::types::attribute::{AdditionalAddressFamily, ConnectionId, XorPeerAddress};
use turn_server_proto::types::message::{
    ALLOCATE, CHANNEL_BIND, CONNECT, CONNECTION_ATTEMPT, CONNECTION_BIND, CREATE_PERMISSION, SEND,
};
use turn_server_proto::types::{AddressFamily, Instant as SansInstant};

/// Largest datagram read (UDP: one MTU's worth and then some).
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Events queued to one shell before readers wait.
const EVENTS: usize = 1024;
/// The server's tables (credentials, nonces and clients) only grow (no `remove_user`):
/// when its credential table holds this many, new clients go to a fresh server (a new
/// generation) and the old one serves its allocations until they end.
const MAX_USERS: usize = 10_000;
/// Generations at once; past it the oldest is dropped, its allocations ended (their
/// clients allocate again). Bounds the tables to this many times [`MAX_USERS`].
const MAX_GENERATIONS: usize = 4;
/// How long a peer connection waits for the client's ConnectionBind (RFC 6062 §5.3).
const BIND_WAIT: Duration = Duration::from_secs(30);
/// Peer connections of one TCP allocation being opened or waiting for a
/// ConnectionBind; past it Connect gets 508 and peers connecting are closed.
const MAX_UNBOUND: usize = 8;
/// How long a permission lasts (RFC 8656 §9), less a margin: the shell's copy must not
/// outlive the server's.
const PERMISSION: Duration = Duration::from_secs(290);
/// Requests held while their p2p room's announced addresses are read, all rooms
/// together; past it they are refused.
const MAX_WAITING: usize = 256;
/// How long reading a room's announced addresses may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What readers tell the shell.
#[derive(Debug)]
pub(crate) enum Event {
    /// A datagram on the UDP listener, or one framed STUN/ChannelData message of a
    /// stream client.
    Client {
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// A datagram from a peer to a relayed address.
    Peer {
        relay: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// A stream client connected: where its frames go.
    Opened {
        from: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Closed {
        from: SocketAddr,
    },
    /// A p2p room's announced addresses as read from the bus (`None`: unavailable):
    /// the requests waiting for them are decided now.
    Looked {
        room: String,
        ips: Option<skylark_bus::peers::RoomAddrs>,
    },
    /// A ConnectionBind, the first frame of a stream connection (RFC 6062): once it is
    /// bound the peer connection goes through `splice`, and relaying begins.
    Bind {
        from: SocketAddr,
        data: Vec<u8>,
        splice: oneshot::Sender<Splice>,
    },
    /// A peer connected to a TCP relayed address.
    PeerAccepted {
        relay: SocketAddr,
        peer: SocketAddr,
        stream: TcpStream,
    },
    /// How the connection the shell opened for a Connect request went.
    PeerConnected {
        relay: SocketAddr,
        peer: SocketAddr,
        result: Result<TcpStream, TcpConnectError>,
    },
}

/// How the shell answers clients.
pub(crate) enum Clients {
    Udp(Arc<UdpSocket>),
    /// TCP or TLS: one queue per connection.
    Stream(HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>),
}

enum RelaySocket {
    Udp(Arc<UdpSocket>),
    /// RFC 6062: the address its listener is bound on (connections to peers too).
    Tcp(SocketAddr),
}

struct Relay {
    socket: RelaySocket,
    stop: CancellationToken,
    /// The generation that allocated it, and for whom.
    generation: u64,
    client: SocketAddr,
    user: String,
}

/// A Connect request held while the shell opens its peer connection: the crate (0.7.3)
/// times a Connect out at the first poll after asking for the connection, so the
/// server sees the request only once the connection is open and is answered at once.
struct Connecting {
    client: SocketAddr,
    request: Vec<u8>,
    txn: TransactionId,
    user: String,
    generation: u64,
    creds: MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
    result: Option<Result<TcpStream, TcpConnectError>>,
}

/// A peer connection waiting for the client's ConnectionBind.
struct Unbound {
    id: u32,
    user: String,
    generation: u64,
    relay: SocketAddr,
    peer: SocketAddr,
    stream: TcpStream,
    until: Instant,
}

/// The relayed addresses, also by client. Only `insert` and `remove` change them, so
/// the index cannot drift; what each generation and client holds is derived from them.
#[derive(Default)]
struct Relays {
    by_addr: HashMap<SocketAddr, Relay>,
    by_client: HashMap<SocketAddr, Vec<SocketAddr>>,
}

impl Relays {
    fn insert(&mut self, addr: SocketAddr, relay: Relay) {
        self.by_client.entry(relay.client).or_default().push(addr);
        self.by_addr.insert(addr, relay);
    }

    fn remove(&mut self, addr: SocketAddr) -> Option<Relay> {
        let relay = self.by_addr.remove(&addr)?;
        if let Some(mine) = self.by_client.get_mut(&relay.client) {
            mine.retain(|a| *a != addr);
            if mine.is_empty() {
                self.by_client.remove(&relay.client);
            }
        }
        Some(relay)
    }

    fn get(&self, addr: &SocketAddr) -> Option<&Relay> {
        self.by_addr.get(addr)
    }

    /// The generation holding `client`'s allocations (all in one: a client with one
    /// goes to its generation for the next).
    fn generation_of(&self, client: SocketAddr) -> Option<u64> {
        let first = self.by_client.get(&client)?.first()?;
        self.by_addr.get(first).map(|r| r.generation)
    }

    fn of_client(&self, client: SocketAddr) -> Vec<SocketAddr> {
        self.by_client.get(&client).cloned().unwrap_or_default()
    }

    fn in_generation(&self, id: u64) -> Vec<SocketAddr> {
        self.by_addr
            .iter()
            .filter(|(_, r)| r.generation == id)
            .map(|(a, _)| *a)
            .collect()
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// `client`'s TCP relayed addresses and the addresses their sockets bind.
    fn tcp_of(&self, client: SocketAddr) -> Vec<(SocketAddr, SocketAddr)> {
        let mine = self.by_client.get(&client).map_or(&[][..], Vec::as_slice);
        mine.iter()
            .filter_map(|a| match self.by_addr.get(a)?.socket {
                RelaySocket::Tcp(bind) => Some((*a, bind)),
                RelaySocket::Udp(_) => None,
            })
            .collect()
    }

    fn holds_generation(&self, id: u64) -> bool {
        self.by_addr.values().any(|r| r.generation == id)
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.by_addr.keys().copied().collect()
    }
}

/// One sans-IO server and the credentials it was given.
struct Generation {
    id: u64,
    server: TurnServer,
    users: HashSet<String>,
}

/// What to do with a client message before the server sees it.
enum Gate {
    Pass,
    Drop,
    Reply(Vec<u8>),
    /// A Connect (RFC 6062): open the peer connection first.
    Connect(Box<Connecting>, SocketAddr, SocketAddr, SocketAddr),
    /// Hold it until the p2p room's announced addresses are read (after the delay).
    Lookup(String, Duration),
}

/// Where relayed sockets of one address family bind, and the address clients are told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayIp {
    pub(crate) bind: IpAddr,
    pub(crate) announce: IpAddr,
}

pub(crate) struct Shell {
    pub(crate) name: &'static str,
    pub(crate) transport: TransportType,
    pub(crate) listen: SocketAddr,
    pub(crate) realm: String,
    pub(crate) secret: TurnSecret,
    pub(crate) policy: Arc<Policy>,
    /// One per address family.
    pub(crate) relay_ips: Vec<RelayIp>,
    pub(crate) clients: Clients,
    /// Where p2p rooms' announced addresses are read.
    pub(crate) bus: AnyBus,
}

struct Run {
    sh: Shell,
    /// Oldest first; the last one takes new clients.
    generations: Vec<Generation>,
    max_users: usize,
    /// Who asked for an allocation last, and how many sockets it asked for (two with
    /// ADDITIONAL-ADDRESS-FAMILY), by client address (AllocateSocket names no user).
    allocating: HashMap<SocketAddr, (String, usize)>,
    relays: Relays,
    /// Connect requests whose peer connection is being opened, by (relay, peer).
    connecting: HashMap<(SocketAddr, SocketAddr), Connecting>,
    unbound: Vec<Unbound>,
    relayed: Relayed,
    /// (client, peer IP) → until when: the permissions of TCP allocations' clients. A
    /// Connect the server would find no permission for is refused before it sees it
    /// (the crate would leave it pending, and break the control connection at timeout).
    tcp_permissions: HashMap<(SocketAddr, IpAddr), Instant>,
    /// Client messages waiting for their p2p room's addresses, by room (one bus read
    /// per room at a time).
    waiting: HashMap<String, Vec<(SocketAddr, Vec<u8>)>>,
    base: Instant,
    events: mpsc::Sender<Event>,
}

impl Shell {
    /// The queue readers feed, and the shell's loop until `shutdown`.
    pub(crate) fn spawn(
        self,
        shutdown: CancellationToken,
    ) -> (
        mpsc::Sender<Event>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let (tx, rx) = mpsc::channel(EVENTS);
        let run = self.into_run(tx.clone(), MAX_USERS);
        (tx, tokio::spawn(run.run(rx, shutdown)))
    }

    fn into_run(self, events: mpsc::Sender<Event>, max_users: usize) -> Run {
        let mut run = Run {
            sh: self,
            generations: Vec::new(),
            max_users,
            allocating: HashMap::new(),
            relays: Relays::default(),
            connecting: HashMap::new(),
            unbound: Vec::new(),
            relayed: Relayed::default(),
            tcp_permissions: HashMap::new(),
            waiting: HashMap::new(),
            base: Instant::now(),
            events,
        };
        run.new_generation(0);
        run
    }
}

/// Counts a relay target refused to a credential of scope `scope`.
fn peer_refused(scope: &'static str, r: PeerRefusal) {
    metrics::counter!("skylark_turn_peers_refused_total", "scope" => scope, "reason" => r.label())
        .increment(1);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Run {
    fn now(&self) -> SansInstant {
        SansInstant::from_nanos(i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX))
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut wake = Instant::now();
        loop {
            let poll = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => true,
            };
            // Polling walks every allocation: after requests and timers, not per packet.
            if poll || Instant::now() >= wake {
                wake = self.drive();
            }
        }
        for addr in self.relays.addrs() {
            self.end_relay(addr);
        }
        tracing::info!(listener = self.sh.name, "TURN listener stopped");
        Ok(())
    }

    /// Feeds one event to the server; whether it may have work for `poll` (a request,
    /// a connection opened or closed) rather than only relayed data.
    fn handle(&mut self, ev: Event) -> bool {
        let now = self.now();
        match ev {
            Event::Client { from, data } => self.client(from, data, false, now),
            Event::Looked { room, ips } => {
                if let Some(ips) = ips {
                    self.sh.policy.cache_room(room.clone(), ips, Instant::now());
                }
                for (from, data) in self.waiting.remove(&room).unwrap_or_default() {
                    self.client(from, data, true, now);
                }
                true
            }
            Event::Bind { from, data, splice } => self.bind(from, data, splice, now),
            Event::PeerAccepted {
                relay,
                peer,
                stream,
            } => {
                self.peer_accepted(relay, peer, stream, now);
                false
            }
            Event::PeerConnected {
                relay,
                peer,
                result,
            } => {
                let Some(c) = self.connecting.get_mut(&(relay, peer)) else {
                    // The allocation ended meanwhile: the connection closes.
                    return false;
                };
                c.result = Some(result);
                let (client, request, generation) = (c.client, c.request.clone(), c.generation);
                let g = self
                    .index_of(generation)
                    .unwrap_or(self.generations.len() - 1);
                let t = Transmit::new(
                    request.as_slice(),
                    self.sh.transport,
                    client,
                    self.sh.listen,
                );
                if let Some(out) = self.generations[g].server.recv(t, now) {
                    self.send(out.build());
                }
                true
            }
            Event::Peer { relay, from, data } => {
                if !self.sh.policy.spend(relay, data.len(), Instant::now()) {
                    metrics::counter!("skylark_turn_dropped_total", "reason" => "bandwidth")
                        .increment(1);
                    return false;
                }
                metrics::counter!("skylark_turn_relayed_bytes_total", "direction" => "in")
                    .increment(data.len() as u64);
                metrics::counter!("skylark_turn_relayed_packets_total", "direction" => "in")
                    .increment(1);
                let Some(g) = self
                    .relays
                    .get(&relay)
                    .and_then(|r| self.index_of(r.generation))
                else {
                    return false;
                };
                let t = Transmit::new(data.as_slice(), TransportType::Udp, from, relay);
                if let Some(out) = self.generations[g].server.recv(t, now) {
                    self.send(out.build());
                }
                false
            }
            Event::Opened { from, tx } => {
                if let Clients::Stream(conns) = &mut self.sh.clients {
                    conns.insert(from, tx);
                }
                false
            }
            Event::Closed { from } => {
                if let Clients::Stream(conns) = &mut self.sh.clients {
                    conns.remove(&from);
                }
                self.allocating.remove(&from);
                // A stream client's allocations go with its connection: nothing could
                // reach the client any more. The server has no call to delete one, so
                // the sockets close and the caps free now; the server forgets the
                // allocation when its lifetime ends.
                for relay in self.relays.of_client(from) {
                    self.end_relay(relay);
                }
                // An empty read is how the server learns a TCP client went away.
                for g in 0..self.generations.len() {
                    let t = Transmit::new(&[][..], self.sh.transport, from, self.sh.listen);
                    if let Some(out) = self.generations[g].server.recv(t, now) {
                        self.send(out.build());
                    }
                }
                true
            }
        }
    }

    /// A message from a client: through the gate to the server (`looked_up`: its p2p
    /// room's addresses were just read for it); whether there may be work to poll.
    fn client(
        &mut self,
        from: SocketAddr,
        data: Vec<u8>,
        looked_up: bool,
        now: SansInstant,
    ) -> bool {
        let channel_data = data.first().is_some_and(|b| b & 0xc0 != 0);
        let g = self.generation_of_client(from);
        if !self.passes_gate(&data, from, g, looked_up) {
            return false;
        }
        let t = Transmit::new(data.as_slice(), self.sh.transport, from, self.sh.listen);
        let out = self.generations[g].server.recv(t, now).map(|o| o.build());
        if let Some(out) = out {
            if !channel_data && !self.relays.tcp_of(from).is_empty() {
                self.note_permissions(from, &data, &out.data);
            }
            self.send(out);
        }
        !channel_data
    }

    /// Runs `gate`: whether the server is to see the message now.
    fn passes_gate(&mut self, data: &[u8], from: SocketAddr, g: usize, looked_up: bool) -> bool {
        match self.gate(data, from, g, looked_up) {
            Gate::Pass => true,
            Gate::Drop => false,
            Gate::Reply(reply) => {
                self.reply_to(from, reply);
                false
            }
            Gate::Connect(c, relay, peer, bind) => {
                self.connecting.insert((relay, peer), *c);
                tokio::spawn(tcp::connect(bind, relay, peer, self.events.clone()));
                false
            }
            Gate::Lookup(room, after) => {
                let held = self.waiting.entry(room.clone()).or_default();
                held.push((from, data.to_vec()));
                if held.len() == 1 {
                    let (bus, events) = (self.sh.bus.clone(), self.events.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let read = skylark_bus::peers::ips(&bus, &room);
                        let ips = match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
                            Ok(Ok(ips)) => Some(ips),
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "TURN: a p2p room's addresses unavailable; its requests refused");
                                None
                            }
                            Err(_) => None,
                        };
                        let _ = events.send(Event::Looked { room, ips }).await;
                    });
                }
                false
            }
        }
    }

    /// `verdict` on a request's peer as the gate's answer to `msg`: `None` to go on.
    fn gate_verdict(
        &self,
        verdict: Verdict,
        scoped: &Scoped,
        msg: &Message<'_>,
        signed: (&MessageIntegrityCredentials, IntegrityAlgorithm),
    ) -> Option<Gate> {
        let refuse = |r: PeerRefusal| {
            peer_refused(scoped.label, r);
            tracing::debug!(
                scope = scoped.label,
                reason = r.label(),
                "TURN peer outside the credential's scope refused"
            );
            Some(Gate::Reply(self.refuse(
                msg,
                ErrorCode::FORBIDDEN,
                Some(signed),
            )))
        };
        match verdict {
            Verdict::Allow => None,
            Verdict::Refuse(r) => refuse(r),
            Verdict::Lookup(..)
                if self.waiting.values().map(Vec::len).sum::<usize>() >= MAX_WAITING =>
            {
                refuse(PeerRefusal::Backlog)
            }
            Verdict::Lookup(room, after) => Some(Gate::Lookup(room, after)),
        }
    }

    /// Records the permissions a CreatePermission or ChannelBind of a TCP allocation's
    /// client got (what the server answered `response`).
    fn note_permissions(&mut self, client: SocketAddr, request: &[u8], response: &[u8]) {
        let (Ok(req), Ok(resp)) = (Message::from_bytes(request), Message::from_bytes(response))
        else {
            return;
        };
        if !(req.has_method(CREATE_PERMISSION) || req.has_method(CHANNEL_BIND))
            || !resp.has_class(MessageClass::Success)
            || resp.transaction_id() != req.transaction_id()
        {
            return;
        }
        let until = Instant::now() + PERMISSION;
        for a in (0..).map_while(|n| req.nth_attribute::<XorPeerAddress>(n).ok()) {
            let ip = a.addr(req.transaction_id()).ip();
            self.tcp_permissions.insert((client, ip), until);
        }
    }

    /// A Connect on `client`'s control connection: the policy, then what the crate
    /// would leave pending (no permission, no TCP allocation) refused here; else the
    /// peer connection is opened first.
    fn gate_connect(
        &self,
        msg: &Message<'_>,
        data: &[u8],
        client: SocketAddr,
        user: String,
        generation: u64,
        (creds, algo): (MessageIntegrityCredentials, IntegrityAlgorithm),
    ) -> Gate {
        let refuse = |code| Gate::Reply(self.refuse(msg, code, Some((&creds, algo))));
        let Ok(peer) = msg
            .attribute::<XorPeerAddress>()
            .map(|a| a.addr(msg.transaction_id()))
        else {
            return refuse(ErrorCode::BAD_REQUEST);
        };
        let mine = self.relays.tcp_of(client);
        if mine.is_empty() {
            return refuse(ErrorCode::ALLOCATION_MISMATCH);
        }
        let Some((relay, bind)) = mine
            .into_iter()
            .find(|(r, _)| r.is_ipv4() == peer.is_ipv4())
        else {
            return refuse(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        };
        let permitted = self
            .tcp_permissions
            .get(&(client, peer.ip()))
            .is_some_and(|until| *until > Instant::now());
        if !permitted {
            tracing::debug!(%client, %peer, "TURN Connect without a permission refused");
            return refuse(ErrorCode::FORBIDDEN);
        }
        if self.relayed.contains((relay, peer)) {
            return refuse(ErrorCode::CONNECTION_ALREADY_EXISTS);
        }
        if let Some(c) = self.connecting.get(&(relay, peer)) {
            // A retransmission waits for the first one's answer.
            if c.txn == msg.transaction_id() {
                return Gate::Drop;
            }
            return refuse(ErrorCode::CONNECTION_ALREADY_EXISTS);
        }
        let pending = self.connecting.keys().filter(|(r, _)| *r == relay).count()
            + self.unbound.iter().filter(|u| u.relay == relay).count();
        if pending >= MAX_UNBOUND {
            return refuse(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let c = Connecting {
            client,
            request: data.to_vec(),
            txn: msg.transaction_id(),
            user,
            generation,
            creds,
            algo,
            result: None,
        };
        Gate::Connect(Box::new(c), relay, peer, bind)
    }

    /// A ConnectionBind on a new data connection: to the generation whose peer
    /// connection it names; once bound, the peer connection goes to the data
    /// connection's task and the server forgets the pair (the shell relays it).
    fn bind(
        &mut self,
        from: SocketAddr,
        data: Vec<u8>,
        splice: oneshot::Sender<Splice>,
        now: SansInstant,
    ) -> bool {
        let Ok(msg) = Message::from_bytes(&data) else {
            return false;
        };
        let id = msg.attribute::<ConnectionId>().ok().map(|c| c.id());
        let user = msg
            .attribute::<Username>()
            .ok()
            .map(|u| u.username().to_string());
        let found = self
            .unbound
            .iter()
            .position(|u| Some(u.id) == id && Some(&u.user) == user.as_ref());
        let g = found
            .and_then(|i| self.index_of(self.unbound[i].generation))
            .unwrap_or(self.generations.len() - 1);
        if !self.passes_gate(&data, from, g, false) {
            return false;
        }
        let t = Transmit::new(data.as_slice(), TransportType::Tcp, from, self.sh.listen);
        let Some(out) = self.generations[g].server.recv(t, now).map(|o| o.build()) else {
            return true;
        };
        let bound = Message::from_bytes(&out.data)
            .is_ok_and(|m| m.has_method(CONNECTION_BIND) && m.has_class(MessageClass::Success));
        self.send(out);
        let (true, Some(i)) = (bound, found) else {
            return true;
        };
        let u = self.unbound.swap_remove(i);
        // The answer is queued: dropping the queue ends the connection's writer after
        // it, and the task relays from then on.
        if let Clients::Stream(conns) = &mut self.sh.clients {
            conns.remove(&from);
        }
        // A peer's end of stream makes the server drop the pair: it would otherwise
        // refuse every other allocation's Connect to this peer (446) while it lasts.
        let t = Transmit::new(&[][..], TransportType::Tcp, u.peer, u.relay);
        let _ = self.generations[g].server.recv(t, now);
        let Some(stop) = self.relays.get(&u.relay).map(|r| r.stop.clone()) else {
            return true;
        };
        metrics::counter!("skylark_turn_tcp_connections_total").increment(1);
        tracing::debug!(relay = %u.relay, peer = %u.peer, client = %from, "TURN TCP connection bound");
        let _ = splice.send(Splice {
            peer: u.stream,
            relay: u.relay,
            policy: self.sh.policy.clone(),
            stop,
            active: self.relayed.hold((u.relay, u.peer)),
        });
        true
    }

    /// A peer connected to a TCP relayed address: with a permission, the server sends
    /// the client a ConnectionAttempt and the connection waits for its ConnectionBind;
    /// without, it is closed (RFC 6062 §5.3).
    fn peer_accepted(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        stream: TcpStream,
        now: SansInstant,
    ) {
        let Some(r) = self.relays.get(&relay) else {
            return;
        };
        let (generation, user) = (r.generation, r.user.clone());
        let Some(g) = self.index_of(generation) else {
            return;
        };
        let waiting = self.unbound.iter().filter(|u| u.relay == relay).count();
        if waiting >= MAX_UNBOUND {
            peer_refused(self.sh.policy.scope_of(&user).label, PeerRefusal::Backlog);
            return;
        }
        let t = Transmit::new(&[][..], TransportType::Tcp, peer, relay);
        let Some(out) = self.generations[g].server.recv(t, now).map(|o| o.build()) else {
            tracing::debug!(%relay, %peer, "TURN TCP peer without a permission closed");
            return;
        };
        let id = Message::from_bytes(&out.data)
            .ok()
            .and_then(|m| m.attribute::<ConnectionId>().ok().map(|c| c.id()));
        let Some(id) = id else {
            return;
        };
        self.unbound.push(Unbound {
            id,
            user,
            generation,
            relay,
            peer,
            stream,
            until: Instant::now() + BIND_WAIT,
        });
        // RFC 6062 §4.4 makes it an indication; the crate (0.7.3) sends a request,
        // which clients (coturn's) do not take.
        self.reply_to(out.to, connection_attempt(id, peer));
    }

    /// A Connect's answer on its way to the client: the opened peer connection then
    /// waits for the ConnectionBind, or closes.
    fn connect_answered(&mut self, data: &[u8]) {
        let Ok(msg) = Message::from_bytes(data) else {
            return;
        };
        if !msg.has_method(CONNECT) || !msg.class().is_response() {
            return;
        }
        let txn = msg.transaction_id();
        let Some(key) = self
            .connecting
            .iter()
            .find(|(_, c)| c.txn == txn)
            .map(|(k, _)| *k)
        else {
            return;
        };
        let Some(c) = self.connecting.remove(&key) else {
            return;
        };
        let id = msg.attribute::<ConnectionId>().ok().map(|c| c.id());
        if let (true, Some(id), Some(Ok(stream))) =
            (msg.has_class(MessageClass::Success), id, c.result)
        {
            self.unbound.push(Unbound {
                id,
                user: c.user,
                generation: c.generation,
                relay: key.0,
                peer: key.1,
                stream,
                until: Instant::now() + BIND_WAIT,
            });
        }
    }

    /// Authentication by the TURN REST scheme and the peer policy, before the server
    /// sees the message (it has a static user table and no peer hook).
    fn gate(&mut self, data: &[u8], from: SocketAddr, g: usize, looked_up: bool) -> Gate {
        // ChannelData: its channel was bound through this gate.
        if data.first().is_some_and(|b| b & 0xc0 != 0) {
            return Gate::Pass;
        }
        let Ok(msg) = Message::from_bytes(data) else {
            return Gate::Drop;
        };
        if msg.has_class(MessageClass::Indication) {
            if msg.has_method(SEND) {
                let Ok(peer) = msg
                    .attribute::<XorPeerAddress>()
                    .map(|a| a.addr(msg.transaction_id()))
                else {
                    return Gate::Drop;
                };
                // The client's allocation of the peer's family, whose scope it was given.
                let relay = self
                    .relays
                    .of_client(from)
                    .into_iter()
                    .find(|r| r.is_ipv4() == peer.is_ipv4());
                let Some(relay) = relay else {
                    return Gate::Drop;
                };
                if let Err((scope, r)) = self.sh.policy.may_send(relay, peer) {
                    peer_refused(scope, r);
                    return Gate::Drop;
                }
            }
            return Gate::Pass;
        }
        if !msg.has_class(MessageClass::Request) {
            return Gate::Drop;
        }
        let Ok(user) = msg.attribute::<Username>() else {
            // Unauthenticated: the server answers 401 with a nonce.
            return Gate::Pass;
        };
        let user = user.username().to_string();
        let password = self.sh.secret.password(&user);
        if let Err(e) = self.sh.secret.check(&user, &password, unix_now()) {
            metrics::counter!("skylark_turn_auth_failures_total", "reason" => auth_reason(e))
                .increment(1);
            tracing::debug!(%from, error = %e, "TURN credential refused");
            // Answered here: the server may still hold the user from before it expired.
            return Gate::Reply(self.refuse(&msg, ErrorCode::UNAUTHORIZED, None));
        }
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(user.clone(), password.clone(), self.sh.realm.clone())
                .into();
        let algo = match msg.validate_integrity(&creds) {
            Ok(a) => a,
            Err(_) => {
                metrics::counter!("skylark_turn_auth_failures_total", "reason" => "mismatch")
                    .increment(1);
                // The server answers 401 (it does not know the user, or its check fails too).
                return Gate::Pass;
            }
        };
        let gen = &mut self.generations[g];
        if !gen.users.contains(&user) {
            gen.server.add_user(user.clone(), password);
            gen.users.insert(user.clone());
        }
        let with_peers = [CREATE_PERMISSION, CHANNEL_BIND, CONNECT];
        if with_peers.iter().any(|m| msg.has_method(*m)) {
            if let Some(gate) = self.gate_peers(&msg, &user, (&creds, algo), looked_up) {
                return gate;
            }
        }
        if msg.has_method(ALLOCATE) {
            if let Err(r) = self.sh.policy.may_allocate(&user) {
                metrics::counter!("skylark_turn_allocations_refused_total", "reason" => r.label())
                    .increment(1);
                let code = match r {
                    Refusal::UserCap => ErrorCode::ALLOCATION_QUOTA_REACHED,
                    _ => ErrorCode::INSUFFICIENT_CAPACITY,
                };
                return Gate::Reply(self.refuse(&msg, code, Some((&creds, algo))));
            }
            let sockets = if msg.has_attribute(AdditionalAddressFamily::TYPE) {
                2
            } else {
                1
            };
            self.allocating.insert(from, (user, sockets));
        } else if msg.has_method(CONNECT) {
            let generation = self.generations[g].id;
            return self.gate_connect(&msg, data, from, user, generation, (creds, algo));
        }
        Gate::Pass
    }

    /// The credential's scope on each peer of a CreatePermission (by IP), ChannelBind
    /// (by address) or Connect (TCP): `None` when all may be reached.
    fn gate_peers(
        &self,
        msg: &Message<'_>,
        user: &str,
        signed: (&MessageIntegrityCredentials, IntegrityAlgorithm),
        looked_up: bool,
    ) -> Option<Gate> {
        let scoped = self.sh.policy.scope_of(user);
        let now = Instant::now();
        for a in (0..).map_while(|n| msg.nth_attribute::<XorPeerAddress>(n).ok()) {
            let addr = a.addr(msg.transaction_id());
            let target = if msg.has_method(CREATE_PERMISSION) {
                Target::Ip(addr.ip())
            } else if msg.has_method(CONNECT) {
                Target::Tcp(addr)
            } else {
                Target::Udp(addr)
            };
            let verdict = self.sh.policy.decide(&scoped.reach, target, looked_up, now);
            if let Some(gate) = self.gate_verdict(verdict, &scoped, msg, signed) {
                tracing::debug!(user, peer = %addr, "TURN peer held or refused");
                return Some(gate);
            }
        }
        None
    }

    /// An error response to `req`, signed when the request was authenticated.
    fn refuse(
        &self,
        req: &Message<'_>,
        code: u16,
        signed: Option<(&MessageIntegrityCredentials, IntegrityAlgorithm)>,
    ) -> Vec<u8> {
        let mut b = Message::builder_error(req, MessageWriteVec::new());
        if let Ok(e) = ErrorCode::builder(code).build() {
            let _ = b.add_attribute(&e);
        }
        match signed {
            Some((creds, algo)) => {
                let _ = b.add_message_integrity(creds, algo);
            }
            None => {
                if let Ok(r) = Realm::new(&self.sh.realm) {
                    let _ = b.add_attribute(&r);
                }
            }
        }
        let _ = b.add_fingerprint();
        b.finish()
    }

    /// Runs the servers' timers and requests; returns when to come back.
    fn drive(&mut self) -> Instant {
        let now = self.now();
        let mut wake = Instant::now() + Duration::from_secs(1);
        for g in 0..self.generations.len() {
            wake = wake.min(self.drive_one(g, now));
        }
        self.renew_generations();
        let at = Instant::now();
        self.unbound.retain(|u| u.until > at);
        if let Some(next) = self.unbound.iter().map(|u| u.until).min() {
            wake = wake.min(next);
        }
        let relays = &self.relays;
        self.tcp_permissions
            .retain(|(c, _), until| *until > at && !relays.tcp_of(*c).is_empty());
        wake
    }

    fn drive_one(&mut self, g: usize, now: SansInstant) -> Instant {
        let id = self.generations[g].id;
        let wake = loop {
            match self.generations[g].server.poll(now) {
                TurnServerPollRet::WaitUntil(t) => {
                    let at = t.to_std(self.base);
                    break at.max(Instant::now() + Duration::from_millis(10));
                }
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let got = self.allocate(client_addr, allocation_transport, family, id);
                    self.generations[g].server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        got,
                        now,
                    );
                }
                TurnServerPollRet::TcpConnect {
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                } => {
                    let key = (relayed_addr, peer_addr);
                    let result = match self.connecting.get(&key).and_then(|c| c.result.as_ref()) {
                        Some(Ok(_)) => Ok(relayed_addr),
                        Some(Err(e)) => Err(*e),
                        // Not one the shell opened: every Connect is held until it is.
                        None => Err(TcpConnectError::Forbidden),
                    };
                    self.generations[g].server.tcp_connected(
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                        result,
                        now,
                    );
                    // Answered before the next poll (which would time it out).
                    while let Some(t) = self.generations[g].server.poll_transmit(now) {
                        self.send(t);
                    }
                    if let Some(c) = self.connecting.remove(&key) {
                        // Left unanswered (no permission after all): refused here.
                        if let Ok(msg) = Message::from_bytes(&c.request) {
                            let r =
                                self.refuse(&msg, ErrorCode::FORBIDDEN, Some((&c.creds, c.algo)));
                            self.reply_to(c.client, r);
                        }
                    }
                }
                TurnServerPollRet::TcpClose {
                    local_addr,
                    remote_addr,
                } => {
                    if local_addr == self.sh.listen {
                        if let Clients::Stream(conns) = &mut self.sh.clients {
                            // Dropping the queue ends the connection's writer.
                            conns.remove(&remote_addr);
                        }
                    }
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => self.end_relay(listen_addr),
            }
        };
        while let Some(t) = self.generations[g].server.poll_transmit(now) {
            self.send(t);
        }
        wake
    }

    /// Drops old generations with no allocation left, and starts a new one when the
    /// newest has seen [`Run::max_users`] credentials (dropping the oldest past
    /// [`MAX_GENERATIONS`]).
    fn renew_generations(&mut self) {
        let newest = self.generations.last().map(|g| g.id);
        let relays = &self.relays;
        self.generations
            .retain(|g| Some(g.id) == newest || relays.holds_generation(g.id));
        let users = self.generations.last().map_or(0, |g| g.users.len());
        if users <= self.max_users {
            return;
        }
        let id = self.generations.last().map_or(0, |g| g.id + 1);
        tracing::info!(
            users,
            generation = id,
            "TURN credential table full: new clients go to a fresh server"
        );
        self.new_generation(id);
        if self.generations.len() > MAX_GENERATIONS {
            let oldest = self.generations.remove(0);
            let ended = self.relays.in_generation(oldest.id);
            tracing::warn!(
                allocations = ended.len(),
                "TURN: the oldest credential table dropped, its allocations ended"
            );
            for relay in ended {
                self.end_relay(relay);
            }
        }
    }

    fn new_generation(&mut self, id: u64) {
        self.generations.push(Generation {
            id,
            server: TurnServer::new(self.sh.transport, self.sh.listen, self.sh.realm.clone()),
            users: HashSet::new(),
        });
    }

    /// Where `id` is in `generations`, if it is still there.
    fn index_of(&self, id: u64) -> Option<usize> {
        self.generations.iter().position(|g| g.id == id)
    }

    /// The generation a client's messages go to: the one holding its allocations, else
    /// the newest.
    fn generation_of_client(&self, client: SocketAddr) -> usize {
        self.relays
            .generation_of(client)
            .and_then(|id| self.index_of(id))
            .unwrap_or(self.generations.len() - 1)
    }

    /// Closes a relayed socket and frees its place under the caps (once).
    fn end_relay(&mut self, relay: SocketAddr) {
        if let Some(r) = self.relays.remove(relay) {
            r.stop.cancel();
            self.connecting.retain(|(a, _), _| *a != relay);
            self.unbound.retain(|u| u.relay != relay);
            let left = self.sh.policy.released(relay);
            metrics::gauge!("skylark_turn_allocations").set(left as f64);
            tracing::debug!(%relay, "TURN allocation ended");
        }
    }

    fn allocate(
        &mut self,
        client: SocketAddr,
        transport: TransportType,
        family: AddressFamily,
        generation: u64,
    ) -> Result<SocketAddr, SocketAllocateError> {
        let refuse = |r: Refusal, e| {
            metrics::counter!("skylark_turn_allocations_refused_total", "reason" => r.label())
                .increment(1);
            Err(e)
        };
        // TCP relays (RFC 6062) for clients on TCP or TLS; the crate answers UDP ones 400.
        let tcp = match (transport, &self.sh.clients) {
            (TransportType::Udp, _) => false,
            (TransportType::Tcp, Clients::Stream(_)) => true,
            _ => {
                return refuse(
                    Refusal::Transport,
                    SocketAllocateError::InsufficientCapacity,
                )
            }
        };
        let v4 = family == AddressFamily::IPV4;
        let Some(ip) = self
            .sh
            .relay_ips
            .iter()
            .find(|r| r.announce.is_ipv4() == v4)
            .copied()
        else {
            return refuse(
                Refusal::Family,
                SocketAllocateError::AddressFamilyNotSupported,
            );
        };
        // Taken, not read: UDP clients never say goodbye, so the map must not keep them.
        let user = match self.allocating.get_mut(&client) {
            Some((user, left)) if *left > 1 => {
                *left -= 1;
                user.clone()
            }
            _ => self
                .allocating
                .remove(&client)
                .map(|(user, _)| user)
                .unwrap_or_default(),
        };
        if let Err(r) = self.sh.policy.may_allocate(&user) {
            return refuse(r, SocketAllocateError::InsufficientCapacity);
        }
        let stop = CancellationToken::new();
        // Relays are known by address: a port the other transport's relay holds is
        // bound again.
        let mut bound = None;
        for _ in 0..8 {
            let got = if tcp {
                self.bind_tcp(ip, &stop)
            } else {
                self.bind_udp(ip, &stop)
            };
            match got {
                Ok((relay, socket)) if !self.relays.contains(relay) => {
                    bound = Some((relay, socket));
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "TURN relayed socket: bind failed");
                    break;
                }
            }
        }
        let Some((relay, socket)) = bound else {
            stop.cancel();
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        // A colliding socket was never read and is closed with its loop iteration.
        self.relays.insert(
            relay,
            Relay {
                socket,
                stop,
                generation,
                client,
                user: user.clone(),
            },
        );
        let total = self.sh.policy.allocated(relay, &user, tcp);
        metrics::gauge!("skylark_turn_allocations").set(total as f64);
        tracing::debug!(%client, %relay, user = %user, "TURN allocation");
        Ok(relay)
    }

    /// A relayed UDP socket on `ip` and its reader.
    fn bind_udp(
        &self,
        ip: RelayIp,
        stop: &CancellationToken,
    ) -> std::io::Result<(SocketAddr, RelaySocket)> {
        let socket = std::net::UdpSocket::bind((ip.bind, 0))?;
        socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let relay = SocketAddr::new(ip.announce, socket.local_addr()?.port());
        if !self.relays.contains(relay) {
            let stop = stop.clone();
            tokio::spawn(read_relay(socket.clone(), relay, self.events.clone(), stop));
        }
        Ok((relay, RelaySocket::Udp(socket)))
    }

    /// A TCP relayed address's listener on `ip` and its acceptor.
    fn bind_tcp(
        &self,
        ip: RelayIp,
        stop: &CancellationToken,
    ) -> std::io::Result<(SocketAddr, RelaySocket)> {
        let listener = tcp::relay_listener(ip.bind)?;
        let local = listener.local_addr()?;
        let relay = SocketAddr::new(ip.announce, local.port());
        if !self.relays.contains(relay) {
            let (events, stop) = (self.events.clone(), stop.clone());
            tokio::spawn(tcp::accept(listener, relay, events, stop));
        }
        Ok((relay, RelaySocket::Tcp(local)))
    }

    fn reply_to(&mut self, to: SocketAddr, data: Vec<u8>) {
        match &mut self.sh.clients {
            Clients::Udp(s) => {
                let _ = send_now(s, &data, to);
            }
            Clients::Stream(conns) => {
                if let Some(tx) = conns.get(&to) {
                    // A full queue drops, as a full UDP socket would.
                    let _ = tx.try_send(crate::stream::pad_channel_data(data));
                }
            }
        }
    }

    fn send(&mut self, t: Transmit<Vec<u8>>) {
        if t.from == self.sh.listen {
            if !self.connecting.is_empty() {
                self.connect_answered(&t.data);
            }
            return self.reply_to(t.to, t.data);
        }
        let Some(RelaySocket::Udp(socket)) = self.relays.get(&t.from).map(|r| &r.socket) else {
            return;
        };
        // The server checked the permission; this is the last word on the peer.
        if let Err((scope, r)) = self.sh.policy.may_send(t.from, t.to) {
            peer_refused(scope, r);
            return;
        }
        if !self.sh.policy.spend(t.from, t.data.len(), Instant::now()) {
            metrics::counter!("skylark_turn_dropped_total", "reason" => "bandwidth").increment(1);
            return;
        }
        if send_now(socket, &t.data, t.to).is_ok() {
            metrics::counter!("skylark_turn_relayed_bytes_total", "direction" => "out")
                .increment(t.data.len() as u64);
            metrics::counter!("skylark_turn_relayed_packets_total", "direction" => "out")
                .increment(1);
        }
    }
}

/// Sends a datagram now. tokio's `try_send_to` refuses until its reactor has seen the
/// socket writable once, so a relay's first datagram, sent right after it was bound,
/// would be dropped: then the kernel is asked directly (a full buffer still drops).
fn send_now(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    match socket.try_send_to(data, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            socket2::SockRef::from(socket).send_to(data, &to.into())
        }
        r => r,
    }
}

/// A ConnectionAttempt indication (RFC 6062 §5.3).
fn connection_attempt(id: u32, peer: SocketAddr) -> Vec<u8> {
    let mut b = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, CONNECTION_ATTEMPT),
        TransactionId::generate(),
        MessageWriteVec::new(),
    );
    let tid = b.transaction_id();
    let _ = b.add_attribute(&ConnectionId::new(id));
    let _ = b.add_attribute(&XorPeerAddress::new(peer, tid));
    let _ = b.add_fingerprint();
    b.finish()
}

fn auth_reason(e: skylark_auth::TurnCredentialError) -> &'static str {
    match e {
        skylark_auth::TurnCredentialError::Malformed => "malformed",
        skylark_auth::TurnCredentialError::Expired => "expired",
        skylark_auth::TurnCredentialError::Mismatch => "mismatch",
    }
}

/// Datagrams from peers to one relayed address, until the allocation ends.
async fn read_relay(
    socket: Arc<UdpSocket>,
    relay: SocketAddr,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => got,
        };
        let Ok((n, from)) = got else { continue };
        let ev = Event::Peer {
            relay,
            from,
            data: buf[..n].to_vec(),
        };
        // A full shell drops, as a full socket buffer would.
        if events.try_send(ev).is_err() && events.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Limits;
    use turn_server_proto::stun::types::attribute::Nonce;
    use turn_server_proto::stun::types::message::Method;
    use turn_server_proto::types::attribute::RequestedTransport;
    use turn_server_proto::types::message::REFRESH;

    const SECRET: &[u8] = b"shell-test-secret-0123456789";

    /// A relay socket sends as soon as it is bound, before tokio's reactor has run: its
    /// first datagram arrives (`try_send_to` alone refuses it with WouldBlock).
    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_just_bound_sends_its_first_datagram() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let sock = UdpSocket::from_std(std_sock).unwrap();
        let to = peer.local_addr().unwrap();
        assert_eq!(send_now(&sock, b"first", to).unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
    }

    struct Client {
        sock: UdpSocket,
        realm: String,
        nonce: Option<String>,
    }

    async fn client() -> Client {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            realm: String::new(),
            nonce: None,
        }
    }

    fn username(who: &str) -> String {
        TurnSecret::new(SECRET)
            .mint(who, unix_now(), Duration::from_secs(600))
            .username
    }

    /// `method` from `c` as `user` through `run`, signed once the client has a nonce (a
    /// 401 or 438 bringing a new one is retried); the answer's error code, 0 for success.
    async fn request(run: &mut Run, c: &mut Client, method: Method, user: &str) -> u16 {
        let from = c.sock.local_addr().unwrap();
        for _ in 0..3 {
            let mut req = Message::builder_request(method, MessageWriteVec::new());
            if method == ALLOCATE {
                req.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
            }
            if let Some(nonce) = &c.nonce {
                req.add_attribute(&Username::new(user).unwrap()).unwrap();
                req.add_attribute(&Realm::new(&c.realm).unwrap()).unwrap();
                req.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
                let password = TurnSecret::new(SECRET).password(user);
                let creds: MessageIntegrityCredentials =
                    LongTermKeyCredentials::new(user.into(), password, c.realm.clone()).into();
                req.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
                    .unwrap();
            }
            run.handle(Event::Client {
                from,
                data: req.finish(),
            });
            run.drive();
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer to {method:?} as {user}"))
                .unwrap();
            let msg = Message::from_bytes(&buf[..n]).unwrap();
            if msg.has_class(MessageClass::Success) {
                return 0;
            }
            let code = msg.attribute::<ErrorCode>().map_or(1, |e| e.code());
            let nonce = msg.attribute::<Nonce>().ok().map(|n| n.nonce().to_string());
            if !(code == 401 || code == 438) || nonce.is_none() || nonce == c.nonce {
                return code;
            }
            c.nonce = nonce;
            if let Ok(r) = msg.attribute::<Realm>() {
                c.realm = r.realm().to_string();
            }
        }
        panic!("no answer but a new nonce, three times");
    }

    /// Each viewer gets a new credential, and the server cannot forget one: while an
    /// allocation lives, new clients go to a fresh server once the table is full, and
    /// the old one keeps serving the allocation.
    #[tokio::test]
    async fn credential_tables_stay_bounded_while_an_allocation_lives() {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let shell = Shell {
            name: "udp",
            transport: TransportType::Udp,
            listen: listen.local_addr().unwrap(),
            realm: "skylark".into(),
            secret: TurnSecret::new(SECRET),
            policy: Arc::new(Policy::new(
                Limits::default(),
                Vec::new(),
                vec![loopback],
                Default::default(),
            )),
            relay_ips: vec![RelayIp {
                bind: loopback,
                announce: loopback,
            }],
            clients: Clients::Udp(listen),
            bus: skylark_bus::connect(None).await.unwrap(),
        };
        let (events, _rx) = mpsc::channel(EVENTS);
        let max = 4;
        let mut run = shell.into_run(events, max);

        let mut holder = client().await;
        let held = username("holder");
        assert_eq!(request(&mut run, &mut holder, ALLOCATE, &held).await, 0);
        let mut others = client().await;
        for i in 0..10 * max {
            // Signed: its credential goes in the table (437: it has no allocation).
            let who = username(&format!("viewer-{i}"));
            assert_eq!(request(&mut run, &mut others, REFRESH, &who).await, 437);
            let held_now: usize = run.generations.iter().map(|g| g.users.len()).sum();
            assert!(
                held_now <= 2 * (max + 1),
                "{held_now} credentials held after {} signed clients",
                i + 2
            );
        }
        assert_eq!(run.generations.len(), 2, "the holder's and the newest");
        assert_eq!(request(&mut run, &mut holder, REFRESH, &held).await, 0);
        // Its last allocation ended, the holder's generation goes.
        for relay in run.relays.of_client(holder.sock.local_addr().unwrap()) {
            run.end_relay(relay);
        }
        run.drive();
        assert_eq!(run.generations.len(), 1, "only the newest is left");
    }
}
