//! Picking a quality: WebRTC viewers of a simulcast publisher get the layer their
//! connection carries. One viewer watches through a user-space UDP proxy whose
//! bottleneck drops to less than the top layer needs; it moves down a layer (the SFU
//! reads the loss in its receiver reports) while an unimpaired viewer stays on the top
//! layer, and moves back up once the bottleneck is gone. Through the same proxy losing
//! packets at random, a viewer gets every frame by retransmission. Real peers over real
//! UDP: the load generator's str0m publisher (three layers) and viewers, and `skylark`.

mod common;
#[path = "common/simulcast.rs"]
mod simulcast;

use common::udp_proxy::UdpProxy;
use common::*;
use skylark_loadgen::peer::ViewerStats;
use skylark_loadgen::{Engine, EngineConfig, Viewer};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The bottleneck: under the top layer (600 kbit/s plus audio), over the middle one
/// (200 kbit/s plus audio).
const BOTTLENECK_KBPS: u64 = 380;

async fn stats(v: &Viewer) -> ViewerStats {
    v.stats().await.expect("viewer stats")
}

/// Waits up to `within` for `v`'s layer to satisfy `ok`; the time it took.
async fn until_layer(v: &Viewer, within: Duration, ok: impl Fn(u8) -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if stats(v).await.layer.is_some_and(&ok) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A `skylark` whose WebRTC media port is known, and a [`UdpProxy`] in front of it (for
/// the viewer a test impairs).
async fn behind_a_proxy() -> (Skylark, UdpProxy) {
    let media_port = free_port();
    let sk = Skylark::start_with(Options {
        env: [(
            "SKYLARK_RTC_UDP_ADDR".to_string(),
            format!("127.0.0.1:{media_port}"),
        )]
        .into(),
        ..Options::default()
    })
    .await;
    let proxy = UdpProxy::start(format!("127.0.0.1:{media_port}").parse().unwrap()).await;
    (sk, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_a_slow_link_moves_down_a_layer_and_back_up() {
    let (sk, proxy) = behind_a_proxy().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let mut publisher =
        simulcast::SimulcastPublisher::start(&format!("{}/whip/{room}", sk.base), &key).await;
    publisher.wait_connected(Duration::from_secs(10)).await;

    let whep = format!("{}/whep/{room}", sk.base);
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    let clear = engine.view(&whep, None).await.expect("WHEP join");
    let slow = engine
        .view_via(&whep, None, Some(proxy.addr))
        .await
        .expect("WHEP join through the proxy");
    for v in [&clear, &slow] {
        v.wait_playing(Duration::from_secs(10))
            .await
            .expect("viewer playing");
        assert!(
            until_layer(v, Duration::from_secs(5), |l| l == 0)
                .await
                .is_some(),
            "both viewers start on the top layer: {:?}",
            stats(v).await
        );
    }
    let clear_switches = stats(&clear).await.layer_switches;

    proxy.limit_kbps(BOTTLENECK_KBPS);
    let down = until_layer(&slow, Duration::from_secs(15), |l| l > 0).await;
    let s = stats(&slow).await;
    println!(
        "bottleneck {BOTTLENECK_KBPS} kbit/s: the slow viewer moved down after {down:?} to layer {:?} ({} packets dropped by the bottleneck)",
        s.layer,
        proxy.dropped()
    );
    assert!(
        down.is_some(),
        "the viewer behind the bottleneck moves down a layer: {s:?}"
    );
    assert!(proxy.dropped() > 0, "the bottleneck dropped packets");
    // It keeps playing while the bottleneck lasts: a probe back up to the top layer
    // may freeze it for a report or two, never for most of the time.
    let before = stats(&slow).await.frames;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let played = stats(&slow).await.frames - before;
    println!("behind the bottleneck: {played} frames in 6 s (30 fps published)");
    assert!(
        played >= 90,
        "the slow viewer keeps playing: {played} frames in 6 s"
    );

    proxy.limit_kbps(0);
    // Back on the top layer to stay: a probe made just before the bottleneck went
    // would fall back within a report or two, the move back up holds.
    let start = Instant::now();
    let up = loop {
        let on_top_for = until_layer(&slow, Duration::from_secs(40), |l| l == 0).await;
        assert!(
            on_top_for.is_some() && start.elapsed() < Duration::from_secs(40),
            "the viewer moves back up once its link carries the top layer: {:?}",
            stats(&slow).await
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        if stats(&slow).await.layer == Some(0) {
            break start.elapsed();
        }
    };
    println!("bottleneck gone: the slow viewer was back on the top layer for good after {up:?}");

    let c = stats(&clear).await;
    assert_eq!(
        c.layer,
        Some(0),
        "the unimpaired viewer stays on top: {c:?}"
    );
    assert_eq!(
        c.layer_switches, clear_switches,
        "the unimpaired viewer never left the top layer: {c:?}"
    );
    assert_eq!(c.frames_bad_hash, 0);
    let s = stats(&slow).await;
    assert_eq!(
        s.frames_bad_hash, 0,
        "every switch at a clean keyframe: {s:?}"
    );
    // Down and back up, counted (the metric is refreshed every second or so).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let switches = metric_sum(&sk.metrics().await, "skylark_sfu_layer_switches_total");
        if switches >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "switches counted: {switches}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    publisher.stop().await;
}

/// A viewer picks a layer itself through the WHEP layer resource (the layer extension
/// of draft-ietf-wish-whep): the chosen layer holds whatever the link does, `{}` goes
/// back to automatic, which climbs back to the top layer on a clean link. A WebSocket
/// viewer asks the same with a `layer` message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_chooses_a_layer_and_goes_back_to_auto() {
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let mut publisher =
        simulcast::SimulcastPublisher::start(&format!("{}/whip/{room}", sk.base), &key).await;
    publisher.wait_connected(Duration::from_secs(10)).await;
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    let v = engine
        .view(&format!("{}/whep/{room}", sk.base), None)
        .await
        .expect("WHEP join");
    v.wait_playing(Duration::from_secs(10))
        .await
        .expect("viewer playing");
    assert!(until_layer(&v, Duration::from_secs(5), |l| l == 0)
        .await
        .is_some());

    let http = reqwest::Client::new();
    let layer_url = format!("{}/layer", v.location().expect("WHEP Location"));
    let state: serde_json::Value = http
        .get(&layer_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rids: Vec<&str> = state["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["encodingId"].as_str())
        .collect();
    assert_eq!(rids, ["h", "m", "l"], "largest first: {state}");
    assert_eq!(state["layers"][0]["height"], 240, "{state}");
    assert_eq!(state["following"], "h", "{state}");
    assert_eq!(state["choice"], "auto", "{state}");

    // Choose the smallest layer: the viewer moves there and stays, on a clean link.
    let r = http
        .post(&layer_url)
        .json(&serde_json::json!({"encodingId": "l"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&state["choice"], &state["following"]),
        (&"l".into(), &"l".into())
    );
    let moved = until_layer(&v, Duration::from_secs(10), |l| l == 2).await;
    assert!(
        moved.is_some(),
        "on the chosen layer: {:?}",
        stats(&v).await
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        stats(&v).await.layer,
        Some(2),
        "a chosen layer holds: automatic would have moved up by now"
    );

    // A layer the room does not send is refused with what to do.
    let r = http
        .post(&layer_url)
        .json(&serde_json::json!({"encodingId": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("layers listed"), "{body}");

    // Back to automatic: a clean link climbs back to the top layer.
    let r = http
        .post(&layer_url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let state: serde_json::Value = r.json().await.unwrap();
    assert_eq!(state["choice"], "auto", "{state}");
    let up = until_layer(&v, Duration::from_secs(30), |l| l == 0).await;
    println!("back to auto: on the top layer again after {up:?}");
    assert!(up.is_some(), "auto climbs back up: {:?}", stats(&v).await);
    let s = stats(&v).await;
    assert_eq!(s.frames_bad_hash, 0, "{s:?}");

    // The WebSocket front door: `layer` answers `layers` for the connection's session.
    let mut ws = ws(&sk.base).await;
    ws_send(&mut ws, serde_json::json!({"type": "watch", "room": room})).await;
    let mut offer = str0m::Rtc::new(std::time::Instant::now());
    let mut api = offer.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::RecvOnly,
        None,
        None,
        None,
    );
    let (sdp, _) = api.apply().expect("an offer");
    ws_send(
        &mut ws,
        serde_json::json!({"type": "offer", "sdp": sdp.to_sdp_string()}),
    )
    .await;
    ws_send(&mut ws, serde_json::json!({"type": "layer", "choice": "m"})).await;
    let layers = loop {
        let m = next_json(&mut ws).await.expect("a reply");
        if m["type"] == "layers" || m["type"] == "error" {
            break m;
        }
    };
    assert_eq!(layers["type"], "layers", "{layers}");
    assert_eq!(layers["choice"], "m", "{layers}");
    assert_eq!(
        layers["layers"].as_array().map(Vec::len),
        Some(3),
        "{layers}"
    );
    publisher.stop().await;
}

/// NACK recovery, through the same proxy losing 3 % of what the SFU sends one viewer at
/// random: the viewer asks for what it missed (NACK) and the SFU resends it from its
/// retransmission cache, so every frame since the first keyframe arrives, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_a_lossy_link_gets_every_frame_by_retransmission() {
    let (sk, proxy) = behind_a_proxy().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (engine, _publisher) = publish(&sk.base, &room, &key).await;
    let v = engine
        .view_via(&format!("{}/whep/{room}", sk.base), None, Some(proxy.addr))
        .await
        .expect("WHEP join through the proxy");
    v.wait_playing(Duration::from_secs(10))
        .await
        .expect("viewer playing");
    proxy.lose_percent(3.0);
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.lose_percent(0.0);
    // What was asked for in the last moments has time to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, _) = v.close().await;
    let s = s.expect("viewer stats");
    let nacks = metric_sum(
        &sk.metrics().await,
        "skylark_sfu_nacks_from_subscribers_total",
    );
    println!(
        "3 % loss for 8 s: {} packets lost on the link, {nacks} NACKs received, {} frames, {} missing, {} flagged discontinuous",
        proxy.dropped(),
        s.frames,
        s.frames_missing,
        s.discontinuities
    );
    assert!(
        proxy.dropped() > 20,
        "the link lost packets: {}",
        proxy.dropped()
    );
    assert!(nacks > 0.0, "the viewer asked for them");
    assert_eq!(s.frames_bad_hash, 0, "payloads intact: {s:?}");
    assert_eq!(
        s.frames_missing, 0,
        "every frame since the first keyframe: {s:?}"
    );
    assert!(s.frames >= 200, "about 30 fps for 9 s: {s:?}");
}
