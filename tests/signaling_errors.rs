//! Bad input at the signaling edge of a running `skylark`: every refusal has the
//! documented status and a message that says what to do; nothing crashes.

mod common;

use common::{closes, creator_with_room, next_json, send_json, ws, Skylark};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::Value;
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
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
    let p = format!("/whip/{room}");

    let (s, b) = whip(base, &p, None, "application/sdp", sdp.clone()).await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{b}"
    );
    assert!(b.contains("Bearer"), "says how to authenticate: {b}");
    let (s, b) = whip(
        base,
        &p,
        Some("sk_live_wrong"),
        "application/sdp",
        sdp.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = whip(base, &p, Some(&key), "text/plain", sdp.clone()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");
    let (s, b) = whip(base, &p, Some(&key), "application/sdp", "hello".into()).await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{b}"
    );
    let (s, b) = whip(
        base,
        &p,
        Some(&key),
        "application/sdp",
        "v=0\r\nm=broken\r\n".into(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "malformed SDP: {b}");
    let (s, b) = whip(base, &p, Some(&key), "application/sdp", VP8_OFFER.into()).await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_codec"),
        "{b}"
    );
    assert!(b.contains("H.264"), "names the codec: {b}");
    let (s, _) = whip(
        base,
        &p,
        Some(&key),
        "application/sdp",
        format!("v=0\r\n{}", "a=x\r\n".repeat(30_000)),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, b) = whip(
        base,
        "/whip/room_nope",
        Some(&key),
        "application/sdp",
        sdp.clone(),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::NOT_FOUND, "not_found"),
        "{b}"
    );

    // A rotated key stops working.
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/api/v1/rooms/{room}/stream-key"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, b) = whip(base, &p, Some(&key), "application/sdp", VP8_OFFER.into()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("rotated"), "{b}");

    // WHEP: unknown room, not live, private without token.
    let (s, _) = whip(
        base,
        "/whep/room_nope",
        None,
        "application/sdp",
        sdp.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = whip(
        base,
        &format!("/whep/{room}"),
        None,
        "application/sdp",
        sdp.clone(),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (StatusCode::CONFLICT, "not_live"),
        "{b}"
    );
    let (_, private, _) = creator_with_room(base, "private").await;
    let (s, _) = whip(
        base,
        &format!("/whep/{private}"),
        None,
        "application/sdp",
        sdp.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Session resources that don't exist.
    let r = c
        .delete(format!("{base}/whip/{room}/00ff"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(format!("{base}/whip/{room}/..%2F..%2Fetc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

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

    // Still healthy after all that.
    assert!(c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
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
    s.send(Message::Text(r#"{"type":"dance"}"#.into()))
        .await
        .unwrap();
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
    s.send(Message::Text(
        r#"{"type":"watch","room":"room_nope"}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "not_found");
    s.send(Message::Text(r#"{"type":"offer","sdp":"v=0"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut s).await.unwrap()["code"], "bad_state");
    let mut p = ws(base).await;
    p.send(Message::Text(
        format!(r#"{{"type":"publish","room":"{room}","stream_key":"sk_live_wrong"}}"#).into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut p).await.unwrap()["code"], "unauthorized");

    // A viewer before the publisher is told to wait.
    let mut v = ws(base).await;
    v.send(Message::Text(
        format!(r#"{{"type":"watch","room":"{room}"}}"#).into(),
    ))
    .await
    .unwrap();
    let w = next_json(&mut v).await.unwrap();
    assert_eq!(
        (w["type"].as_str(), w["room"].as_str()),
        (Some("waiting"), Some(room.as_str()))
    );

    let c = reqwest::Client::new();
    assert!(c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
}
