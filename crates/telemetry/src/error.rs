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

/// The body: `code` is stable and machine-readable (`not_found`, `unauthorized`, …),
/// `message` says what happened and what to do, for people.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message}})
}

/// A JSON response with `status` and the error body.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(error_body(code, message))).into_response()
}
