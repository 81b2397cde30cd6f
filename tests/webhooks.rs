//! Webhooks end to end: the `skylark` binary, an FFmpeg RTMP publisher, and a real HTTP
//! receiver in this test that checks every `Skylark-Signature` with an independent
//! HMAC-SHA256 (Python's `hmac` module). One publish/unpublish cycle and a key rotation
//! arrive in order; a receiver down for 30 s, a SIGKILLed all-in-one server, and a
//! SIGKILLed api and signaling of the scale-out layout (Redis) lose nothing; the
//! admission hook allows, refuses, and falls back to its default. The outbox runs on
//! SQLite and on PostgreSQL (`postgres_schema_url`: a failure in CI when unreachable).

mod common;

use common::webhook_receiver::{Receiver, DELIVERY_DEADLINE, OPS_SECRET};
use common::{
    creator_with_room, debian_ffmpeg, eventually, free_port, postgres_schema_url, rtmp_port,
    rtmp_push, send_json, wait_live, wait_offline, Options, Skylark,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Which database the server keeps its outbox in.
#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

fn server_env(db: Db, receiver: &Receiver) -> HashMap<String, String> {
    let mut env = env_of(&[
        ("SKYLARK_WEBHOOK_URLS", receiver.url("/ops")),
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.into()),
        // The receiver is on loopback: creators' webhooks may go there in these tests.
        ("SKYLARK_WEBHOOK_ALLOW_PRIVATE", "true".into()),
    ]);
    if let Db::Postgres = db {
        let url = postgres_schema_url("webhooks");
        if url.is_empty() {
            return env; // PostgreSQL unreachable outside CI: said, and SQLite instead
        }
        env.insert("DATABASE_URL".into(), url);
    }
    env
}

async fn start(db: Db, receiver: &Receiver, dir: Option<PathBuf>) -> Skylark {
    Skylark::start_with(Options {
        env: server_env(db, receiver),
        dir,
        ..Default::default()
    })
    .await
}

const CYCLE: [&str; 4] = [
    "room.live",
    "publisher.connected",
    "publisher.disconnected",
    "room.offline",
];

/// Registers the creator's endpoint at `/creator` for the cycle's events and key
/// rotation; returns its id.
async fn register(sk: &Skylark, token: &str, receiver: &Receiver) -> String {
    let events = json!([
        "room.live",
        "room.offline",
        "publisher.connected",
        "publisher.disconnected",
        "stream_key.rotated",
        "room.live"
    ]);
    let v = register_at(sk, token, receiver, "/creator", events).await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        5,
        "repeats dropped: {v}"
    );
    v["id"].as_str().unwrap().to_string()
}

/// Registers the creator's endpoint at the receiver's `path` for `events`, the receiver
/// told its secret; returns the API's answer.
async fn register_at(
    sk: &Skylark,
    token: &str,
    receiver: &Receiver,
    path: &str,
    events: Value,
) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks", sk.base))
        .bearer_auth(token)
        .json(&json!({"url": receiver.url(path), "events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{v}");
    receiver.set_secret(path, secret);
    v
}

/// Polls `GET path` (under `/api/v1`) as `token` until `check` holds for its JSON.
async fn wait_api(
    sk: &Skylark,
    token: &str,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let c = reqwest::Client::new();
    eventually(Duration::from_secs(60), what, || async {
        let v = send_json(
            c.get(format!("{}/api/v1{path}", sk.base))
                .bearer_auth(token),
        )
        .await;
        if check(&v) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
}

/// The first webhook's delivery status in a `GET /webhooks` answer.
fn status(v: &Value) -> &Value {
    &v["webhooks"][0]["status"]
}

/// The deliveries in a `GET /webhooks/{id}/deliveries` answer.
fn deliveries(v: &Value) -> &[Value] {
    v["deliveries"].as_array().map_or(&[], Vec::as_slice)
}

/// `pairs` as a process environment.
fn env_of(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// An FFmpeg RTMP publisher of `room` (with `key`), once the room is live.
async fn push_live(sk: &Skylark, ffmpeg: &str, room: &str, key: &str) -> common::Push {
    let log = sk
        .dir
        .join(format!("ffmpeg-{room}-{}.log", common::unique_id()));
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", rtmp_port(sk));
    let push = rtmp_push(ffmpeg, &url, 600, &log);
    wait_live(&sk.base, room, &log).await;
    push
}

/// Publishes over RTMP until the room is live, then stops the publisher and waits for
/// the room to go offline.
async fn publish_cycle(sk: &Skylark, ffmpeg: &str, room: &str, key: &str) {
    let push = push_live(sk, ffmpeg, room, key).await;
    // Live for a few reconciler rounds (one a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(push);
    wait_offline(&sk.base, room).await;
}

async fn rotate(sk: &Skylark, token: &str, room: &str) {
    common::rotate_key(&sk.base, token, room).await;
}

async fn cycle_in_order(db: Db) {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let receiver = Receiver::start().await;
    let sk = start(db, &receiver, None).await;
    let (token, room, key) = creator_with_room(&sk.base, "public").await;
    let id = register(&sk, &token, &receiver).await;

    publish_cycle(&sk, ffmpeg, &room, &key).await;
    // The reconciler writes `room.offline` within a round of the bus saying so: the
    // rotation after it is after it.
    receiver.wait_events("/creator", &CYCLE).await;
    rotate(&sk, &token, &room).await;
    let mut expected = CYCLE.to_vec();
    expected.push("stream_key.rotated");
    receiver.wait_events("/creator", &expected).await;
    // Deployment-wide: every event of every room, signed with the operators' secret.
    receiver.wait_events("/ops", &expected).await;

    let calls = receiver.calls("/creator");
    let connected = calls
        .iter()
        .find(|c| c.event_type == "publisher.connected")
        .unwrap();
    assert_eq!(
        connected.body["data"]["protocol"], "rtmp",
        "{:?}",
        connected
    );
    assert_eq!(connected.body["room"]["id"], room.as_str());
    assert_eq!(connected.body["type"], "publisher.connected");
    assert!(connected.body["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(connected.body["id"], connected.event_id.as_str());
    assert!(connected.body["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let disconnected = calls
        .iter()
        .find(|c| c.event_type == "publisher.disconnected")
        .unwrap();
    assert_eq!(
        disconnected.body["data"]["session_id"], connected.body["data"]["session_id"],
        "the session that connected is the one that left"
    );

    // The API shows the deliveries and the endpoint's status, never its secret.
    let c = reqwest::Client::new();
    let list = send_json(
        c.get(format!("{}/api/v1/webhooks", sk.base))
            .bearer_auth(&token),
    )
    .await;
    let hook = &list["webhooks"][0];
    assert_eq!(hook["id"], id.as_str(), "{list}");
    assert!(hook.get("secret").is_none(), "{list}");
    let acknowledged = |v: &Value| status(v)["last_status"] == 200 && status(v)["pending"] == 0;
    wait_api(
        &sk,
        &token,
        "/webhooks",
        "the last attempt acknowledged",
        acknowledged,
    )
    .await;
    let all_delivered = |v: &Value| {
        let d = deliveries(v);
        d.len() == 5 && d.iter().all(|d| d["state"] == "delivered")
    };
    wait_api(
        &sk,
        &token,
        &format!("/webhooks/{id}/deliveries"),
        "all delivered",
        all_delivered,
    )
    .await;
    let metrics = sk.metrics().await;
    assert!(
        metrics.contains("skylark_webhook_deliveries_total{result=\"ok\"}"),
        "{metrics}"
    );

    // Someone else's webhook is not found; the owner deletes theirs.
    let (other, _, _) = creator_with_room(&sk.base, "public").await;
    let del = |t: &str| {
        c.delete(format!("{}/api/v1/webhooks/{id}", sk.base))
            .bearer_auth(t.to_string())
            .send()
    };
    assert_eq!(del(&other).await.unwrap().status(), 404);
    assert_eq!(del(&token).await.unwrap().status(), 204);
    assert_eq!(del(&token).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cycle_arrives_signed_and_in_order_on_sqlite() {
    cycle_in_order(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cycle_arrives_signed_and_in_order_on_postgres() {
    cycle_in_order(Db::Postgres).await;
}

/// The receiver's port is closed for 30 s while a room goes live and offline and its
/// key is rotated: once it is back, every event arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_30_s_loses_nothing() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let mut receiver = Receiver::start().await;
    let sk = start(Db::Sqlite, &receiver, None).await;
    let (token, room, key) = creator_with_room(&sk.base, "public").await;
    let id = register(&sk, &token, &receiver).await;

    receiver.down().await;
    let down_since = tokio::time::Instant::now();
    publish_cycle(&sk, ffmpeg, &room, &key).await;
    // Until the reconciler has written `room.offline` (a round after the bus says so):
    // pending are the four of the cycle.
    let four = |v: &Value| status(v)["pending"] == 4;
    wait_api(&sk, &token, "/webhooks", "the cycle in the outbox", four).await;
    rotate(&sk, &token, &room).await;
    // The failures are visible through the API while the receiver is down.
    let failing = |v: &Value| status(v)["last_error"].is_string() && status(v)["pending"] == 5;
    wait_api(&sk, &token, "/webhooks", "a failed attempt shown", failing).await;
    let retried = |v: &Value| {
        deliveries(v)
            .iter()
            .any(|d| d["attempts"].as_i64() >= Some(1) && d["next_retry_at_ms"].is_i64())
    };
    wait_api(
        &sk,
        &token,
        &format!("/webhooks/{id}/deliveries"),
        "a retry due",
        retried,
    )
    .await;
    tokio::time::sleep_until(down_since + Duration::from_secs(30)).await;
    assert!(receiver.calls("/creator").is_empty());
    receiver.up().await;

    let mut expected = CYCLE.to_vec();
    expected.push("stream_key.rotated");
    receiver.wait_events("/creator", &expected).await;
    receiver.wait_events("/ops", &expected).await;
}

/// The server is SIGKILLed while a room is live and its first events are still
/// undelivered (the receiver is down): restarted on the same data, it sends them, and
/// its reconciler, finding the room gone from the bus, sends the rest.
async fn killed_mid_stream(db: Db) {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let mut receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = server_env(db, &receiver);
    let boot = |env: HashMap<String, String>| {
        Skylark::start_with(Options {
            env,
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
    };
    let mut sk = boot(env.clone()).await;
    let (token, room, key) = creator_with_room(&sk.base, "public").await;
    register(&sk, &token, &receiver).await;
    receiver.down().await;

    let push = push_live(&sk, ffmpeg, &room, &key).await;
    // Until the reconciler has written the live transition (one round a second).
    let live_pending = |v: &Value| status(v)["pending"].as_i64() >= Some(2);
    wait_api(
        &sk,
        &token,
        "/webhooks",
        "room.live in the outbox",
        live_pending,
    )
    .await;
    sk.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    sk.child.wait().unwrap();
    drop(push);

    receiver.up().await;
    let _sk = boot(env).await;
    receiver.wait_events("/creator", &CYCLE).await;
    receiver.wait_events("/ops", &CYCLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_on_sqlite() {
    killed_mid_stream(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_on_postgres() {
    killed_mid_stream(Db::Postgres).await;
}

/// `room.viewers` is opt-in and periodic: an endpoint subscribed to it gets a live
/// room's count (one WebRTC viewer here, by transport) every 30 s, not every reconciler
/// round; the cycle's endpoint, not subscribed, gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_viewers_comes_every_30_s_to_endpoints_subscribed_to_it() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let receiver = Receiver::start().await;
    let sk = start(Db::Sqlite, &receiver, None).await;
    let (token, room, key) = creator_with_room(&sk.base, "public").await;
    register(&sk, &token, &receiver).await;
    register_at(&sk, &token, &receiver, "/viewers", json!(["room.viewers"])).await;
    let _push = push_live(&sk, ffmpeg, &room, &key).await;
    let (_engine, viewer) = common::watching(&sk.base, &room).await;

    let viewers = || -> Vec<Value> {
        receiver
            .calls("/viewers")
            .into_iter()
            .map(|c| c.body)
            .collect()
    };
    // The first 30 s after `room.live`, the next 30 s after that.
    eventually(Duration::from_secs(120), "two room.viewers", || async {
        let got = viewers();
        if got.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let got = viewers();
    let at = |v: &Value| {
        let t = v["created_at"].as_str().unwrap();
        skylark_media::hls::parse_pdt(t).unwrap_or_else(|| panic!("created_at {t}"))
    };
    let apart_ms = at(&got[1]) - at(&got[0]);
    assert!(
        apart_ms >= 29_000,
        "room.viewers {apart_ms} ms apart: {got:?}"
    );
    for v in &got {
        assert_eq!(v["type"], "room.viewers", "{v}");
        assert_eq!(v["room"]["id"], room.as_str(), "{v}");
    }
    let last = &got[1]["data"];
    assert_eq!(
        last["by_transport"],
        json!({"webrtc": 1, "hls": 0, "flv": 0}),
        "{last}"
    );
    assert_eq!(last["viewers"], 1, "{last}");
    // Only the cycle reached the endpoint that did not ask for the count.
    assert!(
        receiver
            .calls("/creator")
            .iter()
            .all(|c| c.event_type != "room.viewers"),
        "room.viewers sent to an endpoint not subscribed to it"
    );
    let _ = viewer.close().await;
}

/// A WHIP offer with `key` (its SDP never gets parsed when admission refuses).
async fn whip_attempt(base: &str, key: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/whip"))
        .bearer_auth(key)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The admission hook: 2xx allows (an RTMP publish goes live), 403 refuses with a clear
/// error, no answer in time means the default (deny here), and a hook that is down
/// with `allow` as the default lets publishers in. That second server keeps creators'
/// webhooks off private addresses, as deployments do by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_hook_allows_refuses_and_defaults() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.set_secret("/admit", OPS_SECRET);
    let env = env_of(&[
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.to_string()),
        ("SKYLARK_ADMISSION_URL", receiver.url("/admit")),
        ("SKYLARK_ADMISSION_TIMEOUT_MS", "1000".into()),
    ]);
    let sk = Skylark::start_with(Options {
        env,
        ..Default::default()
    })
    .await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;

    // Refused: 403 and why, over WHIP.
    receiver.shared.admit_status.store(403, Ordering::Relaxed);
    let (status, body) = whip_attempt(&sk.base, &key).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admission hook refused"), "{body}");
    let call = receiver.calls("/admit").pop().expect("the hook was asked");
    assert_eq!(call.body["room"]["id"], room.as_str());
    assert_eq!(call.body["protocol"], "whip");
    assert_eq!(call.body["client_ip"], "127.0.0.1");

    // Allowed: an RTMP publish goes live, and the hook was told it is RTMP.
    receiver.shared.admit_status.store(204, Ordering::Relaxed);
    let push = push_live(&sk, ffmpeg, &room, &key).await;
    assert_eq!(
        receiver.calls("/admit").pop().unwrap().body["protocol"],
        "rtmp"
    );
    drop(push);
    wait_offline(&sk.base, &room).await;

    // No answer within the timeout: the default, deny.
    receiver
        .shared
        .admit_delay_ms
        .store(5000, Ordering::Relaxed);
    let (status, body) = whip_attempt(&sk.base, &key).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    drop(sk);

    // A hook that is down, with `allow` as the default: publishers get in.
    let closed = free_port();
    let env = env_of(&[
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.to_string()),
        (
            "SKYLARK_ADMISSION_URL",
            format!("http://127.0.0.1:{closed}/admit"),
        ),
        ("SKYLARK_ADMISSION_DEFAULT", "allow".into()),
    ]);
    let sk = Skylark::start_with(Options {
        env,
        ..Default::default()
    })
    .await;
    let (token, room, key) = creator_with_room(&sk.base, "public").await;
    let push = push_live(&sk, ffmpeg, &room, &key).await;
    drop(push);

    // Without SKYLARK_WEBHOOK_ALLOW_PRIVATE, a creator's webhook can't reach loopback
    // (nor any private address): its deliveries fail, saying why, and nothing is sent.
    let id = register(&sk, &token, &receiver).await;
    rotate(&sk, &token, &room).await;
    let refused = |v: &Value| {
        deliveries(v).iter().any(|d| {
            d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("private address"))
        })
    };
    wait_api(
        &sk,
        &token,
        &format!("/webhooks/{id}/deliveries"),
        "a refused delivery",
        refused,
    )
    .await;
    assert!(receiver.calls("/creator").is_empty());
}

/// The Kubernetes layout (api, sfu, signaling as processes sharing Redis and
/// PostgreSQL): the api is SIGKILLed while a room is live and restarted, then the
/// signaling process holding the RTMP publisher is SIGKILLed. The receiver still gets
/// the whole cycle, each event once in order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_api_and_signaling_mid_stream_loses_nothing() {
    let Some(redis) = common::redis_url() else {
        return;
    };
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let shared = common::scale_out_env(&redis, api_grpc, dir.path(), &[]);
    let mut api_env = server_env(Db::Postgres, &receiver);
    api_env.insert("SKYLARK_GRPC_ADDR".into(), format!("127.0.0.1:{api_grpc}"));
    let api_env = shared(
        &api_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
    );
    let start_api = || common::start_target("api", api_env.clone(), dir.path(), "api");
    let mut api = start_api().await;
    let _sfu = common::start_sfu(&shared, dir.path()).await;
    let mut sig = common::start_target("signaling", shared(&[]), dir.path(), "sig").await;

    let (token, room, key) = creator_with_room(&api.base, "public").await;
    register(&api, &token, &receiver).await;
    let log = dir.path().join("ffmpeg-cluster.log");
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", rtmp_port(&sig));
    let _push = rtmp_push(ffmpeg, &url, 600, &log);
    wait_live(&api.base, &room, &log).await;
    receiver.wait_events("/creator", &CYCLE[..2]).await;

    // The api dies mid-stream and comes back: the room is still live on the bus, so
    // its reconciler writes nothing new.
    api.child.kill().unwrap();
    api.child.wait().unwrap();
    let api = start_api().await;
    wait_live(&api.base, &room, &log).await;

    // The signaling process holding the publisher dies: the room goes offline.
    sig.child.kill().unwrap();
    sig.child.wait().unwrap();
    receiver.wait_events("/creator", &CYCLE).await;
    receiver.wait_events("/ops", &CYCLE).await;
    let connected = receiver
        .calls("/creator")
        .into_iter()
        .find(|c| c.event_type == "publisher.connected")
        .unwrap();
    assert_eq!(connected.body["data"]["protocol"], "rtmp");
    // No transition was written twice (the restarted api found the state recorded).
    let ids: std::collections::HashSet<String> = receiver
        .calls("/ops")
        .into_iter()
        .filter(|c| c.event_type != "room.viewers")
        .map(|c| c.event_id)
        .collect();
    assert_eq!(ids.len(), CYCLE.len(), "{:?}", receiver.events("/ops"));
}

/// A receiver that is Python's own HTTPS server: checks the signature with the README's
/// own `verify` (its Python block, given as the last argument, run as written) and
/// appends `{"ok", "type"}` per request to `out`.
const PYTHON_HTTPS_RECEIVER: &str = r#"
import http.server, json, ssl, sys
port, cert, key, secret, out, readme = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
exec(readme)
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(secret, self.headers["Skylark-Signature"], body)
        with open(out, "a") as f:
            f.write(json.dumps({"ok": ok, "type": self.headers["Skylark-Event-Type"]}) + "\n")
        self.send_response(200 if ok else 401)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Receiver)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// The README's receiver code: the Python block of its Webhooks section.
fn readme_receiver() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n## Webhooks\n")
        .map(|(_, s)| s.split("\n## ").next().unwrap_or_default())
        .expect("the README's Webhooks section");
    let code = section
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code.to_string())
        .expect("a Python block in the README's Webhooks section");
    assert!(code.contains("def verify("), "{code}");
    code
}

/// `https://` endpoints: the server verifies the receiver's certificate (a test CA the
/// server is told to trust through OpenSSL's `SSL_CERT_FILE`) and delivers over TLS;
/// the receiver accepts the signature with the README's receiver code, run as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_delivered_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, out) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("received.jsonl"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success(), "openssl req");
    let port = free_port();
    // Killed on drop (as the FFmpeg pushes are), even when the test fails.
    let server = common::Push(
        std::process::Command::new("python3")
            .args(["-c", PYTHON_HTTPS_RECEIVER, &port.to_string()])
            .arg(&cert)
            .arg(&key)
            .arg(OPS_SECRET)
            .arg(&out)
            .arg(readme_receiver())
            .spawn()
            .expect("python3"),
    );
    eventually(
        Duration::from_secs(30),
        "the HTTPS receiver listens",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;

    let env = env_of(&[
        (
            "SKYLARK_WEBHOOK_URLS",
            format!("https://localhost:{port}/ops"),
        ),
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.into()),
        ("SSL_CERT_FILE", cert.display().to_string()),
    ]);
    let sk = Skylark::start_with(Options {
        env,
        ..Default::default()
    })
    .await;
    let (token, room, _) = creator_with_room(&sk.base, "public").await;
    rotate(&sk, &token, &room).await;
    eventually(
        DELIVERY_DEADLINE,
        "stream_key.rotated over https",
        || async {
            let got = std::fs::read_to_string(&out).unwrap_or_default();
            if got.contains(r#"{"ok": true, "type": "stream_key.rotated"}"#) {
                Ok(())
            } else {
                Err(got)
            }
        },
    )
    .await;
    drop(server);
    assert!(
        !std::fs::read_to_string(&out)
            .unwrap()
            .contains(r#""ok": false"#),
        "a signature that did not verify"
    );
}
