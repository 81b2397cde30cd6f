//! Honest counts: a room's viewer count is everyone watching, however they watch. Of
//! an RTMP room (Debian's FFmpeg pushing H.264 + AAC), a WebRTC viewer (the load
//! generator), an HLS player and an HTTP-FLV player (FFmpeg reading the playlist and
//! the stream, as any player would) are counted, split by transport in the API and
//! summed; a player that stops leaves the count.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Polls the room until `ok` holds for its JSON; fails after `within` saying `what`.
async fn until_room(
    sk: &Skylark,
    room: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    let url = format!("{}/api/v1/rooms/{room}", sk.base);
    loop {
        let v = send_json(reqwest::Client::new().get(&url)).await;
        if ok(&v) {
            println!("{what}: {}", v["viewers_by_transport"]);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}: viewers {} by transport {}",
            v["viewers"],
            v["viewers_by_transport"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// FFmpeg playing `url` for up to a minute, its output thrown away; killed on drop.
fn player(ffmpeg: &str, url: &str) -> Push {
    Push(
        Command::new(ffmpeg)
            .args([
                "-loglevel",
                "error",
                "-i",
                url,
                "-t",
                "60",
                "-f",
                "null",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_and_flv_players_count_beside_webrtc_viewers_and_leave_when_they_stop() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let r = RtmpRoom::start(ffmpeg, "push.log", 90, true).await;
    let (sk, room) = (&r.sk, r.room.clone());
    let engine = skylark_loadgen::Engine::start(
        skylark_loadgen::EngineConfig::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let viewer = engine
        .view(&format!("{}/whep/{room}", sk.base), None)
        .await
        .expect("WHEP join");
    viewer
        .wait_playing(Duration::from_secs(10))
        .await
        .expect("WebRTC viewer playing");

    // The packager takes the room a moment after it goes live: players start once it
    // serves it (a player that gets a 404 gives up, as FFmpeg does).
    let multivariant = format!("{}/hls/{room}/index.m3u8", sk.base);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&multivariant)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room's HLS within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let hls = player(ffmpeg, &multivariant);
    let flv = player(ffmpeg, &format!("{}/flv/{room}.flv", sk.base));
    let want = |w: u64, h: u64, f: u64| {
        move |v: &Value| {
            let t = &v["viewers_by_transport"];
            (t["webrtc"] == w && t["hls"] == h && t["flv"] == f) && v["viewers"] == w + h + f
        }
    };
    until_room(
        sk,
        &room,
        Duration::from_secs(20),
        "one viewer per transport, three in all",
        want(1, 1, 1),
    )
    .await;

    // A player that stops is no longer counted: the FLV stream at once, the HLS player
    // once it has not reloaded its playlist for a while.
    drop(flv);
    until_room(
        sk,
        &room,
        Duration::from_secs(10),
        "the FLV player left",
        want(1, 1, 0),
    )
    .await;
    drop(hls);
    until_room(
        sk,
        &room,
        Duration::from_secs(20),
        "the HLS player left",
        want(1, 0, 0),
    )
    .await;
    let _ = viewer.close().await;
}
