//! One room's report: the viewers' final stats summed, their join and connect times
//! and bitrates as percentiles, failures by cause and the layers they received.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::peer::{PublisherStats, ViewerStats};
use crate::source::Layer;
use crate::stats::{percentiles, Histogram, Percentiles};
use crate::FailureCause;

/// A connected viewer with no keyframe this long after its join is counted as failed
/// (`no_keyframe`); a younger one as unfinished.
const NO_KEYFRAME_GRACE: Duration = Duration::from_secs(5);

/// Viewer outcomes of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ViewerCounts {
    /// Viewers started.
    pub requested: u64,
    /// Viewers whose ICE+DTLS connected at some point.
    pub connected: u64,
    /// Viewers that received a keyframe.
    pub playing: u64,
    /// Viewers that failed, by cause in [`SwarmReport::failures`].
    pub failed: u64,
    /// Viewers still joining when the run ended (neither playing nor failed).
    pub unfinished: u64,
}

/// Received bitrate across viewers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KbpsSummary {
    /// The slowest viewer.
    pub min: f64,
    /// The median viewer.
    pub p50: f64,
}

/// Viewers that received one layer of the video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedLayer {
    /// The layer's RID, when the run published simulcast.
    pub rid: Option<String>,
    /// The layer index in the frames' markers (0 = full size); `None` for frames
    /// without markers.
    pub layer: Option<u8>,
    /// Picture width in the SPS the viewers received.
    pub width: Option<u32>,
    /// Picture height in the SPS the viewers received.
    pub height: Option<u32>,
    /// Playing viewers whose last frames were of this layer and size.
    pub viewers: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwarmReport {
    /// Seconds from the first viewer's start to the end of the run.
    pub duration_s: f64,
    /// Viewer outcomes.
    pub viewers: ViewerCounts,
    /// Failed viewers by cause (`http_503`, `ice_timeout`, ...).
    pub failures: BTreeMap<String, u64>,
    /// What the server answered the first signaling failure of a cause (e.g. a 503's
    /// message), by cause.
    pub failure_messages: BTreeMap<String, String>,
    /// WHEP POST start → ICE+DTLS connected, ms.
    pub connect_ms: Option<Percentiles>,
    /// WHEP POST start → first keyframe, ms.
    pub join_ms: Option<Percentiles>,
    /// Frame latency, publisher send → viewer receive, ms (all frames of all viewers).
    pub latency_ms: Option<Percentiles>,
    /// Received media bitrate per playing viewer.
    pub kbps: Option<KbpsSummary>,
    /// Frames missing from the sequence over frames expected, %.
    pub loss_pct: f64,
    /// Video frames received.
    pub frames_received: u64,
    /// Frames that failed the hash check.
    pub frames_bad_hash: u64,
    /// Frames without a marker.
    pub frames_unmarked: u64,
    /// Frames missing (sequence gaps).
    pub frames_missing: u64,
    /// Audio packets received.
    pub audio_packets: u64,
    /// Media payload bytes received.
    pub bytes_received: u64,
    /// Which layer (and picture size) the playing viewers received, by layer.
    pub layers: Vec<ReceivedLayer>,
    /// Times a viewer's frames changed layer, over all viewers.
    pub layer_switches: u64,
    /// Viewer or publisher DELETEs that failed at the end.
    pub delete_failures: u64,
    /// The publisher's side, if the run published.
    pub publisher: Option<PublisherStats>,
    /// Playing viewers by the SFU node that served them (origin or edge): the cost of
    /// each relay hop in one run. Empty when the server names no node.
    pub by_node: BTreeMap<String, NodeFigures>,
    /// Rejoins, when the viewers rejoin (then the figures above are of each viewer's
    /// last session).
    pub rejoins: Option<crate::peer::RejoinReport>,
}

/// One serving node's playing viewers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeFigures {
    /// Playing viewers this node served.
    pub viewers: u64,
    /// WHEP POST start → first keyframe, ms.
    pub join_ms: Option<Percentiles>,
    /// Frame latency, ms.
    pub latency_ms: Option<Percentiles>,
}

/// How a room's run ended, besides the viewers' own stats.
pub(crate) struct RunEnd {
    /// Viewers started.
    pub(crate) requested: u64,
    /// Signaling failures by cause.
    pub(crate) failures: BTreeMap<String, u64>,
    /// What the server said the first time, by cause.
    pub(crate) failure_messages: BTreeMap<String, String>,
    /// Joins cut off by the end of the run.
    pub(crate) aborted: u64,
    pub(crate) ended: Instant,
    pub(crate) duration: Duration,
    pub(crate) delete_failures: u64,
    pub(crate) publisher: Option<PublisherStats>,
    /// Whether the run's own publisher sent simulcast (names the layers by RID).
    pub(crate) simulcast: bool,
}

/// What tells received layers apart: marker layer, SPS width and height.
type LayerKey = (Option<u8>, Option<u32>, Option<u32>);

impl SwarmReport {
    /// The report of one room's run from how it ended and each joined viewer's join
    /// time and final stats (`None`: the engine stopped under it).
    pub(crate) fn new(end: RunEnd, viewers: Vec<(Instant, Option<ViewerStats>)>) -> SwarmReport {
        let RunEnd {
            requested,
            mut failures,
            failure_messages,
            aborted,
            ended,
            duration,
            delete_failures,
            publisher,
            simulcast,
        } = end;
        let mut counts = ViewerCounts {
            requested,
            failed: failures.values().sum(),
            unfinished: aborted,
            ..Default::default()
        };
        let mut latency = Histogram::default();
        let (mut join, mut connect, mut kbps) = (Vec::new(), Vec::new(), Vec::new());
        let mut r = SwarmReport {
            failure_messages,
            duration_s: duration.as_secs_f64(),
            delete_failures,
            publisher,
            ..SwarmReport::default()
        };
        let mut expected = 0u64;
        // Per serving node: join times and latency histogram of its playing viewers.
        let mut nodes: BTreeMap<String, (Vec<f64>, Histogram)> = BTreeMap::new();
        // Playing viewers by (layer, width, height).
        let mut layers: BTreeMap<LayerKey, u64> = BTreeMap::new();
        for (joined_at, s) in &viewers {
            let Some(s) = s else {
                // The engine stopped under it: no stats to count.
                counts.unfinished += 1;
                continue;
            };
            r.frames_received += s.frames;
            r.frames_bad_hash += s.frames_bad_hash;
            r.frames_unmarked += s.frames_unmarked;
            r.frames_missing += s.frames_missing;
            r.audio_packets += s.audio_packets;
            r.bytes_received += s.video_bytes + s.audio_bytes;
            r.layer_switches += s.layer_switches;
            expected += s.frames_expected;
            latency.merge(&s.latency_us);
            if let Some(c) = s.connect_ms {
                counts.connected += 1;
                connect.push(c);
            }
            let failure = match (s.failure, s.join_ms) {
                (Some(cause), _) => Some(cause),
                (None, Some(j)) => {
                    counts.playing += 1;
                    if let Some(node) = &s.serving_node {
                        let n = nodes.entry(node.clone()).or_default();
                        n.0.push(j);
                        n.1.merge(&s.latency_us);
                    }
                    *layers.entry((s.layer, s.width, s.height)).or_default() += 1;
                    join.push(j);
                    kbps.push(s.kbps);
                    None
                }
                (None, None)
                    if s.connected && ended.duration_since(*joined_at) >= NO_KEYFRAME_GRACE =>
                {
                    Some(FailureCause::NoKeyframe)
                }
                (None, None) => {
                    counts.unfinished += 1;
                    None
                }
            };
            if let Some(cause) = failure {
                counts.failed += 1;
                *failures.entry(cause.to_string()).or_default() += 1;
            }
        }
        r.viewers = counts;
        r.layers = layers
            .into_iter()
            .map(|((layer, width, height), viewers)| ReceivedLayer {
                rid: layer
                    .filter(|_| simulcast)
                    .and_then(Layer::by_index)
                    .map(|l| l.rid.to_string()),
                layer,
                width,
                height,
                viewers,
            })
            .collect();
        r.by_node = nodes
            .into_iter()
            .map(|(node, (joins, latency))| {
                let figures = NodeFigures {
                    viewers: joins.len() as u64,
                    join_ms: percentiles(&joins),
                    latency_ms: latency.percentiles_ms(),
                };
                (node, figures)
            })
            .collect();
        r.failures = failures;
        r.connect_ms = percentiles(&connect);
        r.join_ms = percentiles(&join);
        r.latency_ms = latency.percentiles_ms();
        r.kbps = percentiles(&kbps).map(|p| KbpsSummary {
            min: kbps.iter().copied().fold(f64::INFINITY, f64::min),
            p50: p.p50,
        });
        if expected > 0 {
            r.loss_pct = r.frames_missing as f64 * 100.0 / expected as f64;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(at: Instant, simulcast: bool) -> RunEnd {
        RunEnd {
            requested: 5,
            failures: BTreeMap::from([("http_503".to_string(), 1)]),
            failure_messages: BTreeMap::new(),
            aborted: 0,
            ended: at,
            duration: Duration::from_secs(10),
            delete_failures: 0,
            publisher: None,
            simulcast,
        }
    }

    fn playing(layer: u8, width: u32, kbps: f64) -> ViewerStats {
        let mut latency_us = Histogram::default();
        latency_us.record(20_000);
        ViewerStats {
            connected: true,
            connect_ms: Some(50.0),
            join_ms: Some(100.0),
            frames: 90,
            frames_missing: 10,
            frames_expected: 100,
            layer: Some(layer),
            width: Some(width),
            height: Some(width * 3 / 4),
            kbps,
            latency_us,
            ..ViewerStats::default()
        }
    }

    #[test]
    fn viewers_are_counted_by_outcome() {
        let now = Instant::now();
        let long_ago = now - NO_KEYFRAME_GRACE;
        let no_keyframe = ViewerStats {
            connected: true,
            connect_ms: Some(70.0),
            ..ViewerStats::default()
        };
        let viewers = vec![
            (long_ago, Some(playing(0, 320, 600.0))),
            (long_ago, Some(playing(1, 160, 200.0))),
            // Connected long enough ago to have had a keyframe: failed.
            (long_ago, Some(no_keyframe.clone())),
            // Connected just now: still joining.
            (now, Some(no_keyframe)),
            // The engine stopped under it.
            (long_ago, None),
        ];
        let r = SwarmReport::new(end(now, true), viewers);
        assert_eq!(
            r.viewers,
            ViewerCounts {
                requested: 5,
                connected: 4,
                playing: 2,
                failed: 2,
                unfinished: 2,
            }
        );
        assert_eq!(
            r.failures,
            BTreeMap::from([("http_503".to_string(), 1), ("no_keyframe".to_string(), 1)])
        );
        assert_eq!((r.frames_received, r.frames_missing), (180, 20));
        assert!((r.loss_pct - 10.0).abs() < 1e-9, "{}", r.loss_pct);
        assert_eq!(
            r.kbps,
            Some(KbpsSummary {
                min: 200.0,
                p50: 200.0
            })
        );
        assert_eq!(r.connect_ms.map(|p| p.count), Some(4));
        assert_eq!(r.latency_ms.map(|p| p.count), Some(2));
        let layers: Vec<(Option<&str>, Option<u32>, u64)> = r
            .layers
            .iter()
            .map(|l| (l.rid.as_deref(), l.width, l.viewers))
            .collect();
        assert_eq!(
            layers,
            [(Some("h"), Some(320), 1), (Some("m"), Some(160), 1)]
        );
    }

    #[test]
    fn layers_have_no_rid_without_simulcast() {
        let now = Instant::now();
        let r = SwarmReport::new(end(now, false), vec![(now, Some(playing(0, 320, 600.0)))]);
        assert_eq!(r.layers.len(), 1);
        assert_eq!(r.layers[0].rid, None);
        assert_eq!(r.layers[0].layer, Some(0));
    }
}
