//! Edge pulls: this node serves viewers of a room whose publisher is on another node.
//! One task per pulled room keeps a `RelayPull` from the parent node (the origin or
//! another edge) and feeds its frames to the core as the room's local publisher
//! ([`crate::core::Core::publish_relayed`]); the core's keyframe wants go back up the
//! same stream. A pull stops `idle` after the room's last viewer (or downstream edge)
//! left, and retries a broken link with backoff for [`RETRY_FOR`].

use crate::core::{FrameCodec, RelayedFrame, SessionError};
use crate::worker::{Command, Handle};
use crate::workers::Workers;
use futures_util::StreamExt;
use skylark_proto::sfu::v1 as pb;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a broken relay link is retried before the pull gives up.
pub const RETRY_FOR: Duration = Duration::from_secs(20);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Keyframe requests queued for the parent; the core coalesces them per track.
pub(crate) const KEYFRAME_QUEUE: usize = 64;
/// Largest relayed frame accepted (as for pushed frames: a 4K keyframe fits).
const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Label values of `skylark_sfu_rooms_pulled{depth}`: deeper pulls share the last, so the
/// series stay few whatever the tree.
const DEPTH_LABELS: [&str; 4] = ["1", "2", "3", "4+"];

/// The node's edge pulls, by room.
#[derive(Clone)]
pub struct Edges {
    pulls: Arc<Mutex<HashMap<String, Arc<Pull>>>>,
    workers: Workers,
    idle: Duration,
    shutdown: CancellationToken,
}

/// What one pull's task shares with the rest of the node.
struct Pull {
    state: Mutex<PullState>,
    /// Wakes the task: a viewer count or an upstream changed.
    changed: Notify,
}

struct PullState {
    upstream: pb::RelaySource,
    /// A different upstream a `Subscribe` named while the link worked: taken as soon as
    /// the link breaks or the parent's room ends (the publisher moved elsewhere).
    offered: Option<pb::RelaySource>,
    /// No working link to the parent (retrying), or the parent's room ended: a new
    /// upstream from a `Subscribe` is taken.
    switchable: bool,
    viewers: usize,
    /// Since when the room has had no viewer (and no join in progress).
    empty_since: Option<Instant>,
}

/// One pulled room, for the bus: its parent and hop depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledRoom {
    pub room: String,
    pub parent: String,
    pub depth: u32,
}

impl Edges {
    pub fn new(workers: Workers, idle: Duration, shutdown: CancellationToken) -> Self {
        Self {
            pulls: Arc::default(),
            workers,
            idle,
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Pull>>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rooms pulled from another node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn contains(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// The rooms pulled now; also refreshes `skylark_sfu_rooms_pulled{depth}` (this is
    /// read on every renewal of the node's relay records).
    pub fn pulled(&self) -> Vec<PulledRoom> {
        let pulled: Vec<PulledRoom> = self
            .lock()
            .iter()
            .map(|(room, p)| {
                let st = p.state();
                PulledRoom {
                    room: room.clone(),
                    parent: st.upstream.node_id.clone(),
                    depth: st.upstream.depth,
                }
            })
            .collect();
        record_depths(&pulled);
        pulled
    }

    /// Rooms whose pull has no working link (retrying, or the parent's room ended),
    /// with the node they pull from now: candidates for a new upstream.
    pub fn stranded(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(room, p)| {
                let st = p.state();
                st.switchable
                    .then(|| (room.clone(), st.upstream.node_id.clone()))
            })
            .collect()
    }

    /// The room's viewer count on this node changed.
    pub fn viewers(&self, room: &str, count: usize) {
        if let Some(p) = self.lock().get(room) {
            let mut st = p.state();
            st.viewers = count;
            st.empty_since = (count == 0).then(Instant::now);
            drop(st);
            p.changed.notify_one();
        }
    }

    /// Before a viewer of `room` subscribes with `upstream`: starts pulling the room
    /// unless this node holds its publisher or already pulls it; a pull whose link is
    /// broken (or whose parent's room ended) switches to a different `upstream`.
    pub async fn ensure(&self, room: &str, upstream: pb::RelaySource) {
        if upstream.node_id == self.workers.node_id() {
            return;
        }
        let own = self.workers.has_own_publisher(room.to_string()).await;
        let mut pulls = self.lock();
        if let Some(p) = pulls.get(room) {
            let mut st = p.state();
            // A join in progress: the idle time starts again, for it to land.
            if st.viewers == 0 {
                st.empty_since = Some(Instant::now());
            }
            if st.upstream.grpc_url == upstream.grpc_url {
                st.offered = None;
            } else if st.switchable {
                tracing::info!(room_id = %room, from = %st.upstream.grpc_url, to = %upstream.grpc_url, "edge pull switches upstream");
                st.upstream = upstream;
            } else {
                st.offered = Some(upstream);
            }
            drop(st);
            p.changed.notify_one();
            return;
        }
        if own {
            return;
        }
        tracing::info!(room_id = %room, upstream = %upstream.grpc_url, depth = upstream.depth, "edge pull starts");
        let pull = Arc::new(Pull {
            state: Mutex::new(PullState {
                upstream,
                offered: None,
                switchable: true,
                viewers: 0,
                // Until the joining viewer is counted (or if its subscribe fails).
                empty_since: Some(Instant::now()),
            }),
            changed: Notify::new(),
        });
        pulls.insert(room.to_string(), pull.clone());
        tokio::spawn(run(self.clone(), room.to_string(), pull));
    }

    /// Forgets the pull if it is still idle (checked under the map's lock, which joins
    /// take too, so a join never lands on a stopping pull).
    fn remove_if_idle(&self, room: &str, pull: &Arc<Pull>) -> bool {
        let mut pulls = self.lock();
        let idle = pull
            .state()
            .empty_since
            .is_some_and(|t| t.elapsed() >= self.idle);
        if idle {
            pulls.remove(room);
        }
        idle
    }

    fn remove(&self, room: &str, pull: &Arc<Pull>) {
        let mut pulls = self.lock();
        if pulls.get(room).is_some_and(|p| Arc::ptr_eq(p, pull)) {
            pulls.remove(room);
        }
    }
}

impl Pull {
    fn state(&self) -> std::sync::MutexGuard<'_, PullState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link broke or the parent's room ended: a new upstream may be taken; one
    /// offered meanwhile is taken now (`true`).
    fn set_switchable(&self) -> bool {
        let mut st = self.state();
        st.switchable = true;
        match st.offered.take() {
            Some(up) if up.grpc_url != st.upstream.grpc_url => {
                st.upstream = up;
                true
            }
            _ => false,
        }
    }
}

/// Why one relay link ended.
enum LinkEnd {
    /// The stream broke or never opened.
    Broken(String),
    /// A `Subscribe` named another upstream while this one was switchable.
    Switch,
    /// The room got its own publisher on this node (it moved here): nothing to pull.
    Superseded,
}

/// The pull's task: links to the parent until idle, out of retries, or shutdown.
async fn run(edges: Edges, room: String, pull: Arc<Pull>) {
    let mut feed = Feed::new(edges.workers.home(&room).clone(), true);
    let tick = (edges.idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        let upstream = pull.state().upstream.clone();
        let end = tokio::select! {
            _ = edges.shutdown.cancelled() => break,
            _ = idle(&edges, &room, &pull, tick) => {
                tracing::info!(room_id = %room, "edge pull stops: no viewer");
                break;
            }
            end = feed.link(&room, &pull, &upstream) => end,
        };
        match end {
            LinkEnd::Switch => continue,
            LinkEnd::Superseded => {
                tracing::info!(room_id = %room, "edge pull stops: the room's publisher is here");
                break;
            }
            LinkEnd::Broken(why) => {
                let since = *feed.broken_since.get_or_insert_with(Instant::now);
                if pull.set_switchable() {
                    continue;
                }
                if edges.remove_if_idle(&room, &pull) {
                    tracing::info!(room_id = %room, "edge pull stops: no viewer");
                    break;
                }
                if since.elapsed() >= RETRY_FOR {
                    tracing::warn!(room_id = %room, %why, "edge pull gives up: upstream unreachable");
                    edges.remove(&room, &pull);
                    break;
                }
                let backoff = feed.backoff;
                tracing::debug!(room_id = %room, %why, ?backoff, "edge pull retries");
                tokio::select! {
                    _ = edges.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                    // A new upstream is tried at once.
                    _ = upstream_changed(&pull, &upstream.grpc_url) => {}
                }
                feed.backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    // The room ends here as it would at its origin.
    feed.end().await;
    edges.remove(&room, &pull);
}

/// Resolves once the pull has had no viewer and no downstream relay (an edge pulling
/// from this one) for the idle time, and is forgotten.
async fn idle(edges: &Edges, room: &str, pull: &Arc<Pull>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let waited = pull
            .state()
            .empty_since
            .is_some_and(|t| t.elapsed() >= edges.idle);
        if !waited {
            continue;
        }
        if edges.workers.relay_sinks(room.to_string()).await > 0 {
            let mut st = pull.state();
            if st.viewers == 0 {
                st.empty_since = Some(Instant::now());
            }
            continue;
        }
        if edges.remove_if_idle(room, pull) {
            return;
        }
    }
}

/// Resolves when the core ended the pull's local publisher; never without one.
pub(crate) async fn ended(closed: &mut Option<oneshot::Receiver<()>>) {
    match closed {
        Some(rx) => {
            let _ = rx.await;
            *closed = None;
        }
        None => std::future::pending().await,
    }
}

async fn upstream_changed(pull: &Pull, current: &str) {
    loop {
        pull.changed.notified().await;
        if pull.state().upstream.grpc_url != current {
            return;
        }
    }
}

/// A pulled room's local publisher on one worker, fed from relay messages (an edge
/// pull's from the parent node, a sibling pull's from the room's home worker): what
/// outlives one relay link, and the retry state.
pub(crate) struct Feed {
    worker: Handle,
    keyframes_tx: mpsc::Sender<String>,
    /// The core's keyframe wants for the pull's local publisher, by track id.
    pub(crate) keyframes: mpsc::Receiver<String>,
    /// The local publisher; kept while a broken link is retried, so viewers stay.
    session: Option<String>,
    /// Fires when the core ends `session` (a publisher of the room's own took over).
    pub(crate) closed: Option<oneshot::Receiver<()>>,
    broken_since: Option<Instant>,
    backoff: Duration,
    /// The current link's tracks.
    tracks: HashMap<String, pb::TrackInfo>,
    /// The next track starts a new local publisher (a new link, a new publisher).
    fresh: bool,
    /// Frames count as relay bytes in (between nodes; not between workers).
    metered: bool,
}

/// What one relay message did to the feed.
pub(crate) enum Step {
    Go,
    /// A new local publisher started.
    Started,
    /// The upstream room ended; the local publisher is closed.
    Ended,
    /// The room has its own publisher on this worker: nothing to pull.
    Superseded,
    Broken(String),
}

impl Feed {
    pub(crate) fn new(worker: Handle, metered: bool) -> Self {
        let (keyframes_tx, keyframes) = mpsc::channel::<String>(KEYFRAME_QUEUE);
        Self {
            worker,
            keyframes_tx,
            keyframes,
            session: None,
            closed: None,
            broken_since: None,
            backoff: BACKOFF_FIRST,
            tracks: HashMap::new(),
            fresh: true,
            metered,
        }
    }

    /// A new link is a new stream (timestamps restart): a new local publisher, which
    /// the viewers follow like a publisher reconnect. It starts with the first track.
    pub(crate) fn new_link(&mut self) {
        self.tracks.clear();
        self.fresh = true;
    }

    /// Ends the local publisher (the pull stops).
    pub(crate) async fn end(&mut self) {
        self.closed = None;
        if let Some(s) = self.session.take() {
            let _ = self.worker.close(s).await;
        }
    }

    /// After [`ended`]: `Superseded` if the room got its own publisher here.
    pub(crate) async fn publisher_ended(&mut self, room: &str) -> Step {
        self.session = None;
        if self.worker.has_own_publisher(room.to_string()).await {
            return Step::Superseded;
        }
        Step::Broken("local publisher ended".into())
    }

    /// One relay message into the local publisher.
    pub(crate) async fn apply(&mut self, room: &str, msg: pb::relay_message::Msg) -> Step {
        match msg {
            pb::relay_message::Msg::Track(t) => {
                let mut step = Step::Go;
                if self.fresh || self.session.is_none() {
                    self.fresh = false;
                    match self
                        .worker
                        .publish_relayed(room.to_string(), self.keyframes_tx.clone())
                        .await
                    {
                        Ok((s, closed)) => {
                            self.session = Some(s);
                            self.closed = Some(closed);
                            step = Step::Started;
                        }
                        Err(SessionError::PublishedHere) => return Step::Superseded,
                        Err(e) => return Step::Broken(format!("local publisher refused: {e}")),
                    }
                }
                self.tracks.insert(t.track_id.clone(), t);
                step
            }
            pb::relay_message::Msg::Frame(f) => {
                let (Some(s), Some(info)) = (self.session.as_ref(), self.tracks.get(&f.track_id))
                else {
                    return Step::Go;
                };
                if f.data.is_empty() || f.data.len() > MAX_FRAME {
                    return Step::Go;
                }
                let Some(codec) = codec(&info.codec) else {
                    return Step::Go;
                };
                if self.metered {
                    metrics::counter!("skylark_sfu_relay_bytes_total", "direction" => "in")
                        .increment(f.data.len() as u64);
                }
                let frame = RelayedFrame {
                    codec,
                    track_id: f.track_id,
                    rid: info.rid.clone(),
                    fmtp: info.fmtp.clone(),
                    time: f.rtp_time,
                    data: f.data.into(),
                    keyframe: f.keyframe,
                    contiguous: f.contiguous,
                    received_at_us: f.received_at_us,
                };
                let cmd = Command::PushRelayed {
                    session: s.clone(),
                    frame,
                };
                if !self.worker.send_wait(cmd).await {
                    return Step::Broken("worker stopped".into());
                }
                Step::Go
            }
            pb::relay_message::Msg::PublisherChanged(_) => {
                // Tracks come again; the next one starts the new local publisher.
                self.new_link();
                Step::Go
            }
            // Never asked for (`from_gop` unset).
            pb::relay_message::Msg::CachedGop(_) => Step::Go,
            pb::relay_message::Msg::Ended(_) => {
                self.tracks.clear();
                self.end().await;
                Step::Ended
            }
        }
    }

    /// One relay link: opens it, then feeds the core until it ends.
    async fn link(&mut self, room: &str, pull: &Pull, upstream: &pb::RelaySource) -> LinkEnd {
        let channel = match skylark_telemetry::traced_channel(&upstream.grpc_url) {
            Ok(c) => c,
            Err(e) => return LinkEnd::Broken(e.to_string()),
        };
        let mut client = SfuNodeClient::new(channel).max_decoding_message_size(MAX_FRAME + 1024);
        let (fb_tx, fb_rx) = mpsc::channel(KEYFRAME_QUEUE);
        let start = pb::RelayFeedback {
            msg: Some(pb::relay_feedback::Msg::Start(pb::RelayStart {
                room_id: room.to_string(),
                consumer: "edge".into(),
                // Its viewers start as the origin's do (`JoinFrames`), from live frames.
                from_gop: false,
            })),
        };
        if fb_tx.send(start).await.is_err() {
            return LinkEnd::Broken("feedback closed".into());
        }
        // Long-lived: no per-call deadline; the stream lasts as long as the pull.
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(fb_rx));
        req.set_timeout(Duration::from_secs(24 * 3600));
        let mut stream = match client.relay_pull(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => return LinkEnd::Broken(e.to_string()),
        };
        tracing::info!(room_id = %room, upstream = %upstream.grpc_url, "edge pull linked");
        self.broken_since = None;
        self.backoff = BACKOFF_FIRST;
        pull.state().switchable = false;
        self.new_link();
        loop {
            let step = tokio::select! {
                Some(track_id) = self.keyframes.recv() => {
                    let msg = pb::RelayFeedback {
                        msg: Some(pb::relay_feedback::Msg::KeyframeRequest(pb::KeyframeRequest { track_id })),
                    };
                    let _ = fb_tx.try_send(msg);
                    continue;
                }
                _ = ended(&mut self.closed) => self.publisher_ended(room).await,
                _ = upstream_changed(pull, &upstream.grpc_url) => {
                    if pull.state().switchable {
                        return LinkEnd::Switch;
                    }
                    continue;
                }
                m = stream.next() => match m {
                    None => return LinkEnd::Broken("upstream closed the relay".into()),
                    Some(Err(e)) => return LinkEnd::Broken(e.to_string()),
                    Some(Ok(pb::RelayMessage { msg: Some(msg) })) => self.apply(room, msg).await,
                    Some(Ok(_)) => continue,
                },
            };
            match step {
                Step::Go => {}
                Step::Started => pull.state().switchable = false,
                // The parent's room ended: a new origin may come through `Subscribe`.
                Step::Ended => {
                    if pull.set_switchable() {
                        return LinkEnd::Switch;
                    }
                }
                Step::Superseded => return LinkEnd::Superseded,
                Step::Broken(why) => return LinkEnd::Broken(why),
            }
        }
    }
}

/// Rooms this node pulls by its hop depth from their origin (1: pulls from the origin),
/// without room ids as labels. Every label is set, so a depth that emptied reads 0.
fn record_depths(pulled: &[PulledRoom]) {
    let mut counts = [0u32; DEPTH_LABELS.len()];
    for p in pulled {
        let i = (p.depth.max(1) as usize - 1).min(DEPTH_LABELS.len() - 1);
        counts[i] += 1;
    }
    for (label, n) in DEPTH_LABELS.iter().zip(counts) {
        metrics::gauge!("skylark_sfu_rooms_pulled", "depth" => *label).set(f64::from(n));
    }
}

fn codec(name: &str) -> Option<FrameCodec> {
    match name {
        "H264" => Some(FrameCodec::H264),
        "opus" => Some(FrameCodec::Opus),
        "aac" => Some(FrameCodec::Aac),
        _ => None,
    }
}
