//! `skylark loadtest`: drives a Skylark deployment with WHIP publishers and WHEP viewers
//! and reports join times, latency, bitrate and loss. This is the command line: it
//! checks the flags and the rooms, then hands a [`RunConfig`] to `crates/loadgen`,
//! which runs it ([`LoadRun`]), tracks its progress and builds the [`RunReport`].
//!
//! One swarm per room: its publisher (unless `--no-publish`) goes live first, then
//! the viewers join at the ramp rate and watch until the run's duration is over. A
//! progress line goes to stderr while it runs; at the end a report goes to stdout (or,
//! with `--json`, one JSON object goes to stdout and the human report to stderr).
//!
//! ```text
//! skylark loadtest --url http://127.0.0.1:8080 --room ROOM --stream-key KEY \
//!     --viewers 200 --ramp 50/s --duration 30s --json
//! ```

use std::io::{IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use skylark_loadgen::progress::ProgressLine;
use skylark_loadgen::run::RoomLoad;
use skylark_loadgen::source::VideoConfig;
use skylark_loadgen::{EngineConfig, Error as PeerError, LoadRun, RunConfig, RunReport};
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
    /// Viewers rejoin through signaling when their picture stays frozen this long (or
    /// their session fails), as the web player does; the report counts the rejoins and
    /// how long pictures stayed frozen. Without it a failed viewer stays failed.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub rejoin_after_ms: Option<u64>,
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
    /// Base URL of the REST API the rooms are checked at before the run, when it is
    /// not served at --url (api and signaling deployed apart); default: --url.
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
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

/// The checked plan of a run.
#[derive(Debug, Clone)]
struct Plan {
    base: String,
    /// Where the rooms are checked (`--api-url`, else `base`).
    api_base: String,
    targets: Vec<RoomLoad>,
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
        .map(|(i, (room, stream_key))| RoomLoad {
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
    let api_base = match &args.tuning.api_url {
        Some(u) => {
            let api = u.trim_end_matches('/').to_string();
            match reqwest::Url::parse(&api) {
                Ok(a) if a.scheme() == "http" && a.host_str().is_some() => api,
                _ => {
                    bail!("--api-url {u:?} is not an http:// URL: write e.g. http://127.0.0.1:8080")
                }
            }
        }
        None => base.clone(),
    };
    Ok(Plan {
        base,
        api_base,
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
    t: &RoomLoad,
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
    let server_says = skylark_loadgen::server_message;
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

/// The loadgen configuration of a checked plan.
fn run_config(args: &LoadtestArgs, plan: Plan) -> RunConfig {
    RunConfig {
        base_url: plan.base,
        rooms: plan.targets,
        viewer_token: args.viewer_token.clone(),
        video: VideoConfig {
            bitrate_kbps: args.video_kbps,
            gop: args.tuning.gop,
        },
        simulcast: args.simulcast,
        ramp_per_sec: args.ramp,
        duration: args.duration,
        workers: plan.workers,
        max_concurrent_joins: args.tuning.max_concurrent_joins,
        engine: EngineConfig {
            local_ip: plan.local_ip,
            http_timeout: args.tuning.http_timeout,
            connect_timeout: args.tuning.connect_timeout,
            ..Default::default()
        },
        rejoin: args
            .rejoin_after_ms
            .map(|ms| skylark_loadgen::peer::RejoinPolicy {
                stall_after: Duration::from_millis(ms),
                ..Default::default()
            }),
    }
}

/// Runs `skylark loadtest`.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    for t in &plan.targets {
        preflight(
            &plan.api_base,
            t,
            args.viewer_token.as_deref(),
            args.no_publish,
        )
        .await?;
    }
    let config = run_config(&args, plan);
    let cancel = CancellationToken::new();
    let load = LoadRun::start(&config, cancel.clone());

    // Ctrl-C ends the run early; the report still covers what happened and every
    // session is DELETEd, so the server is left clean.
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    let watch = load.progress();
    let expected_kbps = config.expected_kbps();
    let progress_done = CancellationToken::new();
    let progress = tokio::spawn({
        let done = progress_done.clone();
        async move {
            let mut line = ProgressLine::new(expected_kbps, std::io::stderr().is_terminal());
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    () = done.cancelled() => break,
                    _ = tick.tick() => {
                        if let Some(text) = line.update(&watch.get(), Instant::now()) {
                            write_stderr(&text);
                        }
                    }
                }
            }
            if let Some(text) = line.finish() {
                write_stderr(text);
            }
        }
    });

    let started = Instant::now();
    // The publishers' connect time comes before the viewers' clock starts.
    let limit =
        args.duration + args.tuning.connect_timeout + args.tuning.http_timeout + CLOSE_GRACE;
    let results = match tokio::time::timeout(limit, load.wait()).await {
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

    let rooms = config.rooms.len();
    let mut reports = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (room, r) in results {
        match r {
            Ok(rep) => reports.push((room, rep)),
            Err(e) => {
                let err = publish_error(e, &config.base_url, &room, config.engine.local_ip);
                if rooms > 1 {
                    // The others may still report; say which room this was.
                    eprintln!("skylark loadtest: room {room}: {err:#}");
                }
                first_error.get_or_insert(err);
            }
        }
    }
    if reports.is_empty() {
        return Err(first_error.unwrap_or_else(|| anyhow::anyhow!("no room produced a report")));
    }
    let report = RunReport::new(&config, reports);
    let human = report.human(started.elapsed());
    if args.json {
        eprint!("{human}");
        println!("{}", report.to_json());
    } else {
        print!("{human}");
    }
    match first_error {
        // Some rooms ran, some could not publish: the report is out, the exit code tells.
        Some(e) => Err(e.context("some rooms did not run (see above)")),
        None => Ok(()),
    }
}

/// Writes progress to stderr. Progress is best effort: a closed stderr must not end
/// the run.
fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
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
}
