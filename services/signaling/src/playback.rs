//! `GET /api/v1/rooms/{id}/playback`: where and how to watch a room.

use crate::error::SignalError;
use crate::session;
use crate::State;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use skylark_auth::PLAYBACK_TOKEN_TTL;
use skylark_bus::{placement, Bus, NodeKind};
use skylark_proto::rooms::v1 as rooms;

#[derive(Deserialize)]
pub struct PlaybackQuery {
    /// Viewer token for private rooms, when a header can't be set (e.g. a shared link).
    token: Option<String>,
}

pub async fn playback(
    AxState(state): AxState<State>,
    Path(room_id): Path<String>,
    Query(q): Query<PlaybackQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, SignalError> {
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
    let webrtc = (!p2p).then(|| json!({"whep_url": format!("{base}/whep/{id}")}));
    let recommended = if p2p {
        "p2p"
    } else if sfu_up {
        "webrtc"
    } else {
        "hls"
    };
    Ok(Json(json!({
        "room": id,
        "live": live,
        "webrtc": webrtc,
        "ws_url": format!("{ws_base}/ws"),
        "hls": {"url": format!("{base}/hls/{id}/index.m3u8{query}")},
        "flv": {"url": format!("{base}/flv/{id}.flv{query}")},
        "recommended": recommended,
    })))
}
