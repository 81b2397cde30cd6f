//! The cascade, in one process: SFU nodes of two workers each started with
//! `skylark_sfu::start` on one in-process bus, the load generator's str0m peers as publisher and viewers. A tiny
//! WHIP/WHEP bridge per node turns the peers' HTTP offers into `SfuNode` gRPC calls (no
//! signaling), giving viewers the `upstream` an edge pulls from.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use skylark_bus::placement;
use skylark_bus::{AnyBus, InProcessBus};
use skylark_loadgen::source::VideoConfig;
use skylark_loadgen::{Engine, EngineConfig, Publisher, Viewer};
use skylark_proto::sfu::v1 as pb;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use skylark_telemetry::TracedChannel;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One SFU node of a test cluster.
struct Node {
    id: String,
    grpc_url: String,
    /// WHIP/WHEP bridge base URL: `{bridge}/whip/{room}`, `{bridge}/whep/{room}`.
    bridge: String,
    upstream: Arc<Mutex<Option<pb::RelaySource>>>,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Node {
    async fn start(bus: &AnyBus, id: &str, edge_idle: Duration) -> Node {
        Self::start_with_upstream(bus, id, edge_idle, None).await
    }

    /// A node whose WHEP bridge gives viewers `upstream` (this node is an edge).
    async fn start_with_upstream(
        bus: &AnyBus,
        id: &str,
        edge_idle: Duration,
        upstream: Option<pb::RelaySource>,
    ) -> Node {
        let shutdown = CancellationToken::new();
        // Two workers a node: every room here spreads over both (`workers`).
        let config = skylark_sfu::Config {
            edge_idle,
            workers: 2,
            ..skylark_sfu::Config::loopback(id, 200)
        };
        let part = skylark_sfu::start(config, bus.clone(), shutdown.clone())
            .await
            .expect("SFU starts");
        let grpc_url = format!("http://{}", part.grpc_addr.expect("gRPC bound"));
        let upstream = Arc::new(Mutex::new(upstream));
        let bridge = bridge(grpc_url.clone(), upstream.clone(), shutdown.clone()).await;
        Node {
            id: id.into(),
            grpc_url,
            bridge,
            upstream,
            shutdown,
        }
    }

    /// This node as the upstream of an edge `depth` hops from the origin.
    fn as_upstream(&self, depth: u32) -> pb::RelaySource {
        pb::RelaySource {
            node_id: self.id.clone(),
            grpc_url: self.grpc_url.clone(),
            depth,
        }
    }

    async fn stats(&self) -> pb::NodeStats {
        let mut c = client_of(&self.grpc_url);
        c.stats(pb::StatsRequest {}).await.unwrap().into_inner()
    }
}

#[derive(Clone)]
struct Bridge {
    grpc_url: String,
    /// What the bridge gives WHEP viewers as `upstream`; a test may change it (the
    /// room's origin moved), as signaling would.
    upstream: Arc<Mutex<Option<pb::RelaySource>>>,
}

/// Serves WHIP/WHEP over a node's gRPC on a port of its own; returns its base URL.
async fn bridge(
    grpc_url: String,
    upstream: Arc<Mutex<Option<pb::RelaySource>>>,
    shutdown: CancellationToken,
) -> String {
    let app = axum::Router::new()
        .route("/whip/{room}", post(whip))
        .route("/whep/{room}", post(whep))
        .route("/session/{id}", delete(close))
        .with_state(Bridge { grpc_url, upstream });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    format!("http://{addr}")
}

fn created(r: Result<tonic::Response<pb::SessionAnswer>, tonic::Status>) -> Response {
    match r {
        Ok(a) => {
            let a = a.into_inner();
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, format!("/session/{}", a.session_id)),
                ],
                a.answer_sdp,
            )
                .into_response()
        }
        Err(s) => (StatusCode::BAD_GATEWAY, s.message().to_string()).into_response(),
    }
}

async fn client(b: &Bridge) -> SfuNodeClient<TracedChannel> {
    client_of(&b.grpc_url)
}

/// A client as services build them: it carries this process's internal secret.
fn client_of(url: &str) -> SfuNodeClient<TracedChannel> {
    SfuNodeClient::new(skylark_telemetry::traced_channel(url).unwrap())
}

async fn whip(State(b): State<Bridge>, Path(room): Path<String>, offer: String) -> Response {
    let req = pb::PublishRequest {
        room_id: room,
        offer_sdp: offer,
        key_id: String::new(),
    };
    created(client(&b).await.publish(req).await)
}

async fn whep(State(b): State<Bridge>, Path(room): Path<String>, offer: String) -> Response {
    let req = pb::SubscribeRequest {
        room_id: room,
        offer_sdp: offer,
        upstream: b.upstream.lock().unwrap().clone(),
    };
    created(client(&b).await.subscribe(req).await)
}

async fn close(State(b): State<Bridge>, Path(id): Path<String>) -> StatusCode {
    let _ = client(&b)
        .await
        .close(pb::CloseRequest { session_id: id })
        .await;
    StatusCode::NO_CONTENT
}

fn engine() -> Engine {
    Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap()
}

async fn viewers(engine: &Engine, url: &str, n: usize) -> Vec<Viewer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(engine.view(url, None).await.expect("WHEP join"));
    }
    for v in &out {
        v.wait_playing(Duration::from_secs(15))
            .await
            .expect("viewer playing");
    }
    out
}

/// Every frame a viewer received is intact and in order, and most frames of the time
/// watched arrived (the machine may starve a test of CPU; correctness is not timing).
async fn assert_intact(vs: Vec<Viewer>, min_frames: u64) {
    for v in vs {
        let (s, _) = v.close().await;
        let s = s.unwrap();
        assert!(s.frames >= min_frames, "frames: {}", s.frames);
        assert!(s.keyframes >= 1);
        assert_eq!(s.frames_bad_hash, 0, "payloads intact");
        assert_eq!(s.frames_out_of_order, 0);
        assert!(
            s.frames_missing * 10 <= s.frames_expected.max(1),
            "at most 10 % missing: {} of {}",
            s.frames_missing,
            s.frames_expected
        );
        assert!(s.audio_packets > 50, "Opus flows too ({})", s.audio_packets);
    }
}

/// A publisher on `node` (WHIP through its bridge), connected.
async fn publish(e: &Engine, node: &Node, room: &str, simulcast: bool) -> Publisher {
    let url = format!("{}/whip/{room}", node.bridge);
    let p = e
        .publish_with(&url, "", VideoConfig::default(), simulcast)
        .await
        .expect("WHIP publish");
    p.wait_connected(Duration::from_secs(10))
        .await
        .expect("publisher connected");
    p
}

/// Each viewer keeps its session and gets at least `min_new` more intact frames in
/// `watch` (`what` says whose).
async fn keep_playing(vs: &[Viewer], watch: Duration, min_new: u64, what: &str) {
    let before = frames_now(vs).await;
    tokio::time::sleep(watch).await;
    for (v, b) in vs.iter().zip(before) {
        let s = v.stats().await.unwrap();
        assert!(s.connected, "viewer kept its session");
        assert!(s.frames >= b + min_new, "{what}: {b} → {}", s.frames);
        assert_eq!(s.frames_bad_hash, 0);
    }
}

/// Video frames each viewer has received so far.
async fn frames_now(vs: &[Viewer]) -> Vec<u64> {
    futures_util::future::join_all(vs.iter().map(|v| v.stats()))
        .await
        .into_iter()
        .map(|s| s.unwrap().frames)
        .collect()
}

/// An origin and an edge pulling from it (the default idle time).
async fn origin_and_edge(bus: &AnyBus) -> (Node, Node) {
    let idle = Duration::from_secs(30);
    let origin = Node::start(bus, "origin", idle).await;
    let edge = Node::start_with_upstream(bus, "edge1", idle, Some(origin.as_upstream(1))).await;
    (origin, edge)
}

/// origin → edge1 → edge2.
async fn chain(bus: &AnyBus, idle: Duration) -> (Node, Node, Node) {
    let origin = Node::start(bus, "origin", idle).await;
    let edge1 = Node::start_with_upstream(bus, "edge1", idle, Some(origin.as_upstream(1))).await;
    let edge2 = Node::start_with_upstream(bus, "edge2", idle, Some(edge1.as_upstream(2))).await;
    (origin, edge1, edge2)
}

fn bus() -> AnyBus {
    AnyBus::InProcess(InProcessBus::new())
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_get_every_frame_of_the_origin_publisher() {
    skylark_telemetry::metrics_handle();
    let bus = bus();
    let (origin, edge) = origin_and_edge(&bus).await;
    let e = engine();
    let publisher = publish(&e, &origin, "room1", false).await;

    let vs = viewers(&e, &format!("{}/whep/room1", edge.bridge), 5).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let es = edge.stats().await;
    assert_eq!(es.relays_in, 1, "the edge pulls the room");
    assert_eq!(es.subscribers, 5);
    let os = origin.stats().await;
    assert_eq!(os.relays_out, 1, "one relay link feeds the edge");
    assert_eq!(os.subscribers, 0, "the viewers are not on the origin");
    assert_eq!(
        placement::relays(&bus, "room1").await.unwrap(),
        vec![placement::Relay {
            node: "edge1".into(),
            parent: "origin".into(),
            depth: 1
        }]
    );
    match placement::origin(&bus, "room1").await.unwrap() {
        Some(placement::Origin::Sfu { node }) => assert_eq!(node, "origin"),
        o => panic!("origin claim: {o:?}"),
    }
    assert_intact(vs, 60).await;
    // Both nodes share this process's recorder, so only names are checked (no room id
    // is a label value).
    let metrics = skylark_telemetry::render_metrics();
    for m in [
        "skylark_sfu_relays_out{consumer=\"edge\"}",
        "skylark_sfu_relays_in ",
        "skylark_sfu_relay_bytes_total{direction=\"in\"}",
        "skylark_sfu_relay_bytes_total{direction=\"out\"}",
        "skylark_sfu_relay_resyncs_total",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }
    assert!(!metrics.contains("room1"), "no room id in metrics");

    // The publisher leaves: the room ends on the edge as at the origin.
    let live_on = |stats: pb::NodeStats| stats.rooms.iter().any(|r| r.room_id == "room1" && r.live);
    assert!(
        live_on(edge.stats().await),
        "live on the edge while published"
    );
    let _ = publisher.stop().await;
    eventually(
        "the room ends on the edge",
        Duration::from_secs(10),
        || async { !live_on(edge.stats().await) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_and_the_edge_stops_when_idle() {
    let bus = bus();
    let (origin, edge1, edge2) = chain(&bus, Duration::from_secs(1)).await;
    let e = engine();
    let publisher = publish(&e, &origin, "room2", false).await;
    // A viewer on edge1 makes it pull; edge2 then pulls from edge1.
    let v1 = viewers(&e, &format!("{}/whep/room2", edge1.bridge), 1).await;
    let vs = viewers(&e, &format!("{}/whep/room2", edge2.bridge), 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut relays = placement::relays(&bus, "room2").await.unwrap();
    relays.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(
        relays,
        vec![
            placement::Relay {
                node: "edge1".into(),
                parent: "origin".into(),
                depth: 1
            },
            placement::Relay {
                node: "edge2".into(),
                parent: "edge1".into(),
                depth: 2
            },
        ]
    );
    assert_eq!(edge1.stats().await.relays_out, 1);

    // edge1's own viewer leaves: it keeps pulling, for edge2 pulls from it.
    assert_intact(v1, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(edge1.stats().await.relays_in, 1, "edge1 still feeds edge2");
    assert_intact(vs, 120).await;

    // edge2's viewers left: after the idle time it stops pulling, and says so on the
    // bus; then edge1, which feeds no one any more.
    eventually("edge2 stops pulling", Duration::from_secs(10), || async {
        edge2.stats().await.relays_in == 0
    })
    .await;
    eventually("edge1 stops pulling", Duration::from_secs(10), || async {
        edge1.stats().await.relays_in == 0
    })
    .await;
    eventually("no relay record", Duration::from_secs(10), || async {
        placement::relays(&bus, "room2").await.unwrap().is_empty()
    })
    .await;
    let _ = publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_keep_their_sessions_when_the_publisher_reconnects() {
    let bus = bus();
    let (origin, edge) = origin_and_edge(&bus).await;
    let e = engine();
    let first = publish(&e, &origin, "room3", false).await;
    let vs = viewers(&e, &format!("{}/whep/room3", edge.bridge), 3).await;

    // A new publisher session replaces the old one on the origin, as after a blip.
    let second = publish(&e, &origin, "room3", false).await;
    drop(first);
    keep_playing(
        &vs,
        Duration::from_secs(3),
        45,
        "the new publisher's frames arrive",
    )
    .await;
    for v in vs {
        let _ = v.close().await;
    }
    let _ = second.stop().await;
}

/// A raw relay consumer of `node`'s room, as an edge would pull it: the tracks it
/// announced first, and the feedback channel for keyframe requests.
async fn raw_pull(
    node: &Node,
    room: &str,
) -> (
    Vec<pb::TrackInfo>,
    tokio::sync::mpsc::Sender<pb::RelayFeedback>,
    tonic::Streaming<pb::RelayMessage>,
) {
    let mut c = client_of(&node.grpc_url);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::RelayFeedback {
        msg: Some(pb::relay_feedback::Msg::Start(pb::RelayStart {
            room_id: room.into(),
            consumer: "edge".into(),
            from_gop: false,
        })),
    })
    .await
    .unwrap();
    let mut stream = c
        .relay_pull(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut tracks = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tracks.len() < 4 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(pb::RelayMessage {
                msg: Some(pb::relay_message::Msg::Track(t)),
            }))) => tracks.push(t),
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    (tracks, tx, stream)
}

fn keyframe_request(track_id: &str) -> pb::RelayFeedback {
    pb::RelayFeedback {
        msg: Some(pb::relay_feedback::Msg::KeyframeRequest(
            pb::KeyframeRequest {
                track_id: track_id.into(),
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_through_two_hops_and_layer_keyframe_requests_reach_the_publisher() {
    let bus = bus();
    let (origin, edge1, edge2) = chain(&bus, Duration::from_secs(30)).await;
    let e = engine();
    let publisher = publish(&e, &origin, "sim", true).await;
    // A viewer on edge1 makes it pull from the origin; edge2 then pulls from edge1 (a
    // parent signaling picks is always one that relays the room already).
    let v1 = viewers(&e, &format!("{}/whep/sim", edge1.bridge), 1).await;
    let vs = viewers(&e, &format!("{}/whep/sim", edge2.bridge), 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every layer crossed both hops with its rid.
    let (tracks, feedback, _stream) = raw_pull(&edge2, "sim").await;
    let low = tracks
        .iter()
        .find(|t| t.rid == "l")
        .unwrap_or_else(|| panic!("layer l relayed by edge2: {tracks:?}"));
    let mut rids: Vec<&str> = tracks.iter().map(|t| t.rid.as_str()).collect();
    rids.sort();
    assert_eq!(
        rids,
        ["", "h", "l", "m"],
        "three video layers and the audio"
    );

    // Three bursts of ten keyframe requests for layer l, at the second hop: the
    // publisher is asked for l about twice a burst (one at once, the rest coalesced into
    // one), not ten times, and the other layers are not asked (a viewer's own PLI after
    // a loss, or a viewer moving between layers on a loaded machine, may add a few: CI
    // run 5 saw 10).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = publisher.stats().await.unwrap();
    for _ in 0..3 {
        for _ in 0..10 {
            feedback
                .send(keyframe_request(&low.track_id))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = publisher.stats().await.unwrap();
    let delta = |rid: &str| {
        let n = |s: &skylark_loadgen::peer::PublisherStats| {
            s.layers
                .iter()
                .find(|l| l.rid.as_deref() == Some(rid))
                .map_or(0, |l| l.keyframe_requests)
        };
        n(&after) - n(&before)
    };
    let (h, m, l) = (delta("h"), delta("m"), delta("l"));
    assert!(
        (3..=15).contains(&l),
        "layer l asked per burst, coalesced: {l} for 30 requests"
    );
    assert!(
        h + m < l,
        "the other layers are not asked: h {h} m {m} l {l}"
    );

    // Each viewer got one whole layer, intact.
    for v in vs.into_iter().chain(v1) {
        let (s, _) = v.close().await;
        let s = s.unwrap();
        assert!(s.frames >= 45, "frames: {}", s.frames);
        assert!(s.layer.is_some());
        assert_eq!(s.layer_switches, 0, "one layer, not a mix");
        assert_eq!(s.frames_bad_hash, 0);
        assert_eq!(s.frames_out_of_order, 0);
    }
    let _ = publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_follow_the_publisher_to_a_new_origin_when_the_old_one_dies() {
    follow_the_publisher_to_a_new_origin(true).await;
}

/// The old origin lives on, and the edge hears of the new one before the old room ends
/// (a publisher that vanished without a DELETE is noticed late): the edge takes the new
/// upstream when the old room ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_viewers_follow_the_publisher_to_a_new_origin_when_the_old_room_ends() {
    follow_the_publisher_to_a_new_origin(false).await;
}

async fn follow_the_publisher_to_a_new_origin(old_origin_dies: bool) {
    let bus = bus();
    let idle = Duration::from_secs(30);
    let old_origin = Node::start(&bus, "origin-a", idle).await;
    let new_origin = Node::start(&bus, "origin-b", idle).await;
    let edge =
        Node::start_with_upstream(&bus, "edge1", idle, Some(old_origin.as_upstream(1))).await;
    let e = engine();
    let mut first = Some(publish(&e, &old_origin, "moved", false).await);
    let vs = viewers(&e, &format!("{}/whep/moved", edge.bridge), 2).await;

    // The publisher comes back on another node; signaling hands the edge the new origin
    // with the next viewer.
    if old_origin_dies {
        drop(old_origin);
        first = None;
    }
    let second = publish(&e, &new_origin, "moved", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    *edge.upstream.lock().unwrap() = Some(new_origin.as_upstream(1));
    let late = viewers(&e, &format!("{}/whep/moved", edge.bridge), 1).await;
    if let Some(p) = first.take() {
        let _ = p.stop().await;
    }
    keep_playing(
        &vs,
        Duration::from_secs(3),
        45,
        "the new origin's frames arrive",
    )
    .await;
    assert_eq!(
        placement::relays(&bus, "moved").await.unwrap(),
        vec![placement::Relay {
            node: "edge1".into(),
            parent: "origin-b".into(),
            depth: 1
        }]
    );
    if old_origin_dies {
        assert_intact(late, 45).await;
    } else {
        // It saw both publishers: frame numbers restart, so only integrity is checked.
        for v in late {
            let (s, _) = v.close().await;
            let s = s.unwrap();
            assert!(s.frames >= 45, "frames: {}", s.frames);
            assert_eq!(s.frames_bad_hash, 0);
        }
    }
    let _ = second.stop().await;
}

/// The room's publisher moves onto the edge node itself (a reconnect placed there):
/// the edge stops pulling, and its viewers follow the local publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stops_pulling_when_the_publisher_comes_to_it() {
    let bus = bus();
    let (origin, edge) = origin_and_edge(&bus).await;
    let e = engine();
    let first = publish(&e, &origin, "here", false).await;
    let vs = viewers(&e, &format!("{}/whep/here", edge.bridge), 2).await;
    assert_eq!(edge.stats().await.relays_in, 1);

    let second = publish(&e, &edge, "here", false).await;
    eventually(
        "the edge stops pulling",
        Duration::from_secs(10),
        || async { edge.stats().await.relays_in == 0 },
    )
    .await;
    eventually(
        "the origin feeds no one",
        Duration::from_secs(10),
        || async { origin.stats().await.relays_out == 0 },
    )
    .await;
    keep_playing(
        &vs,
        Duration::from_secs(2),
        30,
        "the local publisher's frames",
    )
    .await;
    let _ = first.stop().await;
    let _ = second.stop().await;
}

/// Metric `name`'s value in this process (its only node's).
fn metric(name: &str) -> f64 {
    skylark_telemetry::render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One node, two workers: the room lives at one, viewers join the less loaded, and the
/// other worker pulls the room in-process. Every viewer on either gets every frame
/// intact; when they leave, the in-process pull stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spreads_over_both_workers_of_a_node() {
    skylark_telemetry::metrics_handle();
    let bus = bus();
    let node = Node::start(&bus, "n1", Duration::from_millis(500)).await;
    let e = engine();
    let _publisher = publish(&e, &node, "spread", false).await;
    let vs = viewers(&e, &format!("{}/whep/spread", node.bridge), 6).await;
    eventually(
        "a sibling worker pulls the room",
        Duration::from_secs(5),
        || async { metric("skylark_sfu_sibling_pulls ") == 1.0 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = node.stats().await;
    assert_eq!(stats.subscribers, 6);
    assert_eq!(stats.relays_out, 0, "a sibling worker is no relay link");
    let room = stats.rooms.iter().find(|r| r.room_id == "spread").unwrap();
    assert_eq!(room.subscribers, 6, "rooms merge over workers");
    assert_intact(vs, 60).await;
    eventually(
        "the sibling pull stops when its viewers left",
        Duration::from_secs(10),
        || async { metric("skylark_sfu_sibling_pulls ") == 0.0 },
    )
    .await;
}
