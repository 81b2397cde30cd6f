//! Errors of the signaling endpoints, in the API's shape `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct SignalError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl SignalError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }

    /// Maps a gRPC failure of a downstream service (API or SFU).
    pub fn from_status(s: tonic::Status, what: &str) -> Self {
        use tonic::Code::*;
        let m = s.message().to_string();
        match s.code() {
            Unauthenticated => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m),
            PermissionDenied => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            NotFound => Self::not_found(m),
            InvalidArgument => Self::bad_request(m),
            FailedPrecondition => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_codec", m)
            }
            ResourceExhausted | Unavailable | DeadlineExceeded | Cancelled => {
                tracing::warn!(status = %s, what, "downstream unavailable");
                Self::unavailable(format!("{what} unavailable: retry in a few seconds"))
            }
            _ => {
                tracing::error!(status = %s, what, "downstream error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("{what} failed: retry"),
                )
            }
        }
    }
}

impl IntoResponse for SignalError {
    fn into_response(self) -> Response {
        let mut r = skylark_telemetry::error::json_error(self.status, self.code, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::CONFLICT {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        r
    }
}
