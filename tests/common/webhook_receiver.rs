//! A webhook receiver for tests: a real HTTP server on a loopback port that checks
//! every `Skylark-Signature` with an independent HMAC-SHA256 (Python's `hmac` module)
//! and keeps what it got; it can be closed and reopened.

use super::{eventually, free_port};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const OPS_SECRET: &str = "whsec_operators-test-secret";
/// Generous: a delivery retried while the receiver was down waits up to ~1 min more.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(240);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub event_id: String,
    pub event_type: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct Shared {
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// Signing secret per path (`/ops`, `/creator`, `/admit`).
    pub secrets: Arc<Mutex<HashMap<String, String>>>,
    /// Requests whose signature or timestamp did not verify.
    pub bad: Arc<Mutex<Vec<String>>>,
    /// What `/admit` answers, and after how long (ms).
    pub admit_status: Arc<AtomicU16>,
    pub admit_delay_ms: Arc<AtomicU64>,
}

/// HMAC-SHA256 by Python's standard library: independent of the server's aws-lc-rs.
fn python_hmac(secret: &str, message: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys;print(hmac.new(sys.argv[1].encode(),sys.stdin.buffer.read(),hashlib.sha256).hexdigest())",
            secret,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (the independent HMAC)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 hmac failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Checks `Skylark-Signature: t=…,v1=…` of `body` with `secret`; `Err` says why not.
fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), String> {
    let sig = headers
        .get("skylark-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Skylark-Signature")?;
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t=")?, v1.ok_or("no v1=")?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(t) > 300 {
        return Err(format!("timestamp {t} is {}s off", now.abs_diff(t)));
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let expected = python_hmac(secret, &message);
    if expected != v1 {
        return Err(format!("v1 {v1} != {expected}"));
    }
    Ok(())
}

async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_string();
    let secret = shared.secrets.lock().unwrap().get(&path).cloned();
    let checked = match secret {
        Some(s) => {
            let (h, b) = (headers.clone(), body.clone());
            tokio::task::spawn_blocking(move || verify(&h, &b, &s))
                .await
                .unwrap()
        }
        None => Err(format!("no secret known for {path}")),
    };
    if let Err(e) = checked {
        shared.bad.lock().unwrap().push(format!("{path}: {e}"));
        return StatusCode::UNAUTHORIZED;
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    shared.calls.lock().unwrap().push(Call {
        path: path.clone(),
        event_id: header("skylark-event-id"),
        event_type: header("skylark-event-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if path == "/admit" {
        let delay = shared.admit_delay_ms.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        return StatusCode::from_u16(shared.admit_status.load(Ordering::Relaxed)).unwrap();
    }
    StatusCode::OK
}

/// The test's webhook receiver on a fixed loopback port, which it can close and reopen.
pub struct Receiver {
    pub port: u16,
    pub shared: Shared,
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver {
            port: free_port(),
            shared: Shared::default(),
            stop: None,
        };
        r.shared
            .secrets
            .lock()
            .unwrap()
            .insert("/ops".into(), OPS_SECRET.into());
        r.shared.admit_status.store(204, Ordering::Relaxed);
        r.up().await;
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn up(&mut self) {
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(self.shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the receiver's port");
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        self.stop = Some((stop, task));
    }

    /// Closes the port: deliveries fail to connect until [`Receiver::up`].
    pub async fn down(&mut self) {
        if let Some((stop, task)) = self.stop.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    pub fn set_secret(&self, path: &str, secret: &str) {
        self.shared
            .secrets
            .lock()
            .unwrap()
            .insert(path.into(), secret.into());
    }

    pub fn calls(&self, path: &str) -> Vec<Call> {
        let bad = self.shared.bad.lock().unwrap().clone();
        assert!(bad.is_empty(), "requests that failed verification: {bad:?}");
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// The event types `path` got, each event once (at-least-once may repeat one), in
    /// the order of first arrival; `room.viewers` left out (it comes every 30 s).
    pub fn events(&self, path: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.calls(path)
            .into_iter()
            .filter(|c| c.event_type != "room.viewers" && seen.insert(c.event_id.clone()))
            .map(|c| c.event_type)
            .collect()
    }

    pub async fn wait_events(&self, path: &str, expected: &[&str]) {
        eventually(
            DELIVERY_DEADLINE,
            &format!("{path} receives {expected:?}"),
            || async {
                let got = self.events(path);
                if got.len() >= expected.len() {
                    assert_eq!(got, expected, "{path}: events in order");
                    Ok(())
                } else {
                    Err(format!("got {got:?}"))
                }
            },
        )
        .await;
    }
}
