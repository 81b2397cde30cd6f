//! Prometheus exposition of the `metrics` facade, one recorder per process.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
///
/// Every service of an all-in-one process shares it, so one `/metrics` shows all.
pub fn metrics_handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by a test harness); then this
        // handle renders an empty registry rather than failing the service.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Current metrics in the Prometheus text format.
pub fn render_metrics() -> String {
    metrics_handle().render()
}

/// `GET /metrics`, for the internal listener only (see [`crate::Listen`]).
pub fn metrics_router() -> Router {
    Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                render_metrics(),
            )
        }),
    )
}
