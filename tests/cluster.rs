//! The Kubernetes layout on one machine: `skylark api`, `skylark sfu` and two
//! `skylark signaling` processes sharing nothing but Redis (and the API's gRPC). A
//! publisher goes live through signaling 1 and a viewer arrives through signaling 2.

mod common;

use common::*;
use futures_util::SinkExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test]
async fn publisher_on_one_signaling_viewer_on_another() {
    let Some(redis) = redis_url() else { return };
    let Some(ffmpeg) = ffmpeg_whip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("skylark-test-{}:", free_port());
    let api_grpc = free_port();
    let shared = |extra: &[(&str, String)]| {
        let mut e = env(&[
            ("REDIS_URL", redis.clone()),
            ("SKYLARK_REDIS_PREFIX", prefix.clone()),
            (
                "SKYLARK_API_GRPC_URL",
                format!("http://127.0.0.1:{api_grpc}"),
            ),
            (
                "SKYLARK_JWT_SECRET",
                "cluster-test-secret-cluster-test-secret".into(),
            ),
            (
                "SKYLARK_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
        ]);
        e.extend(env(extra));
        e
    };
    let api = Skylark::start_with(Options {
        target: Some("api"),
        env: shared(&[("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{api_grpc}"))]),
        dir: Some(dir.path().join("api")),
    })
    .await;
    let _sfu = Skylark::start_with(Options {
        target: Some("sfu"),
        env: shared(&[("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))]),
        dir: Some(dir.path().join("sfu")),
    })
    .await;
    let sig1 = Skylark::start_with(Options {
        target: Some("signaling"),
        env: shared(&[]),
        dir: Some(dir.path().join("sig1")),
    })
    .await;
    let sig2 = Skylark::start_with(Options {
        target: Some("signaling"),
        env: shared(&[]),
        dir: Some(dir.path().join("sig2")),
    })
    .await;

    let (_, room, key) = creator_with_room(&api.base, "public").await;

    // A viewer waits on signaling 2 before the publisher arrives.
    let mut viewer = ws(&sig2.base).await;
    viewer
        .send(Message::Text(
            format!(r#"{{"type":"watch","room":"{room}"}}"#).into(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut viewer).await.unwrap()["type"], "waiting");

    // The publisher (FFmpeg's WHIP muxer, as OBS would) goes live through signaling 1.
    let mut ff = spawn_ffmpeg_whip(
        &ffmpeg,
        &format!("{}/whip/{room}", sig1.base),
        &key,
        8,
        &dir.path().join("ffmpeg.log"),
    );

    // Signaling 2 learns it over Redis and tells its viewer.
    let live = loop {
        let Some(m) = next_json(&mut viewer).await else {
            panic!(
                "no room event; ffmpeg log:\n{}",
                std::fs::read_to_string(dir.path().join("ffmpeg.log")).unwrap_or_default()
            )
        };
        if m["type"] == "room" && m["live"] == true {
            break m;
        }
    };
    assert_eq!(live["room"], room.as_str());

    // Both signaling pods see the room live, and the API reports it.
    let c = reqwest::Client::new();
    for base in [&sig1.base, &sig2.base] {
        let v: serde_json::Value = c
            .get(format!("{base}/api/v1/rooms/{room}/playback"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["live"], true, "{base}");
    }
    let v: serde_json::Value = c
        .get(format!("{}/api/v1/rooms/{room}", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["live"], true);

    let status = tokio::task::spawn_blocking(move || ff.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "ffmpeg: {}",
        std::fs::read_to_string(dir.path().join("ffmpeg.log")).unwrap_or_default()
    );
    // FFmpeg's DELETE ends the session; the room goes offline everywhere.
    let offline = loop {
        let Some(m) = next_json(&mut viewer).await else {
            panic!("no offline event")
        };
        if m["type"] == "room" && m["live"] == false {
            break m;
        }
    };
    assert_eq!(offline["room"], room.as_str());
    tokio::time::sleep(Duration::from_millis(200)).await;
}
