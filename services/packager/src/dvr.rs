//! The live DVR window's disk side: a room's segments older than the live edge live in
//! files under `{data dir}/dvr/{room}-{random}/`, written and removed in order by one
//! task per room, so the packager's memory holds the live edge only (30 minutes of
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
/// A directory under the DVR root untouched this long belongs to no live room: a packager
/// that stopped without cleaning up (a crash) left it.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// The DVR settings of a packager.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How far back viewers may seek.
    pub window: Duration,
    /// Where rooms' directories go (`{data dir}/dvr`).
    pub root: PathBuf,
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

/// Removes what stopped packagers left under `root` (directories untouched for
/// [`STALE_AFTER`]); live rooms' directories get a file every segment.
pub async fn sweep_stale(root: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(root).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let old = e
            .metadata()
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            tracing::info!(dir = %e.path().display(), "removing a stale DVR directory");
            let _ = tokio::fs::remove_dir_all(e.path()).await;
        }
    }
}
