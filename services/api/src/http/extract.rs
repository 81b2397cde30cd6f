//! Request extractors that answer in the API's error shape.

use super::error::ApiError;
use crate::ApiState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use skylark_auth::{Claims, Role, TokenError};

/// JSON body: syntax errors → 400, wrong or missing fields → 422, too big → 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::validation(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(format!(
                "malformed JSON: {}",
                e.body_text()
            ))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::too_large(format!(
                    "request body over {} bytes",
                    super::BODY_LIMIT
                )))
            }
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
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
