//! The CPU a worker gets: its thread's own CPU time, and the share of a CPU the process's
//! cgroup quota allows (a Kubernetes CPU limit). A worker's busy share is the first over
//! the second: wall time would also count the time other processes take from it (on a
//! loaded host a worker with two sessions measured "busy" and refused viewers), and
//! CPU time alone never nears 1 under a quota below one CPU.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU time the calling thread has used.
pub fn thread_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used (every thread).
pub fn process_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(id, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPUs the process's cgroup quota allows (the smallest along its path), `None` when no
/// quota applies or it can't be read. Reads a few small files: call it now and then.
pub fn quota() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (dir, mount, v2) = own_dir(&cgroups, &mounts)?;
    let mut best: Option<f64> = None;
    let mut at = Some(dir.as_path());
    while let Some(d) = at.filter(|d| d.starts_with(&mount)) {
        let q = if v2 {
            std::fs::read_to_string(d.join("cpu.max"))
                .ok()
                .and_then(|t| v2_quota(&t))
        } else {
            let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
            read("cpu.cfs_quota_us")
                .zip(read("cpu.cfs_period_us"))
                .and_then(|(q, p)| v1_quota(&q, &p))
        };
        best = match (best, q) {
            (Some(b), Some(q)) => Some(b.min(q)),
            (b, q) => b.or(q),
        };
        at = d.parent();
    }
    best
}

/// The process's `cpu` cgroup directory, the mount it is under, and whether it is v2:
/// v1 where a `cpu` controller hierarchy is mounted and lists the process, else v2.
fn own_dir(cgroups: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf, bool)> {
    // mountinfo: id parent dev root mountpoint options [optional…] - fstype source super
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            Some((*f.get(3)?, *f.get(4)?, *p.first()?, *p.get(2)?))
        })
        .collect();
    let entries = cgroups.lines().filter_map(|l| {
        let mut f = l.splitn(3, ':');
        Some((f.next()?, f.next()?, f.next()?))
    });
    let mut v2_path = None;
    for (_, controllers, path) in entries {
        if controllers.is_empty() {
            v2_path = Some(path);
        } else if controllers.split(',').any(|c| c == "cpu") {
            let (root, point, _, _) = mounts
                .iter()
                .find(|(_, _, fs, opts)| *fs == "cgroup" && opts.split(',').any(|o| o == "cpu"))?;
            return Some((under(point, root, path), PathBuf::from(point), false));
        }
    }
    let path = v2_path?;
    let (root, point, _, _) = mounts.iter().find(|(_, _, fs, _)| *fs == "cgroup2")?;
    Some((under(point, root, path), PathBuf::from(point), true))
}

/// Where cgroup `path` lies under a hierarchy mounted at `point` from its `root`.
fn under(point: &str, root: &str, path: &str) -> PathBuf {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    Path::new(point).join(rel)
}

/// `cpu.max`: "max 100000" or "<quota> <period>" (µs).
fn v2_quota(text: &str) -> Option<f64> {
    let mut f = text.split_whitespace();
    let quota: f64 = f.next()?.parse().ok()?;
    let period: f64 = f.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.
fn v1_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_sleeps_uses_no_cpu_time() {
        let before = thread_time();
        std::thread::sleep(Duration::from_millis(50));
        assert!(thread_time() - before < Duration::from_millis(10));
        // Work moves it (however long the host takes to give the thread 20 ms).
        let spin = std::time::Instant::now();
        while thread_time() - before < Duration::from_millis(20) {
            assert!(
                spin.elapsed() < Duration::from_secs(30),
                "the clock never moved"
            );
        }
    }

    #[test]
    fn quotas_are_read_as_cpus() {
        assert_eq!(v2_quota("max 100000\n"), None);
        assert_eq!(v2_quota("50000 100000\n"), Some(0.5));
        assert_eq!(v1_quota("-1\n", "100000\n"), None);
        assert_eq!(v1_quota("150000\n", "100000\n"), Some(1.5));
        assert_eq!(v1_quota("x", "100000"), None);
    }

    #[test]
    fn the_cpu_hierarchy_is_found_on_v1_and_v2_hosts() {
        // A hybrid host (this CI's): v1 `cpu` beside an unrelated v2 mount.
        let cgroups = "2:cpuacct:/\n1:cpu:/skylark-test-1/capped\n0::/\n";
        let mounts =
            "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n\
                      31 25 0:27 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
                      40 25 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_dir(cgroups, mounts),
            Some((
                PathBuf::from("/sys/fs/cgroup/cpu/skylark-test-1/capped"),
                PathBuf::from("/sys/fs/cgroup/cpu"),
                false
            ))
        );
        // A pure v2 container whose mount root is its own group.
        let cgroups = "0::/kubepods/pod1/c1\n";
        let mounts = "50 40 0:30 /kubepods/pod1/c1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_dir(cgroups, mounts),
            Some((
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup"),
                true
            ))
        );
        assert_eq!(own_dir("0::/\n", ""), None);
    }
}
