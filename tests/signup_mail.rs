//! Signup in `verify` mode end to end: the all-in-one `skylark` sends its mail over SMTP
//! to a real SMTP server (Python `aiosmtpd`, from the test venv `scripts/test` fills),
//! and the link in the mail finishes the signup.

mod common;

use common::{free_port, venv_tool, Options, Skylark};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `aiosmtpd` server; killed on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    /// The Maildir it writes every message to.
    maildir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_smtp(dir: &Path) -> Option<SmtpServer> {
    let py = venv_tool(
        "python",
        &["-c", "import aiosmtpd"],
        "aiosmtpd missing from ~/.cache/skylark-test-venv: run scripts/test to install it",
    )?;
    let port = free_port();
    let maildir = dir.join("maildir");
    let log = std::fs::File::create(dir.join("aiosmtpd.log")).unwrap();
    let child = Command::new(py)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start aiosmtpd");
    let server = SmtpServer {
        child,
        port,
        maildir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "aiosmtpd not listening on {port} within 15 s: see {}",
            dir.join("aiosmtpd.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(server)
}

impl SmtpServer {
    /// Waits for a delivered message containing `needle` and returns its text.
    async fn message_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = std::fs::read_dir(self.maildir.join("new"))
                .into_iter()
                .flat_map(|rd| rd.flatten())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .find(|m| m.contains(needle));
            if let Some(m) = found {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no mail with {needle:?} delivered within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn link_token(mail: &str, base: &str) -> Option<String> {
    let (_, rest) = mail.split_once(&format!("{base}/studio#verify="))?;
    let t: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (t.len() >= 43).then_some(t)
}

/// POSTs `body` as JSON to `url`; panics on a transport error.
async fn post(c: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    c.post(url).json(body).send().await.unwrap()
}

#[tokio::test]
async fn signup_link_arrives_over_smtp_and_finishes_the_signup() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(smtp) = start_smtp(tmp.path()).await else {
        return;
    };
    let sk = Skylark::start_with(Options {
        env: [
            ("SKYLARK_SIGNUP", "verify".to_string()),
            (
                "SKYLARK_MAIL_URL",
                format!("smtp://127.0.0.1:{}?tls=none", smtp.port),
            ),
            (
                "SKYLARK_MAIL_FROM",
                "Skylark <no-reply@skylark.test>".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    })
    .await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let signup =
        json!({"email": "Smtp@Example.com", "password": "password123", "display_name": "Mail"});

    let r = post(&c, &format!("{}/api/v1/auth/signup", sk.base), &signup).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["status"], "verification_sent");

    let mail = smtp.message_with("studio#verify=").await;
    assert!(mail.contains("X-RcptTo: smtp@example.com"), "{mail}");
    assert!(mail.contains("no-reply@skylark.test"), "{mail}");
    let token = link_token(&mail, &sk.base).unwrap_or_else(|| panic!("no link in:\n{mail}"));

    let r = post(
        &c,
        &format!("{}/api/v1/auth/verify", sk.base),
        &json!({ "token": token }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let access = created["access_token"].as_str().unwrap();
    let me = c
        .get(format!("{}/api/v1/me", sk.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let login = post(
        &c,
        &format!("{}/api/v1/auth/login", sk.base),
        &json!({"email": "smtp@example.com", "password": "password123"}),
    )
    .await;
    assert_eq!(login.status(), 200);

    // The same address again: the same answer, and a mail to its owner instead of a link.
    let r = post(&c, &format!("{}/api/v1/auth/signup", sk.base), &signup).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), accepted);
    let mail = smtp.message_with("already has one").await;
    assert!(mail.contains("X-RcptTo: smtp@example.com"), "{mail}");
    assert!(mail.contains("already has one"), "{mail}");
    assert!(link_token(&mail, &sk.base).is_none(), "{mail}");

    // The used link is refused; in SMTP mode the link never reaches the log.
    let r = post(
        &c,
        &format!("{}/api/v1/auth/verify", sk.base),
        &json!({ "token": token }),
    )
    .await;
    assert_eq!(r.status(), 404);
    let logs = sk.logs();
    assert!(logs.contains("mail sent"), "{logs}");
    assert!(!logs.contains(&token), "the signup token was logged");
}
