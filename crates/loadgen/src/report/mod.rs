//! The report of a load run: each room's [`SwarmReport`] (built from its viewers'
//! stats), and the [`RunReport`] that merges them over the rooms, as the human
//! summary and as the JSON object `skylark loadtest --json` prints.
//!
//! The JSON shape is a contract: `tests/loadtest.rs` and `benches/fanout.py` read it.

mod room;

pub(crate) use room::RunEnd;
pub use room::{KbpsSummary, NodeFigures, ReceivedLayer, SwarmReport, ViewerCounts};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::peer::{LayerStats, RejoinReport};
use crate::run::RunConfig;
use crate::source::SIMULCAST_LAYERS;
use crate::stats::Percentiles;

/// Percentiles of several rooms together. With one room they are exact; with several,
/// each figure is the largest over the rooms (an upper bound of the combined quantile:
/// if every room has at most 5 % of samples above its p95, so does their union).
fn merge_upper(ps: &[Option<Percentiles>]) -> Option<Percentiles> {
    ps.iter().flatten().copied().reduce(|a, b| Percentiles {
        count: a.count + b.count,
        p50: a.p50.max(b.p50),
        p95: a.p95.max(b.p95),
        p99: a.p99.max(b.p99),
        max: a.max.max(b.max),
    })
}

/// The report of a run over all its rooms: what was asked, the figures merged over
/// the rooms, and each room's own [`SwarmReport`].
///
/// With one room the figures are that room's; with several, counts add up, loss is
/// weighed by frames, and percentiles are upper bounds (see [`RunReport::new`]).
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Playing viewers by serving node, over all rooms (upper-bound percentiles).
    by_node: BTreeMap<String, NodeFigures>,
    url: String,
    rooms: Vec<String>,
    publishers: usize,
    video_kbps: u32,
    simulcast: bool,
    ramp_per_sec: f64,
    requested_target: usize,
    requested: u64,
    connected: u64,
    playing: u64,
    failed: u64,
    unfinished: u64,
    failures: BTreeMap<String, u64>,
    failure_messages: BTreeMap<String, String>,
    connect_ms: Option<Percentiles>,
    join_ms: Option<Percentiles>,
    latency_ms: Option<Percentiles>,
    kbps_min: Option<f64>,
    kbps_p50: Option<f64>,
    loss_pct: f64,
    frames_received: u64,
    frames_missing: u64,
    frames_bad_hash: u64,
    frames_unmarked: u64,
    audio_packets: u64,
    bytes_received: u64,
    /// Playing viewers by the layer (and picture size) they received.
    layers: Vec<ReceivedLayer>,
    layer_switches: u64,
    delete_failures: u64,
    duration_s: f64,
    publisher_frames_sent: u64,
    publisher_keyframes_sent: u64,
    publisher_keyframe_requests: u64,
    publisher_write_errors: u64,
    /// Per layer, summed over the rooms' publishers.
    publisher_layers: Vec<LayerStats>,
    /// Rejoins over all rooms (counts summed, upper-bound percentiles), when viewers
    /// rejoin.
    rejoins: Option<RejoinReport>,
    /// Each room that ran, with its report.
    per_room: Vec<(String, SwarmReport)>,
}

/// The rooms' rejoin reports together: counts add up, percentiles are upper bounds.
fn merge_rejoins(rs: &[&SwarmReport]) -> Option<RejoinReport> {
    let all: Vec<&RejoinReport> = rs.iter().filter_map(|r| r.rejoins.as_ref()).collect();
    if all.is_empty() {
        return None;
    }
    let mut out = RejoinReport::default();
    for r in &all {
        out.viewers_rejoined += r.viewers_rejoined;
        out.rejoins += r.rejoins;
        out.still_down += r.still_down;
        out.gave_up += r.gave_up;
        for (k, v) in &r.by_reason {
            *out.by_reason.entry(k.clone()).or_default() += v;
        }
    }
    out.detect_ms = merge_upper(&all.iter().map(|r| r.detect_ms).collect::<Vec<_>>());
    out.play_again_ms = merge_upper(&all.iter().map(|r| r.play_again_ms).collect::<Vec<_>>());
    Some(out)
}

/// Adds up layer counts that agree on everything but the count.
fn merge_layers(reports: &[&SwarmReport]) -> Vec<ReceivedLayer> {
    let mut merged: Vec<ReceivedLayer> = Vec::new();
    for l in reports.iter().flat_map(|r| &r.layers) {
        let same = |m: &&mut ReceivedLayer| {
            (&m.rid, m.layer, m.width, m.height) == (&l.rid, l.layer, l.width, l.height)
        };
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => m.viewers += l.viewers,
            None => merged.push(l.clone()),
        }
    }
    merged.sort_by_key(|l| (l.layer, l.width, l.height));
    merged
}

/// Adds up the publishers' per-layer counts, layer by layer (same RID and size).
fn merge_publisher_layers<'a>(stats: impl Iterator<Item = &'a LayerStats>) -> Vec<LayerStats> {
    let mut merged: Vec<LayerStats> = Vec::new();
    for l in stats {
        let same = |m: &&mut LayerStats| (&m.rid, m.width, m.height) == (&l.rid, l.width, l.height);
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => {
                m.frames_sent += l.frames_sent;
                m.keyframes_sent += l.keyframes_sent;
                m.bytes_sent += l.bytes_sent;
                m.keyframe_requests += l.keyframe_requests;
            }
            None => merged.push(l.clone()),
        }
    }
    merged
}

/// `h 320x240`, `320x240`, `layer 1`: a received layer, as the report names it.
fn layer_name(l: &ReceivedLayer) -> String {
    let size = match (l.width, l.height) {
        (Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    };
    match (&l.rid, size) {
        (Some(rid), Some(size)) => format!("{rid} {size}"),
        (None, Some(size)) => size,
        (Some(rid), None) => rid.clone(),
        (None, None) => l
            .layer
            .map_or_else(|| "unknown".to_string(), |i| format!("layer {i}")),
    }
}

impl RunReport {
    /// Merges the reports of the rooms that ran (`per_room`, by room id) of the run
    /// `config` describes. Percentiles over several rooms are the largest of the
    /// rooms' (an upper bound, see `merge_upper`), the median bitrate the smallest.
    pub fn new(config: &RunConfig, per_room: Vec<(String, SwarmReport)>) -> RunReport {
        let rs: Vec<&SwarmReport> = per_room.iter().map(|(_, r)| r).collect();
        let sum = |f: fn(&SwarmReport) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
        let mut failures = BTreeMap::new();
        let mut failure_messages = BTreeMap::new();
        for r in &rs {
            for (k, v) in &r.failures {
                *failures.entry(k.clone()).or_insert(0) += v;
            }
            for (k, m) in &r.failure_messages {
                failure_messages
                    .entry(k.clone())
                    .or_insert_with(|| m.clone());
            }
        }
        let frames_missing = sum(|r| r.frames_missing);
        // Per room, frames expected = missing / loss; summed so loss weighs by frames.
        let expected: f64 = rs
            .iter()
            .map(|r| {
                if r.loss_pct > 0.0 {
                    r.frames_missing as f64 * 100.0 / r.loss_pct
                } else {
                    r.frames_received as f64
                }
            })
            .sum();
        let pubs = rs.iter().filter_map(|r| r.publisher.as_ref());
        let mut by_node: BTreeMap<String, NodeFigures> = BTreeMap::new();
        for (node, f) in rs.iter().flat_map(|r| &r.by_node) {
            let n = by_node.entry(node.clone()).or_default();
            n.viewers += f.viewers;
            n.join_ms = merge_upper(&[n.join_ms, f.join_ms]);
            n.latency_ms = merge_upper(&[n.latency_ms, f.latency_ms]);
        }
        let mut report = RunReport {
            by_node,
            url: config.base_url.clone(),
            rooms: config.rooms.iter().map(|r| r.room.clone()).collect(),
            publishers: config.publishers(),
            video_kbps: config.video.bitrate_kbps,
            simulcast: config.simulcast,
            ramp_per_sec: config.ramp_per_sec,
            requested_target: config.viewers(),
            requested: sum(|r| r.viewers.requested),
            connected: sum(|r| r.viewers.connected),
            playing: sum(|r| r.viewers.playing),
            failed: sum(|r| r.viewers.failed),
            unfinished: sum(|r| r.viewers.unfinished),
            failures,
            failure_messages,
            connect_ms: merge_upper(&rs.iter().map(|r| r.connect_ms).collect::<Vec<_>>()),
            join_ms: merge_upper(&rs.iter().map(|r| r.join_ms).collect::<Vec<_>>()),
            latency_ms: merge_upper(&rs.iter().map(|r| r.latency_ms).collect::<Vec<_>>()),
            kbps_min: rs
                .iter()
                .filter_map(|r| r.kbps.map(|k| k.min))
                .reduce(f64::min),
            // Lower bound of the combined median, like `merge_upper` the other way.
            kbps_p50: rs
                .iter()
                .filter_map(|r| r.kbps.map(|k| k.p50))
                .reduce(f64::min),
            loss_pct: if expected > 0.0 {
                frames_missing as f64 * 100.0 / expected
            } else {
                0.0
            },
            frames_received: sum(|r| r.frames_received),
            frames_missing,
            frames_bad_hash: sum(|r| r.frames_bad_hash),
            frames_unmarked: sum(|r| r.frames_unmarked),
            audio_packets: sum(|r| r.audio_packets),
            bytes_received: sum(|r| r.bytes_received),
            layers: merge_layers(&rs),
            layer_switches: sum(|r| r.layer_switches),
            delete_failures: sum(|r| r.delete_failures),
            duration_s: rs.iter().map(|r| r.duration_s).fold(0.0, f64::max),
            publisher_frames_sent: pubs.clone().map(|p| p.frames_sent).sum(),
            publisher_keyframes_sent: pubs.clone().map(|p| p.keyframes_sent).sum(),
            publisher_keyframe_requests: pubs.clone().map(|p| p.keyframe_requests).sum(),
            publisher_write_errors: pubs.clone().map(|p| p.write_errors).sum(),
            publisher_layers: merge_publisher_layers(pubs.flat_map(|p| &p.layers)),
            rejoins: merge_rejoins(&rs),
            per_room: Vec::new(),
        };
        report.per_room = per_room;
        report
    }

    /// The human report: a few aligned lines; `wall` is the run's time on the clock,
    /// publisher connect and close included.
    pub fn human(&self, wall: Duration) -> String {
        let mut s = String::new();
        let pct = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                p.p50, p.p95, p.p99, p.max
            ),
            None => "no samples".into(),
        };
        let rooms = self.rooms.len();
        let publishing = if self.publishers == 0 {
            "watching (no publisher of ours)".to_string()
        } else if self.simulcast {
            let ladder: Vec<String> = SIMULCAST_LAYERS
                .iter()
                .map(|l| format!("{} {}", l.rid, l.bitrate_kbps(self.video_kbps)))
                .collect();
            format!(
                "{rooms} simulcast publisher(s) at {} kbit/s",
                ladder.join(" / ")
            )
        } else {
            format!("{rooms} publisher(s) at {} kbit/s", self.video_kbps)
        };
        let _ = writeln!(
            s,
            "skylark loadtest: {} room(s) at {}, {publishing}, {} viewers (ramp {}/s) for {:.1} s ({:.1} s wall)",
            rooms,
            self.url,
            self.requested_target,
            self.ramp_per_sec,
            self.duration_s,
            wall.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  viewers   requested {}  connected {}  playing {}  failed {}  unfinished {}",
            self.requested, self.connected, self.playing, self.failed, self.unfinished
        );
        let _ = writeln!(
            s,
            "  join      {}  (POST → first keyframe)",
            pct(&self.join_ms)
        );
        let _ = writeln!(
            s,
            "  connect   {}  (POST → ICE+DTLS up)",
            pct(&self.connect_ms)
        );
        let _ = writeln!(
            s,
            "  latency   {}  (publisher send → viewer receive, per frame)",
            pct(&self.latency_ms)
        );
        match (self.kbps_min, self.kbps_p50) {
            (Some(min), Some(p50)) => {
                let _ = writeln!(
                    s,
                    "  bitrate   per viewer min {min:.0} kbit/s  p50 {p50:.0} kbit/s"
                );
            }
            _ => {
                let _ = writeln!(s, "  bitrate   no viewer played");
            }
        }
        let _ = writeln!(
            s,
            "  frames    received {}  missing {}  loss {:.3} %  bad hash {}  unmarked {}  audio packets {}",
            self.frames_received,
            self.frames_missing,
            self.loss_pct,
            self.frames_bad_hash,
            self.frames_unmarked,
            self.audio_packets
        );
        for (node, f) in &self.by_node {
            let _ = writeln!(
                s,
                "  node {node}  {} viewers  join {}  latency {}",
                f.viewers,
                pct(&f.join_ms),
                pct(&f.latency_ms)
            );
        }
        if !self.layers.is_empty() {
            let list: Vec<String> = self
                .layers
                .iter()
                .map(|l| format!("{}: {} viewers", layer_name(l), l.viewers))
                .collect();
            let _ = writeln!(
                s,
                "  layers    {}  (what playing viewers received), {} layer switches",
                list.join(", "),
                self.layer_switches
            );
        }
        if self.failures.is_empty() {
            let _ = writeln!(s, "  failures  none");
        } else {
            let list: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| match self.failure_messages.get(k) {
                    Some(m) => format!("{k}: {v} ({m:?})"),
                    None => format!("{k}: {v}"),
                })
                .collect();
            let _ = writeln!(s, "  failures  {}", list.join(", "));
        }
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  publisher sent {} frames ({} keyframes), {} keyframe requests answered or coalesced, {} write errors",
                self.publisher_frames_sent,
                self.publisher_keyframes_sent,
                self.publisher_keyframe_requests,
                self.publisher_write_errors
            );
            if self.simulcast {
                let list: Vec<String> = self
                    .publisher_layers
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {}x{} {} frames ({} keyframes, {} requests)",
                            l.rid.as_deref().unwrap_or("-"),
                            l.width,
                            l.height,
                            l.frames_sent,
                            l.keyframes_sent,
                            l.keyframe_requests
                        )
                    })
                    .collect();
                let _ = writeln!(s, "  layers    sent {}", list.join(", "));
            }
        }
        if let Some(r) = &self.rejoins {
            let reasons: Vec<String> = r
                .by_reason
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                s,
                "  rejoins   {} viewers rejoined {} times ({}); picture frozen {}; {} still down, {} gave up",
                r.viewers_rejoined,
                r.rejoins,
                if reasons.is_empty() { "none".into() } else { reasons.join(", ") },
                pct(&r.play_again_ms),
                r.still_down,
                r.gave_up
            );
        }
        if self.delete_failures > 0 {
            let _ = writeln!(
                s,
                "  cleanup   {} DELETE requests failed",
                self.delete_failures
            );
        }
        if rooms > 1 {
            let _ = writeln!(
                s,
                "  (several rooms: percentiles are the largest over rooms, kbit/s p50 the smallest)"
            );
        }
        s
    }

    /// The JSON report, one object: what `skylark loadtest --json` prints and the
    /// benchmarks and tests read.
    pub fn to_json(&self) -> Value {
        let pct = |p: &Option<Percentiles>| {
            p.map_or(Value::Null, |p| {
                json!({"p50": p.p50, "p95": p.p95, "p99": p.p99, "max": p.max, "count": p.count})
            })
        };
        json!({
            "url": self.url,
            "rooms": self.rooms,
            "publishers": self.publishers,
            "video_kbps": if self.publishers == 0 { Value::Null } else { self.video_kbps.into() },
            "simulcast": self.simulcast,
            "viewers": {
                "requested": self.requested_target,
                "started": self.requested,
                "connected": self.connected,
                "playing": self.playing,
                "failed": self.failed,
                "unfinished": self.unfinished,
            },
            "failures": self.failures,
            // What the server answered, the first time, per cause of `failures`.
            "failure_messages": self.failure_messages,
            "join_ms": pct(&self.join_ms),
            "connect_ms": pct(&self.connect_ms),
            "latency_ms": pct(&self.latency_ms),
            "received_kbps": match (self.kbps_min, self.kbps_p50) {
                (Some(min), Some(p50)) => json!({"min": min, "p50": p50}),
                _ => Value::Null,
            },
            "loss_pct": self.loss_pct,
            // Media units the viewers received and checked: video frames + Opus packets
            // (the engine counts frames, not the RTP packets that carried them).
            "packets_received": self.frames_received + self.audio_packets,
            "frames_received": self.frames_received,
            "frames_missing": self.frames_missing,
            "frames_bad_hash": self.frames_bad_hash,
            "frames_unmarked": self.frames_unmarked,
            "audio_packets_received": self.audio_packets,
            "bytes_received": self.bytes_received,
            // Playing viewers by the layer they received: RID (simulcast), marker
            // index, picture size from the SPS.
            "layers": self.layers,
            "layer_switches": self.layer_switches,
            // Playing viewers by the SFU node that served them (WHEP `Skylark-Node`).
            "nodes": self.by_node.iter().map(|(node, f)| (node.clone(), json!({
                "viewers": f.viewers,
                "join_ms": pct(&f.join_ms),
                "latency_ms": pct(&f.latency_ms),
            }))).collect::<serde_json::Map<_, _>>(),
            "delete_failures": self.delete_failures,
            // Viewers that rejoined (null when the run's viewers don't rejoin).
            "rejoins": self.rejoins,
            "duration_s": self.duration_s,
            "publisher": if self.publishers == 0 { Value::Null } else { json!({
                "frames_sent": self.publisher_frames_sent,
                "keyframes_sent": self.publisher_keyframes_sent,
                "keyframe_requests": self.publisher_keyframe_requests,
                "write_errors": self.publisher_write_errors,
                "layers": self.publisher_layers,
            })},
            "per_room": self.per_room.iter().map(|(room, r)| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("room".into(), room.clone().into());
                }
                v
            }).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RoomLoad;

    #[test]
    fn received_layers_merge_over_rooms_and_are_named() {
        let layer = |rid: Option<&str>, i: u8, w: u32, h: u32, viewers: u64| ReceivedLayer {
            rid: rid.map(str::to_string),
            layer: Some(i),
            width: Some(w),
            height: Some(h),
            viewers,
        };
        let report = |layers: Vec<ReceivedLayer>| SwarmReport {
            duration_s: 1.0,
            layers,
            ..SwarmReport::default()
        };
        let a = report(vec![layer(Some("h"), 0, 320, 240, 3)]);
        let b = report(vec![
            layer(Some("m"), 1, 160, 120, 1),
            layer(Some("h"), 0, 320, 240, 2),
        ]);
        let merged = merge_layers(&[&a, &b]);
        let named: Vec<(String, u64)> = merged.iter().map(|l| (layer_name(l), l.viewers)).collect();
        assert_eq!(
            named,
            [("h 320x240".to_string(), 5), ("m 160x120".to_string(), 1)]
        );
        assert_eq!(layer_name(&layer(None, 0, 320, 240, 1)), "320x240");
        let unknown = ReceivedLayer {
            rid: None,
            layer: None,
            width: None,
            height: None,
            viewers: 1,
        };
        assert_eq!(layer_name(&unknown), "unknown");
    }

    #[test]
    fn upper_bound_merge_of_percentiles() {
        let a = Percentiles {
            count: 2,
            p50: 1.0,
            p95: 5.0,
            p99: 9.0,
            max: 10.0,
        };
        let b = Percentiles {
            count: 3,
            p50: 2.0,
            p95: 4.0,
            p99: 8.0,
            max: 12.0,
        };
        let m = merge_upper(&[Some(a), None, Some(b)]).unwrap();
        assert_eq!(
            (m.count, m.p50, m.p95, m.p99, m.max),
            (5, 2.0, 5.0, 9.0, 12.0)
        );
        assert!(merge_upper(&[None]).is_none());
    }

    /// Two rooms, one of which lost 10 % of 100 frames and one none of 300.
    fn two_rooms() -> (RunConfig, Vec<(String, SwarmReport)>) {
        let room = |name: &str, viewers| RoomLoad {
            room: name.into(),
            stream_key: Some(format!("key-{name}")),
            viewers,
        };
        let config = RunConfig {
            base_url: "http://sk:8080".into(),
            rooms: vec![room("a", 2), room("b", 1), room("c", 1)],
            ramp_per_sec: 10.0,
            ..Default::default()
        };
        let swarm = |viewers: u64, received: u64, missing: u64, loss_pct: f64| SwarmReport {
            duration_s: 5.0 + viewers as f64,
            viewers: ViewerCounts {
                requested: viewers,
                connected: viewers,
                playing: viewers,
                ..ViewerCounts::default()
            },
            failures: BTreeMap::from([("http_503".to_string(), 1)]),
            frames_received: received,
            frames_missing: missing,
            loss_pct,
            audio_packets: 7,
            ..SwarmReport::default()
        };
        let per_room = vec![
            ("a".to_string(), swarm(2, 90, 10, 10.0)),
            ("b".to_string(), swarm(1, 300, 0, 0.0)),
        ];
        (config, per_room)
    }

    #[test]
    fn rooms_merge_into_one_report() {
        let (config, per_room) = two_rooms();
        let r = RunReport::new(&config, per_room);
        assert_eq!((r.requested_target, r.requested, r.playing), (4, 3, 3));
        assert_eq!(r.failures, BTreeMap::from([("http_503".to_string(), 2)]));
        // 10 missing of 100 + 300 expected frames.
        assert!((r.loss_pct - 2.5).abs() < 1e-9, "{}", r.loss_pct);
        assert_eq!(r.duration_s, 7.0);
        // Every room asked for stays named, the one that did not run too.
        assert_eq!(r.rooms, ["a", "b", "c"]);
        assert_eq!(r.per_room.len(), 2);
    }

    #[test]
    fn a_refusal_says_what_the_server_said() {
        let (config, mut per_room) = two_rooms();
        per_room[0].1.failure_messages =
            BTreeMap::from([("http_503".to_string(), "node full: try another".to_string())]);
        let r = RunReport::new(&config, per_room);
        assert_eq!(
            r.to_json()["failure_messages"]["http_503"],
            "node full: try another"
        );
        let text = r.human(Duration::from_secs(10));
        assert!(
            text.contains("http_503: 2 (\"node full: try another\")"),
            "{text}"
        );
    }

    #[test]
    fn json_report_keeps_its_shape() {
        let (config, per_room) = two_rooms();
        let v = RunReport::new(&config, per_room).to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "url",
            "rooms",
            "publishers",
            "video_kbps",
            "simulcast",
            "viewers",
            "failures",
            "failure_messages",
            "join_ms",
            "connect_ms",
            "latency_ms",
            "received_kbps",
            "loss_pct",
            "packets_received",
            "frames_received",
            "frames_missing",
            "frames_bad_hash",
            "frames_unmarked",
            "audio_packets_received",
            "bytes_received",
            "layers",
            "layer_switches",
            "nodes",
            "delete_failures",
            "rejoins",
            "duration_s",
            "publisher",
            "per_room",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["publishers"], 3);
        assert_eq!(v["video_kbps"], 600);
        assert_eq!(v["viewers"]["requested"], 4);
        assert_eq!(v["viewers"]["started"], 3);
        assert_eq!(v["packets_received"], 390 + 14);
        assert_eq!(v["join_ms"], Value::Null);
        assert_eq!(v["per_room"][1]["room"], "b");
        assert_eq!(v["per_room"][1]["frames_received"], 300);
        assert!(v["publisher"].is_object());
    }

    #[test]
    fn watching_reports_no_publisher() {
        let (mut config, per_room) = two_rooms();
        for r in &mut config.rooms {
            r.stream_key = None;
        }
        let r = RunReport::new(&config, per_room);
        let v = r.to_json();
        assert_eq!(v["publishers"], 0);
        assert_eq!(v["video_kbps"], Value::Null);
        assert_eq!(v["publisher"], Value::Null);
        let text = r.human(Duration::from_secs(8));
        assert!(
            text.starts_with(
                "skylark loadtest: 3 room(s) at http://sk:8080, watching (no publisher of ours), \
                 4 viewers (ramp 10/s) for 7.0 s (8.0 s wall)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  failures  http_503: 2\n"), "{text}");
        assert!(!text.contains("publisher sent"), "{text}");
    }
}
