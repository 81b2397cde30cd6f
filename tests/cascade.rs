//! One room across many SFU nodes: `skylark api`, `skylark signaling` and three
//! `skylark sfu` processes sharing Redis. The nodes are small (20 sessions, one
//! downstream relay link each), so 50 viewers of one room need an origin → edge →
//! edge tree: placement must grow it, and every viewer on every node must get every
//! frame of the one publisher.

mod common;

use common::*;
use skylark_bus::placement;
use std::collections::BTreeMap;
use std::time::Duration;

const VIEWERS: usize = 50;

struct Cluster {
    _dir: tempfile::TempDir,
    _api: Skylark,
    sfus: Vec<Skylark>,
    signaling: Skylark,
    bus: skylark_bus::AnyBus,
    /// The API's public base (room creation, viewer counts).
    api_base: String,
}

/// api + signaling + `nodes` SFUs named `sfu-0`…, each taking `max_sessions` sessions
/// and feeding `max_relays` relay links.
async fn cluster(redis: &str, nodes: usize, max_sessions: u32, max_relays: u32) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let prefix = format!("skylark-test-{}:", unique_id());
    let shared = scale_out_env(
        redis,
        api_grpc,
        dir.path(),
        &[("SKYLARK_REDIS_PREFIX", prefix.clone())],
    );
    let api = Skylark::start_with(Options {
        target: Some("api"),
        env: shared(&[("SKYLARK_GRPC_ADDR", format!("127.0.0.1:{api_grpc}"))]),
        dir: Some(dir.path().join("api")),
    })
    .await;
    let mut sfus = Vec::new();
    for i in 0..nodes {
        sfus.push(
            Skylark::start_with(Options {
                target: Some("sfu"),
                env: shared(&[
                    ("SKYLARK_GRPC_ADDR", "127.0.0.1:0".into()),
                    ("SKYLARK_NODE_ID", format!("sfu-{i}")),
                    ("SKYLARK_SFU_MAX_SESSIONS", max_sessions.to_string()),
                    ("SKYLARK_SFU_MAX_RELAYS", max_relays.to_string()),
                ]),
                dir: Some(dir.path().join(format!("sfu-{i}"))),
            })
            .await,
        );
    }
    let signaling = Skylark::start_with(Options {
        target: Some("signaling"),
        env: shared(&[]),
        dir: Some(dir.path().join("signaling")),
    })
    .await;
    let bus = connect_bus(redis, prefix).await;
    // Every node registered before placement starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    use skylark_bus::Bus;
    while bus.nodes(skylark_bus::NodeKind::Sfu).await.unwrap().len() < nodes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SFU nodes registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Cluster {
        api_base: api.base.clone(),
        _dir: dir,
        _api: api,
        sfus,
        signaling,
        bus,
    }
}

#[tokio::test]
async fn fifty_viewers_of_one_room_spread_over_a_two_level_tree() {
    let Some(redis) = redis_url() else { return };
    let c = cluster(&redis, 3, 20, 1).await;
    let r = live_room(&c).await;
    let viewers = cascade::join_viewers(&r.engine, &r.whep, VIEWERS).await;

    // Spread: the origin, an edge pulling from it, and an edge pulling from that edge.
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for v in &viewers {
        let node = v.serving_node().expect("WHEP names the serving node");
        *by_node.entry(node.to_string()).or_default() += 1;
    }
    assert_eq!(by_node.len(), 3, "viewers on every node: {by_node:?}");
    let relays = placement::relays(&c.bus, &r.room).await.unwrap();
    cascade::assert_two_level_tree(&relays, &r.origin);

    // Every viewer plays every frame since its first keyframe, byte-exact.
    tokio::time::sleep(Duration::from_secs(4)).await;
    report_per_hop(&viewers, &r.origin, &relays).await;
    cascade::assert_every_frame(&viewers, &c.sfus).await;

    // The room's viewer count is the sum over its nodes, in the API too.
    let what = format!("by node {by_node:?}");
    cascade::assert_viewer_count(&c.api_base, &r.room, VIEWERS, &what).await;
}

/// A live room of the cluster: a load-generator publisher through signaling, and the
/// SFU node that became its origin.
struct LiveRoom {
    room: String,
    key: String,
    engine: skylark_loadgen::Engine,
    publisher: skylark_loadgen::Publisher,
    origin: String,
    whep: String,
}

async fn live_room(c: &Cluster) -> LiveRoom {
    let (_, room, key) = creator_with_room(&c.api_base, "public").await;
    let (engine, publisher) = publish(&c.signaling.base, &room, &key).await;
    let origin = cascade::origin_node(&c.bus, &room).await;
    let whep = format!("{}/whep/{room}", c.signaling.base);
    LiveRoom {
        room,
        key,
        engine,
        publisher,
        origin,
        whep,
    }
}

/// Prints, per hop from the origin, the viewers' join time and frame latency: what each
/// relay hop costs, measured in one run (figures for docs/benchmarks.md, not asserted).
async fn report_per_hop(
    viewers: &[skylark_loadgen::Viewer],
    origin: &str,
    relays: &[placement::Relay],
) {
    let depth_of = |node: &str| {
        if node == origin {
            Some(0)
        } else {
            relays.iter().find(|r| r.node == node).map(|r| r.depth)
        }
    };
    let mut by_depth: BTreeMap<u32, (Vec<f64>, skylark_loadgen::stats::Histogram)> =
        BTreeMap::new();
    for v in viewers {
        let Some(depth) = v.serving_node().and_then(depth_of) else {
            continue;
        };
        let s = v.stats().await.unwrap();
        let entry = by_depth.entry(depth).or_default();
        entry.0.extend(s.join_ms);
        entry.1.merge(&s.latency_us);
    }
    // Join on a cold edge (the first viewer of each edge: its pull starts with that
    // Subscribe) against a warm one (later viewers), in join order.
    let mut seen = std::collections::HashSet::new();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for v in viewers {
        let Some(node) = v.serving_node().filter(|n| *n != origin) else {
            continue;
        };
        let Some(join) = v.stats().await.unwrap().join_ms else {
            continue;
        };
        if seen.insert(node.to_string()) {
            cold.push(join);
        } else {
            warm.push(join);
        }
    }
    let p50 = |v: &[f64]| skylark_loadgen::stats::percentiles(v).map_or(f64::NAN, |p| p.p50);
    println!(
        "edge join: cold (first viewer, pull starts) {:.0} ms over {} edges, warm p50 {:.0} ms over {} viewers",
        p50(&cold),
        cold.len(),
        p50(&warm),
        warm.len()
    );
    for (depth, (joins, latency)) in by_depth {
        let join = skylark_loadgen::stats::percentiles(&joins);
        let lat = latency.percentiles_ms();
        println!(
            "hop {depth}: {} viewers, join p50 {:.0} ms p95 {:.0} ms, latency p50 {:.1} ms p99 {:.1} ms",
            joins.len(),
            join.as_ref().map_or(f64::NAN, |p| p.p50),
            join.as_ref().map_or(f64::NAN, |p| p.p95),
            lat.as_ref().map_or(f64::NAN, |p| p.p50),
            lat.as_ref().map_or(f64::NAN, |p| p.p99),
        );
    }
}

/// A live room of `c` and `n` viewers joined through signaling, each past its first 10
/// frames.
async fn watched_room(c: &Cluster, n: usize) -> (LiveRoom, Vec<skylark_loadgen::Viewer>) {
    let r = live_room(c).await;
    let mut viewers = Vec::new();
    for _ in 0..n {
        viewers.push(r.engine.view(&r.whep, None).await.expect("WHEP"));
    }
    for v in &viewers {
        assert!(frames_after(v, 10, Duration::from_secs(10)).await.is_some());
    }
    (r, viewers)
}

/// Asserts that `v` receives `more` frames within `within`, every one intact.
async fn assert_plays_on(v: &skylark_loadgen::Viewer, more: u64, within: Duration, what: &str) {
    let before = v.stats().await.unwrap().frames;
    assert!(
        frames_after(v, before + more, within).await.is_some(),
        "a viewer on {:?} {what}",
        v.serving_node()
    );
    assert_eq!(v.stats().await.unwrap().frames_bad_hash, 0);
}

/// Frames `v` has received, polled until they exceed `above` or `within` passes.
async fn frames_after(v: &skylark_loadgen::Viewer, above: u64, within: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = v.stats().await.ok()?;
        if s.frames > above {
            return Some(s.frames);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn viewers_of_a_killed_edge_play_again_through_another_node() {
    let Some(redis) = redis_url() else { return };
    let mut c = cluster(&redis, 3, 12, 2).await;
    let (r, viewers) = watched_room(&c, 20).await;
    // The edge with the most viewers dies without a word (SIGKILL).
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for v in &viewers {
        *by_node
            .entry(v.serving_node().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let (dead, _) = by_node
        .iter()
        .filter(|(n, _)| **n != r.origin)
        .max_by_key(|(_, count)| **count)
        .map(|(n, c)| (n.clone(), *c))
        .expect("viewers on an edge");
    let index: usize = dead.trim_start_matches("sfu-").parse().unwrap();
    c.sfus[index].child.kill().unwrap();
    let killed = tokio::time::Instant::now();

    // Its viewers rejoin through signaling, as the player's watchdog does; the dead
    // node may still be in the registry, so placement must skip it by itself.
    let (orphans, others): (Vec<_>, Vec<_>) = viewers
        .into_iter()
        .partition(|v| v.serving_node() == Some(dead.as_str()));
    let mut rejoined = Vec::new();
    for _ in &orphans {
        rejoined.push(
            r.engine
                .view(&r.whep, None)
                .await
                .expect("rejoin through signaling"),
        );
    }
    let mut slowest = Duration::ZERO;
    for v in &rejoined {
        assert_ne!(
            v.serving_node(),
            Some(dead.as_str()),
            "placed on a live node"
        );
        assert!(
            frames_after(v, 0, Duration::from_secs(5)).await.is_some(),
            "playing again within 5 s of the kill"
        );
        slowest = slowest.max(killed.elapsed());
    }
    println!(
        "edge {dead} killed: {} viewers playing again through {:?} within {slowest:?}",
        rejoined.len(),
        rejoined
            .iter()
            .map(|v| v.serving_node())
            .collect::<Vec<_>>()
    );
    assert!(slowest <= Duration::from_secs(5), "{slowest:?}");

    // Everyone else played on.
    for v in &others {
        assert_plays_on(v, 10, Duration::from_secs(5), "kept playing").await;
    }
}

#[tokio::test]
async fn edges_follow_the_publisher_to_a_new_origin_without_their_viewers_rejoining() {
    let Some(redis) = redis_url() else { return };
    let mut c = cluster(&redis, 3, 8, 2).await;
    let (r, viewers) = watched_room(&c, 12).await;
    let on_edges: Vec<_> = viewers
        .iter()
        .filter(|v| v.serving_node() != Some(r.origin.as_str()))
        .collect();
    assert!(!on_edges.is_empty(), "some viewers on edges");

    // The origin dies; the publisher reconnects through signaling, as OBS, FFmpeg and
    // the studio do, and lands on another node.
    let index: usize = r.origin.trim_start_matches("sfu-").parse().unwrap();
    c.sfus[index].child.kill().unwrap();
    drop(r.publisher);
    let killed = tokio::time::Instant::now();
    let deadline = killed + Duration::from_secs(15);
    let _publisher = loop {
        match r
            .engine
            .publish(
                &format!("{}/whip/{}", c.signaling.base, r.room),
                &r.key,
                skylark_loadgen::source::VideoConfig::default(),
            )
            .await
        {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "publisher back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };

    // The edges re-pull from the new origin: their viewers, same sessions, play the new
    // publisher's frames.
    for v in &on_edges {
        assert_plays_on(
            v,
            30,
            Duration::from_secs(20),
            "got the new publisher's frames without rejoining",
        )
        .await;
        assert!(v.stats().await.unwrap().connected, "kept its session");
    }
    println!(
        "origin {} killed: {} edge viewers played the new publisher after {:?}",
        r.origin,
        on_edges.len(),
        killed.elapsed()
    );
}

#[tokio::test]
async fn live_relays_keep_flowing_while_redis_is_gone() {
    // Redis must exist here; its absence is what the test makes.
    if redis_url().is_none() {
        return;
    }
    let mut redis = netns::OwnRedis::start("127.0.0.1");
    let c = cluster(&redis.url, 3, 8, 2).await;
    let (r, viewers) = watched_room(&c, 12).await;
    assert!(
        viewers
            .iter()
            .any(|v| v.serving_node() != Some(r.origin.as_str())),
        "some viewers on edges"
    );

    // Redis dies: registry, leases and events are gone; media must not depend on them.
    redis.kill().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for v in &viewers {
        assert_plays_on(v, 60, Duration::from_secs(8), "kept playing without Redis").await;
    }
    // New placements cannot be made: signaling says so instead of hanging.
    let refused = r.engine.view(&r.whep, None).await;
    assert!(refused.is_err(), "no placement without Redis");
}
