//! The I/O shell around one [`Core`]: one UDP socket, one task, a command channel, a
//! timer, and the real clock and randomness the core takes as inputs. It keeps the
//! core's run loop rule: every change is followed by draining the core's outputs. A
//! node runs one per worker (`crate::workers`), their sockets sharing one port; a
//! datagram of another worker's session goes to that worker's steering queue. ICE-TCP
//! connections of its sessions (`crate::tcp`) bring frames on another queue and take
//! the core's sends to them.

use crate::core::{
    Choice, Core, CoreEvent, Counters, FrameCodec, IdSeed, LayerReport, Output, RelayedFrame,
    SessionError, WallClock,
};
use crate::cpu;
use crate::send_batch::SendBatch;
use crate::tcp::TcpInput;
use skylark_proto::sfu::v1 as pb;
use std::collections::HashMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Largest datagram read; WebRTC packets stay under ~1500 bytes.
const RECV_BUF: usize = 2048;
/// Datagrams read per wake before running timers and commands again.
const RECV_BATCH: usize = 64;
/// Receive buffer asked for the media socket. The default (~208 KiB) holds ~100 small
/// datagrams: a flood of junk or a moment off the CPU then drops media in the kernel,
/// before the core can tell it from junk. The kernel caps it at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;
/// Datagrams queued for a worker from its siblings; past it they are dropped like a
/// full socket would drop them.
pub const STEER_QUEUE: usize = 4096;
/// Relay consumer label of a sibling worker pulling a room in-process
/// (`crate::spread`): not a relay link of the node.
pub const SIBLING: &str = "worker";
/// Relay consumer labels that are links of the node, for metrics.
pub const RELAY_CONSUMERS: [&str; 3] = ["edge", "packager", "other"];

/// An ICE-TCP connection no session has taken a check from this long after it opened
/// is closed.
const TCP_UNROUTED: Duration = Duration::from_secs(5);

/// How often a worker publishes how busy it is.
const LOAD_WINDOW: Duration = Duration::from_millis(500);

/// Share of the overload threshold past which a worker spaces out keyframe requests.
const KEYFRAMES_SPACED_AT: f64 = 0.8;

/// A datagram another worker received for a session of this one.
pub struct Steered {
    pub source: SocketAddr,
    pub contents: Vec<u8>,
}

pub type Reply<T> = oneshot::Sender<Result<T, SessionError>>;

pub enum Command {
    Publish {
        room: String,
        offer: String,
        reply: Reply<(String, String)>,
    },
    Subscribe {
        room: String,
        offer: String,
        reply: Reply<(String, String)>,
    },
    AddCandidate {
        session: String,
        candidate: String,
        reply: Reply<()>,
    },
    Close {
        session: String,
        reply: Reply<()>,
    },
    Layers {
        session: String,
        choice: Option<Choice>,
        reply: Reply<LayerReport>,
    },
    EndPublisher {
        room: String,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    AttachRelay {
        room: String,
        sink: u64,
        tx: mpsc::Sender<pb::RelayMessage>,
        /// Metrics label: "edge", "packager", "other", or [`SIBLING`].
        consumer: &'static str,
        /// Starts with the room's cached GOP (`RelayStart.from_gop`).
        from_gop: bool,
    },
    DetachRelay {
        room: String,
        sink: u64,
    },
    RelayKeyframe {
        room: String,
        /// Empty: every video track.
        track_id: String,
    },
    PushRelayed {
        session: String,
        frame: RelayedFrame,
    },
    /// How many relay consumers (not sibling workers) pull the room from this worker.
    RelaySinks {
        room: String,
        reply: oneshot::Sender<usize>,
    },
    /// Whether the room's publisher is on this node (not an edge pull).
    HasOwnPublisher {
        room: String,
        reply: oneshot::Sender<bool>,
    },
    /// A local (non-WebRTC) publisher; `closed` fires when the core ends its session.
    /// With `upstream_keyframes` it is an edge pull's, and its keyframe wants (track
    /// ids) go there.
    PublishLocal {
        room: String,
        closed: oneshot::Sender<()>,
        upstream_keyframes: Option<mpsc::Sender<String>>,
        reply: Reply<String>,
    },
    /// Stop taking sessions (graceful shutdown).
    Drain,
    PushLocal {
        session: String,
        codec: FrameCodec,
        time: u64,
        data: Arc<[u8]>,
        config: String,
    },
}

/// A cloneable handle to one worker.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    /// Its WebRTC sessions, kept by the worker after every change of them.
    load: Arc<AtomicUsize>,
    meter: Arc<Meter>,
}

/// How hard a worker works, published every [`LOAD_WINDOW`].
pub struct Meter {
    /// CPU time spent handling input, ‰ of the CPU it may use (smoothed).
    busy_permille: AtomicU32,
    /// The share of one CPU it may use, ‰ (the process's quota over its workers).
    capacity_permille: AtomicU32,
    /// Longest delay of a due timeout behind its deadline in the last window, µs.
    lag_us: AtomicU64,
    /// Its sessions that cost their share (viewers waiting for their first picture
    /// left out) over the windows `busy_permille` was measured in (smoothed alike).
    measured_sessions: AtomicUsize,
    /// CPU time its turns have taken since it started, ns.
    worked_ns: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            busy_permille: AtomicU32::new(0),
            capacity_permille: AtomicU32::new(1000),
            lag_us: AtomicU64::new(0),
            measured_sessions: AtomicUsize::new(0),
            worked_ns: AtomicU64::new(0),
        }
    }
}

impl Meter {
    /// Share of the CPU it may use that the worker spends working (0–1): near 1,
    /// input queues up in the socket and every session's latency grows. CPU time, not
    /// wall time: what other processes take from it is not its load ([`crate::cpu`]).
    pub fn busy(&self) -> f64 {
        f64::from(self.busy_permille.load(Ordering::Relaxed)) / 1000.0
    }

    /// How busy the worker would be with `sessions` sessions: the measured share scaled
    /// by the sessions it was measured on, those it forwards to. Viewers waiting for
    /// their first keyframe (and those admitted since) cost little until their video
    /// starts, so they count at full cost: a join storm can't outrun the measure, and a
    /// ramp can't fill the node to ~95 % busy before their video starts.
    pub fn projected_busy(&self, sessions: usize) -> f64 {
        let busy = self.busy();
        match self.measured_sessions.load(Ordering::Relaxed) {
            0 => busy,
            measured => busy * sessions as f64 / measured as f64,
        }
    }

    /// Sets the share of one CPU the worker may use (0–1]: its busy share is measured
    /// against it from the next window on.
    pub fn set_capacity(&self, cpus: f64) {
        let permille = (cpus.clamp(0.01, 1.0) * 1000.0).round() as u32;
        self.capacity_permille.store(permille, Ordering::Relaxed);
    }

    /// The share of one CPU the worker may use.
    pub fn capacity(&self) -> f64 {
        f64::from(self.capacity_permille.load(Ordering::Relaxed)) / 1000.0
    }

    /// CPU time the worker's turns have taken since it started.
    pub fn worked(&self) -> Duration {
        Duration::from_nanos(self.worked_ns.load(Ordering::Relaxed))
    }

    /// How late the worker ran its last window's timers (its loop lag).
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }
}

/// The worker loop's side of its [`Meter`].
struct Metering {
    meter: Arc<Meter>,
    /// The worker's session count ([`Handle::load`]).
    sessions: Arc<AtomicUsize>,
    since: Instant,
    busy: Duration,
    lag: Duration,
    smoothed: f64,
    smoothed_sessions: f64,
    /// The window's longest turn (CPU): how long one input kept every session waiting.
    longest: Duration,
    /// The whole process's CPU time at the window's start, for the debug log.
    process_cpu: Duration,
}

impl Metering {
    fn new(meter: Arc<Meter>, sessions: Arc<AtomicUsize>) -> Self {
        Self {
            meter,
            sessions,
            since: Instant::now(),
            busy: Duration::ZERO,
            lag: Duration::ZERO,
            smoothed: 0.0,
            smoothed_sessions: 0.0,
            longest: Duration::ZERO,
            process_cpu: Duration::ZERO,
        }
    }

    /// One loop turn: woke with the thread's CPU clock at `woke_cpu` (no await since:
    /// the same thread), ran its due timers `lag` late. `waiting`: its viewers that
    /// don't cost their share yet, read once per window.
    fn turn(&mut self, woke_cpu: Duration, lag: Duration, waiting: impl FnOnce() -> usize) {
        let now = Instant::now();
        let spent = cpu::thread_time().saturating_sub(woke_cpu);
        self.busy += spent;
        // Per turn, not per window: read against the process's CPU time at any moment.
        self.meter
            .worked_ns
            .fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
        self.longest = self.longest.max(spent);
        self.lag = self.lag.max(lag);
        let window = now.saturating_duration_since(self.since);
        if window < LOAD_WINDOW {
            return;
        }
        let ratio =
            (self.busy.as_secs_f64() / (window.as_secs_f64() * self.meter.capacity())).min(1.0);
        self.smoothed = smooth_busy(self.smoothed, ratio);
        let all = self.sessions.load(Ordering::Relaxed);
        let waiting = waiting();
        let sessions = all.saturating_sub(waiting) as f64;
        let process = cpu::process_time();
        // What overload tuning needs (tests/overload.rs keeps it with OVERLOAD_SFU_LOG).
        tracing::debug!(
            busy = self.smoothed,
            ratio,
            lag_ms = self.lag.as_secs_f64() * 1e3,
            longest_turn_ms = self.longest.as_secs_f64() * 1e3,
            process_cpus =
                (process.saturating_sub(self.process_cpu)).as_secs_f64() / window.as_secs_f64(),
            capacity = self.meter.capacity(),
            sessions = all,
            waiting,
            "worker window"
        );
        self.process_cpu = process;
        self.longest = Duration::ZERO;
        self.smoothed_sessions = (self.smoothed_sessions + sessions) / 2.0;
        self.meter
            .busy_permille
            .store((self.smoothed * 1000.0) as u32, Ordering::Relaxed);
        self.meter
            .measured_sessions
            .store(self.smoothed_sessions.round() as usize, Ordering::Relaxed);
        self.meter
            .lag_us
            .store(self.lag.as_micros() as u64, Ordering::Relaxed);
        self.since = now;
        self.busy = Duration::ZERO;
        self.lag = Duration::ZERO;
    }
}

/// The busy share after a window measured at `ratio`. Up fast (half the last window,
/// half before: one burst does not flip admission), down slowly: a saturated worker's
/// measure dips now and then (its turns run late rather than long when it is starved
/// of CPU), and one dip must not let a burst of viewers in that it cannot serve.
fn smooth_busy(smoothed: f64, ratio: f64) -> f64 {
    if ratio >= smoothed {
        (smoothed + ratio) / 2.0
    } else {
        smoothed - (smoothed - ratio) / 8.0
    }
}

/// One worker's figures, summed over workers for the node's `Stats` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub counters: Counters,
    pub publishers: usize,
    pub subscribers: usize,
    pub rooms: Vec<pb::RoomStats>,
    /// Relay sinks by [`RELAY_CONSUMERS`] label (sibling workers not counted).
    pub relays: [usize; RELAY_CONSUMERS.len()],
    pub relay_bytes_out: u64,
    pub relay_resyncs: u64,
    pub dropped_sends: u64,
    pub dropped_steers: u64,
    pub publisher_loss: f32,
}

/// The system wall clock, read once; the core follows it with the monotonic clock.
pub fn system_wall_clock() -> WallClock {
    let at = Instant::now();
    WallClock::new(at, unix_now_us())
}

/// A fresh secret for session ids (they are capabilities) from the OS.
pub fn random_id_seed() -> IdSeed {
    let mut b = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut b) {
        // Ids stay unique through their counter prefix; only guessing gets easier.
        tracing::warn!(error = %e, "no OS randomness; session ids seeded from the clock");
        b[..8].copy_from_slice(&unix_now_us().to_le_bytes());
    }
    IdSeed::new(b)
}

fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn gone() -> SessionError {
    SessionError::Stopped
}

impl Handle {
    /// Its WebRTC sessions now.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// A handle whose commands go to the returned queue (no worker), with its meter
    /// reading `busy`: for tests of what the node decides.
    #[cfg(test)]
    pub(crate) fn detached(busy: f64) -> (Handle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(16);
        let meter = Meter::default();
        meter
            .busy_permille
            .store((busy * 1000.0) as u32, Ordering::Relaxed);
        let handle = Handle {
            tx,
            load: Arc::default(),
            meter: Arc::new(meter),
        };
        (handle, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn publish(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        self.ask(|reply| Command::Publish { room, offer, reply })
            .await
    }

    pub async fn subscribe(
        &self,
        room: String,
        offer: String,
    ) -> Result<(String, String), SessionError> {
        self.ask(|reply| Command::Subscribe { room, offer, reply })
            .await
    }

    pub async fn add_candidate(
        &self,
        session: String,
        candidate: String,
    ) -> Result<(), SessionError> {
        self.ask(|reply| Command::AddCandidate {
            session,
            candidate,
            reply,
        })
        .await
    }

    pub async fn close(&self, session: String) -> Result<(), SessionError> {
        self.ask(|reply| Command::Close { session, reply }).await
    }

    pub async fn layers(
        &self,
        session: String,
        choice: Option<Choice>,
    ) -> Result<LayerReport, SessionError> {
        self.ask(|reply| Command::Layers {
            session,
            choice,
            reply,
        })
        .await
    }

    pub async fn publish_local(
        &self,
        room: String,
        closed: oneshot::Sender<()>,
    ) -> Result<String, SessionError> {
        self.ask(|reply| Command::PublishLocal {
            room,
            closed,
            upstream_keyframes: None,
            reply,
        })
        .await
    }

    /// An edge pull's local publisher: its session, and a signal when the core ends it.
    pub async fn publish_relayed(
        &self,
        room: String,
        keyframes: mpsc::Sender<String>,
    ) -> Result<(String, oneshot::Receiver<()>), SessionError> {
        let (closed, closed_rx) = oneshot::channel();
        let session = self
            .ask(|reply| Command::PublishLocal {
                room,
                closed,
                upstream_keyframes: Some(keyframes),
                reply,
            })
            .await?;
        Ok((session, closed_rx))
    }

    /// A question the worker answers at once; `T::default()` if it stopped.
    async fn query<T: Default>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> T {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(make(reply)).await.is_err() {
            return T::default();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn has_own_publisher(&self, room: String) -> bool {
        self.query(|reply| Command::HasOwnPublisher { room, reply })
            .await
    }

    /// Relay consumers of `room` here.
    pub async fn relay_sinks(&self, room: String) -> usize {
        self.query(|reply| Command::RelaySinks { room, reply })
            .await
    }

    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot { reply }).await.ok()?;
        rx.await.ok()
    }

    pub fn send(&self, cmd: Command) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    pub async fn send_wait(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

/// What a worker task is started with.
pub struct Spawn {
    pub socket: UdpSocket,
    pub core: Core,
    /// Its index among the node's workers (the core's `WorkerSlot`).
    pub index: u8,
    /// Core events, tagged with the worker's index.
    pub events: mpsc::UnboundedSender<(u8, CoreEvent)>,
    /// Datagrams its siblings received for its sessions.
    pub steered: mpsc::Receiver<Steered>,
    /// Every worker's steering queue, by index (its own included, unused).
    pub siblings: Vec<mpsc::Sender<Steered>>,
    /// ICE-TCP connections of its sessions and their frames.
    pub tcp: mpsc::Receiver<TcpInput>,
    /// The busy share past which it sheds resends (the node's overload threshold).
    pub overload_at: f64,
    pub shutdown: CancellationToken,
}

/// Starts the worker task.
pub fn spawn(s: Spawn) -> (Handle, tokio::task::JoinHandle<anyhow::Result<()>>) {
    grow_recv_buffer(&s.socket);
    let (tx, rx) = mpsc::channel(1024);
    let load = Arc::new(AtomicUsize::new(0));
    let meter = Arc::new(Meter::default());
    let handle = Handle {
        tx,
        load: load.clone(),
        meter: meter.clone(),
    };
    let Spawn {
        socket,
        core,
        index,
        events,
        steered,
        siblings,
        tcp,
        overload_at,
        shutdown,
    } = s;
    let metering = Metering::new(meter, load.clone());
    let lp = Loop::new(socket, core, index, events, siblings, load);
    let inputs = Inputs {
        commands: rx,
        steered,
        tcp,
    };
    let task = tokio::spawn(run(lp, inputs, metering, overload_at, shutdown));
    (handle, task)
}

/// Asks for [`RECV_BUFFER`]; says what the kernel granted.
fn grow_recv_buffer(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "media socket receive buffer not raised");
    }
    // Linux reports twice what it keeps for data (the rest is bookkeeping).
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < RECV_BUFFER {
        tracing::warn!(
            granted,
            wanted = RECV_BUFFER,
            "media socket receive buffer capped: raise net.core.rmem_max, or floods and stalls drop media"
        );
    } else {
        tracing::info!(granted, "media socket receive buffer");
    }
}

/// A downstream relay link. Its queue is bounded and never waited on: when it is full
/// the message is dropped, and each video track resumes at its next keyframe, marked
/// `contiguous = false`, so a slow consumer never slows this node nor decodes garbage.
struct RelaySink {
    room: String,
    tx: mpsc::Sender<pb::RelayMessage>,
    consumer: &'static str,
    video: HashSet<String>,
    /// Video tracks waiting for a keyframe after a drop.
    stale: HashSet<String>,
}

struct Loop {
    socket: UdpSocket,
    core: Core,
    index: u8,
    siblings: Vec<mpsc::Sender<Steered>>,
    load: Arc<AtomicUsize>,
    relays: HashMap<u64, RelaySink>,
    /// Keyframe wants of edge pulls' publishers, by session.
    upstream_keyframes: HashMap<String, mpsc::Sender<String>>,
    relay_bytes_out: u64,
    relay_resyncs: u64,
    events: mpsc::UnboundedSender<(u8, CoreEvent)>,
    /// Datagrams on their way out, one system call per batch.
    sends: SendBatch,
    dropped_steers: u64,
    local_closers: HashMap<String, oneshot::Sender<()>>,
    /// Its sessions' ICE-TCP connections by remote address: (connection, its frames,
    /// when it opened).
    tcp: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>, Instant)>,
    next_tcp_sweep: Instant,
}

/// What woke a worker's loop.
enum Input {
    Command(Command),
    Steered(Steered),
    Tcp(TcpInput),
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Timer,
}

/// The queues a worker reads besides its socket.
struct Inputs {
    commands: mpsc::Receiver<Command>,
    steered: mpsc::Receiver<Steered>,
    tcp: mpsc::Receiver<TcpInput>,
}

async fn run(
    mut lp: Loop,
    inputs: Inputs,
    mut metering: Metering,
    overload_at: f64,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Inputs {
        commands: mut rx,
        mut steered,
        mut tcp,
    } = inputs;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let now = Instant::now();
        let due = lp.core.next_timeout();
        let deadline = due
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_millis(100));
        // Only waiting is outside the turn: what an input costs (a receive batch is
        // most of a loaded worker's time) counts as busy.
        let input = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(cmd) = rx.recv() => Input::Command(cmd),
            Some(d) = steered.recv() => Input::Steered(d),
            Some(t) = tcp.recv() => Input::Tcp(t),
            r = lp.socket.recv_from(&mut buf) => Input::Datagram(r),
            _ = tokio::time::sleep_until(deadline.into()) => Input::Timer,
        };
        let woke = cpu::thread_time();
        match input {
            Input::Command(cmd) => {
                lp.command(cmd);
                lp.flush();
                lp.count_sessions();
            }
            Input::Steered(d) => {
                lp.core
                    .handle_steered_datagram(Instant::now(), d.source, &d.contents);
                lp.flush();
                for _ in 0..RECV_BATCH {
                    match steered.try_recv() {
                        Ok(d) => {
                            lp.core
                                .handle_steered_datagram(Instant::now(), d.source, &d.contents);
                            lp.flush();
                        }
                        Err(_) => break,
                    }
                }
            }
            Input::Tcp(t) => {
                lp.tcp_input(t);
                for _ in 0..RECV_BATCH {
                    match tcp.try_recv() {
                        Ok(t) => lp.tcp_input(t),
                        Err(_) => break,
                    }
                }
            }
            Input::Datagram(Ok((n, src))) => {
                lp.core.handle_datagram(Instant::now(), src, &buf[..n]);
                lp.flush();
                // Take what else is queued without another wake-up.
                for _ in 0..RECV_BATCH {
                    match lp.socket.try_recv_from(&mut buf) {
                        Ok((n, src)) => {
                            lp.core.handle_datagram(Instant::now(), src, &buf[..n]);
                            lp.flush();
                        }
                        Err(_) => break,
                    }
                }
            }
            // ICMP port-unreachable from a gone peer surfaces here on Linux.
            Input::Datagram(Err(e)) => tracing::trace!(error = %e, "UDP receive error"),
            Input::Timer => {}
        }
        let at = Instant::now();
        lp.core.handle_timeout(at);
        lp.flush();
        lp.sweep_tcp(at);
        metering.turn(
            woke,
            due.map_or(Duration::ZERO, |d| at.saturating_duration_since(d)),
            || lp.core.waiting_viewers(),
        );
        // Past the threshold resends go first; back under 80 % of it they return.
        let busy = metering.meter.busy();
        // Near it keyframes come less often: the viewers admitted last (a ramp's joins,
        // each asking for one) are when a keyframe's fan-out delays everyone most.
        lp.core
            .space_keyframes(busy >= overload_at * KEYFRAMES_SPACED_AT);
        let shed = if busy >= overload_at {
            Some(true)
        } else {
            (busy < overload_at * 0.8).then_some(false)
        };
        if let Some(shed) = shed.filter(|&s| lp.core.shed_resends(s)) {
            let g = metrics::gauge!("skylark_sfu_workers_shedding_resends");
            if shed {
                g.increment(1.0);
            } else {
                g.decrement(1.0);
            }
        }
    }
    tracing::info!(worker = lp.index, "SFU worker stopped");
    Ok(())
}

impl Loop {
    fn new(
        socket: UdpSocket,
        core: Core,
        index: u8,
        events: mpsc::UnboundedSender<(u8, CoreEvent)>,
        siblings: Vec<mpsc::Sender<Steered>>,
        load: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            socket,
            core,
            index,
            siblings,
            load,
            relays: HashMap::new(),
            upstream_keyframes: HashMap::new(),
            relay_bytes_out: 0,
            relay_resyncs: 0,
            events,
            sends: SendBatch::default(),
            dropped_steers: 0,
            local_closers: HashMap::new(),
            tcp: HashMap::new(),
            next_tcp_sweep: Instant::now(),
        }
    }

    /// Lets go of ICE-TCP connections that no session has accepted a check from within
    /// [`TCP_UNROUTED`] of opening: a stranger's plausible first check holds a
    /// connection that long, not for the whole idle timeout.
    fn sweep_tcp(&mut self, now: Instant) {
        if now < self.next_tcp_sweep || self.tcp.is_empty() {
            return;
        }
        self.next_tcp_sweep = now + Duration::from_secs(1);
        let core = &self.core;
        self.tcp.retain(|remote, (_, _, opened)| {
            now.saturating_duration_since(*opened) < TCP_UNROUTED || core.has_tcp_route(*remote)
        });
    }

    fn tcp_input(&mut self, t: TcpInput) {
        match t {
            TcpInput::Opened {
                conn,
                remote,
                frames,
            } => {
                self.tcp.insert(remote, (conn, frames, Instant::now()));
            }
            TcpInput::Frame { remote, contents } => {
                self.core
                    .handle_tcp_frame(Instant::now(), remote, &contents);
                self.flush();
            }
            TcpInput::Closed { conn, remote } => {
                if self.tcp.get(&remote).is_some_and(|(c, ..)| *c == conn) {
                    self.tcp.remove(&remote);
                }
            }
        }
    }

    /// One frame to an ICE-TCP connection; dropped (never waited for) when its queue
    /// is full or it is gone.
    fn send_tcp(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        let sent = self
            .tcp
            .get(&destination)
            .is_some_and(|(_, q, _)| q.try_send(contents).is_ok());
        if !sent {
            self.sends.dropped += 1;
        }
    }

    /// Publishes the worker's session count for the node's choice of worker.
    fn count_sessions(&self) {
        self.load
            .store(self.core.index_sizes().peers, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        let (publishers, subscribers) = self.core.session_counts();
        let mut relays = [0; RELAY_CONSUMERS.len()];
        for s in self.relays.values() {
            if let Some(i) = RELAY_CONSUMERS.iter().position(|c| *c == s.consumer) {
                relays[i] += 1;
            }
        }
        Snapshot {
            counters: self.core.counters(),
            publishers,
            subscribers,
            rooms: self.core.room_stats(),
            relays,
            relay_bytes_out: self.relay_bytes_out,
            relay_resyncs: self.relay_resyncs,
            dropped_sends: self.sends.dropped,
            dropped_steers: self.dropped_steers,
            publisher_loss: self.core.publisher_loss(),
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            // Counted before the reply, so the node's admission never sees a session
            // neither reserved nor counted.
            Command::Publish { room, offer, reply } => {
                let res = self.core.publish(now, &room, &offer);
                self.count_sessions();
                let _ = reply.send(res);
            }
            Command::Subscribe { room, offer, reply } => {
                let res = self.core.subscribe(now, &room, &offer);
                self.count_sessions();
                let _ = reply.send(res);
            }
            Command::AddCandidate {
                session,
                candidate,
                reply,
            } => {
                let _ = reply.send(self.core.add_candidate(&session, &candidate));
            }
            Command::Close { session, reply } => {
                let _ = reply.send(self.core.close(&session));
            }
            Command::Layers {
                session,
                choice,
                reply,
            } => {
                let _ = reply.send(self.core.layers(&session, choice, Instant::now()));
            }
            Command::EndPublisher { room } => {
                if self.core.end_publisher(&room) {
                    tracing::info!(room_id = %room, "publisher cut");
                }
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::AttachRelay {
                room,
                sink,
                tx,
                consumer,
                from_gop,
            } => {
                self.relays.insert(
                    sink,
                    RelaySink {
                        room: room.clone(),
                        tx,
                        consumer,
                        video: HashSet::new(),
                        stale: HashSet::new(),
                    },
                );
                if from_gop {
                    self.core.attach_relay_from_gop(now, &room, sink);
                } else {
                    self.core.attach_relay(now, &room, sink);
                }
            }
            Command::DetachRelay { room, sink } => {
                self.relays.remove(&sink);
                self.core.detach_relay(&room, sink);
            }
            Command::RelayKeyframe { room, track_id } => {
                self.core.relay_keyframe_request(&room, &track_id, now)
            }
            Command::PushRelayed { session, frame } => {
                let _ = self.core.push_relayed(now, &session, frame);
            }
            Command::RelaySinks { room, reply } => {
                let n = self
                    .relays
                    .values()
                    .filter(|s| s.room == room && s.consumer != SIBLING)
                    .count();
                let _ = reply.send(n);
            }
            Command::HasOwnPublisher { room, reply } => {
                let _ = reply.send(self.core.has_own_publisher(&room));
            }
            Command::PublishLocal {
                room,
                closed,
                upstream_keyframes,
                reply,
            } => {
                let res = match &upstream_keyframes {
                    Some(_) => self.core.publish_relayed(&room),
                    None => self.core.publish_local(&room),
                };
                if let Ok(session) = &res {
                    self.local_closers.insert(session.clone(), closed);
                    if let Some(k) = upstream_keyframes {
                        self.upstream_keyframes.insert(session.clone(), k);
                    }
                }
                let _ = reply.send(res);
            }
            Command::Drain => self.core.set_draining(),
            Command::PushLocal {
                session,
                codec,
                time,
                data,
                config,
            } => {
                let _ = self
                    .core
                    .push_local(now, &session, codec, time, data, &config);
            }
        }
    }

    fn flush(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit {
                    proto: Protocol::Udp,
                    destination,
                    contents,
                } => {
                    // Never blocks the loop on one slow or gone peer: drops instead.
                    self.sends.push(&self.socket, destination, contents);
                }
                Output::Transmit {
                    destination,
                    contents,
                    ..
                } => self.send_tcp(destination, contents),
                Output::CloseTcp { remote } => {
                    // Its writer sees the queue end and closes the connection.
                    self.tcp.remove(&remote);
                }
                Output::Relay { sink, msg } => self.relay(sink, msg),
                Output::Steer {
                    worker,
                    source,
                    contents,
                } => {
                    let sent = self
                        .siblings
                        .get(usize::from(worker))
                        .is_some_and(|q| q.try_send(Steered { source, contents }).is_ok());
                    if !sent {
                        self.dropped_steers += 1;
                    }
                }
                Output::UpstreamKeyframe { session, track_id } => {
                    if let Some(tx) = self.upstream_keyframes.get(&session) {
                        // Coalesced already; a full queue has the same asks in it.
                        let _ = tx.try_send(track_id);
                    }
                }
                Output::Event(e) => {
                    if let CoreEvent::SessionClosed { session, .. } = &e {
                        if let Some(c) = self.local_closers.remove(session) {
                            let _ = c.send(());
                        }
                        self.upstream_keyframes.remove(session);
                        self.count_sessions();
                    }
                    let _ = self.events.send((self.index, e));
                }
            }
        }
        self.sends.flush(&self.socket);
    }

    /// One message to a relay sink: never waits (see [`RelaySink`]).
    fn relay(&mut self, sink: u64, mut msg: pb::RelayMessage) {
        let Some(s) = self.relays.get_mut(&sink) else {
            return;
        };
        let mut resynced = false;
        match &mut msg.msg {
            Some(pb::relay_message::Msg::Track(t)) if t.kind == pb::TrackKind::Video as i32 => {
                s.video.insert(t.track_id.clone());
            }
            Some(pb::relay_message::Msg::PublisherChanged(_)) => {
                s.video.clear();
                s.stale.clear();
            }
            Some(pb::relay_message::Msg::Frame(f)) if s.stale.contains(&f.track_id) => {
                if !f.keyframe {
                    return;
                }
                f.contiguous = false;
                resynced = true;
            }
            _ => {}
        }
        let (bytes, track) = match &msg.msg {
            Some(pb::relay_message::Msg::Frame(f)) => {
                (f.data.len() as u64, Some(f.track_id.clone()))
            }
            _ => (0, None),
        };
        match s.tx.try_send(msg) {
            Ok(()) => {
                if s.consumer != SIBLING {
                    self.relay_bytes_out += bytes;
                }
                if resynced {
                    if let Some(t) = track {
                        s.stale.remove(&t);
                    }
                    self.relay_resyncs += 1;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) if track.is_none() => {
                // A lost track or publisher change would leave the consumer confused:
                // end its stream instead; it pulls again and gets the room's state.
                tracing::info!(room_id = %s.room, sink, "relay consumer too slow; link cut");
                self.relays.remove(&sink);
                self.relay_resyncs += 1;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A stuck consumer: drop, and resume every video track at a keyframe.
                s.stale = s.video.clone();
                let room = s.room.clone();
                self.core.relay_keyframe_request(&room, "", Instant::now());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.relays.remove(&sink);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::CoreConfig;

    #[test]
    fn projected_busy_counts_sessions_admitted_since_the_measure() {
        let m = Meter::default();
        m.busy_permille.store(500, Ordering::Relaxed);
        m.measured_sessions.store(10, Ordering::Relaxed);
        assert!((m.projected_busy(19) - 0.95).abs() < 1e-9);
        assert!((m.projected_busy(10) - 0.5).abs() < 1e-9);
        // Nothing measured yet (an idle worker): the share as it is.
        m.measured_sessions.store(0, Ordering::Relaxed);
        assert!((m.projected_busy(19) - 0.5).abs() < 1e-9);
    }

    /// A ramp: 20 sessions, 10 of them still waiting for their first keyframe, at 45 %
    /// busy. The 10 playing cost 4.5 % each; the 10 waiting will once their video
    /// starts, so one more would take the worker to ~95 %, past a 0.9 threshold.
    #[test]
    fn viewers_waiting_for_their_first_keyframe_count_at_full_cost() {
        let (tx, _rx) = mpsc::channel(1);
        let (handle, mut metering) = {
            let meter = Arc::new(Meter::default());
            let sessions = Arc::new(AtomicUsize::new(20));
            let handle = Handle {
                tx,
                load: sessions.clone(),
                meter: meter.clone(),
            };
            (handle, Metering::new(meter, sessions))
        };
        // Two windows at 45 % busy with 10 of the 20 sessions waiting.
        for _ in 0..2 {
            metering.since = Instant::now() - LOAD_WINDOW;
            metering.busy = LOAD_WINDOW.mul_f64(0.45);
            metering.smoothed = 0.45;
            metering.turn(cpu::thread_time(), Duration::ZERO, || 10);
        }
        let projected = handle.meter().projected_busy(handle.load() + 1);
        assert!(
            projected > 0.9,
            "the waiting viewers count at full cost: {projected}"
        );
    }

    fn metering() -> (Arc<Meter>, Metering) {
        let meter = Arc::new(Meter::default());
        let m = Metering::new(meter.clone(), Arc::new(AtomicUsize::new(2)));
        (meter, m)
    }

    /// Time the thread is off the CPU inside a turn (taken by other processes on a
    /// loaded host; a sleep here) is not the worker's load: with wall time a worker with
    /// two sessions read as busy and the node refused viewers (a CI flake).
    #[test]
    fn time_off_the_cpu_is_not_busy() {
        let (meter, mut m) = metering();
        for _ in 0..2 {
            m.since = Instant::now() - LOAD_WINDOW;
            let woke = cpu::thread_time();
            std::thread::sleep(Duration::from_millis(100));
            m.turn(woke, Duration::ZERO, || 0);
        }
        assert!(meter.busy() < 0.05, "busy {}", meter.busy());
    }

    /// Under a quota of half a CPU, spending that half is full.
    #[test]
    fn busy_is_measured_against_the_cpu_the_worker_may_use() {
        let (meter, mut m) = metering();
        meter.set_capacity(0.5);
        for _ in 0..2 {
            m.since = Instant::now() - LOAD_WINDOW;
            m.busy = LOAD_WINDOW.mul_f64(0.45);
            m.smoothed = 0.9;
            m.turn(cpu::thread_time(), Duration::ZERO, || 0);
        }
        assert!(meter.busy() >= 0.89, "busy {}", meter.busy());
        meter.set_capacity(1.0);
        assert_eq!(meter.capacity(), 1.0);
    }

    #[test]
    fn busy_rises_fast_and_falls_slowly() {
        // A saturated worker whose measure dips for a window stays past 0.9.
        let b = smooth_busy(0.95, 0.7);
        assert!((0.9..0.95).contains(&b), "{b}");
        // Load that comes is seen within two windows...
        let b = smooth_busy(smooth_busy(0.2, 1.0), 1.0);
        assert!(b > 0.75, "{b}");
        // ...load that goes within a few seconds (eight windows of 0.5 s).
        let mut b = 0.95;
        for _ in 0..16 {
            b = smooth_busy(b, 0.3);
        }
        assert!(b < 0.45, "{b}");
    }

    fn frame(key: bool, n: u8) -> Arc<[u8]> {
        let nal = if key { 0x65 } else { 0x41 };
        Arc::from(vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, nal, n])
    }

    /// What a relay consumer got: (keyframe, contiguous, last byte) per frame, and the
    /// number of other messages.
    fn drain(rx: &mut mpsc::Receiver<pb::RelayMessage>) -> (Vec<(bool, bool, u8)>, usize) {
        let (mut frames, mut other) = (Vec::new(), 0);
        while let Ok(m) = rx.try_recv() {
            match m.msg {
                Some(pb::relay_message::Msg::Frame(f)) => {
                    frames.push((f.keyframe, f.contiguous, *f.data.last().unwrap_or(&0)))
                }
                _ => other += 1,
            }
        }
        (frames, other)
    }

    /// A stuck relay consumer never holds the node up: what does not fit is dropped,
    /// video resumes at the next keyframe marked `contiguous = false`, and a control
    /// message that does not fit cuts the link (the consumer pulls again).
    #[tokio::test]
    async fn a_slow_relay_consumer_drops_and_resumes_at_a_keyframe() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let core = Core::new(CoreConfig {
            local_addr: addr,
            announce_addr: addr,
            tcp_addr: None,
            max_sessions: 10,
            connect_timeout: crate::core::DEFAULT_CONNECT_TIMEOUT,
            wall_clock: system_wall_clock(),
            id_seed: IdSeed::new([1; 32]),
            worker: Default::default(),
        });
        let (events, _events_rx) = mpsc::unbounded_channel();
        let mut lp = Loop::new(socket, core, 0, events, Vec::new(), Arc::default());
        let (tx, mut rx) = mpsc::channel(4);
        let session = lp.core.publish_local("r").unwrap();
        lp.command(Command::AttachRelay {
            room: "r".into(),
            sink: 1,
            tx,
            consumer: "edge",
            from_gop: false,
        });
        lp.flush();
        let push = |lp: &mut Loop, codec: FrameCodec, data: Arc<[u8]>| {
            lp.command(Command::PushLocal {
                session: session.clone(),
                codec,
                time: 0,
                data,
                config: String::new(),
            });
            lp.flush();
        };
        // The track, a keyframe and two frames fill the queue; the rest is dropped.
        for n in 0..6 {
            push(&mut lp, FrameCodec::H264, frame(n == 0, n));
        }
        assert_eq!(
            drain(&mut rx),
            (vec![(true, true, 0), (false, true, 1), (false, true, 2)], 1)
        );
        // Room again, but no keyframe yet: still dropped; then the keyframe resumes.
        push(&mut lp, FrameCodec::H264, frame(false, 6));
        push(&mut lp, FrameCodec::H264, frame(true, 7));
        push(&mut lp, FrameCodec::H264, frame(false, 8));
        assert_eq!(
            drain(&mut rx),
            (vec![(true, false, 7), (false, true, 8)], 0)
        );
        assert_eq!(lp.relay_resyncs, 1);
        // A new track's announcement that does not fit cuts the link.
        for n in 9..13 {
            push(&mut lp, FrameCodec::H264, frame(false, n));
        }
        push(&mut lp, FrameCodec::Opus, Arc::from(vec![0xf8, 0xff]));
        assert!(lp.relays.is_empty(), "link cut");
        drain(&mut rx);
        assert!(
            rx.recv().await.is_none(),
            "the consumer sees its stream end"
        );
    }
}
