//! A watch page in headless Chromium, driven by `tests/e2e/lib/watch-cli.js`
//! (playwright-core from `tests/e2e`), reporting what the player does as JSON lines.

use super::peers;
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// One watch page; its browser closes on drop.
pub struct WatchPage {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
}

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// playwright-core installed in `tests/e2e` (installed now with `npm ci` if it is
/// missing, as `tests/e2e/run.sh` does; never a browser download) and Chromium present.
/// `None` outside CI when either can't be had; a failure in CI.
fn ready() -> Option<()> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        peers::skip("no Chromium at /usr/bin/chromium (apt-get install chromium)");
        return None;
    }
    let dir = e2e_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        // One test process installs at a time.
        let _held = super::ports::hold("npm-ci-e2e", Duration::from_secs(300));
        if !dir.join("node_modules/playwright-core").exists() {
            let mut npm_ci = Command::new("npm");
            npm_ci
                .args(["ci", "--no-audit", "--no-fund"])
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .current_dir(&dir)
                .stdout(Stdio::null());
            let missing = "npm ci in tests/e2e failed: playwright-core missing";
            peers::runs_or_skip(&mut npm_ci, missing).then_some(())?;
        }
    }
    Some(())
}

impl WatchPage {
    /// Opens `url` (a `/watch/{room}` page served by signaling), its `/api` requests
    /// going to `api` as the chart's ingress routes them; its console goes to `log`.
    pub fn open(url: &str, api: &str, log: &std::path::Path) -> Option<WatchPage> {
        Self::open_in(None, url, api, log)
    }

    /// Like [`WatchPage::open`], the browser running inside network namespace `netns`
    /// (a viewer on a network of the test's making).
    pub fn open_in(
        netns: Option<&str>,
        url: &str,
        api: &str,
        log: &std::path::Path,
    ) -> Option<WatchPage> {
        Self::open_with(netns, url, api, log, &[])
    }

    /// Like [`WatchPage::open_in`], with watch-cli flags (`--ignore-certificate-errors`).
    pub fn open_with(
        netns: Option<&str>,
        url: &str,
        api: &str,
        log: &std::path::Path,
        flags: &[&str],
    ) -> Option<WatchPage> {
        ready()?;
        let mut cmd = match netns {
            // `ip netns exec` execs node: the child is node itself, so kill() hits it.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        cmd.arg(e2e_dir().join("lib/watch-cli.js"))
            .args([url, "--api", api])
            .args(flags);
        Some(Self::spawn(cmd, log))
    }

    /// Runs `cmd` (a node script of tests/e2e/lib), its stderr to `log`, reading the
    /// JSON lines it prints.
    fn spawn(mut cmd: Command, log: &std::path::Path) -> WatchPage {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        WatchPage { child, lines }
    }

    /// The next line for which `want` holds, passing every line to `want`; `None` if
    /// `within` passes (or the page ends) first.
    pub async fn until(
        &mut self,
        within: Duration,
        mut want: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            if line["type"] == "error" {
                eprintln!("watch page: {line}");
            }
            if want(&line) {
                return Some(line);
            }
        }
    }
}

/// A stats line showing the page playing over `transport` (`webrtc`, `p2p`): 30 frames
/// decoded and a selected candidate pair reported.
pub fn plays_over(line: &Value, transport: &str) -> bool {
    line["type"] == "stats"
        && line["transport"] == transport
        && line["framesDecoded"].as_u64().unwrap_or(0) >= 30
        && line["pair"].is_object()
}

/// A publisher drawing the wall clock on its frames (`tests/e2e/lib/source-cli.js`:
/// Chromium, pages/latency-source.html over WHIP), for a [`WatchPage`] opened with
/// `--timecode` to read glass-to-glass latency off; its browser closes on drop.
pub struct TimecodeSource(WatchPage);

impl TimecodeSource {
    /// Publishes to `whip` with stream key `key` and waits until the session is live;
    /// the script's stderr goes to `log`.
    pub async fn live(whip: &str, key: &str, log: &std::path::Path) -> Option<TimecodeSource> {
        ready()?;
        let mut cmd = Command::new("node");
        cmd.arg(e2e_dir().join("lib/source-cli.js"))
            .args([whip, key]);
        let mut cli = WatchPage::spawn(cmd, log);
        let line = cli
            .until(Duration::from_secs(45), |l| {
                l["type"] == "live" || l["type"] == "error"
            })
            .await;
        match line {
            Some(l) if l["type"] == "live" => Some(TimecodeSource(cli)),
            other => panic!(
                "the time code source goes live over WHIP: {other:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

/// Glass-to-glass latencies (ms) from the `timecode` lines of a `--timecode` page until
/// `want` samples are in or `within` passes.
pub async fn glass_to_glass(page: &mut WatchPage, want: usize, within: Duration) -> Vec<f64> {
    let mut samples = Vec::new();
    page.until(within, |l| {
        if l["type"] == "timecode" {
            let new = l["latencies"].as_array().into_iter().flatten();
            samples.extend(new.filter_map(Value::as_f64));
        }
        samples.len() >= want
    })
    .await;
    samples
}

impl Drop for WatchPage {
    fn drop(&mut self) {
        // Closing its stdin makes the script close the browser; then it is killed anyway.
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
