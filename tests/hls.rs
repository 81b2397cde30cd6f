//! LL-HLS from a live WebRTC publish, read by real HLS clients: ffprobe (Debian FFmpeg)
//! and plain HTTP with blocking playlist reloads; a simulcast publisher's layers as
//! renditions; and two packagers on Redis, where exactly one packages a room and the
//! other takes over when it dies.

mod common;
#[path = "common/simulcast.rs"]
mod simulcast;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Polls until `url` answers 200, returning its body.
async fn wait_ok(url: &str, secs: u64) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} not available within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ffprobe() -> Option<&'static str> {
    if Command::new("ffprobe").arg("-version").output().is_ok() {
        return Some("ffprobe");
    }
    skip("ffprobe (Debian package ffmpeg) not installed: run scripts/test");
    None
}

fn pdt_ms(line: &str) -> Option<i64> {
    // 2026-11-24T15:40:41.715Z → ms since the epoch (days from civil, UTC).
    let t = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:")?;
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, ms) = time.split_once('.')?;
    let h: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1000) + ms.parse::<i64>().ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_from_a_webrtc_publish() {
    let Some(ffprobe) = ffprobe() else { return };
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (_engine, publisher) = publish(&sk.base, &room, &key).await;
    let hls = format!("{}/hls/{room}", sk.base);

    let mv = wait_ok(&format!("{hls}/index.m3u8"), 15).await;
    assert_eq!(
        mv.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(mv.headers()["access-control-allow-origin"], "*");
    let mv = mv.text().await.unwrap();
    assert!(mv.contains("CODECS=\"avc1.42"), "{mv}");
    assert!(mv.contains(",opus\""), "{mv}");
    assert!(mv.contains("RESOLUTION=320x240"), "{mv}");
    // The DVR window by default (SKYLARK_DVR_WINDOW_S unset): 30 minutes.
    assert!(
        mv.contains("#EXT-X-SESSION-DATA:DATA-ID=\"io.skylark.dvr-window\",VALUE=\"1800\"\n"),
        "{mv}"
    );

    // Let a few segments accumulate, then read the media playlist.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let media = get_text(&format!("{hls}/media.m3u8")).await;
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,",
        ",PART-HOLD-BACK=",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-MAP:URI=\"init1.mp4\"",
        "#EXT-X-TARGETDURATION:2\n",
        "#EXTINF:",
        "#EXT-X-PART:DURATION=",
    ] {
        assert!(media.contains(tag), "missing {tag} in\n{media}");
    }
    // RFC 8216 §4.3.3.1: every EXTINF rounds to at most the target (the publisher's 2 s
    // GOP meets keyframe requests, so segments end at ~1.5–2 s).
    let extinf: Vec<f64> = media
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXTINF:")?
                .trim_end_matches(',')
                .parse()
                .ok()
        })
        .collect();
    assert!(
        extinf.iter().all(|d| d.round() <= 2.0 && *d >= 1.0),
        "{extinf:?}"
    );
    println!("segment durations (EXTINF): {extinf:?}");
    // HLS latency: newest part's program-date-time + its duration vs the wall clock.
    let last_pdt = media.lines().filter_map(pdt_ms).next_back().unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let parts_after: f64 = media
        .lines()
        .rev()
        .take_while(|l| !l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
        .filter_map(|l| {
            l.strip_prefix("#EXT-X-PART:DURATION=")?
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    println!(
        "HLS live edge behind the wall clock: {} ms (PDT of the newest part vs now)",
        now_ms - last_pdt - (parts_after * 1000.0) as i64
    );

    // ffprobe reads the playlist, init and segments: H.264 + Opus at the source size.
    let out = ffprobe_streams(
        ffprobe,
        "codec_name,width,height,sample_rate",
        &format!("{hls}/index.m3u8"),
    );
    let probe = String::from_utf8_lossy(&out.stdout);
    assert!(
        probe.contains("codec_name=h264|width=320|height=240"),
        "{probe}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        probe.contains("codec_name=opus|sample_rate=48000"),
        "{probe}"
    );

    // Segment durations as ffprobe sees them in one downloaded segment.
    let first_complete = media
        .lines()
        .find(|l| l.starts_with("seg") && l.ends_with(".m4s"))
        .unwrap()
        .to_string();
    let first_extinf = extinf[0];
    // The init the playlist names is immutable; `init.mp4` is the newest, uncached.
    let init = reqwest::get(format!("{hls}/init1.mp4")).await.unwrap();
    assert!(init.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let init = init.bytes().await.unwrap();
    let newest = reqwest::get(format!("{hls}/init.mp4")).await.unwrap();
    assert_eq!(newest.headers()["cache-control"], "no-cache");
    assert_eq!(newest.bytes().await.unwrap(), init);
    let seg = reqwest::get(format!("{hls}/{first_complete}"))
        .await
        .unwrap();
    assert!(seg.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let seg = seg.bytes().await.unwrap();
    let file = sk.dir.join("probe.mp4");
    std::fs::write(&file, [init.as_ref(), seg.as_ref()].concat()).unwrap();
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let frames: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let expected = (first_extinf * 30.0).round() as u32;
    assert!(
        frames.abs_diff(expected) <= 2,
        "a {first_extinf} s segment holds ~{expected} frames at 30 fps, got {frames}"
    );

    // Blocking reload: ask for the next part; the answer arrives once it exists.
    let next_msn = media.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64
        + media
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse::<u64>()
            .unwrap();
    let t = Instant::now();
    let r = reqwest::get(format!("{hls}/media.m3u8?_HLS_msn={next_msn}&_HLS_part=3"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&format!("seg{next_msn}.3.m4s")),
        "blocked until the part existed:\n{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(6));

    // Bad requests.
    let c = reqwest::Client::new();
    let status = |u: String| {
        let c = c.clone();
        async move { c.get(u).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("{hls}/media.m3u8?_HLS_msn=abc")).await, 400);
    assert_eq!(status(format!("{hls}/media.m3u8?_HLS_part=1")).await, 400);
    assert_eq!(
        status(format!("{hls}/media.m3u8?_HLS_msn=999999")).await,
        400
    );
    assert_eq!(status(format!("{hls}/..%2F..%2Fetc%2Fpasswd")).await, 404);
    assert_eq!(status(format!("{hls}/seg999999.m4s")).await, 404);
    assert_eq!(
        status(format!("{}/hls/room_nope/index.m3u8", sk.base)).await,
        404
    );

    // The room ends: the playlist says so.
    let _ = publisher.stop().await;
    let media = format!("{hls}/media.m3u8");
    eventually(
        Duration::from_secs(25),
        "EXT-X-ENDLIST after the publisher left",
        || async {
            let t = get_text(&media).await;
            t.contains("#EXT-X-ENDLIST").then_some(()).ok_or(t)
        },
    )
    .await;
}

/// `(uri, RESOLUTION, CODECS, BANDWIDTH)` of each `EXT-X-STREAM-INF`.
fn variants(multivariant: &str) -> Vec<(String, String, String, u64)> {
    let mut lines = multivariant.lines();
    let mut out = Vec::new();
    while let Some(l) = lines.next() {
        let Some(attrs) = l.strip_prefix("#EXT-X-STREAM-INF:") else {
            continue;
        };
        let get = |name: &str| {
            attrs
                .split(&format!("{name}="))
                .nth(1)
                .map(|v| {
                    let v = v.strip_prefix('"').map_or_else(
                        || v.split(',').next().unwrap_or_default(),
                        |q| q.split('"').next().unwrap_or_default(),
                    );
                    v.to_string()
                })
                .unwrap_or_default()
        };
        let uri = lines.next().unwrap_or_default().to_string();
        out.push((
            uri,
            get("RESOLUTION"),
            get("CODECS"),
            get("BANDWIDTH").parse().unwrap_or(0),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_become_renditions() {
    let Some(ffprobe) = ffprobe() else { return };
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    // h 320x240, m 160x120, l 80x60: the load generator's layers.
    let layers = simulcast::LAYERS;
    let mut publisher =
        simulcast::SimulcastPublisher::start(&format!("{}/whip/{room}", sk.base), &key).await;
    publisher.wait_connected(Duration::from_secs(10)).await;
    let hls = format!("{}/hls/{room}", sk.base);

    // Every layer is listed once it has a segment (so BANDWIDTH is measured).
    let deadline = Instant::now() + Duration::from_secs(25);
    let listed = loop {
        if let Ok(r) = reqwest::get(format!("{hls}/index.m3u8")).await {
            let t = r.text().await.unwrap();
            let v = variants(&t);
            let mut complete = 0;
            for (uri, ..) in &v {
                if get_text(&format!("{hls}/{uri}")).await.contains("#EXTINF") {
                    complete += 1;
                }
            }
            if v.len() == layers.len() && complete == v.len() {
                break (t, v);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every layer listed with a segment within 25 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (multivariant, v) = listed;
    println!("{multivariant}");
    let expected: Vec<(String, String)> = layers
        .iter()
        .map(|l| {
            (
                format!("{}/media.m3u8", l.rid),
                format!("{}x{}", l.width, l.height),
            )
        })
        .collect();
    // Each URI carries the player's session id, the same on every one (honest counts).
    let sids: Vec<&str> = v
        .iter()
        .filter_map(|x| x.0.split_once("?sid="))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        sids.len(),
        v.len(),
        "a session id on every URI:\n{multivariant}"
    );
    assert!(
        sids.iter().all(|s| *s == sids[0]),
        "one session:\n{multivariant}"
    );
    let got: Vec<(String, String)> = v
        .iter()
        .map(|x| {
            (
                x.0.split('?').next().unwrap_or_default().to_string(),
                x.1.clone(),
            )
        })
        .collect();
    assert_eq!(got, expected, "largest first:\n{multivariant}");
    for (uri, _, codecs, _) in &v {
        assert!(
            codecs.starts_with("avc1.42c0") && codecs.ends_with(",opus"),
            "{uri}: CODECS from the layer's SPS, audio muxed: {codecs}"
        );
    }
    assert!(v[0].3 > v[2].3, "BANDWIDTH follows the layer: {v:?}");

    // Each media playlist reports the other two (LL-HLS rendition reports).
    for (uri, ..) in &v {
        let media = get_text(&format!("{hls}/{uri}")).await;
        let reports: Vec<&str> = media
            .lines()
            .filter(|l| l.starts_with("#EXT-X-RENDITION-REPORT:URI=\"../"))
            .collect();
        assert_eq!(reports.len(), 2, "{uri}:\n{media}");
        assert!(!reports.iter().any(|r| r.contains(uri.as_str())), "{media}");
    }

    // ffprobe reads each rendition at its layer's size, with the audio.
    for l in &layers {
        simulcast::assert_rendition_of(ffprobe, &format!("{hls}/{}/media.m3u8", l.rid), l);
    }
    // Without simulcast the root names no media playlist of its own.
    let root = reqwest::get(format!("{hls}/media.m3u8")).await.unwrap();
    assert_eq!(root.status(), 404);
    publisher.stop().await;
}

/// Polls the media playlist until `done` holds, returning it.
async fn wait_playlist(url: &str, secs: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                let t = r.text().await.unwrap();
                if done(&t) {
                    return t;
                }
                assert!(Instant::now() < deadline, "{what} within {secs} s:\n{t}");
            }
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Media sequence numbers of the complete segments listed.
fn segment_msns(media: &str) -> Vec<u64> {
    media
        .lines()
        .filter_map(|l| l.strip_prefix("seg")?.strip_suffix(".m4s")?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_back_within_the_grace_period_resumes_hls() {
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let media = format!("{}/hls/{room}/media.m3u8", sk.base);
    let (_engine, publisher) = publish(&sk.base, &room, &key).await;
    wait_playlist(&media, 15, "a segment", |t| t.contains("#EXTINF")).await;
    let _ = publisher.stop().await;
    let ended = wait_playlist(&media, 25, "EXT-X-ENDLIST", |t| {
        t.contains("#EXT-X-ENDLIST")
    })
    .await;
    let last_before = *segment_msns(&ended).last().unwrap();

    // Back well within the 30 s grace period: the same playlist goes on, live.
    let back = Instant::now();
    let (_engine2, _publisher2) = publish(&sk.base, &room, &key).await;
    let resumed = wait_playlist(&media, 15, "new segments after the return", |t| {
        !t.contains("#EXT-X-ENDLIST") && segment_msns(t).last() > Some(&last_before)
    })
    .await;
    println!(
        "HLS resumed {} ms after the publisher came back",
        back.elapsed().as_millis()
    );
    let msns = segment_msns(&resumed);
    assert!(
        msns.windows(2).all(|w| w[1] == w[0] + 1),
        "media sequence keeps counting: {msns:?}"
    );
    assert!(
        msns.contains(&last_before),
        "old segments still listed: {msns:?}"
    );
    let after_break = resumed
        .split("#EXT-X-DISCONTINUITY\n")
        .nth(1)
        .unwrap_or_else(|| panic!("a discontinuity where the publisher came back:\n{resumed}"));
    assert_eq!(
        segment_msns(after_break).first(),
        Some(&(last_before + 1)),
        "{resumed}"
    );
    assert!(resumed.contains("#EXT-X-PRELOAD-HINT"), "{resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_packagers_one_room_and_takeover() {
    let Some(redis) = redis_url() else { return };
    let TwoPackagers {
        api,
        sfu: _sfu,
        sig,
        packagers: [mut p1, p2],
        dir: _dir,
    } = TwoPackagers::start(&redis).await;

    let (_, room, key) = creator_with_room(&api.base, "public").await;
    let (_engine, _publisher) = publish(&sig.base, &room, &key).await;

    // Both packagers answer; exactly one of them holds the room.
    let mut holders = Vec::new();
    for p in [&p1, &p2] {
        let r = wait_ok(&format!("{}/hls/{room}/media.m3u8", p.base), 20).await;
        let via = r
            .headers()
            .get("x-skylark-packager")
            .map(|v| v.to_str().unwrap().to_string());
        holders.push(via);
    }
    let forwarded: Vec<&String> = holders.iter().flatten().collect();
    assert_eq!(
        forwarded.len(),
        1,
        "one packager serves, the other passes the request on: {holders:?}"
    );
    let holder = forwarded[0].clone();
    let mut p2 = p2;
    let (dead, survivor) = if holder == "packager-a" {
        (&mut p1, &p2)
    } else {
        (&mut p2, &p1)
    };

    // Kill the holder: the survivor takes the lease and packages the room itself.
    let killed_at = Instant::now();
    dead.child.kill().unwrap();
    let _ = dead.child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/hls/{room}/media.m3u8", survivor.base)).await {
            if r.status() == 200 && r.headers().get("x-skylark-packager").is_none() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no takeover within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "packager takeover after the holder died: {} ms",
        killed_at.elapsed().as_millis()
    );
}
