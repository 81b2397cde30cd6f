//! Sibling pulls: a worker serving viewers of a room whose home is another worker of
//! the node pulls it from there in-process, the way an edge pulls from its parent node
//! (`crate::edge`), so a room's audience spreads over every core. The home worker
//! hands each frame once to each pulling worker (a bounded relay queue: a slow worker
//! drops and resumes at a keyframe, never slows the home); keyframe wants go back to
//! the home, coalesced there with every other consumer's. A pull stops `idle` (at most
//! [`MAX_IDLE`]) after its worker's last viewer of the room left.

use crate::edge::{ended, Feed, Step};
use crate::worker::{Command, Handle, SIBLING};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest a sibling pull outlives its last viewer: restarting one costs a keyframe,
/// not a network hop, so it need not wait as long as an edge pull.
pub const MAX_IDLE: Duration = Duration::from_secs(2);
/// Frames queued from the home worker to a pulling worker before the home drops.
const QUEUE: usize = 512;
/// A link the home worker cut (the pulling worker fell behind) is taken again after
/// this.
const RELINK_AFTER: Duration = Duration::from_millis(50);
/// Sink ids of sibling pulls, apart from the gRPC relay consumers' (which count up
/// from 1).
static NEXT_SINK: AtomicU64 = AtomicU64::new(1 << 63);

/// A sibling pull's key: the pulling worker and the room.
type Key = (usize, String);

/// The node's sibling pulls.
#[derive(Clone)]
pub struct Spreads {
    pulls: Arc<Mutex<HashMap<Key, Arc<Pull>>>>,
    workers: Arc<[Handle]>,
    idle: Duration,
    shutdown: CancellationToken,
}

struct Pull {
    /// Since when the worker has had no viewer of the room (or a join in progress).
    empty_since: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Pull {
    fn empty_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.empty_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Spreads {
    pub fn new(workers: Arc<[Handle]>, idle: Duration, shutdown: CancellationToken) -> Self {
        Self {
            pulls: Arc::default(),
            workers,
            idle: idle.min(MAX_IDLE),
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Pull>>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sibling pulls running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Before a viewer of `room` joins `worker` (not the room's home): starts pulling
    /// the room there unless it already is.
    pub fn ensure(&self, worker: usize, room: &str) {
        let mut pulls = self.lock();
        let key = (worker, room.to_string());
        if let Some(p) = pulls.get(&key) {
            let mut empty = p.empty_since();
            // A join in progress: the idle time starts again, for it to land.
            if empty.is_some() {
                *empty = Some(Instant::now());
            }
            return;
        }
        let (Some(target), Some(home)) = (
            self.workers.get(worker).cloned(),
            self.workers
                .get(crate::workers::home_index(room, self.workers.len()))
                .cloned(),
        ) else {
            return;
        };
        tracing::debug!(room_id = %room, worker, "sibling pull starts");
        let pull = Arc::new(Pull {
            empty_since: Mutex::new(Some(Instant::now())),
            changed: Notify::new(),
        });
        pulls.insert(key.clone(), pull.clone());
        tokio::spawn(run(self.clone(), key, pull, home, target));
    }

    /// `worker`'s viewer count of `room` changed.
    pub fn viewers(&self, worker: usize, room: &str, count: usize) {
        if let Some(p) = self.lock().get(&(worker, room.to_string())) {
            *p.empty_since() = (count == 0).then(Instant::now);
            p.changed.notify_one();
        }
    }

    /// Forgets the pull if it is still idle (under the map's lock, which joins take
    /// too, so a join never lands on a stopping pull).
    fn remove_if_idle(&self, key: &Key, pull: &Arc<Pull>) -> bool {
        let mut pulls = self.lock();
        let idle = pull.empty_since().is_some_and(|t| t.elapsed() >= self.idle);
        if idle {
            pulls.remove(key);
        }
        idle
    }
}

/// Resolves once the pull has been idle for the idle time, and is forgotten.
async fn idle(spreads: &Spreads, key: &Key, pull: &Arc<Pull>) {
    let tick = (spreads.idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = pull.changed.notified() => {}
        }
        if spreads.remove_if_idle(key, pull) {
            return;
        }
    }
}

async fn run(spreads: Spreads, key: Key, pull: Arc<Pull>, home: Handle, target: Handle) {
    let room = key.1.clone();
    let mut feed = Feed::new(target, false);
    // One idle watch for the pull's life: it must outlast the frames that keep coming.
    let idle = idle(&spreads, &key, &pull);
    tokio::pin!(idle);
    let mut attached = None;
    loop {
        let sink = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let attach = Command::AttachRelay {
            room: room.clone(),
            sink,
            tx,
            consumer: SIBLING,
            from_gop: false,
        };
        if !home.send_wait(attach).await {
            break;
        }
        attached = Some(sink);
        feed.new_link();
        let step = loop {
            let step = tokio::select! {
                _ = spreads.shutdown.cancelled() => None,
                _ = &mut idle => None,
                Some(track_id) = feed.keyframes.recv() => {
                    home.send(Command::RelayKeyframe { room: room.clone(), track_id });
                    continue;
                }
                _ = ended(&mut feed.closed) => Some(feed.publisher_ended(&room).await),
                m = rx.recv() => match m {
                    // The home cut the link: this worker fell behind.
                    None => Some(Step::Broken("link cut by the home worker".into())),
                    Some(msg) => match msg.msg {
                        Some(msg) => Some(feed.apply(&room, msg).await),
                        None => continue,
                    },
                },
            };
            match step {
                Some(Step::Go | Step::Started | Step::Ended) => {}
                other => break other,
            }
        };
        match step {
            Some(Step::Broken(why)) => {
                tracing::debug!(room_id = %room, worker = key.0, %why, "sibling pull relinks");
                home.send(Command::DetachRelay {
                    room: room.clone(),
                    sink,
                });
                attached = None;
            }
            // Stopping: idle, shut down, or (not expected: publishers go to the home)
            // the room got a publisher on this worker.
            _ => break,
        }
        tokio::select! {
            _ = spreads.shutdown.cancelled() => break,
            _ = tokio::time::sleep(RELINK_AFTER) => {}
        }
    }
    if let Some(sink) = attached {
        home.send(Command::DetachRelay {
            room: room.clone(),
            sink,
        });
    }
    feed.end().await;
    let mut pulls = spreads.lock();
    if pulls.get(&key).is_some_and(|p| Arc::ptr_eq(p, &pull)) {
        pulls.remove(&key);
    }
}
