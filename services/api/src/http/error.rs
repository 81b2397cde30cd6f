//! Errors of the REST API, answered in the services' one shape `{"error":{"code","message"}}`
//! (built by [`skylark_telemetry::error`]).

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use skylark_telemetry::error::ErrorBody;
use std::collections::BTreeMap;
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
    }
    pub fn validation(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", m)
    }
    /// The server is too busy for this now: `503` with `Retry-After`.
    pub fn busy(m: impl Into<String>, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
    }
    pub fn rate_limited(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts from this address: retry in {retry_after_s} s"),
            )
        }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    /// A signup verification token that is unknown, used or expired (all alike): no
    /// pending signup has it. Not `400`: the request itself is well formed.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_or_expired_token",
            "this signup link is invalid, already used or expired (links work once, for 24 hours): sign up again to get a new one",
        )
    }
    pub fn room_not_found() -> Self {
        Self::not_found("no such room: check the room id")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::conflict("already exists"),
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "database unavailable");
                ApiError::busy(
                    "the database is unavailable: retry shortly (live streams are not affected)",
                    2,
                )
            }
            StoreError::Other(m) => {
                tracing::error!(error = %m, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error: retry, and report it if it persists",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = skylark_telemetry::error::json_error(self.status, self.code, &self.message);
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// OpenAPI responses for error answers: each status with what it means here, the error
/// body, and the headers [`ApiError`] sends with that status.
pub(crate) fn error_responses(
    list: &[(StatusCode, &str)],
) -> BTreeMap<String, RefOr<openapi::Response>> {
    list.iter()
        .map(|&(status, why)| {
            let body = openapi::ContentBuilder::new()
                .schema(Some(openapi::Ref::from_schema_name(ErrorBody::name())))
                .build();
            let mut r = openapi::ResponseBuilder::new()
                .description(why)
                .content("application/json", body);
            let header = |name: &str, what: &str, schema: RefOr<openapi::schema::Schema>| {
                (
                    name.to_string(),
                    openapi::header::HeaderBuilder::new()
                        .schema(schema)
                        .description(Some(what))
                        .build(),
                )
            };
            if status == StatusCode::UNAUTHORIZED {
                let (n, h) = header("WWW-Authenticate", "`Bearer`", String::schema());
                r = r.header(n, h);
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let (n, h) = header(
                    "Retry-After",
                    "seconds to wait before retrying",
                    u64::schema(),
                );
                r = r.header(n, h);
            }
            (status.as_u16().to_string(), RefOr::T(r.build()))
        })
        .collect()
}

/// `429`: the per-address or per-account limit on sign-up and sign-in attempts.
pub(crate) struct RateLimited;

impl IntoResponses for RateLimited {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts: retry after `Retry-After` seconds",
        )])
    }
}

/// `503`: the database is unreachable (any operation that uses it), or too many password
/// checks are queued (sign-up and sign-in).
pub(crate) struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable or the server too busy: retry after `Retry-After` seconds",
        )])
    }
}
