//! Issue 15, "every core": with `SKYLARK_SFU_WORKERS` unset (0), an SFU node runs one
//! worker per CPU the process may use: its affinity mask (`taskset`, a cpuset) and its
//! cgroup's CPU quota (a Kubernetes CPU limit), not the machine's cores.

mod common;

use common::cpu_group::CpuGroups;
use common::*;

/// The workers the node said it started (its "SFU media sockets bound" log line).
fn workers(sk: &Skylark) -> usize {
    let logs = without_ansi(&sk.logs());
    let line = logs
        .lines()
        .find(|l| l.contains("SFU media sockets bound"))
        .unwrap_or_else(|| panic!("no startup line of the SFU in the log:\n{logs}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("workers=")?.parse().ok())
        .unwrap_or_else(|| panic!("no worker count in {line:?}"))
}

/// `text` without its terminal colours (the log colours field names).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// The all-in-one with the default worker count, started through `launcher`.
async fn node_through(launcher: &[String]) -> Skylark {
    let env = [("SKYLARK_SFU_WORKERS".to_string(), "0".to_string())];
    let opts = Options {
        env: env.into_iter().collect(),
        ..Options::default()
    };
    Skylark::start_through(launcher, opts).await
}

#[tokio::test]
async fn workers_default_to_the_cpus_the_process_may_use() {
    // This test process's CPUs; the cgroups below add a quota only to the node's group.
    let cpus = std::thread::available_parallelism().unwrap().get();
    if cpus < 2 {
        eprintln!("one CPU here: a node held to one CPU can't be told from one that is not");
    }
    let free = node_through(&[]).await;
    let want = cpus.min(skylark_sfu::core::MAX_WORKERS);
    assert_eq!(workers(&free), want, "one worker per CPU");
    drop(free);

    let pinned = node_through(&["taskset".into(), "-c".into(), "0".into()]).await;
    assert_eq!(workers(&pinned), 1, "pinned to CPU 0 (its affinity mask)");
    drop(pinned);

    // Dropped after the node: the node leaves the group first.
    let groups = match CpuGroups::new(1000) {
        Ok(g) => g,
        Err(why) => {
            skip(&format!(
                "can't give the node a cgroup CPU quota here ({why}): run as root on Linux \
                 with the cpu controller"
            ));
            return;
        }
    };
    let capped = node_through(&groups.capped_launcher()).await;
    assert_eq!(workers(&capped), 1, "a cgroup quota of one CPU");
    drop(capped);
    drop(groups);
}
