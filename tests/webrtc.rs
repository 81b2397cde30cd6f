//! Real WebRTC peers (str0m, over real UDP) through a running `skylark`: one WHIP
//! publisher fans out to many WHEP viewers, every frame intact; a reconnecting publisher
//! doesn't disturb viewers; random datagrams at the media port don't either; and FFmpeg's
//! WHIP muxer (a non-browser publisher, like OBS) feeds WHEP viewers.

mod common;

use common::*;
use skylark_loadgen::source::VideoConfig;
use skylark_loadgen::{Engine, EngineConfig, Viewer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lets the viewers watch for two more seconds, then checks they got video and Opus.
async fn assert_two_seconds_of_audio_and_video(vs: Vec<Viewer>, source: &str) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    for v in vs {
        let (s, _) = v.close().await;
        let s = s.unwrap();
        assert!(s.frames >= 40, "video from {source}: {} frames", s.frames);
        assert!(s.keyframes >= 1);
        assert!(
            s.audio_packets >= 50,
            "Opus from {source}: {}",
            s.audio_packets
        );
    }
}

async fn viewers(engine: &Engine, url: &str, n: usize) -> Vec<Viewer> {
    let mut joins = Vec::new();
    for _ in 0..n {
        let e = engine.clone();
        let u = url.to_string();
        joins.push(tokio::spawn(async move { e.view(&u, None).await }));
    }
    let mut out = Vec::new();
    for j in joins {
        out.push(j.await.unwrap().expect("WHEP join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_twenty_viewers_every_frame_intact() {
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (engine, publisher) = publish(&sk.base, &room, &key).await;

    let vs = viewers(&engine, &format!("{}/whep/{room}", sk.base), 20).await;
    for v in &vs {
        let s = v
            .wait_playing(Duration::from_secs(10))
            .await
            .expect("viewer playing");
        // From the moment the viewer is connected (ICE + DTLS done), the SFU must get it
        // a keyframe within 1 s; the handshake itself is the machine's CPU, not ours.
        let join = s.join_ms.expect("join time");
        let connect = s.connect_ms.expect("connect time");
        assert!(
            join - connect < 1000.0,
            "keyframe within 1 s of joining: connected at {connect} ms, keyframe at {join} ms"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut total = 0;
    for v in vs {
        let (stats, deleted) = v.close().await;
        deleted.expect("WHEP DELETE");
        let s = stats.unwrap();
        assert!(s.frames >= 80, "about 30 fps for 3 s, got {}", s.frames);
        assert!(s.keyframes >= 1);
        assert_eq!(s.frames_bad_hash, 0, "payloads intact");
        assert_eq!(s.frames_missing, 0, "every frame since the first keyframe");
        assert_eq!(s.frames_out_of_order, 0);
        assert!(
            s.audio_packets > 100,
            "Opus flows too ({})",
            s.audio_packets
        );
        total += s.frames;
    }
    let (pstats, deleted) = publisher.stop().await;
    deleted.expect("WHIP DELETE");
    assert!(pstats.unwrap().frames_sent >= 90);
    assert!(total >= 20 * 80);
    let metrics = sk.metrics().await;
    for m in [
        "skylark_sfu_frames_out_total",
        "skylark_sfu_packets_out_total",
        "skylark_sfu_nacks_from_subscribers_total",
        "skylark_sfu_plis_from_subscribers_total",
        "skylark_sfu_rooms",
        "skylark_sfu_egress_bitrate_bps",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_keep_playing_when_the_publisher_reconnects() {
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    let whip = format!("{}/whip/{room}", sk.base);
    let first = engine
        .publish(&whip, &key, VideoConfig::default())
        .await
        .unwrap();
    first.wait_connected(Duration::from_secs(10)).await.unwrap();
    let vs = viewers(&engine, &format!("{}/whep/{room}", sk.base), 3).await;
    for v in &vs {
        v.wait_playing(Duration::from_secs(10)).await.unwrap();
    }
    let before: Vec<u64> = futures_util::future::join_all(vs.iter().map(|v| v.stats()))
        .await
        .into_iter()
        .map(|s| s.unwrap().frames)
        .collect();

    // A new session with the same key, as OBS does after a network blip: it replaces
    // the old one on the same node. The old one is never DELETEd.
    let second = engine
        .publish(&whip, &key, VideoConfig::default())
        .await
        .expect("replacing publish");
    second
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (v, b) in vs.iter().zip(before) {
        let s = v.stats().await.unwrap();
        assert!(s.connected, "viewer kept its connection");
        assert!(
            s.frames >= b + 60,
            "frames kept coming after the switch: {} → {}",
            b,
            s.frames
        );
        assert_eq!(s.frames_bad_hash, 0);
    }
    let _ = second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_at_the_media_port_do_not_disturb_live_sessions() {
    let udp = free_port();
    let mut opts = Options::default();
    opts.env
        .insert("SKYLARK_RTC_UDP_ADDR".into(), format!("127.0.0.1:{udp}"));
    let sk = Skylark::start_with(opts).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (engine, publisher) = publish(&sk.base, &room, &key).await;
    let v = playing_viewer(&engine, &sk.base, &room).await;

    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..3000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1500) as usize;
        let mut buf: Vec<u8> = (0..len).map(|k| (seed >> (k % 57)) as u8).collect();
        // Some look like STUN, RTP or DTLS by their first byte.
        if let Some(b) = buf.first_mut() {
            *b = [0x00, 0x01, 0x80, 0x90, 0x16, 0x17][(i % 6) as usize];
        }
        let _ = junk.send_to(&buf, ("127.0.0.1", udp)).await;
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = v.stats().await.unwrap();
    assert!(s.connected);
    assert_eq!(s.frames_bad_hash, 0);
    assert_eq!(s.frames_missing, 0, "no frame lost to the junk");
    assert!(reqwest::get(format!("{}/readyz", sk.base))
        .await
        .unwrap()
        .status()
        .is_success());
    let _ = v.close().await;
    let _ = publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_whip_publisher_feeds_whep_viewers() {
    let Some(ffmpeg) = ffmpeg_whip() else { return };
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let log = sk.dir.join("ffmpeg.log");
    let ff = spawn_ffmpeg_whip(&ffmpeg, &format!("{}/whip/{room}", sk.base), &key, 8, &log);
    wait_live(&sk.base, &room, &log).await;
    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    let vs = viewers(&engine, &format!("{}/whep/{room}", sk.base), 3).await;
    for v in &vs {
        if let Err(e) = v.wait_playing(Duration::from_secs(10)).await {
            let logs = sk.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            panic!(
                "FFmpeg's stream does not play: {e:?}; viewer {:?}; server log tail:\n{}",
                v.stats().await,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert_two_seconds_of_audio_and_video(vs, "FFmpeg").await;
    assert_exits_ok(ff, "ffmpeg", &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_sessions_before_stopping() {
    let mut opts = Options::default();
    opts.env
        .insert("SKYLARK_DRAIN_TIMEOUT_S".into(), "60".into());
    let mut sk = Skylark::start_with(opts).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (engine, publisher) = publish(&sk.base, &room, &key).await;
    let v = playing_viewer(&engine, &sk.base, &room).await;

    let pid = sk.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sk.child.try_wait().unwrap().is_none(),
        "still running while sessions are live"
    );
    let before = v.stats().await.unwrap().frames;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        v.stats().await.unwrap().frames > before + 15,
        "the live viewer keeps getting frames"
    );
    // No new sessions on a draining node.
    assert!(engine
        .view(&format!("{}/whep/{room}", sk.base), None)
        .await
        .is_err());

    // When the last sessions end, the process stops by itself.
    let _ = v.close().await;
    let _ = publisher.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = sk.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop after its sessions ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "clean exit after draining");
}

/// GStreamer's webrtcbin always has an RSA certificate; str0m's own DTLS only accepts
/// ECDSA, so this peer failed with "no client certificate received" until the SFU did its
/// handshakes through OpenSSL (crates/dtls). libnice offers no loopback candidates, so the
/// publisher runs in a network namespace of its own, linked to ours by a veth pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rsa_certificate_publisher_feeds_whep_viewers() {
    let Some(python) = gstreamer_python() else {
        return;
    };
    let Some(ns) = NetNs::create() else { return };
    let sk = Skylark::start_at(&ns.host_ip, Options::default()).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gst/whip_publish.py");
    let log = sk.dir.join("gstreamer.log");
    let mut gst = ns
        .command(python)
        .args([script, &format!("{}/whip/{room}", sk.base), &key, "8"])
        .stdout(std::process::Stdio::from(
            std::fs::File::create(&log).unwrap(),
        ))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the GStreamer publisher");
    wait_live(&sk.base, &room, &log).await;

    let engine = Engine::start(EngineConfig::default(), CancellationToken::new()).unwrap();
    let vs = viewers(&engine, &format!("{}/whep/{room}", sk.base), 3).await;
    for v in &vs {
        if let Err(e) = v.wait_playing(Duration::from_secs(10)).await {
            panic!(
                "GStreamer's stream does not play: {e:?}\npublisher: {}\nserver: {}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                sk.logs()
            );
        }
    }
    assert_two_seconds_of_audio_and_video(vs, "GStreamer").await;
    let status = tokio::task::spawn_blocking(move || gst.wait())
        .await
        .unwrap()
        .unwrap();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "publisher failed: {out}");
    assert!(
        out.contains("connected; our certificate's key: rsaEncryption"),
        "the publisher must have been an RSA peer: {out}"
    );
}
