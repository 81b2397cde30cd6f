//! End-to-end proof that the peers work: a real WHIP publisher and real WHEP viewers
//! (str0m, UDP, DTLS, SRTP) against a tiny in-test "reflector" server, no Skylark.
//!
//! The reflector is the shape of str0m's `examples/chat.rs`: an axum app answers
//! WHIP/WHEP offers with server-side `Rtc`s, and one loop task owns those `Rtc`s on
//! one UDP socket and forwards the publisher's frames to every viewer (of a simulcast
//! publisher: every layer, or the one the test picks, like an SFU).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use skylark_loadgen::peer::{Engine, EngineConfig};
use skylark_loadgen::source::VideoConfig;
use skylark_loadgen::swarm::{PublishConfig, Swarm, SwarmConfig};
use skylark_loadgen::{Error, FailureCause};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const STREAM_KEY: &str = "test-stream-key";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Publisher,
    Viewer,
}

enum Cmd {
    Add(u64, Role, Box<Rtc>),
    Remove(u64),
    /// Forward only this simulcast layer from now on, and ask the publisher for a
    /// keyframe of it (what an SFU does when it moves viewers to a layer).
    Follow(Rid),
}

#[derive(Clone)]
struct AppState {
    udp_addr: SocketAddr,
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: Arc<AtomicU64>,
    deletes: Arc<AtomicU64>,
}

/// A running reflector: HTTP on one port, all media on one UDP port.
struct Reflector {
    http: SocketAddr,
    deletes: Arc<AtomicU64>,
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Reflector {
    async fn start() -> Reflector {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        tokio::spawn(media_loop(socket, rx, cancel.clone()));
        let state = AppState {
            udp_addr,
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            deletes: Arc::new(AtomicU64::new(0)),
        };
        let deletes = state.deletes.clone();
        let tx = state.tx.clone();
        let app = Router::new()
            .route("/whip", post(whip))
            .route("/whep/{room}", post(whep))
            .route("/broken", post(broken))
            .route("/session/{id}", delete(end_session))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let shutdown = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .unwrap();
        });
        Reflector {
            http,
            deletes,
            cancel,
            tx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Forwards only simulcast layer `rid` from now on (and asks for its keyframe).
    fn follow(&self, rid: &str) {
        self.tx.send(Cmd::Follow(rid.into())).unwrap();
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn whip(State(s): State<AppState>, headers: HeaderMap, offer: String) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {STREAM_KEY}")) {
        return (StatusCode::UNAUTHORIZED, "bad stream key").into_response();
    }
    accept(&s, Role::Publisher, &offer)
}

async fn whep(State(s): State<AppState>, Path(_room): Path<String>, offer: String) -> Response {
    accept(&s, Role::Viewer, &offer)
}

/// Answers 201 with a body that is not SDP: the client must fail cleanly.
async fn broken() -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, "/session/999")],
        "this is not an SDP answer",
    )
        .into_response()
}

async fn end_session(State(s): State<AppState>, Path(id): Path<u64>) -> StatusCode {
    s.deletes.fetch_add(1, Ordering::Relaxed);
    let _ = s.tx.send(Cmd::Remove(id));
    StatusCode::OK
}

fn accept(s: &AppState, role: Role, offer: &str) -> Response {
    let offer = match SdpOffer::from_sdp_string(offer) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    // Like the Skylark SFU: ICE-lite, H.264 42e01f packetization-mode 1 and Opus.
    let mut cfg = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false);
    cfg.codec_config()
        .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(s.udp_addr, "udp").unwrap());
    let answer = match rtc.sdp_api().accept_offer(offer) {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = s.tx.send(Cmd::Add(id, role, Box::new(rtc)));
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            // Relative on purpose: the client resolves it against the POST URL.
            (header::LOCATION, format!("/session/{id}")),
        ],
        answer.to_sdp_string(),
    )
        .into_response()
}

struct Client {
    id: u64,
    role: Role,
    rtc: Rtc,
    kinds: HashMap<Mid, MediaKind>,
    next_timeout: Instant,
}

enum Forward {
    Media(Box<MediaData>),
    Keyframe(KeyframeRequest),
}

impl Client {
    fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.kinds
            .iter()
            .find_map(|(m, k)| (*k == kind).then_some(*m))
    }

    /// Polls until str0m wants a timeout; returns what must go to other clients.
    fn poll(&mut self, socket: &UdpSocket, out: &mut Vec<(Role, Forward)>) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::MediaAdded(m) => {
                        self.kinds.insert(m.mid, m.kind);
                    }
                    Event::MediaData(d) if self.role == Role::Publisher => {
                        out.push((self.role, Forward::Media(Box::new(d))));
                    }
                    Event::KeyframeRequest(r) if self.role == Role::Viewer => {
                        out.push((self.role, Forward::Keyframe(r)));
                    }
                    _ => {}
                },
                Err(_) => self.rtc.disconnect(),
            }
        }
    }
}

async fn media_loop(
    socket: UdpSocket,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    cancel: CancellationToken,
) {
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 2000];
    let local = socket.local_addr().unwrap();
    let mut forward = Vec::new();
    let mut layer: Option<Rid> = None;
    loop {
        for c in &mut clients {
            c.poll(&socket, &mut forward);
        }
        for (_, f) in forward.drain(..) {
            match f {
                Forward::Media(d) => {
                    if d.rid.is_some() && layer.is_some() && d.rid != layer {
                        continue;
                    }
                    for v in clients.iter_mut().filter(|c| c.role == Role::Viewer) {
                        let kind = if d.params.spec().codec.is_video() {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        };
                        let Some(mid) = v.mid_of(kind) else { continue };
                        let Some(w) = v.rtc.writer(mid) else { continue };
                        let Some(pt) = w.match_params(d.params) else {
                            continue;
                        };
                        let _ = w.write(pt, d.network_time, d.time, d.data.clone());
                    }
                }
                Forward::Keyframe(r) => {
                    for p in clients.iter_mut().filter(|c| c.role == Role::Publisher) {
                        if let Some(mid) = p.mid_of(MediaKind::Video) {
                            if let Some(mut w) = p.rtc.writer(mid) {
                                // For the layer followed (a simulcast stream has
                                // no keyframe without a RID).
                                let _ = w.request_keyframe(layer, r.kind);
                            }
                        }
                    }
                }
            }
        }
        // Writes above produced output: poll once more before sleeping.
        for c in &mut clients {
            c.poll(&socket, &mut forward);
        }
        clients.retain(|c| c.rtc.is_alive());

        let next = clients
            .iter()
            .map(|c| c.next_timeout)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => match cmd {
                Some(Cmd::Add(id, role, rtc)) => clients.push(Client {
                    id,
                    role,
                    rtc: *rtc,
                    kinds: HashMap::new(),
                    next_timeout: Instant::now(),
                }),
                Some(Cmd::Remove(id)) => clients.retain(|c| c.id != id),
                Some(Cmd::Follow(rid)) => {
                    layer = Some(rid);
                    for p in clients.iter_mut().filter(|c| c.role == Role::Publisher) {
                        let Some(mid) = p.mid_of(MediaKind::Video) else { continue };
                        if let Some(mut w) = p.rtc.writer(mid) {
                            let _ = w.request_keyframe(Some(rid), KeyframeRequestKind::Pli);
                        }
                    }
                }
                None => return,
            },
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = DatagramRecv::try_from(&buf[..n]) else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp, source, destination: local, contents,
                });
                if let Some(c) = clients.iter_mut().find(|c| c.rtc.accepts(&input)) {
                    if c.rtc.handle_input(input).is_err() {
                        c.rtc.disconnect();
                    }
                }
            }
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let now = Instant::now();
        for c in clients.iter_mut().filter(|c| c.next_timeout <= now) {
            if c.rtc.handle_input(Input::Timeout(now)).is_err() {
                c.rtc.disconnect();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_five_viewers_through_a_reflector() {
    let server = Reflector::start().await;
    let started = Instant::now();
    let config = SwarmConfig {
        publish: Some(PublishConfig {
            whip_url: server.url("/whip"),
            stream_key: STREAM_KEY.into(),
            video: VideoConfig {
                bitrate_kbps: 800,
                gop: Duration::from_secs(2),
            },
            simulcast: false,
        }),
        whep_url: server.url("/whep/room1"),
        viewers: 5,
        ramp_per_sec: 10.0,
        duration: Duration::from_secs(3),
        workers: 2,
        ..Default::default()
    };
    let swarm = Swarm::start(config, CancellationToken::new());
    let progress = swarm.progress();
    let report = swarm.wait().await.expect("the run completes");
    let wall = started.elapsed();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    println!("wall time {wall:?}");

    assert_eq!(report.viewers.requested, 5);
    assert_eq!(report.viewers.connected, 5, "{report:?}");
    assert_eq!(report.viewers.playing, 5, "every viewer got a keyframe");
    assert_eq!(report.viewers.failed, 0, "{:?}", report.failures);
    assert!(
        report.frames_received >= 5 * 40,
        "{}",
        report.frames_received
    );
    assert_eq!(report.frames_bad_hash, 0);
    assert_eq!(report.frames_unmarked, 0);
    assert!(report.loss_pct < 5.0, "loss {}", report.loss_pct);
    assert!(report.audio_packets >= 5 * 80, "{}", report.audio_packets);
    let latency = report.latency_ms.expect("latency recorded");
    assert_eq!(latency.count, report.frames_received);
    assert!(latency.p50 < 200.0, "{latency:?}");
    let join = report.join_ms.expect("join times");
    assert_eq!(join.count, 5);
    assert!(join.max < 3000.0, "{join:?}");
    let kbps = report.kbps.expect("bitrates");
    assert!(kbps.min > 400.0, "{kbps:?}");
    let publisher = report.publisher.as_ref().expect("publisher stats");
    assert!(publisher.frames_sent >= 90, "{publisher:?}");
    assert_eq!(publisher.write_errors, 0);
    assert!(progress.borrow().elapsed_s > 2.0);
    // 5 viewers + the publisher said goodbye.
    assert_eq!(report.delete_failures, 0);
    assert_eq!(server.deletes.load(Ordering::Relaxed), 6);
    assert!(wall < Duration::from_secs(10), "{wall:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_api_errors_and_stop() {
    let server = Reflector::start().await;
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();

    // A refused stream key comes back typed, with status and body.
    let err = engine
        .publish(&server.url("/whip"), "wrong", VideoConfig::default())
        .await
        .unwrap_err();
    match &err {
        Error::Status { status, body } => {
            assert_eq!(*status, 401);
            assert_eq!(body, "bad stream key");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.cause(), FailureCause::HttpStatus(401));

    // A 201 whose body is not SDP is a bad answer, and the session is released.
    let err = engine.view(&server.url("/broken"), None).await.unwrap_err();
    assert_eq!(err.cause(), FailureCause::BadAnswer, "{err}");
    assert_eq!(server.deletes.load(Ordering::Relaxed), 1);

    // Nothing listens: a connect error, not a hang.
    let err = engine
        .view("http://127.0.0.1:9/whep/x", None)
        .await
        .unwrap_err();
    assert_eq!(err.cause(), FailureCause::HttpConnect, "{err}");

    // Publish, watch one keyframe, stop with DELETE to the resolved Location.
    let publisher = engine
        .publish(&server.url("/whip"), STREAM_KEY, VideoConfig::default())
        .await
        .unwrap();
    let location = publisher.location().unwrap().clone();
    assert!(location.as_str().starts_with(&server.url("/session/")));
    publisher
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    let viewer = engine
        .view(&server.url("/whep/room2"), Some("viewer-token"))
        .await
        .unwrap();
    let stats = viewer.wait_playing(Duration::from_secs(5)).await.unwrap();
    assert!(stats.keyframes >= 1 && stats.join_ms.is_some());
    let (stats, deleted) = viewer.close().await;
    deleted.unwrap();
    let stats = stats.unwrap();
    assert_eq!(stats.frames_bad_hash, 0);
    assert!(stats.latency_ms.is_some());
    let (pstats, deleted) = publisher.stop().await;
    deleted.unwrap();
    assert!(pstats.unwrap().frames_sent > 0);
    assert_eq!(server.deletes.load(Ordering::Relaxed), 3);
    engine.shutdown().await;
}

/// A larger run for eyeballing engine cost: `LOADGEN_VIEWERS=100 cargo test --release
/// --test reflector -- --ignored --nocapture`. The in-test reflector (O(n) demux per
/// datagram) is the bottleneck long before the engine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale_probe() {
    let viewers = std::env::var("LOADGEN_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let server = Reflector::start().await;
    let config = SwarmConfig {
        publish: Some(PublishConfig {
            whip_url: server.url("/whip"),
            stream_key: STREAM_KEY.into(),
            video: VideoConfig {
                bitrate_kbps: 500,
                gop: Duration::from_secs(2),
            },
            simulcast: false,
        }),
        whep_url: server.url("/whep/room1"),
        viewers,
        ramp_per_sec: 50.0,
        duration: Duration::from_secs(6),
        workers: 2,
        ..Default::default()
    };
    let report = Swarm::start(config, CancellationToken::new())
        .wait()
        .await
        .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// A simulcast publisher through a reflector that forwards one layer: the viewer sees
/// that layer's picture size and marker, a keyframe request for one RID makes that
/// layer (and no other) send a keyframe, and a switch to another layer is counted
/// without breaking the frame sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_through_a_reflector() {
    let server = Reflector::start().await;
    server.follow("m");
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    // A GOP longer than the test: every keyframe after the first is a requested one.
    let video = VideoConfig {
        bitrate_kbps: 900,
        gop: Duration::from_secs(120),
    };
    let publisher = engine
        .publish_simulcast(&server.url("/whip"), STREAM_KEY, video)
        .await
        .unwrap();
    let connected = publisher
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    let sent: Vec<(Option<&str>, u32, u32, u32)> = connected
        .layers
        .iter()
        .map(|l| (l.rid.as_deref(), l.width, l.height, l.target_kbps))
        .collect();
    assert_eq!(
        sent,
        [
            (Some("h"), 320, 240, 900),
            (Some("m"), 160, 120, 300),
            (Some("l"), 80, 60, 112)
        ]
    );

    let viewer = engine.view(&server.url("/whep/room3"), None).await.unwrap();
    let joined = viewer.wait_playing(Duration::from_secs(5)).await.unwrap();
    assert_eq!(joined.layer, Some(1), "{joined:?}");
    assert_eq!((joined.width, joined.height), (Some(160), Some(120)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Move to l: a PLI for l only.
    let before = publisher.stats().await.unwrap();
    server.follow("l");
    let deadline = Instant::now() + Duration::from_secs(5);
    let moved = loop {
        let s = viewer.stats().await.unwrap();
        if s.width == Some(80) {
            break s;
        }
        assert!(Instant::now() < deadline, "no 80x60 keyframe: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(moved.layer, Some(2));
    assert_eq!(moved.height, Some(60));
    assert_eq!(moved.layer_switches, 1, "{moved:?}");
    let after = publisher.stats().await.unwrap();
    let keys = |s: &skylark_loadgen::peer::PublisherStats| -> Vec<u64> {
        s.layers.iter().map(|l| l.keyframes_sent).collect()
    };
    let requests = |s: &skylark_loadgen::peer::PublisherStats| -> Vec<u64> {
        s.layers.iter().map(|l| l.keyframe_requests).collect()
    };
    let (k0, k1) = (keys(&before), keys(&after));
    assert_eq!((k1[0], k1[1]), (k0[0], k0[1]), "only l sent a keyframe");
    assert_eq!(k1[2], k0[2] + 1, "l answered its PLI");
    let (r0, r1) = (requests(&before), requests(&after));
    assert_eq!((r1[0], r1[1], r1[2]), (r0[0], r0[1], r0[2] + 1));

    let (stats, deleted) = viewer.close().await;
    deleted.unwrap();
    let stats = stats.unwrap();
    assert_eq!(stats.frames_bad_hash, 0, "{stats:?}");
    assert_eq!(stats.frames_unmarked, 0, "{stats:?}");
    // Layers stay in step (frame n of every layer has sequence number n): a switch
    // leaves no gap.
    assert_eq!(stats.frames_missing, 0, "{stats:?}");
    let (pstats, deleted) = publisher.stop().await;
    deleted.unwrap();
    let pstats = pstats.unwrap();
    assert_eq!(pstats.write_errors, 0);
    let frames: Vec<u64> = pstats.layers.iter().map(|l| l.frames_sent).collect();
    assert!(
        frames[0] > 30 && frames.iter().all(|f| *f == frames[0]),
        "{frames:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_session_vanishes_rejoins_and_the_report_counts_it() {
    let server = Reflector::start().await;
    let config = SwarmConfig {
        publish: Some(PublishConfig {
            whip_url: server.url("/whip"),
            stream_key: STREAM_KEY.into(),
            video: VideoConfig::default(),
            simulcast: false,
        }),
        whep_url: server.url("/whep/room1"),
        viewers: 3,
        ramp_per_sec: 0.0,
        duration: Duration::from_secs(5),
        rejoin: Some(skylark_loadgen::peer::RejoinPolicy {
            stall_after: Duration::from_millis(500),
            ..Default::default()
        }),
        ..Default::default()
    };
    let swarm = Swarm::start(config, CancellationToken::new());
    // The server forgets one viewer's session (ids: the publisher is 1), as a dead node
    // would: its media stops without a word.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let _ = server.tx.send(Cmd::Remove(2));
    let report = swarm.wait().await.expect("the run completes");
    let rejoins = report.rejoins.as_ref().expect("a rejoin report");
    assert_eq!(rejoins.viewers_rejoined, 1, "{rejoins:?}");
    assert_eq!(rejoins.rejoins, 1, "{rejoins:?}");
    assert_eq!(rejoins.by_reason.get("stalled"), Some(&1), "{rejoins:?}");
    let frozen = rejoins.play_again_ms.expect("it played again");
    assert!(frozen.max < 5000.0, "{frozen:?}");
    assert_eq!((rejoins.still_down, rejoins.gave_up), (0, 0));
    assert_eq!(report.viewers.playing, 3, "{report:?}");
    assert_eq!(report.frames_bad_hash, 0);
    println!("rejoined: picture frozen {:.0} ms", frozen.max);
}
