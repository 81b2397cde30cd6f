//! Request extractors that answer in the API's error shape.

use super::error::{error_responses, ApiError};
use crate::ApiState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use skylark_auth::{Claims, Role, TokenError};
use std::collections::BTreeMap;
use utoipa::openapi::{self, RefOr};
use utoipa::IntoResponses;

// What each extractor refuses a request with, for the `responses(...)` of the handlers
// that use it.

/// [`JsonBody`]'s refusals.
pub(crate) struct BodyRejections;

impl IntoResponses for BodyRejections {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        let too_large = format!("the body is over {} bytes", super::BODY_LIMIT);
        error_responses(&[
            (
                StatusCode::BAD_REQUEST,
                "malformed JSON, or a body without `Content-Type: application/json`",
            ),
            (StatusCode::PAYLOAD_TOO_LARGE, &too_large),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "not an object, or a field missing, unknown, of the wrong type or out of its range",
            ),
        ])
    }
}

/// [`QueryParams`]' refusals.
pub(crate) struct QueryRejections;

impl IntoResponses for QueryRejections {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(
            StatusCode::BAD_REQUEST,
            "a query string that does not parse (e.g. a parameter given twice)",
        )])
    }
}

/// [`Creator`]'s refusals.
pub(crate) struct CreatorRejections;

impl IntoResponses for CreatorRejections {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            (
                StatusCode::UNAUTHORIZED,
                "no access token, an invalid or expired one, or one of a deleted account",
            ),
            (StatusCode::FORBIDDEN, "not a creator's token"),
        ])
    }
}

/// [`MaybeClaims`]' refusals.
pub(crate) struct TokenRejections;

impl IntoResponses for TokenRejections {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(
            StatusCode::UNAUTHORIZED,
            "an invalid or expired token (none at all is fine)",
        )])
    }
}

/// JSON body: syntax errors → 400, anything but an object, wrong or missing fields → 422,
/// too big → 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(JsonRejection::JsonSyntaxError(e)) => {
                return Err(ApiError::bad_request(format!(
                    "malformed JSON: {}",
                    e.body_text()
                )))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => {
                return Err(ApiError::bad_request(
                    "send the body as JSON with `Content-Type: application/json`",
                ))
            }
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                return Err(ApiError::too_large(format!(
                    "request body over {} bytes",
                    super::BODY_LIMIT
                )))
            }
            Err(e) => return Err(ApiError::bad_request(e.body_text())),
        };
        // serde fills a struct from an array too (`["My show"]` as a room): every body
        // here is an object, as the document says.
        if !value.is_object() {
            return Err(ApiError::validation("send the body as a JSON object"));
        }
        T::deserialize(value)
            .map(JsonBody)
            .map_err(|e| ApiError::validation(format!("invalid body: {e}")))
    }
}

/// Query parameters; a query string that does not parse → 400 in the API's error shape
/// (axum's own answer is plain text).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// A room's `{id}` (or slug) from the path. One that is not UTF-8 names no room: `404`,
/// like any other id that names none (axum's own answer is a plain-text 400).
pub struct RoomId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RoomId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| RoomId(id))
            .map_err(|_| ApiError::room_not_found())
    }
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not text"))?;
    match v.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::unauthorized(
            "use `Authorization: Bearer <access token>`",
        )),
    }
}

fn verify(state: &ApiState, token: &str) -> Result<Claims, ApiError> {
    state.tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => ApiError::unauthorized("access token expired: log in again"),
        TokenError::Invalid => ApiError::unauthorized(e.to_string()),
    })
}

/// A signed-in creator (required).
pub struct Creator(pub Claims);

impl FromRequestParts<ApiState> for Creator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or_else(|| {
            ApiError::unauthorized("sign in first: send `Authorization: Bearer <access token>`")
        })?;
        let claims = verify(state, token)?;
        if claims.role != Role::Creator {
            return Err(ApiError::forbidden("a creator account is required"));
        }
        Ok(Creator(claims))
    }
}

/// Any valid token (creator or viewer), or none. A present but invalid token is an error,
/// so a client learns its token expired instead of silently seeing less.
pub struct MaybeClaims(pub Option<Claims>);

impl FromRequestParts<ApiState> for MaybeClaims {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        match bearer(parts)? {
            Some(t) => Ok(MaybeClaims(Some(verify(state, t)?))),
            None => Ok(MaybeClaims(None)),
        }
    }
}
