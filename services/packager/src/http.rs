//! `GET /hls/{room}/…`: the multivariant playlist, the LL-HLS media playlist with
//! blocking reload (`_HLS_msn`, `_HLS_part`) and delta updates (`_HLS_skip`), the init
//! segment, segments (behind the live edge: DVR files) and parts — at the room's root
//! without simulcast, under `/hls/{room}/{layer}/` per layer with it.

use crate::access::with_param;
use crate::audience;
use crate::store::{RoomHls, Rooms, SegmentSource};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use skylark_media::hls::render_multivariant;
use skylark_telemetry::error::json_error as error;
use skylark_telemetry::limits::ClientIp;
use std::sync::Arc;
use std::time::Duration;

/// `EXT-X-SESSION-DATA` of the multivariant playlist: the DVR window's length and how
/// much of it the room has, in seconds (the watch page's seek bar reads them).
pub const DVR_WINDOW_ID: &str = "io.skylark.dvr-window";
pub const DVR_AVAILABLE_ID: &str = "io.skylark.dvr-available";

/// Longest a blocking request waits (three target durations, as the spec suggests).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a request for a live room's first still waits for it.
pub const STILL_WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct HttpState {
    pub rooms: Rooms,
    pub recordings: crate::recording::Storage,
    pub remote: Arc<crate::remote::Remote>,
    pub access: Arc<crate::access::Access>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/hls/{room}/{file}", get(root_file))
        .route("/hls/{room}/{rendition}/{file}", get(rendition_file))
        .route("/flv/{file}", get(flv_file))
        .route(
            "/recordings/{id}/{file}",
            get(crate::recording_http::root_file),
        )
        .route(
            "/recordings/{id}/{rendition}/{file}",
            get(crate::recording_http::rendition_file),
        )
        // Private rooms need a playback token (inside CORS, so players can read a 401).
        .layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            crate::access::authorize,
        ))
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD]),
        )
        .with_state(state)
}

/// `GET /flv/{room}.flv` (HTTP-FLV, or WS-FLV with a WebSocket upgrade).
async fn flv_file(
    State(st): State<HttpState>,
    Path(file): Path<String>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Response {
    let ws = ws.ok();
    let Some(room) = file.strip_suffix(".flv").filter(|r| valid_room(r)) else {
        return error(StatusCode::NOT_FOUND, "not_found", "use /flv/{room}.flv");
    };
    match st.rooms.get(room) {
        Some(hls) if hls.read(|s| s.ended_at.is_none()) => crate::flv::serve(&hls.flv, ws),
        _ if ws.is_none() => {
            let forwarded = headers.contains_key(crate::remote::FORWARDED);
            match st.remote.forward_stream(room, &uri, forwarded).await {
                Some(r) => r,
                None => crate::flv::not_live(),
            }
        }
        _ => crate::flv::not_live(),
    }
}

fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 128
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A file name this server can produce, parsed strictly (anything else is a 404).
#[derive(Debug, PartialEq, Eq)]
enum File {
    Multivariant,
    Media,
    /// `init.mp4` (the newest, `None`) or `init{n}.mp4` (version `n`, immutable).
    Init(Option<u32>),
    Segment(u64),
    Part(u64, u64),
    /// `still.mp4`: the room's thumbnail (one keyframe, see `fmp4::still`).
    Still,
}

fn parse_file(name: &str) -> Option<File> {
    match name {
        "index.m3u8" => return Some(File::Multivariant),
        "media.m3u8" => return Some(File::Media),
        "init.mp4" => return Some(File::Init(None)),
        "still.mp4" => return Some(File::Still),
        _ => {}
    }
    if let Some(v) = name
        .strip_prefix("init")
        .and_then(|n| n.strip_suffix(".mp4"))
    {
        let ok = !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit());
        return ok
            .then(|| v.parse().ok().map(|v| File::Init(Some(v))))
            .flatten();
    }
    let stem = name.strip_prefix("seg")?.strip_suffix(".m4s")?;
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match stem.split_once('.') {
        None => Some(File::Segment(num(stem)?)),
        Some((m, p)) => Some(File::Part(num(m)?, num(p)?)),
    }
}

#[derive(Deserialize, Default)]
pub struct Blocking {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
    /// The player's session (see `audience`).
    sid: Option<String>,
}

fn with_headers(body: impl Into<Body>, ctype: &'static str, cache: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

pub(crate) const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const IMMUTABLE: &str = "public, max-age=86400, immutable";

type BlockingQuery = Result<Query<Blocking>, axum::extract::rejection::QueryRejection>;

async fn root_file(
    st: State<HttpState>,
    ClientIp(ip): ClientIp,
    Path((room, name)): Path<(String, String)>,
    query: BlockingQuery,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let req = Req { uri, headers, ip };
    file(st, room, String::new(), name, query, req).await
}

async fn rendition_file(
    st: State<HttpState>,
    ClientIp(ip): ClientIp,
    Path((room, rendition, name)): Path<(String, String, String)>,
    query: BlockingQuery,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let req = Req { uri, headers, ip };
    // Layer names are RIDs restricted to the room-id alphabet (see `renditions`).
    if !valid_room(&rendition) || rendition.len() > 32 {
        return error(StatusCode::NOT_FOUND, "not_found", "no such rendition");
    }
    file(st, room, rendition, name, query, req).await
}

/// What a file request needs of the HTTP request besides its path and query.
struct Req {
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    ip: std::net::IpAddr,
}

fn not_live() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "this room is not live (no HLS yet): retry when it is",
    )
}

/// The room's HLS once a packager takes the room up within `within`: this one's, or
/// another's answer to the request.
async fn taken_up(
    st: &HttpState,
    room: &str,
    uri: &axum::http::Uri,
    within: Duration,
) -> Option<Result<std::sync::Arc<RoomHls>, Response>> {
    let until = tokio::time::Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(hls) = st.rooms.get(room) {
            return Some(Ok(hls));
        }
        if let Some(resp) = st.remote.forward(room, uri, false).await {
            return Some(Err(resp));
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
    }
}

async fn file(
    State(st): State<HttpState>,
    room: String,
    rendition: String,
    name: String,
    query: BlockingQuery,
    Req { uri, headers, ip }: Req,
) -> Response {
    if !valid_room(&room) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such room");
    }
    let Some(file) = parse_file(&name)
        .filter(|f| rendition.is_empty() || !matches!(f, File::Multivariant | File::Still))
    else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such HLS file");
    };
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unreadable query parameters",
        );
    };
    let hls = match st.rooms.get(&room) {
        Some(hls) => hls,
        None => {
            // Another packager may hold the room: pass the request on.
            let forwarded = headers.contains_key(crate::remote::FORWARDED);
            if let Some(resp) = st.remote.forward(&room, &uri, forwarded).await {
                return resp;
            }
            // A home-page tile or a player asks for a room's picture or playlist as
            // soon as the API says it is live, before a packager has taken the room up
            // (discovery looks each second, later under load): they wait for that, as
            // they wait for the first picture or segment.
            let wait = matches!(file, File::Still | File::Multivariant)
                && !forwarded
                && st.remote.is_live(&room).await;
            match wait {
                true => match taken_up(&st, &room, &uri, STILL_WAIT).await {
                    Some(Ok(hls)) => hls,
                    Some(Err(resp)) => return resp,
                    None => return not_live(),
                },
                false => return not_live(),
            }
        }
    };
    metrics::counter!("skylark_hls_requests_total", "kind" => kind(&file)).increment(1);
    match file {
        File::Multivariant => {
            // Listed with their first complete segment: BANDWIDTH is then measured, and a
            // simulcast room's layers are all there (players read this once). A layer
            // that never completes one is listed without it after the wait.
            wait_until(&hls, |s| s.playable()).await;
            let variants = hls.read(|s| s.variants());
            if variants.is_empty() {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the stream has not started yet: retry in a second",
                );
            }
            // Each player gets its session id on the URIs it will reload.
            let sid = q
                .sid
                .filter(|s| audience::valid_sid(s))
                .unwrap_or_else(audience::new_sid);
            let mut text = render_multivariant(&variants);
            // The player learns the DVR window here (RFC 8216 §4.3.4.4 session data)
            // without loading a media playlist, so counting as no HLS viewer.
            if let Some((window, have)) = hls.read(|s| s.dvr_seconds()) {
                text.push_str(&format!(
                    "#EXT-X-SESSION-DATA:DATA-ID=\"{DVR_WINDOW_ID}\",VALUE=\"{window:.0}\"\n\
                     #EXT-X-SESSION-DATA:DATA-ID=\"{DVR_AVAILABLE_ID}\",VALUE=\"{have:.0}\"\n"
                ));
            }
            let body = with_param(&text, audience::SID, &sid);
            with_headers(body, PLAYLIST, "no-cache")
        }
        File::Media => {
            let key = match q.sid.as_deref().filter(|s| audience::valid_sid(s)) {
                Some(sid) => sid.to_owned(),
                None => audience::anonymous_key(
                    ip,
                    headers
                        .get(header::USER_AGENT)
                        .and_then(|v| v.to_str().ok()),
                ),
            };
            hls.audience.touch(&key, std::time::Instant::now());
            media_playlist(&hls, &rendition, q).await
        }
        File::Still => {
            // The room's first still comes with its first listed rendition: a tile
            // asked for it as the room went live waits for it, as playlists do, but
            // longer: the first keyframe of a starved encoder took over 6 s under load,
            // and a pending picture costs the page nothing.
            wait_until_or(&hls, STILL_WAIT, |s| s.still().is_some()).await;
            match hls.read(|s| s.still()) {
                // A new one every couple of seconds: never cached.
                Some(b) => with_headers(b, "video/mp4", "no-cache"),
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no picture yet: retry in a second",
                ),
            }
        }
        File::Init(version) => init_file(&hls, &rendition, version).await,
        File::Segment(msn) => {
            let bytes = match hls.segment_source(&rendition, msn) {
                Some(SegmentSource::Memory(b)) => Some(b),
                Some(SegmentSource::File(path)) => crate::dvr::read(&path).await,
                None => None,
            };
            match bytes {
                Some(b) => serve_bytes(b),
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such segment (outside the window?)",
                ),
            }
        }
        File::Part(msn, p) => {
            // The preload hint names the next part before it exists: wait for it.
            let mut rx = hls.subscribe();
            let deadline = tokio::time::Instant::now() + BLOCK_TIMEOUT;
            loop {
                if let Some(b) = hls.part(&rendition, msn, p) {
                    return serve_bytes(b);
                }
                let expected = hls
                    .read_rendition(&rendition, |r| {
                        !r.playlist.ended
                            && r.playlist.last_part().is_none_or(|(m, lp)| {
                                (msn == m && p == lp + 1) || (msn == m + 1 && p == 0)
                            })
                    })
                    .unwrap_or(false);
                if !expected {
                    return error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "no such part (outside the window?)",
                    );
                }
                if !next_change(&mut rx, deadline).await {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "part not produced in time",
                    );
                }
            }
        }
    }
}

/// Init segment `version` (the newest for `None`). A playlist names the next init
/// before it exists (a publisher change, see `SegOutput::NextInit`): a request for it
/// waits, as one for a hinted part does.
async fn init_file(hls: &RoomHls, rendition: &str, version: Option<u32>) -> Response {
    let mut rx = hls.subscribe();
    let deadline = tokio::time::Instant::now() + BLOCK_TIMEOUT;
    loop {
        let (init, due) = hls
            .read_rendition(rendition, |r| {
                (r.init_segment(version), r.init_due(version))
            })
            .unwrap_or((None, false));
        match init {
            // `init.mp4` changes with the publisher; `init{n}.mp4` never does.
            Some(b) if version.is_none() => return with_headers(b, "video/mp4", "no-cache"),
            Some(b) => return with_headers(b, "video/mp4", IMMUTABLE),
            None if !due => {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the stream has not started yet",
                )
            }
            None => {}
        }
        if !next_change(&mut rx, deadline).await {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "init segment not produced in time",
            );
        }
    }
}

fn kind(f: &File) -> &'static str {
    match f {
        File::Multivariant | File::Media => "playlist",
        File::Init(_) => "init",
        File::Still => "still",
        File::Segment(_) => "segment",
        File::Part(..) => "part",
    }
}

fn serve_bytes(b: bytes::Bytes) -> Response {
    metrics::counter!("skylark_hls_bytes_served_total").increment(b.len() as u64);
    with_headers(b, "video/mp4", IMMUTABLE)
}

/// A query number; `Err` holds the message of a 400.
fn parse_num(v: &Option<String>, name: &str) -> Result<Option<u64>, String> {
    match v {
        None => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{name} must be a non-negative integer")),
    }
}

async fn media_playlist(hls: &RoomHls, rendition: &str, q: Blocking) -> Response {
    let (msn, part) = match (
        parse_num(&q.msn, "_HLS_msn"),
        parse_num(&q.part, "_HLS_part"),
    ) {
        (Ok(m), Ok(p)) => (m, p),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    // `v2` also asks to skip date ranges, of which there are none.
    let skip = match q.skip.as_deref() {
        None => false,
        Some("YES" | "v2") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_skip must be YES or v2",
            )
        }
    };
    if part.is_some() && msn.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "_HLS_part needs _HLS_msn",
        );
    }
    let Some(next) = hls.read_rendition(rendition, |r| {
        r.playlist.media_sequence + r.playlist.segments.len() as u64
    }) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such rendition");
    };
    if let Some(m) = msn {
        // The spec: a request more than two segments ahead gets 400 at once.
        if m > next + 2 {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "_HLS_msn is too far ahead of the live edge",
            );
        }
        let mut rx = hls.subscribe();
        let deadline = tokio::time::Instant::now() + BLOCK_TIMEOUT;
        while !hls
            .read_rendition(rendition, |r| r.playlist.has(m, part))
            .unwrap_or(true)
        {
            if !next_change(&mut rx, deadline).await {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "playlist update not produced in time",
                );
            }
        }
    }
    // A playlist of the open segment's parts alone is no start: Shaka 5.2 guesses the
    // media type from the first segment's URI and fails to load, hls.js reports
    // levelEmptyError. Wait for the first complete segment (rule `complete-segment`).
    wait_until(hls, |s| {
        s.rendition(rendition).is_some_and(|r| r.playable())
    })
    .await;
    let text = hls
        .read_rendition(rendition, |r| {
            if skip {
                r.playlist.render_delta()
            } else {
                r.playlist.render()
            }
        })
        .unwrap_or_default();
    if !text.contains("#EXTINF") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the stream has not started yet: retry in a second",
        );
    }
    with_headers(text, PLAYLIST, "no-cache")
}

/// Waits up to [`BLOCK_TIMEOUT`] for `ready`; whether it came.
async fn wait_until(hls: &RoomHls, ready: impl Fn(&crate::store::State) -> bool) -> bool {
    wait_until_or(hls, BLOCK_TIMEOUT, ready).await
}

/// Waits for the room's next change, up to `deadline`: false if none came.
async fn next_change(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> bool {
    metrics::gauge!("skylark_hls_blocking_requests").increment(1.0);
    let woke = tokio::time::timeout_at(deadline, rx.changed()).await;
    metrics::gauge!("skylark_hls_blocking_requests").decrement(1.0);
    matches!(woke, Ok(Ok(())))
}

/// Waits up to `limit` for `ready`; whether it came.
async fn wait_until_or(
    hls: &RoomHls,
    limit: Duration,
    ready: impl Fn(&crate::store::State) -> bool,
) -> bool {
    let mut rx = hls.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    while !hls.read(&ready) {
        if !next_change(&mut rx, deadline).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segmenter::{SegOutput, StreamInfo};
    use bytes::Bytes;
    use skylark_media::hls::check;

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Before its first segment completes, a room's playlists wait for it rather than
    /// list the open segment's parts alone (Shaka Player failed to load such a playlist).
    #[tokio::test(flavor = "current_thread")]
    async fn playlists_wait_for_the_first_complete_segment() {
        let hls = RoomHls::new(Duration::from_secs(2), Duration::from_millis(220));
        let info = StreamInfo {
            codecs: "avc1.42c01f".into(),
            resolution: Some((640, 360)),
            bandwidth: 0,
        };
        hls.set_init("", Bytes::from_static(b"init"), info, false);
        // 50 kB a 200 ms part: 2 Mbit/s.
        let part = Bytes::from(vec![0u8; 50_000]);
        for p in 0..3 {
            hls.push_part("", 0, part.clone(), 0.2, p == 0, 0, false);
        }
        let media = tokio::spawn({
            let hls = hls.clone();
            async move { body(media_playlist(&hls, "", Blocking::default()).await).await }
        });
        let multivariant = tokio::spawn({
            let hls = hls.clone();
            async move {
                wait_until(&hls, |s| s.playable()).await;
                render_multivariant(&hls.read(|s| s.variants()))
            }
        });
        // Both requests run (and, answered at once, would finish) before the segment closes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        hls.push_part("", 0, part, 0.2, false, 0, false);
        hls.finish_segment("", 0);
        let text = media.await.unwrap();
        let pl = check::parse_media(&text).unwrap();
        assert_eq!(check::check_media(&pl), [], "{text}");
        assert!(text.contains("#EXTINF:0.80000,\nseg0.m4s\n"), "{text}");
        let mv = multivariant.await.unwrap();
        assert!(
            mv.contains("BANDWIDTH=2000000,"),
            "measured on segment 0: {mv}"
        );
    }

    /// After a publisher change the playlist names the next init before it exists
    /// (`SegOutput::NextInit`): a request for it waits for it; an unknown one is a 404.
    #[tokio::test(flavor = "current_thread")]
    async fn an_announced_init_is_served_once_written() {
        let hls = RoomHls::new(Duration::from_secs(2), Duration::from_millis(220));
        let info = StreamInfo {
            codecs: "avc1.42c01f".into(),
            resolution: Some((640, 360)),
            bandwidth: 0,
        };
        hls.set_init("", Bytes::from_static(b"init1"), info.clone(), false);
        hls.push_part("", 0, Bytes::from_static(b"p"), 0.2, true, 0, false);
        hls.finish_segment("", 0);
        hls.apply(vec![(String::new(), SegOutput::NextInit)]);
        let text = body(media_playlist(&hls, "", Blocking::default()).await).await;
        assert!(
            text.contains(
                "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXT-X-PRELOAD-HINT"
            ),
            "{text}"
        );
        assert_eq!(
            init_file(&hls, "", Some(3)).await.status(),
            StatusCode::NOT_FOUND
        );
        let init = tokio::spawn({
            let hls = hls.clone();
            async move { init_file(&hls, "", Some(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!init.is_finished(), "waits for the announced init");
        let bytes = Bytes::from_static(b"init2");
        let discontinuity = true;
        hls.apply(vec![(
            String::new(),
            SegOutput::Init {
                bytes,
                info,
                discontinuity,
            },
        )]);
        let r = init.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "init2");
    }

    /// With a DVR window, `_HLS_skip=YES` answers a delta update a player can apply to
    /// the full playlist (rule `skip`); a bad value is a 400; without DVR the full one.
    #[tokio::test(flavor = "current_thread")]
    async fn delta_updates_with_a_dvr_window() {
        let root = tempfile::tempdir().unwrap();
        let settings = crate::dvr::Settings {
            window: Duration::from_secs(60),
            root: root.path().to_path_buf(),
        };
        let with = RoomHls::with_dvr(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Some(&settings),
            "r",
        );
        let without = RoomHls::new(Duration::from_secs(1), Duration::from_millis(500));
        for hls in [&with, &without] {
            for msn in 0..30u64 {
                for p in 0..2 {
                    let b = Bytes::from_static(b"x");
                    hls.push_part("", msn, b, 0.5, p == 0, 1000 * msn as i64, false);
                }
                hls.finish_segment("", msn);
            }
        }
        let get = |hls: &Arc<RoomHls>, skip: Option<&str>| {
            let hls = hls.clone();
            let q = Blocking {
                skip: skip.map(str::to_owned),
                ..Blocking::default()
            };
            async move { media_playlist(&hls, "", q).await }
        };
        let full = body(get(&with, None).await).await;
        let delta = body(get(&with, Some("YES")).await).await;
        let (full, delta) = (
            check::parse_media(&full).unwrap(),
            check::parse_media(&delta).unwrap(),
        );
        assert_eq!(full.segments.len(), 30);
        assert_eq!(delta.skipped, 24, "6 s (6 × TARGETDURATION) stay listed");
        assert_eq!(check::check_media(&delta), []);
        assert_eq!(check::check_delta(&full, &delta), []);
        let v2 = body(get(&with, Some("v2")).await).await;
        assert!(v2.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=24\n"), "{v2}");
        let bad = get(&with, Some("NO")).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let plain = body(get(&without, Some("YES")).await).await;
        assert!(
            !plain.contains("EXT-X-SKIP") && !plain.contains("CAN-SKIP-UNTIL"),
            "{plain}"
        );
    }

    #[test]
    fn file_names_are_parsed_strictly() {
        assert_eq!(parse_file("index.m3u8"), Some(File::Multivariant));
        assert_eq!(parse_file("seg12.m4s"), Some(File::Segment(12)));
        assert_eq!(parse_file("seg12.3.m4s"), Some(File::Part(12, 3)));
        assert_eq!(parse_file("init.mp4"), Some(File::Init(None)));
        assert_eq!(parse_file("init7.mp4"), Some(File::Init(Some(7))));
        assert_eq!(parse_file("still.mp4"), Some(File::Still));
        for bad in [
            "seg.m4s",
            "seg1..m4s",
            "seg-1.m4s",
            "../etc/passwd",
            "seg1.2.3.m4s",
            "seg99999999999999.m4s",
            "init.mp4x",
            "seg+1.m4s",
            "init-1.mp4",
            "init.7.mp4",
            "init9999999999.mp4",
            "init+1.mp4",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
        assert!(!valid_room("../x"));
        assert!(valid_room("room_Ab-9"));
    }
}
