//! The one JSON error shape of every Skylark HTTP service: `{"error":{"code","message"}}`.
//!
//! The REST API, signaling (WHIP/WHEP) and the packager (HLS/FLV) all answer failures
//! with it, so a client parses one shape whichever service it reached.
//!
//! ```
//! use axum::http::StatusCode;
//! let r = skylark_telemetry::error::json_error(StatusCode::NOT_FOUND, "not_found", "no such room");
//! assert_eq!(r.status(), StatusCode::NOT_FOUND);
//! assert_eq!(
//!     skylark_telemetry::error::error_body("not_found", "no such room").to_string(),
//!     r#"{"error":{"code":"not_found","message":"no such room"}}"#
//! );
//! ```

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The error body; its OpenAPI schema is the one every service's document refers to.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `validation_failed`, `rate_limited`, `unavailable`,
    /// `internal`, or one an operation names (e.g. `invalid_or_expired_token`).
    pub code: &'a str,
    /// What happened and what to do, for people.
    pub message: &'a str,
}

/// The body: `code` is stable and machine-readable (`not_found`, `unauthorized`, …),
/// `message` says what happened and what to do, for people.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!(ErrorBody {
        error: ErrorDetail { code, message }
    })
}

/// A JSON response with `status` and the error body.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}
