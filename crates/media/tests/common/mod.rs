//! Finding the real peers the tests drive. Also included by the workspace's own
//! integration tests (`tests/common`), so there is one place that knows where the
//! recent FFmpeg lives.

use std::path::PathBuf;

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
