//! The engine: one tokio task that owns many peer connections and drives them all,
//! like a small SFU loop: no task per peer, no locks on the media path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::Url;
use str0m::change::SdpAnswer;
use str0m::crypto::dtls::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::http::{parse_url, Signaling};
use super::session::{
    LiveCounters, PublisherState, PublisherStats, Role, Session, SessionStats, Timing, ViewerState,
    ViewerStats,
};
use crate::source::{VideoConfig, PROFILE_LEVEL_ID, SIMULCAST_LAYERS};
use crate::{Error, FailureCause};

/// Payload types offered: the same numbers the Skylark SFU uses for H.264 42e01f.
const H264_PT: u8 = 102;
const H264_RTX_PT: u8 = 103;
/// Datagrams read from one socket per wake-up before others get a turn.
const MAX_READS_PER_WAKE: usize = 64;
/// The loop wakes at least this often, even with nothing scheduled.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Commands queued to an engine before senders wait.
const COMMAND_QUEUE: usize = 1024;

/// How an [`Engine`]'s peers behave.
///
/// ```
/// use skylark_loadgen::peer::EngineConfig;
/// let config = EngineConfig { local_ip: "10.0.0.2".parse().unwrap(), ..Default::default() };
/// assert_eq!(config.http_timeout, std::time::Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Address the peers' UDP sockets bind and announce as their host candidate; a
    /// concrete address (not `0.0.0.0`), reachable from the server.
    pub local_ip: IpAddr,
    /// Timeout of every signaling request (POST, DELETE).
    pub http_timeout: Duration,
    /// ICE + DTLS must connect within this, from when the answer is applied.
    pub connect_timeout: Duration,
    /// A connected viewer without a keyframe after this sends a PLI (then every 1 s).
    pub keyframe_request_after: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            keyframe_request_after: Duration::from_millis(500),
        }
    }
}

enum Command {
    Add(u64, Box<Session>),
    Remove(u64, Option<oneshot::Sender<Option<SessionStats>>>),
    Stats(u64, oneshot::Sender<Option<SessionStats>>),
}

/// Builds `Rtc`s with Skylark's codecs and one shared certificate.
struct RtcFactory {
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
}

impl RtcFactory {
    fn new() -> Result<Self, Error> {
        let crypto = str0m::crypto::from_feature_flags();
        // One certificate for all of an engine's peers: generating a key per peer
        // costs CPU a load generator should spend on media.
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| Error::Rtc("the crypto provider cannot make a certificate".into()))?;
        Ok(RtcFactory {
            crypto: Arc::new(crypto),
            cert,
        })
    }

    fn build(&self, now: Instant) -> Rtc {
        rtc_config()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .build(now)
    }
}

/// The str0m configuration of every peer: H.264 constrained baseline with
/// packetization-mode 1 (what the Skylark SFU requires) and Opus, nothing else.
///
/// ```
/// let rtc = skylark_loadgen::peer::rtc_config().build(std::time::Instant::now());
/// assert_eq!(rtc.codec_config().params().len(), 2);
/// ```
pub fn rtc_config() -> RtcConfig {
    let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false);
    cfg.codec_config().add_h264(
        H264_PT.into(),
        Some(H264_RTX_PT.into()),
        true,
        PROFILE_LEVEL_ID,
    );
    cfg
}

struct Inner {
    tx: mpsc::Sender<Command>,
    signaling: Signaling,
    factory: RtcFactory,
    config: EngineConfig,
    counters: Arc<LiveCounters>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

/// Runs many WebRTC peers (publishers and viewers) on one tokio task.
///
/// Cheap to clone; the task stops on [`Engine::shutdown`], when the cancellation
/// token passed to [`Engine::start`] fires, or when every clone and peer handle is
/// dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), skylark_loadgen::Error> {
/// use skylark_loadgen::peer::{Engine, EngineConfig};
/// use tokio_util::sync::CancellationToken;
/// let engine = Engine::start(EngineConfig::default(), CancellationToken::new())?;
/// let viewer = engine.view("http://127.0.0.1:8080/whep/room", None).await?;
/// let stats = viewer.wait_playing(std::time::Duration::from_secs(5)).await?;
/// println!("joined in {:?} ms", stats.join_ms);
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the engine task on the current tokio runtime (panics outside one, like
    /// `tokio::spawn`).
    pub fn start(config: EngineConfig, cancel: CancellationToken) -> Result<Engine, Error> {
        Self::start_with_counters(config, cancel, Arc::new(LiveCounters::default()))
    }

    /// Like [`Engine::start`], adding to shared counters (several engines, one total).
    pub fn start_with_counters(
        config: EngineConfig,
        cancel: CancellationToken,
        counters: Arc<LiveCounters>,
    ) -> Result<Engine, Error> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let cancel = cancel.child_token();
        let core = Core::new(counters.clone());
        let task = tokio::spawn(core.run(rx, cancel.clone()));
        Ok(Engine {
            inner: Arc::new(Inner {
                tx,
                signaling: Signaling::new(config.http_timeout)?,
                factory: RtcFactory::new()?,
                config,
                counters,
                cancel,
                task: Mutex::new(Some(task)),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Live counters of this engine's peers.
    pub fn counters(&self) -> &Arc<LiveCounters> {
        &self.inner.counters
    }

    /// Stops the task: every peer is closed (without DELETE) and its stats are lost.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Publishes synthetic H.264 + Opus over WHIP, with `stream_key` as bearer token.
    ///
    /// Returns once the server accepted the offer (201); media flows as soon as
    /// ICE + DTLS connect (see [`Publisher::wait_connected`]).
    pub async fn publish(
        &self,
        whip_url: &str,
        stream_key: &str,
        video: VideoConfig,
    ) -> Result<Publisher, Error> {
        self.publish_with(whip_url, stream_key, video, false).await
    }

    /// Like [`Engine::publish`], with the video as simulcast: one H.264 stream per
    /// layer of [`SIMULCAST_LAYERS`] (RIDs `h`, `m`, `l`: full size, 1/2, 1/4), offered
    /// the way a browser with three `sendEncodings` does (`a=rid` + `a=simulcast`).
    /// `video` shapes the top layer; the others get their share of its bitrate.
    ///
    /// ```no_run
    /// # async fn demo(engine: skylark_loadgen::Engine) -> Result<(), skylark_loadgen::Error> {
    /// let video = skylark_loadgen::source::VideoConfig::default();
    /// let publisher = engine.publish_simulcast("http://127.0.0.1:8080/whip/room", "sk_...", video).await?;
    /// let stats = publisher.wait_connected(std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(stats.layers.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn publish_simulcast(
        &self,
        whip_url: &str,
        stream_key: &str,
        video: VideoConfig,
    ) -> Result<Publisher, Error> {
        self.publish_with(whip_url, stream_key, video, true).await
    }

    /// Publishes one stream, or with `simulcast` every layer of [`SIMULCAST_LAYERS`].
    pub async fn publish_with(
        &self,
        whip_url: &str,
        stream_key: &str,
        video: VideoConfig,
        simulcast: bool,
    ) -> Result<Publisher, Error> {
        let layers = simulcast.then(|| {
            let mut sim = Simulcast::new();
            for l in SIMULCAST_LAYERS {
                sim.add_send_layer(SimulcastLayer::new(l.rid));
            }
            sim
        });
        let n = self
            .negotiate(
                whip_url,
                Some(stream_key.to_string()),
                Direction::SendOnly,
                layers,
            )
            .await?;
        if n.location.is_none() {
            return Err(Error::MissingLocation);
        }
        let role = Role::Publisher(Box::new(PublisherState::new(
            n.video_mid,
            n.audio_mid,
            video,
            simulcast,
        )));
        Ok(Publisher {
            handle: self.add(n, role).await?,
        })
    }

    /// Watches over WHEP (with an optional bearer token): receives video and audio and
    /// measures them. Returns once the server accepted the offer (201).
    pub async fn view(&self, whep_url: &str, token: Option<&str>) -> Result<Viewer, Error> {
        self.view_via(whep_url, token, None).await
    }

    /// Like [`Engine::view`], with the media sent to and from `via` instead of the
    /// server's candidates: a UDP proxy in front of the server that impairs this
    /// viewer's path alone (loss, a rate limit), as a test or a lab does.
    pub async fn view_via(
        &self,
        whep_url: &str,
        token: Option<&str>,
        via: Option<std::net::SocketAddr>,
    ) -> Result<Viewer, Error> {
        let counters = &self.inner.counters;
        LiveCounters::add(&counters.viewers_requested, 1);
        let joined = async {
            let n = self
                .negotiate_via(
                    whep_url,
                    token.map(str::to_string),
                    Direction::RecvOnly,
                    None,
                    via,
                )
                .await?;
            let role = Role::Viewer(Box::new(ViewerState::new(n.video_mid, n.audio_mid)));
            self.add(n, role).await
        }
        .await;
        match joined {
            Ok(handle) => Ok(Viewer { handle }),
            Err(e) => {
                LiveCounters::add(&counters.viewers_failed, 1);
                Err(e)
            }
        }
    }

    /// Makes an offer with one video (simulcast, if given) and one audio m-line, POSTs
    /// it and applies the answer.
    async fn negotiate(
        &self,
        url: &str,
        bearer: Option<String>,
        direction: Direction,
        simulcast: Option<Simulcast>,
    ) -> Result<Negotiated, Error> {
        self.negotiate_via(url, bearer, direction, simulcast, None)
            .await
    }

    /// [`Engine::negotiate`], reaching the server's media at `via` if given.
    async fn negotiate_via(
        &self,
        url: &str,
        bearer: Option<String>,
        direction: Direction,
        simulcast: Option<Simulcast>,
        via: Option<std::net::SocketAddr>,
    ) -> Result<Negotiated, Error> {
        let post_started = Instant::now();
        let url = parse_url(url)?;
        let socket = UdpSocket::bind((self.inner.config.local_ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        let mut rtc = self.inner.factory.build(post_started);
        let candidate =
            Candidate::host(local_addr, "udp").map_err(|e| Error::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let stream = Some("skylark-loadgen".to_string());
        let video_mid = api.add_media(MediaKind::Video, direction, stream.clone(), None, simulcast);
        let audio_mid = api.add_media(MediaKind::Audio, direction, stream, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| Error::Rtc("str0m made no offer".into()))?;

        let signaling = &self.inner.signaling;
        let answer = signaling
            .post_offer(&url, bearer.as_deref(), offer.to_sdp_string())
            .await?;
        let sdp = match via {
            Some(via) => candidates_at(&answer.sdp, via),
            None => answer.sdp.clone(),
        };
        let applied = SdpAnswer::from_sdp_string(&sdp)
            .map_err(|e| Error::BadAnswer(e.to_string()))
            .and_then(|sdp| {
                rtc.sdp_api()
                    .accept_answer(pending, sdp)
                    .map_err(|e| Error::BadAnswer(e.to_string()))
            });
        if let Err(e) = applied {
            // The server holds a session we cannot use: release it.
            if let Some(loc) = &answer.location {
                let _ = signaling.delete(loc, bearer.as_deref()).await;
            }
            return Err(e);
        }
        Ok(Negotiated {
            rtc,
            socket: Arc::new(socket),
            local_addr,
            post_started,
            video_mid,
            audio_mid,
            location: answer.location,
            serving_node: answer.serving_node,
            bearer,
        })
    }

    /// Hands a negotiated peer to the engine task.
    async fn add(&self, n: Negotiated, role: Role) -> Result<SessionHandle, Error> {
        let timing = Timing {
            connect_timeout: self.inner.config.connect_timeout,
            keyframe_request_after: self.inner.config.keyframe_request_after,
        };
        let session = Session::new(
            n.rtc,
            n.socket,
            n.local_addr,
            role,
            n.post_started,
            Instant::now(),
            timing,
        );
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = SessionHandle {
            id,
            tx: self.inner.tx.clone(),
            signaling: self.inner.signaling.clone(),
            location: n.location,
            serving_node: n.serving_node,
            bearer: n.bearer,
            local_addr: n.local_addr,
            removed: false,
        };
        let added = self
            .inner
            .tx
            .send(Command::Add(id, Box::new(session)))
            .await;
        if added.is_err() {
            let _ = handle.delete().await;
            return Err(Error::EngineStopped);
        }
        Ok(handle)
    }
}

/// `sdp` with every candidate's address replaced by `via`.
fn candidates_at(sdp: &str, via: std::net::SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let fields: Vec<&str> = body.split(' ').collect();
        if body.starts_with("a=candidate:") && fields.len() > 5 {
            let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            fields[4] = via.ip().to_string();
            fields[5] = via.port().to_string();
            out.push_str(&fields.join(" "));
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A peer whose offer the server accepted, not yet running.
struct Negotiated {
    rtc: Rtc,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    post_started: Instant,
    video_mid: Mid,
    audio_mid: Mid,
    location: Option<Url>,
    serving_node: Option<String>,
    bearer: Option<String>,
}

/// What the engine task owns.
struct Core {
    sessions: HashMap<u64, Slot>,
    counters: Arc<LiveCounters>,
    /// Session deadlines, earliest first. Entries are never updated in place: a moved
    /// deadline pushes a new entry and the old one is skipped when it surfaces, so
    /// each wake-up costs O(log n) instead of a scan of every session.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// One pending "socket readable" future per session: a wake-up touches only the
    /// socket that has data.
    readable: FuturesUnordered<BoxFuture<'static, u64>>,
    /// Cancels a session's readable future when it is removed, so its socket closes.
    arm_tokens: HashMap<u64, CancellationToken>,
    /// Scratch list of sessions due in one pass.
    due: Vec<u64>,
}

struct Slot {
    session: Session,
    /// The deadline this session has a live entry for in `Core::timers`.
    scheduled: Option<Instant>,
}

impl Slot {
    /// Pushes a timer entry if the session's deadline moved.
    fn schedule(&mut self, id: u64, timers: &mut BinaryHeap<Reverse<(Instant, u64)>>) {
        let deadline = self.session.deadline();
        if deadline != self.scheduled {
            self.scheduled = deadline;
            if let Some(d) = deadline {
                timers.push(Reverse((d, id)));
            }
        }
    }
}

impl Core {
    fn new(counters: Arc<LiveCounters>) -> Self {
        Core {
            sessions: HashMap::new(),
            counters,
            timers: BinaryHeap::new(),
            readable: FuturesUnordered::new(),
            arm_tokens: HashMap::new(),
            due: Vec::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        loop {
            self.drive(Instant::now());
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let cap = Instant::now() + MAX_SLEEP;
            let sleep_until = next.map_or(cap, |t| t.min(cap));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(id) = self.readable.next(), if !self.readable.is_empty() => {
                    self.read(id, &mut buf);
                }
                () = tokio::time::sleep_until(sleep_until.into()) => {}
            }
        }
        let now = Instant::now();
        for (_, slot) in self.sessions.drain() {
            let _ = slot.session.close(now, &self.counters);
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Add(id, session) => {
                let mut slot = Slot {
                    session: *session,
                    scheduled: None,
                };
                // Start ICE at once rather than at the next scheduled wake-up.
                slot.session.drive(now, &self.counters);
                slot.schedule(id, &mut self.timers);
                self.arm(id, slot.session.socket().clone());
                self.sessions.insert(id, slot);
            }
            Command::Remove(id, reply) => {
                if let Some(token) = self.arm_tokens.remove(&id) {
                    token.cancel();
                }
                let stats = self
                    .sessions
                    .remove(&id)
                    .map(|slot| slot.session.close(now, &self.counters));
                if let Some(reply) = reply {
                    let _ = reply.send(stats);
                }
            }
            Command::Stats(id, reply) => {
                let _ = reply.send(self.sessions.get(&id).map(|s| s.session.stats(now)));
            }
        }
    }

    /// Waits for the socket to become readable (or the session to go away).
    fn arm(&mut self, id: u64, socket: Arc<UdpSocket>) {
        let token = self.arm_tokens.entry(id).or_default().clone();
        self.readable.push(Box::pin(async move {
            tokio::select! {
                r = socket.readable() => {
                    if let Err(e) = r {
                        debug!("socket readiness: {e}");
                    }
                }
                () = token.cancelled() => {}
            }
            id
        }));
    }

    fn read(&mut self, id: u64, buf: &mut [u8]) {
        let Some(slot) = self.sessions.get_mut(&id) else {
            return;
        };
        let socket = slot.session.socket().clone();
        for _ in 0..MAX_READS_PER_WAKE {
            match socket.try_recv_from(buf) {
                Ok((n, source)) => {
                    slot.session
                        .receive(&buf[..n], source, Instant::now(), &self.counters);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors (e.g. port unreachable) surface here on Linux: the
                // session's own timeouts decide whether the peer is gone.
                Err(e) => debug!("recv: {e}"),
            }
        }
        slot.schedule(id, &mut self.timers);
        if slot.session.is_alive() {
            self.arm(id, socket);
        } else {
            // A dead session keeps its stats until removed but stops reading.
            self.arm_tokens.remove(&id);
        }
    }

    /// Drives the sessions whose deadline has passed.
    fn drive(&mut self, now: Instant) {
        // Collect first, drive after: a session that is due again at once waits for
        // the next pass instead of starving the sockets.
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self
                .sessions
                .get(&id)
                .is_some_and(|s| s.scheduled == Some(t))
            {
                self.due.push(id);
            }
        }
        for id in std::mem::take(&mut self.due) {
            let Some(slot) = self.sessions.get_mut(&id) else {
                continue;
            };
            slot.scheduled = None;
            slot.session.drive(now, &self.counters);
            slot.schedule(id, &mut self.timers);
        }
    }
}

/// The engine-side half of a peer handle.
struct SessionHandle {
    id: u64,
    tx: mpsc::Sender<Command>,
    signaling: Signaling,
    location: Option<Url>,
    serving_node: Option<String>,
    bearer: Option<String>,
    local_addr: SocketAddr,
    removed: bool,
}

impl SessionHandle {
    async fn stats(&self) -> Result<SessionStats, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(self.id, reply))
            .await
            .map_err(|_| Error::EngineStopped)?;
        rx.await.ok().flatten().ok_or(Error::EngineStopped)
    }

    /// Takes the session out of the engine, returning its final stats.
    async fn remove(&mut self) -> Option<SessionStats> {
        self.removed = true;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Remove(self.id, Some(reply)))
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    async fn delete(&self) -> Result<(), Error> {
        match &self.location {
            Some(loc) => self.signaling.delete(loc, self.bearer.as_deref()).await,
            None => Ok(()),
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort: a full queue or a stopped engine means nothing to free.
            let _ = self.tx.try_send(Command::Remove(self.id, None));
        }
    }
}

/// A WHIP publisher sending synthetic media in real time.
///
/// Dropping it stops the media without telling the server; [`Publisher::stop`]
/// also sends the WHIP `DELETE`.
///
/// ```no_run
/// # async fn demo(engine: skylark_loadgen::Engine) -> Result<(), skylark_loadgen::Error> {
/// use skylark_loadgen::source::VideoConfig;
/// let video = VideoConfig { bitrate_kbps: 2500, ..Default::default() };
/// let publisher = engine.publish("http://127.0.0.1:8080/whip", "sk_...", video).await?;
/// publisher.wait_connected(std::time::Duration::from_secs(5)).await?;
/// tokio::time::sleep(std::time::Duration::from_secs(10)).await;
/// let (stats, deleted) = publisher.stop().await;
/// deleted?;
/// println!("sent {} frames", stats.map_or(0, |s| s.frames_sent));
/// # Ok(()) }
/// ```
pub struct Publisher {
    handle: SessionHandle,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("location", &self.handle.location)
            .field("local_addr", &self.handle.local_addr)
            .finish()
    }
}

impl Publisher {
    /// The WHIP session resource (`Location`, resolved against the WHIP URL).
    pub fn location(&self) -> Option<&Url> {
        self.handle.location.as_ref()
    }

    /// The local UDP address of this peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// A snapshot of what the publisher has sent.
    pub async fn stats(&self) -> Result<PublisherStats, Error> {
        match self.handle.stats().await? {
            SessionStats::Publisher(s) => Ok(s),
            SessionStats::Viewer(_) => Err(Error::EngineStopped),
        }
    }

    /// Waits until ICE + DTLS are up (media is flowing), or fails.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<PublisherStats, Error> {
        wait_for(timeout, || async {
            let s = self.stats().await?;
            match s.failure {
                Some(cause) => Err(Error::Failed(cause)),
                None => Ok(s.connected.then_some(s)),
            }
        })
        .await
    }

    /// Stops sending, closes the connection and sends `DELETE` to the session resource.
    /// The stats are returned even when the `DELETE` fails (second field).
    pub async fn stop(mut self) -> (Option<PublisherStats>, Result<(), Error>) {
        let stats = match self.handle.remove().await {
            Some(SessionStats::Publisher(s)) => Some(s),
            _ => None,
        };
        (stats, self.handle.delete().await)
    }
}

/// A WHEP viewer measuring what it receives.
///
/// Dropping it closes the connection without telling the server;
/// [`Viewer::close`] also sends the WHEP `DELETE`.
///
/// ```no_run
/// # async fn demo(engine: skylark_loadgen::Engine) -> Result<(), skylark_loadgen::Error> {
/// let viewer = engine.view("http://127.0.0.1:8080/whep/room", Some("viewer-token")).await?;
/// let joined = viewer.wait_playing(std::time::Duration::from_secs(5)).await?;
/// println!("first keyframe after {:?} ms", joined.join_ms);
/// let (stats, _deleted) = viewer.close().await;
/// if let Some(s) = stats {
///     assert_eq!(s.frames_bad_hash, 0);
///     println!("latency {:?}, lost {} of {}", s.latency_ms, s.frames_missing, s.frames_expected);
/// }
/// # Ok(()) }
/// ```
pub struct Viewer {
    handle: SessionHandle,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("location", &self.handle.location)
            .field("local_addr", &self.handle.local_addr)
            .finish()
    }
}

impl Viewer {
    /// The WHEP session resource, if the server gave one.
    pub fn location(&self) -> Option<&Url> {
        self.handle.location.as_ref()
    }

    /// The local UDP address of this peer.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// The SFU node serving this viewer, from the WHEP answer's `Skylark-Node` header.
    pub fn serving_node(&self) -> Option<&str> {
        self.handle.serving_node.as_deref()
    }

    /// A snapshot of what the viewer has measured so far.
    pub async fn stats(&self) -> Result<ViewerStats, Error> {
        match self.handle.stats().await? {
            SessionStats::Viewer(s) => Ok(self.with_node(*s)),
            SessionStats::Publisher(_) => Err(Error::EngineStopped),
        }
    }

    fn with_node(&self, mut s: ViewerStats) -> ViewerStats {
        s.serving_node = self.handle.serving_node.clone();
        s
    }

    /// Waits until the first keyframe arrived (the viewer could show a picture).
    pub async fn wait_playing(&self, timeout: Duration) -> Result<ViewerStats, Error> {
        let result = wait_for(timeout, || async {
            let s = self.stats().await?;
            match s.failure {
                Some(cause) => Err(Error::Failed(cause)),
                None => Ok(s.join_ms.is_some().then_some(s)),
            }
        })
        .await;
        match result {
            Err(Error::Failed(FailureCause::IceTimeout)) => {
                // The wait ran out: say whether the connection or the keyframe is late.
                let connected = self.stats().await.map(|s| s.connected).unwrap_or(false);
                Err(Error::Failed(if connected {
                    FailureCause::NoKeyframe
                } else {
                    FailureCause::IceTimeout
                }))
            }
            other => other,
        }
    }

    /// Closes the connection and sends `DELETE`; returns the final stats (if the
    /// engine still ran) and the `DELETE` result.
    pub async fn close(mut self) -> (Option<ViewerStats>, Result<(), Error>) {
        let stats = match self.handle.remove().await {
            Some(SessionStats::Viewer(s)) => Some(self.with_node(*s)),
            _ => None,
        };
        (stats, self.handle.delete().await)
    }
}

/// Polls `check` every 10 ms until it yields a value, fails, or `timeout` passes
/// (reported as [`FailureCause::IceTimeout`]).
async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Failed(FailureCause::IceTimeout));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
