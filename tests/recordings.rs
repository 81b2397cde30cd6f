//! Recordings end to end: a room with `record` on, FFmpeg publishing over RTMP; once
//! the stream ends the recording is listed by the API, `recording.ready` reaches a
//! webhook receiver (signature checked), and ffprobe reads the MP4 download and the
//! VOD playlist (served by the packager): the pushed duration, H.264 and audio; its
//! size while recording (growing) and once ready (its stored media); reading it is the
//! owner's; made private, playing it needs a playback token; deleted, its files go. In the
//! scale-out layout, SIGKILLing the packager holding the room mid-stream leaves one
//! recording with both halves and a discontinuity. Each test runs twice: recordings in
//! a directory, and in S3-compatible object storage (`SKYLARK_RECORDINGS_URL=s3://…`),
//! served by moto's S3 emulator (`moto_server`, PyPI `moto[server]`, which
//! `scripts/test` installs into the test venv).

mod common;
#[path = "common/simulcast.rs"]
mod simulcast;

use common::webhook_receiver::{Receiver, DELIVERY_DEADLINE, OPS_SECRET};
use common::{
    create_room, creator_with_room, debian_ffmpeg, eventually, free_port, get_text, redis_url,
    rtmp_port, rtmp_push, rtmp_push_with, send_json, venv_tool, wait_live, wait_offline, Options,
    Skylark, TestSource,
};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use skylark_objstore::{Key, ObjectStore, ObjectStoreExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BUCKET: &str = "skylark-recordings";
const PREFIX: &str = "test/rec";

/// Where the packagers and the API keep recordings in a test, and the test's own
/// client of it.
struct Store {
    objects: skylark_objstore::Store,
    env: Vec<(&'static str, String)>,
    _dir: Option<tempfile::TempDir>,
    moto: Option<Child>,
}

#[derive(Clone, Copy)]
enum Kind {
    Dir,
    S3,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(child) = &mut self.moto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Store {
    /// `None` (skip) outside CI when moto is missing; a failure in CI.
    async fn start(kind: Kind) -> Option<Store> {
        if let Kind::Dir = kind {
            let dir = tempfile::tempdir().unwrap();
            return Some(Store {
                objects: skylark_objstore::local(dir.path().to_path_buf()).unwrap(),
                env: vec![("SKYLARK_RECORDINGS_URL", dir.path().display().to_string())],
                _dir: Some(dir),
                moto: None,
            });
        }
        let moto = venv_tool(
            "moto_server",
            &["-h"],
            "moto_server (PyPI moto[server]): run scripts/test to install it",
        )?;
        let port = free_port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let url = format!("s3://{BUCKET}/{PREFIX}");
        let env = vec![
            ("SKYLARK_RECORDINGS_URL", url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ];
        let settings: Vec<(String, &str)> = env[1..]
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.as_str()))
            .collect();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let objects = skylark_objstore::open_with(Some(&url), PathBuf::new(), &settings).unwrap();
        let store = Store {
            objects,
            env,
            _dir: None,
            moto: Some(child),
        };
        let bucket = format!("{endpoint}/{BUCKET}");
        eventually(
            Duration::from_secs(60),
            "moto_server creates the bucket",
            || {
                let bucket = bucket.clone();
                async move {
                    match reqwest::Client::new().put(&bucket).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        Some(store)
    }

    /// Object `key`'s (`{room}/{id}/…`) text; `None` if there is none.
    async fn read(&self, key: &str) -> Option<String> {
        let got = self.objects.objects.get(&Key::from(key)).await.ok()?;
        Some(String::from_utf8(got.bytes().await.unwrap().to_vec()).unwrap())
    }

    /// The objects under `prefix` (`{room}/{id}`).
    async fn list(&self, prefix: &str) -> Vec<skylark_objstore::ObjectMeta> {
        self.objects
            .objects
            .list(Some(&Key::from(prefix)))
            .try_collect()
            .await
            .unwrap()
    }

    /// How many objects are under `prefix` (`{room}/{id}`).
    async fn count(&self, prefix: &str) -> usize {
        self.list(prefix).await.len()
    }

    /// The room's recording marked unfinished (`open/{room}/{id}`), if any.
    async fn open_recording(&self, room: &str) -> Option<String> {
        let marked = self.list(&format!("open/{room}")).await;
        marked
            .first()
            .and_then(|m| m.location.filename().map(str::to_string))
    }
}

/// Seconds of media FFmpeg pushes.
const PUSHED: f64 = 20.0;
/// How far a recording's duration may be from what was pushed: it starts at the stream's
/// first keyframe (the packager pulls the moment the room goes live and gets the GOP
/// so far) and ends with its last frame.
const TOLERANCE: f64 = 0.5;
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

/// The room's newest recording once the API lists it with `status`.
async fn wait_recording(base: &str, token: &str, room: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LISTED_WITHIN;
    loop {
        let list = recordings(base, token, room).await;
        if let Some(r) = list.first().filter(|r| r["status"] == status) {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording listed as {status} within {LISTED_WITHIN:?}: {list:?}"
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

/// An all-in-one server with `env` and a creator's public room with `record` on:
/// (server, the creator's token, room id, stream key).
async fn recorded_room(env: Vec<(&str, String)>) -> (Skylark, String, String, String) {
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
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
    let key = created["stream_key"].as_str().unwrap().to_string();
    (sk, token, room, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_rtmp_stream_becomes_a_vod_and_fires_recording_ready() {
    vod(Kind::Dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_rtmp_stream_becomes_a_vod_and_fires_recording_ready_in_s3() {
    vod(Kind::S3).await;
}

async fn vod(kind: Kind) {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let env = [
        ("SKYLARK_WEBHOOK_URLS", receiver.url("/ops")),
        ("SKYLARK_WEBHOOK_SECRET", OPS_SECRET.to_string()),
        ("SKYLARK_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
    ]
    .into_iter()
    .chain(store.env.clone())
    .collect();
    let (sk, token, room, key) = recorded_room(env).await;

    let log = sk.dir.join("ffmpeg-rec.log");
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", rtmp_port(&sk));
    // A keyframe every 2 s (what streaming services ask of OBS): a recording that waited
    // for the encoder's next keyframe after the packager found the room would lose up to
    // that much of the start (the SFU hands the packager its cached GOP instead).
    let source = TestSource {
        gop: Some(60),
        ..TestSource::default()
    };
    let mut push = rtmp_push_with(ffmpeg, &url, PUSHED as u32, &log, source);
    wait_live(&sk.base, &room, &log).await;
    // While live: listed in progress, its duration so far growing, no download yet,
    // not deletable.
    let open = wait_recording(&sk.base, &token, &room, "recording").await;
    assert!(open["ended_at_ms"].is_null(), "{open}");
    assert!(open["mp4_url"].is_null(), "{open}");
    let open_id = open["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one_url = format!("{}/api/v1/recordings/{open_id}", sk.base);
    let later = send_json(reqwest::Client::new().get(&one_url).bearer_auth(&token)).await;
    assert_eq!(later["status"], "recording", "{later}");
    assert!(
        later["duration_ms"].as_i64().unwrap() > open["duration_ms"].as_i64().unwrap(),
        "{open} then {later}"
    );
    // Its size so far, reported by the packager as it grows.
    let first_bytes = open["bytes"].as_i64().unwrap();
    assert!(first_bytes > 0, "no bytes while recording: {open}");
    eventually(
        Duration::from_secs(30),
        "the size grows while recording",
        || async {
            let now = send_json(reqwest::Client::new().get(&one_url).bearer_auth(&token)).await;
            match now["bytes"].as_i64() {
                Some(b) if b > first_bytes && now["status"] == "recording" => Ok(()),
                _ => Err(format!("{open} then {now}")),
            }
        },
    )
    .await;
    let refused = reqwest::Client::new()
        .delete(format!("{}/api/v1/recordings/{open_id}", sk.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409, "deleting a recording in progress");
    pushed(&mut push, &log).await;
    wait_offline(&sk.base, &room).await;

    let rec = wait_recording(&sk.base, &token, &room, "ready").await;
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(id, open_id, "the row in progress became ready");
    assert_eq!(recordings(&sk.base, &token, &room).await.len(), 1);
    assert!(rec["ended_at_ms"].as_i64().is_some(), "{rec}");
    // Ready: the size of its media as stored (inits, segments, the MP4).
    let media: u64 = store
        .list(&format!("{room}/{id}"))
        .await
        .iter()
        .filter(|m| {
            let name = m.location.filename().unwrap_or_default();
            name.ends_with(".m4s") || name.ends_with(".mp4")
        })
        .map(|m| m.size)
        .sum();
    assert_eq!(rec["bytes"].as_u64().unwrap(), media, "{rec}");
    let listed = rec["duration_s"].as_f64().unwrap();
    assert!(
        (listed - PUSHED).abs() <= TOLERANCE,
        "listed duration {listed}"
    );
    let one = send_json(reqwest::Client::new().get(&one_url).bearer_auth(&token)).await;
    assert_eq!(one["id"], id.as_str());
    // Reading it is the owner's, even in a public room; playing it is anyone's (below).
    let c = reqwest::Client::new();
    let list_url = format!("{}/api/v1/rooms/{room}/recordings", sk.base);
    let (other, _, _) = creator_with_room(&sk.base, "public").await;
    for (url, who, want) in [
        (&one_url, None, 401),
        (&list_url, None, 401),
        (&one_url, Some(&other), 403),
        (&list_url, Some(&other), 403),
    ] {
        let mut req = c.get(url.as_str());
        if let Some(t) = who {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "GET {url}");
    }

    // The VOD playlist: complete, typed, and ffprobe reads the stream from it.
    let playlist_url = one["playlist_url"].as_str().unwrap().to_string();
    let media_url = media_playlist_url(&playlist_url).await;
    let media = get_text(&media_url).await;
    assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{media}");
    assert!(media.ends_with("#EXT-X-ENDLIST\n"), "{media}");
    let (d, codecs) = probe(&media_url);
    assert!((d - PUSHED).abs() <= TOLERANCE, "VOD playlist duration {d}");
    assert!(codecs.iter().any(|c| c == "h264"), "{codecs:?}");
    assert!(
        codecs.iter().any(|c| c == "aac" || c == "opus"),
        "{codecs:?}"
    );

    // The download.
    let mp4 = sk.dir.join("recording.mp4");
    let mp4_url = one["mp4_url"].as_str().unwrap();
    download(mp4_url, &mp4).await;
    // Seeking: a byte range is answered with 206 and exactly those bytes.
    let whole = std::fs::read(&mp4).unwrap();
    let c = reqwest::Client::new();
    let part = c
        .get(mp4_url)
        .header("range", "bytes=100-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-1099/{}", whole.len()).as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &whole[100..1100]);
    let tail = c
        .get(mp4_url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(&tail.bytes().await.unwrap()[..], &whole[whole.len() - 10..]);
    let past = c
        .get(mp4_url)
        .header("range", format!("bytes={}-", whole.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", whole.len()).as_str()
    );
    let (d, codecs) = probe(mp4.to_str().unwrap());
    eprintln!("pushed {PUSHED} s; recording listed {listed} s, MP4 {d} s");
    assert!((d - PUSHED).abs() <= TOLERANCE, "MP4 duration {d}");
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

    // Deleting removes the row and the files (objects).
    let key = format!("{room}/{id}");
    let files = store.count(&key).await;
    assert!(files >= 4, "{files} files of the recording in the store");
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
    assert_eq!(store.count(&key).await, 0, "files left after the delete");
}

/// Every rendition is recorded, each with the audio: a simulcast WHIP publisher's three
/// layers (H.264 at three sizes, Opus) become three renditions of the recording, whose
/// VOD playlists ffprobe reads at each layer's size with Opus and the listed duration;
/// the MP4 download is the top layer's.
#[tokio::test(flavor = "multi_thread")]
async fn every_simulcast_layer_of_a_whip_stream_is_recorded_with_its_audio() {
    let Some(store) = Store::start(Kind::Dir).await else {
        return;
    };
    let (sk, token, room, key) = recorded_room(store.env.clone()).await;
    let mut publisher =
        simulcast::SimulcastPublisher::start(&format!("{}/whip/{room}", sk.base), &key).await;
    publisher.wait_connected(Duration::from_secs(10)).await;
    wait_recording(&sk.base, &token, &room, "recording").await;
    // A few segments of every layer (2 s each).
    tokio::time::sleep(Duration::from_secs(12)).await;
    publisher.stop().await;
    wait_offline(&sk.base, &room).await;
    let rec = wait_recording(&sk.base, &token, &room, "ready").await;
    let listed = rec["duration_s"].as_f64().unwrap();

    let playlist_url = rec["playlist_url"].as_str().unwrap();
    let index = get_text(playlist_url).await;
    let renditions: Vec<&str> = index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let want: Vec<String> = simulcast::LAYERS
        .iter()
        .map(|l| format!("{}/media.m3u8", l.rid))
        .collect();
    assert_eq!(
        renditions, want,
        "one rendition per layer, largest first:\n{index}"
    );
    let base = playlist_url.trim_end_matches("/index.m3u8");
    for l in &simulcast::LAYERS {
        let url = format!("{base}/{}/media.m3u8", l.rid);
        let media = get_text(&url).await;
        assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{media}");
        simulcast::assert_rendition_of("ffprobe", &url, l);
        let (d, _) = probe(&url);
        assert!(
            (d - listed).abs() <= 1.0,
            "{}: {d} s, listed {listed} s",
            l.rid
        );
    }
    let mp4 = sk.dir.join("simulcast.mp4");
    download(rec["mp4_url"].as_str().unwrap(), &mp4).await;
    let top = &simulcast::LAYERS[0];
    let out = common::ffprobe_streams("ffprobe", "codec_name,width,height", mp4.to_str().unwrap());
    let streams = String::from_utf8_lossy(&out.stdout);
    assert!(
        streams.contains(&format!(
            "codec_name=h264|width={}|height={}",
            top.width, top.height
        )) && streams.contains("codec_name=opus"),
        "the MP4 is the top layer with its audio: {streams}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packager_killed_mid_stream_leaves_one_recording_with_both_halves() {
    takeover(Kind::Dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packager_killed_mid_stream_leaves_one_recording_with_both_halves_in_s3() {
    takeover(Kind::S3).await;
}

async fn takeover(kind: Kind) {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let Some(redis) = redis_url() else {
        return;
    };
    let Some(store) = Store::start(kind).await else {
        return;
    };
    let mut c = common::TwoPackagers::start_with(&redis, &store.env).await;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let started = c
            .packagers
            .iter()
            .position(|p| p.logs().contains("recording started"));
        if let Some(i) = started {
            if store.open_recording(&room).await.is_some() {
                break i;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no packager records: {}",
            c.packagers
                .iter()
                .map(|p| p.logs())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Listed in progress once it has a segment.
    let in_progress = wait_recording(&c.api.base, &token, &room, "recording").await;
    // The packager not recording it serves it too: it learns the room from the API.
    let open = store
        .open_recording(&room)
        .await
        .expect("an open recording");
    let other = &c.packagers[1 - holder];
    let event = get_text(&format!("{}/recordings/{open}/main/media.m3u8", other.base)).await;
    assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{event}");
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
    // While recording: the EVENT playlist, rendered from the state, served by the
    // survivor, has the survivor's first segment after the discontinuity.
    let open = store
        .open_recording(&room)
        .await
        .expect("an open recording");
    let event_url = format!("{}/recordings/{open}/main/media.m3u8", survivor.base);
    eventually(
        Duration::from_secs(60),
        "the EVENT playlist continues after a discontinuity",
        || {
            let url = event_url.clone();
            async move {
                let event = get_text(&url).await;
                let open = event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n")
                    && !event.contains("#EXT-X-ENDLIST");
                let continued = event
                    .split_once("#EXT-X-DISCONTINUITY\n")
                    .is_some_and(|(_, after)| after.contains(".m4s"));
                if open && continued {
                    Ok(())
                } else {
                    Err(event)
                }
            }
        },
    )
    .await;
    // The survivor continues the same row, still in progress.
    let list = recordings(&c.api.base, &token, &room).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], in_progress["id"], "{list:?}");
    assert_eq!(list[0]["status"], "recording", "{list:?}");
    pushed(&mut push, &log).await;
    wait_offline(&c.api.base, &room).await;

    let rec = wait_recording(&c.api.base, &token, &room, "ready").await;
    let list = recordings(&c.api.base, &token, &room).await;
    assert_eq!(list.len(), 1, "one recording across the takeover: {list:?}");
    let id = rec["id"].as_str().unwrap();
    assert_eq!(
        rec["id"], in_progress["id"],
        "the row in progress became ready"
    );
    // The top rendition's playlist, read from the store itself.
    let index = store
        .read(&format!("{room}/{id}/index.m3u8"))
        .await
        .expect("index.m3u8 in the store");
    let rendition = index
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("no rendition in {index}"));
    let text = store
        .read(&format!("{room}/{id}/{rendition}"))
        .await
        .expect("the rendition's playlist");
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    // Served from the store by the packager that is left.
    let (d, _) = probe(&format!("{}/recordings/{id}/{rendition}", survivor.base));
    // Lost: at most the segment in progress (2 s) and the takeover gap (lease expiry,
    // a discovery tick, the new pull): generous bound, no timing asserted beyond it.
    assert!(d >= 40.0 - 2.0 - 15.0, "recorded {d} s of 40 s");
}
