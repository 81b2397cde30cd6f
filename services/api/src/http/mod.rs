//! REST routes under `/api/v1`.

mod error;
mod extract;
mod recordings;
mod rooms;
mod rules;
mod users;
mod webhooks;

pub use error::ApiError;
pub(crate) use rooms::check_visible;

use crate::ApiState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest JSON body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every REST handler's route under `/api/v1` with its OpenAPI operation (registered
/// together, so no route goes undocumented), and the answer for any other path there.
/// The crate's router nests it and adds the document itself, body limit, state and CORS.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(users::signup))
        .routes(routes!(users::verify))
        .routes(routes!(users::login))
        .routes(routes!(users::me))
        .routes(routes!(rooms::create, rooms::list))
        .routes(routes!(rooms::get, rooms::update, rooms::delete))
        .routes(routes!(rooms::rotate_key))
        .routes(routes!(rooms::viewer_token))
        .routes(routes!(rooms::revoke_viewer_tokens))
        .routes(routes!(recordings::list))
        .routes(routes!(recordings::get, recordings::delete))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .fallback(|| async {
            ApiError::not_found("no such API endpoint: see /api/v1/openapi.json")
        })
}
