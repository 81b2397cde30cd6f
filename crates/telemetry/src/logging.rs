//! Process-wide tracing subscriber: fmt (pretty or JSON) plus an optional OTLP exporter.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::str::FromStr;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format: `pretty` for a terminal, `json` for log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown LOG_FORMAT {other:?}: use `pretty` or `json`"
            )),
        }
    }
}

/// What [`init`] needs to know.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans, e.g. `skylark-api` or `skylark` (all-in-one).
    pub service_name: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None` disables export.
    pub otlp_endpoint: Option<String>,
}

/// Keeps the exporter alive; dropping it flushes spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("skylark: flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber (logs from `RUST_LOG`, default `info`), the W3C
/// propagator and, when configured, the OTLP exporter. Call once per process, inside
/// a tokio runtime when OTLP is on.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match config.log_format {
        // Logs go to stderr: stdout stays clean for command output (`loadtest --json`).
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };

    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "OTLP exporter for {endpoint}: {e}; check OTEL_EXPORTER_OTLP_ENDPOINT"
                    )
                })?;
            let resource = Resource::builder()
                .with_attribute(KeyValue::new("service.name", config.service_name.clone()))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };

    let otel_layer = provider.as_ref().map(|p| {
        let tracer = p.tracer("skylark");
        tracing_opentelemetry::layer().with_tracer(tracer)
    });
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}
