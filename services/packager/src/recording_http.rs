//! `GET /recordings/{id}/…`: a recording's files, from the recordings directory (which
//! every packager of a deployment shares): `index.m3u8`, `{rendition}/media.m3u8`,
//! `{rendition}/init{v}.mp4`, `{rendition}/seg{n}.m4s`, `recording.mp4`. Names are
//! parsed strictly (anything else is a 404), so no request reaches outside it.

use crate::http::HttpState;
use crate::recording::safe_name;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use skylark_telemetry::error::json_error as error;
use tokio_util::io::ReaderStream;

/// What a recording's file name may be.
fn content_type(name: &str, in_rendition: bool) -> Option<&'static str> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    if !in_rendition {
        return match name {
            "index.m3u8" => Some(crate::http::PLAYLIST),
            "recording.mp4" => Some("video/mp4"),
            _ => None,
        };
    }
    if name == "media.m3u8" {
        return Some(crate::http::PLAYLIST);
    }
    if name
        .strip_prefix("init")
        .and_then(|n| n.strip_suffix(".mp4"))
        .is_some_and(digits)
    {
        return Some("video/mp4");
    }
    if name
        .strip_prefix("seg")
        .and_then(|n| n.strip_suffix(".m4s"))
        .is_some_and(digits)
    {
        return Some("video/iso.segment");
    }
    None
}

pub async fn root_file(
    State(st): State<HttpState>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    serve(&st, &id, None, &name).await
}

pub async fn rendition_file(
    State(st): State<HttpState>,
    Path((id, rendition, name)): Path<(String, String, String)>,
) -> Response {
    if !safe_name(&rendition) || rendition.len() > 32 {
        return error(StatusCode::NOT_FOUND, "not_found", "no such rendition");
    }
    serve(&st, &id, Some(&rendition), &name).await
}

async fn serve(st: &HttpState, id: &str, rendition: Option<&str>, name: &str) -> Response {
    let Some(ctype) = content_type(name, rendition.is_some()) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such recording file");
    };
    let Some((_, dir)) = st.recordings.find(id).await else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such recording: list a room's with GET /api/v1/rooms/{id}/recordings",
        );
    };
    let path = match rendition {
        Some(r) => dir.join(r).join(name),
        None => dir.join(name),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let msg = if name == "recording.mp4" {
                "no download yet: the recording is still going on"
            } else {
                "no such recording file"
            };
            return error(StatusCode::NOT_FOUND, "not_found", msg);
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "recording file unreadable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the recording's storage can't be read right now: retry later",
            );
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    metrics::counter!("skylark_recording_requests_total").increment(1);
    let mut r = Response::new(Body::from_stream(ReaderStream::new(file)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    // Playlists change while the recording grows; media files never change.
    let cache = if ctype == crate::http::PLAYLIST {
        "no-cache"
    } else {
        "public, max-age=3600"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn only_recording_file_names() {
        assert_eq!(
            content_type("index.m3u8", false),
            Some(crate::http::PLAYLIST)
        );
        assert_eq!(content_type("recording.mp4", false), Some("video/mp4"));
        assert_eq!(content_type("seg12.m4s", true), Some("video/iso.segment"));
        assert_eq!(content_type("init2.mp4", true), Some("video/mp4"));
        for bad in [
            "seg.m4s",
            "seg1.2.m4s",
            "../x",
            "recording.json",
            "init.mp4",
            "media.m3u8",
        ] {
            assert_eq!(content_type(bad, false), None, "{bad}");
        }
        assert_eq!(content_type("recording.json", true), None);
        assert_eq!(content_type("seg-1.m4s", true), None);
    }
}
