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

/// `/healthz` (process alive) and `/readyz` (every part ready): served on both ports,
/// the public one for Kubernetes probes.
pub fn ops_router(checks: Vec<(&'static str, ReadyCheck)>) -> Router {
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
}

/// The internal address when none is given: loopback, so metrics stay on the host.
pub const DEFAULT_INTERNAL_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// Where a process listens: the public port (every part's routes, probes) and the
/// internal one (`/metrics` and probes), which must never face clients.
///
/// ```
/// let listen = skylark_telemetry::Listen::from("0.0.0.0:8080".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(listen.internal, skylark_telemetry::DEFAULT_INTERNAL_ADDR);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// `SKYLARK_HTTP_ADDR`.
    pub public: SocketAddr,
    /// `SKYLARK_INTERNAL_ADDR`.
    pub internal: SocketAddr,
}

/// A public address alone: internal on [`DEFAULT_INTERNAL_ADDR`].
impl From<SocketAddr> for Listen {
    fn from(public: SocketAddr) -> Self {
        Self {
            public,
            internal: DEFAULT_INTERNAL_ADDR,
        }
    }
}

/// Merges parts, adds the ops endpoints and the request-span layer, and serves until
/// `shutdown`; then waits for the parts' tasks. Returns the first task error.
pub async fn serve_parts(
    listen: impl Into<Listen>,
    parts: Vec<ServicePart>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_parts_draining(listen, parts, shutdown.clone(), Duration::ZERO, shutdown).await
}

/// Like [`serve_parts`], with a graceful drain: when `drain` is cancelled (first
/// SIGTERM), every part's drain hook runs (at most `drain_timeout`), then `shutdown`.
pub async fn serve_parts_draining(
    listen: impl Into<Listen>,
    parts: Vec<ServicePart>,
    drain: CancellationToken,
    drain_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = listen.into();
    // Internal first: once the public port answers, the internal one is up too.
    let internal = bind(listen.internal, "internal HTTP", "SKYLARK_INTERNAL_ADDR").await?;
    let public = bind(listen.public, "HTTP", "SKYLARK_HTTP_ADDR").await?;
    serve_listeners(public, internal, parts, drain, drain_timeout, shutdown).await
}

async fn bind(
    addr: SocketAddr,
    what: &str,
    variable: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "binding {what} on {addr}: {e}; is another process using the port? set {variable}"
        )
    })?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
}

/// [`serve_parts_draining`] on bound listeners: the parts' routes on `public`,
/// `/metrics` on `internal` only, `/healthz` and `/readyz` on both.
pub async fn serve_listeners(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    parts: Vec<ServicePart>,
    drain: CancellationToken,
    drain_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Install the recorder now: figures recorded before it exists are lost.
    crate::metrics_handle();
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
    // Scrapes are not client traffic: no request-span layer on the internal port.
    let internal_router = ops_router(checks.clone()).merge(crate::metrics_router());
    let internal = tokio::spawn(serve_http(internal, internal_router, shutdown.clone()));
    let router = router
        .merge(ops_router(checks))
        .layer(axum::middleware::from_fn(crate::http_layer));
    let served = serve_http(public, router, shutdown.clone()).await;
    shutdown.cancel();
    let mut result = match internal.await {
        Ok(internal_served) => served.and(internal_served),
        Err(join) => served.and(Err(anyhow::anyhow!("internal HTTP panicked: {join}"))),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One HTTP/1.1 request with any method: (status, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        (status, out)
    }

    fn series(metrics: &str, name: &str) -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect()
    }

    #[tokio::test]
    async fn metrics_only_on_the_internal_port_with_bounded_labels() {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (pa, ia) = (public.local_addr().unwrap(), internal.local_addr().unwrap());
        let part = ServicePart::new(
            "t",
            Router::new().route("/rooms/{id}", get(|| async { "room" })),
        );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_listeners(
            public,
            internal,
            vec![part],
            stop.clone(),
            Duration::ZERO,
            stop.clone(),
        ));

        assert_eq!(request(pa, "GET", "/rooms/r1").await.0, 200);
        assert_eq!(request(pa, "GET", "/metrics").await.0, 404);
        for path in ["/healthz", "/readyz"] {
            assert_eq!(request(pa, "GET", path).await.0, 200, "public {path}");
            assert_eq!(request(ia, "GET", path).await.0, 200, "internal {path}");
        }
        // The internal port serves nothing of the parts'.
        assert_eq!(request(ia, "GET", "/rooms/r1").await.0, 404);

        request(pa, "BREW", "/junk-one").await;
        request(pa, "BREW", "/rooms/r2").await;
        let (status, before) = request(ia, "GET", "/metrics").await;
        assert_eq!(status, 200);
        let before = series(&before, "skylark_http_requests_total");
        assert!(
            before.iter().any(|s| s.contains(r#"method="GET""#)
                && s.contains(r#"route="/rooms/{id}""#)
                && s.contains(r#"status="200""#)),
            "{before:?}"
        );
        // New methods and paths land in the series the first junk made.
        request(pa, "TEAPOT", "/junk-two/x").await;
        request(pa, "PROPFIND", "/rooms/r3").await;
        let after = series(
            &request(ia, "GET", "/metrics").await.1,
            "skylark_http_requests_total",
        );
        assert_eq!(before.len(), after.len(), "{before:?}\n{after:?}");
        let text = after.join("\n");
        for junk in ["BREW", "TEAPOT", "PROPFIND", "junk", "r2", "r3"] {
            assert!(!text.contains(junk), "{junk} in {text}");
        }
        assert!(text.contains(r#"method="OTHER""#) && text.contains(r#"route="unmatched""#));

        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn internal_defaults_to_loopback() {
        let listen = Listen::from(SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert!(listen.internal.ip().is_loopback());
        assert_ne!(listen.internal.port(), 8080);
    }
}
