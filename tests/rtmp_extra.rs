//! RTMP ingest, the publisher's bad days (Debian FFmpeg pushing H.264 + AAC):
//! - FFmpeg dies and a new one publishes with the same key within a second: a WHEP viewer
//!   keeps its session and its frames keep coming;
//! - FFmpeg freezes mid-stream (SIGSTOP: the TCP connection stays open, no data): the
//!   server drops it after its 10 s idle timeout and the room goes offline, while another
//!   room plays on.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publisher_reconnect_keeps_whep_viewers() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let t0 = Instant::now();
    let RtmpRoom {
        sk,
        room,
        key,
        port,
        push: mut first,
        ..
    } = RtmpRoom::start(ffmpeg, "ffmpeg-first.log", 30, true).await;
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");

    let (_engine, v) = watching(&sk.base, &room).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = v.stats().await.unwrap();
    assert!(before.frames >= 30, "frames before the switch: {before:?}");

    // FFmpeg dies (no RTMP deleteStream, just a dead TCP connection); a new one publishes
    // with the same key well within a second.
    let _ = first.0.kill();
    let _ = first.0.wait();
    let killed = Instant::now();
    let at_kill = v.stats().await.unwrap().frames;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log2 = sk.dir.join("ffmpeg-second.log");
    let _second = rtmp_push(ffmpeg, &url, 30, &log2);

    // The same viewer session gets the new publisher's frames: 2 s of video after the switch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let s = v.stats().await.unwrap();
        assert!(
            s.failure.is_none(),
            "the viewer failed after the publisher reconnected: {s:?}"
        );
        if s.frames >= at_kill + 60 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "frames stopped after the publisher reconnected ({at_kill} at the switch, now {s:?}); \
             ffmpeg:\n{}\nserver log: {}",
            std::fs::read_to_string(&log2).unwrap_or_default(),
            sk.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed = killed.elapsed();
    assert!(after.connected, "the viewer stays connected: {after:?}");
    assert!(is_live(&sk.base, &room).await, "the room is live again");
    let m = sk.metrics().await;
    assert!(m.contains("skylark_rtmp_publishes_total 2"), "{m}");
    // Still flowing a second later (not just a burst).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = v.stats().await.unwrap();
    assert!(
        later.connected && later.frames >= after.frames + 15,
        "{after:?} → {later:?}"
    );
    assert!(!sk.logs().contains(&key), "stream key logged");
    println!(
        "TIMING {{\"test\":\"rtmp_extra/reconnect\",\"kill_to_60_new_frames_ms\":{},\"total_ms\":{}}}",
        resumed.as_millis(),
        t0.elapsed().as_millis()
    );
    let _ = v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rtmp_publisher_is_dropped_other_rooms_play_on() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let t0 = Instant::now();
    let sk = Skylark::start().await;
    let port = rtmp_port(&sk);
    let (_, stalled_room, stalled_key) = creator_with_room(&sk.base, "public").await;
    let (_, other_room, other_key) = creator_with_room(&sk.base, "public").await;
    let log_s = sk.dir.join("ffmpeg-stalled.log");
    let log_o = sk.dir.join("ffmpeg-other.log");
    let stalled = rtmp_push(
        ffmpeg,
        &format!("rtmp://127.0.0.1:{port}/live/{stalled_key}"),
        40,
        &log_s,
    );
    let _other = rtmp_push(
        ffmpeg,
        &format!("rtmp://127.0.0.1:{port}/live/{other_key}"),
        40,
        &log_o,
    );
    wait_live(&sk.base, &stalled_room, &log_s).await;
    wait_live(&sk.base, &other_room, &log_o).await;
    let (_engine, v) = watching(&sk.base, &other_room).await;
    let m = sk.metrics().await;
    assert!(m.contains("skylark_rtmp_connections 2"), "{m}");

    // FFmpeg freezes: its TCP connection stays open and sends nothing more.
    let pid = stalled.0.id().to_string();
    let st = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(st.success(), "kill -STOP {pid}");
    let stopped = Instant::now();
    let frames_at_stop = v.stats().await.unwrap().frames;

    let deadline = stopped + Duration::from_secs(15);
    while is_live(&sk.base, &stalled_room).await {
        assert!(
            Instant::now() < deadline,
            "a stalled RTMP publisher still holds the room after 15 s; server log in {}",
            sk.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let offline_after = stopped.elapsed();
    // The server dropped the connection itself (FFmpeg is frozen: it closed nothing).
    eventually(
        Duration::from_secs(3),
        "the stalled connection closed",
        || async {
            let m = sk.metrics().await;
            m.contains("skylark_rtmp_connections 1")
                .then_some(())
                .ok_or(m)
        },
    )
    .await;
    assert!(
        sk.logs().contains("no data in time"),
        "the server says why it dropped the publisher"
    );

    // The other room never noticed.
    assert!(
        is_live(&sk.base, &other_room).await,
        "the other room stays live"
    );
    let s = v.stats().await.unwrap();
    assert!(
        s.connected && s.failure.is_none() && s.frames >= frames_at_stop + 150,
        "the other room's viewer kept receiving ({frames_at_stop} at the stall): {s:?}"
    );
    println!(
        "TIMING {{\"test\":\"rtmp_extra/stalled\",\"stop_to_offline_ms\":{},\"total_ms\":{}}}",
        offline_after.as_millis(),
        t0.elapsed().as_millis()
    );
    let _ = v.close().await;
    drop(stalled); // SIGKILL works on a stopped process
}
