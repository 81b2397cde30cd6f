//! The API's configuration, filled by the binary from flags and environment.

use crate::mail::MailConfig;
use crate::webhooks::WebhookConfig;
use skylark_telemetry::limits::RateLimit;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone)]
pub struct ApiConfig {
    /// Where `skylark api` serves HTTP (unused in all-in-one, which shares one port).
    pub http_addr: SocketAddr,
    /// RoomDirectory gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// How clients reach the HTTP port, e.g. `https://live.example.com`.
    pub public_url: String,
    /// RTMP ingest URL handed to creators, e.g. `rtmp://live.example.com:1935/live`.
    pub rtmp_url: String,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    pub jwt_secret: Vec<u8>,
    pub access_token_ttl: Duration,
    /// Per-client limit on signup and login attempts.
    pub auth_rate_limit: RateLimit,
    /// Rooms one creator may hold (`SKYLARK_MAX_ROOMS_PER_CREATOR`).
    pub max_rooms_per_creator: u32,
    /// Whether signup verifies the email first (`SKYLARK_SIGNUP`).
    pub signup_mode: SignupMode,
    /// Where verification mail goes (`SKYLARK_MAIL_URL`, `SKYLARK_MAIL_FROM`).
    pub mail: MailConfig,
    /// The operations other services answer under `/api/v1` (signaling's `/playback`):
    /// the document at `/api/v1/openapi.json` lists them with the API's own.
    pub other_operations: utoipa::openapi::OpenApi,
    /// Deployment-wide webhooks and the admission hook.
    pub webhooks: WebhookConfig,
    /// The recordings store (`SKYLARK_RECORDINGS_URL`: a directory or S3), where
    /// deleting a recording removes its files; `None`: only the row is deleted.
    pub recordings: Option<skylark_objstore::Store>,
}

/// How `POST /auth/signup` creates accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupMode {
    /// `202` for every address and a mail with a link; the account exists once the link
    /// is followed. Nobody learns from signup which addresses have accounts.
    Verify,
    /// `201` and a token at once, `409` for a taken address: for private deployments
    /// where everyone may know who has an account.
    Open,
}

impl std::str::FromStr for SignupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "verify" => Ok(Self::Verify),
            "open" => Ok(Self::Open),
            o => Err(format!(
                "unknown signup mode {o:?}: use `verify` (mail a link first) or `open`"
            )),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("public_url", &self.public_url)
            .field("rtmp_url", &self.rtmp_url)
            .field("database", &self.database_kind())
            .field("jwt_secret", &"<masked>")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("auth_rate_limit", &self.auth_rate_limit)
            .field("max_rooms_per_creator", &self.max_rooms_per_creator)
            .field("signup_mode", &self.signup_mode)
            .field("mail", &self.mail)
            .field(
                "other_operations",
                &self.other_operations.paths.paths.keys().collect::<Vec<_>>(),
            )
            .field("webhooks", &self.webhooks)
            .field("recordings", &self.recordings)
            .finish()
    }
}

impl ApiConfig {
    /// `sqlite` or `postgres`, for logs (the URL may hold a password).
    pub fn database_kind(&self) -> &'static str {
        if self.database_url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// A config for tests and examples: loopback ports chosen by the caller; signup
    /// `open`, mail to the log.
    pub fn for_tests(database_url: &str, grpc_addr: SocketAddr) -> Self {
        Self {
            http_addr: "127.0.0.1:0".parse().expect("literal address"),
            grpc_addr,
            public_url: "http://127.0.0.1:8080".into(),
            rtmp_url: "rtmp://127.0.0.1:1935/live".into(),
            database_url: database_url.into(),
            jwt_secret: b"test-secret-test-secret-test-secret!".to_vec(),
            access_token_ttl: Duration::from_secs(3600),
            auth_rate_limit: RateLimit {
                burst: 1000,
                per_minute: 1000,
            },
            max_rooms_per_creator: 100,
            signup_mode: SignupMode::Open,
            mail: MailConfig::log(),
            other_operations: utoipa::openapi::OpenApi::default(),
            webhooks: WebhookConfig::default(),
            recordings: None,
        }
    }
}

/// Reads the token signing key from `dir/jwt_secret`, creating it (0600) on first use,
/// so tokens stay valid across restarts of an all-in-one install.
pub fn load_or_create_jwt_secret(dir: &Path) -> anyhow::Result<Vec<u8>> {
    load_or_create_secret(dir, "jwt_secret")
}

/// Reads the secret in `dir/name`, creating it (0600, 48 random bytes) on first use:
/// the all-in-one's generated secrets, stable across restarts.
pub fn load_or_create_secret(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 characters: delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
    let secret = skylark_auth::new_secret(48);
    write_private(&path, secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}
