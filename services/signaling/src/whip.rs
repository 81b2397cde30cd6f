//! WHIP (RFC 9725) ingest and WHEP playback: an SDP offer in, `201 Created` with the
//! answer and a session `Location` out; PATCH trickles ICE, DELETE ends the session.

use crate::error::SignalError;
use crate::session;
use crate::State;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use skylark_telemetry::limits::ClientIp;

/// Response header naming the SFU node that serves a WHEP session.
pub const SERVING_NODE: &str = "skylark-node";

fn bearer(headers: &HeaderMap) -> Option<String> {
    session::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
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

/// RFC 9725 §4.6 `Link: <turn:…>; rel="ice-server"` headers: each configured TURN
/// server with a credential minted for this session (TURN REST scheme).
fn add_ice_servers(state: &State, session: &str, r: &mut Response) {
    let Some(turn) = &state.turn else {
        return;
    };
    let scope = match skylark_auth::TurnScope::sfu(session) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no TURN credential for this session");
            return;
        }
    };
    let cred = turn.mint(&scope);
    for url in &turn.urls {
        if let Ok(v) = HeaderValue::from_str(&cred.link(url)) {
            r.headers_mut().append(header::LINK, v);
        }
    }
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

/// `POST /whip` (the key names the room) and `POST /whip/{room}`.
pub async fn whip_post(
    AxState(state): AxState<State>,
    ClientIp(ip): ClientIp,
    path: Option<Path<String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    let room_id = path.map(|Path(r)| r).unwrap_or_default();
    state.limits.session(ip, &room_id)?;
    let offer = sdp_body(&headers, &body)?;
    let key = bearer(&headers).ok_or_else(|| {
        SignalError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the stream key as `Authorization: Bearer <stream key>` (OBS: the Bearer Token field)",
        )
    })?;
    let ingest = session::Ingest {
        protocol: "whip",
        client_ip: Some(ip),
    };
    let grant =
        session::authorize_publish(&state, session::publish_credential(key), room_id, ingest)
            .await?;
    let started = session::start_publish(&state, &grant, offer).await?;
    metrics::counter!("skylark_whip_sessions_total").increment(1);
    tracing::info!(room_id = %grant.room.id, node = %started.node.id, "WHIP publish started");
    let mut r = created(
        started.answer_sdp,
        format!("/whip/{}/{}", grant.room.id, started.session_id),
    );
    add_ice_servers(&state, &started.session_id, &mut r);
    Ok(r)
}

/// `POST /whep/{room}`: a viewer's offer; a viewer token for private rooms.
pub async fn whep_post(
    AxState(state): AxState<State>,
    ClientIp(ip): ClientIp,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    state.limits.session(ip, &room_id)?;
    let offer = sdp_body(&headers, &body)?;
    let token = bearer(&headers).unwrap_or_default();
    let room = session::authorize_view(&state, room_id, token).await?;
    let started = session::start_view(&state, &room.id, offer).await?;
    metrics::counter!("skylark_whep_sessions_total").increment(1);
    let mut r = created(
        started.answer_sdp,
        format!("/whep/{}/{}", room.id, started.session_id),
    );
    // Which node serves this viewer (origin or edge): for operators and the load generator.
    if let Ok(v) = HeaderValue::from_str(&started.node.id) {
        r.headers_mut().insert(SERVING_NODE, v);
    }
    // The WHEP layer extension: where the player picks a simulcast layer.
    let layer = format!(
        "</whep/{}/{}/layer>; rel=\"{LAYER_REL}\"",
        room.id, started.session_id
    );
    if let Ok(v) = HeaderValue::from_str(&layer) {
        r.headers_mut().append(header::LINK, v);
    }
    add_ice_servers(&state, &started.session_id, &mut r);
    Ok(r)
}

/// The link relation of the WHEP layer extension (draft-ietf-wish-whep).
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// A player's layer request: `{"encodingId": "m"}` for that layer, `{}` for automatic.
#[derive(serde::Deserialize)]
pub struct LayerRequest {
    #[serde(default, rename = "encodingId")]
    encoding_id: Option<String>,
}

/// `GET /whep/{room}/{session}/layer`: the room's layers, the one the viewer gets and
/// its choice. `POST` with a [`LayerRequest`] chooses, then answers the same.
pub async fn layer(
    AxState(state): AxState<State>,
    Path((room, session)): Path<(String, String)>,
    body: Option<axum::Json<LayerRequest>>,
) -> Result<Response, SignalError> {
    let rec = session::find(&state, &room, &session).await?;
    if rec.kind != "whep" {
        return Err(SignalError::bad_request(
            "only a WHEP (viewer) session has layers to choose",
        ));
    }
    let choice = body.map(|axum::Json(b)| b.encoding_id.unwrap_or_else(|| "auto".into()));
    let reply = session::layers(&state, &rec.sfu_url, &session, choice).await?;
    Ok(axum::Json(session::layers_json(&reply)).into_response())
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
    let rec = session::find(&state, &room, &session).await?;
    for line in frag.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            session::add_candidate(&state, &rec.sfu_url, &session, format!("candidate:{c}"))
                .await?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /whip|whep/{room}/{session}`: ends the session.
pub async fn session_delete(
    AxState(state): AxState<State>,
    Path((room, session)): Path<(String, String)>,
) -> Result<Response, SignalError> {
    session::delete(&state, &room, &session).await?;
    Ok(StatusCode::OK.into_response())
}
