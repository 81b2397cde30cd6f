//! One SFU node asked for more viewers than it can serve (issue 15, "overload without
//! collapse"), by the real load generator: `skylark api`, `skylark signaling` and one
//! `skylark sfu` (one worker) sharing Redis, then `skylark loadtest` asks for far more
//! viewers than the node can forward to. The viewers it admits keep their latency and
//! get every frame; the rest are refused with a 503 that says what to do.
//!
//! Deterministic on a shared machine: the SFU is capped at half a CPU (a cgroup, see
//! `common::cpu_group`) while the test's other processes (the load generator above all)
//! outweigh anything else running, so the SFU is always the side that saturates and its
//! capacity is the cap, not what the machine has left. Figures of the runs:
//! docs/benchmarks.md, "Overload in CI" and "Overload: the quota's other users".

mod common;

use common::cpu_group::CpuGroups;
use common::*;
use std::time::Duration;

/// The SFU's share of one CPU, ‰. A quarter: since the core seals viewers' packets itself
/// the debug-build node takes ~3× the viewers per CPU it did (~120 at half a CPU, busy
/// 0.75), more than the debug-build load generator can receive on its core; at a quarter
/// it admits ~50, so the node is still the side that saturates.
const SFU_CPU_PERMILLE: u64 = 250;
/// Viewers asked for: about twice what the capped node admits.
const VIEWERS: u64 = 200;

/// api + one capped SFU node + signaling.
struct Node {
    _dir: tempfile::TempDir,
    api: Skylark,
    sfu: Skylark,
    signaling: Skylark,
}

async fn node(redis: &str, groups: &CpuGroups, sfu_env: &[(&str, String)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let shared = scale_out_env(redis, api_grpc, dir.path(), &[]);
    let api = Skylark::start_with(Options {
        target: Some("api"),
        env: shared(&[("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{api_grpc}"))]),
        dir: Some(dir.path().join("api")),
    })
    .await;
    let sfu_env = [
        &[
            ("SKYLARK_GRPC_ADDR", "127.0.0.1:0".to_string()),
            ("SKYLARK_NODE_ID", "sfu-capped".into()),
            // One worker: the cap is one worker's capacity.
            ("SKYLARK_SFU_WORKERS", "1".into()),
        ],
        sfu_env,
    ]
    .concat();
    let sfu = Skylark::start_with(Options {
        target: Some("sfu"),
        env: shared(&sfu_env),
        dir: Some(dir.path().join("sfu")),
    })
    .await;
    groups.cap(sfu.child.id());
    let signaling = Skylark::start_with(Options {
        target: Some("signaling"),
        env: shared(&[]),
        dir: Some(dir.path().join("signaling")),
    })
    .await;
    Node {
        _dir: dir,
        api,
        sfu,
        signaling,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_keeps_its_viewers_latency_and_refuses_the_rest() {
    let Some(redis) = redis_url() else { return };
    // Dropped last: the processes leave their groups first.
    let groups = match CpuGroups::new(SFU_CPU_PERMILLE) {
        Ok(g) => g,
        Err(why) => {
            skip(&format!(
                "the overload test caps the SFU's CPU with a cgroup and can't here ({why}): \
                 run it as root on Linux with the cpu controller"
            ));
            return;
        }
    };
    let n = node(&redis, &groups, &[]).await;
    let (_, room, key) = creator_with_room(&n.api.base, "public").await;

    let extra = ["--api-url", &n.api.base, "--duration", "18s", "--json"];
    let args = loadtest::viewers_of(&n.signaling.base, &room, &key, VIEWERS, "20/s", &extra);
    let out = loadtest::output(&args, Duration::from_secs(150)).await;
    let (report, stderr) = loadtest::report(&n.sfu, &out);
    // The run's figures, for the record when it fails (and docs/benchmarks.md).
    eprintln!("{stderr}\ncapped SFU: {}", groups.capped_stat());
    // The node's own account (busy, capacity, process CPU per window; admissions), for
    // tuning: `OVERLOAD_SFU_LOG=/tmp/sfu.log`.
    if let Ok(to) = std::env::var("OVERLOAD_SFU_LOG") {
        std::fs::write(to, n.sfu.logs()).unwrap();
    }

    // 0 where the report has no such figure (then the assertions below say so).
    let count = |p: &str| report.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    let playing = count("/viewers/playing");
    let refused = count("/failures/http_503");
    // Driven past its capacity: some admitted, many refused.
    assert!(playing >= 20, "the node serves viewers: {report:#}");
    assert!(
        refused >= VIEWERS / 5,
        "the node refused viewers: {report:#}"
    );
    // Every viewer is either served or cleanly refused: no timeouts, no failed
    // connections, no viewer left without a picture, no join still hanging at the end.
    assert_eq!(
        playing + refused,
        VIEWERS,
        "every viewer plays or is refused with a 503: {report:#}"
    );
    assert_eq!(count("/viewers/connected"), playing, "{report:#}");
    let said = report["failure_messages"]["http_503"]
        .as_str()
        .unwrap_or_default();
    // One text for "no node has room", whether the registry or the node said so.
    assert!(
        said.contains("is full or out of CPU: retry in"),
        "a refusal says what to do: {said:?}"
    );

    // The admitted viewers keep live latency and get every frame: no collapse (the
    // failure this guards against: every viewer's latency growing to seconds), and the
    // issue's bound. It holds once busy counts what the rest of the process takes from
    // the quota: p99 39-99 ms in 30 of 30 runs, 87-219 ms before (docs/benchmarks.md,
    // "Overload: the quota's other users").
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap_or(f64::MAX);
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX);
    assert!(
        p50 <= 200.0,
        "admitted viewers' latency p50 {p50} ms: {report:#}"
    );
    assert!(
        p99 <= 200.0,
        "admitted viewers' latency p99 {p99} ms: {report:#}"
    );
    let loss = report["loss_pct"].as_f64().unwrap_or(f64::MAX);
    assert!(loss <= 1.0, "admitted viewers' loss {loss} %: {report:#}");
    assert_eq!(
        loadtest::count(&report, "/frames_bad_hash"),
        0,
        "payloads intact: {report:#}"
    );
    drop(n);
}
