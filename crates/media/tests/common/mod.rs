//! Finding the real peers the tests drive. Also included by the workspace's own
//! integration tests (`tests/common`), so there is one place that knows where the
//! recent FFmpeg lives.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Skips with `reason`, or fails under `CI=true`, where nothing may be skipped.
pub fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A recent FFmpeg (7+: WHIP, Enhanced RTMP/FLV): `SKYLARK_TEST_FFMPEG`, or the static
/// build from the `imageio-ffmpeg` wheel that `scripts/test` installs.
pub fn recent_ffmpeg() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SKYLARK_TEST_FFMPEG") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/skylark-test-venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|rd| {
        rd.flatten().find_map(|py| {
            let bin = py.path().join("site-packages/imageio_ffmpeg/binaries");
            std::fs::read_dir(bin)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ffmpeg-"))
                })
        })
    });
    if found.is_none() {
        skip("FFmpeg 7+ not found: run scripts/test (it installs imageio-ffmpeg) or set SKYLARK_TEST_FFMPEG");
    }
    found
}

/// Whether `probe` (a command that checks for a peer or installs it) runs and succeeds;
/// skips (see [`skip`]) saying `missing` when it does not.
pub fn runs_or_skip(probe: &mut Command, missing: &str) -> bool {
    let ok = probe.status().is_ok_and(|s| s.success());
    if !ok {
        skip(missing);
    }
    ok
}

/// Whether `tool -version` runs (Debian's `ffmpeg`, `ffprobe`); skips (see [`skip`]) when
/// it does not.
#[allow(dead_code)]
pub fn have(tool: &str) -> bool {
    let mut probe = Command::new(tool);
    probe
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    runs_or_skip(
        &mut probe,
        &format!("{tool} not found: apt-get install ffmpeg"),
    )
}

/// FFmpeg input arguments: a one-second 440 Hz tone at 48 kHz.
#[allow(dead_code)]
pub const TONE_1S_48K: [&str; 6] = [
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=48000",
    "-t",
    "1",
];

/// Asserts that `samples` (48 kHz) cross zero 880 times a second, as a 440 Hz tone does;
/// the crossings a second.
#[allow(dead_code)]
pub fn assert_440_hz_crossings<T: PartialOrd + Default>(what: &str, samples: &[T]) -> f64 {
    let zero = T::default();
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < zero) != (w[1] < zero))
        .count() as f64
        / (samples.len() as f64 / 48_000.0);
    assert!(
        (crossings - 880.0).abs() < 10.0,
        "{what}: {crossings} zero crossings/s"
    );
    crossings
}
