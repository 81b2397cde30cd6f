//! One room over many SFU nodes: what the cascade tests on loopback (`cascade.rs`) and
//! with a host per node (`cascade_netns.rs`) build and check alike.

use serde_json::Value;
use skylark_bus::placement;
use skylark_loadgen::{Engine, Viewer};
use std::time::Duration;

/// The SFU node that holds `room`'s origin.
pub async fn origin_node(bus: &impl skylark_bus::Bus, room: &str) -> String {
    placement::origin(bus, room)
        .await
        .unwrap()
        .and_then(|o| o.sfu_node().map(str::to_string))
        .expect("the room has an SFU origin")
}

/// `n` viewers joined through `whep` (each must be accepted; none waited for).
pub async fn join_viewers(engine: &Engine, whep: &str, n: usize) -> Vec<Viewer> {
    let mut viewers = Vec::new();
    for i in 0..n {
        let v = engine
            .view(whep, None)
            .await
            .unwrap_or_else(|e| panic!("viewer {i}: {e}"));
        viewers.push(v);
    }
    viewers
}

/// Asserts the tree that nodes with one downstream relay link each grow: the origin
/// feeds one link, and the tree is two levels deep.
pub fn assert_two_level_tree(relays: &[placement::Relay], origin: &str) {
    assert_eq!(
        relays.iter().filter(|x| x.parent == origin).count(),
        1,
        "the origin feeds one relay link: {relays:?}"
    );
    assert_eq!(
        relays.iter().map(|x| x.depth).max(),
        Some(2),
        "the tree is two levels deep: {relays:?}"
    );
}

/// Asserts that every viewer is connected and has played at least 30 frames since its
/// first keyframe, every one byte-exact, with no gap. A failure names what the nodes
/// dropped on purpose to keep latency (a relay consumer or a sibling worker too slow,
/// as on a CPU-starved machine), which tells such a gap from a lost packet.
pub async fn assert_every_frame(viewers: &[Viewer], sfus: &[super::Skylark]) {
    let mut gaps = Vec::new();
    for (i, v) in viewers.iter().enumerate() {
        let s = v.stats().await.unwrap();
        let node = v.serving_node().unwrap_or_default();
        assert!(s.connected, "viewer {i} on {node} connected");
        assert!(s.frames >= 30, "viewer {i} on {node}: {} frames", s.frames);
        assert_eq!(
            s.frames_bad_hash, 0,
            "viewer {i} on {node}: payloads intact"
        );
        if s.frames_missing > 0 {
            gaps.push(format!(
                "viewer {i} on {node}: {} missing",
                s.frames_missing
            ));
        }
    }
    if gaps.is_empty() {
        return;
    }
    let mut dropped = Vec::new();
    for sfu in sfus {
        let m = sfu.metrics().await;
        for name in DELIBERATE_DROPS {
            dropped.push(format!(
                "{} {name} {}",
                sfu.base,
                super::metric_sum(&m, name)
            ));
        }
    }
    panic!("no gaps: {gaps:?}; the nodes' deliberate drops: {dropped:?}");
}

/// The counters of what an SFU node drops on purpose rather than queue (latency first).
const DELIBERATE_DROPS: [&str; 2] = [
    "skylark_sfu_relay_resyncs_total",
    "skylark_sfu_steer_drops_total",
];

/// Polls the API at `api_base` until `room`'s viewer count (the sum over its nodes) is
/// `want`; fails after 10 s saying `what`.
pub async fn assert_viewer_count(api_base: &str, room: &str, want: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value =
            super::send_json(reqwest::Client::new().get(format!("{api_base}/api/v1/rooms/{room}")))
                .await;
        if v["viewers"] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: viewer count {} != {want}",
            v["viewers"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
