//! The SFU: a WebRTC media node. Publishers send once; the node fans out to every
//! subscriber and to relay consumers (edge SFUs, packagers).
//!
//! - [`core`]: the sans-IO routing core (where a packet is forwarded);
//! - `worker`: the UDP/timer loop around it;
//! - `tcp`: ICE over TCP, its connections handed to the workers;
//! - `grpc`: `skylark.sfu.v1.SfuNode`;
//! - `edge`: pulling rooms from other nodes (this node as their edge);
//! - this file: start-up, node registration and room placement on the bus.

pub mod core;
mod cpu;
mod edge;
mod grants;
mod grpc;
mod send_batch;
mod spread;
mod tcp;
mod worker;
mod workers;

pub use grpc::SfuService;

use crate::core::{CloseReason, Core, CoreConfig, CoreEvent, Role, WorkerSlot, MAX_WORKERS};
use skylark_bus::events::{self, RoomEvent};
use skylark_bus::placement::{self, Origin, Relay, LEASE_TTL, RENEW_EVERY};
use skylark_bus::{AnyBus, Bus, NodeCapacity, NodeInfo, NodeKind};
use skylark_telemetry::ServicePart;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use worker::Command;
use workers::Workers;

/// Configuration of the SFU service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `skylark sfu` serves HTTP (health, metrics) when run alone.
    pub http_addr: SocketAddr,
    /// The one UDP port for all WebRTC media.
    pub udp_addr: SocketAddr,
    /// The one TCP port for ICE over TCP (RFC 6544), announced beside the UDP
    /// candidate on the same address; `None`: UDP only.
    pub tcp_addr: Option<SocketAddr>,
    /// Address announced in ICE candidates.
    pub public_ip: IpAddr,
    /// SfuNode gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// How other services reach the gRPC address; `None`: derived from it.
    pub grpc_advertise: Option<String>,
    /// Node id in the registry; `None`: generated.
    pub node_id: Option<String>,
    pub max_sessions: usize,
    /// Downstream relay links (edges pulling rooms from this node) it feeds at most;
    /// placement grows the tree downward past it. 0: unlimited.
    pub max_relays: u32,
    /// How long an edge keeps pulling a room after its last viewer here left.
    pub edge_idle: Duration,
    /// The RoomDirectory, which judges publishers' grants (key generations) at
    /// admission and every few seconds after. `None`: grants are not checked (a node
    /// run alone by a test).
    pub api_grpc_url: Option<String>,
    /// A WebRTC session that has not connected (ICE + DTLS) this long after its offer
    /// is dropped ([`core::DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Worker tasks, each with its own core and socket on the one UDP port (1 to
    /// [`MAX_WORKERS`]); see `workers`.
    pub workers: usize,
    /// Busy share (0–1] of its time past which a worker takes no new viewer, and with
    /// every worker past it the node reports itself overloaded ([`DEFAULT_OVERLOAD_AT`]).
    pub overload_at: f64,
    /// What viewers joining mid-GOP get from a publisher that can't be asked for a
    /// keyframe (RTMP).
    pub join_frames: core::JoinFrames,
    /// Who seals viewers' packets: the core itself (default) or str0m's session.
    pub send_path: core::SendPath,
}

/// Default of [`Config::overload_at`]: past 90 % busy, a worker's input starts queueing
/// in the socket and every session it serves waits.
pub const DEFAULT_OVERLOAD_AT: f64 = 0.9;

/// Default of [`Config::workers`]: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS)
}

/// Default of [`Config::edge_idle`].
pub const DEFAULT_EDGE_IDLE: Duration = Duration::from_secs(30);

impl Config {
    /// A node named `node_id` on loopback, every port chosen by the kernel, the default
    /// timeouts, no relay limit and no room directory: what an in-process test starts.
    pub fn loopback(node_id: &str, max_sessions: usize) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            http_addr: any,
            udp_addr: any,
            tcp_addr: None,
            public_ip: IpAddr::from([127, 0, 0, 1]),
            grpc_addr: any,
            grpc_advertise: None,
            node_id: Some(node_id.to_owned()),
            max_sessions,
            connect_timeout: core::DEFAULT_CONNECT_TIMEOUT,
            max_relays: 0,
            edge_idle: DEFAULT_EDGE_IDLE,
            api_grpc_url: None,
            workers: 1,
            overload_at: DEFAULT_OVERLOAD_AT,
            join_frames: core::JoinFrames::default(),
            send_path: core::SendPath::default(),
        }
    }
}

/// `count` UDP sockets on `addr`, sharing its port (`SO_REUSEPORT` when more than
/// one: the kernel spreads senders over them by address).
fn bind_media(addr: SocketAddr, count: usize) -> std::io::Result<Vec<tokio::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut sockets = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        if count > 1 {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        let s = tokio::net::UdpSocket::from_std(s.into())?;
        // Port 0 asks the kernel once; the others join the port it chose.
        at = s.local_addr()?;
        sockets.push(s);
    }
    Ok(sockets)
}

/// The first non-loopback address of this host, else 127.0.0.1. Found by asking the
/// kernel which source address a route would use; no packet is sent.
pub fn default_public_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Binds the UDP socket and gRPC port, starts the worker, registers the node.
pub async fn start(
    config: Config,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<ServicePart> {
    let count = config.workers.clamp(1, MAX_WORKERS);
    let sockets = bind_media(config.udp_addr, count).map_err(|e| {
        anyhow::anyhow!(
            "binding WebRTC UDP on {}: {e}; set SKYLARK_RTC_UDP_ADDR to a free port",
            config.udp_addr
        )
    })?;
    let bound = sockets[0].local_addr()?;
    let announce = SocketAddr::new(config.public_ip, bound.port());
    let tcp_listener = match config.tcp_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "binding ICE-TCP on {addr}: {e}; set SKYLARK_RTC_TCP_ADDR to a free port, or to `off`"
            )
        })?),
        None => None,
    };
    let tcp_announce = match &tcp_listener {
        Some(l) => Some(SocketAddr::new(config.public_ip, l.local_addr()?.port())),
        None => None,
    };
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("sfu-{:08x}", rand_u32()));
    tracing::info!(udp = %bound, %announce, tcp = ?tcp_announce, node_id, workers = count, "SFU media sockets bound");

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (steer_txs, steer_rxs): (Vec<_>, Vec<_>) = (0..count)
        .map(|_| mpsc::channel(worker::STEER_QUEUE))
        .unzip();
    let (tcp_txs, tcp_rxs): (Vec<_>, Vec<_>) = (0..count)
        .map(|_| mpsc::channel(worker::STEER_QUEUE))
        .unzip();
    let wall_clock = worker::system_wall_clock();
    let mut handles = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count + 5);
    let queues = steer_rxs.into_iter().zip(tcp_rxs);
    for (index, (socket, (steered, tcp))) in (0u8..).zip(sockets.into_iter().zip(queues)) {
        let mut core = Core::new(CoreConfig {
            local_addr: announce,
            announce_addr: announce,
            tcp_addr: tcp_announce,
            // The node admits (`workers`); a core alone never refuses before it.
            max_sessions: config.max_sessions,
            connect_timeout: config.connect_timeout,
            wall_clock,
            id_seed: worker::random_id_seed(),
            worker: WorkerSlot {
                index,
                count: count as u8,
            },
        });
        core.set_join_frames(config.join_frames);
        core.set_send_path(config.send_path);
        let (handle, task) = worker::spawn(worker::Spawn {
            socket,
            core,
            index,
            events: events_tx.clone(),
            steered,
            siblings: steer_txs.clone(),
            tcp,
            overload_at: config.overload_at,
            shutdown: shutdown.clone(),
        });
        handles.push(handle);
        tasks.push(task);
    }
    let worker = Workers::new(
        handles,
        node_id.clone(),
        config.max_sessions,
        config.overload_at,
        config.edge_idle,
        shutdown.clone(),
    );
    // Admission relies on the workers' capacity: tracked apart from the metrics.
    tasks.push(tokio::spawn({
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move {
            worker.track_capacity(shutdown).await;
            Ok(())
        }
    }));
    tasks.push(tokio::spawn(
        worker.clone().export_metrics(shutdown.clone()),
    ));
    if let (Some(listener), Some(addr)) = (tcp_listener, tcp_announce) {
        let limits = tcp::Limits::for_sessions(config.max_sessions);
        tracing::info!(max_connections = limits.max_connections, %addr, "ICE-TCP listening");
        tasks.push(tokio::spawn(tcp::serve(
            listener,
            tcp_txs,
            limits,
            shutdown.clone(),
        )));
    }

    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "binding SFU gRPC on {}: {e}; set SKYLARK_GRPC_ADDR to a free port",
                config.grpc_addr
            )
        })?;
    let grpc_addr = listener.local_addr()?;
    let advertise = config.grpc_advertise.clone().unwrap_or_else(|| {
        let ip = if grpc_addr.ip().is_unspecified() {
            config.public_ip
        } else {
            grpc_addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, grpc_addr.port()))
    });
    tracing::info!(addr = %grpc_addr, %advertise, "SfuNode gRPC listening");
    let grpc_shutdown = shutdown.clone();
    let edges = edge::Edges::new(worker.clone(), config.edge_idle, shutdown.clone());
    let grants = grants::Grants::new(config.api_grpc_url.as_deref())?;
    let grant_checks = tokio::spawn(grants.clone().run(worker.clone(), shutdown.clone()));
    let service = SfuService::new(worker.clone(), edges.clone(), grants.clone());
    let grpc_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(skylark_telemetry::GRPC_KEEPALIVE))
            .http2_keepalive_timeout(Some(skylark_telemetry::GRPC_KEEPALIVE_TIMEOUT))
            .layer(skylark_telemetry::GrpcServerLayer::new())
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                grpc_shutdown.cancelled_owned(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("SfuNode gRPC server: {e}"))
    });

    let node = NodeInfo {
        id: node_id.clone(),
        kind: NodeKind::Sfu,
        grpc_addr: advertise,
        media_addr: announce.to_string(),
        // TURN lets TCP relays (RFC 6062) reach exactly this address.
        ice_tcp_addr: tcp_announce.map(|a| a.to_string()).unwrap_or_default(),
        capacity: NodeCapacity {
            sessions: u32::try_from(config.max_sessions).unwrap_or(u32::MAX),
            relays: config.max_relays,
        },
        ..NodeInfo::default()
    };
    let draining = CancellationToken::new();
    let local = Local {
        worker: worker.clone(),
        edges,
        grants,
    };
    let placement = tokio::spawn(placement_loop(
        bus,
        local,
        node,
        events_rx,
        draining.clone(),
        shutdown,
    ));
    let drain: skylark_telemetry::DrainHook = Arc::new(move || {
        let (worker, draining) = (worker.clone(), draining.clone());
        Box::pin(async move {
            // Out of the registry first, so signaling places no one here; then refuse
            // new sessions and wait for the live ones to end (viewers reconnect elsewhere).
            draining.cancel();
            worker.send_wait(Command::Drain).await;
            loop {
                match worker.stats().await {
                    Some(s) if s.publishers + s.subscribers > 0 => {
                        tokio::time::sleep(Duration::from_millis(500)).await
                    }
                    _ => return,
                }
            }
        })
    });
    Ok(ServicePart {
        name: "sfu",
        router: axum::Router::new(),
        ready: None,
        tasks: {
            tasks.extend([grpc_task, placement, grant_checks]);
            tasks
        },
        grpc_addr: Some(grpc_addr),
        drain: Some(drain),
    })
}

/// Runs the SFU alone until `shutdown`.
pub async fn run(config: Config, bus: AnyBus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let part = start(config, bus, shutdown.clone()).await?;
    skylark_telemetry::serve_parts(addr, vec![part], shutdown).await
}

/// The node's own parts the placement loop reads and tells.
struct Local {
    worker: Workers,
    edges: edge::Edges,
    grants: grants::Grants,
}

/// Keeps the bus in step with the node: heartbeats with its load, origin claims of
/// live rooms, relay records of pulled rooms, its viewer count per room, room events;
/// and cuts publishers when the API says so.
async fn placement_loop(
    bus: AnyBus,
    local: Local,
    mut node: NodeInfo,
    mut events: workers::TaggedEvents,
    draining: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Local {
        worker,
        edges,
        grants,
    } = local;
    let origin = Origin::Sfu {
        node: node.id.clone(),
    };
    // Per live room: a task forwarding `end_publish` from the room channel.
    let mut live: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // Rooms whose count fell to zero while the bus was unreachable: cleared on renewal.
    let mut uncleared: HashSet<String> = HashSet::new();
    // Per room, its viewers on each worker that has some (the node's count: their sum).
    let mut by_worker: HashMap<String, HashMap<u8, usize>> = HashMap::new();
    // Rooms recorded as relayed by this node at the last renewal.
    let mut relayed: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    let mut last_bytes_out: Option<(tokio::time::Instant, u64)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Some(stats) = worker.stats().await {
                    node.load.sessions = stats.publishers + stats.subscribers;
                    node.load.subscribers = stats.subscribers;
                    node.load.relays_out = stats.relays_out;
                    node.load.origins = live.len() as u32;
                    node.load.overloaded = worker.overloaded();
                    let now = tokio::time::Instant::now();
                    if let Some((then, bytes)) = last_bytes_out {
                        let secs = now.duration_since(then).as_secs_f64().max(0.001);
                        node.load.egress_bps =
                            (stats.bytes_out.saturating_sub(bytes) as f64 * 8.0 / secs) as u64;
                    }
                    last_bytes_out = Some((now, stats.bytes_out));
                }
                if draining.is_cancelled() {
                    // Leave the registry; live rooms keep their origin claims below.
                    let _ = bus.remove_node(NodeKind::Sfu, &node.id).await;
                } else if let Err(e) = bus.heartbeat(&node, LEASE_TTL).await {
                    tracing::warn!(error = %e, "node heartbeat failed; live media continues");
                }
                for room in live.keys() {
                    match placement::renew_origin(&bus, room, &origin, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(room_id = %room, "another node holds the room's origin"),
                        Err(e) => tracing::warn!(error = %e, room_id = %room, "origin lease renewal failed"),
                    }
                }
                let pulled = edges.pulled();
                metrics::gauge!("skylark_sfu_relays_in").set(pulled.len() as f64);
                let now_relayed: HashSet<String> = pulled.iter().map(|p| p.room.clone()).collect();
                for gone in relayed.difference(&now_relayed) {
                    let _ = placement::remove_relay(&bus, gone, &node.id).await;
                }
                for p in pulled {
                    let relay = Relay { node: node.id.clone(), parent: p.parent, depth: p.depth };
                    if let Err(e) = placement::set_relay(&bus, &p.room, &relay, LEASE_TTL).await {
                        tracing::warn!(error = %e, room_id = %p.room, "relay record renewal failed");
                    }
                }
                relayed = now_relayed;
                // A pull whose parent died (or whose room moved: the origin died and the
                // publisher reconnected elsewhere) re-pulls from the room's current
                // origin, so its viewers keep their sessions without a new Subscribe.
                for (room, parent) in edges.stranded() {
                    if let Ok(Some(o)) = placement::origin_node(&bus, &room).await {
                        if o.id != parent && o.id != node.id {
                            let upstream = skylark_proto::sfu::v1::RelaySource { node_id: o.id, grpc_url: o.grpc_addr, depth: 1 };
                            edges.ensure(&room, upstream).await;
                        }
                    }
                }
                // Per-node counts expire unless renewed: a dead node stops counting.
                for (room, per) in &by_worker {
                    let count = per.values().sum::<usize>() as u64;
                    let _ = placement::set_viewers(&bus, room, &node.id, count).await;
                }
                // The room's count map lives as long as any node renews it, so a zero
                // that could not be written (the bus was unreachable) is written now.
                for room in std::mem::take(&mut uncleared) {
                    if placement::set_viewers(&bus, &room, &node.id, 0).await.is_err() {
                        uncleared.insert(room);
                    }
                }
            }
            Some((w, ev)) = events.recv() => match ev {
                CoreEvent::RoomLive { room } => {
                    if let Err(e) = placement::claim_origin(&bus, &room, &origin, LEASE_TTL).await {
                        tracing::warn!(error = %e, room_id = %room, "could not record the room's origin");
                    }
                    let w = worker.clone();
                    let b = bus.clone();
                    let r = room.clone();
                    live.insert(room.clone(), tokio::spawn(async move { watch_room(b, w, r).await }));
                    announce(&bus, &room, true).await;
                    // Packagers start pulling now rather than at their next look (a
                    // recording then starts with the stream, not up to a second later).
                    if let Err(e) = events::publish_went_live(&bus, &room).await {
                        tracing::debug!(error = %e, room_id = %room, "room not announced to packagers");
                    }
                }
                CoreEvent::RoomOffline { room } => {
                    if let Some(t) = live.remove(&room) { t.abort(); }
                    let _ = placement::release_origin(&bus, &room, &origin).await;
                    announce(&bus, &room, false).await;
                }
                CoreEvent::Viewers { room, count } => {
                    worker.viewers(w, &room, count);
                    let per = by_worker.entry(room.clone()).or_default();
                    if count == 0 { per.remove(&w); } else { per.insert(w, count); }
                    let count: usize = per.values().sum();
                    if count == 0 { by_worker.remove(&room); }
                    edges.viewers(&room, count);
                    let count = count as u64;
                    let set = placement::set_viewers(&bus, &room, &node.id, count).await;
                    if count == 0 && set.is_err() {
                        uncleared.insert(room.clone());
                    } else {
                        uncleared.remove(&room);
                    }
                    let is_live = live.contains_key(&room) || edges.contains(&room);
                    announce(&bus, &room, is_live).await;
                }
                CoreEvent::SessionClosed { session, room, role, reason } => {
                    grants.forget(&session);
                    // A new publish took its place: its client, if on a signaling
                    // WebSocket, is told why and disconnected (as in p2p rooms).
                    if reason == CloseReason::Replaced && role == Role::Publisher {
                        let ev = RoomEvent::PublishTakenOver { session: session.clone() };
                        if let Err(e) = events::publish(&bus, &room, &ev).await {
                            tracing::warn!(error = %e, room_id = %room, "publish_taken_over not published");
                        }
                    }
                    // Whatever ended it (timeout, failure, replacement, a cut grant), the
                    // record goes with the session, leaving a short tombstone so the
                    // client's late DELETE still succeeds.
                    tracing::debug!(session = %session, ?reason, "session record ended");
                    let _ = placement::end_session(&bus, &session).await;
                }
            },
        }
    }
    for (room, t) in live {
        t.abort();
        let _ = placement::release_origin(&bus, &room, &origin).await;
    }
    for room in by_worker.keys() {
        let _ = placement::set_viewers(&bus, room, &node.id, 0).await;
    }
    for room in &relayed {
        let _ = placement::remove_relay(&bus, room, &node.id).await;
    }
    let _ = bus.remove_node(NodeKind::Sfu, &node.id).await;
    Ok(())
}

/// Publishes the room's state (viewers summed over its nodes) for signaling pods to
/// pass on to WebSocket clients.
async fn announce(bus: &AnyBus, room: &str, live: bool) {
    let viewers = placement::viewers(bus, room).await.unwrap_or(0);
    let ev = RoomEvent::State {
        room: room.to_owned(),
        live,
        viewers,
        broadcaster: None,
    };
    if let Err(e) = events::publish(bus, room, &ev).await {
        tracing::debug!(error = %e, room_id = %room, "room event not published");
    }
}

/// Cuts the room's publisher when the API announces the end of its publish.
async fn watch_room(bus: AnyBus, worker: Workers, room: String) {
    loop {
        let mut sub = match events::subscribe(&bus, &room).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(ev) = sub.recv().await {
            if matches!(ev, RoomEvent::EndPublish { .. }) {
                worker
                    .send_wait(Command::EndPublisher { room: room.clone() })
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}
