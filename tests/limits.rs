//! Limits that hold under abuse, on the real binary: a client flooding WHEP offers, or
//! WebSocket messages, is told to slow down (`429` + `Retry-After`; `error`
//! `rate_limited` and a close) while another room plays on. The clients come through a
//! trusted proxy (`SKYLARK_TRUSTED_PROXIES=127.0.0.1`), each named by the
//! `X-Forwarded-For` the proxy adds, as behind an ingress.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn whep_as(base: &str, room: &str, client: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/whep/{room}"))
        .header("x-forwarded-for", client)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap()
}

/// Sends up to 100 WHEP offers as `client(i)`; the index of the first refused with
/// `429` (every one before answered as for a room that is not live).
async fn flood(base: &str, room: &str, client: impl Fn(usize) -> String) -> usize {
    for i in 0..100 {
        match whep_as(base, room, &client(i)).await.status().as_u16() {
            429 => return i,
            409 => {}
            other => panic!("offer {i}: {other}"),
        }
    }
    panic!("100 offers from one client and none refused")
}

#[tokio::test]
async fn floods_are_slowed_per_client_while_other_rooms_play() {
    let sk = Skylark::start_with(Options {
        env: [(
            "SKYLARK_TRUSTED_PROXIES".to_string(),
            "127.0.0.1".to_string(),
        )]
        .into(),
        ..Default::default()
    })
    .await;
    let base = &sk.base;
    // A live room with a viewer, on loopback (the operator's own tools are not limited).
    let (_, live_room, key) = creator_with_room(base, "public").await;
    let (engine, _publisher) = publish(base, &live_room, &key).await;
    let viewer = playing_viewer(&engine, base, &live_room).await;
    let (_, quiet_room, _) = creator_with_room(base, "public").await;

    // One client floods offers: past its burst (30) it is refused, with a time to retry.
    // (Tokens refill at 2/s, so a slow run may see a few more pass first.)
    let first_refused = flood(base, &quiet_room, |_| "198.51.100.7".into()).await;
    assert!((30..100).contains(&first_refused), "{first_refused}");
    let r = loop {
        let r = whep_as(base, &quiet_room, "198.51.100.7").await;
        if r.status() == 429 {
            break r;
        }
    };
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another client is not slowed by it.
    assert_eq!(
        whep_as(base, &quiet_room, "198.51.100.8").await.status(),
        409
    );
    // A client can't pose as many: what it writes left of the address the proxy
    // appended is ignored.
    let first_refused = flood(base, &quiet_room, |i| format!("10.0.{i}.1, 198.51.100.20")).await;
    assert!((30..100).contains(&first_refused), "{first_refused}");

    // One WebSocket client floods messages: an error, then the server closes.
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", "198.51.100.9".parse().unwrap());
    let (mut s, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut rate_limited = false;
    for _ in 0..200 {
        if s.send(Message::Text(
            r#"{"type":"candidate","candidate":""}"#.into(),
        ))
        .await
        .is_err()
        {
            break;
        }
    }
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), s.next()).await {
        match m {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                rate_limited |= v["code"] == "rate_limited";
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(rate_limited, "the flooding WebSocket is told why");

    // The live room played on through all of it.
    let before = viewer.stats().await.unwrap().frames;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = viewer.stats().await.unwrap();
    assert!(
        after.frames >= before + 30,
        "frames {before} → {}",
        after.frames
    );
    assert_eq!(after.frames_bad_hash, 0);
}
