//! The live DVR window's disk side: a room's segments older than the live edge live in
//! files under `{data dir}/dvr/{packager}/{room}-{random}/`, written and removed in order
//! by one task per room, so the packager's memory holds the live edge only (30 minutes of
//! every rendition would be hundreds of MB per room). The store decides what to keep
//! (`store::State`); this module only does the file work it asks for.

use crate::store::RoomHls;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most segment writes a room has in flight: past it a segment is not spilled and the
/// window is cut behind the live edge rather than memory growing with a slow disk.
pub const MAX_PENDING_WRITES: usize = 64;
/// Most bytes one rendition's window keeps on disk (older segments leave first).
pub const MAX_BYTES_PER_RENDITION: u64 = 1 << 30;
/// A directory of the older layout (`{root}/{room}-{random}`, no owner lock) untouched
/// this long belongs to no live room.
const STALE_AFTER: Duration = Duration::from_secs(120);
/// In each packager's directory: the file it holds locked while it runs.
const LOCK: &str = ".lock";

/// The DVR settings of a packager.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How far back viewers may seek.
    pub window: Duration,
    /// Where rooms' directories go (`{data dir}/dvr`; this packager's own directory
    /// under it once [`claim`]ed).
    pub root: PathBuf,
}

/// A packager's own directory under the DVR root, locked for as long as this lives;
/// [`sweep_stale`] on another packager sharing the root leaves it alone.
#[derive(Debug)]
pub struct Claim {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

/// Makes `{root}/{me}` this packager's (locked, emptied of what an earlier process of
/// the same name left). Blocking file work: called once at start.
pub fn claim(root: &Path, me: &str) -> std::io::Result<Claim> {
    let safe: String = me
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = root.join(format!("p-{safe}"));
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    match try_lock(&lock) {
        Ok(true) => {}
        Ok(false) => {
            return Err(std::io::Error::other(format!(
                "{} is held by another running packager: give each packager its own node id",
                dir.display()
            )))
        }
        // A file system without locks: others' sweeps can't lock it either, so they
        // leave it alone; only what a crash leaves here stays until this name restarts.
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "DVR directory not locked");
        }
    }
    // What a crashed process of this name left.
    for e in std::fs::read_dir(&dir)?.flatten() {
        if e.file_name() != LOCK {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(Claim { dir, _lock: lock })
}

/// File work for a room's writer task, done in the order asked.
pub(crate) enum Op {
    Write {
        rendition: String,
        msn: u64,
        bytes: Bytes,
    },
    Remove {
        rendition: String,
        msn: u64,
    },
}

/// One room's DVR directory and the queue to its writer.
pub(crate) struct RoomDir {
    pub dir: PathBuf,
    pub window: f64,
    pub ops: mpsc::UnboundedSender<Op>,
    pub pending_writes: usize,
    pub writer: Option<JoinHandle<()>>,
}

/// Segment `msn` of `rendition` in `dir`. Renditions are RIDs (no `.`), the root one
/// empty: `r.{msn}.m4s`, `r{rid}.{msn}.m4s`.
pub(crate) fn segment_path(dir: &Path, rendition: &str, msn: u64) -> PathBuf {
    dir.join(format!("r{rendition}.{msn}.m4s"))
}

impl RoomDir {
    /// A fresh directory for `room` under `settings.root` and its writer task, which
    /// reports each write back to `hls` and removes the directory once the queue closes.
    pub fn start(settings: &Settings, room: &str, hls: Weak<RoomHls>) -> Self {
        let dir = settings
            .root
            .join(format!("{room}-{}", crate::random_hex(4)));
        let (ops, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer(dir.clone(), rx, hls));
        Self {
            dir,
            window: settings.window.as_secs_f64(),
            ops,
            pending_writes: 0,
            writer: Some(writer),
        }
    }
}

async fn writer(dir: PathBuf, mut rx: mpsc::UnboundedReceiver<Op>, hls: Weak<RoomHls>) {
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        tracing::error!(dir = %dir.display(), error = %e, "DVR directory could not be created: check that SKYLARK_DATA_DIR is writable; the room's window stays at the live edge");
    }
    let mut on_disk: u64 = 0;
    let mut sizes = std::collections::HashMap::new();
    while let Some(op) = rx.recv().await {
        match op {
            Op::Write {
                rendition,
                msn,
                bytes,
            } => {
                let path = segment_path(&dir, &rendition, msn);
                let ok = match tokio::fs::write(&path, &bytes).await {
                    Ok(()) => {
                        sizes.insert(path, bytes.len() as u64);
                        on_disk += bytes.len() as u64;
                        metrics::gauge!("skylark_hls_dvr_disk_bytes").increment(bytes.len() as f64);
                        true
                    }
                    Err(e) => {
                        metrics::counter!("skylark_hls_dvr_write_errors_total").increment(1);
                        tracing::warn!(path = %path.display(), error = %e, "DVR segment not written: the window is cut behind it (is the data dir's disk full?)");
                        false
                    }
                };
                if let Some(h) = hls.upgrade() {
                    h.spilled(&rendition, msn, ok);
                }
            }
            Op::Remove { rendition, msn } => {
                let path = segment_path(&dir, &rendition, msn);
                if let Some(len) = sizes.remove(&path) {
                    on_disk -= len;
                    metrics::gauge!("skylark_hls_dvr_disk_bytes").decrement(len as f64);
                    if let Err(e) = tokio::fs::remove_file(&path).await {
                        tracing::warn!(path = %path.display(), error = %e, "DVR segment not removed");
                    }
                }
            }
        }
    }
    metrics::gauge!("skylark_hls_dvr_disk_bytes").decrement(on_disk as f64);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "DVR directory not removed");
        }
    }
}

/// Reads a DVR segment file (one the writer wrote, so its size is a segment's).
pub async fn read(path: &Path) -> Option<Bytes> {
    tokio::fs::read(path).await.ok().map(Bytes::from)
}

/// Takes an exclusive `flock` on `f` without waiting: `false` when another open file
/// holds it. The kernel drops it when the process ends, however it ends. (std's
/// `File::try_lock` needs Rust 1.89; the workspace supports 1.88.)
fn try_lock(f: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor `f` keeps open for the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Removes what stopped packagers left under `root`, which several may share: a
/// packager's directory whose lock no running process holds, and directories of the
/// older layout untouched for [`STALE_AFTER`]. A running packager's rooms are never
/// touched, however long they go without a segment. Blocking file work: called once at
/// start.
pub fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join(LOCK));
        let gone = match lock {
            // Held while removing: a packager claiming the same name waits for nothing
            // (it fails to lock and says so) rather than losing files mid-removal.
            Ok(f) => match try_lock(&f) {
                Ok(true) => true,
                _ => continue,
            },
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_AFTER),
        };
        if gone {
            tracing::info!(dir = %path.display(), "removing a stopped packager's DVR directory");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two packagers share a DVR root: each one's start-up sweep removes what a stopped
    /// one left, never a running one's rooms, however old their files look.
    #[test]
    fn the_sweep_removes_stopped_packagers_directories_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let running = claim(root, "packager-a").unwrap();
        let room = running.dir.join("room1-abcd");
        std::fs::create_dir_all(&room).unwrap();
        std::fs::write(room.join("r.1.m4s"), b"x").unwrap();
        let stopped = claim(root, "packager-b").unwrap();
        std::fs::create_dir_all(stopped.dir.join("room2-abcd")).unwrap();
        let stopped_dir = stopped.dir.clone();
        drop(stopped);
        // Old enough to go by age, were it not locked.
        let old = SystemTime::now() - STALE_AFTER * 2;
        for d in [&running.dir, &room] {
            std::fs::File::open(d).unwrap().set_modified(old).unwrap();
        }
        // The older layout: by age.
        let legacy_old = root.join("room3-abcd");
        let legacy_new = root.join("room4-abcd");
        std::fs::create_dir_all(&legacy_old).unwrap();
        std::fs::create_dir_all(&legacy_new).unwrap();
        std::fs::File::open(&legacy_old)
            .unwrap()
            .set_modified(old)
            .unwrap();

        sweep_stale(root);
        assert!(room.join("r.1.m4s").exists(), "a running packager's room");
        assert!(!stopped_dir.exists(), "a stopped packager's directory");
        assert!(!legacy_old.exists());
        assert!(legacy_new.exists());
        // A second process with a running one's name can't take its directory.
        assert!(claim(root, "packager-a").is_err());
        // Once it stops, the name can be claimed again, emptied.
        drop(running);
        let again = claim(root, "packager-a").unwrap();
        assert!(!room.exists());
        assert!(again.dir.join(LOCK).exists());
    }
}
