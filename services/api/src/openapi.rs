//! The OpenAPI document's frame: title, shared schemas, the bearer scheme. Its
//! operations come from the handlers' annotations as [`crate::http::routes`] registers
//! them, so the document and the router can't drift apart.

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use skylark_telemetry::error::ErrorBody;
use std::sync::Arc;
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
    info(title = "Skylark API", description = "Creators, rooms, stream keys and playback."),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document before any operation is added.
pub(crate) fn frame() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The finished document as JSON, for [`serve`].
#[derive(Clone)]
pub(crate) struct Document(Arc<str>);

impl Document {
    pub(crate) fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        // Serialising plain data structures with string keys can't fail.
        let json = doc.to_json().unwrap_or_else(|e| {
            format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
        });
        Self(json.into())
    }
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
pub(crate) async fn serve(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
}
