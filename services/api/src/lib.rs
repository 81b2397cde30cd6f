//! The creators' API: users, rooms and stream keys over REST (axum), and the
//! `RoomDirectory` gRPC service other services use to authorize publishers and viewers.
//!
//! ```no_run
//! # async fn demo(config: skylark_api::ApiConfig) -> anyhow::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let bus = skylark_bus::connect(None).await?;
//! skylark_api::run(config, bus, shutdown).await
//! # }
//! ```

mod config;
mod directory;
mod http;
mod ids;
mod mail;
mod openapi;
mod presence;
pub mod recordings;
mod rest;
pub mod store;
mod webhooks;

pub use config::{load_or_create_jwt_secret, load_or_create_secret, ApiConfig, SignupMode};
pub use directory::RoomDirectoryService;
pub use mail::{MailConfig, MailConfigError};
pub use presence::{Presence, RoomStatus};
pub use rest::router;
pub use skylark_telemetry::limits::RateLimit;
pub use webhooks::{AdmissionConfig, EventType, WebhookConfig};

use skylark_auth::TokenIssuer;
use skylark_bus::AnyBus;
use skylark_telemetry::limits::Limiter;
use skylark_telemetry::{ReadyCheck, ServicePart};
use std::net::IpAddr;
use std::sync::Arc;
use store::Store;
use tokio_util::sync::CancellationToken;

/// Shared state of the API's handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub tokens: TokenIssuer,
    pub config: Arc<ApiConfig>,
    pub presence: Presence,
    pub(crate) signup_limit: Arc<Limiter<IpAddr>>,
    pub(crate) login_limit: Arc<Limiter<IpAddr>>,
    /// Signup verification attempts per client address.
    pub(crate) verify_limit: Arc<Limiter<IpAddr>>,
    /// Login attempts per account (normalised email), whatever address they come from.
    pub(crate) login_account_limit: Arc<Limiter<String>>,
    /// Password hashes (argon2, tens of ms of CPU and 19 MiB each) running at once: a
    /// burst of signups or logins queues here instead of exhausting memory and threads.
    pub(crate) password_work: Arc<tokio::sync::Semaphore>,
    pub(crate) mailer: mail::Mailer,
    /// The operator's admission hook, if configured.
    pub(crate) admission: Option<Arc<webhooks::admission::Admission>>,
}

impl ApiState {
    /// Starts the mail-sending task too, so it needs a Tokio runtime.
    pub fn new(store: Store, config: ApiConfig, bus: AnyBus) -> Self {
        Self {
            mailer: mail::Mailer::start(config.mail.clone()),
            verify_limit: Arc::new(Limiter::new(config.auth_rate_limit)),
            presence: Presence::new(bus),
            tokens: TokenIssuer::new(&config.jwt_secret),
            signup_limit: Arc::new(Limiter::new(config.auth_rate_limit)),
            login_limit: Arc::new(Limiter::new(config.auth_rate_limit)),
            login_account_limit: Arc::new(Limiter::new(config.auth_rate_limit)),
            password_work: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
            admission: config.webhooks.admission.clone().map(|a| {
                let secret = config.webhooks.secret.clone().unwrap_or_default();
                Arc::new(webhooks::admission::Admission::new(a, secret))
            }),
            store,
            config: Arc::new(config),
        }
    }
}

/// Connects to the database, migrates it, starts the gRPC server, and returns the
/// REST routes for the process to serve.
pub async fn start(
    config: ApiConfig,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<ServicePart> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    tracing::info!(database = %config.database_kind(), "database ready");
    if config.signup_mode == SignupMode::Verify && config.mail.is_log() {
        tracing::warn!(
            "signup links are written to this log, not mailed: set SKYLARK_MAIL_URL to an \
             SMTP server (or SKYLARK_SIGNUP=open on a private deployment)"
        );
    }
    store
        .sync_config_endpoints(&config.webhooks.urls)
        .await
        .map_err(|e| anyhow::anyhow!("recording SKYLARK_WEBHOOK_URLS: {e}"))?;
    let state = ApiState::new(store.clone(), config.clone(), bus.clone());
    // Webhooks: the bus-to-outbox reconciler and the delivery task, until shutdown.
    let reconciler = tokio::spawn(webhooks::reconciler::run(
        store.clone(),
        bus,
        shutdown.clone(),
    ));
    let delivery = tokio::spawn(webhooks::delivery::run(
        store.clone(),
        config.webhooks.clone(),
        shutdown.clone(),
    ));
    let webhook_tasks = tokio::spawn(async move {
        let _ = tokio::join!(reconciler, delivery);
        Ok(())
    });

    let grpc_addr = config.grpc_addr;
    let directory = RoomDirectoryService::new(state.clone());
    let grpc_shutdown = shutdown.clone();
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "binding gRPC on {grpc_addr}: {e}; set SKYLARK_GRPC_ADDR to a free port"
            )
        })?;
    let grpc_addr = listener.local_addr()?;
    tracing::info!(addr = %grpc_addr, "RoomDirectory gRPC listening");
    let grpc_store = store.clone();
    let grpc = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let res = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(skylark_telemetry::GRPC_KEEPALIVE))
            .http2_keepalive_timeout(Some(skylark_telemetry::GRPC_KEEPALIVE_TIMEOUT))
            .timeout(std::time::Duration::from_secs(10))
            .layer(skylark_telemetry::GrpcServerLayer::new())
            .add_service(directory.into_server())
            .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
            .await;
        grpc_store.close().await;
        res.map_err(|e| anyhow::anyhow!("RoomDirectory gRPC server: {e}"))
    });

    let ready_store = store.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let s = ready_store.clone();
        Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
    });
    Ok(ServicePart {
        name: "api",
        router: rest::router(state),
        ready: Some(ready),
        tasks: vec![grpc, webhook_tasks],
        grpc_addr: Some(grpc_addr),
        drain: None,
    })
}

/// Runs the API alone (the `skylark api` target) until `shutdown`.
pub async fn run(
    config: ApiConfig,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let part = start(config, bus, shutdown.clone()).await?;
    skylark_telemetry::serve_parts(addr, vec![part], shutdown).await
}

/// Runs migrations and returns (the `skylark migrate` target).
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let store = Store::connect(database_url).await?;
    store.migrate().await?;
    store.close().await;
    Ok(())
}
