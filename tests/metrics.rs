//! Metrics stay internal: `/metrics` answers only on the internal listener
//! (`SKYLARK_INTERNAL_ADDR`), for the all-in-one binary and a single-service target; junk
//! methods and paths mint no new series; a room that has been live (private, with a real
//! WHIP publisher and a WHEP viewer) leaves no trace of its id in the metrics.

mod common;

use common::*;
use std::time::{Duration, Instant};

async fn status(method: &str, url: &str) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A GET of `path` answers `answer` and is counted; public `/metrics` is 404, internal is
/// Prometheus text with `want`; probes on both.
async fn assert_internal_only(sk: &Skylark, (path, answer): (&str, u16), want: &str) {
    let url = format!("{}{path}", sk.base);
    assert_eq!(status("GET", &url).await, answer, "{url}");
    assert_eq!(status("GET", &format!("{}/metrics", sk.base)).await, 404);
    let text = sk.metrics().await;
    assert!(text.contains(want), "{want} missing:\n{text}");
    for url in [&sk.base, &sk.internal] {
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(status("GET", &format!("{url}{probe}")).await, 200, "{url}");
        }
    }
    // The internal port serves nothing else.
    assert_eq!(status("GET", &format!("{}/studio", sk.internal)).await, 404);
}

/// The label sets of `name` in Prometheus text.
fn series(text: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

#[tokio::test]
async fn all_in_one_serves_metrics_on_the_internal_port_only() {
    let sk = Skylark::start().await;
    let rooms = ("/api/v1/rooms", 200);
    assert_internal_only(&sk, rooms, "skylark_http_requests_total").await;
}

#[tokio::test]
async fn a_single_service_target_serves_metrics_on_the_internal_port_only() {
    let sk = Skylark::start_with(Options {
        target: Some("packager"),
        ..Default::default()
    })
    .await;
    // A packager alone has no room directory to ask whether the room is private, so
    // it fails closed; any answer counts as a request here.
    let playlist = ("/hls/nope/index.m3u8", 503);
    assert_internal_only(&sk, playlist, "skylark_http_requests_total").await;
}

#[tokio::test]
async fn junk_methods_and_paths_make_no_new_series() {
    let sk = Skylark::start().await;
    let (_, room, _) = creator_with_room(&sk.base, "public").await;
    status("BREW", &format!("{}/junk-one/x", sk.base)).await;
    status("BREW", &format!("{}/api/v1/rooms/{room}", sk.base)).await;
    let before = series(&sk.metrics().await, "skylark_http_requests_total");
    status("TEAPOT", &format!("{}/junk-two/y", sk.base)).await;
    status("PROPFIND", &format!("{}/api/v1/rooms/{room}", sk.base)).await;
    status("GET", &format!("{}/junk-three/{room}", sk.base)).await;
    let after = series(&sk.metrics().await, "skylark_http_requests_total");
    let text = after.join("\n");
    for junk in ["BREW", "TEAPOT", "PROPFIND", "junk-", &room] {
        assert!(!text.contains(junk), "{junk} is a label value:\n{text}");
    }
    assert!(text.contains(r#"method="OTHER""#), "{text}");
    // A GET of a new unmatched path may add its status once; junk methods add nothing.
    let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.iter()
            .all(|s| s.contains(r#"method="GET""#) && s.contains(r#"route="unmatched""#)),
        "new series: {new:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_id_in_metrics_after_a_room_has_been_live() {
    let sk = Skylark::start().await;
    let (token, room, key) = creator_with_room(&sk.base, "private").await;
    let (engine, publisher) = publish(&sk.base, &room, &key).await;
    let viewer_token = viewer_token(&sk.base, &token, &room).await;
    let viewer = playing_viewer_with(&engine, &sk.base, &room, Some(&viewer_token)).await;
    // Routes that carry the room id in their path.
    for path in [
        format!("/hls/{room}/index.m3u8"),
        format!("/flv/{room}.flv"),
        format!("/api/v1/rooms/{room}"),
    ] {
        status("HEAD", &format!("{}{path}", sk.base)).await;
    }

    // Wait for an SFU export that saw the room live, then for one after it ended.
    let wait_for = |want: &'static str| {
        let sk = &sk;
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let text = sk.metrics().await;
                if text.lines().any(|l| l == want) {
                    return text;
                }
                assert!(Instant::now() < deadline, "no `{want}` in:\n{text}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let live = wait_for("skylark_sfu_subscribers 1").await;
    assert!(live.contains("skylark_sfu_rooms 1"), "{live}");
    viewer.close().await.1.expect("WHEP DELETE");
    publisher.stop().await.1.expect("WHIP DELETE");
    let ended = wait_for("skylark_sfu_rooms 0").await;
    for text in [live, ended] {
        assert!(!text.contains(&room), "room id in the metrics:\n{text}");
        assert!(!text.contains("room=\""), "a room label:\n{text}");
    }
}
