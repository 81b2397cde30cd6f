//! Every REST endpoint through the real router and a real database: happy paths,
//! authorization, bad input (with the database unchanged afterwards).

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::TestDb;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use skylark_api::{ApiConfig, ApiState, RateLimit};
use skylark_auth::Role;
use std::time::Duration;
use tower::ServiceExt;

struct App {
    router: Router,
    state: ApiState,
    db: TestDb,
}

async fn app_with(db: TestDb, tweak: impl FnOnce(&mut ApiConfig)) -> App {
    let mut config = ApiConfig::for_tests(&db.url, "127.0.0.1:0".parse().unwrap());
    tweak(&mut config);
    let bus = skylark_bus::connect(None).await.unwrap();
    let state = ApiState::new(db.store.clone(), config, bus);
    App {
        router: skylark_api::router(state.clone()),
        state,
        db,
    }
}

async fn app() -> App {
    app_with(TestDb::sqlite().await, |_| {}).await
}

impl App {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let raw = body.map(|b| b.to_string());
        self.raw(method, uri, token, raw.as_deref(), "application/json")
            .await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        ctype: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, ctype)
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    async fn signup(&self, email: &str) -> (String, String) {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": "hunter2hunter2", "display_name": "Dee"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["user"]["id"].as_str().unwrap().into(),
            v["access_token"].as_str().unwrap().into(),
        )
    }

    async fn create_room(&self, token: &str, visibility: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/rooms",
                Some(token),
                Some(json!({"title": "My Show", "visibility": visibility, "mode": "sfu"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[tokio::test]
async fn signup_login_me() {
    let app = app().await;
    let (id, token) = app.signup("Dee@Example.com").await;
    let (s, me) = app
        .call(Method::GET, "/api/v1/me", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["email"], "dee@example.com");
    assert!(me.get("password_hash").is_none());

    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email":"dee@example.com","password":"hunter2hunter2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["expires_in"], 3600);
    let (s, _) = app
        .call(Method::GET, "/api/v1/me", v["access_token"].as_str(), None)
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email":"dee@example.com","password":"wrong-password"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email":"nobody@example.com","password":"hunter2hunter2"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/auth/signup",
            None,
            Some(json!({"email":"DEE@example.com","password":"another-pass","display_name":"X"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"));
    assert_eq!(app.db.store.counts().await.unwrap().0, 1);
}

#[tokio::test]
async fn room_lifecycle() {
    let app = app().await;
    let (uid, token) = app.signup("a@example.com").await;
    let created = app.create_room(&token, "public").await;
    let room_id = created["room"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["room"]["owner_id"], uid.as_str());
    assert_eq!(created["room"]["live"], false);
    assert_eq!(created["room"]["visibility"], "public");
    assert!(created["stream_key"]
        .as_str()
        .unwrap()
        .starts_with("sk_live_"));
    assert_eq!(
        created["ingest"]["whip_url"],
        format!("http://127.0.0.1:8080/whip/{room_id}")
    );
    assert_eq!(created["ingest"]["rtmp_url"], "rtmp://127.0.0.1:1935/live");

    // Anyone reads a public room; by slug too.
    let (s, v) = app
        .call(Method::GET, &format!("/api/v1/rooms/{room_id}"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["title"].as_str(),
            v["live"].as_bool(),
            v["viewers"].as_u64()
        ),
        (Some("My Show"), Some(false), Some(0))
    );
    let slug = v["slug"].as_str().unwrap();
    assert!(slug.starts_with("my-show-"));
    let (s, _) = app
        .call(Method::GET, &format!("/api/v1/rooms/{slug}"), None, None)
        .await;
    assert_eq!(s, StatusCode::OK);

    // Listing: not live, so not on the public list; on the owner's list.
    let (s, v) = app.call(Method::GET, "/api/v1/rooms", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["rooms"], json!([]));
    let (s, v) = app
        .call(Method::GET, "/api/v1/rooms?mine=1", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["rooms"][0]["id"], room_id.as_str());

    // Patch.
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rooms/{room_id}"),
            Some(&token),
            Some(json!({"title":"Renamed","visibility":"unlisted"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["title"].as_str(),
            v["visibility"].as_str(),
            v["mode"].as_str()
        ),
        (Some("Renamed"), Some("unlisted"), Some("sfu"))
    );

    // Rotate: a different key, shown once.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{room_id}/stream-key"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(v["stream_key"], created["stream_key"]);
    assert_eq!(app.db.store.counts().await.unwrap(), (1, 1, 2));

    // Delete.
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rooms/{room_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app
        .call(Method::GET, &format!("/api/v1/rooms/{room_id}"), None, None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(app.db.store.counts().await.unwrap(), (1, 0, 0));
}

#[tokio::test]
async fn live_state_comes_from_the_bus() {
    let app = app().await;
    let (_, token) = app.signup("live@example.com").await;
    let room = app.create_room(&token, "public").await;
    let id = room["room"]["id"].as_str().unwrap();
    let bus = app.state.presence.bus().clone();
    use skylark_bus::events::{self, RoomEvent};
    use skylark_bus::placement::{self, Origin};
    let origin = Origin::Sfu {
        node: "sfu-1".into(),
    };
    placement::claim_origin(&bus, id, &origin, Duration::from_secs(30))
        .await
        .unwrap();
    // Viewers are counted per serving node and summed.
    placement::set_viewers(&bus, id, "sfu-1", 3).await.unwrap();
    placement::set_viewers(&bus, id, "sfu-2", 4).await.unwrap();
    let (_, v) = app.call(Method::GET, "/api/v1/rooms", None, None).await;
    assert_eq!(v["rooms"][0]["id"], id);
    assert_eq!(
        (
            v["rooms"][0]["live"].as_bool(),
            v["rooms"][0]["viewers"].as_u64()
        ),
        (Some(true), Some(7))
    );

    // Rotating the key tells the room's publisher to stop.
    let mut events = events::subscribe(&bus, id).await.unwrap();
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{id}/stream-key"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let ev = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        RoomEvent::EndPublish {
            room: id.to_owned(),
            reason: "stream_key_rotated".into()
        }
    );
}

#[tokio::test]
async fn authorization_cases() {
    let app = app().await;
    let (_, alice) = app.signup("alice@example.com").await;
    let (_, bob) = app.signup("bob@example.com").await;
    let private = app.create_room(&alice, "private").await;
    let pid = private["room"]["id"].as_str().unwrap().to_string();
    let before = app.db.store.counts().await.unwrap();

    // No token.
    for (m, uri, body) in [
        (Method::GET, "/api/v1/me".to_string(), None),
        (
            Method::POST,
            "/api/v1/rooms".to_string(),
            Some(json!({"title":"x"})),
        ),
        (Method::GET, "/api/v1/rooms?mine=1".to_string(), None),
        (
            Method::PATCH,
            format!("/api/v1/rooms/{pid}"),
            Some(json!({"title":"x"})),
        ),
        (Method::DELETE, format!("/api/v1/rooms/{pid}"), None),
        (
            Method::POST,
            format!("/api/v1/rooms/{pid}/stream-key"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/rooms/{pid}/viewer-tokens"),
            Some(json!({})),
        ),
        (Method::GET, format!("/api/v1/rooms/{pid}"), None),
    ] {
        let (s, v) = app.call(m.clone(), &uri, None, body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{m} {uri}"
        );
    }

    // Expired and forged tokens.
    let expired = app
        .state
        .tokens
        .issue_expired("x", Role::Creator, Duration::from_secs(10));
    let (s, v) = app
        .call(Method::GET, "/api/v1/me", Some(&expired), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    let forged = skylark_auth::TokenIssuer::new(b"not-the-server-secret-not-the-server").issue(
        "x",
        Role::Creator,
        vec![],
        Duration::from_secs(60),
    );
    let (s, _) = app
        .call(Method::GET, "/api/v1/me", Some(&forged), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app.raw(Method::GET, "/api/v1/me", None, None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Someone else's room.
    for (m, uri, body) in [
        (
            Method::PATCH,
            format!("/api/v1/rooms/{pid}"),
            Some(json!({"title":"mine now"})),
        ),
        (Method::DELETE, format!("/api/v1/rooms/{pid}"), None),
        (
            Method::POST,
            format!("/api/v1/rooms/{pid}/stream-key"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/rooms/{pid}/viewer-tokens"),
            Some(json!({})),
        ),
        (Method::GET, format!("/api/v1/rooms/{pid}"), None),
    ] {
        let (s, v) = app.call(m.clone(), &uri, Some(&bob), body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{m} {uri}"
        );
    }
    assert_eq!(
        app.db.store.counts().await.unwrap(),
        before,
        "nothing changed"
    );
    let (_, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/rooms/{pid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(v["title"], "My Show");

    // Private room: a viewer token opens it, for that room only.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{pid}/viewer-tokens"),
            Some(&alice),
            Some(json!({"ttl_s": 120})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["expires_in"], 120);
    let viewer = v["token"].as_str().unwrap().to_string();
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/rooms/{pid}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let other = app.create_room(&bob, "private").await;
    let oid = other["room"]["id"].as_str().unwrap();
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/rooms/{oid}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A viewer token is not a creator token.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/rooms",
            Some(&viewer),
            Some(json!({"title":"x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{pid}/viewer-tokens"),
            Some(&alice),
            Some(json!({"ttl_s": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let app = app().await;
    let (_, token) = app.signup("c@example.com").await;
    let before = app.db.store.counts().await.unwrap();
    let cases: Vec<(&str, Option<&str>, &str, StatusCode, &str)> = vec![
        (
            "/api/v1/rooms",
            Some("{not json"),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/rooms",
            Some("{\"title\": 5}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/rooms",
            Some("{}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/rooms",
            Some("{\"title\":\"x\",\"visibility\":\"secret\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/rooms",
            Some("{\"title\":\"   \"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/rooms",
            Some("{\"title\":\"x\"}"),
            "text/plain",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/auth/signup",
            Some("{\"email\":\"nope\",\"password\":\"longenough\",\"display_name\":\"x\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/auth/signup",
            Some("{\"email\":\"d@example.com\",\"password\":\"short\",\"display_name\":\"x\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/auth/signup",
            Some("{\"email\":\"d@example.com\",\"password\":\"longenough\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        // Found by tests/openapi_fuzz.rs: serde fills a struct from an array.
        (
            "/api/v1/rooms",
            Some("[\"a title\"]"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        // PostgreSQL can't store a NUL: refused on every database alike.
        (
            "/api/v1/rooms",
            Some("{\"title\":\"a\\u0000b\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/auth/signup",
            Some("{\"email\":\"e@example.com\",\"password\":\"longenough\",\"display_name\":\"\\u0000\"}"),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (uri, body, ctype, status, c) in cases {
        let (s, v) = app.raw(Method::POST, uri, Some(&token), body, ctype).await;
        assert_eq!((s, code(&v)), (status, c), "{uri} {body:?}");
    }
    // Oversized body.
    let huge = format!("{{\"title\":\"{}\"}}", "x".repeat(200_000));
    let (s, v) = app
        .raw(
            Method::POST,
            "/api/v1/rooms",
            Some(&token),
            Some(&huge),
            "application/json",
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Unknown room, unknown route.
    let (s, v) = app
        .call(
            Method::PATCH,
            "/api/v1/rooms/room_nope",
            Some(&token),
            Some(json!({"title":"x"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/rooms/room_nope/stream-key",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = app
        .call(Method::GET, "/api/v1/nothing-here", None, None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    // An id that is not UTF-8 names no room.
    let (s, v) = app
        .call(Method::DELETE, "/api/v1/rooms/%ff", Some(&token), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    // A query string that does not parse: 400 in the JSON shape, as documented.
    let (s, v) = app
        .call(
            Method::GET,
            "/api/v1/rooms?mine=1&mine=0",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    assert_eq!(
        app.db.store.counts().await.unwrap(),
        before,
        "no change in the database"
    );
}

#[tokio::test]
async fn login_and_signup_are_rate_limited() {
    let app = app_with(TestDb::sqlite().await, |c| {
        c.auth_rate_limit = RateLimit {
            burst: 3,
            per_minute: 1,
        };
    })
    .await;
    let body = json!({"email":"x@example.com","password":"whatever123"});
    for _ in 0..3 {
        let (s, _) = app
            .call(Method::POST, "/api/v1/auth/login", None, Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let req = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get(header::RETRY_AFTER).is_some());
}

#[tokio::test]
async fn the_live_list_is_built_from_live_rooms_not_the_newest_ones() {
    let app = app_with(TestDb::sqlite().await, |c| c.max_rooms_per_creator = 1000).await;
    let (_, token) = app.signup("many@example.com").await;
    let live = app.create_room(&token, "public").await;
    let live_id = live["room"]["id"].as_str().unwrap().to_string();
    let hidden = app.create_room(&token, "unlisted").await;
    let hidden_id = hidden["room"]["id"].as_str().unwrap().to_string();
    // 600 idle public rooms, all newer than the live one.
    for _ in 0..600 {
        app.create_room(&token, "public").await;
    }
    let bus = app.state.presence.bus().clone();
    use skylark_bus::placement::{self, Origin};
    let origin = Origin::Sfu {
        node: "sfu-1".into(),
    };
    for id in [&live_id, &hidden_id] {
        placement::claim_origin(&bus, id, &origin, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let (_, v) = app.call(Method::GET, "/api/v1/rooms", None, None).await;
    let listed: Vec<&str> = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![live_id.as_str()], "only the live public room");
    // Offline again: off the list.
    placement::release_origin(&bus, &live_id, &origin)
        .await
        .unwrap();
    let (_, v) = app.call(Method::GET, "/api/v1/rooms", None, None).await;
    assert_eq!(v["rooms"].as_array().unwrap().len(), 0, "{v}");
}

#[tokio::test]
async fn a_creator_holds_at_most_the_room_quota() {
    let app = app_with(TestDb::sqlite().await, |c| c.max_rooms_per_creator = 2).await;
    let (_, token) = app.signup("quota@example.com").await;
    let first = app.create_room(&token, "public").await;
    app.create_room(&token, "public").await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/rooms",
            Some(&token),
            Some(json!({"title": "one too many"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("quota"),
        "{v}"
    );
    // Deleting one makes room for another; other creators are not affected.
    let id = first["room"]["id"].as_str().unwrap();
    let uri = format!("/api/v1/rooms/{id}");
    let (s, _) = app.call(Method::DELETE, &uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.create_room(&token, "public").await;
    let (_, other) = app.signup("other@example.com").await;
    app.create_room(&other, "private").await;
}

/// The router and the document come from one registration; this holds them to it: a
/// route added without its operation (or an operation without its route) fails here.
#[tokio::test]
async fn openapi_document_lists_exactly_the_routes() {
    let app = app().await;
    let (s, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let documented = skylark_telemetry::routes::documented(&doc);
    let answered = skylark_telemetry::routes::answered(&app.router, "/api/v1").await;
    assert!(
        answered.contains(&("POST".into(), "/api/v1/rooms/{id}/viewer-tokens".into())),
        "the router's routes were not found: {answered:?}"
    );
    assert_eq!(answered, documented, "router (left) vs document (right)");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn same_http_suite_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let app = app_with(db, |_| {}).await;
    let (_, token) = app.signup("pg@example.com").await;
    let room = app.create_room(&token, "public").await;
    let id = room["room"]["id"].as_str().unwrap();
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{id}/stream-key"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Text PostgreSQL can't hold (a NUL), where the fuzzer sent it: no 500s.
    let (s, _) = app
        .call(Method::GET, "/api/v1/rooms/a%00b", None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "pg\u{0}@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // JSON Schema's integers include `82.0`.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{id}/viewer-tokens"),
            Some(&token),
            Some(json!({"ttl_s": 82.0})),
        )
        .await;
    assert_eq!((s, &v["expires_in"]), (StatusCode::CREATED, &json!(82)));
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rooms/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.db.store.counts().await.unwrap(), (1, 0, 0));
    app.db.cleanup().await;
}

/// Webhook endpoints: what registration accepts and refuses, the per-creator limit,
/// the secret shown once, and that another creator's endpoint is not found.
#[tokio::test]
async fn webhook_endpoints_validate_limit_and_belong_to_their_creator() {
    let app = app().await;
    let (_, token) = app.signup("hooks@example.com").await;
    let post = |body: Value| app.call(Method::POST, "/api/v1/webhooks", Some(&token), Some(body));
    for (body, why) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["room.live"]}),
            "not http(s)",
        ),
        (
            json!({"url": "https://", "events": ["room.live"]}),
            "no host",
        ),
        (
            json!({"url": "https://a b/", "events": ["room.live"]}),
            "a blank",
        ),
        (
            json!({"url": "https://example.com:123456/", "events": ["room.live"]}),
            "a long port",
        ),
        (
            json!({"url": format!("https://example.com/{}", "x".repeat(2048)), "events": ["room.live"]}),
            "too long",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "no events",
        ),
        (
            json!({"url": "https://example.com/", "events": ["room.exploded"]}),
            "unknown event",
        ),
        (
            json!({"url": "https://example.com/", "events": ["room.live"], "x": 1}),
            "unknown field",
        ),
    ] {
        let (s, v) = post(body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {v}");
    }
    let (s, v) = post(json!({"url": "https://hooks.example.com:8443/skylark?x=1", "events": ["room.viewers", "recording.ready", "room.viewers"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["secret"].as_str().unwrap().starts_with("whsec_"), "{v}");
    assert_eq!(
        v["events"],
        json!(["recording.ready", "room.viewers"]),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    for _ in 1..10 {
        let (s, v) = post(json!({"url": "http://example.com/", "events": ["room.live"]})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = post(json!({"url": "http://example.com/", "events": ["room.live"]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    let (s, list) = app
        .call(Method::GET, "/api/v1/webhooks", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 10);
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    assert_eq!(list["webhooks"][0]["status"]["pending"], 0, "{list}");

    // Another creator sees none of them, and can't read or delete them.
    let (_, other) = app.signup("other-hooks@example.com").await;
    let (_, theirs) = app
        .call(Method::GET, "/api/v1/webhooks", Some(&other), None)
        .await;
    assert_eq!(theirs["webhooks"], json!([]));
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let one = format!("/api/v1/webhooks/{id}");
    let (s, _) = app.call(Method::GET, &deliveries, Some(&other), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.call(Method::DELETE, &one, Some(&other), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app.call(Method::GET, &deliveries, Some(&token), None).await;
    assert_eq!((s, &v["deliveries"]), (StatusCode::OK, &json!([])));
    let (s, _) = app.call(Method::DELETE, &one, Some(&token), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call(Method::DELETE, &one, Some(&token), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.call(Method::GET, "/api/v1/webhooks", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
