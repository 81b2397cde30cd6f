//! Private rooms are private on HLS and FLV too: a live private room's playlists,
//! segments and FLV (HTTP and WebSocket) are refused without a playback token, with a
//! token of another room, an expired or a forged one, and served with the token from
//! `/playback` (which the playlists then carry on every URI, so ffprobe plays the plain
//! URL). A public room is served without a token. A packager that can't learn a room's
//! visibility refuses (503) rather than serve.

mod common;

use common::*;
use serde_json::{json, Value};
use skylark_auth::PlaybackTokens;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "playback-auth-test-secret-playback-auth-test";

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

/// The status and `{error:{code,message}}` of a refused request.
async fn refused(url: &str) -> (u16, String, String) {
    let r = get(url).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().into(),
        v["error"]["message"].as_str().unwrap_or_default().into(),
    )
}

/// The status a WebSocket upgrade of `url` gets (101 when it opens).
async fn ws_status(url: &str) -> u16 {
    let url = url.replacen("http", "ws", 1);
    match tokio_tungstenite::connect_async(url).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("WebSocket: {e}"),
    }
}

async fn playback(base: &str, room: &str, token: Option<&str>) -> Value {
    let c = reqwest::Client::new();
    let mut req = c.get(format!("{base}/api/v1/rooms/{room}/playback"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "/playback of {room}");
    r.json().await.unwrap()
}

/// Polls until `url` answers 200 with a body for which `done` holds.
async fn wait_text(url: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let r = get(url).await;
        if r.status() == 200 {
            let t = r.text().await.unwrap();
            if done(&t) {
                return t;
            }
        }
        assert!(Instant::now() < deadline, "{what} within 25 s ({url})");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_a_playback_token_on_hls_and_flv() {
    let sk = Skylark::start_with(Options {
        env: [("SKYLARK_JWT_SECRET".to_string(), SECRET.to_string())].into(),
        ..Default::default()
    })
    .await;
    let base = &sk.base;
    let (owner, room, key) = creator_with_room(base, "private").await;
    let (owner2, other_room, _) = creator_with_room(base, "private").await;
    let (_, public_room, public_key) = creator_with_room(base, "public").await;
    let (_e1, _p1) = publish(base, &room, &key).await;
    let (_e2, _p2) = publish(base, &public_room, &public_key).await;

    // /playback with a viewer token: HLS and FLV URLs carrying a playback token.
    let viewer = viewer_token(base, &owner, &room).await;
    let p = playback(base, &room, Some(&viewer)).await;
    let hls_url = p["hls"]["url"].as_str().unwrap().to_string();
    let flv_url = p["flv"]["url"].as_str().unwrap().to_string();
    let (hls_plain, token) = hls_url.split_once("?token=").expect("tokened HLS URL");
    assert_eq!(hls_plain, format!("{base}/hls/{room}/index.m3u8"));
    assert_eq!(flv_url, format!("{base}/flv/{room}.flv?token={token}"));
    let hls = format!("{base}/hls/{room}");
    let flv = format!("{base}/flv/{room}.flv");

    // Served with it; every URI in the playlists carries it.
    let mv = wait_text(&hls_url, "the private room's multivariant playlist", |t| {
        t.contains("#EXT-X-STREAM-INF")
    })
    .await;
    assert!(
        mv.lines()
            .filter(|l| l.starts_with("media.m3u8"))
            .all(|l| l.contains(&format!("token={token}")))
            && mv.contains("media.m3u8"),
        "{mv}"
    );
    let media = wait_text(
        &format!("{hls}/media.m3u8?token={token}"),
        "a complete segment",
        |t| t.contains("#EXTINF"),
    )
    .await;
    let uris: Vec<&str> = media
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .chain(
            media
                .split("URI=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next()),
        )
        .collect();
    assert!(uris.len() >= 3, "{media}");
    for u in &uris {
        assert!(u.ends_with(&format!("?token={token}")), "{u} in\n{media}");
    }
    let segment = media.lines().find(|l| l.starts_with("seg")).unwrap();
    let init = media
        .split("#EXT-X-MAP:URI=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    for file in [init, segment] {
        let r = get(&format!("{hls}/{file}")).await;
        assert_eq!(r.status(), 200, "{file}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // A blocking reload keeps the token in the playlist it returns.
    let msn: u64 = media
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    let blocked = get(&format!("{hls}/media.m3u8?_HLS_msn={msn}&token={token}")).await;
    assert_eq!(blocked.status(), 200);
    assert!(blocked
        .text()
        .await
        .unwrap()
        .contains(&format!(".m4s?token={token}")));
    let r = get(&flv_url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/x-flv");
    drop(r);
    assert_eq!(ws_status(&flv_url).await, 101, "WS-FLV with the token");

    // Refused without it: 401 saying where to get a URL.
    let segment_plain = segment.split('?').next().unwrap();
    for url in [
        format!("{hls}/index.m3u8"),
        format!("{hls}/media.m3u8"),
        format!("{hls}/media.m3u8?_HLS_msn={msn}"),
        format!("{hls}/{segment_plain}"),
        format!("{hls}/init.mp4"),
        flv.clone(),
    ] {
        let (status, code, message) = refused(&url).await;
        assert_eq!(status, 401, "{url}");
        assert_eq!(code, "unauthorized", "{url}");
        assert!(
            message.contains(&format!("/api/v1/rooms/{room}/playback"))
                && message.contains("viewer token"),
            "{url}: {message}"
        );
    }
    assert_eq!(ws_status(&flv).await, 401, "WS-FLV without a token");

    // A token of another room: 403.
    let other_viewer = viewer_token(base, &owner2, &other_room).await;
    let other = playback(base, &other_room, Some(&other_viewer)).await;
    let other_token = other["hls"]["url"]
        .as_str()
        .unwrap()
        .split_once("?token=")
        .unwrap()
        .1
        .to_string();
    // A token of another room: 403. Expired (signed with the deployment's secret, so only
    // the time is wrong): 401 saying so.
    let expired = PlaybackTokens::new(SECRET.as_bytes()).issue_until(&room, 0, now_s() - 5);
    for (t, status, code, says) in [
        (&other_token, 403, "forbidden", "another room"),
        (&expired, 401, "token_expired", "expired"),
    ] {
        for url in [
            format!("{hls}/index.m3u8?token={t}"),
            format!("{hls}/{segment_plain}?token={t}"),
            format!("{flv}?token={t}"),
        ] {
            let (got, got_code, message) = refused(&url).await;
            assert_eq!((got, got_code.as_str()), (status, code), "{url}");
            assert!(message.contains(says), "{message}");
        }
        assert_eq!(ws_status(&format!("{flv}?token={t}")).await, status);
    }

    // Forged: the right room and a later expiry on someone else's key; garbage.
    let forged = PlaybackTokens::new(b"not the deployment's secret, not at all").issue_until(
        &room,
        0,
        now_s() + 3600,
    );
    for t in [forged.as_str(), "garbage", &"x".repeat(5000)] {
        let (status, code, _) = refused(&format!("{hls}/index.m3u8?token={t}")).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{t:.40}");
    }
    // The anonymous /playback of a private room is refused before any URL is handed out.
    let r = get(&format!("{base}/api/v1/rooms/{room}/playback")).await;
    assert_eq!(r.status(), 401);

    // ffprobe (like ffplay) plays the plain /playback URL: the token rides along.
    if Command::new("ffprobe").arg("-version").output().is_ok() {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "compact",
            ])
            .arg(&hls_url)
            .output()
            .unwrap();
        let probe = String::from_utf8_lossy(&out.stdout);
        assert!(
            probe.contains("codec_name=h264"),
            "{probe}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        skip("ffprobe (Debian package ffmpeg) not installed: run scripts/test");
    }

    // A public room: open without a token, and /playback hands out plain URLs.
    let p = playback(base, &public_room, None).await;
    assert_eq!(
        p["hls"]["url"],
        format!("{base}/hls/{public_room}/index.m3u8")
    );
    assert_eq!(p["flv"]["url"], format!("{base}/flv/{public_room}.flv"));
    wait_text(
        &format!("{base}/hls/{public_room}/media.m3u8"),
        "the public room's segments",
        |t| t.contains("#EXTINF") && !t.contains("token="),
    )
    .await;
    let r = get(&format!("{base}/flv/{public_room}.flv")).await;
    assert_eq!(r.status(), 200);
    drop(r);
    assert_eq!(
        ws_status(&format!("{base}/flv/{public_room}.flv")).await,
        101
    );
    // A stray token of another room doesn't close a public room.
    let r = get(&format!(
        "{base}/hls/{public_room}/index.m3u8?token={other_token}"
    ))
    .await;
    assert_eq!(r.status(), 200);

    // The owner revokes viewer tokens: the old viewer token opens nothing new, and the
    // playback token minted from it stops within the packager's cache time (10 s).
    let c = reqwest::Client::new();
    let revoke = c.post(format!("{base}/api/v1/rooms/{room}/viewer-tokens/revoke"));
    assert_eq!(status_as(revoke, &owner).await, 204);
    let playback_url = format!("{base}/api/v1/rooms/{room}/playback");
    assert_eq!(
        status_as(c.get(&playback_url), &viewer).await,
        403,
        "/playback with a revoked viewer token"
    );
    let r = c
        .post(format!("{base}/whep/{room}"))
        .bearer_auth(&viewer)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "WHEP with a revoked viewer token");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, code, message) = refused(&hls_url).await;
        if status == 403 {
            assert_eq!(code, "token_revoked", "{message}");
            break;
        }
        assert_eq!(
            status, 200,
            "the old playback token until the cache expires"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "a revoked playback token still plays"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        ws_status(&flv_url).await,
        403,
        "WS-FLV with a revoked token"
    );
    let fresh = viewer_token(base, &owner, &room).await;
    let p = playback(base, &room, Some(&fresh)).await;
    let fresh_hls = p["hls"]["url"].as_str().unwrap().to_string();
    assert_eq!(get(&fresh_hls).await.status(), 200, "a token issued after");
    // Changing the visibility revokes too.
    for visibility in ["unlisted", "private"] {
        let patch = c
            .patch(format!("{base}/api/v1/rooms/{room}"))
            .json(&json!({"visibility": visibility}));
        assert_eq!(status_as(patch, &owner).await, 200);
    }
    assert_eq!(
        status_as(c.get(&playback_url), &fresh).await,
        403,
        "a token from before a visibility change"
    );

    // Rooms that don't exist: 404, as before.
    assert_eq!(
        refused(&format!("{base}/hls/room_nope/index.m3u8")).await.0,
        404
    );
    assert_eq!(refused(&format!("{base}/flv/room_nope.flv")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packager_that_cannot_reach_the_directory_fails_closed() {
    // Nothing listens on port 1: every visibility lookup fails.
    let packager = Skylark::start_with(Options {
        target: Some("packager"),
        env: [
            (
                "SKYLARK_API_GRPC_URL".to_string(),
                "http://127.0.0.1:1".to_string(),
            ),
            ("SKYLARK_JWT_SECRET".to_string(), SECRET.to_string()),
        ]
        .into(),
        ..Default::default()
    })
    .await;
    let token = PlaybackTokens::new(SECRET.as_bytes()).issue_until("room_x", 0, now_s() + 600);
    for url in [
        format!("{}/hls/room_x/index.m3u8", packager.base),
        format!("{}/hls/room_x/index.m3u8?token={token}", packager.base),
        format!("{}/flv/room_x.flv", packager.base),
    ] {
        let (status, code, message) = refused(&url).await;
        assert_eq!((status, code.as_str()), (503, "unavailable"), "{url}");
        assert!(message.contains("retry"), "{message}");
    }
}

/// Two packagers on Redis: the one not holding the room checks the token too, passes the
/// request on with it, and the playlist it relays carries the token once per URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_through_a_packager_that_passes_requests_on() {
    let Some(redis) = redis_url() else { return };
    let l = TwoPackagers::start(&redis).await;
    let (owner, room, key) = creator_with_room(&l.api.base, "private").await;
    let (_engine, _publisher) = publish(&l.sig.base, &room, &key).await;
    let viewer = viewer_token(&l.api.base, &owner, &room).await;
    let p = playback(&l.sig.base, &room, Some(&viewer)).await;
    let token = p["hls"]["url"]
        .as_str()
        .unwrap()
        .split_once("?token=")
        .unwrap()
        .1
        .to_string();

    let mut relayed = 0;
    for pk in &l.packagers {
        let url = format!("{}/hls/{room}/media.m3u8?token={token}", pk.base);
        let media = wait_text(&url, "segments from each packager", |t| {
            t.contains("#EXTINF")
        })
        .await;
        let r = get(&url).await;
        relayed += usize::from(r.headers().contains_key("x-skylark-packager"));
        let segment = media.lines().find(|l| l.starts_with("seg")).unwrap();
        // Checked and rewritten by both packagers: still one token per URI.
        for line in media
            .lines()
            .filter(|l| l.contains(".m4s") || l.contains(".mp4"))
        {
            assert_eq!(line.matches("token=").count(), 1, "{media}");
        }
        let seg = get(&format!("{}/hls/{room}/{segment}", pk.base)).await;
        assert_eq!(seg.status(), 200, "{segment} from {}", pk.base);
        let plain = segment.split('?').next().unwrap();
        let (status, ..) = refused(&format!("{}/hls/{room}/{plain}", pk.base)).await;
        assert_eq!(status, 401, "no token, on either packager");
        let r = get(&format!("{}/flv/{room}.flv?token={token}", pk.base)).await;
        assert_eq!(r.status(), 200, "FLV from {}", pk.base);
    }
    assert_eq!(
        relayed, 1,
        "one packager holds the room, the other passes requests on"
    );
}
