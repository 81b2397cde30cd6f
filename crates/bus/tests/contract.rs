//! The contract every backend must meet, run against the in-process bus and a
//! real Redis (`SKYLARK_TEST_REDIS_URL`, default redis://127.0.0.1:6379).
//!
//! Without Redis the Redis half is skipped with a message, unless `CI=true`,
//! where it fails. Each Redis test uses its own random key prefix.

use std::future::Future;
use std::time::Duration;

use skylark_bus::events::{self, RoomEvent};
use skylark_bus::placement::{self, Origin, Relay};
use skylark_bus::{
    connect_with, AnyBus, Bus, BusConfig, BusError, NodeCapacity, NodeInfo, NodeKind, NodeLoad,
    Subscription, MAX_PAYLOAD_BYTES,
};
use tokio::time::{sleep, timeout, Instant};

/// Short enough to keep the suite fast, long enough for a loaded CI box.
const SHORT_TTL: Duration = Duration::from_millis(300);
const LONG_TTL: Duration = Duration::from_secs(30);
/// How long "eventually" may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(3);

fn node(kind: NodeKind, id: &str, load: u32) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        kind,
        grpc_addr: format!("http://{id}:7001"),
        media_addr: format!("{id}:50000"),
        ice_tcp_addr: format!("{id}:7881"),
        http_addr: String::new(),
        load: NodeLoad {
            sessions: load,
            ..NodeLoad::default()
        },
        capacity: NodeCapacity {
            sessions: 100,
            relays: 8,
        },
    }
}

async fn ids(bus: &impl Bus, kind: NodeKind) -> Vec<String> {
    let nodes = bus.nodes(kind).await.unwrap();
    nodes.into_iter().map(|n| n.id).collect()
}

/// Polls `check` until it holds, failing after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(25)).await;
    }
}

async fn next(sub: &mut Subscription) -> String {
    timeout(PATIENCE, sub.recv())
        .await
        .expect("no message within patience")
        .expect("subscription ended")
}

async fn nothing_within(sub: &mut Subscription, wait: Duration) {
    if let Ok(message) = timeout(wait, sub.recv()).await {
        panic!("expected no message on {}, got {message:?}", sub.channel());
    }
}

// ---------------------------------------------------------------- node registry

async fn heartbeat_lists_nodes_by_kind(bus: &impl Bus) {
    bus.heartbeat(&node(NodeKind::Sfu, "sfu-b", 1), LONG_TTL)
        .await
        .unwrap();
    bus.heartbeat(&node(NodeKind::Sfu, "sfu-a", 2), LONG_TTL)
        .await
        .unwrap();
    bus.heartbeat(&node(NodeKind::Packager, "pkg-a", 3), LONG_TTL)
        .await
        .unwrap();
    assert_eq!(ids(bus, NodeKind::Sfu).await, ["sfu-a", "sfu-b"]);
    assert_eq!(ids(bus, NodeKind::Packager).await, ["pkg-a"]);

    // A later heartbeat updates the entry instead of adding a second one.
    bus.heartbeat(&node(NodeKind::Sfu, "sfu-a", 42), LONG_TTL)
        .await
        .unwrap();
    let sfus = bus.nodes(NodeKind::Sfu).await.unwrap();
    assert_eq!(sfus.len(), 2);
    assert_eq!(sfus[0], node(NodeKind::Sfu, "sfu-a", 42));

    bus.remove_node(NodeKind::Sfu, "sfu-a").await.unwrap();
    bus.remove_node(NodeKind::Sfu, "never-registered")
        .await
        .unwrap();
    assert_eq!(ids(bus, NodeKind::Sfu).await, ["sfu-b"]);

    for (kind, id) in [(NodeKind::Sfu, "sfu-b"), (NodeKind::Packager, "pkg-a")] {
        bus.remove_node(kind, id).await.unwrap();
    }
}

async fn silent_node_vanishes_after_ttl(bus: &impl Bus) {
    let started = Instant::now();
    bus.heartbeat(&node(NodeKind::Sfu, "dies", 0), SHORT_TTL)
        .await
        .unwrap();
    bus.heartbeat(&node(NodeKind::Sfu, "lives", 0), SHORT_TTL)
        .await
        .unwrap();
    if started.elapsed() < SHORT_TTL {
        assert_eq!(ids(bus, NodeKind::Sfu).await, ["dies", "lives"]);
    }
    // "lives" keeps heartbeating at a third of its TTL; "dies" went silent.
    let deadline = Instant::now() + SHORT_TTL * 2;
    while Instant::now() < deadline {
        sleep(SHORT_TTL / 3).await;
        bus.heartbeat(&node(NodeKind::Sfu, "lives", 0), SHORT_TTL)
            .await
            .unwrap();
    }
    assert_eq!(ids(bus, NodeKind::Sfu).await, ["lives"]);
    assert!(started.elapsed() >= SHORT_TTL);

    eventually("the last node expires", || async {
        bus.nodes(NodeKind::Sfu).await.unwrap().is_empty()
    })
    .await;
}

// ----------------------------------------------------------------------- leases

async fn lease_is_exclusive(bus: &impl Bus) {
    assert_eq!(bus.lease_holder("room:1:origin").await.unwrap(), None);
    assert!(bus
        .acquire_lease("room:1:origin", "sfu-a", LONG_TTL)
        .await
        .unwrap());
    assert!(!bus
        .acquire_lease("room:1:origin", "sfu-b", LONG_TTL)
        .await
        .unwrap());
    assert_eq!(
        bus.lease_holder("room:1:origin").await.unwrap().as_deref(),
        Some("sfu-a")
    );
    // Re-acquiring by the holder succeeds (and renews).
    assert!(bus
        .acquire_lease("room:1:origin", "sfu-a", LONG_TTL)
        .await
        .unwrap());
    // Other keys are independent, and kv does not share the lease namespace.
    assert!(bus
        .acquire_lease("room:2:origin", "sfu-b", LONG_TTL)
        .await
        .unwrap());
    assert_eq!(bus.get("room:1:origin").await.unwrap(), None);

    bus.release_lease("room:1:origin", "sfu-a").await.unwrap();
    bus.release_lease("room:2:origin", "sfu-b").await.unwrap();
}

async fn renewal_keeps_lease_for_its_holder_only(bus: &impl Bus) {
    assert!(!bus
        .renew_lease("packager:room:3", "pkg-a", SHORT_TTL)
        .await
        .unwrap());
    assert!(bus
        .acquire_lease("packager:room:3", "pkg-a", SHORT_TTL)
        .await
        .unwrap());
    assert!(!bus
        .renew_lease("packager:room:3", "pkg-b", SHORT_TTL)
        .await
        .unwrap());

    // Renewing at a third of the TTL outlives the original TTL twice over.
    let deadline = Instant::now() + SHORT_TTL * 2;
    while Instant::now() < deadline {
        sleep(SHORT_TTL / 3).await;
        assert!(bus
            .renew_lease("packager:room:3", "pkg-a", SHORT_TTL)
            .await
            .unwrap());
    }
    assert_eq!(
        bus.lease_holder("packager:room:3")
            .await
            .unwrap()
            .as_deref(),
        Some("pkg-a")
    );
    assert!(!bus
        .acquire_lease("packager:room:3", "pkg-b", SHORT_TTL)
        .await
        .unwrap());
    bus.release_lease("packager:room:3", "pkg-a").await.unwrap();
}

async fn expired_lease_can_be_taken_over(bus: &impl Bus) {
    assert!(bus
        .acquire_lease("room:4:origin", "sfu-a", SHORT_TTL)
        .await
        .unwrap());
    eventually("the lease expires", || async {
        bus.lease_holder("room:4:origin").await.unwrap().is_none()
    })
    .await;
    assert!(bus
        .acquire_lease("room:4:origin", "sfu-b", LONG_TTL)
        .await
        .unwrap());
    // The old holder must notice it lost the lease.
    assert!(!bus
        .renew_lease("room:4:origin", "sfu-a", LONG_TTL)
        .await
        .unwrap());
    assert_eq!(
        bus.lease_holder("room:4:origin").await.unwrap().as_deref(),
        Some("sfu-b")
    );
    bus.release_lease("room:4:origin", "sfu-b").await.unwrap();
}

async fn release_by_non_holder_is_a_no_op(bus: &impl Bus) {
    assert!(bus
        .acquire_lease("room:5:origin", "sfu-a", LONG_TTL)
        .await
        .unwrap());
    bus.release_lease("room:5:origin", "sfu-b").await.unwrap();
    assert_eq!(
        bus.lease_holder("room:5:origin").await.unwrap().as_deref(),
        Some("sfu-a")
    );
    bus.release_lease("room:5:origin", "sfu-a").await.unwrap();
    assert_eq!(bus.lease_holder("room:5:origin").await.unwrap(), None);
    assert!(bus
        .acquire_lease("room:5:origin", "sfu-b", LONG_TTL)
        .await
        .unwrap());
    bus.release_lease("room:5:origin", "sfu-b").await.unwrap();
    // Releasing a lease nobody holds is fine too.
    bus.release_lease("room:5:origin", "sfu-b").await.unwrap();
}

// -------------------------------------------------------------------- key/value

async fn kv_set_get_del_and_ttl(bus: &impl Bus) {
    assert_eq!(bus.get("room:6:meta").await.unwrap(), None);
    bus.set("room:6:meta", r#"{"title":"hi"}"#, None)
        .await
        .unwrap();
    assert_eq!(
        bus.get("room:6:meta").await.unwrap().as_deref(),
        Some(r#"{"title":"hi"}"#)
    );
    bus.set("room:6:meta", "replaced", None).await.unwrap();
    assert_eq!(
        bus.get("room:6:meta").await.unwrap().as_deref(),
        Some("replaced")
    );
    bus.del("room:6:meta").await.unwrap();
    bus.del("room:6:meta").await.unwrap();
    assert_eq!(bus.get("room:6:meta").await.unwrap(), None);

    let started = Instant::now();
    bus.set("room:6:viewers", "17", Some(SHORT_TTL))
        .await
        .unwrap();
    if started.elapsed() < SHORT_TTL {
        assert_eq!(
            bus.get("room:6:viewers").await.unwrap().as_deref(),
            Some("17")
        );
    }
    eventually("the value expires", || async {
        bus.get("room:6:viewers").await.unwrap().is_none()
    })
    .await;
    assert!(started.elapsed() >= SHORT_TTL);

    // Setting without a TTL clears a previous one.
    bus.set("room:6:viewers", "18", Some(SHORT_TTL))
        .await
        .unwrap();
    bus.set("room:6:viewers", "19", None).await.unwrap();
    sleep(SHORT_TTL * 2).await;
    assert_eq!(
        bus.get("room:6:viewers").await.unwrap().as_deref(),
        Some("19")
    );
    bus.del("room:6:viewers").await.unwrap();
}

async fn zero_ttl_and_empty_names_are_refused(bus: &impl Bus) {
    let invalid = |r: Result<_, BusError>| matches!(r, Err(BusError::InvalidArgument(_)));
    assert!(invalid(
        bus.heartbeat(&node(NodeKind::Sfu, "x", 0), Duration::ZERO)
            .await
    ));
    assert!(invalid(
        bus.heartbeat(&node(NodeKind::Sfu, "", 0), LONG_TTL).await
    ));
    assert!(invalid(
        bus.acquire_lease("k", "a", Duration::from_micros(10))
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        bus.acquire_lease("k", "", LONG_TTL).await.map(|_| ())
    ));
    assert!(invalid(
        bus.renew_lease("k", "a", Duration::ZERO).await.map(|_| ())
    ));
    assert!(invalid(bus.set("k", "v", Some(Duration::ZERO)).await));
    assert_eq!(bus.lease_holder("k").await.unwrap(), None);
    assert_eq!(bus.get("k").await.unwrap(), None);
}

// ---------------------------------------------------------------------- pub/sub

async fn publish_reaches_every_subscriber_in_order(bus: &impl Bus) {
    let mut first = bus.subscribe("room:7").await.unwrap();
    let mut second = bus.subscribe("room:7").await.unwrap();
    let mut elsewhere = bus.subscribe("room:8").await.unwrap();
    assert_eq!(first.channel(), "room:7");

    // Two subscriptions; on Redis they share this process's one connection.
    let listeners = bus.publish("room:7", "live").await.unwrap();
    assert!((1..=2).contains(&listeners), "{listeners}");
    assert_eq!(bus.publish("room:7", "viewers:3").await.unwrap(), listeners);
    for sub in [&mut first, &mut second] {
        assert_eq!(next(sub).await, "live");
        assert_eq!(next(sub).await, "viewers:3");
    }
    nothing_within(&mut elsewhere, Duration::from_millis(100)).await;
}

async fn dropped_subscription_receives_nothing(bus: &impl Bus) {
    let first = bus.subscribe("room:9").await.unwrap();
    let mut second = bus.subscribe("room:9").await.unwrap();
    drop(first);
    // Redis learns of the closed connection asynchronously.
    eventually("one subscriber is left", || async {
        bus.publish("room:9", "probe").await.unwrap() == 1
    })
    .await;
    while timeout(Duration::from_millis(100), second.recv())
        .await
        .is_ok()
    {} // drain probes
    assert_eq!(bus.publish("room:9", "offline").await.unwrap(), 1);
    assert_eq!(next(&mut second).await, "offline");

    drop(second);
    eventually("nobody is subscribed", || async {
        bus.publish("room:9", "probe").await.unwrap() == 0
    })
    .await;
    // A publish with no subscribers is not an error, and a new subscriber
    // only sees what comes after it.
    let mut late = bus.subscribe("room:9").await.unwrap();
    assert_eq!(bus.publish("room:9", "hello").await.unwrap(), 1);
    assert_eq!(next(&mut late).await, "hello");
}

async fn oversized_payload_is_refused(bus: &impl Bus) {
    let mut sub = bus.subscribe("room:10").await.unwrap();
    let too_big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
    match bus.publish("room:10", &too_big).await {
        Err(BusError::PayloadTooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let max = "y".repeat(MAX_PAYLOAD_BYTES);
    assert_eq!(bus.publish("room:10", &max).await.unwrap(), 1);
    assert_eq!(next(&mut sub).await.len(), MAX_PAYLOAD_BYTES);
}

// ----------------------------------------- two handles: the multi-process property

async fn two_handles_see_each_other(a: &impl Bus, b: &impl Bus) {
    assert!(a
        .acquire_lease("room:11:origin", "signaling-a", LONG_TTL)
        .await
        .unwrap());
    assert_eq!(
        b.lease_holder("room:11:origin").await.unwrap().as_deref(),
        Some("signaling-a")
    );
    assert!(!b
        .acquire_lease("room:11:origin", "signaling-b", LONG_TTL)
        .await
        .unwrap());
    a.release_lease("room:11:origin", "signaling-a")
        .await
        .unwrap();
    assert!(b
        .acquire_lease("room:11:origin", "signaling-b", LONG_TTL)
        .await
        .unwrap());
    b.release_lease("room:11:origin", "signaling-b")
        .await
        .unwrap();

    let mut on_a = a.subscribe("room:11").await.unwrap();
    let mut on_b = b.subscribe("room:11").await.unwrap();
    assert_eq!(a.publish("room:11", "from-a").await.unwrap(), 2);
    assert_eq!(b.publish("room:11", "from-b").await.unwrap(), 2);
    for sub in [&mut on_a, &mut on_b] {
        assert_eq!(next(sub).await, "from-a");
        assert_eq!(next(sub).await, "from-b");
    }

    a.heartbeat(&node(NodeKind::Packager, "pkg-1", 0), LONG_TTL)
        .await
        .unwrap();
    assert_eq!(ids(b, NodeKind::Packager).await, ["pkg-1"]);
    b.remove_node(NodeKind::Packager, "pkg-1").await.unwrap();
    assert!(ids(a, NodeKind::Packager).await.is_empty());

    a.set("room:11:viewers", "5", Some(LONG_TTL)).await.unwrap();
    assert_eq!(
        b.get("room:11:viewers").await.unwrap().as_deref(),
        Some("5")
    );
    b.del("room:11:viewers").await.unwrap();
    assert_eq!(a.get("room:11:viewers").await.unwrap(), None);
}

// ------------------------------------------------------------------ expiring maps

async fn map_fields_expire_independently(bus: &impl Bus) {
    assert!(bus.map_entries("m").await.unwrap().is_empty());
    bus.map_set("m", "b", "2", LONG_TTL).await.unwrap();
    bus.map_set("m", "a", "1", SHORT_TTL).await.unwrap();
    assert_eq!(
        bus.map_entries("m").await.unwrap(),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    // A second write to a field replaces it; other writers' fields stay.
    bus.map_set("m", "b", "3", LONG_TTL).await.unwrap();
    eventually("the short-lived field expires alone", || async {
        bus.map_entries("m").await.unwrap() == [("b".to_string(), "3".to_string())]
    })
    .await;
    bus.map_remove("m", "b").await.unwrap();
    bus.map_remove("m", "never-set").await.unwrap();
    assert!(bus.map_entries("m").await.unwrap().is_empty());
    assert!(matches!(
        bus.map_set("m", "", "x", LONG_TTL).await,
        Err(BusError::InvalidArgument(_))
    ));
}

// --------------------------------------------------------------------- placement

async fn placement_answers_each_question(bus: &impl Bus) {
    let empty = placement::room(bus, "p1").await.unwrap();
    assert!(!empty.is_live());
    assert_eq!(empty.viewers(), 0);

    // Origin: an SFU node, resolved through the registry; a rival can't take it.
    bus.heartbeat(&node(NodeKind::Sfu, "sfu-a", 0), LONG_TTL)
        .await
        .unwrap();
    let a = Origin::Sfu {
        node: "sfu-a".into(),
    };
    let b = Origin::Sfu {
        node: "sfu-b".into(),
    };
    assert!(placement::claim_origin(bus, "p1", &a, LONG_TTL)
        .await
        .unwrap());
    assert!(!placement::claim_origin(bus, "p1", &b, LONG_TTL)
        .await
        .unwrap());
    assert!(!placement::renew_origin(bus, "p1", &b, LONG_TTL)
        .await
        .unwrap());
    assert!(placement::renew_origin(bus, "p1", &a, LONG_TTL)
        .await
        .unwrap());
    assert_eq!(
        placement::origin_node(bus, "p1")
            .await
            .unwrap()
            .map(|n| n.id),
        Some("sfu-a".into())
    );

    // Relays: one entry per edge, each with its parent.
    let r1 = Relay {
        node: "sfu-c".into(),
        parent: "sfu-a".into(),
        depth: 1,
    };
    let r2 = Relay {
        node: "sfu-d".into(),
        parent: "sfu-c".into(),
        depth: 2,
    };
    placement::set_relay(bus, "p1", &r2, LONG_TTL)
        .await
        .unwrap();
    placement::set_relay(bus, "p1", &r1, LONG_TTL)
        .await
        .unwrap();
    assert_eq!(
        placement::relays(bus, "p1").await.unwrap(),
        [r1.clone(), r2]
    );
    placement::remove_relay(bus, "p1", "sfu-d").await.unwrap();

    // Packager: a lease.
    assert!(placement::claim_packager(bus, "p1", "pkg-a", LONG_TTL)
        .await
        .unwrap());
    assert!(!placement::claim_packager(bus, "p1", "pkg-b", LONG_TTL)
        .await
        .unwrap());
    assert!(placement::renew_packager(bus, "p1", "pkg-a", LONG_TTL)
        .await
        .unwrap());

    // Viewers: per node, summed; a node reporting 0 drops out.
    placement::set_viewers(bus, "p1", "sfu-a", 3).await.unwrap();
    placement::set_viewers(bus, "p1", "sfu-c", 5).await.unwrap();
    placement::set_viewers(bus, "p1", "pkg-a", 2).await.unwrap();
    placement::set_viewers(bus, "p1", "sfu-a", 4).await.unwrap();
    assert_eq!(placement::viewers(bus, "p1").await.unwrap(), 11);
    placement::set_viewers(bus, "p1", "pkg-a", 0).await.unwrap();

    let room = placement::room(bus, "p1").await.unwrap();
    assert!(room.is_live());
    assert_eq!(room.origin, Some(a.clone()));
    assert_eq!(room.relays, [r1]);
    assert_eq!(room.packager.as_deref(), Some("pkg-a"));
    assert_eq!(room.viewers(), 9);

    placement::release_origin(bus, "p1", &b).await.unwrap();
    assert!(placement::origin(bus, "p1").await.unwrap().is_some());
    placement::release_origin(bus, "p1", &a).await.unwrap();
    placement::release_packager(bus, "p1", "pkg-a")
        .await
        .unwrap();
    assert_eq!(placement::origin(bus, "p1").await.unwrap(), None);
    assert_eq!(placement::packager(bus, "p1").await.unwrap(), None);
    bus.remove_node(NodeKind::Sfu, "sfu-a").await.unwrap();
}

async fn p2p_origin_is_live_without_an_sfu(bus: &impl Bus) {
    let p2p = Origin::P2p {
        broadcaster: "c42".into(),
    };
    assert!(placement::claim_origin(bus, "p2", &p2p, LONG_TTL)
        .await
        .unwrap());
    let room = placement::room(bus, "p2").await.unwrap();
    assert!(room.is_live());
    assert_eq!(
        room.origin.as_ref().and_then(Origin::broadcaster),
        Some("c42")
    );
    // No SFU to send viewers to.
    assert_eq!(placement::origin_node(bus, "p2").await.unwrap(), None);
    placement::release_origin(bus, "p2", &p2p).await.unwrap();
}

async fn room_events_round_trip(bus: &impl Bus) {
    let mut sub = events::subscribe(bus, "e1").await.unwrap();
    // Foreign or malformed messages are skipped, not fatal.
    bus.publish("room:e1:events", "not json").await.unwrap();
    let sent = [
        RoomEvent::State {
            room: "e1".into(),
            live: true,
            viewers: 2,
            broadcaster: Some("c1".into()),
        },
        RoomEvent::EndPublish {
            room: "e1".into(),
            reason: "room_deleted".into(),
        },
    ];
    for ev in &sent {
        events::publish(bus, "e1", ev).await.unwrap();
    }
    for ev in sent {
        let got = timeout(PATIENCE, sub.recv()).await.unwrap();
        assert_eq!(got, Some(ev));
    }
}

async fn session_records_round_trip(bus: &impl Bus) {
    let rec = placement::SessionRecord {
        sfu_url: "http://10.0.0.5:7001".into(),
        room: "r".into(),
        kind: "whep".into(),
        ended: false,
    };
    placement::record_session(bus, "abc", &rec).await.unwrap();
    assert_eq!(
        placement::session(bus, "abc").await.unwrap(),
        Some(rec.clone())
    );
    placement::end_session(bus, "abc").await.unwrap();
    let ended = placement::SessionRecord { ended: true, ..rec };
    assert_eq!(placement::session(bus, "abc").await.unwrap(), Some(ended));
    placement::end_session(bus, "nosuch").await.unwrap();
    assert_eq!(placement::session(bus, "nosuch").await.unwrap(), None);
}

async fn live_rooms_follow_origins(bus: &impl Bus) {
    let sfu = Origin::Sfu {
        node: "sfu-1".into(),
    };
    let other = Origin::Sfu {
        node: "sfu-2".into(),
    };
    assert!(placement::live_rooms(bus).await.unwrap().is_empty());
    let ttl = Duration::from_millis(300);
    assert!(placement::claim_origin(bus, "b", &sfu, ttl).await.unwrap());
    assert!(
        placement::claim_origin(bus, "a", &sfu, Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert_eq!(placement::live_rooms(bus).await.unwrap(), vec!["a", "b"]);
    // A release by a non-holder leaves the room live.
    placement::release_origin(bus, "a", &other).await.unwrap();
    assert_eq!(placement::live_rooms(bus).await.unwrap(), vec!["a", "b"]);
    placement::release_origin(bus, "a", &sfu).await.unwrap();
    assert_eq!(placement::live_rooms(bus).await.unwrap(), vec!["b"]);
    // Renewal keeps it; an origin that stops renewing (a dead node) drops off.
    assert!(placement::renew_origin(bus, "b", &sfu, ttl).await.unwrap());
    sleep(Duration::from_millis(600)).await;
    assert!(placement::live_rooms(bus).await.unwrap().is_empty());
}

/// A p2p room's announced addresses: per connection and side, bounded per connection
/// and per room, one connection's leaving keeps another's announcement of the same
/// address.
async fn p2p_peer_addresses_are_bounded_and_forgotten(bus: &impl Bus) {
    use skylark_auth::P2pSide::{Broadcaster, Viewer};
    use skylark_bus::peers::{self, RoomAddrs, MAX_PER_CONNECTION, MAX_PER_ROOM};
    use std::collections::HashSet;
    use std::net::IpAddr;
    let a: IpAddr = "198.51.100.1".parse().unwrap();
    let b: IpAddr = "2001:db8::1".parse().unwrap();
    let c: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(
        peers::record(bus, "r", "c1", Viewer, &[a, b])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        peers::record(bus, "r", "c2", Viewer, &[a]).await.unwrap(),
        1
    );
    assert_eq!(
        peers::record(bus, "r", "pub", Broadcaster, &[c])
            .await
            .unwrap(),
        1
    );
    let want = RoomAddrs {
        broadcaster: HashSet::from([c]),
        viewers: HashSet::from([a, b]),
    };
    assert_eq!(peers::ips(bus, "r").await.unwrap(), want);
    assert_eq!(
        peers::ips(bus, "other").await.unwrap(),
        RoomAddrs::default()
    );
    peers::forget(bus, "r", "c1", &[a, b]).await.unwrap();
    assert_eq!(
        peers::ips(bus, "r").await.unwrap().viewers,
        HashSet::from([a])
    );

    let many: Vec<IpAddr> = (0..=255u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let n = peers::record(bus, "big", "c", Viewer, &many).await.unwrap();
    assert_eq!(n, MAX_PER_CONNECTION);
    for i in 0..MAX_PER_ROOM {
        peers::record(bus, "full", &format!("c{i}"), Viewer, &many[..1])
            .await
            .unwrap();
    }
    assert_eq!(
        peers::record(bus, "full", "late", Broadcaster, &[a])
            .await
            .unwrap(),
        0
    );
    assert!(!peers::ips(bus, "full")
        .await
        .unwrap()
        .broadcaster
        .contains(&a));
    // A connection already there still renews its own.
    let renewed = peers::record(bus, "full", "c0", Viewer, &many[..1])
        .await
        .unwrap();
    assert_eq!(renewed, 1);
}

// ---------------------------------------------------------------------- backends

fn redis_url() -> String {
    std::env::var("SKYLARK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis bus under `prefix`, or `None` (test skipped) when Redis is down outside CI.
async fn redis_bus(prefix: &str) -> Option<AnyBus> {
    let url = redis_url();
    let config = BusConfig {
        redis_url: Some(url.clone()),
        key_prefix: prefix.to_owned(),
        ..BusConfig::default()
    };
    match connect_with(&config).await {
        Ok(bus) => Some(bus),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true requires Redis at {url} (set SKYLARK_TEST_REDIS_URL): {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping Redis test: {e}. Start one with `redis-server --daemonize yes --port 6379 --save '' --appendonly no` or set SKYLARK_TEST_REDIS_URL"
            );
            None
        }
    }
}

fn test_prefix() -> String {
    format!("skylark-test:{}:", uuid::Uuid::new_v4())
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&skylark_bus::InProcessBus::new()).await;
                }
            )*

            #[tokio::test]
            async fn two_handles_see_each_other() {
                // In one binary, every service holds a clone of the same bus.
                let bus = skylark_bus::connect(None).await.unwrap();
                assert_eq!(bus.backend(), "in-process");
                super::two_handles_see_each_other(&bus, &bus.clone()).await;
            }
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(bus) = super::redis_bus(&super::test_prefix()).await {
                        super::$case(&bus).await;
                    }
                }
            )*

            #[tokio::test]
            async fn two_handles_see_each_other() {
                // Two independent connections, as two signaling processes would have.
                let prefix = super::test_prefix();
                let (Some(a), Some(b)) =
                    (super::redis_bus(&prefix).await, super::redis_bus(&prefix).await)
                else {
                    return;
                };
                assert_eq!(a.backend(), "redis");
                super::two_handles_see_each_other(&a, &b).await;
            }
        }
    };
}

contract!(
    live_rooms_follow_origins,
    heartbeat_lists_nodes_by_kind,
    silent_node_vanishes_after_ttl,
    lease_is_exclusive,
    renewal_keeps_lease_for_its_holder_only,
    expired_lease_can_be_taken_over,
    release_by_non_holder_is_a_no_op,
    kv_set_get_del_and_ttl,
    zero_ttl_and_empty_names_are_refused,
    publish_reaches_every_subscriber_in_order,
    dropped_subscription_receives_nothing,
    oversized_payload_is_refused,
    map_fields_expire_independently,
    placement_answers_each_question,
    p2p_origin_is_live_without_an_sfu,
    room_events_round_trip,
    session_records_round_trip,
    p2p_peer_addresses_are_bounded_and_forgotten,
);

/// Every subscription of a bus shares one Redis pub/sub connection (a signaling pod with
/// thousands of WebSocket clients holds one, not thousands), and a channel dropped by
/// its last subscriber and taken again keeps delivering.
#[tokio::test]
async fn redis_subscriptions_share_one_connection() {
    let prefix = test_prefix();
    let Some(bus) = redis_bus(&prefix).await else {
        return;
    };
    let mut subs = Vec::new();
    for i in 0..120 {
        subs.push(bus.subscribe(&format!("room-{i}")).await.unwrap());
        // Two subscribers on some channels.
        if i % 10 == 0 {
            subs.push(bus.subscribe(&format!("room-{i}")).await.unwrap());
        }
    }
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Other tests may hold pub/sub connections; ours is the one with our 120 channels.
    let ours: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix("sub="))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 120)
        })
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one connection carries every channel:\n{list}"
    );

    // Both subscribers of a channel get its messages; the others get nothing.
    bus.publish("room-0", "hello").await.unwrap();
    for s in subs.iter_mut().take(2) {
        let m = timeout(Duration::from_secs(5), s.recv()).await.unwrap();
        assert_eq!(m.as_deref(), Some("hello"));
    }
    assert!(timeout(Duration::from_millis(200), subs[2].recv())
        .await
        .is_err());

    // Last subscriber gone, then the channel taken again: still delivered.
    drop(subs);
    let mut again = bus.subscribe("room-5").await.unwrap();
    sleep(Duration::from_millis(200)).await;
    bus.publish("room-5", "back").await.unwrap();
    let m = timeout(Duration::from_secs(5), again.recv()).await.unwrap();
    assert_eq!(m.as_deref(), Some("back"));
}
