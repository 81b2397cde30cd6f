//! `skylark`: every Skylark service in one binary. With no subcommand it runs the whole
//! platform in one process on embedded defaults; a subcommand runs one service, as in
//! the Kubernetes layout. Both share every line of service code.

mod loadtest;

use clap::{Args, Parser, Subcommand};
use skylark_auth::PlaybackTokens;
use skylark_telemetry::{InternalSecret, LogFormat, TelemetryConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "skylark",
    version,
    about = "Live streaming: WHIP/RTMP in, WebRTC and LL-HLS out"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    target: Option<Target>,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
enum Target {
    /// Creators, rooms, stream keys (REST) and the RoomDirectory gRPC service.
    Api,
    /// WHIP/WHEP, WebSocket signaling, node selection.
    Signaling,
    /// WebRTC media node.
    Sfu,
    /// LL-HLS and HTTP-FLV packaging.
    Packager,
    /// The embedded TURN server: UDP and TCP on SKYLARK_TURN_ADDR (3478), TLS with a
    /// certificate (5349).
    Turn,
    /// Run database migrations and exit.
    Migrate,
    /// Load generator: WHIP publishers and many WHEP viewers against a Skylark URL.
    Loadtest(loadtest::LoadtestArgs),
}

impl Target {
    /// The subcommand, as typed.
    fn name(&self) -> &'static str {
        match self {
            Target::Api => "api",
            Target::Signaling => "signaling",
            Target::Sfu => "sfu",
            Target::Packager => "packager",
            Target::Turn => "turn",
            Target::Migrate => "migrate",
            Target::Loadtest(_) => "loadtest",
        }
    }
}

/// All configuration: flags with environment-variable twins.
#[derive(Args, Debug, Clone)]
struct Config {
    /// Public HTTP: web, REST, WHIP/WHEP, WebSocket, HLS, FLV.
    #[arg(long, env = "SKYLARK_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// How clients reach HTTP (used in returned URLs).
    #[arg(
        long,
        env = "SKYLARK_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    public_url: String,
    /// SQLite file and generated secrets.
    #[arg(long, env = "SKYLARK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL; default: SQLite in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// `redis://…` for the Redis bus; default: in-process bus.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key and channel (deployments sharing a Redis differ here).
    #[arg(long, env = "SKYLARK_REDIS_PREFIX", default_value = "skylark:")]
    redis_prefix: String,
    /// The SFU's one UDP port for all WebRTC media.
    #[arg(long, env = "SKYLARK_RTC_UDP_ADDR", default_value = "0.0.0.0:7882")]
    rtc_udp_addr: SocketAddr,
    /// The SFU's one TCP port for ICE over TCP (peers whose network drops UDP), announced
    /// beside the UDP candidate at a lower priority; `off`: UDP only.
    #[arg(long, env = "SKYLARK_RTC_TCP_ADDR", default_value = "0.0.0.0:7881",
          value_parser = addr_or_off)]
    rtc_tcp_addr: AddrOrOff,
    /// Address announced in ICE candidates; default: first non-loopback address.
    #[arg(long, env = "SKYLARK_RTC_PUBLIC_IP")]
    rtc_public_ip: Option<std::net::IpAddr>,
    /// RTMP ingest.
    #[arg(long, env = "SKYLARK_RTMP_ADDR", default_value = "0.0.0.0:1935")]
    rtmp_addr: SocketAddr,
    /// RTMP URL handed to creators; default: the public URL's host, RTMP port, app `live`.
    #[arg(long, env = "SKYLARK_RTMP_PUBLIC_URL")]
    rtmp_public_url: Option<String>,
    /// Internal HTTP: `/metrics` (and `/healthz`, `/readyz`); never route clients to it.
    /// Default: loopback, 127.0.0.1:9090 all-in-one; api 9091, signaling 9092, sfu 9093,
    /// packager 9094.
    #[arg(long, env = "SKYLARK_INTERNAL_ADDR")]
    internal_addr: Option<SocketAddr>,
    /// Internal gRPC listen address of a single-service target (api 7001, sfu 7002,
    /// packager 7003); the all-in-one target uses ephemeral loopback ports.
    #[arg(long, env = "SKYLARK_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// Where other services reach the API's RoomDirectory gRPC.
    #[arg(
        long,
        env = "SKYLARK_API_GRPC_URL",
        default_value = "http://127.0.0.1:7001"
    )]
    api_grpc_url: String,
    /// How other services reach this node's gRPC (default: derived from the listen
    /// address and SKYLARK_RTC_PUBLIC_IP).
    #[arg(long, env = "SKYLARK_GRPC_ADVERTISE_URL")]
    grpc_advertise_url: Option<String>,
    /// Node id in the registry (default: generated).
    #[arg(long, env = "SKYLARK_NODE_ID")]
    node_id: Option<String>,
    /// How other packagers reach this one's HTTP (default: the HTTP address).
    #[arg(long, env = "SKYLARK_HTTP_ADVERTISE")]
    http_advertise: Option<String>,
    /// HLS target segment duration, ms (segments are cut at the next keyframe).
    #[arg(long, env = "SKYLARK_HLS_SEGMENT_MS", default_value_t = 2000)]
    hls_segment_ms: u64,
    /// Where recordings go: a directory (`file:///path` or a path; default
    /// `{data dir}/recordings`) or S3-compatible storage, `s3://bucket/prefix`
    /// (credentials, region, endpoint: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP).
    #[arg(long, env = "SKYLARK_RECORDINGS_URL")]
    recordings_url: Option<String>,
    /// How far back (seconds) HLS viewers may seek in a live stream; 0 turns the DVR
    /// window off. Segments behind the live edge are kept on disk under
    /// `{data dir}/dvr`, removed with the room.
    #[arg(long, env = "SKYLARK_DVR_WINDOW_S", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    dvr_window_s: u64,
    /// LL-HLS part duration, ms.
    #[arg(long, env = "SKYLARK_HLS_PART_MS", default_value_t = 200)]
    hls_part_ms: u64,
    /// On SIGTERM, how long an SFU keeps its live sessions (taking no new ones) before
    /// stopping; 0 stops at once. A second signal stops at once too.
    #[arg(long, env = "SKYLARK_DRAIN_TIMEOUT_S", default_value_t = 0)]
    drain_timeout_s: u64,
    /// Most WebRTC sessions one SFU node takes.
    #[arg(long, env = "SKYLARK_SFU_MAX_SESSIONS", default_value_t = 5000)]
    max_sessions: usize,
    /// SFU worker tasks, each with its own core and socket on the one UDP port; 0 (the
    /// default): one per core the process may use.
    #[arg(long, env = "SKYLARK_SFU_WORKERS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    sfu_workers: u16,
    /// Busy share of its time (0.1–1) past which an SFU worker takes no new viewer; with
    /// every worker past it the node reports itself overloaded and placement sends
    /// viewers to other nodes.
    #[arg(long, env = "SKYLARK_SFU_OVERLOAD_AT", default_value_t = skylark_sfu::DEFAULT_OVERLOAD_AT,
          value_parser = overload_share)]
    sfu_overload_at: f64,
    /// What a WebRTC viewer joining mid-GOP gets from a publisher that can't be asked for
    /// a keyframe (RTMP): `gop` (the room's cached GOP at once, at its own times: a
    /// picture at once, then live latency), `gop-fast` (the same squeezed into one
    /// instant), `keyframe` (the cached keyframe alone: a wrong picture until the next
    /// one), `wait` (the encoder's next keyframe). Measured in docs/benchmarks.md.
    #[arg(long, env = "SKYLARK_SFU_JOIN_FRAMES", default_value = "gop")]
    sfu_join_frames: skylark_sfu::core::JoinFrames,
    /// Who seals a WebRTC viewer's packets: `direct` (the SFU's core: a 12-byte header
    /// and its own SRTP seal per packet, sender reports and resends its own) or `str0m`
    /// (the viewer's str0m session, as before; for measuring one against the other).
    #[arg(long, env = "SKYLARK_SFU_SEND_PATH", default_value = "direct")]
    sfu_send_path: skylark_sfu::core::SendPath,
    /// Downstream relay links (edges pulling a room) one SFU node feeds at most.
    #[arg(long, env = "SKYLARK_SFU_MAX_RELAYS", default_value_t = 8)]
    max_relays: u32,
    /// How long an edge SFU keeps pulling a room after its last viewer there left.
    #[arg(long, env = "SKYLARK_SFU_EDGE_IDLE_S", default_value_t = 30)]
    sfu_edge_idle_s: u64,
    /// Seconds a WebRTC session may take to connect (ICE + DTLS) before the SFU drops
    /// it and frees its slot.
    #[arg(long, env = "SKYLARK_SFU_CONNECT_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    sfu_connect_timeout_s: u64,
    /// How signaling picks the SFU node of a new room: `least-loaded` spreads rooms,
    /// `pack` fills the fullest node with room first.
    #[arg(
        long,
        env = "SKYLARK_NODE_SELECTOR",
        value_enum,
        default_value = "least-loaded"
    )]
    node_selector: skylark_signaling::SelectorKind,
    /// Token signing key (≥ 32 bytes); default: generated once in the data dir.
    #[arg(long, env = "SKYLARK_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Key signing private rooms' HLS/FLV playback URLs (≥ 32 bytes), shared by
    /// signaling (signs) and packagers (check); default: derived from the JWT key, so
    /// services that only check playback never hold the key that mints access tokens.
    #[arg(long, env = "SKYLARK_PLAYBACK_SECRET", hide_env_values = true)]
    playback_secret: Option<String>,
    /// Shared secret every internal gRPC call carries (≥ 32 visible ASCII bytes), the same
    /// on every service of a deployment; required by single-service targets. Default
    /// (all-in-one): generated once in the data dir.
    #[arg(long, env = "SKYLARK_INTERNAL_SECRET", hide_env_values = true)]
    internal_secret: Option<String>,
    /// A second internal secret this service accepts but does not send: set during a
    /// rotation (docs/operators.md), unset otherwise.
    #[arg(long, env = "SKYLARK_INTERNAL_SECRET_ACCEPT", hide_env_values = true)]
    internal_secret_accept: Option<String>,
    /// Lifetime of creators' access tokens, in seconds.
    #[arg(long, env = "SKYLARK_ACCESS_TOKEN_TTL_S", default_value_t = 3600)]
    access_token_ttl_s: u64,
    /// Signup/login attempts per client address: burst.
    #[arg(long, env = "SKYLARK_AUTH_RATE_BURST", default_value_t = 10)]
    auth_rate_burst: u32,
    /// Signup/login attempts per client address: refill per minute.
    #[arg(long, env = "SKYLARK_AUTH_RATE_PER_MIN", default_value_t = 10)]
    auth_rate_per_min: u32,
    /// Proxies whose X-Forwarded-For names the client (comma-separated addresses or
    /// CIDR ranges, e.g. the ingress controller's); per-client limits key on it.
    #[arg(long, env = "SKYLARK_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// Rooms one creator may hold; creating more is refused until one is deleted.
    #[arg(long, env = "SKYLARK_MAX_ROOMS_PER_CREATOR", default_value_t = 100)]
    max_rooms_per_creator: u32,
    /// `verify`: signup mails a link and answers alike for new and registered emails;
    /// `open`: accounts at once, but a taken email is answered `409`, revealing it.
    #[arg(long, env = "SKYLARK_SIGNUP", default_value = "verify")]
    signup: skylark_api::SignupMode,
    /// Where signup mail goes: `smtp://[user:pass@]host[:port]` (STARTTLS required unless
    /// `?tls=none`), `smtps://…` (TLS), or `log` (written to the log at WARN).
    #[arg(
        long,
        env = "SKYLARK_MAIL_URL",
        default_value = "log",
        hide_env_values = true
    )]
    mail_url: String,
    /// Sender of signup mail.
    #[arg(
        long,
        env = "SKYLARK_MAIL_FROM",
        default_value = "Skylark <no-reply@localhost>"
    )]
    mail_from: String,
    /// Deployment-wide webhook endpoints (comma-separated http(s) URLs): every event of
    /// every room, signed with `SKYLARK_WEBHOOK_SECRET`.
    #[arg(long, env = "SKYLARK_WEBHOOK_URLS", default_value = "")]
    webhook_urls: String,
    /// TURN servers handed to WHIP/WHEP clients (RFC 9725 `Link: rel="ice-server"`),
    /// comma-separated: `turn:host:3478?transport=udp,turn:host:3478?transport=tcp`.
    /// Each session gets a credential by the TURN REST scheme (coturn's
    /// `use-auth-secret`); empty: none.
    #[arg(long, env = "SKYLARK_TURN_URLS", default_value = "")]
    turn_urls: String,
    /// The TURN REST shared secret (coturn's `static-auth-secret`); required with
    /// SKYLARK_TURN_URLS.
    #[arg(
        long,
        env = "SKYLARK_TURN_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    turn_secret: String,
    /// How long a minted TURN credential works, seconds.
    #[arg(long, env = "SKYLARK_TURN_TTL_S", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    turn_ttl_s: u64,
    /// The embedded TURN server's UDP and TCP address. All-in-one: the server runs only
    /// when this is set (and its URLs go to clients unless SKYLARK_TURN_URLS is given);
    /// `skylark turn`: default 0.0.0.0:3478.
    #[arg(long, env = "SKYLARK_TURN_ADDR")]
    turn_addr: Option<SocketAddr>,
    /// TURN over TLS (`turns:`), with SKYLARK_TURN_TLS_CERT and _KEY.
    #[arg(long, env = "SKYLARK_TURN_TLS_ADDR", default_value = "0.0.0.0:5349")]
    turn_tls_addr: SocketAddr,
    /// PEM certificate chain of `turns:`; unset: no TLS listener.
    #[arg(long, env = "SKYLARK_TURN_TLS_CERT")]
    turn_tls_cert: Option<PathBuf>,
    /// PEM private key of `turns:`.
    #[arg(long, env = "SKYLARK_TURN_TLS_KEY")]
    turn_tls_key: Option<PathBuf>,
    /// The address TURN relayed sockets are announced on (and the embedded server's URLs
    /// name); default: SKYLARK_RTC_PUBLIC_IP, else the first non-loopback address.
    #[arg(long, env = "SKYLARK_TURN_RELAY_IP")]
    turn_relay_ip: Option<std::net::IpAddr>,
    /// An IPv6 address TURN relayed sockets are also offered on, to clients asking for
    /// IPv6 (REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY); unset: IPv4 only.
    #[arg(long, env = "SKYLARK_TURN_RELAY_IP6")]
    turn_relay_ip6: Option<std::net::Ipv6Addr>,
    /// The TURN realm (coturn's `realm`).
    #[arg(long, env = "SKYLARK_TURN_REALM", default_value = "skylark")]
    turn_realm: String,
    /// Private networks p2p rooms' TURN credentials may reach when their participants
    /// announce them (comma-separated CIDRs), as they may public addresses.
    #[arg(long, env = "SKYLARK_TURN_ALLOW_PEERS", default_value = "")]
    turn_allow_peers: String,
    /// What TURN credentials without a scope (`expiry:id` minted by older signaling or
    /// an operator's tooling) may relay to: `sfu` (the SFU nodes only) or `public` (any
    /// public address, the allow-list, SFU nodes, the server's own allocations).
    #[arg(long, env = "SKYLARK_TURN_UNSCOPED", default_value = "sfu")]
    turn_unscoped: skylark_turn::Unscoped,
    /// TURN allocations at once, all credentials together.
    #[arg(long, env = "SKYLARK_TURN_MAX_ALLOCATIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    turn_max_allocations: u32,
    /// TURN allocations at once per credential (a p2p broadcaster takes one per viewer
    /// and TURN URL).
    #[arg(long, env = "SKYLARK_TURN_USER_ALLOCATIONS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    turn_user_allocations: u32,
    /// Bytes per second one TURN credential relays, all its allocations together, both
    /// ways; past it UDP packets are dropped and TCP relays wait.
    #[arg(long, env = "SKYLARK_TURN_BYTES_PER_S", default_value_t = 3_125_000,
          value_parser = clap::value_parser!(u64).range(10_000..=125_000_000))]
    turn_bytes_per_s: u64,
    /// Signs deployment-wide webhooks and admission calls (receivers verify with it).
    #[arg(
        long,
        env = "SKYLARK_WEBHOOK_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    webhook_secret: String,
    /// Admission hook: POSTed `{room, protocol, client_ip}` before a publish is
    /// accepted; 2xx allows, 403 refuses.
    #[arg(long, env = "SKYLARK_ADMISSION_URL", default_value = "")]
    admission_url: String,
    /// How long the admission hook may take before `SKYLARK_ADMISSION_DEFAULT` applies.
    #[arg(long, env = "SKYLARK_ADMISSION_TIMEOUT_MS", default_value_t = 2000)]
    admission_timeout_ms: u64,
    /// What an admission hook that times out or fails means: `allow` or `deny`.
    #[arg(long, env = "SKYLARK_ADMISSION_DEFAULT", default_value = "deny")]
    admission_default: String,
    /// Let creators' webhooks reach private, loopback and link-local addresses (by
    /// default only public hosts: a webhook must not reach the internal network).
    #[arg(long, env = "SKYLARK_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    webhook_allow_private: bool,
    /// OTLP/gRPC trace collector, e.g. http://otel-collector:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    log_format: LogFormat,
}

/// A URL with any `user:password@` part masked, for logs.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

impl Config {
    fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("skylark.db").display()))
    }

    fn rtmp_public_url(&self) -> String {
        if let Some(u) = &self.rtmp_public_url {
            return u.clone();
        }
        let host = self
            .public_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', '?']).next())
            .map(|authority| match authority.rsplit_once(':') {
                // Keep IPv6 brackets; strip an HTTP port.
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
                _ => authority.to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        format!("rtmp://{host}:{}/live", self.rtmp_addr.port())
    }

    fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        match &self.jwt_secret {
            Some(s) if s.len() >= 32 => Ok(s.as_bytes().to_vec()),
            Some(_) => anyhow::bail!(
                "SKYLARK_JWT_SECRET is shorter than 32 bytes: use a longer random value"
            ),
            None => skylark_api::load_or_create_jwt_secret(&self.data_dir),
        }
    }

    /// The TURN servers signaling hands out, if any: SKYLARK_TURN_URLS, else those of
    /// the embedded server (`embedded`).
    fn turn_servers(
        &self,
        embedded: &[String],
    ) -> anyhow::Result<Option<skylark_signaling::TurnServers>> {
        let mut urls: Vec<String> = self
            .turn_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        if urls.is_empty() {
            urls = embedded.to_vec();
        }
        if urls.is_empty() {
            return Ok(None);
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            anyhow::bail!("SKYLARK_TURN_URLS: {bad:?} is not a turn: or turns: URL (e.g. turn:turn.example.com:3478?transport=udp)");
        }
        if self.turn_secret.len() < 16 {
            anyhow::bail!("SKYLARK_TURN_URLS needs SKYLARK_TURN_SECRET (at least 16 bytes): the TURN server's static-auth-secret");
        }
        Ok(Some(skylark_signaling::TurnServers {
            urls,
            secret: skylark_auth::TurnSecret::new(self.turn_secret.as_bytes()),
            ttl: Duration::from_secs(self.turn_ttl_s),
        }))
    }

    /// The TURN REST secret; the all-in-one, which mints and checks, makes one up if
    /// none is given.
    fn turn_secret_or_random(&mut self, target: Option<&Target>) -> anyhow::Result<()> {
        if self.turn_secret.is_empty() && target.is_none() {
            let mut b = [0u8; 24];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random TURN secret: {e}"))?;
            self.turn_secret = b.iter().map(|x| format!("{x:02x}")).collect();
        }
        if self.turn_secret.len() < 16 {
            anyhow::bail!("the TURN server needs SKYLARK_TURN_SECRET (at least 16 bytes), the secret signaling mints credentials with");
        }
        Ok(())
    }

    /// The embedded TURN server's configuration, listening on `addr`.
    fn turn(&self, addr: SocketAddr) -> anyhow::Result<skylark_turn::Config> {
        let tls = match (&self.turn_tls_cert, &self.turn_tls_key) {
            (Some(cert), Some(key)) => Some(skylark_turn::Tls {
                addr: self.turn_tls_addr,
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => anyhow::bail!(
                "TURN over TLS needs both SKYLARK_TURN_TLS_CERT and SKYLARK_TURN_TLS_KEY"
            ),
        };
        Ok(skylark_turn::Config {
            addr,
            tls,
            relay_ip: self.turn_relay_ip(),
            relay_ip6: self.turn_relay_ip6,
            realm: self.turn_realm.clone(),
            secret: skylark_auth::TurnSecret::new(self.turn_secret.as_bytes()),
            allow_peers: skylark_turn::parse_allow_peers(&self.turn_allow_peers)?,
            unscoped: self.turn_unscoped,
            limits: skylark_turn::Limits {
                allocations: self.turn_max_allocations as usize,
                per_user: self.turn_user_allocations as usize,
                bytes_per_s: self.turn_bytes_per_s,
            },
        })
    }

    fn turn_relay_ip(&self) -> std::net::IpAddr {
        self.turn_relay_ip
            .or(self.rtc_public_ip)
            .unwrap_or_else(skylark_sfu::default_public_ip)
    }

    fn playback_tokens(&self) -> anyhow::Result<PlaybackTokens> {
        match &self.playback_secret {
            Some(s) if s.len() >= 32 => Ok(PlaybackTokens::new(s.as_bytes())),
            Some(_) => anyhow::bail!(
                "SKYLARK_PLAYBACK_SECRET is shorter than 32 bytes: use a longer random value"
            ),
            None => Ok(PlaybackTokens::new(&self.jwt_secret()?)),
        }
    }

    /// The secret of internal gRPC calls. A single-service target must be given it: a
    /// generated one would differ from its peers' and every call between them would fail.
    fn internal_secret(&self, target: Option<&Target>) -> anyhow::Result<InternalSecret> {
        let bad = |e| anyhow::anyhow!("SKYLARK_INTERNAL_SECRET: {e}");
        let secret = match (&self.internal_secret, target) {
            (Some(s), _) => InternalSecret::new(s).map_err(bad)?,
            (None, None) => {
                let s = skylark_api::load_or_create_secret(&self.data_dir, "internal_secret")?;
                InternalSecret::new(&String::from_utf8_lossy(&s)).map_err(bad)?
            }
            (None, Some(t)) => anyhow::bail!(
                "skylark {} needs SKYLARK_INTERNAL_SECRET: the shared secret of internal gRPC \
                 calls, the same value on every service of the deployment (at least 32 \
                 random characters, e.g. from `openssl rand -hex 32`)",
                t.name()
            ),
        };
        match &self.internal_secret_accept {
            Some(other) => secret
                .also_accepting(other)
                .map_err(|e| anyhow::anyhow!("SKYLARK_INTERNAL_SECRET_ACCEPT: {e}")),
            None => Ok(secret),
        }
    }

    /// The recordings store SKYLARK_RECORDINGS_URL names (default: a directory under
    /// the data dir).
    fn recordings(&self) -> anyhow::Result<skylark_objstore::Store> {
        Ok(skylark_objstore::open(
            self.recordings_url.as_deref(),
            self.data_dir.join("recordings"),
        )?)
    }

    fn api(&self, grpc_addr: SocketAddr) -> anyhow::Result<skylark_api::ApiConfig> {
        Ok(skylark_api::ApiConfig {
            http_addr: self.http_addr,
            grpc_addr,
            public_url: self.public_url.trim_end_matches('/').to_string(),
            rtmp_url: self.rtmp_public_url(),
            database_url: self.database_url(),
            jwt_secret: self.jwt_secret()?,
            access_token_ttl: Duration::from_secs(self.access_token_ttl_s.max(60)),
            auth_rate_limit: skylark_api::RateLimit {
                burst: self.auth_rate_burst,
                per_minute: self.auth_rate_per_min,
            },
            max_rooms_per_creator: self.max_rooms_per_creator,
            signup_mode: self.signup,
            mail: skylark_api::MailConfig::parse(&self.mail_url, &self.mail_from)?,
            // Whichever processes serve them, clients see one REST API and one document.
            other_operations: skylark_signaling::openapi(),
            webhooks: skylark_api::WebhookConfig::new(
                &self.webhook_urls,
                &self.webhook_secret,
                &self.admission_url,
                Duration::from_millis(self.admission_timeout_ms.clamp(1, 10_000)),
                &self.admission_default,
                self.webhook_allow_private,
            )?,
            recordings: Some(self.recordings()?),
        })
    }

    /// The internal listener of `target`: loopback, a port per target so targets can
    /// share a host.
    fn internal_addr(&self, target: Option<&Target>) -> SocketAddr {
        let port = match target {
            Some(Target::Api) => 9091,
            Some(Target::Signaling) => 9092,
            Some(Target::Sfu) => 9093,
            Some(Target::Packager) => 9094,
            Some(Target::Turn) => 9095,
            _ => skylark_telemetry::DEFAULT_INTERNAL_ADDR.port(),
        };
        self.internal_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The effective configuration, secrets masked, printed at start-up.
    fn log_summary(&self, target: &str, internal_addr: SocketAddr) {
        tracing::info!(
            target_service = target,
            http_addr = %self.http_addr,
            %internal_addr,
            public_url = %self.public_url,
            data_dir = %self.data_dir.display(),
            database = %mask_url(&self.database_url()),
            redis = %self.redis_url.as_deref().map(mask_url).unwrap_or_else(|| "in-process".into()),
            rtc_udp_addr = %self.rtc_udp_addr,
            rtc_tcp_addr = ?self.rtc_tcp_addr.0,
            rtc_public_ip = ?self.rtc_public_ip,
            rtmp_addr = %self.rtmp_addr,
            rtmp_public_url = %self.rtmp_public_url(),
            grpc_addr = ?self.grpc_addr,
            api_grpc_url = %self.api_grpc_url,
            sfu_max_sessions = self.max_sessions,
            sfu_max_relays = self.max_relays,
            sfu_edge_idle_s = self.sfu_edge_idle_s,
            sfu_connect_timeout_s = self.sfu_connect_timeout_s,
            node_selector = ?self.node_selector,
            jwt_secret = if self.jwt_secret.is_some() { "<set>" } else { "<data dir>" },
            playback_secret = if self.playback_secret.is_some() { "<set>" } else { "<from the JWT key>" },
            internal_secret = if self.internal_secret.is_some() { "<set>" } else { "<data dir>" },
            internal_secret_accept = if self.internal_secret_accept.is_some() { "<set>" } else { "<unset>" },
            signup = ?self.signup,
            mail = %mask_url(&self.mail_url),
            mail_from = %self.mail_from,
            webhook_urls = %self.webhook_urls.split(',').map(mask_url).collect::<Vec<_>>().join(","),
            webhook_secret = if self.webhook_secret.is_empty() { "<unset>" } else { "<set>" },
            turn_urls = %self.turn_urls,
            turn_secret = if self.turn_secret.is_empty() { "<unset>" } else { "<set>" },
            turn_ttl_s = self.turn_ttl_s,
            turn_addr = ?self.turn_addr,
            turn_tls = ?self.turn_tls_cert.as_ref().map(|_| self.turn_tls_addr),
            turn_relay_ip = ?self.turn_relay_ip,
            turn_relay_ip6 = ?self.turn_relay_ip6,
            turn_allow_peers = %self.turn_allow_peers,
            admission_url = %mask_url(&self.admission_url),
            admission_timeout_ms = self.admission_timeout_ms,
            admission_default = %self.admission_default,
            webhook_allow_private = self.webhook_allow_private,
            otlp_endpoint = ?self.otlp_endpoint,
            "configuration"
        );
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
/// The first SIGINT/SIGTERM starts a drain (`drain`); a second one, or the end of the
/// drain, stops the process (`shutdown`).
fn watch_signals(drain: CancellationToken, shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let term_recv = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term_recv = std::future::pending::<()>();
            tokio::select! {
                _ = ctrl_c => {},
                _ = term_recv => {},
            }
            if n == 0 {
                tracing::info!("shutting down");
                drain.cancel();
            } else {
                tracing::info!("second signal: stopping now");
                shutdown.cancel();
                return;
            }
        }
    });
}

fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.config;
    let target = cli.target;
    let name = target
        .as_ref()
        .map_or("skylark".to_string(), |t| format!("skylark-{}", t.name()));
    let _telemetry = skylark_telemetry::init(&TelemetryConfig {
        service_name: name.clone(),
        log_format: config.log_format,
        otlp_endpoint: config.otlp_endpoint.clone(),
    })?;
    if let Some(Target::Loadtest(args)) = target {
        return loadtest::run(args).await;
    }
    let internal_addr = config.internal_addr(target.as_ref());
    config.log_summary(&name, internal_addr);

    if target == Some(Target::Migrate) {
        skylark_api::migrate(&config.database_url()).await?;
        tracing::info!("migrations applied");
        return Ok(());
    }

    if target == Some(Target::Turn) || (target.is_none() && config.turn_addr.is_some()) {
        config.turn_secret_or_random(target.as_ref())?;
    }
    // Before any service starts: their gRPC servers check it, their clients send it.
    // (`skylark turn` makes no internal calls.)
    if target != Some(Target::Turn) {
        config.internal_secret(target.as_ref())?.install()?;
    }
    skylark_telemetry::limits::install_trusted_proxies(
        skylark_telemetry::limits::TrustedProxies::parse(&config.trusted_proxies)?,
    );

    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "creating data dir {}: {e}; set SKYLARK_DATA_DIR to a writable folder",
                config.data_dir.display()
            )
        })?;
    }
    let bus = skylark_bus::connect_with(&skylark_bus::BusConfig {
        redis_url: config.redis_url.clone(),
        key_prefix: config.redis_prefix.clone(),
        ..Default::default()
    })
    .await?;
    let shutdown = CancellationToken::new();
    let drain = CancellationToken::new();
    watch_signals(drain.clone(), shutdown.clone());
    let drain_timeout = Duration::from_secs(config.drain_timeout_s);

    let grpc = |default_port: u16| {
        config
            .grpc_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    };
    // Signaling signs private rooms' HLS/FLV URLs, the packager checks them.
    let signaling = |api_grpc_url: String, embedded_turn: &[String]| -> anyhow::Result<_> {
        Ok(skylark_signaling::Config {
            http_addr: config.http_addr,
            api_grpc_url,
            public_url: config.public_url.clone(),
            rtmp_addr: Some(config.rtmp_addr),
            selector: config.node_selector,
            playback_tokens: config.playback_tokens()?,
            turn: config.turn_servers(embedded_turn)?,
        })
    };
    let sfu = |grpc_addr: SocketAddr, api_grpc_url: String| skylark_sfu::Config {
        http_addr: config.http_addr,
        udp_addr: config.rtc_udp_addr,
        tcp_addr: config.rtc_tcp_addr.0,
        public_ip: config
            .rtc_public_ip
            .unwrap_or_else(skylark_sfu::default_public_ip),
        grpc_addr,
        grpc_advertise: config.grpc_advertise_url.clone(),
        node_id: config.node_id.clone(),
        max_sessions: config.max_sessions,
        max_relays: config.max_relays,
        edge_idle: Duration::from_secs(config.sfu_edge_idle_s),
        api_grpc_url: Some(api_grpc_url),
        connect_timeout: Duration::from_secs(config.sfu_connect_timeout_s),
        workers: match config.sfu_workers {
            0 => skylark_sfu::default_workers(),
            n => usize::from(n),
        },
        overload_at: config.sfu_overload_at,
        join_frames: config.sfu_join_frames,
        send_path: config.sfu_send_path,
    };
    let packager = |api_grpc_url: String| -> anyhow::Result<_> {
        Ok(skylark_packager::Config {
            http_addr: config.http_addr,
            http_advertise: config.http_advertise.clone(),
            public_ip: config
                .rtc_public_ip
                .unwrap_or_else(skylark_sfu::default_public_ip),
            node_id: config.node_id.clone(),
            segment_target: Duration::from_millis(config.hls_segment_ms.max(500)),
            part_target: Duration::from_millis(config.hls_part_ms.clamp(100, 1000)),
            api_grpc_url,
            playback_tokens: config.playback_tokens()?,
            recordings: config.recordings()?,
            dvr: (config.dvr_window_s > 0).then(|| skylark_packager::dvr::Settings {
                window: Duration::from_secs(config.dvr_window_s),
                root: config.data_dir.join("dvr"),
            }),
        })
    };
    let (addr, parts) = match target {
        None => {
            let api =
                skylark_api::start(config.api(loopback_any())?, bus.clone(), shutdown.clone())
                    .await?;
            let api_url = format!(
                "http://{}",
                api.grpc_addr
                    .ok_or_else(|| anyhow::anyhow!("the API did not report its gRPC address"))?
            );
            let sfu = skylark_sfu::start(
                sfu(loopback_any(), api_url.clone()),
                bus.clone(),
                shutdown.clone(),
            )
            .await?;
            let mut parts = vec![api, sfu];
            // After the SFU, whose media address it relays to.
            let mut turn_urls = Vec::new();
            if let Some(addr) = config.turn_addr {
                let turn =
                    skylark_turn::start(config.turn(addr)?, bus.clone(), shutdown.clone()).await?;
                turn_urls = turn.urls(config.turn_relay_ip());
                parts.push(turn.part);
            }
            parts.push(
                skylark_signaling::start(
                    signaling(api_url.clone(), &turn_urls)?,
                    bus.clone(),
                    shutdown.clone(),
                )
                .await?,
            );
            parts.push(
                skylark_packager::start(packager(api_url)?, bus.clone(), shutdown.clone()).await?,
            );
            tracing::info!(url = %config.public_url, "Skylark is up");
            (config.http_addr, parts)
        }
        Some(Target::Api) => {
            let part = skylark_api::start(config.api(grpc(7001))?, bus, shutdown.clone()).await?;
            (config.http_addr, vec![part])
        }
        Some(Target::Signaling) => {
            let part = skylark_signaling::start(
                signaling(config.api_grpc_url.clone(), &[])?,
                bus,
                shutdown.clone(),
            )
            .await?;
            (config.http_addr, vec![part])
        }
        Some(Target::Sfu) => {
            let part = skylark_sfu::start(
                sfu(grpc(7002), config.api_grpc_url.clone()),
                bus,
                shutdown.clone(),
            )
            .await?;
            (config.http_addr, vec![part])
        }
        Some(Target::Packager) => {
            let part = skylark_packager::start(
                packager(config.api_grpc_url.clone())?,
                bus,
                shutdown.clone(),
            )
            .await?;
            (config.http_addr, vec![part])
        }
        Some(Target::Turn) => {
            let addr = config
                .turn_addr
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3478)));
            let turn = skylark_turn::start(config.turn(addr)?, bus, shutdown.clone()).await?;
            (config.http_addr, vec![turn.part])
        }
        Some(Target::Migrate) | Some(Target::Loadtest(_)) => unreachable!("handled above"),
    };
    let listen = skylark_telemetry::Listen {
        public: addr,
        internal: internal_addr,
    };
    skylark_telemetry::serve_parts_draining(listen, parts, drain, drain_timeout, shutdown).await
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skylark: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("skylark: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A listen address, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
struct AddrOrOff(Option<SocketAddr>);

fn addr_or_off(s: &str) -> Result<AddrOrOff, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AddrOrOff(None));
    }
    s.parse()
        .map(|a| AddrOrOff(Some(a)))
        .map_err(|_| format!("{s:?}: an address like 0.0.0.0:7881, or off"))
}

fn overload_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: a share of the time between 0.1 and 1, e.g. 0.9"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_masked_and_derived() {
        assert_eq!(
            mask_url("postgres://u:pw@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(mask_url("redis://127.0.0.1"), "redis://127.0.0.1");
        let cli = Cli::parse_from(["skylark", "--public-url", "https://live.example.com:8443/x"]);
        assert_eq!(
            cli.config.rtmp_public_url(),
            "rtmp://live.example.com:1935/live"
        );
    }

    #[test]
    fn internal_addr_is_loopback_per_target_unless_set() {
        let config = Cli::parse_from(["skylark"]).config;
        let of = |t: Option<Target>| config.internal_addr(t.as_ref()).to_string();
        assert_eq!(of(None), "127.0.0.1:9090");
        assert_eq!(of(Some(Target::Api)), "127.0.0.1:9091");
        assert_eq!(of(Some(Target::Signaling)), "127.0.0.1:9092");
        assert_eq!(of(Some(Target::Sfu)), "127.0.0.1:9093");
        assert_eq!(of(Some(Target::Packager)), "127.0.0.1:9094");
        let set = Cli::parse_from(["skylark", "--internal-addr", "10.0.0.5:9100"]).config;
        assert_eq!(
            set.internal_addr(Some(&Target::Sfu)).to_string(),
            "10.0.0.5:9100"
        );
    }

    #[test]
    fn internal_secret_is_required_apart_and_generated_all_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let config = Cli::parse_from(["skylark", "--data-dir", data]).config;
        for t in [
            Target::Api,
            Target::Signaling,
            Target::Sfu,
            Target::Packager,
        ] {
            let err = config.internal_secret(Some(&t)).unwrap_err().to_string();
            assert!(
                err.contains("SKYLARK_INTERNAL_SECRET") && err.contains(t.name()),
                "{err}"
            );
        }
        // All-in-one: generated once, then the same on every start.
        config.internal_secret(None).unwrap();
        let file = std::fs::read_to_string(dir.path().join("data/internal_secret")).unwrap();
        assert!(file.len() >= 32);
        config.internal_secret(None).unwrap();
        let again = std::fs::read_to_string(dir.path().join("data/internal_secret")).unwrap();
        assert_eq!(file, again);
        let short = Cli::parse_from(["skylark", "--internal-secret", "short"]).config;
        let err = short
            .internal_secret(Some(&Target::Sfu))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SKYLARK_INTERNAL_SECRET") && err.contains("32"),
            "{err}"
        );
        let set = Cli::parse_from(["skylark", "--internal-secret", &"s".repeat(32)]).config;
        set.internal_secret(Some(&Target::Sfu)).unwrap();
    }
}
