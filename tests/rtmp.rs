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

/// Reads an HTTP-FLV response tag by tag with the media crate's parser.
struct FlvReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Bytes of whole tags parsed so far (`buf` keeps them, for FFmpeg to decode).
    pos: usize,
}

/// One tag: type, timestamp (ms), body.
type Tag = (u8, u32, Vec<u8>);

impl FlvReader {
    async fn open(url: &str) -> FlvReader {
        let resp = reqwest::get(url).await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let mut r = FlvReader {
            resp,
            buf: Vec::new(),
            pos: 0,
        };
        loop {
            match skylark_media::flv::parse_file_header(&r.buf) {
                Ok((h, first)) => {
                    assert!(h.has_video, "FLV header says no video");
                    r.pos = first;
                    return r;
                }
                Err(_) => r.fill().await,
            }
        }
    }

    async fn fill(&mut self) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
            .await
            .expect("FLV bytes within 10 s")
            .expect("FLV stream read")
            .expect("FLV stream ended early");
        self.buf.extend_from_slice(&chunk);
    }

    async fn next(&mut self) -> Tag {
        loop {
            if let Ok((t, used)) = skylark_media::flv::FlvTag::parse(&self.buf[self.pos..]) {
                let tag = (t.tag_type, t.timestamp, t.body.to_vec());
                self.pos += used;
                return tag;
            }
            self.fill().await;
        }
    }

    /// The next coded video frame: `(timestamp, keyframe)`.
    async fn next_frame(&mut self) -> (u32, bool) {
        loop {
            let (t, ts, body) = self.next().await;
            if t != skylark_media::flv::TAG_VIDEO {
                continue;
            }
            let v = skylark_media::flv::VideoTag::parse(&body).expect("a video tag");
            if matches!(v.packet, skylark_media::flv::VideoPacket::AvcNalus { .. }) {
                return (ts, v.is_keyframe());
            }
        }
    }
}

/// An FLV viewer joining mid-GOP starts at once from the room's cached GOP: sequence
/// headers, then the latest keyframe (stamped before the join), the frames after it, and
/// live frames, with no frame lost or repeated at the seam; FFmpeg decodes it cleanly.
/// The encoder's GOP is 5 s, so without the cache the first keyframe would come after
/// the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flv_viewer_joining_mid_gop_starts_at_the_cached_keyframe() {
    use skylark_media::flv::{AudioTag, VideoPacket, VideoTag, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let source = TestSource {
        gop: Some(150),
        ..TestSource::default()
    };
    let RtmpRoom {
        push: _push,
        sk,
        room,
        ..
    } = RtmpRoom::start_with(ffmpeg, "ffmpeg-gop.log", 40, source).await;
    let flv = format!("{}/flv/{room}.flv", sk.base);
    eventually(Duration::from_secs(15), "the room's FLV", || async {
        match reqwest::get(&flv).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    // A watches from the start and sees a keyframe K arrive live (its first one may be its
    // own cached start, possibly long before); B joins 1.5 s of media after K.
    let mut a = FlvReader::open(&flv).await;
    let mut keys = 0;
    let key_ts = loop {
        let (ts, key) = a.next_frame().await;
        keys += usize::from(key);
        if keys == 2 {
            break ts;
        }
    };
    let mut a_frames = vec![key_ts];
    while *a_frames.last().unwrap() < key_ts + 1500 {
        let (ts, key) = a.next_frame().await;
        assert!(!key, "a second keyframe within 1.5 s of a 5 s GOP");
        a_frames.push(ts);
    }
    let last_before_join = *a_frames.last().unwrap();
    let mut b = FlvReader::open(&flv).await;

    // B: metadata, then the AVC and AAC sequence headers, then the cached keyframe.
    let (t, _, _) = b.next().await;
    assert_eq!(t, TAG_SCRIPT, "onMetaData first");
    let (t, _, body) = b.next().await;
    assert_eq!(t, TAG_VIDEO);
    assert!(
        matches!(
            VideoTag::parse(&body).unwrap().packet,
            VideoPacket::AvcSequenceHeader(_)
        ),
        "the AVC sequence header before any frame"
    );
    let (t, _, body) = b.next().await;
    assert_eq!(t, TAG_AUDIO);
    assert!(
        matches!(
            AudioTag::parse(&body).unwrap(),
            AudioTag::AacSequenceHeader(_)
        ),
        "the AAC sequence header before any frame"
    );
    let (first_ts, first_key) = b.next_frame().await;
    assert!(first_key, "B's first frame is a keyframe");
    assert_eq!(
        first_ts,
        key_ts,
        "B starts at the keyframe A saw {} ms before B joined, not at the next one",
        last_before_join - key_ts
    );

    // The same frames as A from the keyframe on, past the join and into live ones.
    let target = last_before_join + 1000;
    let mut b_frames = vec![first_ts];
    while *b_frames.last().unwrap() < target {
        let (ts, key) = b.next_frame().await;
        assert!(!key, "no new keyframe yet (5 s GOP)");
        b_frames.push(ts);
    }
    while *a_frames.last().unwrap() < target {
        a_frames.push(a.next_frame().await.0);
    }
    assert!(
        b_frames.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {b_frames:?}"
    );
    assert_eq!(b_frames, a_frames, "B = A from the keyframe on");

    // FFmpeg decodes what B got from its first byte, without an error.
    let file = sk.dir.join("joined-mid-gop.flv");
    std::fs::write(&file, &b.buf[..b.pos]).unwrap();
    let out = std::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg decoding B's stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WebRTC viewer joining mid-GOP of an RTMP publisher (which can't be asked for a
/// keyframe) starts from the room's cached GOP: it plays before the encoder's next
/// keyframe (5 s GOP, joined 1.5 s after one), and by then it has every frame of the GOP,
/// the ones from before its join included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_viewer_joining_mid_gop_starts_from_the_cached_gop() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let source = TestSource {
        gop: Some(150),
        ..TestSource::default()
    };
    let RtmpRoom {
        push: _push,
        sk,
        room,
        ..
    } = RtmpRoom::start_with(ffmpeg, "ffmpeg-gop-webrtc.log", 40, source).await;
    let flv = format!("{}/flv/{room}.flv", sk.base);
    eventually(Duration::from_secs(15), "the room's FLV", || async {
        match reqwest::get(&flv).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    // An FLV reader tells where the encoder's keyframes are, as they arrive.
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    let mut a = FlvReader::open(&flv).await;
    let reader = tokio::spawn(async move {
        loop {
            let (ts, key) = a.next_frame().await;
            if tx.send((ts, key)).is_err() {
                return;
            }
        }
    });
    // The reader's first keyframe may be its own cached start: the second arrives live.
    let (mut keys, mut key_ts) = (0, None);
    let join_at = loop {
        let (ts, key) = frames.recv().await.expect("FLV frames");
        if key {
            keys += 1;
            key_ts = Some(ts);
        }
        match key_ts {
            Some(k) if keys >= 2 && !key && ts >= k + 1500 && frames.is_empty() => break ts,
            _ => {}
        }
    };

    let (_engine, v) = watching(&sk.base, &room).await;
    let playing = v.stats().await.unwrap();
    // The encoder's next keyframe has not come yet, and the viewer plays.
    let mut gop_frames = 0u64;
    loop {
        match frames.try_recv() {
            Ok((ts, true)) => panic!(
                "the encoder's next keyframe (at {ts} ms) came before the viewer played \
                 (joined at {join_at} ms): {playing:?}"
            ),
            Ok(_) => gop_frames += 1,
            Err(_) => break,
        }
    }
    assert!(playing.frames > 0 && playing.keyframes == 1, "{playing:?}");
    // By the next keyframe the viewer has the whole GOP, from before its join too.
    let next_key = loop {
        let (ts, key) = frames.recv().await.expect("FLV frames");
        if key {
            break ts;
        }
    };
    let at_next_key = v.stats().await.unwrap();
    let k = key_ts.unwrap();
    // From its join on it could have had (next_key − join_at) × 30 fps frames; the 45
    // frames of the GOP before the join come only from the cache.
    let since_join = u64::from(next_key - join_at) * 30 / 1000;
    assert!(
        at_next_key.frames >= since_join + 30,
        "the GOP {k}–{next_key} ms: the viewer has {} frames, {since_join} of them at most \
         from after its join at {join_at} ms ({gop_frames} FLV frames arrived while it connected): {at_next_key:?} {playing:?}",
        at_next_key.frames,
    );
    reader.abort();
}

/// The home page asks for a room's picture, and the watch page for its multivariant
/// playlist, as soon as the API says the room is live, before the packager has taken it
/// up: each request waits for what it asked, not a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_and_a_playlist_asked_for_as_the_room_goes_live_wait_for_it() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let r = RtmpRoom::start(ffmpeg, "ffmpeg-still.log", 15, false).await;
    let hls = format!("{}/hls/{}", r.sk.base, r.room);
    let (still, playlist) = tokio::join!(
        reqwest::get(format!("{hls}/still.mp4")),
        reqwest::get(format!("{hls}/index.m3u8"))
    );
    let (still, playlist) = (still.unwrap(), playlist.unwrap());
    assert_eq!(playlist.status(), 200, "{:?}", playlist.text().await);
    assert!(playlist.text().await.unwrap().contains("#EXT-X-STREAM-INF"));
    assert_eq!(still.status(), 200, "{:?}", still.text().await);
    assert_eq!(
        still
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("video/mp4")
    );
    let body = still.bytes().await.unwrap();
    assert_eq!(&body[4..8], b"ftyp", "an MP4");
}
