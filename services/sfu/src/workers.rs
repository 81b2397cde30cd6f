//! The node's workers, as one: one core per worker, each on its own task and its own
//! socket of the node's one UDP port. A room lives at its *home* worker (a hash of its
//! id): its publisher, local publishers (RTMP, edge pulls) and relay consumers go
//! there. A viewer goes to the least-loaded worker; a worker other than the home pulls
//! the room from it in-process (`crate::spread`), one copy of each frame per worker,
//! never one per viewer. Session ids name their worker (`core::session_worker`), so
//! PATCH, DELETE and pushed frames go straight to it.

use crate::core::{admit, session_worker, Choice, Counters, LayerReport, Role, SessionError};
use crate::cpu;
use crate::spread::Spreads;
use crate::worker::{Command, Handle, Snapshot, RELAY_CONSUMERS};
use skylark_proto::sfu::v1 as pb;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A cloneable handle to every worker of the node.
#[derive(Clone)]
pub struct Workers {
    all: Arc<[Handle]>,
    node_id: Arc<str>,
    max_sessions: usize,
    /// Busy share (0–1) past which a worker takes no new viewer.
    overload_at: f64,
    /// Sessions being created: counted with the workers' loads at admission.
    in_flight: Arc<Mutex<usize>>,
    spreads: Spreads,
}

/// A session being created, counted until its worker counts it.
struct Reservation<'a>(&'a Mutex<usize>);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *lock(self.0) -= 1;
    }
}

fn lock(m: &Mutex<usize>) -> std::sync::MutexGuard<'_, usize> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workers {
    pub fn new(
        all: Vec<Handle>,
        node_id: String,
        max_sessions: usize,
        overload_at: f64,
        idle: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let all: Arc<[Handle]> = all.into();
        Self {
            spreads: Spreads::new(all.clone(), idle, shutdown),
            all,
            node_id: node_id.into(),
            max_sessions,
            overload_at,
            in_flight: Arc::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The room's home worker: where its publisher and relay consumers are.
    pub fn home(&self, room: &str) -> &Handle {
        &self.all[home_index(room, self.all.len())]
    }

    fn by_session(&self, id: &str) -> Result<&Handle, SessionError> {
        session_worker(id)
            .and_then(|w| self.all.get(usize::from(w)))
            .ok_or(SessionError::UnknownSession)
    }

    /// Admission over the whole node (each core only sees its own sessions).
    fn reserve(&self, role: Role) -> Result<Reservation<'_>, SessionError> {
        let mut in_flight = lock(&self.in_flight);
        let load: usize = self.all.iter().map(Handle::load).sum();
        admit(false, load + *in_flight, self.max_sessions, role)?;
        *in_flight += 1;
        Ok(Reservation(&self.in_flight))
    }

    pub async fn publish(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        let _r = self.reserve(Role::Publisher)?;
        self.home(&room).publish(room, offer).await
    }

    /// A viewer joins the least-loaded worker (the home on a tie); another worker
    /// starts pulling the room from the home first.
    pub async fn subscribe(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        let _r = self.reserve(Role::Subscriber)?;
        let home = home_index(&room, self.all.len());
        // Only workers with CPU to spare: the viewers they serve keep their latency,
        // the newcomer goes to another node.
        let (w, _) = self
            .all
            .iter()
            .enumerate()
            .filter(|(_, h)| h.meter().projected_busy(h.load() + 1) < self.overload_at)
            .min_by_key(|(i, h)| (h.load(), *i != home))
            .ok_or_else(|| {
                let h = &self.all[home];
                tracing::debug!(
                    busy = h.meter().busy(),
                    projected = h.meter().projected_busy(h.load() + 1),
                    sessions = h.load(),
                    "viewer refused for CPU"
                );
                SessionError::Overloaded
            })?;
        let m = self.all[w].meter();
        tracing::debug!(
            worker = w,
            busy = m.busy(),
            projected = m.projected_busy(self.all[w].load() + 1),
            sessions = self.all[w].load(),
            "viewer admitted"
        );
        if w != home {
            self.spreads.ensure(w, &room);
        }
        self.all[w].subscribe(room, offer).await
    }

    pub async fn add_candidate(
        &self,
        session: String,
        candidate: String,
    ) -> Result<(), SessionError> {
        self.by_session(&session)?
            .add_candidate(session, candidate)
            .await
    }

    pub async fn close(&self, session: String) -> Result<(), SessionError> {
        self.by_session(&session)?.close(session).await
    }

    pub async fn layers(
        &self,
        session: String,
        choice: Option<Choice>,
    ) -> Result<LayerReport, SessionError> {
        self.by_session(&session)?.layers(session, choice).await
    }

    pub async fn publish_local(
        &self,
        room: String,
        closed: oneshot::Sender<()>,
    ) -> Result<String, SessionError> {
        self.home(&room).publish_local(room, closed).await
    }

    pub async fn has_own_publisher(&self, room: String) -> bool {
        self.home(&room).has_own_publisher(room).await
    }

    /// Relay consumers of `room` on this node (sibling workers not counted).
    pub async fn relay_sinks(&self, room: String) -> usize {
        self.home(&room).relay_sinks(room).await
    }

    /// Where `cmd` goes: its session's worker, its room's home, or every worker.
    fn route(&self, cmd: &Command) -> Option<&Handle> {
        match cmd {
            Command::AddCandidate { session, .. }
            | Command::Close { session, .. }
            | Command::Layers { session, .. }
            | Command::PushRelayed { session, .. }
            | Command::PushLocal { session, .. } => self.by_session(session).ok(),
            Command::Publish { room, .. }
            | Command::Subscribe { room, .. }
            | Command::EndPublisher { room }
            | Command::AttachRelay { room, .. }
            | Command::DetachRelay { room, .. }
            | Command::RelayKeyframe { room, .. }
            | Command::RelaySinks { room, .. }
            | Command::HasOwnPublisher { room, .. }
            | Command::PublishLocal { room, .. } => Some(self.home(room)),
            Command::Snapshot { .. } | Command::Drain => self.all.first(),
        }
    }

    /// Sends without waiting; `false` if the worker's queue is full or it stopped.
    pub fn send(&self, cmd: Command) -> bool {
        if matches!(cmd, Command::Drain) {
            return self.all.iter().all(|h| h.send(Command::Drain));
        }
        self.route(&cmd).is_some_and(|h| h.send(cmd))
    }

    pub async fn send_wait(&self, cmd: Command) -> bool {
        if matches!(cmd, Command::Drain) {
            let mut ok = true;
            for h in self.all.iter() {
                ok &= h.send_wait(Command::Drain).await;
            }
            return ok;
        }
        match self.route(&cmd) {
            Some(h) => h.send_wait(cmd).await,
            None => false,
        }
    }

    /// Every worker is past the busy threshold: the node takes no new viewer.
    pub fn overloaded(&self) -> bool {
        self.all
            .iter()
            .all(|h| h.meter().busy() >= self.overload_at)
    }

    /// A worker's viewer count of a room changed (its sibling pull stops when idle).
    pub fn viewers(&self, worker: u8, room: &str, count: usize) {
        self.spreads.viewers(usize::from(worker), room, count);
    }

    async fn snapshots(&self) -> Option<Vec<Snapshot>> {
        let mut all = Vec::with_capacity(self.all.len());
        for h in self.all.iter() {
            all.push(h.snapshot().await?);
        }
        Some(all)
    }

    /// The node's figures: every worker's, summed (rooms merged by id).
    pub async fn stats(&self) -> Option<pb::NodeStats> {
        let t = NodeTotals::of(self.snapshots().await?);
        Some(pb::NodeStats {
            node_id: self.node_id.to_string(),
            publishers: t.publishers as u32,
            subscribers: t.subscribers as u32,
            frames_in: t.counters.frames_in,
            frames_out: t.counters.frames_out,
            bytes_in: t.counters.bytes_in,
            bytes_out: t.counters.bytes_out,
            keyframe_requests: t.counters.keyframe_requests,
            rooms: t.rooms,
            relays_out: t.relays.iter().sum::<usize>() as u32,
            // Filled by the gRPC layer, which owns the edge pulls.
            relays_in: 0,
        })
    }

    /// Keeps every worker's share of the CPU (`Meter::capacity`, what its busy share
    /// and so admission are measured against) up to date with the process's cgroup
    /// quota, re-read every [`CAPACITY_EVERY`] until `shutdown`: a CPU limit can change
    /// while the node runs. Its own task, not the metrics loop's, which waits on the
    /// workers' snapshots (a saturated worker answers late) and stops when one is gone.
    pub async fn track_capacity(self, shutdown: CancellationToken) {
        self.track_capacity_with(cpu::quota, cpu::process_time, CAPACITY_EVERY, shutdown)
            .await
    }

    /// `process`: CPU time the whole process has used.
    async fn track_capacity_with(
        self,
        quota: impl Fn() -> Option<f64>,
        process: impl Fn() -> Duration,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        let mut budget = Budget::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let worked = self.all.iter().map(|h| h.meter().worked()).sum();
            let capacity =
                budget.capacity(Instant::now(), quota(), process(), worked, self.all.len());
            for h in self.all.iter() {
                h.meter().set_capacity(capacity);
            }
        }
    }

    /// Exports the node's figures to `/metrics` every second until `shutdown`.
    pub async fn export_metrics(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last: Option<(Instant, Counters)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let Some(snaps) = self.snapshots().await else {
                return Ok(());
            };
            let t = NodeTotals::of(snaps);
            export(&t, last.as_ref(), self.spreads.len());
            for (i, h) in self.all.iter().enumerate() {
                let worker = i.to_string();
                let m = h.meter();
                metrics::gauge!("skylark_sfu_worker_cpu_capacity", "worker" => worker.clone())
                    .set(m.capacity());
                metrics::gauge!("skylark_sfu_worker_busy_ratio", "worker" => worker.clone())
                    .set(m.busy());
                metrics::gauge!("skylark_sfu_worker_lag_seconds", "worker" => worker)
                    .set(m.lag().as_secs_f64());
            }
            metrics::gauge!("skylark_sfu_overloaded").set(f64::from(u8::from(self.overloaded())));
            last = Some((Instant::now(), t.counters));
        }
    }
}

/// How often [`Workers::track_capacity`] re-reads the CPU quota.
const CAPACITY_EVERY: Duration = Duration::from_secs(1);

/// The least share of a quota left to the workers, however busy the rest of the process.
const WORKERS_LEAST_SHARE: f64 = 0.5;

/// The CPU the workers may use under the process's quota: what the rest of the process
/// (gRPC, the placement loop, metrics, the runtime's polling) leaves of it. Those
/// threads draw on the same quota, but not on a worker's busy share: counted against the
/// whole quota, a worker reading 88 % busy had the process at 93–100 % of its quota in
/// the overload test, throttled in half its periods (docs/benchmarks.md, "Overload:
/// the quota's other users").
#[derive(Default)]
struct Budget {
    /// The last reading: when, the process's CPU time, the workers' turns' CPU time.
    last: Option<(Instant, Duration, Duration)>,
    /// CPUs the rest of the process used over the last reading's interval.
    others: f64,
}

impl Budget {
    /// Each of `workers`' share of one CPU (at most one each; one each without a
    /// quota, where the rest of the process runs on other cores or shows as loop lag).
    fn capacity(
        &mut self,
        now: Instant,
        quota: Option<f64>,
        process: Duration,
        worked: Duration,
        workers: usize,
    ) -> f64 {
        if let Some((at, p, w)) = self.last {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            if wall > 0.0 {
                let others = process
                    .saturating_sub(p)
                    .saturating_sub(worked.saturating_sub(w));
                self.others = others.as_secs_f64() / wall;
            }
        }
        self.last = Some((now, process, worked));
        quota.map_or(1.0, |q| {
            let left = (q - self.others).max(q * WORKERS_LEAST_SHARE);
            (left / workers.max(1) as f64).min(1.0)
        })
    }
}

/// The room's home worker index of `n` (FNV-1a: stable across processes and runs).
pub(crate) fn home_index(room: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// Every worker's snapshot, summed.
#[derive(Default)]
struct NodeTotals {
    counters: Counters,
    publishers: usize,
    subscribers: usize,
    rooms: Vec<pb::RoomStats>,
    relays: [usize; RELAY_CONSUMERS.len()],
    relay_bytes_out: u64,
    relay_resyncs: u64,
    dropped_sends: u64,
    dropped_steers: u64,
    publisher_loss: f32,
}

impl NodeTotals {
    fn of(snaps: Vec<Snapshot>) -> Self {
        let mut t = NodeTotals::default();
        let mut rooms: BTreeMap<String, pb::RoomStats> = BTreeMap::new();
        for s in snaps {
            t.counters += s.counters;
            t.publishers += s.publishers;
            t.subscribers += s.subscribers;
            for (sum, n) in t.relays.iter_mut().zip(s.relays) {
                *sum += n;
            }
            t.relay_bytes_out += s.relay_bytes_out;
            t.relay_resyncs += s.relay_resyncs;
            t.dropped_sends += s.dropped_sends;
            t.dropped_steers += s.dropped_steers;
            t.publisher_loss = t.publisher_loss.max(s.publisher_loss);
            for r in s.rooms {
                let m = rooms.entry(r.room_id.clone()).or_insert(pb::RoomStats {
                    room_id: r.room_id,
                    ..Default::default()
                });
                m.live |= r.live;
                m.subscribers += r.subscribers;
                m.tracks = m.tracks.max(r.tracks);
            }
        }
        t.rooms = rooms.into_values().collect();
        t
    }
}

fn export(t: &NodeTotals, last: Option<&(Instant, Counters)>, sibling_pulls: usize) {
    use crate::core::DropReason;
    let c = &t.counters;
    metrics::gauge!("skylark_sfu_publishers").set(t.publishers as f64);
    metrics::gauge!("skylark_sfu_subscribers").set(t.subscribers as f64);
    metrics::counter!("skylark_sfu_frames_in_total").absolute(c.frames_in);
    metrics::counter!("skylark_sfu_frames_out_total").absolute(c.frames_out);
    metrics::counter!("skylark_sfu_bytes_in_total").absolute(c.bytes_in);
    metrics::counter!("skylark_sfu_bytes_out_total").absolute(c.bytes_out);
    metrics::counter!("skylark_sfu_datagrams_in_total").absolute(c.datagrams_in);
    metrics::counter!("skylark_sfu_datagrams_out_total").absolute(c.datagrams_out);
    metrics::counter!("skylark_sfu_datagrams_unmatched_total").absolute(c.datagrams_unmatched);
    metrics::counter!("skylark_sfu_datagrams_steered_total").absolute(c.datagrams_steered);
    metrics::counter!("skylark_sfu_steer_drops_total").absolute(t.dropped_steers);
    for reason in DropReason::ALL {
        metrics::counter!("skylark_sfu_datagrams_dropped_total", "reason" => reason.label())
            .absolute(c.dropped(reason));
    }
    metrics::counter!("skylark_sfu_connect_timeouts_total").absolute(c.connect_timeouts);
    metrics::counter!("skylark_sfu_keyframe_requests_total").absolute(c.keyframe_requests);
    metrics::counter!("skylark_sfu_packets_in_total").absolute(c.packets_in);
    metrics::counter!("skylark_sfu_packets_out_total").absolute(c.packets_out);
    metrics::counter!("skylark_sfu_nacks_to_publishers_total").absolute(c.nacks_to_publishers);
    metrics::counter!("skylark_sfu_nacks_from_subscribers_total")
        .absolute(c.nacks_from_subscribers);
    metrics::counter!("skylark_sfu_plis_from_subscribers_total").absolute(c.plis_from_subscribers);
    metrics::counter!("skylark_sfu_layer_switches_total").absolute(c.layer_switches);
    metrics::gauge!("skylark_sfu_publisher_loss_ratio").set(f64::from(t.publisher_loss));
    if let Some((at, prev)) = last {
        let secs = at.elapsed().as_secs_f64().max(0.001);
        metrics::gauge!("skylark_sfu_ingress_bitrate_bps")
            .set(c.bytes_in.saturating_sub(prev.bytes_in) as f64 * 8.0 / secs);
        metrics::gauge!("skylark_sfu_egress_bitrate_bps")
            .set(c.bytes_out.saturating_sub(prev.bytes_out) as f64 * 8.0 / secs);
    }
    // Node-level only: room ids (private rooms' too) and client-chosen track ids never
    // become label values; per-room figures are in the SfuNode Stats call.
    metrics::gauge!("skylark_sfu_rooms").set(t.rooms.len() as f64);
    metrics::counter!("skylark_sfu_send_drops_total").absolute(t.dropped_sends);
    for (consumer, n) in RELAY_CONSUMERS.iter().zip(t.relays) {
        metrics::gauge!("skylark_sfu_relays_out", "consumer" => *consumer).set(n as f64);
    }
    metrics::gauge!("skylark_sfu_sibling_pulls").set(sibling_pulls as f64);
    metrics::counter!("skylark_sfu_relay_bytes_total", "direction" => "out")
        .absolute(t.relay_bytes_out);
    metrics::counter!("skylark_sfu_relay_resyncs_total").absolute(t.relay_resyncs);
}

/// Core events of every worker, tagged with the worker's index.
pub type TaggedEvents = mpsc::UnboundedReceiver<(u8, crate::core::CoreEvent)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(busy: [f64; 2]) -> (Workers, Vec<mpsc::Receiver<Command>>) {
        let (handles, queues): (Vec<_>, Vec<_>) = busy.into_iter().map(Handle::detached).unzip();
        let w = Workers::new(
            handles,
            "n".into(),
            100,
            0.9,
            Duration::from_secs(1),
            CancellationToken::new(),
        );
        (w, queues)
    }

    /// Answers the first Subscribe on `q` and says it came.
    async fn answer(q: &mut mpsc::Receiver<Command>) -> bool {
        match q.recv().await {
            Some(Command::Subscribe { reply, .. }) => {
                let _ = reply.send(Ok(("s".into(), "sdp".into())));
                true
            }
            _ => false,
        }
    }

    #[tokio::test]
    async fn a_busy_worker_takes_no_viewer_and_a_busy_node_refuses_them() {
        // Worker 1 has CPU to spare: the viewer goes there whatever the room's home.
        let (w, mut q) = node([0.95, 0.4]);
        assert!(!w.overloaded());
        let join = tokio::spawn({
            let w = w.clone();
            async move { w.subscribe("room".into(), "offer".into()).await }
        });
        assert!(answer(&mut q[1]).await, "the idle worker got the viewer");
        assert!(join.await.unwrap().is_ok());
        // (The busy one may be the room's home: then it feeds the other in-process.)
        while let Ok(cmd) = q[0].try_recv() {
            assert!(
                !matches!(cmd, Command::Subscribe { .. }),
                "the busy one got no viewer"
            );
        }

        // Every worker past the threshold: refused at once, and the node says so.
        let (w, _q) = node([0.95, 0.91]);
        assert!(w.overloaded());
        assert_eq!(
            w.subscribe("room".into(), "offer".into()).await,
            Err(SessionError::Overloaded)
        );
    }

    #[tokio::test]
    async fn the_cpu_quota_is_tracked_without_the_metrics_loop() {
        // Admission measures busy against the capacity: it must follow the quota even
        // when nothing exports metrics (the loop that used to refresh it).
        const EVERY: Duration = Duration::from_millis(20);
        let (w, _q) = node([0.0, 0.0]);
        let quota = Arc::new(Mutex::new(Some(1.0)));
        let stop = CancellationToken::new();
        let task = tokio::spawn(w.clone().track_capacity_with(
            {
                let quota = quota.clone();
                move || *quota.lock().unwrap()
            },
            || Duration::ZERO,
            EVERY,
            stop.clone(),
        ));
        let capacities =
            |w: &Workers| -> Vec<f64> { w.all.iter().map(|h| h.meter().capacity()).collect() };
        // Read at start, and again when the limit changes while the node runs.
        until(|| capacities(&w) == [0.5, 0.5]).await;
        *quota.lock().unwrap() = None;
        until(|| capacities(&w) == [1.0, 1.0]).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }

    /// Waits (at most 10 s, however slow the host) until `done`.
    async fn until(done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("in time");
    }

    #[test]
    fn a_quota_is_shared_among_the_workers() {
        let at = Instant::now();
        let zero = Duration::ZERO;
        let share = |quota, workers| Budget::default().capacity(at, quota, zero, zero, workers);
        assert_eq!(share(None, 4), 1.0);
        assert_eq!(share(Some(0.5), 1), 0.5);
        assert_eq!(share(Some(3.0), 4), 0.75);
        assert_eq!(share(Some(8.0), 2), 1.0);
    }

    #[test]
    fn what_the_rest_of_the_process_uses_of_the_quota_is_not_the_workers() {
        let ms = Duration::from_millis;
        let at = Instant::now();
        let mut b = Budget::default();
        // Half a CPU, one worker: 0.5 before anything is measured.
        assert_eq!(b.capacity(at, Some(0.5), ms(0), ms(0), 1), 0.5);
        // Over 1 s the process used 460 ms, the worker's turns 400: the other 60 ms
        // (gRPC, polling) came out of the same quota, so the worker had 0.44.
        let c = b.capacity(at + ms(1000), Some(0.5), ms(460), ms(400), 1);
        assert!((c - 0.44).abs() < 1e-9, "{c}");
        // Quiet again: the whole quota is the worker's.
        let c = b.capacity(at + ms(2000), Some(0.5), ms(860), ms(800), 1);
        assert!((c - 0.5).abs() < 1e-9, "{c}");
        // However busy the rest, the workers keep half the quota (shared by two here).
        let c = b.capacity(at + ms(3000), Some(0.5), ms(1860), ms(800), 2);
        assert!((c - 0.125).abs() < 1e-9, "{c}");
        // Without a quota other threads don't take from the workers' budget.
        let c = b.capacity(at + ms(4000), None, ms(2860), ms(800), 2);
        assert_eq!(c, 1.0);
    }

    #[test]
    fn a_room_has_one_home_whatever_the_process() {
        assert_eq!(home_index("room-a", 1), 0);
        let homes: Vec<usize> = (0..64).map(|i| home_index(&format!("r{i}"), 4)).collect();
        assert_eq!(
            homes,
            (0..64)
                .map(|i| home_index(&format!("r{i}"), 4))
                .collect::<Vec<_>>()
        );
        for w in 0..4 {
            assert!(homes.contains(&w), "rooms spread over every worker");
        }
    }
}
