//! The `skylark` binary as a user runs it: no configuration, an empty folder, the default
//! ports; sign up (the link from the log, the default mail transport) and create a room
//! over HTTP; metrics on the internal port only; SIGTERM; a clean exit.

#[path = "common/ports.rs"]
mod ports;
#[path = "common/process_env.rs"]
mod process_env;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Killer(Option<Child>);
impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            // Reaped, its ports are free before the next test takes the defaults.
            let _ = c.wait();
        }
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("skylark exited early with {status}: is port 8080 or 9090 taken?");
        }
        assert!(Instant::now() < deadline, "{url} not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn all_in_one_with_no_configuration() {
    // The defaults are machine-wide: one such test at a time, and nobody else on them, or
    // the readiness probe below could be answered by another server.
    let _defaults = ports::hold("default-ports", Duration::from_secs(120));
    for port in [8080, 7882, 1935] {
        assert!(
            ports::bindable(port),
            "port {port} is taken by another process: this test runs skylark on its defaults"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skylark"));
    cmd.current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "debug");
    process_env::scrub_env(&mut cmd);
    let mut guard = Killer(Some(cmd.spawn().expect("start skylark")));
    let child = guard.0.as_mut().unwrap();
    // Read as it comes: the signup link is in the log, and a full pipe would block the server.
    let out = Arc::new(Mutex::new(String::new()));
    let readers = [
        read_into(child.stdout.take().unwrap(), out.clone()),
        read_into(child.stderr.take().unwrap(), out.clone()),
    ];
    let base = "http://127.0.0.1:8080";
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_ready(&client, &format!("{base}/readyz"), child).await;

    // The default signup verifies the email; with no SMTP server the link is logged.
    let signup = client
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&serde_json::json!({"email":"bin@example.com","password":"password123","display_name":"Bin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 202);
    let link = "http://localhost:8080/studio#verify=";
    let deadline = Instant::now() + Duration::from_secs(10);
    let verify_token = loop {
        let found = out.lock().unwrap().split_once(link).map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        });
        if let Some(t) = found.filter(|t| t.len() >= 43) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no signup link in the log within 10 s:\n{}",
            out.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(out.lock().unwrap().contains("set SKYLARK_MAIL_URL"));
    let verified = client
        .post(format!("{base}/api/v1/auth/verify"))
        .json(&serde_json::json!({ "token": verify_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 201);
    let verified: serde_json::Value = verified.json().await.unwrap();
    let token = verified["access_token"].as_str().expect("access_token");
    let resp = client
        .post(format!("{base}/api/v1/rooms"))
        .bearer_auth(token)
        .json(&serde_json::json!({"title":"From the binary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let room: serde_json::Value = resp.json().await.unwrap();
    let key = room["stream_key"].as_str().unwrap().to_string();
    assert_eq!(
        room["ingest"]["whip_url"].as_str().unwrap(),
        format!(
            "http://localhost:8080/whip/{}",
            room["room"]["id"].as_str().unwrap()
        )
    );
    assert_eq!(room["ingest"]["rtmp_url"], "rtmp://localhost:1935/live");
    // Metrics only on the internal listener: loopback 9090 by default, never the public port.
    let public_metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(public_metrics.status(), 404);
    let metrics = client
        .get("http://127.0.0.1:9090/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("skylark_http_requests_total"), "{metrics}");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for r in readers {
        r.join().unwrap();
    }
    let out = out.lock().unwrap().clone();
    guard.0 = None;
    assert!(status.success(), "exit status {status}; output:\n{out}");
    assert!(out.contains("shutting down"), "{out}");
    assert!(!out.contains(&key), "the stream key was logged");
    assert!(dir.path().join("data/skylark.db").exists());
    assert!(dir.path().join("data/jwt_secret").exists());
}

/// Appends everything `pipe` gives to `out` until it closes.
fn read_into(
    mut pipe: impl Read + Send + 'static,
    out: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}
