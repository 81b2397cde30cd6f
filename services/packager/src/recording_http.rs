//! `GET /recordings/{id}/…`: a recording's files, from the recordings store (a
//! directory or S3-compatible object storage, which every packager of a deployment
//! shares): `index.m3u8`, `{rendition}/media.m3u8`, `{rendition}/init{v}.mp4`,
//! `{rendition}/seg{n}.m4s`, `recording.mp4`. Names are parsed strictly (anything else
//! is a 404), so no request reaches outside it. Objects in S3 are streamed through the
//! packager, not redirected to a presigned URL: the URLs, their authorization (playback
//! tokens of private rooms) and the relative URIs in the playlists stay as they are,
//! and the bucket needs no public endpoint. `Range: bytes=…` is answered with 206
//! (seeking in the MP4 download).

use crate::http::HttpState;
use crate::recording::{safe_name, Storage, Unavailable};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use skylark_objstore::{GetOptions, GetRange, Key, ObjectStore, ObjectStoreExt};
use skylark_telemetry::error::json_error as error;

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

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq)]
enum Want {
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (first-last, first-, -suffix). Several ranges or a malformed
/// header: the whole object, as RFC 9110 allows a server to answer.
fn wanted(range: Option<&str>, size: u64) -> Want {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Want::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Want::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(n) if n > 0 && size > 0 => Want::Part(size - n.min(size), size),
            Ok(_) => Want::Unsatisfiable,
            Err(_) => Want::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Want::Whole;
    };
    let end = match last {
        "" => size,
        l => match l.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            _ => return Want::Whole,
        },
    };
    if start >= size {
        return Want::Unsatisfiable;
    }
    Want::Part(start, end)
}

pub async fn root_file(
    State(st): State<HttpState>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    serve(&st.recordings, &id, None, &name, &headers).await
}

pub async fn rendition_file(
    State(st): State<HttpState>,
    Path((id, rendition, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !safe_name(&rendition) || rendition.len() > 32 {
        return error(StatusCode::NOT_FOUND, "not_found", "no such rendition");
    }
    serve(&st.recordings, &id, Some(&rendition), &name, &headers).await
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the recording's storage can't be read right now: retry later",
    )
}

pub(crate) async fn serve(
    st: &Storage,
    id: &str,
    rendition: Option<&str>,
    name: &str,
    headers: &HeaderMap,
) -> Response {
    let Some(ctype) = content_type(name, rendition.is_some()) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such recording file");
    };
    let dir = match st.find(id).await {
        Ok(Some((_, dir))) => dir,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such recording: check the link (its owner lists a room's with GET /api/v1/rooms/{id}/recordings)",
            )
        }
        Err(Unavailable) => return unavailable(),
    };
    let key = Key::from(match rendition {
        Some(r) => format!("{dir}/{r}/{name}"),
        None => format!("{dir}/{name}"),
    });
    let objs = &st.objects.objects;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A range needs the size first; a whole object is one request.
    let want = match range {
        None => Ok(Ok(Want::Whole)),
        Some(r) => objs
            .head(&key)
            .await
            .map(|m| (wanted(Some(r), m.size), m.size))
            .map(|(w, size)| match w {
                Want::Unsatisfiable => Err(size),
                w => Ok(w),
            }),
    };
    let got = match want {
        Ok(Ok(Want::Part(a, b))) => {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(a..b)),
                ..GetOptions::default()
            };
            objs.get_opts(&key, opts).await
        }
        Ok(Err(size)) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "the range starts past the file's end: ask for bytes=0- or less",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Ok(Ok(_)) => objs.get(&key).await,
        Err(e) => Err(e),
    };
    let got = match got {
        Ok(g) => g,
        Err(skylark_objstore::Error::NotFound { .. }) if name == "media.m3u8" => {
            // Still recording: the `EVENT` playlist is rendered from the state.
            return event_playlist(st, &dir, rendition.unwrap_or_default()).await;
        }
        Err(skylark_objstore::Error::NotFound { .. }) => {
            let msg = if name == "recording.mp4" {
                "no download yet: the recording is still going on"
            } else {
                "no such recording file"
            };
            return error(StatusCode::NOT_FOUND, "not_found", msg);
        }
        Err(e) => {
            tracing::warn!(error = %e, key = %key, "recording file unreadable");
            return unavailable();
        }
    };
    metrics::counter!("skylark_recording_requests_total").increment(1);
    let (size, part) = (got.meta.size, got.range.clone());
    let partial = range.is_some() && (part.start, part.end) != (0, size);
    let mut r = Response::new(Body::from_stream(got.into_stream()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Playlists change while the recording grows; media files never change.
    let cache = if ctype == crate::http::PLAYLIST {
        "no-cache"
    } else {
        "public, max-age=3600"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(part.end - part.start),
    );
    if partial {
        let v = format!("bytes {}-{}/{size}", part.start, part.end.saturating_sub(1));
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    r
}

/// The `EVENT` playlist of rendition directory `rdir` of the open recording at `dir`.
async fn event_playlist(st: &Storage, dir: &str, rdir: &str) -> Response {
    let meta = match crate::recording::read_meta(st, dir).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, "not_found", "no such recording file");
        }
        Err(e) => {
            tracing::warn!(error = %e, dir, "recording state unreadable");
            return unavailable();
        }
    };
    let name = meta
        .renditions
        .keys()
        .find(|n| crate::recording::rendition_dir(n) == rdir);
    let Some(text) = name.and_then(|n| meta.media_playlist(n)) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such rendition");
    };
    metrics::counter!("skylark_recording_requests_total").increment(1);
    let mut r = Response::new(Body::from(text));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::http::PLAYLIST),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::{content_type, wanted, Want};

    #[test]
    fn byte_ranges() {
        assert_eq!(wanted(None, 10), Want::Whole);
        assert_eq!(wanted(Some("bytes=0-3"), 10), Want::Part(0, 4));
        assert_eq!(wanted(Some("bytes=4-"), 10), Want::Part(4, 10));
        assert_eq!(wanted(Some("bytes=-3"), 10), Want::Part(7, 10));
        assert_eq!(wanted(Some("bytes=-30"), 10), Want::Part(0, 10));
        assert_eq!(wanted(Some("bytes=5-99"), 10), Want::Part(5, 10));
        assert_eq!(wanted(Some("bytes=10-"), 10), Want::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 10), Want::Unsatisfiable);
        for ignored in ["bytes=0-1,4-5", "bytes=3-1", "items=0-1", "bytes=x-"] {
            assert_eq!(wanted(Some(ignored), 10), Want::Whole, "{ignored}");
        }
    }

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
