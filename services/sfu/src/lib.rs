//! The sfu service. Its routes arrive with their issue; today it serves health and
//! metrics, registers nothing, and stops cleanly on shutdown.

use skylark_telemetry::ServicePart;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Configuration of the sfu service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `skylark sfu` serves HTTP when run alone.
    pub http_addr: SocketAddr,
}

/// Starts the service's background work and returns its routes.
pub async fn start(
    _config: Config,
    _bus: skylark_bus::AnyBus,
    _shutdown: CancellationToken,
) -> anyhow::Result<ServicePart> {
    Ok(ServicePart::new("sfu", axum::Router::new()))
}

/// Runs the service alone until `shutdown`.
pub async fn run(
    config: Config,
    bus: skylark_bus::AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let part = start(config, bus, shutdown.clone()).await?;
    skylark_telemetry::serve_parts(addr, vec![part], shutdown).await
}
