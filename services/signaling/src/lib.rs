//! Signaling: where publishers and viewers meet the media nodes.
//!
//! - `whip` (WHIP/WHEP), `ws` (WebSocket signaling), `rtmp` (RTMP ingest): front
//!   doors that translate requests in and failures out;
//! - `session`: the one path they share — authorize, check the room's mode, place,
//!   call the SFU, record the session;
//! - `placement`: which node a publisher or viewer goes to, and the node selection
//!   strategies (`placement::selector`);
//! - `playback`: where and how to watch a room.
//!
//! Stateless: everything shared lives in the bus, so any pod serves any request.

mod error;
mod limits;
mod peer_addrs;
pub mod placement;
mod playback;
mod rtmp;
mod session;
mod upstream;
mod web;
mod whip;
mod ws;

pub use placement::selector::{LeastLoaded, Pack};
pub use placement::{NodeSelector, SelectError, SelectorKind};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::routing::{get, post};
use axum::Router;
use skylark_bus::AnyBus;
use skylark_telemetry::ServicePart;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{Any, CorsLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest SDP offer accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Configuration of the signaling service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `skylark signaling` serves HTTP when run alone.
    pub http_addr: SocketAddr,
    /// The API's RoomDirectory gRPC.
    pub api_grpc_url: String,
    /// How clients reach HTTP (for returned URLs).
    pub public_url: String,
    /// RTMP ingest listen address; `None` disables RTMP.
    pub rtmp_addr: Option<SocketAddr>,
    /// How a new room's SFU node is chosen.
    pub selector: SelectorKind,
    /// Signs the HLS/FLV URLs of private rooms.
    pub playback_tokens: skylark_auth::PlaybackTokens,
    /// TURN servers handed to WHIP/WHEP clients with per-session credentials; `None`:
    /// none.
    pub turn: Option<TurnServers>,
}

/// TURN servers sharing one TURN REST secret (coturn's `static-auth-secret`).
#[derive(Debug, Clone)]
pub struct TurnServers {
    /// `turn:host:3478?transport=udp`, `turn:host:3478?transport=tcp`, `turns:…`.
    pub urls: Vec<String>,
    pub secret: skylark_auth::TurnSecret,
    /// How long a minted credential works.
    pub ttl: std::time::Duration,
}

impl TurnServers {
    /// A credential for `scope` (an SFU session, a p2p room's connection), valid from now.
    pub(crate) fn mint(&self, scope: &skylark_auth::TurnScope) -> skylark_auth::TurnCredential {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.secret.mint(&scope.to_string(), now, self.ttl)
    }

    /// The WebSocket form: `iceServers` as `RTCPeerConnection` takes it (one
    /// `RTCIceServer` with every URL and a credential minted for `scope`).
    pub(crate) fn ice_servers_json(&self, scope: &skylark_auth::TurnScope) -> serde_json::Value {
        let c = self.mint(scope);
        serde_json::json!([{"urls": self.urls, "username": c.username, "credential": c.credential}])
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct State {
    pub(crate) bus: AnyBus,
    pub(crate) upstream: Arc<upstream::Upstreams>,
    pub(crate) selector: Arc<dyn NodeSelector>,
    pub(crate) public_url: Arc<str>,
    pub(crate) playback_tokens: Arc<skylark_auth::PlaybackTokens>,
    pub(crate) limits: Arc<limits::Limits>,
    pub(crate) suspects: Arc<placement::Suspects>,
    pub(crate) turn: Option<Arc<TurnServers>>,
}

/// The signaling routes.
pub fn router(state: State) -> Router {
    let public_url = state.public_url.clone();
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            HeaderName::from_static("link"),
            HeaderName::from_static(whip::SERVING_NODE),
        ]);
    Router::new()
        .route("/whip", post(whip::whip_post))
        .route("/whip/{room}", post(whip::whip_post))
        .route(
            "/whip/{room}/{session}",
            axum::routing::patch(whip::session_patch).delete(whip::session_delete),
        )
        .route("/whep/{room}", post(whip::whep_post))
        .route(
            "/whep/{room}/{session}",
            axum::routing::patch(whip::session_patch).delete(whip::session_delete),
        )
        .route(
            "/whep/{room}/{session}/layer",
            get(whip::layer).post(whip::layer),
        )
        .merge(rest().split_for_parts().0)
        .route("/ws", get(ws::upgrade))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors)
        .with_state(state)
        .merge(web::router(&public_url))
}

/// The routes signaling answers under `/api/v1`, each with its OpenAPI operation
/// (registered together, so none goes undocumented).
fn rest() -> OpenApiRouter<State> {
    OpenApiRouter::new().routes(routes!(playback::playback))
}

/// The OpenAPI operations of signaling's routes under `/api/v1`, for the API's document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    rest().into_openapi()
}

/// Builds the state and returns the routes.
pub async fn start(
    config: Config,
    bus: AnyBus,
    shutdown: CancellationToken,
) -> anyhow::Result<ServicePart> {
    let state = State {
        bus,
        upstream: Arc::new(upstream::Upstreams::new(&config.api_grpc_url)?),
        selector: config.selector.build(),
        public_url: config.public_url.trim_end_matches('/').into(),
        playback_tokens: Arc::new(config.playback_tokens.clone()),
        limits: Arc::default(),
        suspects: Arc::default(),
        turn: config.turn.map(Arc::new),
    };
    let mut part = ServicePart::new("signaling", router(state.clone()));
    if let Some(addr) = config.rtmp_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("binding RTMP on {addr}: {e}; set SKYLARK_RTMP_ADDR to a free port")
        })?;
        tracing::info!(addr = %listener.local_addr()?, "RTMP ingest listening");
        part.tasks
            .push(tokio::spawn(rtmp::serve(listener, state, shutdown)));
    }
    Ok(part)
}

/// Runs signaling alone until `shutdown`.
pub async fn run(config: Config, bus: AnyBus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.http_addr;
    let part = start(config, bus, shutdown.clone()).await?;
    skylark_telemetry::serve_parts(addr, vec![part], shutdown).await
}

/// Unpredictable ids for connections.
pub(crate) fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signaling's routes under `/api/v1` are exactly the operations [`openapi`] hands the
    /// API's document: one added without its operation fails here.
    #[tokio::test]
    async fn rest_routes_are_all_documented() {
        let state = State {
            bus: skylark_bus::connect(None).await.unwrap(),
            // Nothing listens there: the probes only need the routes to answer.
            upstream: Arc::new(upstream::Upstreams::new("http://127.0.0.1:1").unwrap()),
            selector: SelectorKind::default().build(),
            public_url: "http://127.0.0.1:8080".into(),
            playback_tokens: Arc::new(skylark_auth::PlaybackTokens::new(
                b"a secret of at least thirty-two bytes!!",
            )),
            limits: Arc::default(),
            suspects: Arc::default(),
            turn: None,
        };
        let answered = skylark_telemetry::routes::answered(&router(state), "/api/v1").await;
        let doc = serde_json::to_value(openapi()).unwrap();
        let documented = skylark_telemetry::routes::documented(&doc);
        assert!(!answered.is_empty(), "no /api/v1 route found");
        assert_eq!(answered, documented, "router (left) vs document (right)");
    }
}
