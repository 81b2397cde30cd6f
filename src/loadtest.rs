//! `skylark loadtest`: drives a Skylark deployment with WHIP publishers and WHEP viewers
//! (the engine is `crates/loadgen`) and reports join times, latency, bitrate and loss.
//!
//! One [`Swarm`] per room: its publisher (unless `--no-publish`) goes live first, then
//! the viewers join at the ramp rate and watch until the run's duration is over. A
//! progress line goes to stderr while it runs; at the end a report goes to stdout (or,
//! with `--json`, one JSON object goes to stdout and the human report to stderr).
//!
//! ```text
//! skylark loadtest --url http://127.0.0.1:8080 --room ROOM --stream-key KEY \
//!     --viewers 200 --ramp 50/s --duration 30s --json
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use skylark_loadgen::peer::LayerStats;
use skylark_loadgen::source::{VideoConfig, SIMULCAST_LAYERS};
use skylark_loadgen::stats::Percentiles;
use skylark_loadgen::swarm::{Progress, PublishConfig, ReceivedLayer};
use skylark_loadgen::{EngineConfig, Error as PeerError, Swarm, SwarmConfig, SwarmReport};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Most viewers one run starts: each holds a UDP socket and a str0m peer, and a run
/// bigger than this is better spread over several load-generator machines.
const MAX_VIEWERS: usize = 50_000;
/// Longest run accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Time allowed after the run's duration for closing every viewer (stats + DELETE)
/// before the run is cut off: the engine's DELETEs time out after `http_timeout` each,
/// 64 at a time, so this is generous.
const CLOSE_GRACE: Duration = Duration::from_secs(120);
/// File descriptors a run needs besides one UDP socket per peer (HTTP connections,
/// the runtime, stdio).
const FD_MARGIN: u64 = 256;
/// Audio payload rate of the synthetic Opus source (3 bytes every 20 ms), kbit/s, for
/// the expected per-viewer bitrate.
const OPUS_KBPS: f64 = 3.0 * 8.0 * 50.0 / 1000.0;
/// Progress samples averaged for the live loss estimate (0.5 s each: one GOP of 2 s).
const LOSS_WINDOW: usize = 4;

/// Arguments of `skylark loadtest`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct LoadtestArgs {
    /// Base URL of the deployment, e.g. http://127.0.0.1:8080 (plain HTTP).
    #[arg(long)]
    pub url: String,
    /// Room id to publish to and watch. Repeat it (with as many --stream-key) to load
    /// several rooms at once, one publisher each; viewers are split evenly.
    #[arg(long = "room", required = true, value_name = "ROOM")]
    pub rooms: Vec<String>,
    /// The room's stream key (from `POST /api/v1/rooms`), one per --room in the same
    /// order. Required unless --no-publish.
    #[arg(
        long = "stream-key",
        env = "SKYLARK_STREAM_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub stream_keys: Vec<String>,
    /// Don't publish: watch a room that is already live (OBS, FFmpeg, a browser).
    #[arg(long)]
    pub no_publish: bool,
    /// Number of publishers; must match the number of --room (a Skylark room has one
    /// publisher: a second one on the same key replaces the first).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// WHEP viewers to start, over all rooms.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Viewers started per second, e.g. `50/s` or `50`; `0` starts them all at once.
    #[arg(long, default_value = "20/s", value_parser = parse_ramp)]
    pub ramp: f64,
    /// Length of the run from the first viewer's start, e.g. `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bitrate of the synthetic H.264 video the publisher sends, kbit/s (the clip's own
    /// rate is ~320 kbit/s; filler data pads frames up to the target).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(100..=50_000))]
    pub video_kbps: u32,
    /// Publish the video as three simulcast layers: RIDs h, m, l at full size, 1/2 and
    /// 1/4 (320x240, 160x120, 80x60) and --video-kbps, /3, /8. Each viewer checks the
    /// layer the server forwards it; the report says which layer viewers got.
    #[arg(long)]
    pub simulcast: bool,
    /// Bearer token for the viewers of a private room (`POST /rooms/{id}/viewer-tokens`).
    #[arg(long, env = "SKYLARK_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,
    /// Less common knobs (boxed: `skylark`'s target enum stays small).
    #[command(flatten)]
    pub tuning: Box<Tuning>,
    /// Print one JSON object on stdout (the human report then goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Tuning of a run: media shape, addresses, concurrency and timeouts.
#[derive(Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "Tuning")]
pub struct Tuning {
    /// Keyframe interval of the synthetic video, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub gop: Duration,
    /// Local address the peers bind and announce; default: the address that routes to
    /// the URL's host (127.0.0.1 for a loopback URL).
    #[arg(long)]
    pub local_ip: Option<IpAddr>,
    /// Engine tasks the peers are spread over; default: the CPUs this process may use.
    #[arg(long)]
    pub workers: Option<usize>,
    /// WHEP requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_joins: usize,
    /// ICE + DTLS must connect within this, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout of each WHIP/WHEP request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,
}

/// Parses `50/s`, `50`, `0.5/s`: viewers per second.
fn parse_ramp(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s").trim();
    let v: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a rate: write viewers per second, e.g. 50/s"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: the ramp must be 0 (all at once) or more"));
    }
    Ok(v)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 30s, 500ms, 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?}: longer than the 24 h limit"));
    }
    Ok(d)
}

/// One room of the run: which room, our publisher's stream key (none with `--no-publish`),
/// how many viewers.
#[derive(Debug, Clone)]
struct RoomPlan {
    room: String,
    stream_key: Option<String>,
    viewers: usize,
}

/// The checked plan of a run.
#[derive(Debug, Clone)]
struct Plan {
    base: String,
    targets: Vec<RoomPlan>,
    local_ip: IpAddr,
    workers: usize,
}

/// Validates the arguments into a plan; every error says what to change.
fn plan(args: &LoadtestArgs) -> anyhow::Result<Plan> {
    if args.simulcast && args.no_publish {
        bail!(
            "--simulcast shapes the load generator's own publisher, and --no-publish has none: \
             drop one of them (viewers of a room that is already live get whatever layer the \
             server forwards; the report says which)"
        );
    }
    let base = args.url.trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&base).with_context(|| {
        format!(
            "--url {:?} is not a URL: write e.g. http://127.0.0.1:8080",
            args.url
        )
    })?;
    match url.scheme() {
        "http" => {}
        "https" => bail!(
            "--url {base}: this build speaks plain HTTP only (no TLS client): point --url at the \
             server's HTTP address (e.g. http://host:8080), not a TLS proxy"
        ),
        s => bail!("--url {base}: scheme {s:?} is not supported: use http://host:port"),
    }
    let host = url
        .host_str()
        .with_context(|| format!("--url {base} has no host"))?
        .to_string();
    let rooms = &args.rooms;
    if rooms.iter().any(|r| r.trim().is_empty() || r.contains('/')) {
        bail!("--room must be a room id (as returned by POST /api/v1/rooms), without slashes");
    }
    if let Some(p) = args.publishers {
        if !args.no_publish && p == 0 {
            bail!("--publishers 0: pass --no-publish to watch a room that is already live");
        }
        if args.no_publish && p > 0 {
            bail!("--publishers {p} contradicts --no-publish: drop one of them");
        }
        if !args.no_publish && p != rooms.len() {
            bail!(
                "--publishers {p} but {} --room given: a Skylark room has one publisher (a second \
                 one with the same key replaces the first), so give --room and --stream-key once \
                 per publisher",
                rooms.len()
            );
        }
    }
    let keys: Vec<Option<String>> = if args.no_publish {
        if !args.stream_keys.is_empty() {
            bail!("--stream-key given with --no-publish: drop one of them");
        }
        vec![None; rooms.len()]
    } else {
        if args.stream_keys.is_empty() {
            bail!(
                "--stream-key is required to publish (it is returned once by POST /api/v1/rooms, \
                 or by POST /api/v1/rooms/ROOM/stream-key); or pass --no-publish to watch a room \
                 that is already live"
            );
        }
        if args.stream_keys.len() != rooms.len() {
            bail!(
                "{} --room but {} --stream-key: give one stream key per room, in the same order",
                rooms.len(),
                args.stream_keys.len()
            );
        }
        args.stream_keys.iter().cloned().map(Some).collect()
    };
    if args.viewers > MAX_VIEWERS {
        bail!(
            "--viewers {} is over the {MAX_VIEWERS} a single load generator runs: spread the load \
             over several machines",
            args.viewers
        );
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than 0, e.g. 30s");
    }
    if args.tuning.max_concurrent_joins == 0 {
        bail!("--max-concurrent-joins must be at least 1");
    }
    check_fd_limit(args.viewers + rooms.len())?;

    // Viewers split evenly; the first rooms take the remainder.
    let n = rooms.len();
    let targets = rooms
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (room, stream_key))| RoomPlan {
            room: room.clone(),
            stream_key,
            viewers: args.viewers / n + usize::from(i < args.viewers % n),
        })
        .collect();
    let port = url.port_or_known_default().unwrap_or(80);
    let local_ip = match args.tuning.local_ip {
        Some(ip) => ip,
        None => route_to(&host, port).with_context(|| {
            format!("finding the local address that reaches {host}: pass --local-ip")
        })?,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.tuning.workers.unwrap_or(cpus).clamp(1, 64);
    Ok(Plan {
        base,
        targets,
        local_ip,
        workers,
    })
}

/// The local address the OS would use to reach `host` (a connected UDP socket sends
/// nothing; it only picks a route). Loopback hosts give 127.0.0.1.
fn route_to(host: &str, port: u16) -> anyhow::Result<IpAddr> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    if addr.ip().is_loopback() {
        return Ok(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            v6 => v6,
        });
    }
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(addr)?;
    Ok(s.local_addr()?.ip())
}

/// Each peer holds one UDP socket: fail early, with the fix, when the process may not
/// open that many files.
fn check_fd_limit(peers: usize) -> anyhow::Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(()); // Not Linux: let the sockets tell.
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft {
        let need = peers as u64 + FD_MARGIN;
        if soft < need {
            bail!(
                "{peers} peers need about {need} open files but the limit is {soft}: raise it \
                 (e.g. `ulimit -n {}`) or run fewer --viewers",
                need.next_power_of_two()
            );
        }
    }
    Ok(())
}

/// Checks the room before any peer starts, so a typo or an offline room is one clear
/// error instead of N failed viewers. Anything unexpected is left for WHIP/WHEP to tell.
async fn preflight(
    base: &str,
    t: &RoomPlan,
    token: Option<&str>,
    no_publish: bool,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    let mut req = client.get(format!("{base}/api/v1/rooms/{}", t.room));
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() || e.is_timeout() => bail!(
            "cannot reach {base} ({e}): is skylark running there? Check --url (the server's \
             SKYLARK_HTTP_ADDR / SKYLARK_PUBLIC_URL)"
        ),
        Err(e) => bail!("GET {base}/api/v1/rooms/{}: {e}", t.room),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        bail!(
            "room {:?} not found at {base}: create one with POST /api/v1/rooms (it returns the \
             room id and its stream key) and pass its id to --room",
            t.room
        );
    }
    if no_publish && matches!(status.as_u16(), 401 | 403) {
        bail!(
            "room {:?} is private: pass a viewer token with --viewer-token (owner: POST \
             /api/v1/rooms/{}/viewer-tokens)",
            t.room,
            t.room
        );
    }
    if no_publish && status.is_success() {
        // Read a bounded body: this is a foreign server's answer.
        let body = resp.bytes().await.unwrap_or_default();
        let live = serde_json::from_slice::<Value>(&body[..body.len().min(64 * 1024)])
            .ok()
            .and_then(|v| v.get("live").and_then(Value::as_bool));
        if live == Some(false) {
            bail!(
                "room {:?} is not live: start its publisher (OBS, FFmpeg, the studio) first, or \
                 drop --no-publish and give --stream-key to publish synthetic media",
                t.room
            );
        }
    }
    Ok(())
}

/// Turns a failure to go live into an error that says what to do.
fn publish_error(e: PeerError, base: &str, room: &str, local_ip: IpAddr) -> anyhow::Error {
    let server_says = |body: &str| {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect())
    };
    match e {
        PeerError::Status {
            status: 401 | 403,
            body,
        } => anyhow::anyhow!(
            "the server refused the stream key for room {room} ({}): pass the key returned by POST \
             /api/v1/rooms, or the new one after a rotation (POST /api/v1/rooms/{room}/stream-key)",
            server_says(&body)
        ),
        PeerError::Status { status: 404, body } => anyhow::anyhow!(
            "room {room} not found ({}): check --room",
            server_says(&body)
        ),
        PeerError::Status { status, body } => anyhow::anyhow!(
            "WHIP publish to {base}/whip/{room} failed with HTTP {status}: {}",
            server_says(&body)
        ),
        PeerError::Connect(m) | PeerError::Http(m) => {
            anyhow::anyhow!("cannot reach {base} ({m}): is skylark running there? Check --url")
        }
        PeerError::Timeout => anyhow::anyhow!(
            "the WHIP request to {base} timed out: the server is overloaded or unreachable; \
             raise --http-timeout or check --url"
        ),
        PeerError::Failed(cause) => anyhow::anyhow!(
            "the publisher's WebRTC connection failed ({cause}): the media UDP port the server \
             announces (SKYLARK_RTC_UDP_ADDR / SKYLARK_RTC_PUBLIC_IP) must be reachable from \
             {local_ip}; pass --local-ip if this machine has several addresses"
        ),
        other => anyhow::anyhow!("publishing to room {room} failed: {other}"),
    }
}

/// Live progress on stderr: one line per second, or one line rewritten in place when
/// stderr is a terminal.
struct ProgressLine {
    tty: bool,
    expected_kbps: Option<f64>,
    /// Recent (kbps, playing) samples for the loss estimate.
    window: std::collections::VecDeque<(f64, u64)>,
    last_print: Option<Instant>,
}

impl ProgressLine {
    fn new(expected_kbps: Option<f64>) -> Self {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            expected_kbps,
            window: Default::default(),
            last_print: None,
        }
    }

    /// Adds one sample (the sum over rooms) and prints when due.
    fn update(&mut self, p: &Progress) {
        self.window.push_back((p.kbps, p.playing));
        while self.window.len() > LOSS_WINDOW {
            self.window.pop_front();
        }
        let due = self.tty
            || self
                .last_print
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
        if !due {
            return;
        }
        self.last_print = Some(Instant::now());
        let line = self.format(p);
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not end the run.
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Received bitrate over what the playing viewers should get, over the last ~2 s:
    /// an estimate (the exact loss, from frame sequence numbers, is in the final
    /// report). `None` when not publishing, or while viewers join or leave (a viewer's
    /// first bytes and the playing count don't line up in one window).
    fn loss_estimate(&self) -> Option<f64> {
        let expected = self.expected_kbps?;
        let playing = self.window.front()?.1;
        let steady = self.window.len() == LOSS_WINDOW
            && playing > 0
            && self.window.iter().all(|w| w.1 == playing);
        if !steady {
            return None;
        }
        let kbps = self.window.iter().map(|w| w.0).sum::<f64>() / LOSS_WINDOW as f64;
        Some(((1.0 - kbps / (playing as f64 * expected)) * 100.0).clamp(0.0, 100.0))
    }

    fn format(&self, p: &Progress) -> String {
        if p.requested == 0 {
            let what = if self.expected_kbps.is_some() {
                "publisher connecting"
            } else {
                "starting viewers"
            };
            return format!("[{:>6.1}s] {what}", p.elapsed_s);
        }
        let mut s = format!(
            "[{:>6.1}s] viewers {}/{} connected, {} playing, {} joining, {} failed | {}",
            p.elapsed_s,
            p.connected,
            p.requested,
            p.playing,
            p.joining,
            p.failed,
            fmt_rate(p.kbps),
        );
        if p.playing > 0 {
            let _ = write!(s, ", {:.0} kbit/s per viewer", p.kbps / p.playing as f64);
        }
        match self.loss_estimate() {
            Some(l) => {
                let _ = write!(s, " | loss≈{l:.1}%");
            }
            None if self.expected_kbps.is_some() => s.push_str(" | loss≈– (ramping)"),
            None => {}
        }
        s
    }

    fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn fmt_rate(kbps: f64) -> String {
    if kbps >= 10_000.0 {
        format!("{:.1} Mbit/s", kbps / 1000.0)
    } else {
        format!("{kbps:.0} kbit/s")
    }
}

/// Sums the progress of every room's swarm.
fn sum_progress(rxs: &[watch::Receiver<Progress>]) -> Progress {
    let mut total = Progress::default();
    for rx in rxs {
        let p = *rx.borrow();
        total.elapsed_s = total.elapsed_s.max(p.elapsed_s);
        total.requested += p.requested;
        total.joining += p.joining;
        total.connected += p.connected;
        total.playing += p.playing;
        total.failed += p.failed;
        total.kbps += p.kbps;
    }
    total
}

/// Runs `skylark loadtest`.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    for t in &plan.targets {
        preflight(&plan.base, t, args.viewer_token.as_deref(), args.no_publish).await?;
    }
    let video = VideoConfig {
        bitrate_kbps: args.video_kbps,
        gop: args.tuning.gop,
    };
    let engine = EngineConfig {
        local_ip: plan.local_ip,
        http_timeout: args.tuning.http_timeout,
        connect_timeout: args.tuning.connect_timeout,
        ..Default::default()
    };
    let rooms = plan.targets.len();
    let cancel = CancellationToken::new();
    let swarms: Vec<(RoomPlan, Swarm)> = plan
        .targets
        .iter()
        .map(|t| {
            let config = SwarmConfig {
                publish: t.stream_key.as_ref().map(|key| PublishConfig {
                    whip_url: format!("{}/whip/{}", plan.base, t.room),
                    stream_key: key.clone(),
                    video,
                    simulcast: args.simulcast,
                }),
                whep_url: format!("{}/whep/{}", plan.base, t.room),
                whep_token: args.viewer_token.clone(),
                viewers: t.viewers,
                // Each room ramps at its share of the total rate.
                ramp_per_sec: args.ramp / rooms as f64,
                duration: args.duration,
                workers: (plan.workers / rooms).max(1),
                max_concurrent_joins: (args.tuning.max_concurrent_joins / rooms).max(1),
                engine,
            };
            (t.clone(), Swarm::start(config, cancel.clone()))
        })
        .collect();

    // Ctrl-C ends the run early; the report still covers what happened and every
    // session is DELETEd, so the server is left clean.
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    // With simulcast the SFU starts viewers on the first layer keyframe it gets, which
    // is the top layer's (the publisher sends it first): that layer's rate is expected.
    let expected_kbps = (!args.no_publish).then(|| f64::from(args.video_kbps) + OPUS_KBPS);
    let rxs: Vec<watch::Receiver<Progress>> = swarms.iter().map(|(_, s)| s.progress()).collect();
    let progress_done = CancellationToken::new();
    let progress = tokio::spawn({
        let done = progress_done.clone();
        async move {
            let mut line = ProgressLine::new(expected_kbps);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    () = done.cancelled() => break,
                    _ = tick.tick() => line.update(&sum_progress(&rxs)),
                }
            }
            line.finish();
        }
    });

    let started = Instant::now();
    let (targets, waits): (Vec<RoomPlan>, Vec<Swarm>) = swarms.into_iter().unzip();
    let all = futures_util::future::join_all(waits.into_iter().map(Swarm::wait));
    // The publishers' connect time comes before the viewers' clock starts.
    let limit =
        args.duration + args.tuning.connect_timeout + args.tuning.http_timeout + CLOSE_GRACE;
    let results = match tokio::time::timeout(limit, all).await {
        Ok(r) => r,
        Err(_) => {
            cancel.cancel();
            progress_done.cancel();
            let _ = progress.await;
            bail!(
                "the run did not finish within {:.0} s of its start: the server or this machine is \
                 overloaded; retry with fewer --viewers",
                limit.as_secs_f64()
            );
        }
    };
    progress_done.cancel();
    let _ = progress.await;
    signals.abort();

    let mut reports = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok(rep) => reports.push((t.room.clone(), rep)),
            Err(e) => {
                let err = publish_error(e, &plan.base, &t.room, plan.local_ip);
                if rooms > 1 {
                    // The others may still report; say which room this was.
                    eprintln!("skylark loadtest: room {}: {err:#}", t.room);
                }
                first_error.get_or_insert(err);
            }
        }
    }
    if reports.is_empty() {
        return Err(first_error.unwrap_or_else(|| anyhow::anyhow!("no room produced a report")));
    }
    let summary = Summary::merge(&reports, args.viewers);
    let human = summary.human(&args, &plan, started.elapsed());
    if args.json {
        eprint!("{human}");
        let out = summary.to_json(&args, &plan, &reports);
        println!("{out}");
    } else {
        print!("{human}");
    }
    match first_error {
        // Some rooms ran, some could not publish: the report is out, the exit code tells.
        Some(e) => Err(e.context("some rooms did not run (see above)")),
        None => Ok(()),
    }
}

/// Percentiles of several rooms together. With one room they are exact; with several,
/// each figure is the largest over the rooms (an upper bound of the combined quantile:
/// if every room has at most 5 % of samples above its p95, so does their union).
fn merge_upper(ps: &[Option<Percentiles>]) -> Option<Percentiles> {
    ps.iter().flatten().copied().reduce(|a, b| Percentiles {
        count: a.count + b.count,
        p50: a.p50.max(b.p50),
        p95: a.p95.max(b.p95),
        p99: a.p99.max(b.p99),
        max: a.max.max(b.max),
    })
}

/// The run's figures over all rooms.
#[derive(Debug, Clone)]
struct Summary {
    requested_target: usize,
    requested: u64,
    connected: u64,
    playing: u64,
    failed: u64,
    unfinished: u64,
    failures: BTreeMap<String, u64>,
    connect_ms: Option<Percentiles>,
    join_ms: Option<Percentiles>,
    latency_ms: Option<Percentiles>,
    kbps_min: Option<f64>,
    kbps_p50: Option<f64>,
    loss_pct: f64,
    frames_received: u64,
    frames_missing: u64,
    frames_bad_hash: u64,
    frames_unmarked: u64,
    audio_packets: u64,
    bytes_received: u64,
    /// Playing viewers by the layer (and picture size) they received.
    layers: Vec<ReceivedLayer>,
    layer_switches: u64,
    delete_failures: u64,
    duration_s: f64,
    publisher_frames_sent: u64,
    publisher_keyframes_sent: u64,
    publisher_keyframe_requests: u64,
    publisher_write_errors: u64,
    /// Per layer, summed over the rooms' publishers.
    publisher_layers: Vec<LayerStats>,
}

/// Adds up layer counts that agree on everything but the count.
fn merge_layers(reports: &[&SwarmReport]) -> Vec<ReceivedLayer> {
    let mut merged: Vec<ReceivedLayer> = Vec::new();
    for l in reports.iter().flat_map(|r| &r.layers) {
        let same = |m: &&mut ReceivedLayer| {
            (&m.rid, m.layer, m.width, m.height) == (&l.rid, l.layer, l.width, l.height)
        };
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => m.viewers += l.viewers,
            None => merged.push(l.clone()),
        }
    }
    merged.sort_by_key(|l| (l.layer, l.width, l.height));
    merged
}

/// Adds up the publishers' per-layer counts, layer by layer (same RID and size).
fn merge_publisher_layers<'a>(stats: impl Iterator<Item = &'a LayerStats>) -> Vec<LayerStats> {
    let mut merged: Vec<LayerStats> = Vec::new();
    for l in stats {
        let same = |m: &&mut LayerStats| (&m.rid, m.width, m.height) == (&l.rid, l.width, l.height);
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => {
                m.frames_sent += l.frames_sent;
                m.keyframes_sent += l.keyframes_sent;
                m.bytes_sent += l.bytes_sent;
                m.keyframe_requests += l.keyframe_requests;
            }
            None => merged.push(l.clone()),
        }
    }
    merged
}

/// `h 320x240`, `320x240`, `layer 1`: a received layer, as the report names it.
fn layer_name(l: &ReceivedLayer) -> String {
    let size = match (l.width, l.height) {
        (Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    };
    match (&l.rid, size) {
        (Some(rid), Some(size)) => format!("{rid} {size}"),
        (None, Some(size)) => size,
        (Some(rid), None) => rid.clone(),
        (None, None) => l
            .layer
            .map_or_else(|| "unknown".to_string(), |i| format!("layer {i}")),
    }
}

impl Summary {
    fn merge(reports: &[(String, SwarmReport)], requested_target: usize) -> Summary {
        let rs: Vec<&SwarmReport> = reports.iter().map(|(_, r)| r).collect();
        let sum = |f: fn(&SwarmReport) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
        let mut failures = BTreeMap::new();
        for r in &rs {
            for (k, v) in &r.failures {
                *failures.entry(k.clone()).or_insert(0) += v;
            }
        }
        let frames_missing = sum(|r| r.frames_missing);
        // Per room, frames expected = missing / loss; summed so loss weighs by frames.
        let expected: f64 = rs
            .iter()
            .map(|r| {
                if r.loss_pct > 0.0 {
                    r.frames_missing as f64 * 100.0 / r.loss_pct
                } else {
                    r.frames_received as f64
                }
            })
            .sum();
        let pubs = rs.iter().filter_map(|r| r.publisher.as_ref());
        Summary {
            requested_target,
            requested: sum(|r| r.viewers.requested),
            connected: sum(|r| r.viewers.connected),
            playing: sum(|r| r.viewers.playing),
            failed: sum(|r| r.viewers.failed),
            unfinished: sum(|r| r.viewers.unfinished),
            failures,
            connect_ms: merge_upper(&rs.iter().map(|r| r.connect_ms).collect::<Vec<_>>()),
            join_ms: merge_upper(&rs.iter().map(|r| r.join_ms).collect::<Vec<_>>()),
            latency_ms: merge_upper(&rs.iter().map(|r| r.latency_ms).collect::<Vec<_>>()),
            kbps_min: rs
                .iter()
                .filter_map(|r| r.kbps.map(|k| k.min))
                .reduce(f64::min),
            // Lower bound of the combined median, like `merge_upper` the other way.
            kbps_p50: rs
                .iter()
                .filter_map(|r| r.kbps.map(|k| k.p50))
                .reduce(f64::min),
            loss_pct: if expected > 0.0 {
                frames_missing as f64 * 100.0 / expected
            } else {
                0.0
            },
            frames_received: sum(|r| r.frames_received),
            frames_missing,
            frames_bad_hash: sum(|r| r.frames_bad_hash),
            frames_unmarked: sum(|r| r.frames_unmarked),
            audio_packets: sum(|r| r.audio_packets),
            bytes_received: sum(|r| r.bytes_received),
            layers: merge_layers(&rs),
            layer_switches: sum(|r| r.layer_switches),
            delete_failures: sum(|r| r.delete_failures),
            duration_s: rs.iter().map(|r| r.duration_s).fold(0.0, f64::max),
            publisher_frames_sent: pubs.clone().map(|p| p.frames_sent).sum(),
            publisher_keyframes_sent: pubs.clone().map(|p| p.keyframes_sent).sum(),
            publisher_keyframe_requests: pubs.clone().map(|p| p.keyframe_requests).sum(),
            publisher_write_errors: pubs.clone().map(|p| p.write_errors).sum(),
            publisher_layers: merge_publisher_layers(pubs.flat_map(|p| &p.layers)),
        }
    }

    fn human(&self, args: &LoadtestArgs, plan: &Plan, wall: Duration) -> String {
        let mut s = String::new();
        let pct = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                p.p50, p.p95, p.p99, p.max
            ),
            None => "no samples".into(),
        };
        let rooms = plan.targets.len();
        let publishing = if args.no_publish {
            "watching (no publisher of ours)".to_string()
        } else if args.simulcast {
            let ladder: Vec<String> = SIMULCAST_LAYERS
                .iter()
                .map(|l| format!("{} {}", l.rid, l.bitrate_kbps(args.video_kbps)))
                .collect();
            format!(
                "{rooms} simulcast publisher(s) at {} kbit/s",
                ladder.join(" / ")
            )
        } else {
            format!("{rooms} publisher(s) at {} kbit/s", args.video_kbps)
        };
        let _ = writeln!(
            s,
            "skylark loadtest: {} room(s) at {}, {publishing}, {} viewers (ramp {}/s) for {:.1} s ({:.1} s wall)",
            rooms,
            plan.base,
            self.requested_target,
            args.ramp,
            self.duration_s,
            wall.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  viewers   requested {}  connected {}  playing {}  failed {}  unfinished {}",
            self.requested, self.connected, self.playing, self.failed, self.unfinished
        );
        let _ = writeln!(
            s,
            "  join      {}  (POST → first keyframe)",
            pct(&self.join_ms)
        );
        let _ = writeln!(
            s,
            "  connect   {}  (POST → ICE+DTLS up)",
            pct(&self.connect_ms)
        );
        let _ = writeln!(
            s,
            "  latency   {}  (publisher send → viewer receive, per frame)",
            pct(&self.latency_ms)
        );
        match (self.kbps_min, self.kbps_p50) {
            (Some(min), Some(p50)) => {
                let _ = writeln!(
                    s,
                    "  bitrate   per viewer min {min:.0} kbit/s  p50 {p50:.0} kbit/s"
                );
            }
            _ => {
                let _ = writeln!(s, "  bitrate   no viewer played");
            }
        }
        let _ = writeln!(
            s,
            "  frames    received {}  missing {}  loss {:.3} %  bad hash {}  unmarked {}  audio packets {}",
            self.frames_received,
            self.frames_missing,
            self.loss_pct,
            self.frames_bad_hash,
            self.frames_unmarked,
            self.audio_packets
        );
        if !self.layers.is_empty() {
            let list: Vec<String> = self
                .layers
                .iter()
                .map(|l| format!("{}: {} viewers", layer_name(l), l.viewers))
                .collect();
            let _ = writeln!(
                s,
                "  layers    {}  (what playing viewers received), {} layer switches",
                list.join(", "),
                self.layer_switches
            );
        }
        if self.failures.is_empty() {
            let _ = writeln!(s, "  failures  none");
        } else {
            let list: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "  failures  {}", list.join(", "));
        }
        if !args.no_publish {
            let _ = writeln!(
                s,
                "  publisher sent {} frames ({} keyframes), {} keyframe requests answered or coalesced, {} write errors",
                self.publisher_frames_sent,
                self.publisher_keyframes_sent,
                self.publisher_keyframe_requests,
                self.publisher_write_errors
            );
            if args.simulcast {
                let list: Vec<String> = self
                    .publisher_layers
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {}x{} {} frames ({} keyframes, {} requests)",
                            l.rid.as_deref().unwrap_or("-"),
                            l.width,
                            l.height,
                            l.frames_sent,
                            l.keyframes_sent,
                            l.keyframe_requests
                        )
                    })
                    .collect();
                let _ = writeln!(s, "  layers    sent {}", list.join(", "));
            }
        }
        if self.delete_failures > 0 {
            let _ = writeln!(
                s,
                "  cleanup   {} DELETE requests failed",
                self.delete_failures
            );
        }
        if rooms > 1 {
            let _ = writeln!(
                s,
                "  (several rooms: percentiles are the largest over rooms, kbit/s p50 the smallest)"
            );
        }
        s
    }

    fn to_json(
        &self,
        args: &LoadtestArgs,
        plan: &Plan,
        reports: &[(String, SwarmReport)],
    ) -> Value {
        let pct = |p: &Option<Percentiles>| {
            p.map_or(Value::Null, |p| {
                json!({"p50": p.p50, "p95": p.p95, "p99": p.p99, "max": p.max, "count": p.count})
            })
        };
        json!({
            "url": plan.base,
            "rooms": plan.targets.iter().map(|t| t.room.clone()).collect::<Vec<_>>(),
            "publishers": if args.no_publish { 0 } else { plan.targets.len() },
            "video_kbps": if args.no_publish { Value::Null } else { args.video_kbps.into() },
            "simulcast": args.simulcast,
            "viewers": {
                "requested": self.requested_target,
                "started": self.requested,
                "connected": self.connected,
                "playing": self.playing,
                "failed": self.failed,
                "unfinished": self.unfinished,
            },
            "failures": self.failures,
            "join_ms": pct(&self.join_ms),
            "connect_ms": pct(&self.connect_ms),
            "latency_ms": pct(&self.latency_ms),
            "received_kbps": match (self.kbps_min, self.kbps_p50) {
                (Some(min), Some(p50)) => json!({"min": min, "p50": p50}),
                _ => Value::Null,
            },
            "loss_pct": self.loss_pct,
            // Media units the viewers received and checked: video frames + Opus packets
            // (the engine counts frames, not the RTP packets that carried them).
            "packets_received": self.frames_received + self.audio_packets,
            "frames_received": self.frames_received,
            "frames_missing": self.frames_missing,
            "frames_bad_hash": self.frames_bad_hash,
            "frames_unmarked": self.frames_unmarked,
            "audio_packets_received": self.audio_packets,
            "bytes_received": self.bytes_received,
            // Playing viewers by the layer they received: RID (simulcast), marker
            // index, picture size from the SPS.
            "layers": self.layers,
            "layer_switches": self.layer_switches,
            "delete_failures": self.delete_failures,
            "duration_s": self.duration_s,
            "publisher": if args.no_publish { Value::Null } else { json!({
                "frames_sent": self.publisher_frames_sent,
                "keyframes_sent": self.publisher_keyframes_sent,
                "keyframe_requests": self.publisher_keyframe_requests,
                "write_errors": self.publisher_write_errors,
                "layers": self.publisher_layers,
            })},
            "per_room": reports.iter().map(|(room, r)| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("room".into(), room.clone().into());
                }
                v
            }).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn parse(extra: &[&str]) -> Result<LoadtestArgs, clap::Error> {
        let mut argv = vec!["loadtest", "--url", "http://127.0.0.1:8080", "--room", "r1"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn durations_and_ramps_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("ten").unwrap_err().contains("30s"));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_ramp("50/s"), Ok(50.0));
        assert_eq!(parse_ramp("0"), Ok(0.0));
        assert!(parse_ramp("-1").is_err());
        assert!(parse_ramp("NaN").is_err());
    }

    #[test]
    fn plan_needs_a_stream_key_unless_watching() {
        let err = plan(&parse(&[]).unwrap()).unwrap_err().to_string();
        assert!(err.contains("--stream-key is required"), "{err}");
        assert!(err.contains("--no-publish"), "{err}");
        let p = plan(&parse(&["--no-publish", "--viewers", "3"]).unwrap()).unwrap();
        assert_eq!(p.targets.len(), 1);
        assert!(p.targets[0].stream_key.is_none());
        assert_eq!(p.local_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn extra_publishers_and_simulcast_without_a_publisher_are_refused_with_a_reason() {
        let simulcast = parse(&["--stream-key", "k", "--simulcast"]).unwrap();
        assert!(simulcast.simulcast);
        let p = plan(&simulcast).expect("simulcast is a publisher option, accepted");
        assert_eq!(p.targets[0].stream_key.as_deref(), Some("k"));
        let err = plan(&parse(&["--no-publish", "--simulcast"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop one of them"), "{err}");
        let err = plan(&parse(&["--stream-key", "k", "--publishers", "3"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("one publisher"), "{err}");
        let mut https = parse(&["--stream-key", "k"]).unwrap();
        https.url = "https://example.com".into();
        let err = plan(&https).unwrap_err().to_string();
        assert!(err.contains("plain HTTP"), "{err}");
    }

    #[test]
    fn received_layers_merge_over_rooms_and_are_named() {
        let layer = |rid: Option<&str>, i: u8, w: u32, h: u32, viewers: u64| ReceivedLayer {
            rid: rid.map(str::to_string),
            layer: Some(i),
            width: Some(w),
            height: Some(h),
            viewers,
        };
        let report = |layers: Vec<ReceivedLayer>| SwarmReport {
            duration_s: 1.0,
            layers,
            ..SwarmReport::default()
        };
        let a = report(vec![layer(Some("h"), 0, 320, 240, 3)]);
        let b = report(vec![
            layer(Some("m"), 1, 160, 120, 1),
            layer(Some("h"), 0, 320, 240, 2),
        ]);
        let merged = merge_layers(&[&a, &b]);
        let named: Vec<(String, u64)> = merged.iter().map(|l| (layer_name(l), l.viewers)).collect();
        assert_eq!(
            named,
            [("h 320x240".to_string(), 5), ("m 160x120".to_string(), 1)]
        );
        assert_eq!(layer_name(&layer(None, 0, 320, 240, 1)), "320x240");
        let unknown = ReceivedLayer {
            rid: None,
            layer: None,
            width: None,
            height: None,
            viewers: 1,
        };
        assert_eq!(layer_name(&unknown), "unknown");
    }

    #[test]
    fn viewers_split_over_rooms() {
        let args = parse(&[
            "--room",
            "r2",
            "--room",
            "r3",
            "--stream-key",
            "a",
            "--stream-key",
            "b",
            "--stream-key",
            "c",
            "--viewers",
            "10",
            "--publishers",
            "3",
        ])
        .unwrap();
        let p = plan(&args).unwrap();
        let split: Vec<usize> = p.targets.iter().map(|t| t.viewers).collect();
        assert_eq!(split, [4, 3, 3]);
        assert_eq!(p.targets[2].stream_key.as_deref(), Some("c"));
    }

    #[test]
    fn upper_bound_merge_of_percentiles() {
        let a = Percentiles {
            count: 2,
            p50: 1.0,
            p95: 5.0,
            p99: 9.0,
            max: 10.0,
        };
        let b = Percentiles {
            count: 3,
            p50: 2.0,
            p95: 4.0,
            p99: 8.0,
            max: 12.0,
        };
        let m = merge_upper(&[Some(a), None, Some(b)]).unwrap();
        assert_eq!(
            (m.count, m.p50, m.p95, m.p99, m.max),
            (5, 2.0, 5.0, 9.0, 12.0)
        );
        assert!(merge_upper(&[None]).is_none());
    }

    #[test]
    fn loss_estimate_from_bitrate() {
        let mut line = ProgressLine::new(Some(601.2));
        line.tty = false;
        for _ in 0..LOSS_WINDOW {
            line.window.push_back((10.0 * 601.2 * 0.9, 10));
        }
        let l = line.loss_estimate().unwrap();
        assert!((l - 10.0).abs() < 1e-6, "{l}");
        // A viewer joined inside the window: no estimate.
        line.window.push_back((10.0 * 601.2, 11));
        assert!(line.loss_estimate().is_none());
        assert!(ProgressLine::new(None).loss_estimate().is_none());
    }
}
