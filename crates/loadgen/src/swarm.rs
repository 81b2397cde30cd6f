//! One room's load: one optional publisher and N viewers ramped up over time, spread
//! over a few engine tasks, ending in a [`SwarmReport`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::peer::{
    Engine, EngineConfig, LiveCounters, RejoinPolicy, RejoinReport, RejoiningViewer, Viewer,
    ViewerStats,
};
use crate::progress::Progress;
use crate::report::{RunEnd, SwarmReport};
use crate::source::VideoConfig;
use crate::Error;

/// How often the progress channel is updated.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Viewers closed (stats + DELETE) concurrently at the end.
const CLOSE_CONCURRENCY: usize = 64;

/// The publisher of a run.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// WHIP endpoint, e.g. `http://127.0.0.1:8080/whip`.
    pub whip_url: String,
    /// Stream key, sent as the bearer token.
    pub stream_key: String,
    /// Shape of the synthetic video (of its top layer, with simulcast).
    pub video: VideoConfig,
    /// Send the video as simulcast layers
    /// ([`SIMULCAST_LAYERS`](crate::source::SIMULCAST_LAYERS)).
    pub simulcast: bool,
}

/// What a [`Swarm`] does.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Publish before the viewers join (else watch an existing stream).
    pub publish: Option<PublishConfig>,
    /// WHEP endpoint the viewers POST to.
    pub whep_url: String,
    /// Bearer token for the viewers (private rooms).
    pub whep_token: Option<String>,
    /// Viewers to start.
    pub viewers: usize,
    /// Viewers started per second; 0 or less starts them all at once.
    pub ramp_per_sec: f64,
    /// Length of the run, from the first viewer's start; the ramp stops at the end too.
    pub duration: Duration,
    /// Engine tasks the viewers are spread over (the publisher uses the first).
    pub workers: usize,
    /// Signaling requests in flight at once.
    pub max_concurrent_joins: usize,
    /// Peer behaviour: local IP, timeouts.
    pub engine: EngineConfig,
    /// Viewers rejoin through signaling when their picture freezes or their session
    /// fails, like the web player; `None`: a failed viewer stays failed.
    pub rejoin: Option<RejoinPolicy>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            publish: None,
            whep_url: String::new(),
            whep_token: None,
            viewers: 1,
            ramp_per_sec: 0.0,
            duration: Duration::from_secs(10),
            workers: 1,
            max_concurrent_joins: 64,
            engine: EngineConfig::default(),
            rejoin: None,
        }
    }
}

/// A running load test.
///
/// ```no_run
/// # async fn demo() -> Result<(), skylark_loadgen::Error> {
/// use skylark_loadgen::swarm::{PublishConfig, Swarm, SwarmConfig};
/// use std::time::Duration;
/// let config = SwarmConfig {
///     publish: Some(PublishConfig {
///         whip_url: "http://127.0.0.1:8080/whip".into(),
///         stream_key: "sk_...".into(),
///         video: Default::default(),
///         simulcast: false,
///     }),
///     whep_url: "http://127.0.0.1:8080/whep/room".into(),
///     viewers: 100,
///     ramp_per_sec: 20.0,
///     duration: Duration::from_secs(30),
///     ..Default::default()
/// };
/// let swarm = Swarm::start(config, tokio_util::sync::CancellationToken::new());
/// let mut progress = swarm.progress();
/// tokio::spawn(async move {
///     while progress.changed().await.is_ok() {
///         let p = *progress.borrow();
///         eprintln!("{:.0}s playing {} failed {} {:.0} kbps", p.elapsed_s, p.playing, p.failed, p.kbps);
///     }
/// });
/// let report = swarm.wait().await?;
/// println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
/// # Ok(()) }
/// ```
pub struct Swarm {
    progress: watch::Receiver<Progress>,
    task: JoinHandle<Result<SwarmReport, Error>>,
}

impl Swarm {
    /// Starts the run on the current tokio runtime; `cancel` ends it early (the report
    /// still covers what happened).
    pub fn start(config: SwarmConfig, cancel: CancellationToken) -> Swarm {
        let (tx, rx) = watch::channel(Progress::default());
        let task = tokio::spawn(run(config, cancel, tx));
        Swarm { progress: rx, task }
    }

    /// Live counters, updated twice a second.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits for the run to end and returns its report.
    pub async fn wait(self) -> Result<SwarmReport, Error> {
        self.task.await.map_err(|_| Error::EngineStopped)?
    }
}

/// A viewer that joined, and when.
struct Joined {
    viewer: Watching,
    at: Instant,
}

enum Watching {
    Once(Viewer),
    Rejoining(RejoiningViewer),
}

impl Watching {
    /// Final stats (of the last session, for a rejoining viewer), its rejoins, and the
    /// `DELETE` result.
    async fn close(
        self,
    ) -> (
        Option<ViewerStats>,
        Option<crate::peer::RejoinStats>,
        Result<(), Error>,
    ) {
        match self {
            Watching::Once(v) => {
                let (stats, deleted) = v.close().await;
                (stats, None, deleted)
            }
            Watching::Rejoining(v) => {
                let (mut rs, deleted) = v.close().await;
                (rs.current.take(), Some(rs), deleted)
            }
        }
    }
}

/// Outcomes of the join tasks.
#[derive(Default)]
struct Tally {
    joined: Vec<Joined>,
    /// Signaling failures by cause.
    failures: BTreeMap<String, u64>,
    /// What the server said the first time, by cause.
    messages: BTreeMap<String, String>,
    /// Joins cut off by the end of the run.
    aborted: u64,
}

impl Tally {
    fn on_join(&mut self, res: Result<Result<Joined, Error>, tokio::task::JoinError>) {
        match res {
            Ok(Ok(j)) => self.joined.push(j),
            Ok(Err(e)) => {
                let cause = e.cause().to_string();
                *self.failures.entry(cause.clone()).or_default() += 1;
                self.messages.entry(cause).or_insert_with(|| e.message());
            }
            Err(_) => self.aborted += 1,
        }
    }
}

async fn run(
    config: SwarmConfig,
    cancel: CancellationToken,
    progress: watch::Sender<Progress>,
) -> Result<SwarmReport, Error> {
    let run_cancel = cancel.child_token();
    let counters = Arc::new(LiveCounters::default());
    let engines = (0..config.workers.max(1))
        .map(|_| Engine::start_with_counters(config.engine, run_cancel.clone(), counters.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let result = drive(&config, &engines, &counters, &cancel, &progress).await;
    run_cancel.cancel();
    for engine in &engines {
        engine.shutdown().await;
    }
    result
}

async fn drive(
    config: &SwarmConfig,
    engines: &[Engine],
    counters: &Arc<LiveCounters>,
    cancel: &CancellationToken,
    progress: &watch::Sender<Progress>,
) -> Result<SwarmReport, Error> {
    let publisher = match &config.publish {
        Some(p) => {
            let publisher = engines[0]
                .publish_with(&p.whip_url, &p.stream_key, p.video, p.simulcast)
                .await?;
            if let Err(e) = publisher
                .wait_connected(config.engine.connect_timeout)
                .await
            {
                // Release the server's session before giving up.
                let _ = publisher.stop().await;
                return Err(e);
            }
            Some(publisher)
        }
        None => None,
    };

    let start = Instant::now();
    let end = start + config.duration;
    let ticker = tokio::spawn(report_progress(counters.clone(), start, progress.clone()));

    let gate = Arc::new(Semaphore::new(config.max_concurrent_joins.max(1)));
    let mut joins: JoinSet<Result<Joined, Error>> = JoinSet::new();
    let mut tally = Tally::default();

    let mut requested = 0u64;
    for i in 0..config.viewers {
        let due = if config.ramp_per_sec > 0.0 {
            start + Duration::from_secs_f64(i as f64 / config.ramp_per_sec)
        } else {
            start
        };
        if due >= end {
            break;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(due.into()) => break,
                Some(res) = joins.join_next(), if !joins.is_empty() => {
                    tally.on_join(res);
                }
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        requested += 1;
        let engine = engines[i % engines.len()].clone();
        let gate = gate.clone();
        let url = config.whep_url.clone();
        let token = config.whep_token.clone();
        let rejoin = config.rejoin;
        joins.spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .map_err(|_| Error::EngineStopped)?;
            let viewer = match rejoin {
                Some(policy) => Watching::Rejoining(
                    engine
                        .view_rejoining(&url, token.as_deref(), policy)
                        .await?,
                ),
                None => Watching::Once(engine.view(&url, token.as_deref()).await?),
            };
            Ok(Joined {
                viewer,
                at: Instant::now(),
            })
        });
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(end.into()) => break,
            Some(res) = joins.join_next(), if !joins.is_empty() => {
                tally.on_join(res);
            }
        }
    }
    // Joins still in signaling at the end are cut off (unfinished).
    joins.abort_all();
    while let Some(res) = joins.join_next().await {
        tally.on_join(res);
    }
    let ended = Instant::now();
    ticker.abort();
    let _ = progress.send(Progress::from_counters(
        &counters.snapshot(),
        ended - start,
        0.0,
    ));

    // Close every viewer: final stats, then DELETE.
    type Closed = (
        Instant,
        Option<ViewerStats>,
        Option<crate::peer::RejoinStats>,
        Result<(), Error>,
    );
    let closed: Vec<Closed> = stream::iter(tally.joined)
        .map(|j| async move {
            let (stats, rejoins, deleted) = j.viewer.close().await;
            (j.at, stats, rejoins, deleted)
        })
        .buffer_unordered(CLOSE_CONCURRENCY)
        .collect()
        .await;
    let mut delete_failures = closed.iter().filter(|c| c.3.is_err()).count() as u64;
    let rejoins = config
        .rejoin
        .map(|_| RejoinReport::new(closed.iter().filter_map(|c| c.2.as_ref())));
    let publisher = match publisher {
        Some(p) => {
            let (stats, deleted) = p.stop().await;
            delete_failures += u64::from(deleted.is_err());
            stats
        }
        None => None,
    };

    let stats: Vec<(Instant, Option<ViewerStats>)> =
        closed.into_iter().map(|(at, s, _, _)| (at, s)).collect();
    let mut report = SwarmReport::new(
        RunEnd {
            requested,
            failures: tally.failures,
            failure_messages: tally.messages,
            aborted: tally.aborted,
            ended,
            duration: ended - start,
            delete_failures,
            publisher,
            simulcast: config.publish.as_ref().is_some_and(|p| p.simulcast),
        },
        stats,
    );
    report.rejoins = rejoins;
    Ok(report)
}

async fn report_progress(
    counters: Arc<LiveCounters>,
    start: Instant,
    progress: watch::Sender<Progress>,
) {
    let mut last_bytes = counters.bytes_received.load(Ordering::Relaxed);
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tick.tick().await;
        let snap = counters.snapshot();
        let now = Instant::now();
        let secs = (now - last).as_secs_f64();
        let kbps = if secs > 0.0 {
            (snap.bytes_received - last_bytes) as f64 * 8.0 / secs / 1000.0
        } else {
            0.0
        };
        last_bytes = snap.bytes_received;
        last = now;
        let _ = progress.send(Progress::from_counters(&snap, now - start, kbps));
    }
}
