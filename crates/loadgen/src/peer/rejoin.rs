//! Viewers that rejoin, like the web player's watchdog: when the picture freezes (no
//! video frame for a while) or the connection fails, the viewer drops its session and
//! joins again through signaling, which places it on a node that is alive. What it
//! measures is what a user sees: how long the picture was frozen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Engine, Viewer, ViewerStats};
use crate::stats::{percentiles, Percentiles};
use crate::{Error, FailureCause};

/// When a [`RejoiningViewer`] gives up on its session.
///
/// ```
/// use skylark_loadgen::peer::RejoinPolicy;
/// let p = RejoinPolicy { stall_after: std::time::Duration::from_millis(800), ..Default::default() };
/// assert!(p.max_rejoins > 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejoinPolicy {
    /// A playing session without a new video frame for this long has stalled.
    pub stall_after: Duration,
    /// A session that is not playing this long after its join started has failed.
    pub join_timeout: Duration,
    /// Rejoins at most; then the viewer stays down.
    pub max_rejoins: u32,
    /// Pause between failed join attempts.
    pub retry_every: Duration,
    /// How often the session is checked.
    pub check_every: Duration,
}

impl Default for RejoinPolicy {
    fn default() -> Self {
        RejoinPolicy {
            stall_after: Duration::from_millis(1000),
            join_timeout: Duration::from_secs(5),
            max_rejoins: 10,
            retry_every: Duration::from_millis(200),
            check_every: Duration::from_millis(50),
        }
    }
}

/// Why a viewer rejoined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejoinReason {
    /// Playing, then no video frame for [`RejoinPolicy::stall_after`].
    Stalled,
    /// The session failed (ICE, DTLS, the connection lost).
    Failed(FailureCause),
    /// Not playing within [`RejoinPolicy::join_timeout`].
    JoinTimeout,
}

/// One rejoin. Times are milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Rejoin {
    /// What made the viewer leave its session.
    pub reason: RejoinReason,
    /// The node that served the dropped session.
    pub from_node: Option<String>,
    /// The node serving the new session, once one was accepted.
    pub to_node: Option<String>,
    /// WHEP POSTs it took (failed ones included).
    pub attempts: u32,
    /// Last video frame of the dropped session → the rejoin decision.
    pub detect_ms: f64,
    /// Last video frame of the dropped session → first keyframe of the new one: how long
    /// the picture was frozen. `None` until playing again.
    pub play_again_ms: Option<f64>,
}

/// A snapshot of a [`RejoiningViewer`].
#[derive(Debug, Clone, Default)]
pub struct RejoinStats {
    /// The current session's stats; `None` between sessions.
    pub current: Option<ViewerStats>,
    /// The last stats of every dropped session, oldest first.
    pub earlier: Vec<ViewerStats>,
    /// Every rejoin so far, oldest first.
    pub rejoins: Vec<Rejoin>,
    /// Out of rejoins (or the engine stopped): the viewer is down for good.
    pub gave_up: bool,
}

impl RejoinStats {
    /// Frames received over every session.
    pub fn frames(&self) -> u64 {
        self.sessions().map(|s| s.frames).sum()
    }

    /// Frames whose payload did not match its hash, over every session.
    pub fn frames_bad_hash(&self) -> u64 {
        self.sessions().map(|s| s.frames_bad_hash).sum()
    }

    fn sessions(&self) -> impl Iterator<Item = &ViewerStats> {
        self.earlier.iter().chain(self.current.as_ref())
    }
}

/// The rejoins of a run's viewers, for its report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RejoinReport {
    /// Viewers that rejoined at least once.
    pub viewers_rejoined: u64,
    /// Rejoins over all viewers.
    pub rejoins: u64,
    /// Rejoins by reason (`stalled`, `join_timeout`, or the failure cause).
    pub by_reason: std::collections::BTreeMap<String, u64>,
    /// Last frame → the rejoin decision, ms.
    pub detect_ms: Option<Percentiles>,
    /// Last frame before an outage → first keyframe after it: how long the picture
    /// stayed frozen, ms (outages that ended).
    pub play_again_ms: Option<Percentiles>,
    /// Outages not over when the run ended.
    pub still_down: u64,
    /// Viewers that ran out of rejoins.
    pub gave_up: u64,
}

impl RejoinReport {
    /// Sums the rejoins of `viewers`.
    pub fn new<'a>(viewers: impl IntoIterator<Item = &'a RejoinStats>) -> RejoinReport {
        let mut r = RejoinReport::default();
        let (mut detect, mut frozen) = (Vec::new(), Vec::new());
        for v in viewers {
            r.viewers_rejoined += u64::from(!v.rejoins.is_empty());
            r.gave_up += u64::from(v.gave_up);
            for j in &v.rejoins {
                r.rejoins += 1;
                let reason = match j.reason {
                    RejoinReason::Stalled => "stalled".to_string(),
                    RejoinReason::JoinTimeout => "join_timeout".to_string(),
                    RejoinReason::Failed(cause) => cause.to_string(),
                };
                *r.by_reason.entry(reason).or_default() += 1;
                detect.push(j.detect_ms);
            }
            // One outage may take several rejoins: the last one's figure covers it.
            match v.rejoins.last().map(|j| j.play_again_ms) {
                Some(Some(ms)) => frozen.push(ms),
                Some(None) => r.still_down += 1,
                None => {}
            }
        }
        r.detect_ms = percentiles(&detect);
        r.play_again_ms = percentiles(&frozen);
        r
    }
}

struct State {
    viewer: Option<Viewer>,
    node: Option<String>,
    /// When the current session's join started.
    joined_at: Instant,
    /// The last frame before the outage being repaired, if one is.
    frozen_since: Option<Instant>,
    stats: RejoinStats,
}

/// A WHEP viewer that rejoins through signaling when its media stalls or its session
/// fails, following [`RejoinPolicy`]. Dropping it closes the current session.
///
/// ```no_run
/// # async fn demo(engine: skylark_loadgen::Engine) -> Result<(), skylark_loadgen::Error> {
/// use skylark_loadgen::peer::RejoinPolicy;
/// let v = engine.view_rejoining("http://127.0.0.1:8080/whep/room", None, RejoinPolicy::default()).await?;
/// let s = v.stats().await;
/// for r in &s.rejoins {
///     println!("{:?} → {:?}: frozen {:?} ms", r.from_node, r.to_node, r.play_again_ms);
/// }
/// # Ok(()) }
/// ```
pub struct RejoiningViewer {
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RejoiningViewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejoiningViewer").finish_non_exhaustive()
    }
}

impl Engine {
    /// Watches over WHEP like [`Engine::view`], rejoining by `policy`. Fails only if the
    /// first join fails.
    pub async fn view_rejoining(
        &self,
        whep_url: &str,
        token: Option<&str>,
        policy: RejoinPolicy,
    ) -> Result<RejoiningViewer, Error> {
        let joined_at = Instant::now();
        let viewer = self.view(whep_url, token).await?;
        let state = Arc::new(Mutex::new(State {
            node: viewer.serving_node().map(str::to_string),
            viewer: Some(viewer),
            joined_at,
            frozen_since: None,
            stats: RejoinStats::default(),
        }));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            self.clone(),
            whep_url.to_string(),
            token.map(str::to_string),
            policy,
            state.clone(),
            cancel.clone(),
        ));
        Ok(RejoiningViewer {
            state,
            cancel,
            task,
        })
    }
}

impl RejoiningViewer {
    /// The node serving the current session (or the last one, between sessions).
    pub async fn serving_node(&self) -> Option<String> {
        self.state.lock().await.node.clone()
    }

    /// A snapshot: the current session's stats, the dropped ones' and the rejoins.
    pub async fn stats(&self) -> RejoinStats {
        let st = self.state.lock().await;
        let mut out = st.stats.clone();
        if let Some(v) = &st.viewer {
            out.current = v.stats().await.ok();
        }
        out
    }

    /// Stops rejoining, closes the current session and sends its `DELETE`; returns the
    /// final snapshot and the `DELETE` result.
    pub async fn close(self) -> (RejoinStats, Result<(), Error>) {
        self.cancel.cancel();
        let mut st = self.state.lock().await;
        let mut out = st.stats.clone();
        let mut deleted = Ok(());
        if let Some(v) = st.viewer.take() {
            let (last, d) = v.close().await;
            out.current = last;
            deleted = d;
        }
        (out, deleted)
    }
}

impl Drop for RejoiningViewer {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

/// What the check of one session decided.
fn verdict(s: &ViewerStats, joined: Duration, policy: &RejoinPolicy) -> Option<RejoinReason> {
    if let Some(cause) = s.failure {
        return Some(RejoinReason::Failed(cause));
    }
    match (s.join_ms, s.since_last_frame_ms) {
        (Some(_), Some(idle)) if idle >= policy.stall_after.as_secs_f64() * 1000.0 => {
            Some(RejoinReason::Stalled)
        }
        (None, _) if joined >= policy.join_timeout => Some(RejoinReason::JoinTimeout),
        _ => None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn supervise(
    engine: Engine,
    url: String,
    token: Option<String>,
    policy: RejoinPolicy,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(policy.check_every) => {}
        }
        let now = Instant::now();
        let mut st = state.lock().await;
        let Some(viewer) = &st.viewer else { return };
        let Ok(s) = viewer.stats().await else {
            st.stats.gave_up = true;
            return;
        };
        if let (Some(since), Some(join)) = (st.frozen_since, s.join_ms) {
            // Playing again: the outage ends at the new session's first keyframe.
            let first_key = st.joined_at + Duration::from_secs_f64(join / 1000.0);
            if let Some(r) = st.stats.rejoins.last_mut() {
                r.play_again_ms = Some(ms(first_key.saturating_duration_since(since)));
            }
            st.frozen_since = None;
        }
        let Some(reason) = verdict(&s, now.saturating_duration_since(st.joined_at), &policy) else {
            continue;
        };
        if st.stats.rejoins.len() >= policy.max_rejoins as usize {
            st.stats.gave_up = true;
            return;
        }
        let last_frame = s
            .since_last_frame_ms
            .map_or(now, |idle| now - Duration::from_secs_f64(idle / 1000.0));
        let frozen_since = *st.frozen_since.get_or_insert(last_frame);
        let from_node = st.node.clone();
        st.stats.rejoins.push(Rejoin {
            reason,
            from_node,
            to_node: None,
            attempts: 0,
            detect_ms: ms(now.saturating_duration_since(frozen_since)),
            play_again_ms: None,
        });
        st.stats.earlier.push(s);
        if let Some(old) = st.viewer.take() {
            // The DELETE may wait on a node that is gone: never hold the rejoin for it.
            tokio::spawn(old.close());
        }
        drop(st);

        let mut attempts = 0;
        let (viewer, joined_at) = loop {
            attempts += 1;
            let started = Instant::now();
            match engine.view(&url, token.as_deref()).await {
                Ok(v) => break (v, started),
                Err(Error::EngineStopped) => {
                    state.lock().await.stats.gave_up = true;
                    return;
                }
                Err(e) => tracing::debug!("rejoin attempt {attempts}: {e}"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(policy.retry_every) => {}
            }
        };
        let mut st = state.lock().await;
        let node = viewer.serving_node().map(str::to_string);
        st.node = node.clone();
        if let Some(r) = st.stats.rejoins.last_mut() {
            r.to_node = node;
            r.attempts = attempts;
        }
        st.viewer = Some(viewer);
        st.joined_at = joined_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playing(idle_ms: f64) -> ViewerStats {
        ViewerStats {
            join_ms: Some(300.0),
            since_last_frame_ms: Some(idle_ms),
            ..Default::default()
        }
    }

    #[test]
    fn the_report_counts_rejoins_and_frozen_time() {
        let rejoin = |reason, play_again_ms| Rejoin {
            reason,
            from_node: Some("sfu-2".into()),
            to_node: Some("sfu-0".into()),
            attempts: 1,
            detect_ms: 1000.0,
            play_again_ms,
        };
        let back = RejoinStats {
            rejoins: vec![rejoin(RejoinReason::Stalled, Some(1500.0))],
            ..Default::default()
        };
        let down = RejoinStats {
            rejoins: vec![
                rejoin(RejoinReason::Stalled, None),
                rejoin(RejoinReason::Failed(FailureCause::IceTimeout), None),
            ],
            gave_up: true,
            ..Default::default()
        };
        let r = RejoinReport::new([&back, &down, &RejoinStats::default()]);
        assert_eq!((r.viewers_rejoined, r.rejoins), (2, 3));
        assert_eq!(r.by_reason["stalled"], 2);
        assert_eq!(r.by_reason["ice_timeout"], 1);
        assert_eq!(r.play_again_ms.map(|p| p.max), Some(1500.0));
        assert_eq!((r.still_down, r.gave_up), (1, 1));
    }

    #[test]
    fn a_frozen_picture_is_a_stall_a_slow_one_is_not() {
        let p = RejoinPolicy::default();
        let joined = Duration::from_secs(10);
        assert_eq!(verdict(&playing(200.0), joined, &p), None);
        assert_eq!(
            verdict(&playing(1000.0), joined, &p),
            Some(RejoinReason::Stalled)
        );
    }

    #[test]
    fn failures_and_joins_that_never_play_rejoin() {
        let p = RejoinPolicy::default();
        let failed = ViewerStats {
            failure: Some(FailureCause::Disconnected),
            ..playing(0.0)
        };
        assert_eq!(
            verdict(&failed, Duration::ZERO, &p),
            Some(RejoinReason::Failed(FailureCause::Disconnected))
        );
        let joining = ViewerStats::default();
        assert_eq!(verdict(&joining, Duration::from_secs(1), &p), None);
        assert_eq!(
            verdict(&joining, p.join_timeout, &p),
            Some(RejoinReason::JoinTimeout)
        );
    }
}
