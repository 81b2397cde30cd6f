//! The LL-HLS of real publishes held to RFC 8216bis and Apple's HLS authoring rules by
//! `skylark_media::hls::check` (its `RULES`; README "Design notes" lists them): Debian
//! FFmpeg pushes over RTMP at several frame rates, with and without audio, and a client
//! follows the live edge with blocking reloads the way LL-HLS players do. Every playlist
//! it gets is checked, each against the one before, the multivariant playlist too, and
//! at the end the media itself (tfdt/trun of every part and segment) against the
//! EXTINF and part DURATIONs: Shaka Player stalls ("cannot find segment") when the
//! parts' timeline drifts from the segments', and ends media early when EXTINF
//! overstates it.

mod common;

use common::*;
use skylark_media::fmp4::read;
use skylark_media::hls::check::{self, MediaPlaylistText, Violation};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the client follows the live edge: several 2 s segments, each closed.
const FOLLOW: Duration = Duration::from_secs(12);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let r = c.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    r.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("{url}: {e}"))
}

async fn get_playlist(c: &reqwest::Client, url: &str) -> (String, MediaPlaylistText) {
    let body = get(c, url).await.unwrap();
    let text = String::from_utf8(body).expect("a playlist is UTF-8");
    let pl = check::parse_media(&text).unwrap_or_else(|e| panic!("{url}: {e}\n{text}"));
    (text, pl)
}

/// (msn, part) of `segM.P.m4s`.
fn part_of(uri: &str) -> Option<(u64, u64)> {
    let (m, p) = uri
        .strip_prefix("seg")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

/// The multivariant playlist at `index`, once the packager answers (within 20 s).
async fn first_answer(c: &reqwest::Client, index: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(b) = get(c, index).await {
            return String::from_utf8(b).expect("a playlist is UTF-8");
        }
        assert!(Instant::now() < deadline, "{index} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `source` over RTMP, follows the room's LL-HLS for [`FOLLOW`] and returns
/// every rule broken, with the playlist it was found in.
async fn rules_broken(source: TestSource, log: &str) -> Option<Vec<(Violation, String)>> {
    let ffmpeg = debian_ffmpeg()?;
    let room = RtmpRoom::start_with(ffmpeg, log, 40, source).await;
    let c = client();
    let base = format!("{}/hls/{}", room.sk.base, room.room);
    let index = format!("{base}/index.m3u8");
    let multivariant = first_answer(&c, &index).await;
    let mut found: Vec<(Violation, String)> = Vec::new();
    let variants =
        check::parse_multivariant(&multivariant).unwrap_or_else(|e| panic!("{e}\n{multivariant}"));
    found.extend(
        check::check_multivariant(&variants)
            .into_iter()
            .map(|v| (v, multivariant.clone())),
    );
    assert_eq!(variants.len(), 1, "one rendition per RTMP publish");
    let media_url = format!("{base}/{}", variants[0].uri);
    let dir = media_url.rsplit_once('/').unwrap().0.to_string();

    // The first playlist a player can get, asked for as soon as the room is listed.
    let (mut text, mut pl) = get_playlist(&c, &media_url).await;
    found.extend(
        check::check_media(&pl)
            .into_iter()
            .map(|v| (v, text.clone())),
    );

    // Blocking reloads for the part each playlist hints at next, as players do (after
    // the query the multivariant playlist gave the URI: its session id).
    let sep = if media_url.contains('?') { '&' } else { '?' };
    let start = Instant::now();
    let mut reloads = 0;
    // At least FOLLOW and 20 reloads: on a loaded machine the encoder falls behind real
    // time and parts come slower, which is the machine's pace, not a broken rule.
    while start.elapsed() < FOLLOW || (reloads < 20 && start.elapsed() < FOLLOW * 2) {
        let hint = pl.preload_parts.first().and_then(|u| part_of(u));
        let (msn, part) = hint.unwrap_or_else(|| panic!("no EXT-X-PRELOAD-HINT\n{text}"));
        let (next_text, next) = get_playlist(
            &c,
            &format!("{media_url}{sep}_HLS_msn={msn}&_HLS_part={part}"),
        )
        .await;
        let have = check::last_part(&next).unwrap_or((0, 0));
        assert!(
            have >= (msn, part) || next.segments.iter().any(|s| s.msn > msn),
            "the blocking reload for {msn}.{part} answered without it\n{next_text}"
        );
        found.extend(
            check::check_reload(&pl, &next)
                .into_iter()
                .chain(check::check_media(&next))
                .map(|v| (v, next_text.clone())),
        );
        (text, pl) = (next_text, next);
        reloads += 1;
    }
    let complete = pl.segments.iter().filter(|s| s.uri.is_some()).count();
    assert!(reloads >= 20, "{reloads} reloads in {FOLLOW:?}\n{text}");
    assert!(complete >= 3, "{complete} complete segments\n{text}");

    found.extend(media_timing(&c, &dir, &pl, &text).await);
    drop(room);
    Some(found)
}

/// The media `pl` lists (every part and segment, under `dir`), read back and checked
/// against it (`check_media_timing`).
async fn media_timing(
    c: &reqwest::Client,
    dir: &str,
    pl: &MediaPlaylistText,
    text: &str,
) -> Vec<(Violation, String)> {
    let map = pl.segments[0].map_uri.clone().expect("EXT-X-MAP");
    let init = get(c, &format!("{dir}/{map}")).await.unwrap();
    let tracks = read::tracks(&init).expect("the init segment parses");
    let mut media: HashMap<String, Vec<read::TrackRun>> = HashMap::new();
    for s in &pl.segments {
        for uri in s.parts.iter().map(|p| &p.uri).chain(s.uri.as_ref()) {
            let bytes = get(c, &format!("{dir}/{uri}")).await.unwrap();
            let runs = read::track_runs(&bytes).unwrap_or_else(|e| panic!("{uri}: {e:?}"));
            media.insert(uri.clone(), runs);
        }
    }
    let runs = |uri: &str| media.get(uri).cloned();
    check::check_media_timing(pl, &tracks, &runs)
        .into_iter()
        .map(|v| (v, text.to_string()))
        .collect()
}

/// Fails with every rule broken, and the playlist the first was found in.
fn assert_none_broken(found: &[(Violation, String)]) {
    if let Some((_, text)) = found.first() {
        let list: Vec<String> = found.iter().map(|(v, _)| v.to_string()).collect();
        panic!(
            "{} rules broken:\n{}\nfirst in:\n{text}",
            found.len(),
            list.join("\n")
        );
    }
}

async fn assert_rules(source: TestSource, log: &str) {
    if let Some(found) = rules_broken(source, log).await {
        assert_none_broken(&found);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_30fps_with_aac_follows_the_rules() {
    assert_rules(TestSource::default(), "ffmpeg-30-aac.log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_25fps_video_only_follows_the_rules() {
    let source = TestSource {
        fps: 25,
        audio: false,
        ..TestSource::default()
    };
    assert_rules(source, "ffmpeg-25.log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_24fps_with_aac_follows_the_rules() {
    let source = TestSource {
        fps: 24,
        audio: true,
        ..TestSource::default()
    };
    assert_rules(source, "ffmpeg-24-aac.log").await;
}

/// The live DVR window of a real publish (FFmpeg over RTMP, 1 s segments, a 10 s window):
/// a client follows the live edge with blocking reloads, every other one a delta update
/// (`_HLS_skip=YES`) applied to the playlist before it as players do, every playlist
/// checked as above (rules `skip` and `parts-edge` among them). The window holds 10 s,
/// more than the live edge kept in memory: its older segments come from disk and their
/// media is read back and checked too; a segment that slid out is gone, on disk as in the
/// playlist, and a graceful stop leaves no DVR file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvr_window_and_delta_updates_follow_the_rules() {
    const WINDOW_S: f64 = 10.0;
    let Some(ffmpeg) = debian_ffmpeg() else {
        return;
    };
    let env = [
        ("SKYLARK_DVR_WINDOW_S", "10"),
        ("SKYLARK_HLS_SEGMENT_MS", "1000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let sk = Skylark::start_with(Options {
        env,
        ..Options::default()
    })
    .await;
    let room = RtmpRoom::start_on(sk, ffmpeg, "ffmpeg-dvr.log", 60, TestSource::default()).await;
    let c = client();
    let base = format!("{}/hls/{}", room.sk.base, room.room);
    let index = format!("{base}/index.m3u8");
    let multivariant = first_answer(&c, &index).await;
    assert!(
        multivariant
            .contains("#EXT-X-SESSION-DATA:DATA-ID=\"io.skylark.dvr-window\",VALUE=\"10\"\n"),
        "{multivariant}"
    );
    let variants = check::parse_multivariant(&multivariant).unwrap();
    let media_url = format!("{base}/{}", variants[0].uri);
    let dir = media_url.rsplit_once('/').unwrap().0.to_string();
    let (mut text, mut pl) = get_playlist(&c, &media_url).await;
    let mut found: Vec<(Violation, String)> = check::check_media(&pl)
        .into_iter()
        .map(|v| (v, text.clone()))
        .collect();
    let sep = if media_url.contains('?') { '&' } else { '?' };
    let start = Instant::now();
    let (mut reloads, mut deltas, mut skipped_max) = (0, 0, 0);
    // Until the window has filled and slid for a while.
    while start.elapsed() < Duration::from_secs(24) {
        let (msn, part) = pl
            .preload_parts
            .first()
            .and_then(|u| part_of(u))
            .unwrap_or_else(|| panic!("no EXT-X-PRELOAD-HINT\n{text}"));
        reloads += 1;
        let skip = reloads % 2 == 0;
        let url = format!(
            "{media_url}{sep}_HLS_msn={msn}&_HLS_part={part}{}",
            if skip { "&_HLS_skip=YES" } else { "" }
        );
        let (next_text, next) = get_playlist(&c, &url).await;
        found.extend(
            check::check_media(&next)
                .into_iter()
                .map(|v| (v, next_text.clone())),
        );
        let next = if next.skipped > 0 {
            deltas += 1;
            skipped_max = skipped_max.max(next.skipped);
            found.extend(
                check::check_delta(&pl, &next)
                    .into_iter()
                    .map(|v| (v, next_text.clone())),
            );
            match check::merge_delta(&pl, &next) {
                Ok(merged) => merged,
                Err(_) => break, // reported by check_delta
            }
        } else {
            found.extend(
                check::check_reload(&pl, &next)
                    .into_iter()
                    .map(|v| (v, next_text.clone())),
            );
            next
        };
        (text, pl) = (next_text, next);
    }
    // The full playlist now: the window, behind the live edge too.
    let (text, pl) = get_playlist(&c, &media_url).await;
    found.extend(
        check::check_media(&pl)
            .into_iter()
            .map(|v| (v, text.clone())),
    );
    let complete: Vec<&check::SegmentEntry> =
        pl.segments.iter().filter(|s| s.uri.is_some()).collect();
    let listed: f64 = complete.iter().filter_map(|s| s.duration).sum();
    let longest = complete
        .iter()
        .filter_map(|s| s.duration)
        .fold(0.0, f64::max);
    assert!(
        listed >= WINDOW_S - longest && listed <= WINDOW_S + 2.0 * longest,
        "the playlist lists {listed:.2} s, the window is {WINDOW_S} s\n{text}"
    );
    assert!(
        complete.len() > 8,
        "more than the live edge in memory\n{text}"
    );
    assert!(deltas >= 5, "{deltas} delta updates");
    assert!(
        skipped_max >= 3,
        "delta updates skip the window's older segments"
    );
    assert!(
        text.contains("CAN-SKIP-UNTIL="),
        "delta updates offered\n{text}"
    );
    let gone = format!("{dir}/seg{}.m4s", pl.media_sequence - 1);
    let status = c.get(&gone).send().await.unwrap().status();
    assert_eq!(status, 404, "{gone}: slid out of the window");

    // The media, old segments (from disk) included, read back.
    found.extend(media_timing(&c, &dir, &pl, &text).await);
    assert_none_broken(&found);

    // On disk: the window's segments (and a few being written or removed), no more.
    let dvr_root = room.sk.dir.join("data").join("dvr");
    // `{root}/p-{packager}/{room}-…/` holds the segments.
    fn files(root: &std::path::Path) -> usize {
        std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => files(&e.path()),
                        _ => usize::from(e.path().extension().is_some_and(|x| x == "m4s")),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let on_disk = files(&dvr_root);
    assert!(
        on_disk >= complete.len() - 8 && on_disk <= complete.len() + 3,
        "{on_disk} DVR files for a window of {} segments",
        complete.len()
    );
    let mut room = room;
    let pid = room.sk.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while room.sk.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files(&dvr_root), 0, "the DVR files go with the room");
}
