//! CPU for a test's processes, whatever else runs on the machine (Linux cgroups: the v1
//! `cpu` controller or v2 `cpu.max`/`cpu.weight`). The test process and the processes it
//! starts go to a group that outweighs everything outside it (`others`, so builds running
//! next to the test don't starve it); one process can be moved to a group beside it
//! capped at a share of one CPU (`capped`). A server's capacity then is its cap, the same
//! on a quiet and on a loaded machine.
//!
//! ```text
//! <root>/skylark-test-<id>/          weight: 64× a process outside (v1; v2 the most)
//!                          others/   the test, its load generator and helpers
//!                          capped/   the server under test: `cap` of one CPU
//! ```

use std::path::{Path, PathBuf};

/// How long a period the cap is counted over: short, so that a capped process that
/// spent its share waits at most this long (a 100 ms default period would stall media
/// for up to 100 ms at a time).
const PERIOD_US: u64 = 10_000;

pub struct CpuGroups {
    top: PathBuf,
    v2: bool,
    /// The group the test process was in, to go back to before the groups are removed.
    home: PathBuf,
}

impl CpuGroups {
    /// Groups with `capped` limited to `cap_permille` ‰ of one CPU, and the test process
    /// moved into `others`. `None` (said why) where no cgroup `cpu` controller can be
    /// written (not root, no controller, a container without it).
    pub fn new(cap_permille: u64) -> Result<CpuGroups, String> {
        let (root, v2) = controller()?;
        let home = own_group(&root, v2)?;
        let top = root.join(format!("skylark-test-{}", super::unique_id()));
        std::fs::create_dir(&top).map_err(|e| format!("creating {}: {e}", top.display()))?;
        let groups = CpuGroups { top, v2, home };
        groups.setup(cap_permille)?;
        groups.join(std::process::id(), "others")?;
        Ok(groups)
    }

    fn setup(&self, cap_permille: u64) -> Result<(), String> {
        let quota = cap_permille * PERIOD_US / 1000;
        if self.v2 {
            // v2: a group with processes can't enable controllers for its children,
            // so the test itself goes to `others`, never to `top`.
            write(&self.top.join("cgroup.subtree_control"), "+cpu")?;
            write(&self.top.join("cpu.weight"), "10000")?;
            for g in ["others", "capped"] {
                mkdir(&self.top.join(g))?;
            }
            write(
                &self.top.join("capped/cpu.max"),
                &format!("{quota} {PERIOD_US}"),
            )
        } else {
            write(&self.top.join("cpu.shares"), "65536")?;
            for g in ["others", "capped"] {
                mkdir(&self.top.join(g))?;
            }
            let capped = self.top.join("capped");
            write(&capped.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&capped.join("cpu.cfs_quota_us"), &quota.to_string())
        }
    }

    /// Moves process `pid` (all its threads; the ones it starts later follow) to `group`.
    fn join(&self, pid: u32, group: &str) -> Result<(), String> {
        write(&self.top.join(group).join("cgroup.procs"), &pid.to_string())
    }

    /// Caps process `pid` at the share given to [`CpuGroups::new`].
    pub fn cap(&self, pid: u32) {
        self.join(pid, "capped").expect("cap the server's CPU");
    }

    /// A launcher (see `Skylark::start_through`) that runs its program in the capped
    /// group from its first instruction: for what a process reads of its CPUs once, at
    /// start. `sh` joins the group, then `exec`s the program.
    pub fn capped_launcher(&self) -> Vec<String> {
        let procs = self.top.join("capped/cgroup.procs");
        let script = format!("echo $$ > '{}' && exec \"$@\"", procs.display());
        vec!["sh".into(), "-c".into(), script, "sh".into()]
    }

    /// How often and how long the capped group was held back (`cpu.stat`).
    pub fn capped_stat(&self) -> String {
        std::fs::read_to_string(self.top.join("capped/cpu.stat"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for CpuGroups {
    /// The test process goes back where it was; the groups go once empty (the test's
    /// processes are killed before: drop this last).
    fn drop(&mut self) {
        let _ = write(
            &self.home.join("cgroup.procs"),
            &std::process::id().to_string(),
        );
        for g in ["capped", "others", ""] {
            let dir = self.top.join(g);
            // A killed process leaves its group a moment after `wait` returns.
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// The `cpu` controller's mount and whether it is cgroup v2.
fn controller() -> Result<(PathBuf, bool), String> {
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "cpu") {
        return Ok((v2.to_path_buf(), true));
    }
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok((v1.to_path_buf(), false));
    }
    Err("no cgroup cpu controller (v2 /sys/fs/cgroup with cpu, or v1 /sys/fs/cgroup/cpu)".into())
}

/// The group this process is in, under `root`.
fn own_group(root: &Path, v2: bool) -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let path = cgroups
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "cpu")
            };
            ours.then_some(path)
        })
        .next()
        .ok_or("this process is in no cpu cgroup")?;
    Ok(root.join(path.trim_start_matches('/')))
}

fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("writing {value} to {}: {e}", file.display()))
}
