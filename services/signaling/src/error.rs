//! Errors of the signaling endpoints, in the API's shape `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::session::SessionError;

#[derive(Debug)]
pub struct SignalError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (rate limits, no node with room).
    pub retry_after_s: Option<u64>,
}

impl SignalError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after_s: Some(seconds),
            ..self
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
}

/// The one table from a downstream gRPC status code to the HTTP status and error
/// code users see (WHIP/WHEP bodies, WebSocket `error` messages, RTMP logs).
pub fn status_error(code: tonic::Code) -> (StatusCode, &'static str) {
    use tonic::Code::*;
    match code {
        Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
        PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
        NotFound => (StatusCode::NOT_FOUND, "not_found"),
        InvalidArgument => (StatusCode::BAD_REQUEST, "bad_request"),
        FailedPrecondition => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_codec"),
        ResourceExhausted | Unavailable | DeadlineExceeded | Cancelled => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<SessionError> for SignalError {
    fn from(e: SessionError) -> Self {
        let (status, code) = e.status_and_code();
        let retry = e.retry_after_s();
        let error = Self::new(status, code, e.message());
        match retry {
            Some(s) => error.retry_after(s),
            None => error,
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
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::CONFLICT
        {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        r
    }
}
