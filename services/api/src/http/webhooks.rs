//! Webhook endpoints of the signed-in creator: register, list with delivery status,
//! recent deliveries, delete.

use super::error::{error_responses, ApiError, ApiResult, Unavailable};
use super::extract::{BodyRejections, Creator, CreatorRejections, JsonBody};
use super::rules::{WEBHOOK_EVENTS, WEBHOOK_URL};
use crate::ids::new_id;
use crate::store::now_ms;
use crate::webhooks::outbox::{Delivery, DeliveryStatus, Endpoint};
use crate::webhooks::EventType;
use crate::ApiState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::openapi::schema::{Array, Object};
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoResponses, ToSchema};

/// Endpoints one creator may register.
pub const MAX_ENDPOINTS_PER_CREATOR: i64 = 10;
/// Deliveries `GET /webhooks/{id}/deliveries` lists.
const DELIVERIES_LISTED: i64 = 100;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    #[schema(schema_with = url_schema)]
    pub url: String,
    /// The event types to receive.
    #[schema(schema_with = events_schema)]
    pub events: Vec<EventType>,
}

fn url_schema() -> Object {
    WEBHOOK_URL.schema()
}
fn events_schema() -> Array {
    WEBHOOK_EVENTS.schema()
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<EventType>,
    /// Shown once: verify each request's `Skylark-Signature` with it.
    pub secret: String,
    pub created_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<EventType>,
    pub created_at_ms: i64,
    pub status: DeliveryStatus,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first, at most 100.
    pub deliveries: Vec<Delivery>,
}

/// A webhook's `{id}` from the path; one that is not UTF-8 names none: `404`.
pub struct WebhookId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for WebhookId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| WebhookId(id))
            .map_err(|_| not_found())
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("no such webhook: list yours with GET /api/v1/webhooks")
}

/// Someone else's webhook answers as a missing one: ids say nothing about others'.
struct NotYours;

impl IntoResponses for NotYours {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(StatusCode::NOT_FOUND, "no such webhook of this creator")])
    }
}

async fn owned(state: &ApiState, id: &str, owner: &str) -> ApiResult<Endpoint> {
    state
        .store
        .endpoint(id)
        .await?
        .filter(|e| e.owner_id.as_deref() == Some(owner))
        .ok_or_else(not_found)
}

/// Register a webhook endpoint; returns its signing secret once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = CreateWebhookRequest,
    responses((status = 201, body = CreatedWebhook, description = "registered; the signing secret is shown this once"),
              CreatorRejections, BodyRejections, Unavailable,
              (status = 403, body = skylark_telemetry::error::ErrorBody, description = "not a creator's token, or the creator already has 10 webhooks")))]
pub async fn create(
    State(state): State<ApiState>,
    Creator(c): Creator,
    JsonBody(req): JsonBody<CreateWebhookRequest>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let url = WEBHOOK_URL.check(&req.url)?;
    let events = WEBHOOK_EVENTS.check(req.events)?;
    if state.store.user_by_id(&c.sub).await?.is_none() {
        return Err(ApiError::unauthorized(
            "this account no longer exists: sign up again",
        ));
    }
    if state.store.endpoint_count_of(&c.sub).await? >= MAX_ENDPOINTS_PER_CREATOR {
        return Err(ApiError::forbidden(format!(
            "webhook limit reached ({MAX_ENDPOINTS_PER_CREATOR}): delete one you no longer use first"
        )));
    }
    let ep = Endpoint {
        id: new_id("whk"),
        owner_id: Some(c.sub),
        url,
        events,
        secret: skylark_auth::new_webhook_secret(),
        created_at_ms: now_ms(),
    };
    state.store.create_endpoint(&ep).await?;
    tracing::info!(webhook = %ep.id, "webhook registered");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            id: ep.id,
            url: ep.url,
            events: ep.events,
            secret: ep.secret,
            created_at_ms: ep.created_at_ms,
        }),
    ))
}

/// The creator's webhooks, with their delivery status (never their secrets).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = WebhookList, description = "the creator's webhooks, oldest first"), CreatorRejections, Unavailable))]
pub async fn list(
    State(state): State<ApiState>,
    Creator(c): Creator,
) -> ApiResult<Json<WebhookList>> {
    let mut webhooks = Vec::new();
    for ep in state.store.endpoints_of(&c.sub).await? {
        let status = state.store.delivery_status(&ep.id).await?;
        webhooks.push(WebhookView {
            id: ep.id,
            url: ep.url,
            events: ep.events,
            created_at_ms: ep.created_at_ms,
            status,
        });
    }
    Ok(Json(WebhookList { webhooks }))
}

/// A webhook's recent deliveries: attempts, last status, next retry.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = DeliveryList, description = "the latest deliveries, newest first"), CreatorRejections, Unavailable, NotYours))]
pub async fn deliveries(
    State(state): State<ApiState>,
    WebhookId(id): WebhookId,
    Creator(c): Creator,
) -> ApiResult<Json<DeliveryList>> {
    let ep = owned(&state, &id, &c.sub).await?;
    Ok(Json(DeliveryList {
        deliveries: state.store.deliveries(&ep.id, DELIVERIES_LISTED).await?,
    }))
}

/// Delete a webhook; its pending deliveries are dropped.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 204, description = "deleted"), CreatorRejections, Unavailable, NotYours))]
pub async fn delete(
    State(state): State<ApiState>,
    WebhookId(id): WebhookId,
    Creator(c): Creator,
) -> ApiResult<StatusCode> {
    let ep = owned(&state, &id, &c.sub).await?;
    if !state.store.delete_endpoint(&ep.id).await? {
        return Err(not_found());
    }
    tracing::info!(webhook = %ep.id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}
