//! Runs `skylark` processes the way users and Kubernetes do, on free loopback ports.
#![allow(dead_code)]

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub mod browser;
pub mod cascade;
pub mod coturn;
pub mod cpu_group;
pub mod loadtest;
pub mod netns;
mod ports;
mod process_env;
pub mod turn;
pub mod udp_proxy;
pub mod webhook_receiver;
pub use ports::{free_port, unique_id};
pub use process_env::scrub_env;

/// The `SKYLARK_INTERNAL_SECRET` of every single-service process a test starts.
pub const INTERNAL_SECRET: &str = "test-internal-secret-test-internal-secret";

/// One `skylark` process; killed on drop, its log kept in its data dir.
/// The sum of a Prometheus series' samples in `text`: `series` is a name (every label
/// set summed) or a name with its labels (`x_total{reason="y"}`); 0 if absent.
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

pub struct Skylark {
    pub child: Child,
    pub base: String,
    /// The internal listener (`/metrics`), e.g. `http://127.0.0.1:41234`.
    pub internal: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Skylark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
pub struct Options {
    pub target: Option<&'static str>,
    pub env: HashMap<String, String>,
    pub dir: Option<PathBuf>,
}

impl Skylark {
    /// The all-in-one target on free ports, embedded defaults otherwise. WebRTC media binds
    /// port 0: the SFU announces the port it got, and nothing else needs to know it ahead.
    pub async fn start() -> Skylark {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Skylark {
        Self::start_at("127.0.0.1", opts).await
    }

    /// Binds HTTP, WebRTC and RTMP on `host` (loopback, or a test's own namespace link).
    pub async fn start_at(host: &str, opts: Options) -> Skylark {
        Self::launch(host, opts, &[]).await
    }

    /// As [`Skylark::start_with`], started by `launcher`: a program and its arguments
    /// that run the rest of the command line (`taskset -c 0`, a cgroup's `sh -c`).
    pub async fn start_through(launcher: &[String], opts: Options) -> Skylark {
        Self::launch("127.0.0.1", opts, launcher).await
    }

    async fn launch(host: &str, opts: Options, launcher: &[String]) -> Skylark {
        let (tmp, dir) = match opts.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let http = free_port();
        let base = format!("http://{host}:{http}");
        let mut env: HashMap<String, String> = [
            ("SKYLARK_HTTP_ADDR", format!("{host}:{http}")),
            ("SKYLARK_PUBLIC_URL", base.clone()),
            ("SKYLARK_DATA_DIR", dir.join("data").display().to_string()),
            ("SKYLARK_RTC_UDP_ADDR", format!("{host}:0")),
            ("SKYLARK_RTC_TCP_ADDR", format!("{host}:0")),
            ("SKYLARK_RTC_PUBLIC_IP", host.into()),
            ("SKYLARK_RTMP_ADDR", format!("{host}:{}", free_port())),
            // Port 0: the process logs what it bound; `internal` is read from that.
            ("SKYLARK_INTERNAL_ADDR", "127.0.0.1:0".into()),
            // Whatever the machine: every room spreads over two SFU workers.
            ("SKYLARK_SFU_WORKERS", "2".into()),
            ("RUST_LOG", "info,skylark_sfu=debug".into()),
            // Tests sign up and get a token at once; tests/signup_mail.rs covers `verify`.
            ("SKYLARK_SIGNUP", "open".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if opts.target.is_some() {
            // Single-service targets refuse to start without it; a test's processes share it.
            env.insert("SKYLARK_INTERNAL_SECRET".into(), INTERNAL_SECRET.into());
        }
        env.extend(opts.env);
        std::fs::create_dir_all(&dir).unwrap();
        let log_name = format!("skylark-{}-{http}.log", opts.target.unwrap_or("all"));
        let skylark = env!("CARGO_BIN_EXE_skylark");
        let mut cmd = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(skylark);
                c
            }
            None => Command::new(skylark),
        };
        if let Some(t) = opts.target {
            cmd.arg(t);
        }
        let s = Skylark::spawn(cmd, &env, base, (dir, tmp), &log_name).await;
        s.with_internal_on("127.0.0.1")
    }

    /// Runs `cmd` in `dir` with only `env` of the skylark settings (see [`scrub_env`]),
    /// its output to `dir/log_name`, and waits until it is ready at `base`.
    pub(crate) async fn spawn(
        mut cmd: Command,
        env: &HashMap<String, String>,
        base: String,
        (dir, tmp): (PathBuf, Option<tempfile::TempDir>),
        log_name: &str,
    ) -> Skylark {
        let log = std::fs::File::create(dir.join(log_name)).unwrap();
        scrub_env(&mut cmd);
        cmd.envs(env)
            .current_dir(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("start skylark");
        let mut s = Skylark {
            child,
            base,
            internal: String::new(),
            dir,
            _tmp: tmp,
        };
        s.wait_ready(log_name).await;
        s
    }

    /// Itself, its internal listener (`/metrics`) read from its log: on `host`, at the
    /// port it logged binding.
    pub(crate) fn with_internal_on(mut self, host: &str) -> Skylark {
        let port = logged_port(&self, "internal HTTP listening");
        self.internal = format!("http://{host}:{port}");
        self
    }

    async fn wait_ready(&mut self, log_name: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join(log_name)).unwrap_or_default();
                panic!("skylark exited with {st}:\n{log}");
            }
            assert!(Instant::now() < deadline, "skylark not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of its internal listener (never on the public port).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.internal))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    out += &std::fs::read_to_string(e.path()).unwrap_or_default();
                }
            }
        }
        out
    }
}

/// Sends `req` and parses its JSON body; panics on a transport error or a body that is not JSON.
pub async fn send_json(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// A creator with a room: `(access token, room id, stream key)`.
pub async fn creator_with_room(base: &str, visibility: &str) -> (String, String, String) {
    let c = reqwest::Client::new();
    let email = format!("u{}@example.com", unique_id());
    let v = send_json(
        c.post(format!("{base}/api/v1/auth/signup"))
            .json(&json!({"email": email, "password": "password123", "display_name": "T"})),
    )
    .await;
    let token = v["access_token"].as_str().unwrap().to_string();
    let v = send_json(
        c.post(format!("{base}/api/v1/rooms"))
            .bearer_auth(&token)
            .json(&json!({"title": "test room", "visibility": visibility})),
    )
    .await;
    (
        token,
        v["room"]["id"].as_str().unwrap().into(),
        v["stream_key"].as_str().unwrap().into(),
    )
}

#[path = "../../crates/media/tests/common/mod.rs"]
mod peers;
// Not every test binary that includes this module skips something.
#[allow(unused_imports)]
pub use peers::skip;

/// `program` from the test venv `scripts/test` fills (`~/.cache/skylark-test-venv`), if
/// it runs with `probe_args`. `None` outside CI when it does not, saying `missing`; a
/// failure in CI.
pub fn venv_tool(program: &str, probe_args: &[&str], missing: &str) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = PathBuf::from(home)
        .join(".cache/skylark-test-venv/bin")
        .join(program);
    let mut probe = Command::new(&path);
    probe
        .args(probe_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    peers::runs_or_skip(&mut probe, missing).then_some(path)
}

/// A fresh schema in the local PostgreSQL (`test` database, or
/// `SKYLARK_TEST_DATABASE_URL`) as a `DATABASE_URL`; empty (the server then uses SQLite)
/// when PostgreSQL is unreachable outside CI, a failure in CI.
pub fn postgres_schema_url(prefix: &str) -> String {
    let base = std::env::var("SKYLARK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("{prefix}_{}", unique_id());
    let ok = Command::new("psql")
        .args([
            base.as_str(),
            "-q",
            "-c",
            &format!("CREATE SCHEMA {schema}"),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL unreachable at {base} (CI=true)"
        );
        eprintln!("PostgreSQL unreachable at {base}: the api uses SQLite in this run");
        return String::new();
    }
    format!("{base}?options=-c%20search_path%3D{schema}")
}

/// FFmpeg with the WHIP muxer (FFmpeg 7+; `scripts/test` installs the static build that the
/// PyPI wheel `imageio-ffmpeg` ships). `None` outside CI when missing; a failure in CI.
pub fn ffmpeg_whip() -> Option<PathBuf> {
    peers::recent_ffmpeg()
}

/// Publishes a test pattern + tone over WHIP for `seconds`, like OBS would.
pub fn spawn_ffmpeg_whip(
    ffmpeg: &std::path::Path,
    whip_url: &str,
    key: &str,
    seconds: u32,
    log: &std::path::Path,
) -> Child {
    Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "info", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "30",
            "-tune",
            "zerolatency",
            "-preset",
            "veryfast",
        ])
        .args(["-c:a", "libopus", "-ar", "48000", "-ac", "2"])
        .args([
            "-t",
            &seconds.to_string(),
            "-f",
            "whip",
            "-authorization",
            key,
            whip_url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start ffmpeg")
}

/// Redis for scale-out tests, with a key prefix of its own; `None` (skip) outside CI when
/// unreachable, a failure in CI.
pub fn redis_url() -> Option<String> {
    let url =
        std::env::var("SKYLARK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_string();
    if std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).is_err() {
        peers::skip(&format!(
            "Redis at {url} unreachable (under CI=true the scale-out tests must run)"
        ));
        return None;
    }
    Some(url)
}

/// A WebSocket client of `/ws`.
pub async fn ws(
    base: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Sends `v` on a WebSocket as one text message.
pub async fn ws_send<S: futures_util::Sink<Message> + Unpin>(s: &mut S, v: Value)
where
    S::Error: std::fmt::Debug,
{
    use futures_util::SinkExt;
    s.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub async fn next_json<S>(s: &mut S) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            _ => continue,
        }
    }
}

pub async fn closes<S>(s: &mut S) -> bool
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return false,
        }
    }
}

/// Debian's FFmpeg (RTMP publisher, ffprobe's sibling); skip outside CI when missing.
pub fn debian_ffmpeg() -> Option<&'static str> {
    if Command::new("ffmpeg").arg("-version").output().is_ok() {
        return Some("ffmpeg");
    }
    peers::skip("Debian ffmpeg not installed: run scripts/test");
    None
}

/// FFmpeg pushing a 640x360 test picture + a tone for `seconds`; killed on drop.
pub struct Push(pub Child);

impl Drop for Push {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn rtmp_push(ffmpeg: &str, url: &str, seconds: u32, log: &std::path::Path) -> Push {
    rtmp_push_with(ffmpeg, url, seconds, log, TestSource::default())
}

/// What an FFmpeg test push sends: a 640x360 test picture at `fps` with a keyframe every
/// `gop` frames exactly (`None`: a keyframe a second), and the AAC tone unless `audio` is
/// off (a screen capture without a mic).
#[derive(Debug, Clone, Copy)]
pub struct TestSource {
    pub fps: u32,
    pub audio: bool,
    pub gop: Option<u32>,
}

impl Default for TestSource {
    fn default() -> Self {
        Self {
            fps: 30,
            audio: true,
            gop: None,
        }
    }
}

/// Like [`rtmp_push`], sending `source`.
pub fn rtmp_push_with(
    ffmpeg: &str,
    url: &str,
    seconds: u32,
    log: &std::path::Path,
    source: TestSource,
) -> Push {
    let gop = source.gop.unwrap_or(source.fps).to_string();
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size=640x360:rate={}", source.fps),
        ]);
    if source.audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-c:a", "aac", "-b:a", "96k"]);
    }
    let child = cmd
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            &gop,
            "-keyint_min",
            &gop,
            "-sc_threshold",
            "0",
        ])
        .args(["-t", &seconds.to_string(), "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start ffmpeg");
    Push(child)
}

/// The RTMP port a `skylark` logged at start-up.
pub fn rtmp_port(sk: &Skylark) -> u16 {
    logged_port(sk, "RTMP ingest listening")
}

/// The port of the first log line containing `message` (`… addr=IP:PORT`).
pub fn logged_port(sk: &Skylark, message: &str) -> u16 {
    let logs = sk.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} line in the log"));
    line.rsplit(':')
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap()
}

pub async fn is_live(base: &str, room: &str) -> bool {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/v1/rooms/{room}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["live"] == true
}

pub async fn wait_live(base: &str, room: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_live(base, room).await {
        assert!(
            Instant::now() < deadline,
            "never went live; publisher log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `room` has no publisher: a publisher's `leave` lands after its socket closes.
pub async fn wait_offline(base: &str, room: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_live(base, room).await {
        assert!(
            Instant::now() < deadline,
            "{room} still live 15 s after its publisher left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The environment of one scale-out layout (separate `skylark` targets sharing Redis
/// under a key prefix of their own, one API gRPC port, one JWT secret, one data dir; the
/// internal secret comes from [`Skylark::start_at`]), with
/// `base` added to every process; the returned function adds per-process pairs.
pub fn scale_out_env(
    redis: &str,
    api_grpc: u16,
    dir: &std::path::Path,
    base: &[(&str, String)],
) -> impl Fn(&[(&str, String)]) -> HashMap<String, String> {
    let mut shared: HashMap<String, String> = [
        ("REDIS_URL", redis.to_string()),
        (
            "SKYLARK_REDIS_PREFIX",
            format!("skylark-test-{}:", unique_id()),
        ),
        (
            "SKYLARK_API_GRPC_URL",
            format!("http://127.0.0.1:{api_grpc}"),
        ),
        (
            "SKYLARK_JWT_SECRET",
            "scale-out-test-secret-scale-out-test-secret".into(),
        ),
        ("SKYLARK_DATA_DIR", dir.join("data").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    shared.extend(base.iter().map(|(k, v)| (k.to_string(), v.clone())));
    move |extra| {
        let mut e = shared.clone();
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        e
    }
}

/// `/usr/bin/python3` with GStreamer's webrtcbin (Debian packages that `scripts/test`
/// installs). `None` outside CI when missing; a failure in CI.
pub fn gstreamer_python() -> Option<&'static str> {
    let python = "/usr/bin/python3";
    let probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); \
                 from gi.repository import Gst; Gst.init(None); \
                 assert all(Gst.ElementFactory.find(e) for e in ('webrtcbin', 'x264enc', 'nicesrc', 'opusenc'))";
    let mut check = Command::new(python);
    check.args(["-c", probe]).stderr(Stdio::null());
    let missing = "GStreamer webrtcbin (python3-gi, gstreamer1.0-plugins-{bad,ugly}, gstreamer1.0-nice) not found: run scripts/test, which installs them";
    peers::runs_or_skip(&mut check, missing).then_some(python)
}

/// A network namespace joined to this one by a veth pair: a second host for peers that
/// ignore loopback (libnice gathers no loopback candidates). Removed on drop.
pub struct NetNs {
    pub name: String,
    /// Our end of the link, where servers under test bind.
    pub host_ip: String,
    /// The namespace's end, where the peer inside lives.
    pub peer_ip: String,
}

impl NetNs {
    /// `None` outside CI when namespaces can't be made (not root); a failure in CI.
    pub fn create() -> Option<NetNs> {
        // Interface names and subnets are machine-wide: the number is claimed, not derived.
        let id = ports::claim_slot("netns", 20..220);
        // The slot too: a test may make several.
        let name = format!("skylark-test-{}-{id}", std::process::id());
        let (host_if, peer_if) = (format!("skh{id}"), format!("skp{id}"));
        let host_ip = format!("10.213.{id}.1");
        let peer_ip = format!("10.213.{id}.2");
        let steps: Vec<Vec<String>> = [
            format!("netns add {name}"),
            format!("link add {host_if} type veth peer name {peer_if}"),
            format!("link set {peer_if} netns {name}"),
            format!("addr add {host_ip}/24 dev {host_if}"),
            format!("link set {host_if} up"),
            format!("-n {name} addr add {peer_ip}/24 dev {peer_if}"),
            format!("-n {name} link set {peer_if} up"),
            format!("-n {name} link set lo up"),
        ]
        .iter()
        .map(|s| s.split(' ').map(String::from).collect())
        .collect();
        let ns = NetNs {
            name,
            host_ip,
            peer_ip,
        };
        for args in steps {
            let out = std::process::Command::new("ip").args(&args).output();
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            if !ok {
                let why = out.map_or_else(
                    |e| e.to_string(),
                    |o| String::from_utf8_lossy(&o.stderr).into_owned(),
                );
                peers::skip(&format!(
                    "cannot make a network namespace (ip {}): {why}; run as root with iproute2",
                    args.join(" ")
                ));
                return None;
            }
        }
        Some(ns)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A load-generator WHIP publisher on `room`, connected; keep the engine alive with it.
pub async fn publish(
    base: &str,
    room: &str,
    key: &str,
) -> (skylark_loadgen::Engine, skylark_loadgen::Publisher) {
    let engine = skylark_loadgen::Engine::start(
        skylark_loadgen::EngineConfig::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let p = engine
        .publish(
            &format!("{base}/whip/{room}"),
            key,
            skylark_loadgen::source::VideoConfig::default(),
        )
        .await
        .expect("WHIP");
    p.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    (engine, p)
}

/// `ffprobe -v error -show_entries stream=ENTRIES -of compact URL`: one line a stream.
pub fn ffprobe_streams(ffprobe: &str, entries: &str, url: &str) -> std::process::Output {
    Command::new(ffprobe)
        .args(["-v", "error", "-show_entries", &format!("stream={entries}")])
        .args(["-of", "compact", url])
        .output()
        .unwrap()
}

/// A WHEP viewer of `room`, playing.
pub async fn playing_viewer(
    engine: &skylark_loadgen::Engine,
    base: &str,
    room: &str,
) -> skylark_loadgen::Viewer {
    playing_viewer_with(engine, base, room, None).await
}

/// A WHEP viewer of `room` with the viewer token `token` (private rooms), playing.
pub async fn playing_viewer_with(
    engine: &skylark_loadgen::Engine,
    base: &str,
    room: &str,
    token: Option<&str>,
) -> skylark_loadgen::Viewer {
    let v = engine
        .view(&format!("{base}/whep/{room}"), token)
        .await
        .expect("WHEP");
    v.wait_playing(Duration::from_secs(10))
        .await
        .expect("the stream plays over WebRTC");
    v
}

/// An all-in-one `skylark` with a public room that FFmpeg pushes to over RTMP for
/// `seconds` (with or without its AAC tone, log in `log_name` of its data dir), live.
pub struct RtmpRoom {
    pub push: Push,
    pub log: PathBuf,
    pub room: String,
    pub key: String,
    pub port: u16,
    pub sk: Skylark,
}

impl RtmpRoom {
    pub async fn start(ffmpeg: &str, log_name: &str, seconds: u32, audio: bool) -> RtmpRoom {
        let source = TestSource {
            audio,
            ..TestSource::default()
        };
        Self::start_with(ffmpeg, log_name, seconds, source).await
    }

    /// [`RtmpRoom::start`] sending `source`.
    pub async fn start_with(
        ffmpeg: &str,
        log_name: &str,
        seconds: u32,
        source: TestSource,
    ) -> RtmpRoom {
        Self::start_on(Skylark::start().await, ffmpeg, log_name, seconds, source).await
    }

    /// [`RtmpRoom::start_with`] on a server the test started (its own settings).
    pub async fn start_on(
        sk: Skylark,
        ffmpeg: &str,
        log_name: &str,
        seconds: u32,
        source: TestSource,
    ) -> RtmpRoom {
        let port = rtmp_port(&sk);
        let (_, room, key) = creator_with_room(&sk.base, "public").await;
        let log = sk.dir.join(log_name);
        let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
        let push = rtmp_push_with(ffmpeg, &url, seconds, &log, source);
        wait_live(&sk.base, &room, &log).await;
        RtmpRoom {
            push,
            log,
            room,
            key,
            port,
            sk,
        }
    }
}

/// Waits until `child` (an FFmpeg publisher) exits by itself and asserts it succeeded;
/// a failure shows `what` and its log.
pub async fn assert_exits_ok(mut child: Child, what: &str, log: &std::path::Path) {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "{what}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The body of a GET of `url`, as text.
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// One process of a scale-out layout: `target` with `env`, its data dir `dir/name`.
pub async fn start_target(
    target: &'static str,
    env: HashMap<String, String>,
    dir: &std::path::Path,
    name: &str,
) -> Skylark {
    Skylark::start_with(Options {
        target: Some(target),
        env,
        dir: Some(dir.join(name)),
    })
    .await
}

/// The API of a scale-out layout, its gRPC on `api_grpc`, data dir `dir/api`.
pub async fn start_api(
    env: &impl Fn(&[(&str, String)]) -> HashMap<String, String>,
    api_grpc: u16,
    dir: &std::path::Path,
) -> Skylark {
    let grpc = [("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{api_grpc}"))];
    start_target("api", env(&grpc), dir, "api").await
}

/// The SFU of a scale-out layout, data dir `dir/sfu`: it registers the gRPC address it bound.
pub async fn start_sfu(
    env: &impl Fn(&[(&str, String)]) -> HashMap<String, String>,
    dir: &std::path::Path,
) -> Skylark {
    let grpc = [("SKYLARK_GRPC_ADDR", "127.0.0.1:0".to_string())];
    start_target("sfu", env(&grpc), dir, "sfu").await
}

/// The bus of a scale-out layout on `redis` with its processes' key `prefix`.
pub async fn connect_bus(redis: &str, prefix: String) -> skylark_bus::AnyBus {
    skylark_bus::connect_with(&skylark_bus::BusConfig {
        redis_url: Some(redis.to_string()),
        key_prefix: prefix,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The status of `req` sent with bearer `token`.
pub async fn status_as(req: reqwest::RequestBuilder, token: &str) -> reqwest::StatusCode {
    req.bearer_auth(token).send().await.unwrap().status()
}

/// A viewer token of `room` (valid 10 minutes) that its owner (`owner`, a bearer) mints.
pub async fn viewer_token(base: &str, owner: &str, room: &str) -> String {
    let mint = reqwest::Client::new()
        .post(format!("{base}/api/v1/rooms/{room}/viewer-tokens"))
        .json(&json!({"ttl_s": 600}));
    let v = send_json(mint.bearer_auth(owner)).await;
    v["token"].as_str().unwrap().to_string()
}

/// Rotates `room`'s stream key as its owner (`token`): the old key stops working.
pub async fn rotate_key(api_base: &str, token: &str, room: &str) {
    let rotate = reqwest::Client::new().post(format!("{api_base}/api/v1/rooms/{room}/stream-key"));
    let status = status_as(rotate, token).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "key rotated");
}

/// A room that the creator of `token` makes with `body` (title, visibility, mode): the
/// API's answer, with `room` and `stream_key`.
pub async fn create_room(api_base: &str, token: &str, body: Value) -> Value {
    let c = reqwest::Client::new();
    send_json(
        c.post(format!("{api_base}/api/v1/rooms"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// Polls `check` until it holds, or panics with `what` and the state it last reported
/// after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(state) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} within {within:?}: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A load-generator engine and a WHEP viewer of `room` on it, playing.
pub async fn watching(
    base: &str,
    room: &str,
) -> (skylark_loadgen::Engine, skylark_loadgen::Viewer) {
    let engine = skylark_loadgen::Engine::start(
        skylark_loadgen::EngineConfig::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let v = playing_viewer(&engine, base, room).await;
    (engine, v)
}

/// A scale-out layout on Redis with two packagers: api, sfu, signaling, and packagers
/// `packager-a` and `packager-b`. Fields drop in order: the processes, then their dir.
pub struct TwoPackagers {
    pub api: Skylark,
    pub sfu: Skylark,
    pub sig: Skylark,
    pub packagers: [Skylark; 2],
    pub dir: tempfile::TempDir,
}

impl TwoPackagers {
    pub async fn start(redis: &str) -> TwoPackagers {
        Self::start_with(redis, &[]).await
    }

    /// With `env` in every process's environment.
    pub async fn start_with(redis: &str, env: &[(&str, String)]) -> TwoPackagers {
        let dir = tempfile::tempdir().unwrap();
        let api_grpc = free_port();
        let shared = scale_out_env(redis, api_grpc, dir.path(), env);
        let api = start_api(&shared, api_grpc, dir.path()).await;
        let sfu = start_sfu(&shared, dir.path()).await;
        let sig = start_target("signaling", shared(&[]), dir.path(), "sig").await;
        let mut packagers = Vec::new();
        for name in ["packager-a", "packager-b"] {
            let env = shared(&[("SKYLARK_NODE_ID", name.to_string())]);
            packagers.push(start_target("packager", env, dir.path(), name).await);
        }
        let packagers: [Skylark; 2] = packagers.try_into().ok().unwrap();
        TwoPackagers {
            api,
            sfu,
            sig,
            packagers,
            dir,
        }
    }
}
