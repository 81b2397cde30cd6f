//! The I/O shell of one listener: owns a sans-IO `TurnServer`, the relayed UDP sockets
//! it asks for, the client connections (TCP, TLS) and its timers. One task per
//! listener; readers feed it events, it alone touches the server.

use crate::policy::{Policy, Refusal};
use skylark_auth::TurnSecret;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::{
    SocketAllocateError, TcpConnectError, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::stun::types::attribute::{ErrorCode, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::stun::types::TransportType;
use turn_server_proto::types::attribute::XorPeerAddress;
use turn_server_proto::types::message::{
    ALLOCATE, CHANNEL_BIND, CONNECT, CONNECTION_BIND, CREATE_PERMISSION, SEND,
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
}

/// How the shell answers clients.
pub(crate) enum Clients {
    Udp(Arc<UdpSocket>),
    /// TCP or TLS: one queue per connection.
    Stream(HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>),
}

struct Relay {
    socket: Arc<UdpSocket>,
    stop: CancellationToken,
    /// The generation that allocated it, and for whom.
    generation: u64,
    client: SocketAddr,
}

/// One sans-IO server and the credentials it was given.
struct Generation {
    id: u64,
    server: TurnServer,
    users: HashSet<String>,
    allocations: usize,
}

/// What to do with a client message before the server sees it.
enum Gate {
    Pass,
    Drop,
    Reply(Vec<u8>),
}

pub(crate) struct Shell {
    pub(crate) name: &'static str,
    pub(crate) transport: TransportType,
    pub(crate) listen: SocketAddr,
    pub(crate) realm: String,
    pub(crate) secret: TurnSecret,
    pub(crate) policy: Arc<Policy>,
    /// The IP relayed sockets bind; `relay_ip` is what clients are told.
    pub(crate) bind_ip: IpAddr,
    pub(crate) relay_ip: IpAddr,
    pub(crate) clients: Clients,
}

struct Run {
    sh: Shell,
    /// Oldest first; the last one takes new clients.
    generations: Vec<Generation>,
    max_users: usize,
    /// Clients with allocations → (their generation, how many).
    owners: HashMap<SocketAddr, (u64, usize)>,
    /// Who asked for an allocation last, by client address (AllocateSocket names no user).
    allocating: HashMap<SocketAddr, String>,
    relays: HashMap<SocketAddr, Relay>,
    /// Stream clients' relayed addresses, ended with their connection.
    client_relays: HashMap<SocketAddr, Vec<SocketAddr>>,
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
            owners: HashMap::new(),
            allocating: HashMap::new(),
            relays: HashMap::new(),
            client_relays: HashMap::new(),
            base: Instant::now(),
            events,
        };
        run.new_generation(0);
        run
    }
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
        for (addr, r) in self.relays.drain() {
            r.stop.cancel();
            let left = self.sh.policy.released(addr);
            metrics::gauge!("skylark_turn_allocations").set(left as f64);
        }
        tracing::info!(listener = self.sh.name, "TURN listener stopped");
        Ok(())
    }

    /// Feeds one event to the server; whether it may have work for `poll` (a request,
    /// a connection opened or closed) rather than only relayed data.
    fn handle(&mut self, ev: Event) -> bool {
        let now = self.now();
        match ev {
            Event::Client { from, data } => {
                let channel_data = data.first().is_some_and(|b| b & 0xc0 != 0);
                let g = self.generation_of_client(from);
                match self.gate(&data, from, g) {
                    Gate::Drop => return false,
                    Gate::Reply(reply) => {
                        self.reply_to(from, reply);
                        return false;
                    }
                    Gate::Pass => {}
                }
                let t = Transmit::new(data.as_slice(), self.sh.transport, from, self.sh.listen);
                if let Some(out) = self.generations[g].server.recv(t, now) {
                    self.send(out.build());
                }
                !channel_data
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
                for relay in self.client_relays.remove(&from).unwrap_or_default() {
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

    /// Authentication by the TURN REST scheme and the peer policy, before the server
    /// sees the message (it has a static user table and no peer hook).
    fn gate(&mut self, data: &[u8], from: SocketAddr, g: usize) -> Gate {
        // ChannelData: its channel was bound through this gate.
        if data.first().is_some_and(|b| b & 0xc0 != 0) {
            return Gate::Pass;
        }
        let Ok(msg) = Message::from_bytes(data) else {
            return Gate::Drop;
        };
        if msg.has_class(MessageClass::Indication) {
            if msg.has_method(SEND) {
                let peer = msg
                    .attribute::<XorPeerAddress>()
                    .map(|a| a.addr(msg.transaction_id()));
                if peer.is_ok_and(|p| !self.sh.policy.permits_addr(p)) {
                    metrics::counter!("skylark_turn_peers_refused_total").increment(1);
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
        let policy = self.sh.policy.clone();
        let peer_refused = |m: &Message<'_>| {
            (0..)
                .map_while(|n| m.nth_attribute::<XorPeerAddress>(n).ok())
                .any(|a| {
                    let addr = a.addr(m.transaction_id());
                    if m.has_method(CREATE_PERMISSION) {
                        !policy.permits_ip(addr.ip())
                    } else {
                        !policy.permits_addr(addr)
                    }
                })
        };
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
            self.allocating.insert(from, user);
        } else if msg.has_method(CONNECT) || msg.has_method(CONNECTION_BIND) {
            // RFC 6062 TCP relays: not offered (the stream would stop being framed).
            return Gate::Reply(self.refuse(&msg, ErrorCode::FORBIDDEN, Some((&creds, algo))));
        } else if (msg.has_method(CREATE_PERMISSION) || msg.has_method(CHANNEL_BIND))
            && peer_refused(&msg)
        {
            metrics::counter!("skylark_turn_peers_refused_total").increment(1);
            tracing::debug!(%from, "TURN peer outside the allowed set refused");
            return Gate::Reply(self.refuse(&msg, ErrorCode::FORBIDDEN, Some((&creds, algo))));
        }
        Gate::Pass
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
                } => self.generations[g].server.tcp_connected(
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                    Err(TcpConnectError::Forbidden),
                    now,
                ),
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
        let newest = self.generations.len() - 1;
        let mut i = 0;
        self.generations.retain(|g| {
            i += 1;
            i - 1 == newest || g.allocations > 0
        });
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
            let ended: Vec<SocketAddr> = self
                .relays
                .iter()
                .filter(|(_, r)| r.generation == oldest.id)
                .map(|(a, _)| *a)
                .collect();
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
            allocations: 0,
        });
    }

    /// Where `id` is in `generations`, if it is still there.
    fn index_of(&self, id: u64) -> Option<usize> {
        self.generations.iter().position(|g| g.id == id)
    }

    /// The generation a client's messages go to: the one holding its allocations, else
    /// the newest.
    fn generation_of_client(&self, client: SocketAddr) -> usize {
        self.owners
            .get(&client)
            .and_then(|(id, _)| self.index_of(*id))
            .unwrap_or(self.generations.len() - 1)
    }

    /// Closes a relayed socket and frees its place under the caps (once).
    fn end_relay(&mut self, relay: SocketAddr) {
        if let Some(r) = self.relays.remove(&relay) {
            r.stop.cancel();
            if let Some(g) = self.index_of(r.generation) {
                self.generations[g].allocations -= 1;
            }
            if let Some((_, n)) = self.owners.get_mut(&r.client) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(&r.client);
                }
            }
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
        if transport != TransportType::Udp {
            return refuse(
                Refusal::Transport,
                SocketAllocateError::InsufficientCapacity,
            );
        }
        let v4 = family == AddressFamily::IPV4;
        if v4 != self.sh.relay_ip.is_ipv4() {
            return refuse(
                Refusal::Family,
                SocketAllocateError::AddressFamilyNotSupported,
            );
        }
        // Taken, not read: UDP clients never say goodbye, so the map must not keep them.
        let user = self.allocating.remove(&client).unwrap_or_default();
        if let Err(r) = self.sh.policy.may_allocate(&user) {
            return refuse(r, SocketAllocateError::InsufficientCapacity);
        }
        let socket = std::net::UdpSocket::bind((self.sh.bind_ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std);
        let socket = match socket {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "TURN relayed socket: bind failed");
                return Err(SocketAllocateError::InsufficientCapacity);
            }
        };
        let Ok(local) = socket.local_addr() else {
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let relay = SocketAddr::new(self.sh.relay_ip, local.port());
        let stop = CancellationToken::new();
        tokio::spawn(read_relay(
            socket.clone(),
            relay,
            self.events.clone(),
            stop.clone(),
        ));
        self.relays.insert(
            relay,
            Relay {
                socket,
                stop,
                generation,
                client,
            },
        );
        if let Some(g) = self.index_of(generation) {
            self.generations[g].allocations += 1;
        }
        self.owners.entry(client).or_insert((generation, 0)).1 += 1;
        if matches!(self.sh.clients, Clients::Stream(_)) {
            let mine = self.client_relays.entry(client).or_default();
            mine.retain(|r| self.relays.contains_key(r));
            mine.push(relay);
        }
        let total = self.sh.policy.allocated(relay, &user);
        metrics::gauge!("skylark_turn_allocations").set(total as f64);
        tracing::debug!(%client, %relay, user = %user, "TURN allocation");
        Ok(relay)
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
            return self.reply_to(t.to, t.data);
        }
        let Some(r) = self.relays.get(&t.from) else {
            return;
        };
        // The server checked the permission; this is the last word on the peer.
        if !self.sh.policy.permits_addr(t.to) && !self.sh.policy.permits_ip(t.to.ip()) {
            metrics::counter!("skylark_turn_peers_refused_total").increment(1);
            return;
        }
        if !self.sh.policy.spend(t.from, t.data.len(), Instant::now()) {
            metrics::counter!("skylark_turn_dropped_total", "reason" => "bandwidth").increment(1);
            return;
        }
        if send_now(&r.socket, &t.data, t.to).is_ok() {
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
            policy: Arc::new(Policy::new(Limits::default(), Vec::new(), loopback)),
            bind_ip: loopback,
            relay_ip: loopback,
            clients: Clients::Udp(listen),
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
    }
}
