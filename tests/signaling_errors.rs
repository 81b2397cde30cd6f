//! Bad input at the signaling edge of a running `skylark`: every refusal has the
//! documented status and a message that says what to do; nothing crashes.

mod common;

use common::{closes, creator_with_room, next_json, rotate_key, send_json, ws, ws_send, Skylark};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const VP8_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";

async fn whip(
    base: &str,
    path: &str,
    key: Option<&str>,
    ctype: &str,
    body: String,
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", ctype)
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// POSTs to WHIP or WHEP that must be refused: path, bearer, content type, body; then the
/// status, the error code when the body must carry one, and what the body must say.
type Refusal<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    String,
    u16,
    Option<&'a str>,
    &'a str,
);

async fn assert_refused(base: &str, refusals: Vec<Refusal<'_>>) {
    for (path, key, ctype, body, status, want_code, says) in refusals {
        let (s, b) = whip(base, path, key, ctype, body).await;
        assert_eq!(s, status, "{path} ({ctype}): {b}");
        if let Some(want) = want_code {
            assert_eq!(code(&b), want, "{b}");
        }
        assert!(b.contains(says), "says {says:?}: {b}");
    }
}

/// Asserts that the server is still ready after all the bad input.
async fn assert_still_ready(base: &str) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert!(r.status().is_success(), "still ready: {}", r.status());
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["error"]["code"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn whip_and_whep_refusals() {
    let sk = Skylark::start().await;
    let base = &sk.base;
    let (token, room, key) = creator_with_room(base, "public").await;
    let (_, private, _) = creator_with_room(base, "private").await;
    let sdp = || "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
    let p = format!("/whip/{room}");
    let (k, ct) = (Some(key.as_str()), "application/sdp");
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(30_000));

    assert_refused(
        base,
        vec![
            (&p, None, ct, sdp(), 401, Some("unauthorized"), "Bearer"),
            (&p, Some("sk_live_wrong"), ct, sdp(), 401, None, ""),
            (&p, k, "text/plain", sdp(), 415, None, ""),
            (&p, k, ct, "hello".into(), 400, Some("bad_request"), ""),
            // Malformed SDP.
            (&p, k, ct, "v=0\r\nm=broken\r\n".into(), 400, None, ""),
            (
                &p,
                k,
                ct,
                VP8_OFFER.into(),
                422,
                Some("unsupported_codec"),
                "H.264",
            ),
            (&p, k, ct, huge, 413, None, ""),
            ("/whip/room_nope", k, ct, sdp(), 404, Some("not_found"), ""),
        ],
    )
    .await;

    // A rotated key stops working.
    rotate_key(base, &token, &room).await;
    // WHEP: unknown room, not live, private without token.
    let (whep, whep_private) = (format!("/whep/{room}"), format!("/whep/{private}"));
    assert_refused(
        base,
        vec![
            (&p, k, ct, VP8_OFFER.into(), 401, None, "rotated"),
            ("/whep/room_nope", None, ct, sdp(), 404, None, ""),
            (&whep, None, ct, sdp(), 409, Some("not_live"), ""),
            (&whep_private, None, ct, sdp(), 401, None, ""),
        ],
    )
    .await;

    // Session resources that don't exist.
    let c = reqwest::Client::new();
    for session in ["00ff", "..%2F..%2Fetc"] {
        let r = c
            .delete(format!("{base}/whip/{room}/{session}"))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), StatusCode::NOT_FOUND, "{session}");
    }

    // Playback discovery.
    let v = send_json(c.get(format!("{base}/api/v1/rooms/{room}/playback"))).await;
    assert_eq!(v["webrtc"]["whep_url"], format!("{base}/whep/{room}"));
    assert_eq!(v["hls"]["url"], format!("{base}/hls/{room}/index.m3u8"));
    assert_eq!(v["recommended"], "webrtc");
    assert_eq!(v["live"], false);
    let r = c
        .get(format!("{base}/api/v1/rooms/{private}/playback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    assert_still_ready(base).await;
}

#[tokio::test]
async fn websocket_refusals_and_waiting() {
    let sk = Skylark::start().await;
    let base = &sk.base;
    let (_, room, _) = creator_with_room(base, "public").await;

    // Garbage text: an error, then the server closes.
    let mut s = ws(base).await;
    s.send(Message::Text("{{{ not json".into())).await.unwrap();
    let e = next_json(&mut s).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_message"))
    );
    assert!(closes(&mut s).await);

    // Unknown message type.
    let mut s = ws(base).await;
    ws_send(&mut s, json!({"type": "dance"})).await;
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "bad_message");

    // Oversized frame: the connection is cut.
    let mut s = ws(base).await;
    let _ = s.send(Message::Text("x".repeat(200_000).into())).await;
    assert!(closes(&mut s).await);

    // Binary: refused.
    let mut s = ws(base).await;
    s.send(Message::Binary(vec![0u8; 16].into())).await.unwrap();
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "bad_message");

    // Watching an unknown room; publishing with a wrong key; offer before joining.
    let mut s = ws(base).await;
    ws_send(&mut s, json!({"type": "watch", "room": "room_nope"})).await;
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "not_found");
    ws_send(&mut s, json!({"type": "offer", "sdp": "v=0"})).await;
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "bad_state");
    let mut p = ws(base).await;
    let publish = json!({"type": "publish", "room": room, "stream_key": "sk_live_wrong"});
    ws_send(&mut p, publish).await;
    assert_eq!(next_json(&mut p).await.unwrap()["code"], "unauthorized");

    // A viewer before the publisher is told to wait.
    let mut v = ws(base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    let w = next_json(&mut v).await.unwrap();
    assert_eq!(
        (w["type"].as_str(), w["room"].as_str()),
        (Some("waiting"), Some(room.as_str()))
    );

    assert_still_ready(base).await;
}
