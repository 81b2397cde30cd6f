//! The REST surface: the handlers of [`crate::http`] and the OpenAPI document that
//! describes them, under `/api/v1`. It sits above both, so neither needs the other's route.

use crate::http::{self, BODY_LIMIT};
use crate::{openapi, ApiState};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

/// Every REST route, with body limit and CORS (tokens, not cookies, so any origin is safe).
pub fn router(state: ApiState) -> Router {
    let api = http::routes()
        .route("/openapi.json", get(openapi::serve))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    Router::new().nest("/api/v1", api).layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(tower_http::cors::Any)
            .allow_methods(tower_http::cors::Any)
            .allow_headers(tower_http::cors::Any),
    )
}
