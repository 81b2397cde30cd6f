//! A load run over one or more rooms: one [`Swarm`] per room, each with its own
//! publisher (or none, to watch a room that is already live) and its share of the
//! viewers, the ramp, the engine tasks and the join concurrency.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::{Duration, Instant};
//! use skylark_loadgen::progress::ProgressLine;
//! use skylark_loadgen::run::{LoadRun, RoomLoad, RunConfig};
//! use skylark_loadgen::RunReport;
//!
//! let config = RunConfig {
//!     base_url: "http://127.0.0.1:8080".into(),
//!     rooms: vec![RoomLoad { room: "room_a".into(), stream_key: Some("sk_...".into()), viewers: 100 }],
//!     ..RunConfig::default()
//! };
//! let run = LoadRun::start(&config, tokio_util::sync::CancellationToken::new());
//! let mut line = ProgressLine::new(config.expected_kbps(), false);
//! if let Some(text) = line.update(&run.progress().get(), Instant::now()) {
//!     eprint!("{text}");
//! }
//! let started = Instant::now();
//! let reports = run.wait().await.into_iter().filter_map(|(room, r)| Some((room, r.ok()?)));
//! let report = RunReport::new(&config, reports.collect());
//! eprint!("{}", report.human(started.elapsed()));
//! println!("{}", report.to_json());
//! # }
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::peer::{EngineConfig, RejoinPolicy};
use crate::progress::Progress;
use crate::report::SwarmReport;
use crate::source::VideoConfig;
use crate::swarm::{PublishConfig, Swarm, SwarmConfig};
use crate::Error;

/// Payload rate of the synthetic Opus source (3 bytes every 20 ms), kbit/s.
const OPUS_KBPS: f64 = 3.0 * 8.0 * 50.0 / 1000.0;

/// One room of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLoad {
    /// The room id, as in `/whip/{room}` and `/whep/{room}`.
    pub room: String,
    /// The room's stream key: publish into it. `None` watches a live room.
    pub stream_key: Option<String>,
    /// Viewers to start in this room.
    pub viewers: usize,
}

/// What a [`LoadRun`] does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Base URL of the deployment, without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The rooms, each with its viewers and, to publish, its stream key.
    pub rooms: Vec<RoomLoad>,
    /// Bearer token for the viewers (private rooms).
    pub viewer_token: Option<String>,
    /// Shape of the publishers' video (of its top layer, with simulcast).
    pub video: VideoConfig,
    /// Publish the video as simulcast layers.
    pub simulcast: bool,
    /// Viewers started per second over all rooms; 0 starts them all at once.
    pub ramp_per_sec: f64,
    /// Length of the run from the first viewer's start.
    pub duration: Duration,
    /// Engine tasks over all rooms (each room gets its share, at least one).
    pub workers: usize,
    /// Signaling requests in flight at once over all rooms (shared the same way).
    pub max_concurrent_joins: usize,
    /// Peer behaviour: local IP, timeouts.
    pub engine: EngineConfig,
    /// Viewers rejoin when their picture freezes or their session fails; `None`: never.
    pub rejoin: Option<RejoinPolicy>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            base_url: String::new(),
            rooms: Vec::new(),
            viewer_token: None,
            video: VideoConfig::default(),
            simulcast: false,
            ramp_per_sec: 20.0,
            duration: Duration::from_secs(30),
            workers: 1,
            max_concurrent_joins: 64,
            engine: EngineConfig::default(),
            rejoin: None,
        }
    }
}

impl RunConfig {
    /// Rooms this run publishes into.
    pub fn publishers(&self) -> usize {
        self.rooms.iter().filter(|r| r.stream_key.is_some()).count()
    }

    /// Viewers over all rooms.
    pub fn viewers(&self) -> usize {
        self.rooms.iter().map(|r| r.viewers).sum()
    }

    /// The media bitrate each playing viewer should receive (video + Opus), kbit/s;
    /// `None` when the run has no publisher of its own. With simulcast the SFU starts
    /// viewers on the first layer keyframe it gets, the top layer's (the publisher
    /// sends it first), so that layer's rate is expected.
    ///
    /// ```
    /// use skylark_loadgen::run::{RoomLoad, RunConfig};
    /// let room = RoomLoad { room: "r".into(), stream_key: Some("k".into()), viewers: 1 };
    /// let config = RunConfig { rooms: vec![room], ..Default::default() };
    /// assert_eq!(config.expected_kbps(), Some(601.2));
    /// ```
    pub fn expected_kbps(&self) -> Option<f64> {
        (self.publishers() > 0).then(|| f64::from(self.video.bitrate_kbps) + OPUS_KBPS)
    }

    /// The swarm of one room: its share of the rate, the workers and the joins.
    fn swarm(&self, room: &RoomLoad) -> SwarmConfig {
        let rooms = self.rooms.len().max(1);
        SwarmConfig {
            publish: room.stream_key.as_ref().map(|key| PublishConfig {
                whip_url: format!("{}/whip/{}", self.base_url, room.room),
                stream_key: key.clone(),
                video: self.video,
                simulcast: self.simulcast,
            }),
            whep_url: format!("{}/whep/{}", self.base_url, room.room),
            whep_token: self.viewer_token.clone(),
            viewers: room.viewers,
            ramp_per_sec: self.ramp_per_sec / rooms as f64,
            duration: self.duration,
            workers: (self.workers / rooms).max(1),
            max_concurrent_joins: (self.max_concurrent_joins / rooms).max(1),
            engine: self.engine,
            rejoin: self.rejoin,
        }
    }
}

/// A running load test over one or more rooms.
pub struct LoadRun {
    rooms: Vec<(String, Swarm)>,
    progress: Vec<watch::Receiver<Progress>>,
}

impl LoadRun {
    /// Starts every room's swarm on the current tokio runtime; `cancel` ends them all
    /// early (their reports still cover what happened, and every session is DELETEd).
    pub fn start(config: &RunConfig, cancel: CancellationToken) -> LoadRun {
        let rooms: Vec<(String, Swarm)> = config
            .rooms
            .iter()
            .map(|r| {
                let swarm = Swarm::start(config.swarm(r), cancel.clone());
                (r.room.clone(), swarm)
            })
            .collect();
        let progress = rooms.iter().map(|(_, s)| s.progress()).collect();
        LoadRun { rooms, progress }
    }

    /// The live progress of all rooms together, readable from another task while
    /// the run is awaited.
    pub fn progress(&self) -> ProgressWatch {
        ProgressWatch(self.progress.clone())
    }

    /// Waits for every room's run to end: each room's report, or why it could not run
    /// (its publisher could not go live), in the order of [`RunConfig::rooms`].
    pub async fn wait(self) -> Vec<(String, Result<SwarmReport, Error>)> {
        let (rooms, swarms): (Vec<String>, Vec<Swarm>) = self.rooms.into_iter().unzip();
        let results = futures_util::future::join_all(swarms.into_iter().map(Swarm::wait)).await;
        rooms.into_iter().zip(results).collect()
    }
}

/// Reads a [`LoadRun`]'s progress: see [`LoadRun::progress`].
#[derive(Debug, Clone)]
pub struct ProgressWatch(Vec<watch::Receiver<Progress>>);

impl ProgressWatch {
    /// The live progress of all rooms together.
    pub fn get(&self) -> Progress {
        Progress::sum(self.0.iter().map(|rx| *rx.borrow()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, key: Option<&str>, viewers: usize) -> RoomLoad {
        RoomLoad {
            room: name.into(),
            stream_key: key.map(str::to_string),
            viewers,
        }
    }

    #[test]
    fn rooms_share_the_rate_workers_and_joins() {
        let config = RunConfig {
            base_url: "http://sk:8080".into(),
            rooms: vec![room("a", Some("ka"), 4), room("b", Some("kb"), 3)],
            viewer_token: Some("vt".into()),
            ramp_per_sec: 10.0,
            workers: 3,
            max_concurrent_joins: 64,
            ..Default::default()
        };
        assert_eq!((config.publishers(), config.viewers()), (2, 7));
        let b = config.swarm(&config.rooms[1]);
        let publish = b.publish.expect("room b publishes");
        assert_eq!(publish.whip_url, "http://sk:8080/whip/b");
        assert_eq!(publish.stream_key, "kb");
        assert_eq!(b.whep_url, "http://sk:8080/whep/b");
        assert_eq!(b.whep_token.as_deref(), Some("vt"));
        assert_eq!(b.viewers, 3);
        assert_eq!(b.ramp_per_sec, 5.0);
        assert_eq!((b.workers, b.max_concurrent_joins), (1, 32));
    }

    #[test]
    fn watching_expects_no_bitrate() {
        let config = RunConfig {
            rooms: vec![room("a", None, 2)],
            ..Default::default()
        };
        assert_eq!(config.publishers(), 0);
        assert_eq!(config.expected_kbps(), None);
        assert!(config.swarm(&config.rooms[0]).publish.is_none());
    }
}
