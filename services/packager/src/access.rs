//! Who may read a room's HLS and FLV: anyone for public and unlisted rooms; for private
//! rooms only a request carrying a playback token for that room (`?token=…`, from
//! `GET /api/v1/rooms/{id}/playback`). The room's visibility comes from the API's
//! RoomDirectory, cached briefly; when it can't be learned the request is refused
//! (503), never served. Playlists served to a tokened request carry the token on every
//! URI in them, so players keep it without knowing about it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use skylark_auth::{PlaybackTokenError, PlaybackTokens, MAX_PLAYBACK_TOKEN_LEN};
use skylark_proto::rooms::v1 as rooms;
use skylark_proto::rooms::v1::room_directory_client::RoomDirectoryClient;
use skylark_telemetry::{grpc_channel, GrpcClientInterceptor};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) type Directory = RoomDirectoryClient<InterceptedService<Channel, GrpcClientInterceptor>>;

/// A RoomDirectory client (connects lazily).
pub(crate) fn directory_client(api_grpc_url: &str) -> anyhow::Result<Directory> {
    Ok(
        RoomDirectoryClient::with_interceptor(grpc_channel(api_grpc_url)?, GrpcClientInterceptor)
            .max_decoding_message_size(64 * 1024),
    )
}

/// How long a visibility answer is used without asking again.
const FRESH: Duration = Duration::from_secs(10);
/// How long an older answer still serves while the directory is unreachable (a
/// visibility change takes at most this long to reach viewers during an API outage).
const STALE_IF_ERROR: Duration = Duration::from_secs(60);
/// Rooms remembered; random room ids can't grow the cache past this.
const MAX_CACHED: usize = 10_000;
/// Directory lookups in flight at once; more wait briefly, then get a 503.
const MAX_LOOKUPS: usize = 64;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest playlist rewritten (a long LL-HLS window is tens of KiB).
const MAX_PLAYLIST: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visibility {
    /// Public or unlisted: no token needed.
    Open,
    /// Tokens of this viewer generation play.
    Private(i64),
    /// No such room in the directory.
    Missing,
}

/// The packager's playback authorization: token checks and the visibility cache.
pub struct Access {
    tokens: PlaybackTokens,
    directory: Directory,
    cache: Mutex<HashMap<String, (Visibility, Instant)>>,
    lookups: Semaphore,
    /// Finds the room of a `/recordings/{id}/…` path: a recording plays as its room.
    recordings: Option<crate::recording::Storage>,
}

impl Access {
    /// `api_grpc_url` reaches the RoomDirectory; connects lazily.
    pub fn new(tokens: PlaybackTokens, api_grpc_url: &str) -> anyhow::Result<Self> {
        let directory = directory_client(api_grpc_url)?;
        Ok(Self {
            tokens,
            directory,
            cache: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(MAX_LOOKUPS),
            recordings: None,
        })
    }

    /// Recordings are authorized as their rooms' live playback.
    pub fn with_recordings(mut self, storage: crate::recording::Storage) -> Self {
        self.recordings = Some(storage);
        self
    }

    fn cached(&self, room: &str, max_age: Duration) -> Option<Visibility> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(room)
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(v, _)| *v)
    }

    fn remember(&self, room: &str, v: Visibility) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale = |(_, at): &(Visibility, Instant)| at.elapsed() >= FRESH;
        crate::bounded::cache_insert(
            &mut cache,
            MAX_CACHED,
            stale,
            room.to_string(),
            (v, Instant::now()),
        );
    }

    /// The room's visibility, or `None` when nobody can tell (fail closed).
    async fn visibility(&self, room: &str) -> Option<Visibility> {
        if let Some(v) = self.cached(room, FRESH) {
            return Some(v);
        }
        let looked_up = match tokio::time::timeout(LOOKUP_TIMEOUT, self.lookups.acquire()).await {
            Ok(Ok(_permit)) => self.look_up(room).await,
            _ => None,
        };
        match looked_up {
            Some(v) => {
                self.remember(room, v);
                Some(v)
            }
            None => self.cached(room, STALE_IF_ERROR),
        }
    }

    async fn look_up(&self, room: &str) -> Option<Visibility> {
        let mut req = tonic::Request::new(rooms::GetRoomRequest {
            room_id: room.to_string(),
        });
        req.set_timeout(LOOKUP_TIMEOUT);
        match self.directory.clone().get_room(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Some(match rooms::Visibility::try_from(r.visibility) {
                    Ok(rooms::Visibility::Public) | Ok(rooms::Visibility::Unlisted) => {
                        Visibility::Open
                    }
                    // Private, or a value this build doesn't know: closed.
                    _ => Visibility::Private(r.viewer_generation),
                })
            }
            Err(s) if s.code() == tonic::Code::NotFound => Some(Visibility::Missing),
            Err(s) => {
                tracing::warn!(room_id = %room, error = %s, "room directory lookup failed; refusing playback");
                None
            }
        }
    }
}

/// The room a playback path names: `/hls/{room}/…` or `/flv/{room}.flv`.
fn room_of(path: &str) -> Option<&str> {
    let room = if let Some(rest) = path.strip_prefix("/hls/") {
        rest.split('/').next()?
    } else {
        path.strip_prefix("/flv/")?.strip_suffix(".flv")?
    };
    let ok = !room.is_empty()
        && room.len() <= 128
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(room)
}

/// The recording id a `/recordings/{id}/…` path names.
fn recording_of(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/recordings/")?.split('/').next()?;
    crate::recording::safe_name(id).then_some(id)
}

/// The `token` query parameter, if any (tokens are URL-safe: no decoding).
fn token_of(query: Option<&str>) -> Option<&str> {
    param(query, "token")
}

/// The value of query parameter `name`.
pub(crate) fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn unavailable() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "cannot check who may watch this room right now: retry in a few seconds".into(),
    )
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Middleware on the `/hls` and `/flv` routes: refuses private rooms' media without a
/// valid playback token, and puts the token on every URI of the playlists it lets through.
pub async fn authorize(
    State(access): State<std::sync::Arc<Access>>,
    req: Request,
    next: Next,
) -> Response {
    let room = match room_of(req.uri().path()) {
        Some(room) => room.to_string(),
        None => {
            let found = match (recording_of(req.uri().path()), &access.recordings) {
                (Some(id), Some(storage)) => storage.find(id).await,
                _ => Ok(None),
            };
            match found {
                Ok(Some((room, _))) => room,
                // Not a room path, or no such recording: the handlers answer 404.
                Ok(None) => return next.run(req).await,
                Err(crate::recording::Unavailable) => return unavailable(),
            }
        }
    };
    let generation = match access.visibility(&room).await {
        Some(Visibility::Open) => return next.run(req).await,
        Some(Visibility::Missing) => {
            return refuse(StatusCode::NOT_FOUND, "not_found", "no such room".into())
        }
        Some(Visibility::Private(generation)) => generation,
        None => return unavailable(),
    };
    let get_url = format!(
        "get a URL from GET /api/v1/rooms/{room}/playback (with the owner's viewer token as `Authorization: Bearer …` or `?token=`)"
    );
    let Some(token) = token_of(req.uri().query()).map(str::to_string) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("this room is private: {get_url}"),
        );
    };
    if token.len() > MAX_PLAYBACK_TOKEN_LEN {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("playback token too long: {get_url}"),
        );
    }
    match access.tokens.verify(&token, &room, generation) {
        Ok(_) => {}
        Err(PlaybackTokenError::Expired) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                format!("playback token expired: {get_url} again"),
            )
        }
        Err(PlaybackTokenError::Revoked) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "token_revoked",
                format!(
                "the room's owner revoked this token: ask for a new viewer link, then {get_url}"
            ),
            )
        }
        Err(PlaybackTokenError::WrongRoom) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this playback token is for another room: {get_url}"),
            )
        }
        Err(PlaybackTokenError::Invalid) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid playback token: {get_url}"),
            )
        }
    }
    let resp = next.run(req).await;
    let playlist = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"));
    if !playlist || !resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PLAYLIST).await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "playlist could not be read: retry".into(),
        );
    };
    let text = with_param(&String::from_utf8_lossy(&bytes), "token", &token);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// `uri` with `name=value` added, unless it has `name` already (a playlist passed on
/// by the packager holding the room was rewritten there).
fn add_param(uri: &str, name: &str, value: &str) -> String {
    let query = uri.split_once('?').map(|(_, q)| q);
    if param(query, name).is_some() {
        return uri.to_string();
    }
    let sep = if query.is_some() { '&' } else { '?' };
    format!("{uri}{sep}{name}={value}")
}

/// The playlist with `name=value` on every URI: URI lines and every `URI="…"` attribute
/// (map, parts, preload hints, rendition reports, media renditions).
pub(crate) fn with_param(playlist: &str, name: &str, value: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + 64 * value.len());
    for line in playlist.lines() {
        if line.is_empty() {
        } else if !line.starts_with('#') {
            out.push_str(&add_param(line, name, value));
        } else {
            let mut rest = line;
            while let Some(i) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(i + 5);
                let boundary = i == 0 || matches!(head.as_bytes()[i - 1], b':' | b',');
                out.push_str(head);
                let Some(end) = tail.find('"') else {
                    rest = tail;
                    break;
                };
                if boundary {
                    out.push_str(&add_param(&tail[..end], name, value));
                } else {
                    out.push_str(&tail[..end]);
                }
                rest = &tail[end..];
            }
            out.push_str(rest);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_of_playback_paths() {
        assert_eq!(room_of("/hls/room_a/index.m3u8"), Some("room_a"));
        assert_eq!(room_of("/hls/room_a/h/seg3.2.m4s"), Some("room_a"));
        assert_eq!(room_of("/flv/room_a.flv"), Some("room_a"));
        for bad in [
            "/flv/room_a",
            "/hls/",
            "/hls/../x",
            "/other/room_a",
            "/flv/.flv",
        ] {
            assert_eq!(room_of(bad), None, "{bad}");
        }
        assert_eq!(token_of(Some("_HLS_msn=3&token=pt1.x&a=b")), Some("pt1.x"));
        assert_eq!(token_of(Some("xtoken=1")), None);
        assert_eq!(token_of(None), None);
        assert_eq!(
            recording_of("/recordings/rec_1/main/seg0.m4s"),
            Some("rec_1")
        );
        assert_eq!(recording_of("/recordings/../x"), None);
        assert_eq!(recording_of("/hls/rec_1/index.m3u8"), None);
    }

    #[test]
    fn every_uri_in_a_playlist_carries_the_token() {
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init1.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"seg5.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.0,\nseg5.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.1.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../m/media.m3u8\",LAST-MSN=6\n\n";
        let out = with_param(media, "token", "pt1.r.9.s");
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-MAP:URI=\"init1.mp4?token=pt1.r.9.s\"\n#EXT-X-PART:DURATION=0.2,URI=\"seg5.0.m4s?token=pt1.r.9.s\",INDEPENDENT=YES\n#EXTINF:2.0,\nseg5.m4s?token=pt1.r.9.s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.1.m4s?token=pt1.r.9.s\"\n#EXT-X-RENDITION-REPORT:URI=\"../m/media.m3u8?token=pt1.r.9.s\",LAST-MSN=6\n\n"
        );
        // Idempotent: a playlist rewritten by the holding packager passes through as is.
        assert_eq!(with_param(&out, "token", "pt1.r.9.s"), out);
        let mv = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.42e01f\"\nh/media.m3u8\n";
        assert!(with_param(mv, "token", "t").ends_with("\nh/media.m3u8?token=t\n"));
        assert_eq!(add_param("a.m3u8?x=1", "token", "t"), "a.m3u8?x=1&token=t");
        // An attribute that merely ends in URI is left alone; unterminated quotes too.
        assert_eq!(
            with_param("#X:KEYURI=\"a\"", "token", "t"),
            "#X:KEYURI=\"a\"\n"
        );
        assert_eq!(with_param("#X:URI=\"a", "token", "t"), "#X:URI=\"a\n");
    }
}
