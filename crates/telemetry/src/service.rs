//! What every service shares at its edge: the parts a service hands to the process
//! (routes, readiness, background tasks), the ops endpoints, and the HTTP server loop.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A readiness probe: `Err(reason)` while the service can't serve (e.g. database down).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Stops a service from taking new work and resolves once its live work is gone (e.g. an
/// SFU waiting for its sessions to end). Called on the first SIGTERM, before shutdown.
pub type DrainHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A started service: its public HTTP routes, its readiness probe and its background
/// tasks (gRPC servers, loops). The all-in-one target merges the routes of every part
/// onto one port; a single-service target serves one part alone. Same code either way.
pub struct ServicePart {
    pub name: &'static str,
    pub router: Router,
    pub ready: Option<ReadyCheck>,
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// The internal gRPC address this part serves, once bound (port 0 resolved).
    pub grpc_addr: Option<SocketAddr>,
    /// How this part drains, if it holds work worth finishing.
    pub drain: Option<DrainHook>,
}

impl ServicePart {
    pub fn new(name: &'static str, router: Router) -> Self {
        Self {
            name,
            router,
            ready: None,
            tasks: Vec::new(),
            grpc_addr: None,
            drain: None,
        }
    }
}

/// `/healthz` (process alive), `/readyz` (every part ready) and `/metrics`.
pub fn ops_router(checks: Vec<(&'static str, ReadyCheck)>) -> Router {
    // Install the recorder now: figures recorded before it exists are lost.
    crate::metrics_handle();
    let checks = Arc::new(checks);
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status":"ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let checks = checks.clone();
                async move {
                    let mut failures = serde_json::Map::new();
                    for (name, check) in checks.iter() {
                        let res = tokio::time::timeout(Duration::from_secs(3), check()).await;
                        match res {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                failures.insert((*name).into(), e.into());
                            }
                            Err(_) => {
                                failures.insert((*name).into(), "readiness check timed out".into());
                            }
                        }
                    }
                    if failures.is_empty() {
                        (StatusCode::OK, Json(serde_json::json!({"status":"ready"})))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(serde_json::json!({"status":"not_ready","failures":failures})),
                        )
                    }
                }
            }),
        )
        .merge(crate::metrics_router())
}

/// Merges parts, adds the ops endpoints and the request-span layer, and serves until
/// `shutdown`; then waits for the parts' tasks. Returns the first task error.
pub async fn serve_parts(
    addr: SocketAddr,
    parts: Vec<ServicePart>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_parts_draining(addr, parts, shutdown.clone(), Duration::ZERO, shutdown).await
}

/// Like [`serve_parts`], with a graceful drain: when `drain` is cancelled (first
/// SIGTERM), every part's drain hook runs (at most `drain_timeout`), then `shutdown`.
pub async fn serve_parts_draining(
    addr: SocketAddr,
    parts: Vec<ServicePart>,
    drain: CancellationToken,
    drain_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let hooks: Vec<DrainHook> = parts.iter().filter_map(|p| p.drain.clone()).collect();
    if !hooks.is_empty() && !drain_timeout.is_zero() {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = drain.cancelled() => {}
            }
            tracing::info!(
                timeout_s = drain_timeout.as_secs(),
                "draining: no new sessions; waiting for live ones"
            );
            let all = futures_util::future::join_all(hooks.iter().map(|h| h()));
            if tokio::time::timeout(drain_timeout, all).await.is_err() {
                tracing::warn!("drain timed out; stopping with sessions still live");
            }
            stop.cancel();
        });
    } else {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            drain.cancelled().await;
            stop.cancel();
        });
    }
    let mut router = Router::new();
    let mut checks = Vec::new();
    let mut tasks = Vec::new();
    for p in parts {
        router = router.merge(p.router);
        if let Some(c) = p.ready {
            checks.push((p.name, c));
        }
        tasks.extend(p.tasks);
    }
    let router = router
        .merge(ops_router(checks))
        .layer(axum::middleware::from_fn(crate::http_layer));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "binding HTTP on {addr}: {e}; is another process using the port? set SKYLARK_HTTP_ADDR"
        )
    })?;
    tracing::info!(%addr, "HTTP listening");
    let served = serve_http(listener, router, shutdown.clone()).await;
    shutdown.cancel();
    let mut result = served;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) if result.is_ok() => result = Err(e),
            Ok(Err(join)) if result.is_ok() => {
                result = Err(anyhow::anyhow!("task panicked: {join}"))
            }
            Err(_) => tracing::warn!("a background task did not stop within 10 s"),
            _ => {}
        }
    }
    result
}

/// Serves `router` on `listener` until `shutdown`, then gives open requests (and
/// long-lived ones like WebSockets) 5 s to finish.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::select! {
        r = server => r.map_err(|e| anyhow::anyhow!("HTTP server: {e}")),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => {
            tracing::warn!("HTTP connections still open 5 s after shutdown; closing them");
            Ok(())
        }
    }
}
