//! RoomDirectory over real gRPC: stream-key rotation, play authorization, and no
//! stream key in any log line (every log of the process is captured at TRACE).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use skylark_api::ApiConfig;
use skylark_proto::rooms::v1::authorize_publish_request::Credential;
use skylark_proto::rooms::v1::room_directory_client::RoomDirectoryClient;
use skylark_proto::rooms::v1::{
    AuthorizePlayRequest, AuthorizePublishRequest, CheckPublishGrantsRequest, GetRoomRequest,
    PublishGrantRef,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(
            req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
                .unwrap(),
        )
        .await
        .unwrap();
    let s = resp.status();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn publish_with_key(key: &str) -> AuthorizePublishRequest {
    AuthorizePublishRequest {
        credential: Some(Credential::StreamKey(key.into())),
        room_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_over_grpc_and_keys_never_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let config = ApiConfig::for_tests(&url, "127.0.0.1:0".parse().unwrap());
    let bus = skylark_bus::connect(None).await.unwrap();
    let shutdown = CancellationToken::new();
    let part = skylark_api::start(config, bus, shutdown.clone())
        .await
        .unwrap();
    let grpc_addr = part.grpc_addr.unwrap();
    let router = part.router.clone();

    let (s, v) = call(
        &router,
        "POST",
        "/api/v1/auth/signup",
        None,
        Some(json!({"email":"k@example.com","password":"password123","display_name":"K"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let token = v["access_token"].as_str().unwrap().to_string();
    let (_, v) = call(
        &router,
        "POST",
        "/api/v1/rooms",
        Some(&token),
        Some(json!({"title":"Keys","visibility":"private"})),
    )
    .await;
    let room_id = v["room"]["id"].as_str().unwrap().to_string();
    let old_key = v["stream_key"].as_str().unwrap().to_string();

    // Built as services build theirs: it carries this process's internal secret.
    let mut client = RoomDirectoryClient::new(
        skylark_telemetry::traced_channel(&format!("http://{grpc_addr}")).unwrap(),
    );
    let ok = client
        .authorize_publish(publish_with_key(&old_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.room.unwrap().id, room_id);
    let old_key_id = ok.key_id;

    let (s, v) = call(
        &router,
        "POST",
        &format!("/api/v1/rooms/{room_id}/stream-key"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let new_key = v["stream_key"].as_str().unwrap().to_string();

    let err = client
        .authorize_publish(publish_with_key(&old_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("rotated"), "{}", err.message());
    let ok = client
        .authorize_publish(publish_with_key(&new_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.room.as_ref().unwrap().id, room_id);
    assert_ne!(ok.key_id, old_key_id, "a new key generation");
    let ok_new_key_id = ok.key_id.clone();

    // The key names its room: another room id is refused.
    let (_, other) = call(
        &router,
        "POST",
        "/api/v1/rooms",
        Some(&token),
        Some(json!({"title":"Other"})),
    )
    .await;
    let err = client
        .authorize_publish(AuthorizePublishRequest {
            credential: Some(Credential::StreamKey(new_key.clone())),
            room_id: other["room"]["id"].as_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The owner's JWT may publish too.
    let ok = client
        .authorize_publish(AuthorizePublishRequest {
            credential: Some(Credential::AccessToken(token.clone())),
            room_id: room_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.room.as_ref().unwrap().id, room_id);
    let owner_key_id = ok.key_id;

    // Grants as SFUs re-check them: the rotated generation is stale, the new one and the
    // owner's are current; another user's owner grant and a foreign room are not.
    let grant = |room: &str, key: &str| PublishGrantRef {
        room_id: room.into(),
        key_id: key.into(),
    };
    let current = client
        .check_publish_grants(CheckPublishGrantsRequest {
            grants: vec![
                grant(&room_id, &old_key_id),
                grant(&room_id, &ok_new_key_id),
                grant(&room_id, &owner_key_id),
                grant(&room_id, "owner:user_someone_else"),
                grant(other["room"]["id"].as_str().unwrap(), &ok_new_key_id),
                grant("room_nope", &ok_new_key_id),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .current;
    assert_eq!(current, vec![false, true, true, false, false, false]);
    let too_many = client
        .check_publish_grants(CheckPublishGrantsRequest {
            grants: (0..1001).map(|_| grant(&room_id, &owner_key_id)).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);

    // Play: private room needs a token.
    let err = client
        .authorize_play(AuthorizePlayRequest {
            room_id: room_id.clone(),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let (_, v) = call(
        &router,
        "POST",
        &format!("/api/v1/rooms/{room_id}/viewer-tokens"),
        Some(&token),
        Some(json!({})),
    )
    .await;
    let viewer = v["token"].as_str().unwrap().to_string();
    let ok = client
        .authorize_play(AuthorizePlayRequest {
            room_id: room_id.clone(),
            token: viewer,
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().room.unwrap().id, room_id);
    let err = client
        .get_room(GetRoomRequest {
            room_id: "room_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .authorize_publish(publish_with_key("garbage"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    shutdown.cancel();
    for t in part.tasks {
        t.await.unwrap().unwrap();
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("publish authorized"), "logs were captured");
    for key in [&old_key, &new_key] {
        assert!(
            !text.contains(key.as_str()),
            "a stream key appeared in the logs"
        );
        assert!(
            !text.contains(&key[8..]),
            "a stream key's secret part appeared in the logs"
        );
    }
}
