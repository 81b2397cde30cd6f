//! Rooms: create, list, read, edit, delete; stream-key rotation; viewer tokens.

use super::error::{error_responses, ApiError, ApiResult, Unavailable};
use super::extract::{
    BodyRejections, Creator, CreatorRejections, JsonBody, MaybeClaims, QueryParams,
    QueryRejections, RoomId, TokenRejections,
};
use super::rules::{self, TITLE, VIEWER_TOKEN_TTL_S};
use crate::ids::{new_id, slug, slug_suffix};
use crate::store::{now_ms, Mode, Room, RoomPatch, Visibility};
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use skylark_auth::{new_stream_key, Claims, Grant, Role};
use skylark_bus::placement;
use skylark_telemetry::error::ErrorBody;
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::openapi::schema::Object;
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoParams, IntoResponses, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    #[schema(schema_with = title_schema)]
    pub title: String,
    #[serde(default = "default_visibility")]
    pub visibility: Visibility,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Record the room's streams (default false): each becomes a VOD when it ends.
    #[serde(default)]
    pub record: bool,
}

fn default_visibility() -> Visibility {
    Visibility::Public
}
fn default_mode() -> Mode {
    Mode::Sfu
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoomRequest {
    #[schema(schema_with = nullable_title_schema)]
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
    pub mode: Option<Mode>,
    /// Record the room's next streams (a stream already live keeps its setting).
    pub record: Option<bool>,
}

/// Where to send media: WHIP (OBS 30+, browsers, FFmpeg 7+) or RTMP (server URL; the stream key is the stream name).
#[derive(Serialize, ToSchema)]
pub struct Ingest {
    pub whip_url: String,
    pub rtmp_url: String,
}

/// A room with its live state.
#[derive(Serialize, ToSchema)]
pub struct RoomView {
    #[serde(flatten)]
    pub room: Room,
    pub live: bool,
    /// Everyone watching, however they watch (the sum of `viewers_by_transport`).
    pub viewers: u64,
    pub viewers_by_transport: ViewersByTransport,
    /// While a public or unlisted sfu room is live: a one-picture MP4 of a recent
    /// keyframe, refreshed every few seconds (a `<video>` shows it as a still).
    pub thumbnail_url: Option<String>,
}

/// Viewers by how they watch: WebRTC sessions, HLS players (counted while they reload
/// their playlist), FLV streams.
#[derive(Serialize, ToSchema, Default)]
pub struct ViewersByTransport {
    pub webrtc: u64,
    pub hls: u64,
    pub flv: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CreateRoomResponse {
    pub room: RoomView,
    /// Shown once: store it now; it can only be rotated, never shown again.
    pub stream_key: String,
    pub ingest: Ingest,
}

#[derive(Serialize, ToSchema)]
pub struct StreamKeyResponse {
    /// Shown once. The previous key stopped working.
    pub stream_key: String,
    pub ingest: Ingest,
}

#[derive(Serialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomView>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// `1` or `true`: the signed-in creator's own rooms, live or not (needs a creator's
    /// token); anything else or none: the public live rooms.
    pub mine: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewerTokenRequest {
    /// Lifetime in seconds.
    #[schema(schema_with = ttl_schema)]
    #[serde(default, deserialize_with = "rules::whole_number")]
    pub ttl_s: Option<u64>,
}

fn title_schema() -> Object {
    TITLE.schema(false)
}
fn nullable_title_schema() -> Object {
    TITLE.schema(true)
}
fn ttl_schema() -> Object {
    VIEWER_TOKEN_TTL_S.schema()
}

#[derive(Serialize, ToSchema)]
pub struct ViewerTokenResponse {
    /// Send as `Authorization: Bearer …` to WHEP/REST, or `?token=` on the watch page.
    pub token: String,
    pub expires_in: u64,
}

fn ingest(state: &ApiState, room_id: &str) -> Ingest {
    Ingest {
        whip_url: format!(
            "{}/whip/{room_id}",
            state.config.public_url.trim_end_matches('/')
        ),
        rtmp_url: state.config.rtmp_url.clone(),
    }
}

async fn view(state: &ApiState, room: Room) -> RoomView {
    let status = state.presence.status(&room.id).await;
    let c = status.by_transport;
    let thumbnail_url = (status.live
        && room.visibility != Visibility::Private
        && room.mode == Mode::Sfu)
        .then(|| {
            format!(
                "{}/hls/{}/still.mp4",
                state.config.public_url.trim_end_matches('/'),
                room.id
            )
        });
    RoomView {
        thumbnail_url,
        room,
        live: status.live,
        viewers: status.viewers,
        viewers_by_transport: ViewersByTransport {
            webrtc: c.webrtc,
            hls: c.hls,
            flv: c.flv,
        },
    }
}

/// The room if `claims` may see it: private rooms need the owner or a play grant.
pub(crate) fn check_visible(room: &Room, claims: Option<&Claims>) -> ApiResult<()> {
    if room.visibility != Visibility::Private {
        return Ok(());
    }
    match claims {
        None => Err(ApiError::unauthorized(
            "this room is private: send a viewer token from its owner",
        )),
        Some(c) if c.role == Role::Creator && c.sub == room.owner_id => Ok(()),
        Some(c) if c.can_play(&room.id, room.viewer_generation) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "this token does not grant access to this private room",
        )),
    }
}

/// [`owned_room`]'s refusals (a creator's token that is not the owner's is `403` too).
pub(crate) struct OwnerOnly;

impl IntoResponses for OwnerOnly {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            (
                StatusCode::FORBIDDEN,
                "not the room owner's token, or not a creator's token",
            ),
            (StatusCode::NOT_FOUND, "no such room"),
        ])
    }
}

pub(crate) async fn owned_room(state: &ApiState, id: &str, owner: &Claims) -> ApiResult<Room> {
    let room = state
        .store
        .room(id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    if room.owner_id != owner.sub {
        return Err(ApiError::forbidden("only the room's owner can do this"));
    }
    Ok(room)
}

/// Create a room; returns its stream key once.
#[utoipa::path(post, path = "/rooms", tag = "rooms", security(("bearer" = [])), request_body = CreateRoomRequest,
    responses((status = 201, body = CreateRoomResponse, description = "created; the stream key is shown this once"), CreatorRejections, BodyRejections, Unavailable,
              (status = 403, body = ErrorBody, description = "not a creator's token, or the creator's room quota is reached")))]
pub async fn create(
    State(state): State<ApiState>,
    Creator(c): Creator,
    JsonBody(req): JsonBody<CreateRoomRequest>,
) -> ApiResult<(StatusCode, Json<CreateRoomResponse>)> {
    let title = TITLE.check(&req.title)?;
    if state.store.user_by_id(&c.sub).await?.is_none() {
        return Err(ApiError::unauthorized(
            "this account no longer exists: sign up again",
        ));
    }
    let max = state.config.max_rooms_per_creator;
    if state.store.room_count_of(&c.sub).await? >= i64::from(max) {
        return Err(ApiError::forbidden(format!(
            "room quota reached ({max} rooms): delete a room you no longer use first"
        )));
    }
    let id = new_id("room");
    let now = now_ms();
    let room = Room {
        slug: slug(&title, &slug_suffix()),
        id,
        owner_id: c.sub,
        title,
        visibility: req.visibility,
        mode: req.mode,
        created_at_ms: now,
        updated_at_ms: now,
        viewer_generation: 0,
        record: req.record,
    };
    let key = new_stream_key();
    state
        .store
        .create_room(&room, &new_id("key"), &key.hash)
        .await?;
    tracing::info!(room_id = %room.id, "room created");
    let ingest = ingest(&state, &room.id);
    Ok((
        StatusCode::CREATED,
        Json(CreateRoomResponse {
            room: view(&state, room).await,
            stream_key: key.secret,
            ingest,
        }),
    ))
}

/// Live rooms the public list shows at most.
const MAX_LISTED: usize = 500;

/// Public live rooms; with `?mine=1` and a token, the creator's own rooms.
#[utoipa::path(get, path = "/rooms", tag = "rooms", params(ListQuery),
    responses((status = 200, body = RoomList, description = "the rooms, most watched first (`mine`: newest first)"), QueryRejections, TokenRejections, Unavailable,
              (status = 401, body = ErrorBody, description = "an invalid or expired token, or `?mine=1` without a creator's token")))]
pub async fn list(
    State(state): State<ApiState>,
    QueryParams(q): QueryParams<ListQuery>,
    MaybeClaims(claims): MaybeClaims,
) -> ApiResult<Json<RoomList>> {
    let mine = matches!(q.mine.as_deref(), Some("1" | "true"));
    let rooms = if mine {
        let c = claims
            .filter(|c| c.role == Role::Creator)
            .ok_or_else(|| ApiError::unauthorized("?mine=1 needs a creator's access token"))?;
        let mut out = Vec::new();
        for r in state.store.rooms_of(&c.sub).await? {
            out.push(view(&state, r).await);
        }
        out
    } else {
        // From the set of live rooms, so idle rooms (however many) never push live
        // ones off the list.
        let live = match placement::live_rooms(state.presence.bus()).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "bus unavailable: the live list is empty");
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for r in state.store.public_rooms_among(&live).await? {
            let v = view(&state, r).await;
            if v.live {
                out.push(v);
            }
        }
        out.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.viewers),
                std::cmp::Reverse(r.room.created_at_ms),
            )
        });
        out.truncate(MAX_LISTED);
        out
    };
    Ok(Json(RoomList { rooms }))
}

/// A room, with live state and viewer count.
#[utoipa::path(get, path = "/rooms/{id}", tag = "rooms", params(("id" = String, Path, description = "room id or slug")),
    responses((status = 200, body = RoomView, description = "the room"), TokenRejections, Unavailable,
              (status = 401, body = ErrorBody, description = "a private room without a token, or an invalid or expired token"),
              (status = 403, body = ErrorBody, description = "a private room, and the token is neither its owner's nor one of its viewer tokens"),
              (status = 404, body = ErrorBody, description = "no such room")))]
pub async fn get(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    MaybeClaims(claims): MaybeClaims,
) -> ApiResult<Json<RoomView>> {
    let room = visible_room(&state, &id, claims.as_ref()).await?;
    Ok(Json(view(&state, room).await))
}

/// The room `id` names (id or slug), if `claims` may see it (see [`check_visible`]).
pub(crate) async fn visible_room(
    state: &ApiState,
    id: &str,
    claims: Option<&Claims>,
) -> ApiResult<Room> {
    let room = state
        .store
        .room(id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    check_visible(&room, claims)?;
    Ok(room)
}

/// Edit title, visibility, mode or recording.
#[utoipa::path(patch, path = "/rooms/{id}", tag = "rooms", security(("bearer" = [])), request_body = UpdateRoomRequest,
    params(("id" = String, Path, description = "room id or slug")),
    responses((status = 200, body = RoomView, description = "the room as edited"), CreatorRejections, BodyRejections, Unavailable, OwnerOnly))]
pub async fn update(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
    JsonBody(req): JsonBody<UpdateRoomRequest>,
) -> ApiResult<Json<RoomView>> {
    let title = req.title.as_deref().map(|t| TITLE.check(t)).transpose()?;
    let room = owned_room(&state, &id, &c).await?;
    let patch = RoomPatch {
        title,
        visibility: req.visibility,
        mode: req.mode,
        record: req.record,
    };
    let room = state
        .store
        .update_room(&room.id, &patch)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    Ok(Json(view(&state, room).await))
}

/// Delete a room; a live stream in it ends.
#[utoipa::path(delete, path = "/rooms/{id}", tag = "rooms", security(("bearer" = [])), params(("id" = String, Path, description = "room id or slug")),
    responses((status = 204, description = "deleted"), CreatorRejections, Unavailable, OwnerOnly))]
pub async fn delete(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
) -> ApiResult<StatusCode> {
    let room = owned_room(&state, &id, &c).await?;
    state.store.delete_room(&room.id).await?;
    state.presence.end_publish(&room.id, "room_deleted").await;
    tracing::info!(room_id = %room.id, "room deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the stream key: the old key stops working and a publisher using it is cut.
#[utoipa::path(post, path = "/rooms/{id}/stream-key", tag = "rooms", security(("bearer" = [])), params(("id" = String, Path, description = "room id or slug")),
    responses((status = 201, body = StreamKeyResponse, description = "the new key, shown this once"), CreatorRejections, Unavailable, OwnerOnly))]
pub async fn rotate_key(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
) -> ApiResult<(StatusCode, Json<StreamKeyResponse>)> {
    let room = owned_room(&state, &id, &c).await?;
    let key = new_stream_key();
    state
        .store
        .rotate_stream_key(&room, &new_id("key"), &key.hash)
        .await?;
    state
        .presence
        .end_publish(&room.id, "stream_key_rotated")
        .await;
    tracing::info!(room_id = %room.id, "stream key rotated");
    Ok((
        StatusCode::CREATED,
        Json(StreamKeyResponse {
            stream_key: key.secret,
            ingest: ingest(&state, &room.id),
        }),
    ))
}

/// Revoke every viewer token of the room issued so far: they stop opening new playback
/// (WebRTC, WebSocket, `/playback`). Tokens issued after this call work.
#[utoipa::path(post, path = "/rooms/{id}/viewer-tokens/revoke", tag = "rooms", security(("bearer" = [])), params(("id" = String, Path, description = "room id or slug")),
    responses((status = 204, description = "revoked"), CreatorRejections, Unavailable, OwnerOnly))]
pub async fn revoke_viewer_tokens(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
) -> ApiResult<StatusCode> {
    let room = owned_room(&state, &id, &c).await?;
    state
        .store
        .revoke_viewer_tokens(&room.id)
        .await?
        .ok_or_else(ApiError::room_not_found)?;
    tracing::info!(room_id = %room.id, "viewer tokens revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A token that lets its bearer watch this (private) room.
#[utoipa::path(post, path = "/rooms/{id}/viewer-tokens", tag = "rooms", security(("bearer" = [])), params(("id" = String, Path, description = "room id or slug")),
    request_body = ViewerTokenRequest,
    responses((status = 201, body = ViewerTokenResponse, description = "the viewer token"), CreatorRejections, BodyRejections, Unavailable, OwnerOnly))]
pub async fn viewer_token(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
    JsonBody(req): JsonBody<ViewerTokenRequest>,
) -> ApiResult<(StatusCode, Json<ViewerTokenResponse>)> {
    let ttl = VIEWER_TOKEN_TTL_S.check(req.ttl_s)?;
    let room = owned_room(&state, &id, &c).await?;
    let grant = Grant {
        room: room.id.clone(),
        publish: false,
        play: true,
        generation: room.viewer_generation,
    };
    let token = state.tokens.issue(
        &new_id("viewer"),
        Role::Viewer,
        vec![grant],
        Duration::from_secs(ttl),
    );
    Ok((
        StatusCode::CREATED,
        Json(ViewerTokenResponse {
            token,
            expires_in: ttl,
        }),
    ))
}
