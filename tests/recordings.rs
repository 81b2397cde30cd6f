//! Recordings end to end: a room with `record` on, FFmpeg publishing over RTMP; once
//! the stream ends the recording is listed by the API, `recording.ready` reaches a
//! webhook receiver (signature checked), and ffprobe reads the MP4 download and the
//! VOD playlist (served by the packager): the pushed duration, H.264 and audio; made
//! private, the recording needs the owner's token (REST) and a playback token (media);
//! deleted, its files go. In the
//! scale-out layout, SIGKILLing the packager holding the room mid-stream leaves one
//! recording with both halves and a discontinuity.

mod common;

use common::webhook_receiver::{Receiver, DELIVERY_DEADLINE, OPS_SECRET};
use common::{
    create_room, creator_with_room, debian_ffmpeg, eventually, get_text, redis_url, rtmp_port,
    rtmp_push, send_json, wait_live, wait_offline, Options, Skylark,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Seconds of media FFmpeg pushes.
const PUSHED: f64 = 20.0;
/// From the stream's end to the recording in the API: offline detection (~10 s),
/// finalizing, registering; generous for a loaded machine.
const LISTED_WITHIN: Duration = Duration::from_secs(120);

/// The room's recordings, as the API lists them.
async fn recordings(base: &str, token: &str, room: &str) -> Vec<Value> {
    let v = send_json(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/rooms/{room}/recordings"))
            .bearer_auth(token),
    )
    .await;
    v["recordings"].as_array().cloned().unwrap_or_default()
}

async fn wait_recording(base: &str, token: &str, room: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LISTED_WITHIN;
    loop {
        if let Some(r) = recordings(base, token, room).await.first() {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording listed {LISTED_WITHIN:?} after the stream ended"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until FFmpeg has pushed everything and exited, successfully.
async fn pushed(push: &mut common::Push, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = push.0.try_wait().unwrap() {
            assert!(
                status.success(),
                "the RTMP push: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "FFmpeg still pushing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `ffprobe` of `url`: (format duration, codec names).
fn probe(url: &str) -> (f64, Vec<String>) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
        ])
        .args(["-of", "json", url])
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {v}"));
    let codecs = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(str::to_string))
        .collect();
    (duration, codecs)
}

/// The top rendition's media playlist URL of a recording's multivariant playlist.
async fn media_playlist_url(playlist_url: &str) -> String {
    let index = get_text(playlist_url).await;
    let first = index
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("no rendition in {index}"));
    format!("{}/{first}", playlist_url.trim_end_matches("/index.m3u8"))
}

/// Downloads `url` into `path`.
async fn download(url: &str, path: &Path) {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    assert_eq!(r.headers()["content-type"], "video/mp4");
    std::fs::write(path, r.bytes().await.unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_rtmp_stream_becomes_a_vod_and_fires_recording_ready() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let receiver = Receiver::start().await;
    let env = [
        ("SKYLARK_WEBHOOK_URLS", receiver.url("/ops")),
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.to_string()),
        ("SKYLARK_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sk = Skylark::start_with(Options {
        env,
        ..Default::default()
    })
    .await;
    let (token, _, _) = creator_with_room(&sk.base, "public").await;
    let created = create_room(
        &sk.base,
        &token,
        json!({"title": "recorded", "record": true}),
    )
    .await;
    assert_eq!(created["room"]["record"], true, "{created}");
    let room = created["room"]["id"].as_str().unwrap().to_string();
    let key = created["stream_key"].as_str().unwrap();

    let log = sk.dir.join("ffmpeg-rec.log");
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", rtmp_port(&sk));
    let mut push = rtmp_push(ffmpeg, &url, PUSHED as u32, &log);
    wait_live(&sk.base, &room, &log).await;
    pushed(&mut push, &log).await;
    wait_offline(&sk.base, &room).await;

    let rec = wait_recording(&sk.base, &token, &room).await;
    let id = rec["id"].as_str().unwrap().to_string();
    assert!(rec["bytes"].as_i64().unwrap() > 0, "{rec}");
    let listed = rec["duration_s"].as_f64().unwrap();
    assert!((listed - PUSHED).abs() <= 1.0, "listed duration {listed}");
    let one =
        send_json(reqwest::Client::new().get(format!("{}/api/v1/recordings/{id}", sk.base))).await;
    assert_eq!(one["id"], id.as_str());

    // The VOD playlist: complete, typed, and ffprobe reads the stream from it.
    let playlist_url = one["playlist_url"].as_str().unwrap().to_string();
    let media_url = media_playlist_url(&playlist_url).await;
    let media = get_text(&media_url).await;
    assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{media}");
    assert!(media.ends_with("#EXT-X-ENDLIST\n"), "{media}");
    let (d, codecs) = probe(&media_url);
    assert!((d - PUSHED).abs() <= 1.0, "VOD playlist duration {d}");
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    assert!(
        codecs.iter().any(|c| c == "aac" || c == "opus"),
        "{codecs:?}"
    );

    // The download.
    let mp4 = sk.dir.join("recording.mp4");
    download(one["mp4_url"].as_str().unwrap(), &mp4).await;
    let (d, codecs) = probe(mp4.to_str().unwrap());
    assert!((d - PUSHED).abs() <= 1.0, "MP4 duration {d}");
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    assert!(
        codecs.iter().any(|c| c == "aac" || c == "opus"),
        "{codecs:?}"
    );

    // recording.ready, signed, naming this recording.
    eventually(DELIVERY_DEADLINE, "recording.ready arrives", || async {
        let calls = receiver.calls("/ops");
        match calls.iter().find(|c| c.event_type == "recording.ready") {
            Some(c) if c.body["data"]["recording_id"] == id.as_str() => Ok(()),
            Some(c) => Err(format!("another recording: {}", c.body)),
            None => Err("not yet".into()),
        }
    })
    .await;

    // A private room's recording needs what its live playback needs.
    let c = reqwest::Client::new();
    let patched = c
        .patch(format!("{}/api/v1/rooms/{room}", sk.base))
        .bearer_auth(&token)
        .json(&json!({"visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let one_url = format!("{}/api/v1/recordings/{id}", sk.base);
    assert_eq!(c.get(&one_url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&one_url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The packager learns the visibility within its cache's lifetime.
    eventually(
        Duration::from_secs(60),
        "the VOD refused without a token",
        || async {
            match reqwest::get(&playlist_url).await.unwrap().status().as_u16() {
                401 => Ok(()),
                s => Err(format!("status {s}")),
            }
        },
    )
    .await;
    let playback = send_json(
        c.get(format!("{}/api/v1/rooms/{room}/playback", sk.base))
            .bearer_auth(&token),
    )
    .await;
    let hls = playback["hls"]["url"].as_str().unwrap_or_default();
    let ptoken = hls
        .split_once("token=")
        .map(|(_, t)| t.split('&').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no playback token in {playback}"));
    let index = get_text(&format!("{playlist_url}?token={ptoken}")).await;
    assert!(
        index.contains(&format!("media.m3u8?token={ptoken}")),
        "{index}"
    );

    // Deleting removes the row and the files.
    let r = c
        .delete(format!("{}/api/v1/recordings/{id}", sk.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(recordings(&sk.base, &token, &room).await.is_empty());
    assert_eq!(
        reqwest::get(format!("{playlist_url}?token={ptoken}"))
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packager_killed_mid_stream_leaves_one_recording_with_both_halves() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let Some(redis) = redis_url() else {
        return;
    };
    let mut c = common::TwoPackagers::start(&redis).await;
    let (token, _, _) = creator_with_room(&c.api.base, "public").await;
    let created = create_room(
        &c.api.base,
        &token,
        json!({"title": "recorded", "record": true}),
    )
    .await;
    let room = created["room"]["id"].as_str().unwrap().to_string();
    let key = created["stream_key"].as_str().unwrap();
    let log = c.dir.path().join("ffmpeg-kill.log");
    let rtmp = rtmp_port(&c.sig);
    let mut push = rtmp_push(
        ffmpeg,
        &format!("rtmp://127.0.0.1:{rtmp}/live/{key}"),
        40,
        &log,
    );
    wait_live(&c.api.base, &room, &log).await;
    // Whichever packager wrote a segment of the room holds it: kill that one.
    let rooms_dir = c.dir.path().join("data/recordings").join(&room);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let started = c
            .packagers
            .iter()
            .position(|p| p.logs().contains("recording started"));
        if let Some(i) = started.filter(|_| rooms_dir.join("current").exists()) {
            break i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no packager records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let it write a few segments first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let victim = &mut c.packagers[holder];
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    let survivor = &c.packagers[1 - holder];
    eventually(
        Duration::from_secs(60),
        "the other packager continues",
        || {
            let logs = survivor.logs();
            async move {
                if logs.contains("continuing the room's recording") {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            }
        },
    )
    .await;
    pushed(&mut push, &log).await;
    wait_offline(&c.api.base, &room).await;

    let rec = wait_recording(&c.api.base, &token, &room).await;
    let list = recordings(&c.api.base, &token, &room).await;
    assert_eq!(list.len(), 1, "one recording across the takeover: {list:?}");
    let id = rec["id"].as_str().unwrap();
    let media = std::fs::read_dir(rooms_dir.join(id))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("media.m3u8"))
        .find(|p| p.exists())
        .expect("a rendition's playlist");
    let text = std::fs::read_to_string(&media).unwrap();
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    let (d, _) = probe(media.to_str().unwrap());
    // Lost: at most the segment in progress (2 s) and the takeover gap (lease expiry,
    // a discovery tick, the new pull): generous bound, no timing asserted beyond it.
    assert!(d >= 40.0 - 2.0 - 15.0, "recorded {d} s of 40 s");
}
