//! WHIP (RFC 9725) ingest and WHEP playback: an SDP offer in, `201 Created` with the
//! answer and a session `Location` out; PATCH trickles ICE, DELETE ends the session.

use crate::error::SignalError;
use crate::placement;
use crate::State;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use skylark_bus::{keys, Bus};
use skylark_proto::rooms::v1 as rooms;
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_proto::sfu::v1 as sfu;
use std::time::Duration;

/// How long a session record outlives its last use in the bus.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize, Deserialize)]
struct SessionRecord {
    node: String,
    room: String,
    kind: String,
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

fn sdp_body(headers: &HeaderMap, body: &Bytes) -> Result<String, SignalError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return Err(SignalError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the SDP offer with `Content-Type: application/sdp`",
        ));
    }
    let sdp = std::str::from_utf8(body)
        .map_err(|_| SignalError::bad_request("the SDP offer is not UTF-8"))?;
    if !sdp.starts_with("v=0") {
        return Err(SignalError::bad_request(
            "malformed SDP: an offer starts with `v=0`",
        ));
    }
    Ok(sdp.to_string())
}

fn created(answer: String, location: String) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    r
}

async fn remember(state: &State, session: &str, node: &str, room: &str, kind: &str) {
    let rec = SessionRecord {
        node: node.into(),
        room: room.into(),
        kind: kind.into(),
    };
    let Ok(json) = serde_json::to_string(&rec) else {
        return;
    };
    if let Err(e) = state
        .bus
        .set(&keys::session(session), &json, Some(SESSION_TTL))
        .await
    {
        tracing::warn!(error = %e, "session not recorded in the bus: PATCH/DELETE via other pods will miss it");
    }
}

/// `POST /whip` (the key names the room) and `POST /whip/{room}`.
pub async fn whip_post(
    AxState(state): AxState<State>,
    path: Option<Path<String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    let offer = sdp_body(&headers, &body)?;
    let key = bearer(&headers).ok_or_else(|| {
        SignalError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the stream key as `Authorization: Bearer <stream key>` (OBS: the Bearer Token field)",
        )
    })?;
    let room_id = path.map(|Path(r)| r).unwrap_or_default();
    // An access token (a JWT, three dot-separated parts) lets the owner publish too.
    let credential = if key.split('.').count() == 3 {
        Credential::AccessToken(key)
    } else {
        Credential::StreamKey(key)
    };
    let auth = state
        .upstream
        .directory()
        .authorize_publish(rooms::AuthorizePublishRequest {
            credential: Some(credential),
            room_id,
        })
        .await
        .map_err(|s| SignalError::from_status(s, "room directory"))?
        .into_inner();
    let room = auth
        .room
        .ok_or_else(|| SignalError::unavailable("room directory answered without a room"))?;
    if room.mode == rooms::Mode::P2p as i32 {
        return Err(SignalError::new(
            StatusCode::CONFLICT,
            "p2p_room",
            "this room is peer-to-peer: publish from the studio page (WebSocket signaling), or switch the room to `sfu` mode",
        ));
    }
    let node = placement::publish_node(&state.bus, &room.id, state.selector.as_ref())
        .await
        .map_err(|e| {
            SignalError::unavailable(format!("node registry unavailable ({e}): retry shortly"))
        })?
        .ok_or_else(|| SignalError::unavailable("no SFU node is available: retry shortly"))?;
    let answer = state
        .upstream
        .sfu(&node.grpc_addr)
        .map_err(|e| SignalError::unavailable(e.to_string()))?
        .publish(sfu::PublishRequest {
            room_id: room.id.clone(),
            offer_sdp: offer,
            key_id: auth.key_id,
        })
        .await
        .map_err(|s| SignalError::from_status(s, "SFU"))?
        .into_inner();
    remember(
        &state,
        &answer.session_id,
        &node.grpc_addr,
        &room.id,
        "whip",
    )
    .await;
    metrics::counter!("skylark_whip_sessions_total").increment(1);
    tracing::info!(room_id = %room.id, node = %node.id, "WHIP publish started");
    Ok(created(
        answer.answer_sdp,
        format!("/whip/{}/{}", room.id, answer.session_id),
    ))
}

/// `POST /whep/{room}`: a viewer's offer; a viewer token for private rooms.
pub async fn whep_post(
    AxState(state): AxState<State>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    let offer = sdp_body(&headers, &body)?;
    let token = bearer(&headers).unwrap_or_default();
    let auth = state
        .upstream
        .directory()
        .authorize_play(rooms::AuthorizePlayRequest { room_id, token })
        .await
        .map_err(|s| SignalError::from_status(s, "room directory"))?
        .into_inner();
    let room = auth
        .room
        .ok_or_else(|| SignalError::unavailable("room directory answered without a room"))?;
    let node = placement::origin(&state.bus, &room.id)
        .await
        .map_err(|e| {
            SignalError::unavailable(format!("node registry unavailable ({e}): retry shortly"))
        })?
        .ok_or_else(|| {
            SignalError::new(
                StatusCode::CONFLICT,
                "not_live",
                "the room is not live yet: retry when it is (the watch page waits by itself)",
            )
        })?;
    let answer = state
        .upstream
        .sfu(&node.grpc_addr)
        .map_err(|e| SignalError::unavailable(e.to_string()))?
        .subscribe(sfu::SubscribeRequest {
            room_id: room.id.clone(),
            offer_sdp: offer,
        })
        .await
        .map_err(|s| SignalError::from_status(s, "SFU"))?
        .into_inner();
    remember(
        &state,
        &answer.session_id,
        &node.grpc_addr,
        &room.id,
        "whep",
    )
    .await;
    metrics::counter!("skylark_whep_sessions_total").increment(1);
    Ok(created(
        answer.answer_sdp,
        format!("/whep/{}/{}", room.id, answer.session_id),
    ))
}

async fn session_node(state: &State, room: &str, session: &str) -> Result<String, SignalError> {
    if session.len() > 64 || !session.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SignalError::not_found("no such session"));
    }
    let rec = state
        .bus
        .get(&keys::session(session))
        .await
        .map_err(|e| {
            SignalError::unavailable(format!("session registry unavailable ({e}): retry"))
        })?
        .and_then(|s| serde_json::from_str::<SessionRecord>(&s).ok())
        .filter(|r| r.room == room)
        .ok_or_else(|| SignalError::not_found("no such session"))?;
    Ok(rec.node)
}

/// `PATCH /whip|whep/{room}/{session}`: trickled candidates (`application/trickle-ice-sdpfrag`).
pub async fn session_patch(
    AxState(state): AxState<State>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/trickle-ice-sdpfrag") {
        return Err(SignalError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "PATCH takes `Content-Type: application/trickle-ice-sdpfrag`",
        ));
    }
    let frag = std::str::from_utf8(&body)
        .map_err(|_| SignalError::bad_request("the SDP fragment is not UTF-8"))?;
    let node = session_node(&state, &room, &session).await?;
    let mut client = state
        .upstream
        .sfu(&node)
        .map_err(|e| SignalError::unavailable(e.to_string()))?;
    for line in frag.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            client
                .add_candidate(sfu::AddCandidateRequest {
                    session_id: session.clone(),
                    candidate: format!("candidate:{c}"),
                })
                .await
                .map_err(|s| SignalError::from_status(s, "SFU"))?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /whip|whep/{room}/{session}`: ends the session.
pub async fn session_delete(
    AxState(state): AxState<State>,
    Path((room, session)): Path<(String, String)>,
) -> Result<Response, SignalError> {
    let node = session_node(&state, &room, &session).await?;
    let res = state
        .upstream
        .sfu(&node)
        .map_err(|e| SignalError::unavailable(e.to_string()))?
        .close(sfu::CloseRequest {
            session_id: session.clone(),
        })
        .await;
    let _ = state.bus.del(&keys::session(&session)).await;
    match res {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        // Already gone on the node (timed out, replaced): the resource is gone either way.
        Err(s) if s.code() == tonic::Code::NotFound => Ok(StatusCode::OK.into_response()),
        Err(s) => Err(SignalError::from_status(s, "SFU")),
    }
}
