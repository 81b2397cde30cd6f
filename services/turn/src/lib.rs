//! The embedded TURN server (`skylark turn`, or inside the all-in-one): a tokio shell
//! around the sans-IO `turn-server-proto` server (README design note). UDP and TCP on
//! one port (3478), TLS (`turns:`) on another; relayed addresses are UDP, or TCP (RFC
//! 6062) for clients on TCP/TLS, on IPv4 and, given an IPv6 relay IP, IPv6 (RFC 8656).
//! Credentials are the TURN REST ones signaling mints (`skylark_auth::TurnSecret`),
//! checked on each authenticated request; relaying goes where the credential's scope
//! allows (`policy`): an SFU session's to the addresses SFU nodes announce in the
//! registry (media for UDP, ICE-TCP for TCP), a p2p room's to the addresses the
//! other side of its room (broadcaster or viewers) announced through signaling.

mod policy;
mod shell;
mod stream;
mod tcp;

pub use policy::{Limits, Unscoped};

use anyhow::Context;
use ipnet::IpNet;
use shell::{Clients, Event, RelayIp, Shell, MAX_DATAGRAM};
use skylark_auth::TurnSecret;
use skylark_bus::{AnyBus, Bus, NodeKind};
use skylark_telemetry::ServicePart;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_server_proto::stun::types::TransportType;

/// How often the SFU nodes' addresses are read from the registry.
const SFU_REFRESH: Duration = Duration::from_secs(2);

/// A certificate and key (PEM files) for `turns:`.
#[derive(Debug, Clone)]
pub struct Tls {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Configuration of the TURN server.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP on this address (port 0: any free port, the same for both).
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
    /// The address relayed sockets are announced on (XOR-RELAYED-ADDRESS).
    pub relay_ip: IpAddr,
    /// An IPv6 address for relayed sockets besides (REQUESTED-ADDRESS-FAMILY,
    /// ADDITIONAL-ADDRESS-FAMILY: RFC 8656); `None`: relays of `relay_ip`'s family only.
    pub relay_ip6: Option<Ipv6Addr>,
    pub realm: String,
    pub secret: TurnSecret,
    /// Private peers p2p rooms' (and open unscoped) credentials may reach, when
    /// announced (p2p), besides SFU nodes and this server's allocations.
    pub allow_peers: Vec<IpNet>,
    pub limits: Limits,
    /// What credentials without a scope may reach.
    pub unscoped: Unscoped,
}

/// A running TURN server: its part (tasks) and where it listens.
pub struct Started {
    pub part: ServicePart,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

impl Started {
    /// The URLs clients are given for it, on `host` (how clients reach this machine).
    pub fn urls(&self, host: IpAddr) -> Vec<String> {
        let h = match host {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let mut urls = vec![
            format!("turn:{h}:{}?transport=udp", self.udp.port()),
            format!("turn:{h}:{}?transport=tcp", self.tcp.port()),
        ];
        if let Some(tls) = self.tls {
            urls.push(format!("turns:{h}:{}?transport=tcp", tls.port()));
        }
        urls
    }
}

/// Parses `SKYLARK_TURN_ALLOW_PEERS`: comma-separated CIDRs (a bare address is /32 or /128).
pub fn parse_allow_peers(s: &str) -> anyhow::Result<Vec<IpNet>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("SKYLARK_TURN_ALLOW_PEERS: {p:?} is not a CIDR like 10.0.0.0/8")
                })
        })
        .collect()
}

/// Binds the listeners and starts the shells; they stop at `shutdown`.
pub async fn start(
    config: Config,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let (udp, tcp) = bind_pair(config.addr).await?;
    let udp = Arc::new(udp);
    let udp_addr = udp.local_addr()?;
    let tcp_addr = tcp.local_addr()?;
    let relay_ips = relay_ips(&config)?;
    let policy = Arc::new(policy::Policy::new(
        config.limits,
        config.allow_peers.clone(),
        relay_ips.iter().map(|r| r.announce).collect(),
        config.unscoped,
    ));
    let shell = |name, transport, listen, clients| Shell {
        name,
        transport,
        listen,
        realm: config.realm.clone(),
        secret: config.secret.clone(),
        policy: policy.clone(),
        relay_ips: relay_ips.clone(),
        clients,
        bus: bus.clone(),
    };
    let mut tasks = Vec::new();

    let (events, task) = shell(
        "udp",
        TransportType::Udp,
        udp_addr,
        Clients::Udp(udp.clone()),
    )
    .spawn(shutdown.clone());
    tasks.push(task);
    tasks.push(tokio::spawn(read_udp(udp, events, shutdown.clone())));

    let conns = stream::Budget::new(config.limits.allocations.max(64) * 2);
    let (events, task) = shell(
        "tcp",
        TransportType::Tcp,
        tcp_addr,
        Clients::Stream(HashMap::new()),
    )
    .spawn(shutdown.clone());
    tasks.push(task);
    tasks.push(tokio::spawn(stream::accept(
        tcp,
        None,
        events,
        conns.clone(),
        shutdown.clone(),
    )));

    let mut tls_addr = None;
    if let Some(tls) = &config.tls {
        let acceptor = stream::tls_acceptor(&tls.cert, &tls.key)?;
        let listener = TcpListener::bind(tls.addr).await.with_context(|| {
            format!(
                "binding TURN TLS on {}: is another process using the port? set SKYLARK_TURN_TLS_ADDR",
                tls.addr
            )
        })?;
        let addr = listener.local_addr()?;
        let (events, task) = shell(
            "tls",
            TransportType::Tcp,
            addr,
            Clients::Stream(HashMap::new()),
        )
        .spawn(shutdown.clone());
        tasks.push(task);
        tasks.push(tokio::spawn(stream::accept(
            listener,
            Some(acceptor),
            events,
            conns,
            shutdown.clone(),
        )));
        tls_addr = Some(addr);
    }
    tasks.push(tokio::spawn(watch_sfu_nodes(bus, policy, shutdown)));
    metrics::gauge!("skylark_turn_allocations").set(0.0);
    for r in &relay_ips {
        tracing::info!(
            "TURN relayed addresses on {} (bound on {})",
            r.announce,
            r.bind
        );
    }
    tracing::info!("TURN UDP and TCP listening on {udp_addr}");
    if let Some(addr) = tls_addr {
        tracing::info!("TURN TLS listening on {addr}");
    }
    let mut part = ServicePart::new("turn", axum::Router::new());
    part.tasks = tasks;
    Ok(Started {
        part,
        udp: udp_addr,
        tcp: tcp_addr,
        tls: tls_addr,
    })
}

/// The relay IP of each address family. Relayed sockets bind the listen IP when it is
/// of the same family (all interfaces when it is unspecified), else the relay IP.
fn relay_ips(config: &Config) -> anyhow::Result<Vec<RelayIp>> {
    let listen = config.addr.ip();
    let bind = |announce: IpAddr| match (listen, announce) {
        (l, a) if l.is_ipv4() == a.is_ipv4() => l,
        (l, IpAddr::V6(_)) if l.is_unspecified() => Ipv6Addr::UNSPECIFIED.into(),
        (l, IpAddr::V4(_)) if l.is_unspecified() => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (_, a) => a,
    };
    let mut ips = vec![RelayIp {
        bind: bind(config.relay_ip),
        announce: config.relay_ip,
    }];
    if let Some(v6) = config.relay_ip6 {
        if config.relay_ip.is_ipv6() {
            anyhow::bail!(
                "SKYLARK_TURN_RELAY_IP6 is set and SKYLARK_TURN_RELAY_IP is IPv6 too: give \
                 SKYLARK_TURN_RELAY_IP an IPv4 address, or leave SKYLARK_TURN_RELAY_IP6 unset"
            );
        }
        ips.push(RelayIp {
            bind: bind(v6.into()),
            announce: v6.into(),
        });
    }
    Ok(ips)
}

/// UDP and TCP on one port; with port 0, the port UDP got (tried a few times, in
/// case TCP's is taken).
async fn bind_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let hint = "is another process using the port? set SKYLARK_TURN_ADDR";
    let mut last = None;
    for _ in 0..8 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding TURN UDP on {addr}: {hint}"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding TURN TCP on {addr}: {hint}")),
        }
    }
    Err(anyhow::anyhow!(
        "binding TURN TCP beside UDP on {addr}: {last:?}; {hint}"
    ))
}

/// Datagrams from clients on the UDP listener.
async fn read_udp(
    socket: Arc<UdpSocket>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            got = socket.recv_from(&mut buf) => got,
        };
        let Ok((n, from)) = got else { continue };
        let ev = Event::Client {
            from,
            data: buf[..n].to_vec(),
        };
        // A busy shell drops, as a full socket buffer would.
        if events.try_send(ev).is_err() && events.is_closed() {
            return Ok(());
        }
    }
}

/// Keeps the addresses SFU nodes announce (relay targets) current.
async fn watch_sfu_nodes(
    bus: AnyBus,
    policy: Arc<policy::Policy>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match bus.nodes(NodeKind::Sfu).await {
            Ok(nodes) => {
                let addrs = policy::SfuAddrs::of(&nodes);
                let (udp, tcp) = (addrs.udp.len(), addrs.tcp.len());
                if policy.set_sfu_addrs(addrs) {
                    tracing::debug!(
                        "TURN relays to SFU nodes at {udp} media and {tcp} ICE-TCP addresses"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TURN: SFU node list unavailable; keeping the last one")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(SFU_REFRESH) => {}
        }
    }
}
