//! REST routes under `/api/v1`.

mod error;
mod extract;
mod rooms;
mod users;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub(crate) use rooms::check_visible;

use crate::ApiState;
use axum::routing::{get, post};
use axum::Router;

/// Largest JSON body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

pub(crate) use rooms::{
    CreateRoomRequest, CreateRoomResponse, Ingest, RoomList, RoomView, StreamKeyResponse,
    UpdateRoomRequest, ViewerTokenRequest, ViewerTokenResponse,
};
pub(crate) use users::{
    LoginRequest, LoginResponse, SignupAccepted, SignupRequest, SignupResponse, VerifyRequest,
};

pub(crate) mod paths {
    pub use super::rooms::{
        __path_create, __path_delete, __path_get, __path_list, __path_revoke_viewer_tokens,
        __path_rotate_key, __path_update, __path_viewer_token,
    };
    pub use super::users::{__path_login, __path_me, __path_signup, __path_verify};
}

/// Every REST handler's route under `/api/v1`, and the answer for any other path there.
/// The crate's router adds the OpenAPI document, body limit, state and CORS.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/auth/signup", post(users::signup))
        .route("/auth/verify", post(users::verify))
        .route("/auth/login", post(users::login))
        .route("/me", get(users::me))
        .route("/rooms", post(rooms::create).get(rooms::list))
        .route(
            "/rooms/{id}",
            get(rooms::get).patch(rooms::update).delete(rooms::delete),
        )
        .route("/rooms/{id}/stream-key", post(rooms::rotate_key))
        .route("/rooms/{id}/viewer-tokens", post(rooms::viewer_token))
        .route(
            "/rooms/{id}/viewer-tokens/revoke",
            post(rooms::revoke_viewer_tokens),
        )
        .fallback(|| async {
            ApiError::not_found("no such API endpoint: see /api/v1/openapi.json")
        })
}
