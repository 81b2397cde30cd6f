//! Observability for every Skylark service: structured logs (`tracing`), OpenTelemetry
//! trace export over OTLP/gRPC, W3C trace-context propagation across HTTP and gRPC,
//! and Prometheus metrics.
//!
//! A process calls [`init`] once; services then use [`http_layer`] on their routers,
//! [`GrpcServerLayer`] on their tonic servers, [`inject_grpc`] on outgoing calls, and
//! [`metrics_router`] for `/metrics`.

pub mod error;
mod logging;
mod metrics_export;
mod propagation;
pub mod service;

pub use logging::{init, LogFormat, Telemetry, TelemetryConfig};
pub use metrics_export::{metrics_handle, metrics_router, render_metrics};
pub use propagation::{
    extract_http, grpc_channel, http_layer, inject_grpc, inject_http, GrpcClientInterceptor,
    GrpcServerLayer,
};
pub use service::{
    ops_router, serve_http, serve_parts, serve_parts_draining, DrainHook, ReadyCheck, ServicePart,
};
