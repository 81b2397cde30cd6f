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
/// The server's credential table only grows (no `remove_user`): when it holds this many
/// and no allocation is left, the server is started afresh.
const MAX_USERS: usize = 10_000;

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
    server: TurnServer,
    users: HashSet<String>,
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
        let server = TurnServer::new(self.transport, self.listen, self.realm.clone());
        let run = Run {
            sh: self,
            server,
            users: HashSet::new(),
            allocating: HashMap::new(),
            relays: HashMap::new(),
            client_relays: HashMap::new(),
            base: Instant::now(),
            events: tx.clone(),
        };
        (tx, tokio::spawn(run.run(rx, shutdown)))
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
                match self.gate(&data, from) {
                    Gate::Drop => return false,
                    Gate::Reply(reply) => {
                        self.reply_to(from, reply);
                        return false;
                    }
                    Gate::Pass => {}
                }
                let t = Transmit::new(data.as_slice(), self.sh.transport, from, self.sh.listen);
                if let Some(out) = self.server.recv(t, now) {
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
                let t = Transmit::new(data.as_slice(), TransportType::Udp, from, relay);
                if let Some(out) = self.server.recv(t, now) {
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
                let t = Transmit::new(&[][..], self.sh.transport, from, self.sh.listen);
                if let Some(out) = self.server.recv(t, now) {
                    self.send(out.build());
                }
                true
            }
        }
    }

    /// Authentication by the TURN REST scheme and the peer policy, before the server
    /// sees the message (it has a static user table and no peer hook).
    fn gate(&mut self, data: &[u8], from: SocketAddr) -> Gate {
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
        if !self.users.contains(&user) {
            self.server.add_user(user.clone(), password);
            self.users.insert(user.clone());
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

    /// Runs the server's timers and requests; returns when to come back.
    fn drive(&mut self) -> Instant {
        let now = self.now();
        let mut wake = Instant::now() + Duration::from_secs(1);
        loop {
            match self.server.poll(now) {
                TurnServerPollRet::WaitUntil(t) => {
                    let at = t.to_std(self.base);
                    wake = wake.min(at.max(Instant::now() + Duration::from_millis(10)));
                    break;
                }
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let got = self.allocate(client_addr, allocation_transport, family);
                    self.server.allocated_socket(
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
                } => self.server.tcp_connected(
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
        }
        while let Some(t) = self.server.poll_transmit(now) {
            self.send(t);
        }
        if self.relays.is_empty() && self.users.len() > MAX_USERS {
            tracing::info!(users = self.users.len(), "TURN credential table renewed");
            self.server = TurnServer::new(self.sh.transport, self.sh.listen, self.sh.realm.clone());
            self.users.clear();
        }
        wake
    }

    /// Closes a relayed socket and frees its place under the caps (once).
    fn end_relay(&mut self, relay: SocketAddr) {
        if let Some(r) = self.relays.remove(&relay) {
            r.stop.cancel();
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
        self.relays.insert(relay, Relay { socket, stop });
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
                let _ = s.try_send_to(&data, to);
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
        if r.socket.try_send_to(&t.data, t.to).is_ok() {
            metrics::counter!("skylark_turn_relayed_bytes_total", "direction" => "out")
                .increment(t.data.len() as u64);
            metrics::counter!("skylark_turn_relayed_packets_total", "direction" => "out")
                .increment(1);
        }
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
