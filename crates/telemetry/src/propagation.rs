//! W3C trace-context across HTTP and gRPC, and the server-side spans of both.

use axum::body::Body;
use axum::extract::MatchedPath;
use http::{HeaderMap, Request, Response};
use opentelemetry::propagation::{Extractor, Injector};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::InternalSecret;

struct HeaderInjector<'a>(&'a mut HeaderMap);
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's `traceparent` into outgoing HTTP (or gRPC) headers.
pub fn inject_http(headers: &mut HeaderMap) {
    let cx = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Reads a remote parent from incoming headers.
pub fn extract_http(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Adds `traceparent` to a tonic request's metadata (gRPC metadata is HTTP/2 headers).
pub fn inject_grpc<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    let mut headers = HeaderMap::new();
    inject_http(&mut headers);
    for (k, v) in headers.iter() {
        if let (Ok(key), Ok(val)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_bytes()),
        ) {
            req.metadata_mut().insert(key, val);
        }
    }
    req
}

/// The tonic client interceptor of every internal call: the process's internal secret
/// ([`InternalSecret::current`]) and the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClientInterceptor;

impl tonic::service::Interceptor for GrpcClientInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", InternalSecret::current().bearer().clone());
        Ok(inject_grpc(req))
    }
}

/// The `method` label of HTTP metrics: a standard method, else `OTHER`, so a client
/// cannot mint series by inventing methods.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The `service` and `method` labels of gRPC metrics. `path` is `/package.Service/Method`;
/// a call the server does not implement (gRPC status 12 in the response headers) or a
/// path that is not one is `OTHER`, so callers cannot mint series with made-up paths.
pub(crate) fn grpc_labels(path: &str, unimplemented: bool) -> (String, String) {
    let ident = |s: &str, dots: bool| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dots && c == '.'))
    };
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method))
            if !unimplemented && ident(service, true) && ident(method, false) =>
        {
            (service.to_owned(), method.to_owned())
        }
        _ => ("OTHER".to_owned(), "OTHER".to_owned()),
    }
}

/// Axum middleware: one span per request (OTel HTTP semantic conventions), the remote
/// parent taken from `traceparent`, and request count/duration metrics by route
/// template (`unmatched` when none) and normalised method ([`method_label`]).
pub async fn http_layer(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let method = method_label(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
    );
    span.set_parent(extract_http(req.headers())).ok();
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("skylark_http_requests_total", &labels).increment(1);
    metrics::histogram!("skylark_http_request_duration_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Tower layer of every internal tonic server: refuses calls without the internal
/// secret (`UNAUTHENTICATED`, counted in `skylark_grpc_unauthenticated_total`), and
/// gives each RPC a span with `rpc.*` attributes, parented to the caller's `traceparent`.
#[derive(Debug, Clone)]
pub struct GrpcServerLayer {
    secret: InternalSecret,
}

impl GrpcServerLayer {
    /// Checks calls against the process's internal secret ([`InternalSecret::current`]).
    pub fn new() -> Self {
        Self::with_secret(InternalSecret::current().clone())
    }

    pub fn with_secret(secret: InternalSecret) -> Self {
        Self { secret }
    }
}

impl Default for GrpcServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerSpan {
            inner,
            secret: self.secret.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcServerSpan<S> {
    inner: S,
    secret: InternalSecret,
}

impl<S, B, RB> tower::Service<Request<B>> for GrpcServerSpan<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(refusal) = self.secret.check(req.headers()) {
            // Not labelled by path: an outsider could mint series with made-up ones.
            metrics::counter!("skylark_grpc_unauthenticated_total", "reason" => refusal.reason())
                .increment(1);
            let peer = req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|i| i.remote_addr());
            tracing::warn!(
                peer = ?peer,
                path = %req.uri().path(),
                reason = refusal.reason(),
                "internal gRPC call refused"
            );
            let resp = tonic::Status::unauthenticated(refusal.message()).into_http();
            return Box::pin(std::future::ready(Ok(resp)));
        }
        // Path is `/package.Service/Method`.
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        span.set_parent(extract_http(req.headers())).ok();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let resp = fut.await;
                // Counted once the router has answered: it knows which calls exist.
                let unimplemented = resp.as_ref().is_ok_and(|r| {
                    r.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"12")
                });
                let (service, method) = grpc_labels(&path, unimplemented);
                let labels = [("service", service), ("method", method)];
                metrics::counter!("skylark_grpc_requests_total", &labels).increment(1);
                resp
            }
            .instrument(span),
        )
    }
}

/// A gRPC channel whose calls carry the caller's trace: what every internal client
/// is built on (`SfuNodeClient<TracedChannel>`, …).
pub type TracedChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    GrpcClientInterceptor,
>;

/// [`grpc_channel`] wrapped with [`GrpcClientInterceptor`].
pub fn traced_channel(url: &str) -> anyhow::Result<TracedChannel> {
    Ok(tonic::service::interceptor::InterceptedService::new(
        grpc_channel(url)?,
        GrpcClientInterceptor,
    ))
}

/// A lazily connected gRPC channel to `url` with bounded connect and call times; wrap
/// clients with [`GrpcClientInterceptor`] so calls carry the caller's trace.
pub fn grpc_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("bad gRPC URL {url:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5))
        // A peer cut off the network (no FIN, no RST) is noticed and the connection
        // replaced, instead of every later call on it timing out.
        .http2_keep_alive_interval(GRPC_KEEPALIVE)
        .keep_alive_timeout(GRPC_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// How often both ends of an internal gRPC connection ping an idle peer, and how long
/// they wait for the answer before dropping the connection (and, on a server, the
/// streams on it: a relay link to a vanished edge ends and frees its slot).
pub const GRPC_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);
pub const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-internal-secret-0123456789";

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
        let junk = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&junk), "OTHER");
    }

    #[test]
    fn grpc_paths_are_labelled_only_when_implemented() {
        let known = ("skylark.sfu.v1.SfuNode".to_owned(), "Publish".to_owned());
        assert_eq!(grpc_labels("/skylark.sfu.v1.SfuNode/Publish", false), known);
        let other = ("OTHER".to_owned(), "OTHER".to_owned());
        assert_eq!(grpc_labels("/skylark.sfu.v1.SfuNode/Nope", true), other);
        assert_eq!(grpc_labels("/x.Y/a\"b", false), other);
        assert_eq!(grpc_labels("/no-method", false), other);
        assert_eq!(
            grpc_labels(&format!("/{}/M", "a".repeat(200)), false),
            other
        );
    }

    #[tokio::test]
    async fn grpc_layer_counts_unimplemented_calls_as_other() {
        use tower::{Layer, Service, ServiceExt};
        crate::metrics_handle();
        let svc = tower::service_fn(|req: Request<()>| async move {
            let known = req.uri().path() == "/t.v1.Known/Call";
            let mut resp = Response::new(());
            if !known {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("12"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let secret = InternalSecret::new(SECRET).unwrap();
        let mut svc = GrpcServerLayer::with_secret(secret).layer(svc);
        for path in ["/t.v1.Known/Call", "/t.v1.Made/Up", "/t.v1.Known/Invented"] {
            let req = Request::builder()
                .uri(path)
                .header("authorization", format!("Bearer {SECRET}"))
                .body(())
                .unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        let text = crate::render_metrics();
        assert!(
            text.contains(r#"skylark_grpc_requests_total{service="t.v1.Known",method="Call"}"#),
            "{text}"
        );
        assert!(
            !text.contains("Made") && !text.contains("Invented"),
            "{text}"
        );
        assert!(text.contains(r#"service="OTHER",method="OTHER""#), "{text}");
    }

    #[tokio::test]
    async fn grpc_layer_refuses_calls_without_the_secret() {
        use tower::{Layer, Service, ServiceExt};
        crate::metrics_handle();
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = reached.clone();
        let svc = tower::service_fn(move |_req: Request<()>| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(Response::new(())) }
        });
        let secret = InternalSecret::new(SECRET).unwrap();
        let mut svc = GrpcServerLayer::with_secret(secret).layer(svc);
        let wrong = "Bearer another-secret-another-secret-0000".to_owned();
        let right = format!("Bearer {SECRET}");
        for (auth, want) in [
            (None, Some("16")),
            (Some(&wrong), Some("16")),
            (Some(&right), None),
        ] {
            let mut req = Request::builder().uri("/t.v1.Auth/Call");
            if let Some(a) = auth {
                req = req.header("authorization", a.as_str());
            }
            let resp = svc
                .ready()
                .await
                .unwrap()
                .call(req.body(()).unwrap())
                .await
                .unwrap();
            let status = resp
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap());
            assert_eq!(status, want, "{auth:?}");
            if want.is_some() {
                let msg = resp.headers()["grpc-message"].to_str().unwrap();
                assert!(msg.contains("SKYLARK_INTERNAL_SECRET"), "{msg}");
            }
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
        let text = crate::render_metrics();
        assert!(
            text.contains(r#"skylark_grpc_unauthenticated_total{reason="missing"} 1"#)
                && text.contains(r#"skylark_grpc_unauthenticated_total{reason="wrong"} 1"#),
            "{text}"
        );
    }
}
