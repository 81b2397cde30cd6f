//! Runs `skylark` processes the way users and Kubernetes do, on free loopback ports.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `skylark` process; killed on drop, its log kept in its data dir.
pub struct Skylark {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Skylark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
pub struct Options {
    pub target: Option<&'static str>,
    pub env: HashMap<String, String>,
    pub dir: Option<PathBuf>,
}

impl Skylark {
    /// The all-in-one target on free ports, embedded defaults otherwise.
    pub async fn start() -> Skylark {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Skylark {
        let (tmp, dir) = match opts.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let http = free_port();
        let base = format!("http://127.0.0.1:{http}");
        let mut env: HashMap<String, String> = [
            ("SKYLARK_HTTP_ADDR", format!("127.0.0.1:{http}")),
            ("SKYLARK_PUBLIC_URL", base.clone()),
            ("SKYLARK_DATA_DIR", dir.join("data").display().to_string()),
            (
                "SKYLARK_RTC_UDP_ADDR",
                format!("127.0.0.1:{}", free_udp_port()),
            ),
            ("SKYLARK_RTC_PUBLIC_IP", "127.0.0.1".into()),
            ("SKYLARK_RTMP_ADDR", format!("127.0.0.1:{}", free_port())),
            ("RUST_LOG", "info,skylark_sfu=debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(opts.env);
        std::fs::create_dir_all(&dir).unwrap();
        let log_name = format!("skylark-{}-{http}.log", opts.target.unwrap_or("all"));
        let log = std::fs::File::create(dir.join(&log_name)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skylark"));
        if let Some(t) = opts.target {
            cmd.arg(t);
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("SKYLARK_")
                || k == "DATABASE_URL"
                || k == "REDIS_URL"
                || k.starts_with("OTEL_")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&env)
            .current_dir(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("start skylark");
        let mut s = Skylark {
            child,
            base,
            dir: dir.clone(),
            _tmp: tmp,
        };
        s.wait_ready(&log_name).await;
        s
    }

    async fn wait_ready(&mut self, log_name: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join(log_name)).unwrap_or_default();
                panic!("skylark exited with {st}:\n{log}");
            }
            assert!(Instant::now() < deadline, "skylark not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    out += &std::fs::read_to_string(e.path()).unwrap_or_default();
                }
            }
        }
        out
    }
}

/// A creator with a room: `(access token, room id, stream key)`.
pub async fn creator_with_room(base: &str, visibility: &str) -> (String, String, String) {
    let c = reqwest::Client::new();
    let email = format!("u{}@example.com", free_port());
    let v: Value = c
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({"email": email, "password": "password123", "display_name": "T"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["access_token"].as_str().unwrap().to_string();
    let v: Value = c
        .post(format!("{base}/api/v1/rooms"))
        .bearer_auth(&token)
        .json(&json!({"title": "test room", "visibility": visibility}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        token,
        v["room"]["id"].as_str().unwrap().into(),
        v["stream_key"].as_str().unwrap().into(),
    )
}
