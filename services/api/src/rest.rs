//! The REST surface: the handlers of [`crate::http`] and the OpenAPI document that
//! describes them, under `/api/v1`. It sits above both, so neither needs the other's route.

use crate::http::{self, BODY_LIMIT};
use crate::{openapi, ApiState};
use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every REST route, with body limit and CORS (tokens, not cookies, so any origin is safe).
pub fn router(state: ApiState) -> Router {
    let (api, mut doc) = OpenApiRouter::with_openapi(openapi::frame())
        .nest("/api/v1", http::routes().routes(routes!(openapi::serve)))
        .split_for_parts();
    doc.merge(state.config.other_operations.clone());
    api.layer(Extension(openapi::Document::new(&doc)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        )
}
