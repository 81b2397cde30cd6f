//! `GET /api/v1/rooms/{id}/playback`: where and how to watch a room.

use crate::error::SignalError;
use crate::session;
use crate::State;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use skylark_auth::PLAYBACK_TOKEN_TTL;
use skylark_bus::{placement, Bus, NodeKind};
use skylark_proto::rooms::v1 as rooms;
use skylark_telemetry::error::ErrorBody;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlaybackQuery {
    /// Viewer token for private rooms, when a header can't be set (e.g. a shared link).
    token: Option<String>,
}

/// Where and how to watch a room.
#[derive(Serialize, ToSchema)]
pub struct Playback {
    /// The room's id (the path may have named it by its slug).
    room: String,
    /// Whether a publisher is live in it now.
    live: bool,
    /// WHEP; `null` in `p2p` rooms, whose media never passes an SFU.
    webrtc: Option<WebRtc>,
    /// WebSocket signaling (`watch`; the only way into a `p2p` room).
    ws_url: String,
    hls: MediaUrl,
    flv: MediaUrl,
    recommended: Recommended,
}

#[derive(Serialize, ToSchema)]
pub struct WebRtc {
    /// `POST` an SDP offer here (WHEP).
    whep_url: String,
}

/// A playback URL; a private room's carries a short-lived signed token.
#[derive(Serialize, ToSchema)]
pub struct MediaUrl {
    url: String,
}

/// Which way a player should try first: `webrtc` while an SFU is up, `hls` when none
/// is, `p2p` in peer-to-peer rooms.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recommended {
    Webrtc,
    Hls,
    P2p,
}

/// Where and how to watch a room: WebRTC (WHEP), WebSocket signaling, HLS, FLV.
#[utoipa::path(get, path = "/api/v1/rooms/{id}/playback", tag = "rooms",
    params(("id" = String, Path, description = "room id or slug"), PlaybackQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, body = Playback, description = "how to watch"),
        (status = 400, body = ErrorBody, description = "a query string that does not parse (e.g. `token` given twice)"),
        (status = 401, body = ErrorBody, description = "a private room without a token, or an invalid or expired token",
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, body = ErrorBody, description = "a private room, and the token is neither its owner's nor one of its viewer tokens"),
        (status = 404, body = ErrorBody, description = "no such room"),
        (status = 503, body = ErrorBody, description = "the room directory is unavailable: retry after `Retry-After` seconds",
            headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
pub async fn playback(
    AxState(state): AxState<State>,
    room_id: Result<Path<String>, PathRejection>,
    q: Result<Query<PlaybackQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Playback>, SignalError> {
    // axum's own rejections are plain text; every error here is the JSON shape. An id
    // that is not UTF-8 names no room, like any other that names none.
    let Path(room_id) = room_id
        .map_err(|_| SignalError::new(StatusCode::NOT_FOUND, "not_found", "no such room"))?;
    let Query(q) = q.map_err(|e| SignalError::bad_request(e.body_text()))?;
    let token = session::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .or(q.token)
    .unwrap_or_default();
    let room = session::authorize_view(&state, room_id, token.clone()).await?;
    let base = &state.public_url;
    let id = &room.id;
    let p2p = room.mode == rooms::Mode::P2p as i32;
    // An SFU origin or a p2p broadcaster: the same answer the API gives.
    let live = placement::origin(&state.bus, id)
        .await
        .ok()
        .flatten()
        .is_some();
    let sfu_up = state
        .bus
        .nodes(NodeKind::Sfu)
        .await
        .map(|n| !n.is_empty())
        .unwrap_or(false);
    let ws_base = base.replacen("http", "ws", 1);
    // Private rooms' HLS/FLV need a signed token the packager checks; players keep it
    // in the URL (the packager puts it on every URI of the playlists).
    let query = if room.visibility == rooms::Visibility::Private as i32 {
        let t =
            state
                .playback_tokens
                .issue_for(id, room.viewer_generation, &token, PLAYBACK_TOKEN_TTL);
        format!("?token={t}")
    } else {
        String::new()
    };
    let recommended = if p2p {
        Recommended::P2p
    } else if sfu_up {
        Recommended::Webrtc
    } else {
        Recommended::Hls
    };
    Ok(Json(Playback {
        room: id.clone(),
        live,
        webrtc: (!p2p).then(|| WebRtc {
            whep_url: format!("{base}/whep/{id}"),
        }),
        ws_url: format!("{ws_base}/ws"),
        hls: MediaUrl {
            url: format!("{base}/hls/{id}/index.m3u8{query}"),
        },
        flv: MediaUrl {
            url: format!("{base}/flv/{id}.flv{query}"),
        },
        recommended,
    }))
}
