//! A publisher cannot outlive its credential: a WebSocket publisher that said `publish`
//! before its key was rotated is refused when it offers and its connection closes; and
//! when the `end_publish` event that normally cuts publishers is lost, the SFU (for
//! WHIP) and signaling (for p2p broadcasters) still cut them within seconds, because
//! they re-check the grant with the room directory. A WebSocket publisher of an SFU
//! room that another publish with the same key replaces is told so and closed; a WHIP
//! publisher replaced so sees its WebRTC connection closed.

mod common;

use common::*;
use serde_json::json;
use skylark_bus::placement;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A real publisher offer (video + audio, sendonly), as a studio page would send.
fn sendonly_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// The messages a WebSocket client gets until the server closes it (at most `within`).
async fn until_closed<S>(s: &mut S, within: Duration) -> Vec<serde_json::Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use futures_util::StreamExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => panic!("the connection is still open after {within:?}; got {got:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return got,
            Ok(Some(Ok(Message::Text(t)))) => {
                got.push(serde_json::from_str(t.as_str()).unwrap_or_default())
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn websocket_publisher_rotated_before_its_offer_is_refused_and_closed() {
    let sk = Skylark::start().await;
    let base = &sk.base;
    let (token, room, key) = creator_with_room(base, "public").await;

    let mut p = ws(base).await;
    ws_send(
        &mut p,
        json!({"type": "publish", "room": room, "stream_key": key}),
    )
    .await;
    let joined = next_json(&mut p).await.unwrap();
    assert_eq!(joined["type"], "room", "{joined}");

    rotate_key(base, &token, &room).await;
    ws_send(&mut p, json!({"type": "offer", "sdp": sendonly_offer()})).await;
    let got = until_closed(&mut p, Duration::from_secs(10)).await;
    assert!(
        got.iter().all(|m| m["type"] != "answer"),
        "no answer for a rotated key: {got:?}"
    );
    assert!(
        got.iter().any(|m| m["code"] == "publish_ended"),
        "told why: {got:?}"
    );
    // The refused offer made no session.
    assert!(!is_live(base, &room).await);
}

/// A WebSocket publisher of an SFU room replaced by a new publish with the same key
/// (a reconnect, another tab): the SFU closes its session, and signaling tells it why
/// (`publish_taken_over`, as in p2p rooms) and closes its connection at once instead
/// of leaving it open until its idle timeout (60 s).
#[tokio::test]
async fn websocket_publisher_replaced_by_the_same_key_is_told_and_closed() {
    let sk = Skylark::start().await;
    let base = &sk.base;
    let (_token, room, key) = creator_with_room(base, "public").await;
    let publish = json!({"type": "publish", "room": room, "stream_key": key});
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let mut p = ws(base).await;
        ws_send(&mut p, publish.clone()).await;
        let joined = next_json(&mut p).await.unwrap();
        assert_eq!(
            (joined["type"].as_str(), joined["mode"].as_str()),
            (Some("room"), Some("sfu")),
            "{joined}"
        );
        ws_send(&mut p, json!({"type": "offer", "sdp": sendonly_offer()})).await;
        let answer = next_json(&mut p).await.unwrap();
        assert_eq!(answer["type"], "answer", "{answer}");
        publishers.push(p);
    }
    let (mut first, mut second) = (publishers.remove(0), publishers.remove(0));
    let got = until_closed(&mut first, Duration::from_secs(5)).await;
    let told = got.iter().find(|m| m["type"] == "error");
    assert_eq!(
        told.map(|m| m["code"].clone()),
        Some(json!("publish_taken_over")),
        "{got:?}"
    );
    // Only the replaced one: the new publisher is not told anything of the kind.
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_secs(1), next_json(&mut second)).await
    {
        assert_ne!(m["type"], "error", "the new publisher was cut: {m}");
    }
}

/// A WHIP publisher replaced by a new publish with the same key (OBS reconnecting, a
/// second encoder): the SFU ends its WebRTC connection with DTLS close_notify, so the
/// client learns at once instead of when its consent checks time out (20-30 s), and
/// its WHIP resource takes no more candidates.
#[tokio::test]
async fn whip_publisher_replaced_by_the_same_key_sees_its_connection_closed() {
    let sk = Skylark::start().await;
    let base = &sk.base;
    let (_token, room, key) = creator_with_room(base, "public").await;
    let (_first_engine, first) = publish(base, &room, &key).await;
    let (_second_engine, second) = publish(base, &room, &key).await;

    let within = Duration::from_secs(5);
    let deadline = Instant::now() + within;
    loop {
        let s = first.stats().await.unwrap();
        match s.failure {
            Some(skylark_loadgen::FailureCause::Closed) => break,
            None => {}
            Some(other) => panic!("the replaced publisher failed otherwise ({other}): {s:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the replaced publisher's connection is still up after {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let resource = first.location().expect("a WHIP resource").clone();
    let patch = reqwest::Client::new()
        .patch(resource.clone())
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404, "PATCH of the replaced session");
    // DELETE stays idempotent: the session's tombstone answers it (placement::SessionRecord).
    let delete = reqwest::Client::new()
        .delete(resource)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200, "DELETE of the replaced session");

    let s = second.stats().await.unwrap();
    assert!(
        s.connected && s.failure.is_none(),
        "the new publisher was cut: {s:?}"
    );
}

/// api on one bus prefix, signaling and the SFU on another: every `end_publish` the API
/// sends is lost. Rotating the key (WHIP publisher, SFU room) and deleting the room
/// (WebSocket p2p broadcaster) must still cut the publishers, by the grant re-checks.
#[tokio::test]
async fn stale_publishers_are_cut_when_the_end_publish_event_is_lost() {
    let Some(redis) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let media_prefix = format!("skylark-test-{}:", unique_id());
    let shared = scale_out_env(
        &redis,
        api_grpc,
        dir.path(),
        &[("SKYLARK_REDIS_PREFIX", media_prefix.clone())],
    );
    let lost_prefix = format!("skylark-test-{}-lost:", unique_id());
    let api = start_api(
        &|extra: &[(&str, String)]| {
            let mut e = shared(extra);
            e.insert("SKYLARK_REDIS_PREFIX".into(), lost_prefix.clone());
            e
        },
        api_grpc,
        dir.path(),
    )
    .await;
    let sfu = start_sfu(&shared, dir.path()).await;
    let signaling = start_target("signaling", shared(&[]), dir.path(), "signaling").await;
    let bus = connect_bus(&redis, media_prefix).await;

    // WHIP publisher of an SFU room, live on the SFU.
    let (token, room, key) = creator_with_room(&api.base, "public").await;
    let (_engine, _publisher) = publish(&signaling.base, &room, &key).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while placement::origin(&bus, &room).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the room went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A p2p room's broadcaster on the WebSocket.
    let v = create_room(&api.base, &token, json!({"title": "p2p", "mode": "p2p"})).await;
    let (p2p_room, p2p_key) = (
        v["room"]["id"].as_str().unwrap().to_string(),
        v["stream_key"].as_str().unwrap().to_string(),
    );
    let mut broadcaster = ws(&signaling.base).await;
    let publish = json!({"type": "publish", "room": p2p_room, "stream_key": p2p_key});
    ws_send(&mut broadcaster, publish).await;
    let joined = next_json(&mut broadcaster).await.unwrap();
    assert_eq!(
        (joined["type"].as_str(), joined["live"].as_bool()),
        (Some("room"), Some(true)),
        "{joined}"
    );

    let cut_at = Instant::now();
    rotate_key(&api.base, &token, &room).await;
    let delete = reqwest::Client::new().delete(format!("{}/api/v1/rooms/{p2p_room}", api.base));
    let status = status_as(delete, &token).await;
    assert!(status.is_success(), "p2p room deleted: {status}");

    // Nothing told them (the events went to another prefix); the re-checks must.
    let got = until_closed(&mut broadcaster, Duration::from_secs(10)).await;
    assert!(
        got.iter().any(|m| m["code"] == "publish_ended"),
        "the broadcaster is told why: {got:?}"
    );
    let broadcaster_cut = cut_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while placement::origin(&bus, &room).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the WHIP publisher on a rotated key is still live 10 s later; SFU log:\n{}",
            sfu.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let whip_cut = cut_at.elapsed();
    assert!(
        sfu.metrics()
            .await
            .contains("skylark_sfu_publishers_cut_total{reason=\"stale_grant\"} 1"),
        "counted"
    );
    println!(
        "[figures] end_publish lost: WHIP publisher cut after {whip_cut:?}, p2p broadcaster after {broadcaster_cut:?}"
    );
}
