//! Running the real `skylark loadtest` against a test's server and reading its report.

use super::Skylark;
use serde_json::Value;
use std::ffi::OsStr;
use std::process::{Output, Stdio};
use std::time::Duration;

/// `skylark loadtest ARGS`, logs off and no stream key or viewer token taken from the
/// environment; its output. A run past `within` fails (it only stops a hang from
/// eating CI).
pub async fn output<S: AsRef<OsStr>>(args: &[S], within: Duration) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skylark"))
        .arg("loadtest")
        .args(args)
        // Logs go to stdout today (telemetry's default writer): keep them out of the
        // one JSON object the contract promises there.
        .env("RUST_LOG", "off")
        .env_remove("SKYLARK_STREAM_KEY")
        .env_remove("SKYLARK_VIEWER_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(within, out)
        .await
        .expect("loadtest finished")
        .expect("loadtest started")
}

/// A run that publishes into `room` of `base` with `key` and has `viewers` viewers
/// join at `ramp` (`N/s`), then `extra`.
pub fn viewers_of(
    base: &str,
    room: &str,
    key: &str,
    viewers: u64,
    ramp: &str,
    extra: &[&str],
) -> Vec<String> {
    let n = viewers.to_string();
    let args = ["--url", base, "--room", room, "--stream-key", key];
    [&args[..], &["--viewers", &n, "--ramp", ramp], extra]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
}

/// Asserts that the run against `sk` succeeded: its `--json` report (stdout, parsed)
/// and its human report and progress lines (stderr).
pub fn report(sk: &Skylark, out: &Output) -> (Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest failed ({}):\n{stderr}\nserver log:\n{}",
        out.status,
        sk.logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is one JSON object ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    (report, stderr.into_owned())
}

/// The count at `pointer` in a report; `u64::MAX` where there is none, so that an
/// assertion on it fails.
pub fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
}
