//! Internal gRPC is authenticated: every service's gRPC server (the api's RoomDirectory,
//! the SFU's SfuNode; the packager serves none) refuses a call without the shared
//! secret or with a wrong one (`UNAUTHENTICATED`, counted in metrics) and serves the
//! right one (and, during a rotation, the second secret it is told to accept); a
//! single-service target started without the secret refuses to start;
//! the all-in-one needs no setup and keeps its generated secret in the data dir.

mod common;

use common::*;
use skylark_proto::rooms::v1::room_directory_client::RoomDirectoryClient;
use skylark_proto::rooms::v1::GetRoomRequest;
use skylark_proto::sfu::v1::sfu_node_client::SfuNodeClient;
use skylark_proto::sfu::v1::StatsRequest;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

/// A channel whose calls carry `secret` as a bearer token (`None`: no header at all).
async fn channel(addr: &str, secret: Option<&str>) -> InterceptedService<Channel, Auth> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let header: Option<tonic::metadata::MetadataValue<_>> =
        secret.map(|s| format!("Bearer {s}").parse().unwrap());
    let auth: Auth = Box::new(move |mut req| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    });
    InterceptedService::new(ch, auth)
}

async fn get_room(addr: &str, secret: Option<&str>) -> Result<(), tonic::Status> {
    let mut c = RoomDirectoryClient::new(channel(addr, secret).await);
    let req = GetRoomRequest {
        room_id: "room_nope".into(),
    };
    c.get_room(req).await.map(|_| ())
}

async fn sfu_stats(addr: &str, secret: Option<&str>) -> Result<(), tonic::Status> {
    let mut c = SfuNodeClient::new(channel(addr, secret).await);
    c.stats(StatsRequest {}).await.map(|_| ())
}

fn assert_unauthenticated(r: Result<(), tonic::Status>, what: &str) {
    let status = r.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains("SKYLARK_INTERNAL_SECRET"),
        "{what}: the message says what to set: {status:?}"
    );
}

/// One refused call without a header and one with a wrong secret were counted.
async fn assert_refusals_counted(sk: &Skylark) {
    let text = sk.metrics().await;
    for reason in ["missing", "wrong"] {
        let series = format!("skylark_grpc_unauthenticated_total{{reason=\"{reason}\"}} 1");
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
}

const WRONG: &str = "a-wrong-internal-secret-a-wrong-internal-secret";

/// A single-service `target` serving gRPC on a free loopback port: it and that address.
async fn start_grpc(target: &'static str) -> (Skylark, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let sk = Skylark::start_with(Options {
        target: Some(target),
        env: [("SKYLARK_GRPC_ADDR".to_string(), grpc.clone())].into(),
        ..Default::default()
    })
    .await;
    (sk, grpc)
}

#[tokio::test]
async fn every_internal_grpc_server_wants_the_secret() {
    let (api, api_grpc) = start_grpc("api").await;
    let (sfu, sfu_grpc) = start_grpc("sfu").await;

    assert_unauthenticated(get_room(&api_grpc, None).await, "api, no secret");
    assert_unauthenticated(get_room(&api_grpc, Some(WRONG)).await, "api, wrong secret");
    let found = get_room(&api_grpc, Some(INTERNAL_SECRET)).await;
    // Past authentication: the directory itself answers (no such room).
    assert_eq!(
        found.expect_err("no such room").code(),
        tonic::Code::NotFound,
        "api, right secret"
    );
    assert_refusals_counted(&api).await;

    assert_unauthenticated(sfu_stats(&sfu_grpc, None).await, "sfu, no secret");
    assert_unauthenticated(sfu_stats(&sfu_grpc, Some(WRONG)).await, "sfu, wrong secret");
    sfu_stats(&sfu_grpc, Some(INTERNAL_SECRET))
        .await
        .expect("sfu, right secret");
    assert_refusals_counted(&sfu).await;
}

#[tokio::test]
async fn during_a_rotation_both_secrets_are_accepted() {
    let next = "the-next-internal-secret-the-next-internal-secret";
    let api_grpc = format!("127.0.0.1:{}", free_port());
    let _api = Skylark::start_with(Options {
        target: Some("api"),
        env: [
            ("SKYLARK_GRPC_ADDR".to_string(), api_grpc.clone()),
            (
                "SKYLARK_INTERNAL_SECRET_ACCEPT".to_string(),
                next.to_string(),
            ),
        ]
        .into(),
        ..Default::default()
    })
    .await;
    for secret in [INTERNAL_SECRET, next] {
        let found = get_room(&api_grpc, Some(secret)).await;
        assert_eq!(
            found.expect_err("no such room").code(),
            tonic::Code::NotFound
        );
    }
    assert_unauthenticated(get_room(&api_grpc, Some(WRONG)).await, "a third secret");
}

#[tokio::test]
async fn a_single_service_without_the_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["api", "signaling", "sfu", "packager"] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_skylark"));
        cmd.arg(target);
        for (k, _) in std::env::vars() {
            if k.starts_with("SKYLARK_") || k == "DATABASE_URL" || k == "REDIS_URL" {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("SKYLARK_DATA_DIR", dir.path())
            .env("RUST_LOG", "off")
            // Ports nobody else uses: it must fail on the secret, before binding any.
            .env("SKYLARK_HTTP_ADDR", "127.0.0.1:1")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("exits at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{target} started without a secret");
        assert!(
            stderr.contains("SKYLARK_INTERNAL_SECRET") && stderr.contains(target),
            "{target}: the error says what to set: {stderr}"
        );
    }
}

#[tokio::test]
async fn all_in_one_generates_its_secret_and_checks_it_too() {
    let sk = Skylark::start().await;
    let secret = std::fs::read_to_string(sk.dir.join("data").join("internal_secret"))
        .expect("the generated secret is kept in the data dir");
    let api_grpc = format!(
        "127.0.0.1:{}",
        logged_port(&sk, "RoomDirectory gRPC listening")
    );
    assert_unauthenticated(get_room(&api_grpc, None).await, "all-in-one, no secret");
    let found = get_room(&api_grpc, Some(secret.trim())).await;
    assert_eq!(
        found.expect_err("no such room").code(),
        tonic::Code::NotFound
    );
    // Its own services reach one another with it: a room is created and read back
    // through signaling, which asks the api over gRPC.
    let (_, room, _) = creator_with_room(&sk.base, "public").await;
    let playback = reqwest::get(format!("{}/api/v1/rooms/{room}/playback", sk.base))
        .await
        .unwrap();
    assert_eq!(playback.status(), 200);
}
