//! Observability for every Skylark service: structured logs (`tracing`), OpenTelemetry
//! trace export over OTLP/gRPC, W3C trace-context propagation across HTTP and gRPC,
//! and Prometheus metrics.
//!
//! A process calls [`init`] once; services then use [`http_layer`] on their routers,
//! [`GrpcServerLayer`] on their tonic servers (it also refuses calls without the
//! [`InternalSecret`]), [`traced_channel`] for their clients; the
//! process serves their routes with [`serve_parts`], `/metrics` ([`metrics_router`]) on
//! the internal listener only ([`Listen`]).

pub mod error;
mod internal_auth;
pub mod limits;
mod logging;
mod metrics_export;
mod propagation;
pub mod routes;
pub mod service;

pub use internal_auth::{InternalSecret, InternalSecretError, Refusal, MIN_SECRET_LEN};
pub use logging::{init, LogFormat, Telemetry, TelemetryConfig};
pub use metrics_export::{metrics_handle, metrics_router, render_metrics};
pub use propagation::{
    extract_http, grpc_channel, http_layer, inject_grpc, inject_http, traced_channel,
    GrpcClientInterceptor, GrpcServerLayer, TracedChannel, GRPC_KEEPALIVE, GRPC_KEEPALIVE_TIMEOUT,
};
pub use service::{
    ops_router, serve_http, serve_listeners, serve_parts, serve_parts_draining, DrainHook, Listen,
    ReadyCheck, ServicePart, DEFAULT_INTERNAL_ADDR,
};
