//! The OpenAPI document, generated from the handlers' annotations.

use crate::http::paths::*;
use crate::http::*;
use crate::store::{Mode, Room, User, Visibility};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Skylark API", description = "Creators, rooms and stream keys."),
    paths(signup, verify, login, me, create, list, get, update, delete, rotate_key, viewer_token, revoke_viewer_tokens),
    components(schemas(
        ErrorBody, ErrorDetail, SignupRequest, SignupResponse, SignupAccepted, VerifyRequest, LoginRequest, LoginResponse, User,
        Room, Visibility, Mode, RoomView, RoomList, CreateRoomRequest, CreateRoomResponse, Ingest,
        UpdateRoomRequest, StreamKeyResponse, ViewerTokenRequest, ViewerTokenResponse
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
