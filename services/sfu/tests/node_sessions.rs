//! The node's shell around the core's connect timeout: a session whose client never
//! connects is dropped, its slot freed, and its record on the bus ended (no client
//! will DELETE a session it never used; a tombstone is left for a minute). The timeout itself is tested on the core with
//! simulated time (`core_sim`); here it is 1 s of real time.

use skylark_bus::placement::{self, SessionRecord};
use skylark_bus::{AnyBus, InProcessBus};
use skylark_proto::sfu::v1 as pb;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use tokio_util::sync::CancellationToken;

/// A viewer's offer from a str0m peer that will never send a datagram.
fn silent_viewer_offer() -> String {
    let mut b = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()));
    b.codec_config().add_h264(102.into(), None, true, 0x42e01f);
    let mut rtc = b.build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// A node with `config` and one silent viewer's session on it, recorded on the bus as
/// signaling records it (for PATCH/DELETE through any pod): the node's gRPC client, the
/// session id, and what keeps the node running.
async fn node_with_recorded_viewer(
    config: skylark_sfu::Config,
) -> (
    AnyBus,
    SfuNodeClient<skylark_telemetry::TracedChannel>,
    String,
    (skylark_telemetry::ServicePart, CancellationToken),
) {
    let bus = AnyBus::InProcess(InProcessBus::new());
    let shutdown = CancellationToken::new();
    let part = skylark_sfu::start(config, bus.clone(), shutdown.clone())
        .await
        .expect("SFU starts");
    let url = format!("http://{}", part.grpc_addr.expect("gRPC bound"));
    let mut sfu = SfuNodeClient::new(skylark_telemetry::traced_channel(&url).unwrap());
    let id = sfu
        .subscribe(pb::SubscribeRequest {
            room_id: "r".into(),
            offer_sdp: silent_viewer_offer(),
            upstream: None,
        })
        .await
        .expect("subscribed")
        .into_inner()
        .session_id;
    let record = SessionRecord {
        sfu_url: url,
        room: "r".into(),
        kind: "whep".into(),
        ended: false,
    };
    placement::record_session(&bus, &id, &record).await.unwrap();
    (bus, sfu, id, (part, shutdown))
}

/// Waits until session `id`'s record is a tombstone, or panics after `within`.
async fn wait_ended(bus: &AnyBus, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !placement::session(bus, id)
        .await
        .unwrap()
        .is_some_and(|r| r.ended)
    {
        assert!(
            Instant::now() < deadline,
            "session record outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_is_dropped_and_its_bus_record_ended() {
    let config = skylark_sfu::Config {
        connect_timeout: Duration::from_secs(1),
        ..skylark_sfu::Config::loopback("sfu-t", 10)
    };
    let (bus, mut sfu, id, node) = node_with_recorded_viewer(config).await;
    let stats = sfu.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.subscribers, 1);

    wait_ended(&bus, &id, Duration::from_secs(15)).await;
    let stats = sfu.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.subscribers, 0, "its slot is free");
    assert_eq!(
        sfu.close(pb::CloseRequest { session_id: id })
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "the node forgot the session"
    );
    node.1.cancel();
}

/// A session ended on the node itself (here by `Close` straight to the SFU, as a cut
/// publish grant or a failed peer ends it) ends its record: a tombstone for a client's
/// late DELETE, not the live session's day-long record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_on_the_node_ends_its_bus_record() {
    let config = skylark_sfu::Config::loopback("sfu-t", 10);
    let (bus, mut sfu, id, node) = node_with_recorded_viewer(config).await;
    sfu.close(pb::CloseRequest {
        session_id: id.clone(),
    })
    .await
    .expect("closed");

    wait_ended(&bus, &id, Duration::from_secs(5)).await;
    node.1.cancel();
}
