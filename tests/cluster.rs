//! The Kubernetes layout on one machine: `skylark api`, `skylark sfu` and two
//! `skylark signaling` processes sharing nothing but Redis (and the API's gRPC). A
//! publisher goes live through signaling 1 and a viewer arrives through signaling 2.

mod common;

use common::*;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn publisher_on_one_signaling_viewer_on_another() {
    let Some(redis) = redis_url() else { return };
    let Some(ffmpeg) = ffmpeg_whip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let shared = scale_out_env(&redis, api_grpc, dir.path(), &[]);
    let mut api_env = shared(&[("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{api_grpc}"))]);
    let database_url = postgres_schema_url("cluster");
    if !database_url.is_empty() {
        api_env.insert("DATABASE_URL".into(), database_url);
    }
    let api = start_target("api", api_env, dir.path(), "api").await;
    let _sfu = start_sfu(&shared, dir.path()).await;
    let packager = start_target("packager", shared(&[]), dir.path(), "packager").await;
    let mut sig1 = start_target("signaling", shared(&[]), dir.path(), "sig1").await;
    let sig2 = start_target("signaling", shared(&[]), dir.path(), "sig2").await;

    let (_, room, key) = creator_with_room(&api.base, "public").await;

    // A viewer waits on signaling 2 before the publisher arrives.
    let mut viewer = ws(&sig2.base).await;
    ws_send(
        &mut viewer,
        serde_json::json!({"type": "watch", "room": room}),
    )
    .await;
    assert_eq!(next_json(&mut viewer).await.unwrap()["type"], "waiting");

    // The publisher (FFmpeg's WHIP muxer, as OBS would) goes live through signaling 1.
    let ff = spawn_ffmpeg_whip(
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
        let v = send_json(c.get(format!("{base}/api/v1/rooms/{room}/playback"))).await;
        assert_eq!(v["live"], true, "{base}");
    }
    let v = send_json(c.get(format!("{}/api/v1/rooms/{room}", api.base))).await;
    assert_eq!(v["live"], true);

    // A WHEP viewer through signaling 2 plays what signaling 1 ingested.
    let engine =
        skylark_loadgen::Engine::start(Default::default(), CancellationToken::new()).unwrap();
    let viewer1 = playing_viewer(&engine, &sig2.base, &room).await;

    // HLS from the packager process.
    let hls = format!("{}/hls/{room}/index.m3u8", packager.base);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !c
        .get(&hls)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no HLS from the packager process"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Signaling 1 dies: media goes on, and a new viewer still gets in through signaling 2.
    sig1.child.kill().unwrap();
    let _ = sig1.child.wait();
    let viewer2 = playing_viewer(&engine, &sig2.base, &room).await;
    let s = viewer1.stats().await.unwrap();
    assert!(
        s.connected && s.frames > 20,
        "the first viewer kept playing: {s:?}"
    );

    assert_exits_ok(ff, "ffmpeg", &dir.path().join("ffmpeg.log")).await;
    // (FFmpeg's DELETE went to the signaling process that died, so the session ends by
    // ICE timeout on the SFU; the viewers were unaffected throughout.)
    let s = viewer2.stats().await.unwrap();
    assert!(s.frames > 20, "the new viewer played: {s:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
}
