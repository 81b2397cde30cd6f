//! Recordings: a room's list, one recording with its playback URLs, delete: the room
//! owner's. Playing one is a viewer's: the files are served by the packager under
//! `/recordings/{id}/`, authorized as the room's live playback (a private room's need a
//! playback token from `/playback`).

use super::error::{error_responses, ApiError, ApiResult, Unavailable};
use super::extract::{Creator, CreatorRejections, RoomId};
use super::rooms::{owned_room, OwnerOnly as RoomOwnerOnly};
use crate::recordings::{Recording, RecordingStatus};
use crate::ApiState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoResponses, ToSchema};

/// Recordings a list shows at most (newest first).
const LISTED: i64 = 200;

/// A recording with where to play and download it. For a private room, add
/// `?token=` with a playback token from `GET /api/v1/rooms/{id}/playback`. Viewers,
/// who may not read this, play `…/recordings/{id}/index.m3u8` on the server of the
/// room's HLS URL (`/playback`) with the same token.
#[derive(Serialize, ToSchema)]
pub struct RecordingView {
    #[serde(flatten)]
    pub recording: Recording,
    pub duration_s: f64,
    /// The HLS playlist (multivariant): VOD once ready; while recording it grows
    /// (`EVENT`) and plays from the start.
    pub playlist_url: String,
    /// One fragmented MP4 of the top rendition; `null` while recording.
    pub mp4_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecordingList {
    pub recordings: Vec<RecordingView>,
}

/// A recording's `{id}` from the path (one that is not UTF-8 names none: 404).
pub struct RecordingId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RecordingId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| RecordingId(id))
            .map_err(|_| not_found())
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("no such recording: list a room's with GET /api/v1/rooms/{id}/recordings")
}

fn view(state: &ApiState, recording: Recording) -> RecordingView {
    let base = format!(
        "{}/recordings/{}",
        state.config.public_url.trim_end_matches('/'),
        recording.id
    );
    RecordingView {
        duration_s: recording.duration_ms as f64 / 1000.0,
        playlist_url: format!("{base}/index.m3u8"),
        mp4_url: (recording.status == RecordingStatus::Ready)
            .then(|| format!("{base}/recording.mp4")),
        recording,
    }
}

/// A room's recordings, newest first (at most 200): the owner's.
#[utoipa::path(get, path = "/rooms/{id}/recordings", tag = "recordings", security(("bearer" = [])), params(("id" = String, Path, description = "room id or slug")),
    responses((status = 200, body = RecordingList, description = "the room's recordings"), CreatorRejections, Unavailable, RoomOwnerOnly))]
pub async fn list(
    State(state): State<ApiState>,
    RoomId(id): RoomId,
    Creator(c): Creator,
) -> ApiResult<Json<RecordingList>> {
    let room = owned_room(&state, &id, &c).await?;
    let recordings = state
        .store
        .recordings_of(&room.id, LISTED)
        .await?
        .into_iter()
        .map(|r| view(&state, r))
        .collect();
    Ok(Json(RecordingList { recordings }))
}

/// The recording `id` if `c` owns its room.
async fn owned_recording(
    state: &ApiState,
    id: &str,
    c: &skylark_auth::Claims,
) -> ApiResult<Recording> {
    let rec = state.store.recording(id).await?.ok_or_else(not_found)?;
    if rec.owner_id != c.sub {
        return Err(ApiError::forbidden(
            "only the room's owner can read or delete its recordings: viewers play them by URL",
        ));
    }
    Ok(rec)
}

/// Refusals of a recording's owner's calls.
struct OwnerOnly;

impl IntoResponses for OwnerOnly {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[
            (
                StatusCode::FORBIDDEN,
                "not the room owner's token, or not a creator's token",
            ),
            (StatusCode::NOT_FOUND, "no such recording"),
        ])
    }
}

/// One recording: duration, size, playback URLs. The owner's.
#[utoipa::path(get, path = "/recordings/{id}", tag = "recordings", security(("bearer" = [])), params(("id" = String, Path, description = "recording id")),
    responses((status = 200, body = RecordingView, description = "the recording"), CreatorRejections, Unavailable, OwnerOnly))]
pub async fn get(
    State(state): State<ApiState>,
    RecordingId(id): RecordingId,
    Creator(c): Creator,
) -> ApiResult<Json<RecordingView>> {
    let rec = owned_recording(&state, &id, &c).await?;
    Ok(Json(view(&state, rec)))
}

/// [`delete`]'s refusals beyond [`OwnerOnly`]'s.
struct InProgress;

impl IntoResponses for InProgress {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        error_responses(&[(
            StatusCode::CONFLICT,
            "the recording is in progress: end the stream first",
        )])
    }
}

/// Delete a finished recording and its files.
#[utoipa::path(delete, path = "/recordings/{id}", tag = "recordings", security(("bearer" = [])), params(("id" = String, Path, description = "recording id")),
    responses((status = 204, description = "deleted"), CreatorRejections, Unavailable, OwnerOnly, InProgress))]
pub async fn delete(
    State(state): State<ApiState>,
    RecordingId(id): RecordingId,
    Creator(c): Creator,
) -> ApiResult<StatusCode> {
    let rec = owned_recording(&state, &id, &c).await?;
    // The packager is still writing it (and would list it again when it ends).
    if rec.status == RecordingStatus::Recording {
        return Err(ApiError::conflict(
            "this recording is in progress: end the stream (or wait for it to end), then delete it",
        ));
    }
    // Files first: a row without files would be a broken link, files without a row are
    // only disk space (and deleting again is not possible then).
    if let Some(store) = &state.config.recordings {
        remove_files(store, &rec).await?;
    }
    state.store.delete_recording(&rec.id).await?;
    tracing::info!(recording_id = %rec.id, room_id = %rec.room_id, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the objects under `{room}/{id}`; the path comes from the row, checked again
/// here.
async fn remove_files(store: &skylark_objstore::Store, rec: &Recording) -> ApiResult<()> {
    let ok = rec.path == format!("{}/{}", rec.room_id, rec.id)
        && crate::recordings::could_name_a_recording(&rec.id)
        && crate::recordings::could_name_a_recording(&rec.room_id);
    if !ok {
        return Err(ApiError::internal("recording path is not its room/id"));
    }
    match store.delete_prefix(&rec.path).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, recording_id = %rec.id, "recording files not deleted");
            Err(ApiError::busy(
                "the recording's files could not be deleted right now: retry later",
                5,
            ))
        }
    }
}
