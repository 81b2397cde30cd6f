//! The server against its OpenAPI document. Schemathesis (PyPI, 4.x, in the venv
//! `scripts/test` fills) reads `/api/v1/openapi.json` from the running all-in-one
//! `skylark` and sends what it generates from it, valid and invalid, one by one and
//! chained (create a room, then edit, rotate, delete it), as a signed-up creator. Every
//! check runs: no 5xx, only documented statuses, bodies and headers as documented,
//! schema-valid requests accepted and invalid ones refused. On PostgreSQL, the database
//! of scale-out deployments (SQLite when it is unreachable outside CI).

mod common;

use common::{postgres_schema_url, send_json, unique_id, venv_tool, Options, Skylark};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Test cases per operation and phase: ~75 s here, with the stateful phase's chains.
const MAX_EXAMPLES: &str = "300";
/// A fixed seed keeps a run reproducible (`SKYLARK_FUZZ_SEED` explores others).
const DEFAULT_SEED: &str = "1";
/// Past this the run is stuck, not slow.
const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test]
async fn the_server_answers_as_its_openapi_document_says() {
    let Some(schemathesis) = venv_tool(
        "schemathesis",
        &["--version"],
        "schemathesis missing from ~/.cache/skylark-test-venv: run scripts/test to install it",
    ) else {
        return;
    };
    let mut env: std::collections::HashMap<String, String> = [
        // Limits that would turn most sign-ups and room creations into 429/403 (both
        // documented) and leave the paths behind them untested.
        ("SKYLARK_AUTH_RATE_BURST", "1000000"),
        ("SKYLARK_AUTH_RATE_PER_MIN", "1000000"),
        ("SKYLARK_MAX_ROOMS_PER_CREATOR", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let database_url = postgres_schema_url("openapi");
    if !database_url.is_empty() {
        env.insert("DATABASE_URL".into(), database_url);
    }
    let sk = Skylark::start_with(Options {
        env,
        ..Default::default()
    })
    .await;
    let base = &sk.base;

    // The binary hands the API's document the operations signaling serves.
    let doc: Value =
        send_json(reqwest::Client::new().get(format!("{base}/api/v1/openapi.json"))).await;
    let documented = skylark_telemetry::routes::documented(&doc);
    let signaling = serde_json::to_value(skylark_signaling::openapi()).unwrap();
    for op in skylark_telemetry::routes::documented(&signaling) {
        assert!(documented.contains(&op), "{op:?} missing from the document");
    }

    // Names no room can have, through signaling and the directory to the database:
    // 404 like `/rooms/{id}`, not a 400 (over 128 bytes, not UTF-8) or a 500 (NUL on
    // PostgreSQL).
    for id in ["x".repeat(200), "a%00b".into(), "%ff".into()] {
        let r = reqwest::get(format!("{base}/api/v1/rooms/{id}/playback"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "/playback of {id:?}");
    }
    // A query string that does not parse: 400 in the JSON error shape, as documented.
    let v: Value = send_json(
        reqwest::Client::new().get(format!("{base}/api/v1/rooms/x/playback?token=a&token=b")),
    )
    .await;
    assert_eq!(v["error"]["code"], "bad_request", "{v}");

    let signup = json!({
        "email": format!("fuzz{}@example.com", unique_id()),
        "password": "password123",
        "display_name": "Fuzz",
    });
    let token = send_json(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/auth/signup"))
            .json(&signup),
    )
    .await["access_token"]
        .as_str()
        .expect("a signup token")
        .to_string();

    let seed = std::env::var("SKYLARK_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let report = sk.dir.join("schemathesis.txt");
    let mut child = Command::new(schemathesis)
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
        // One worker and no example database: a seed's run repeats.
        .args(["--workers", "1", "--generation-database", "none"])
        // Data generation on a busy CI machine is slow, not wrong.
        .args(["--suppress-health-check", "too_slow"])
        .env("NO_COLOR", "1")
        .current_dir(&sk.dir)
        .stdout(Stdio::from(std::fs::File::create(&report).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(sk.dir.join("schemathesis.err")).unwrap(),
        ))
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = std::fs::read_to_string(&report).unwrap_or_default()
        + &std::fs::read_to_string(sk.dir.join("schemathesis.err")).unwrap_or_default();
    match status {
        Some(st) if st.success() => {
            eprintln!(
                "schemathesis passed in {:.0?} (seed {seed}):\n{}",
                started.elapsed(),
                summary(&output)
            );
        }
        Some(st) => panic!(
            "schemathesis found the server and its document disagreeing ({st}, seed {seed}):\n{output}\n\
             --- server log (tail) ---\n{}",
            tail(&sk.logs(), 60)
        ),
        None => panic!("schemathesis still running after {DEADLINE:?}:\n{output}"),
    }
}

/// The report from its summary on.
fn summary(report: &str) -> &str {
    report.find("SUMMARY").map_or(report, |at| &report[at..])
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
