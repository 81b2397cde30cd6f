//! The web pages: `/` (live rooms), `/studio` (go live from the browser) and
//! `/watch/{room}` (the player), with their scripts and styles under
//! `/assets/{build}/…`. Everything is embedded in the binary by `build.rs` from `web/src/`
//! and the npm packages pinned in `web/package-lock.json` (hls.js, mpegts.js).
//!
//! Caching: pages are `no-cache` (revalidated with an `ETag`, the build id); assets live
//! under a prefix that changes whenever any embedded file changes, so they are immutable.
//! An asset asked for under another build's prefix (a page cached before a deploy) is
//! still served, but not cached.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The Content-Security-Policy of the pages: scripts only from this origin (no inline
/// script, no eval), media and requests to this origin and the public URL's (playback
/// URLs are built from it), blob: for hls.js/mpegts.js buffers and workers, no framing.
pub fn content_security_policy(public_url: &str) -> String {
    let public = url_origin(public_url);
    let ws = public
        .as_deref()
        .map(|o| o.replacen("http", "ws", 1))
        .unwrap_or_default();
    let public = public.unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; media-src 'self' blob: {public}; \
         connect-src 'self' {public} {ws}; worker-src 'self' blob:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an http(s) URL.
fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| format!("{scheme}://{host}"))
}

/// The page routes and `/assets/{build}/{*path}`; none under `/api`, `/whip`, `/whep`,
/// `/ws`, `/hls`, `/flv` or the ops endpoints. `public_url` goes into the pages' CSP.
pub fn router(public_url: &str) -> Router {
    let csp = HeaderValue::from_str(&content_security_policy(public_url))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let page_with = move |name: &'static str| {
        let csp = csp.clone();
        move |h: HeaderMap| {
            let csp = csp.clone();
            async move {
                let mut r = page(name, &h);
                r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
                r
            }
        }
    };
    Router::new()
        .route("/", get(page_with("index")))
        .route("/studio", get(page_with("studio")))
        .route("/studio/", get(|| async { Redirect::permanent("/studio") }))
        .route("/watch", get(|| async { Redirect::temporary("/") }))
        .route("/watch/{room}", get(page_with("watch")))
        .route("/assets/{build}/{*path}", get(asset))
}

fn lookup(table: &'static [(&'static str, &'static [u8])], name: &str) -> Option<&'static [u8]> {
    table.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

fn page(name: &str, headers: &HeaderMap) -> Response {
    let Some(body) = lookup(PAGES, name) else {
        return not_found();
    };
    let etag = format!("\"{BUILD}\"");
    let mut r = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // A watch URL may carry a viewer token: never hand it on in a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn asset(Path((build, path)): Path<(String, String)>) -> Response {
    let Some(body) = lookup(ASSETS, &path) else {
        return not_found();
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if build == BUILD {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn not_found() -> Response {
    let body = serde_json::json!({"error": {"code": "not_found", "message": "no such page"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// The Content-Type of an embedded file, by extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        router("https://live.example.com/")
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn hv(r: &Response, h: header::HeaderName) -> &str {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn pages_are_html_revalidated_and_point_at_this_build() {
        for uri in ["/", "/studio", "/watch/some-room"] {
            let r = get(uri, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(hv(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
            assert_eq!(hv(&r, header::CACHE_CONTROL), "no-cache");
            let csp = hv(&r, header::CONTENT_SECURITY_POLICY);
            for directive in [
                "default-src 'self'",
                "script-src 'self';",
                "connect-src 'self' https://live.example.com wss://live.example.com;",
                "frame-ancestors 'none'",
                "object-src 'none'",
            ] {
                assert!(csp.contains(directive), "{uri}: {directive} in {csp}");
            }
            assert!(!csp.contains("unsafe-eval"), "{csp}");
            let etag = hv(&r, header::ETAG).to_string();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            let text = std::str::from_utf8(&body).unwrap();
            assert!(
                text.contains(&format!("/assets/{BUILD}/")),
                "{uri}: asset prefix"
            );
            assert!(!text.contains("{{ASSETS}}"), "{uri}: placeholder left");
            let again = get(uri, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        }
    }

    #[test]
    fn the_csp_names_only_a_well_formed_public_origin() {
        assert_eq!(
            url_origin("http://127.0.0.1:8080/x?y"),
            Some("http://127.0.0.1:8080".into())
        );
        assert_eq!(url_origin("ftp://a"), None);
        assert_eq!(url_origin("https://a b;script-src *"), None);
        assert!(!content_security_policy("javascript:alert(1)").contains("javascript"));
    }

    #[tokio::test]
    async fn assets_are_immutable_under_this_build_only() {
        let r = get(&format!("/assets/{BUILD}/js/watch.js"), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            hv(&r, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert!(hv(&r, header::CACHE_CONTROL).contains("immutable"));
        let old = get("/assets/0123456789abcdef/js/watch.js", None).await;
        assert_eq!(old.status(), StatusCode::OK);
        assert_eq!(hv(&old, header::CACHE_CONTROL), "no-cache");
        let css = get(&format!("/assets/{BUILD}/css/skylark.css"), None).await;
        assert_eq!(hv(&css, header::CONTENT_TYPE), "text/css; charset=utf-8");
        for bad in [
            "/assets/x/../../Cargo.toml",
            "/assets/x/js/nope.js",
            "/assets/x/studio.html",
        ] {
            assert_eq!(
                get(bad, None).await.status(),
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
    }
}
