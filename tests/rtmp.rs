//! RTMP ingest with a real publisher (Debian FFmpeg pushing H.264 + AAC): the room goes
//! live, WHEP viewers get video and Opus audio (transcoded from AAC), ffprobe reads the
//! HLS with the publisher's AAC (also of a stream without audio); wrong keys and garbage are refused without
//! disturbing a live room.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_rtmp_reaches_webrtc_and_hls() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let RtmpRoom {
        sk, room, push: ff, ..
    } = RtmpRoom::start(ffmpeg, "ffmpeg-rtmp.log", 12, true).await;

    let (_engine, v) = watching(&sk.base, &room).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = v.stats().await.unwrap();
    assert!(s.frames >= 40, "video: {} frames", s.frames);
    assert!(
        s.audio_packets >= 50,
        "Opus audio transcoded from AAC: {} packets",
        s.audio_packets
    );
    let _ = v.close().await;

    // HLS from the same ingest.
    let hls = format!("{}/hls/{room}/index.m3u8", sk.base);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reqwest::get(&hls)
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no HLS for the RTMP stream");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The publisher's AAC itself, not the Opus transcoded for WebRTC viewers.
    let probe = probe_source_codecs(&hls);
    assert!(!probe.contains("opus"), "{probe}");
    let master = get_text(&hls).await;
    assert!(master.contains(",mp4a.40.2\""), "{master}");

    // HTTP-FLV of the same ingest: H.264 and the source's AAC, no transcoding.
    probe_source_codecs(&format!("{}/flv/{room}.flv", sk.base));
    drop(ff);
}

/// ffprobe's streams of `url`, asserted to be what FFmpeg pushed (no transcoding): its
/// 640x360 H.264 and its 44.1 kHz AAC.
fn probe_source_codecs(url: &str) -> String {
    let out = ffprobe_streams("ffprobe", "codec_name,width,height,sample_rate", url);
    let probe = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        probe.contains("codec_name=h264|width=640|height=360"),
        "{probe}"
    );
    assert!(
        probe.contains("codec_name=aac|sample_rate=44100"),
        "{probe}"
    );
    probe
}

/// `(master CODECS line, ffprobe streams)` of a room's HLS once it has a segment.
async fn probe_hls(base: &str, room: &str) -> (String, String) {
    let hls = format!("{base}/hls/{room}/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(20);
    let master = loop {
        if let Ok(r) = reqwest::get(&hls).await {
            if r.status().is_success() {
                let t = r.text().await.unwrap();
                let media = get_text(&format!("{base}/hls/{room}/media.m3u8")).await;
                if media.contains("#EXTINF") {
                    break t;
                }
            }
        }
        assert!(Instant::now() < deadline, "no HLS segment within 20 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let out = ffprobe_streams(
        "ffprobe",
        "codec_type,codec_name,width,height,sample_rate",
        &hls,
    );
    (master, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_only_rtmp_gives_video_only_hls() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let RtmpRoom {
        sk,
        room,
        push: _ff,
        ..
    } = RtmpRoom::start(ffmpeg, "ffmpeg-video-only.log", 15, false).await;
    let (master, probe) = probe_hls(&sk.base, &room).await;
    // An advertised audio codec with no audio samples stalls MSE players at time 0.
    let codecs = master
        .split("CODECS=\"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap();
    assert!(
        codecs.starts_with("avc1.") && !codecs.contains(','),
        "{master}"
    );
    assert!(
        probe.contains("codec_name=h264|codec_type=video|width=640|height=360"),
        "{probe}"
    );
    assert!(
        !probe.contains("codec_type=audio"),
        "no audio stream in the init segment: {probe}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rtmp_input_is_refused_and_other_rooms_play_on() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let RtmpRoom {
        sk,
        room,
        key,
        port,
        push: live,
        ..
    } = RtmpRoom::start(ffmpeg, "ffmpeg-live.log", 20, true).await;
    let (_engine, v) = watching(&sk.base, &room).await;

    // A wrong key: FFmpeg is refused and gives up.
    let bad_log = sk.dir.join("ffmpeg-bad.log");
    let mut bad = rtmp_push(
        ffmpeg,
        &format!("rtmp://127.0.0.1:{port}/live/sk_live_wrong"),
        5,
        &bad_log,
    );
    let status = tokio::task::spawn_blocking(move || bad.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "a wrong key must be refused");

    // Garbage, a truncated handshake, an absurd chunk size: the connection is closed.
    let junk = |bytes: Vec<u8>| {
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let _ = s.write_all(&bytes);
            let mut buf = [0u8; 8192];
            let start = Instant::now();
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return start.elapsed(),
                    Ok(_) => continue,
                }
            }
        })
    };
    // Not RTMP at all (bad version byte).
    let garbage = junk((0..3000u32).map(|i| (i * 7 + 0xff) as u8).collect());
    // A valid handshake, then a 16 MiB video message header (over the 8 MiB limit).
    let mut oversized = vec![3u8];
    oversized.extend(vec![0u8; 1536 * 2]);
    oversized.extend([0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
    oversized.extend(vec![0u8; 128]);
    let oversized = junk(oversized);
    // A handshake that stops half way.
    let truncated = junk(vec![3, 0, 0, 0]);
    let closed = garbage.join().unwrap();
    assert!(
        closed < Duration::from_secs(3),
        "garbage closes at once ({closed:?})"
    );
    let closed = oversized.join().unwrap();
    assert!(
        closed < Duration::from_secs(3),
        "an oversized message closes at once ({closed:?})"
    );
    let closed = truncated.join().unwrap();
    assert!(
        closed <= Duration::from_secs(12),
        "a stalled handshake is dropped ({closed:?})"
    );

    // The live room never noticed.
    let s = v.stats().await.unwrap();
    assert!(s.connected && s.frames > 100, "{s:?}");
    let metrics = sk.metrics().await;
    assert!(
        metrics.contains("skylark_rtmp_publishes_total 1"),
        "{metrics}"
    );
    assert!(!sk.logs().contains(&key), "stream key logged");
    drop(live);
}
