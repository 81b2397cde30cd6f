//! `skylark loadtest` end to end: the real binary publishes into a running `skylark` and
//! 50 WHEP viewers watch; its `--json` report must show every viewer connected and every
//! frame delivered intact. Correctness only: figures such as latency and join time are
//! benchmarks (docs/benchmarks.md), never asserted here.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const VIEWERS: u64 = 50;

/// Runs `skylark loadtest` against `sk`: a publisher into `room` and `viewers` viewers
/// joining at `ramp`, plus `extra`, for 10 s with `--json`. Its parsed report (stdout)
/// and its human report and progress lines (stderr).
async fn run_loadtest(
    sk: &Skylark,
    (room, key): (&str, &str),
    (viewers, ramp): (u64, &str),
    extra: &[&str],
) -> (Value, String) {
    let extra = [extra, &["--duration", "10s", "--json"]].concat();
    let args = loadtest::viewers_of(&sk.base, room, key, viewers, ramp, &extra);
    loadtest::report(sk, &loadtest::output(&args, Duration::from_secs(180)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_json_report_shows_every_viewer_and_every_frame() {
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;

    let (report, stderr) = run_loadtest(&sk, (&room, &key), (VIEWERS, "50/s"), &[]).await;

    // The contract's fields exist.
    for path in [
        "/viewers/requested",
        "/viewers/connected",
        "/viewers/failed",
        "/join_ms/p50",
        "/join_ms/p95",
        "/join_ms/p99",
        "/latency_ms/p50",
        "/latency_ms/p95",
        "/latency_ms/p99",
        "/received_kbps/min",
        "/received_kbps/p50",
        "/loss_pct",
        "/packets_received",
        "/duration_s",
    ] {
        let v = report.pointer(path);
        assert!(
            v.is_some_and(Value::is_number),
            "{path} is a number in {report:#}"
        );
    }

    let n = |p: &str| loadtest::count(&report, p);
    assert_eq!(n("/viewers/requested"), VIEWERS, "{report:#}");
    assert_eq!(
        n("/viewers/connected"),
        VIEWERS,
        "every viewer connected: {report:#}"
    );
    assert_eq!(
        n("/viewers/playing"),
        VIEWERS,
        "every viewer got a keyframe: {report:#}"
    );
    assert_eq!(n("/viewers/failed"), 0, "{report:#}");
    assert_eq!(n("/viewers/unfinished"), 0, "{report:#}");
    assert_eq!(
        report["failures"].as_object().map(|m| m.len()),
        Some(0),
        "{report:#}"
    );

    // Every frame since each viewer's first keyframe arrived, byte-exact.
    assert_eq!(n("/frames_bad_hash"), 0, "payloads intact: {report:#}");
    assert_eq!(n("/frames_unmarked"), 0, "{report:#}");
    assert_eq!(n("/frames_missing"), 0, "no sequence gaps: {report:#}");
    assert_eq!(report["loss_pct"].as_f64(), Some(0.0), "{report:#}");
    // Each viewer saw frames and audio; how many depends on the machine's speed.
    let frames = n("/frames_received");
    assert!(frames >= VIEWERS, "frames for every viewer: {report:#}");
    assert!(n("/audio_packets_received") >= VIEWERS, "{report:#}");
    assert_eq!(
        n("/packets_received"),
        frames + n("/audio_packets_received"),
        "{report:#}"
    );
    // The publisher sent more frames than any single viewer can have received.
    assert!(
        n("/publisher/frames_sent") * VIEWERS >= frames,
        "{report:#}"
    );
    assert_eq!(
        n("/delete_failures"),
        0,
        "every session DELETEd: {report:#}"
    );

    // The human report went to stderr, the progress lines too.
    assert!(stderr.contains("join "), "{stderr}");
    assert!(stderr.contains("viewers "), "{stderr}");

    // Every session was closed on the server: no subscribers left in the room.
    let metrics = sk.metrics().await;
    let mut left = None;
    for _ in 0..50 {
        left = metrics_value(&sk.metrics().await, "skylark_sfu_subscribers");
        if left == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, Some(0.0), "viewers left the SFU:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_errors_say_what_to_do() {
    let sk = Skylark::start().await;
    let (_, room, _key) = creator_with_room(&sk.base, "public").await;
    let base = sk.base.as_str();
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--room", &room, "--viewers", "1"],
            &["--stream-key is required"],
        ),
        (
            &["--room", &room, "--stream-key", "sk_wrong"],
            &["refused the stream key"],
        ),
        (
            &["--room", "room_nope", "--stream-key", "k"],
            &["not found"],
        ),
        (&["--room", &room, "--no-publish"], &["not live"]),
        (
            &["--room", &room, "--no-publish", "--simulcast"],
            &["--simulcast", "drop one of them"],
        ),
    ];
    for (args, says) in cases {
        let out =
            loadtest::output(&[&["--url", base], args].concat(), Duration::from_secs(60)).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        for s in says {
            assert!(err.contains(s), "{err}");
        }
    }
}

/// `--simulcast`: the publisher sends three layers (h 320x240, m 160x120, l 80x60, each
/// its own SPS), the SFU forwards each viewer one of them, and every viewer checks every
/// frame of the layer it gets. Which layer: the SFU starts a viewer on the first layer
/// keyframe that reaches it after the join (there is no WHEP layer parameter), and the
/// publisher puts each frame's layers on the wire largest first, so every viewer is
/// expected on `h` at 320x240 — and on it alone (no frame of another layer mixed in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_simulcast_viewers_each_get_one_whole_layer() {
    const N: u64 = 20;
    let sk = Skylark::start().await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (report, stderr) = run_loadtest(&sk, (&room, &key), (N, "20/s"), &["--simulcast"]).await;
    let n = |p: &str| loadtest::count(&report, p);
    assert_eq!(report["simulcast"], Value::Bool(true), "{report:#}");

    // Every viewer played (a keyframe whose hash matched), none failed.
    assert_eq!(n("/viewers/requested"), N, "{report:#}");
    assert_eq!(n("/viewers/connected"), N, "{report:#}");
    assert_eq!(n("/viewers/playing"), N, "{report:#}");
    assert_eq!(n("/viewers/failed"), 0, "{report:#}");
    assert_eq!(n("/viewers/unfinished"), 0, "{report:#}");
    // Every frame of the layer each viewer got arrived intact and in sequence.
    assert_eq!(n("/frames_bad_hash"), 0, "{report:#}");
    assert_eq!(n("/frames_unmarked"), 0, "{report:#}");
    assert_eq!(n("/frames_missing"), 0, "{report:#}");
    assert_eq!(report["loss_pct"].as_f64(), Some(0.0), "{report:#}");
    assert!(n("/frames_received") >= N, "{report:#}");
    assert!(n("/audio_packets_received") >= N, "{report:#}");

    // What the viewers received: all on h, its SPS saying 320x240, no layer switch.
    assert_eq!(
        report["layers"],
        serde_json::json!([{"rid": "h", "layer": 0, "width": 320, "height": 240, "viewers": N}]),
        "{report:#}"
    );
    assert_eq!(n("/layer_switches"), 0, "{report:#}");

    // What the publisher sent: three layers in step, each with its own size and
    // keyframes, at the ladder's target bitrates.
    let layers = report
        .pointer("/publisher/layers")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("publisher layers in {report:#}"));
    let sent: Vec<(&str, u64, u64, u64)> = layers
        .iter()
        .map(|l| {
            (
                l["rid"].as_str().unwrap_or("?"),
                l["width"].as_u64().unwrap_or(0),
                l["height"].as_u64().unwrap_or(0),
                l["target_kbps"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("h", 320, 240, 600),
            ("m", 160, 120, 200),
            ("l", 80, 60, 75)
        ],
        "{report:#}"
    );
    let frames: Vec<u64> = layers
        .iter()
        .map(|l| l["frames_sent"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        frames[0] > 0 && frames.iter().all(|f| *f == frames[0]),
        "{report:#}"
    );
    for l in layers {
        assert!(l["keyframes_sent"].as_u64() > Some(0), "{report:#}");
        assert!(l["keyframe_requests"].as_u64().is_some(), "{report:#}");
    }
    assert_eq!(n("/publisher/frames_sent"), frames.iter().sum::<u64>());
    assert_eq!(n("/delete_failures"), 0, "{report:#}");
    assert!(stderr.contains("h 320x240: 20 viewers"), "{stderr}");
}

/// The value of an unlabelled Prometheus sample.
fn metrics_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
