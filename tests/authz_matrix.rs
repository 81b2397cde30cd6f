//! The authorization matrix: every endpoint of REST, WHIP, WHEP, the WebSocket, HLS, FLV
//! and the pages, for every kind of caller, on a public, an unlisted and a private room:
//! the status each gets. A REST endpoint in the OpenAPI document without a row here
//! fails the test, so a new endpoint must say who may use it.
//!
//! Callers: anonymous; another creator; a viewer token of the room; a viewer token
//! issued before the owner revoked them; an expired token; the owner. For HLS and FLV a
//! caller presents the playback token `/playback` gave it (or, refused there, its raw
//! credential). WebSocket answers map to statuses: `room`/`waiting` → 200, `error` →
//! the status of its code. Rooms are not live, so an authorized media request gets the
//! answer for "nothing to play" (404 for HLS/FLV, 409 for WHEP), not the media.

mod common;

use common::*;
use serde_json::{json, Value};
use skylark_auth::{PlaybackTokens, Role, TokenIssuer};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const JWT_SECRET: &str = "authz-matrix-jwt-secret-authz-matrix-jwt-secret";
const PLAYBACK_SECRET: &str = "authz-matrix-playback-secret-authz-matrix-playback";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    OtherCreator,
    Viewer,
    Revoked,
    Expired,
    /// Last: its DELETE removes the room.
    Owner,
}

const WHO: [Who; 6] = [
    Who::Anonymous,
    Who::OtherCreator,
    Who::Viewer,
    Who::Revoked,
    Who::Expired,
    Who::Owner,
];

const VISIBILITIES: [&str; 3] = ["public", "unlisted", "private"];

#[derive(Debug, Clone, Copy)]
enum Call {
    /// A REST call: method and OpenAPI path (`{id}` is the room).
    Rest(&'static str, &'static str),
    Whip,
    Whep,
    WsWatch,
    WsPublish,
    Hls,
    Flv,
    /// A page: its path (`{id}` is the room).
    Page(&'static str),
}

/// Expected statuses for [`WHO`] in order, per visibility in [`VISIBILITIES`] order.
type Expect = [[u16; 6]; 3];

const fn same(row: [u16; 6]) -> Expect {
    [row, row, row]
}

/// The matrix. Rows run in this order; the owner's cell of a row runs last.
fn matrix() -> Vec<(Call, Expect)> {
    use Call::*;
    //                                anon other viewer revoked expired owner
    let open_read = [
        [200, 200, 200, 200, 401, 200],
        [200, 200, 200, 200, 401, 200],
        [401, 403, 200, 403, 401, 200],
    ];
    let owner_only = |ok: u16| same([401, 403, 403, 403, 401, ok]);
    vec![
        // The document itself is public.
        (Rest("GET", "/api/v1/openapi.json"), same([200; 6])),
        (
            Rest("POST", "/api/v1/auth/signup"),
            same([201, 201, 201, 201, 201, 201]),
        ),
        // Anyone may finish a signup: only the mailed token counts, never a credential
        // (a made-up token here, so 404 for all; tests/signup_mail.rs has the 201).
        (
            Rest("POST", "/api/v1/auth/verify"),
            same([404, 404, 404, 404, 404, 404]),
        ),
        (
            Rest("POST", "/api/v1/auth/login"),
            same([200, 200, 200, 200, 200, 200]),
        ),
        (
            Rest("GET", "/api/v1/me"),
            same([401, 200, 403, 403, 401, 200]),
        ),
        (
            Rest("GET", "/api/v1/rooms"),
            same([200, 200, 200, 200, 401, 200]),
        ),
        (
            Rest("POST", "/api/v1/rooms"),
            same([401, 201, 403, 403, 401, 201]),
        ),
        (Rest("GET", "/api/v1/rooms/{id}"), open_read),
        (Rest("GET", "/api/v1/rooms/{id}/playback"), open_read),
        // Recordings are read by the room's owner (viewers play them by URL, as
        // tests/recordings.rs checks).
        (
            Rest("GET", "/api/v1/rooms/{id}/recordings"),
            owner_only(200),
        ),
        // `{id}` (a room id) names no recording: a 404 once a creator's token is accepted.
        (
            Rest("GET", "/api/v1/recordings/{id}"),
            same([401, 404, 403, 403, 401, 404]),
        ),
        (
            Rest("DELETE", "/api/v1/recordings/{id}"),
            same([401, 404, 403, 403, 401, 404]),
        ),
        (Rest("PATCH", "/api/v1/rooms/{id}"), owner_only(200)),
        (
            Rest("POST", "/api/v1/rooms/{id}/stream-key"),
            owner_only(201),
        ),
        (
            Rest("POST", "/api/v1/rooms/{id}/viewer-tokens"),
            owner_only(201),
        ),
        // Anyone but the owner is refused publishing; the owner's junk offer is a 400.
        (Whip, same([401, 403, 403, 403, 401, 400])),
        (WsPublish, same([401, 403, 403, 403, 401, 200])),
        // Authorized viewers learn the room is not live.
        (
            Whep,
            open_read.map(|r| r.map(|s| if s == 200 { 409 } else { s })),
        ),
        (WsWatch, open_read),
        // Public and unlisted HLS/FLV ignore tokens; private ones want a current one.
        (Hls, [[404; 6], [404; 6], [401, 401, 404, 403, 401, 404]]),
        (Flv, [[404; 6], [404; 6], [401, 401, 404, 403, 401, 404]]),
        // Pages are shells: what they show comes through the calls above.
        (Page("/"), same([200; 6])),
        (Page("/studio"), same([200; 6])),
        (Page("/watch/{id}"), same([200; 6])),
        (
            Rest("POST", "/api/v1/rooms/{id}/viewer-tokens/revoke"),
            owner_only(204),
        ),
        // Webhook endpoints are a creator's own, whatever the room: here `{id}` (a room
        // id) names no endpoint of anyone's, so creators get 404, never someone else's.
        (
            Rest("GET", "/api/v1/webhooks"),
            same([401, 200, 403, 403, 401, 200]),
        ),
        (
            Rest("POST", "/api/v1/webhooks"),
            same([401, 201, 403, 403, 401, 201]),
        ),
        (
            Rest("GET", "/api/v1/webhooks/{id}/deliveries"),
            same([401, 404, 403, 403, 401, 404]),
        ),
        (
            Rest("DELETE", "/api/v1/webhooks/{id}"),
            same([401, 404, 403, 403, 401, 404]),
        ),
        (Rest("DELETE", "/api/v1/rooms/{id}"), owner_only(204)),
    ]
}

/// A creator's access token.
async fn creator(base: &str) -> String {
    let v = send_json(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/auth/signup"))
            .json(&json!({
                "email": format!("m{}@example.com", unique_id()),
                "password": "password123",
                "display_name": "M",
            })),
    )
    .await;
    v["access_token"].as_str().unwrap().to_string()
}

async fn viewer_token(base: &str, owner: &str, room: &str) -> String {
    let v = send_json(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/rooms/{room}/viewer-tokens"))
            .bearer_auth(owner)
            .json(&json!({})),
    )
    .await;
    v["token"].as_str().unwrap().to_string()
}

/// The `?token=` of the HLS URL `/playback` gives `bearer`, if it gives one.
async fn playback_token(base: &str, room: &str, bearer: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/rooms/{room}/playback"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.unwrap();
    v["hls"]["url"]
        .as_str()?
        .split_once("?token=")
        .map(|(_, t)| t.to_string())
}

/// What each caller presents for one room.
struct Credentials {
    bearer: HashMap<String, String>,
    playback: HashMap<String, String>,
}

fn key(who: Who) -> String {
    format!("{who:?}")
}

async fn credentials(base: &str, owner: &str, other: &str, room: &str) -> Credentials {
    let issuer = TokenIssuer::new(JWT_SECRET.as_bytes());
    let revoked = viewer_token(base, owner, room).await;
    let revoked_playback = playback_token(base, room, &revoked).await;
    let revoke =
        reqwest::Client::new().post(format!("{base}/api/v1/rooms/{room}/viewer-tokens/revoke"));
    assert_eq!(status_as(revoke, owner).await, 204, "revoke");
    let viewer = viewer_token(base, owner, room).await;
    let expired = issuer.issue_expired("viewer_expired", Role::Viewer, Duration::from_secs(60));
    let expired_playback =
        PlaybackTokens::new(PLAYBACK_SECRET.as_bytes()).issue_until(room, 0, 1_000_000);
    let mut bearer = HashMap::new();
    let mut playback = HashMap::new();
    for (who, b, p) in [
        (Who::OtherCreator, other.to_string(), None),
        (Who::Viewer, viewer, None),
        (Who::Revoked, revoked, revoked_playback),
        (Who::Expired, expired, Some(expired_playback)),
        (Who::Owner, owner.to_string(), None),
    ] {
        let p = match p {
            Some(p) => Some(p),
            None => playback_token(base, room, &b).await,
        };
        // Refused a playback URL: it can only try its raw credential.
        playback.insert(key(who), p.unwrap_or_else(|| b.clone()));
        bearer.insert(key(who), b);
    }
    Credentials { bearer, playback }
}

/// Maps a WebSocket answer to the status its HTTP twin would have.
fn ws_status(m: &Value) -> u16 {
    match (m["type"].as_str(), m["code"].as_str()) {
        (Some("room" | "waiting"), _) => 200,
        (Some("error"), Some("unauthorized")) => 401,
        (Some("error"), Some("forbidden")) => 403,
        (Some("error"), Some("not_found")) => 404,
        _ => panic!("an unexpected WebSocket answer: {m}"),
    }
}

async fn run(base: &str, call: Call, room: &str, creds: &Credentials, who: Who) -> u16 {
    let bearer = creds.bearer.get(&key(who));
    let c = reqwest::Client::new();
    match call {
        Call::Rest(method, path) => {
            let url = format!("{base}{}", path.replace("{id}", room));
            let mut req = c.request(method.parse().unwrap(), url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let body = match path {
                "/api/v1/auth/signup" => json!({
                    "email": format!("s{}@example.com", unique_id()),
                    "password": "password123",
                    "display_name": "S",
                }),
                "/api/v1/auth/login" => {
                    let email = format!("l{}@example.com", unique_id());
                    let signup =
                        json!({"email": email, "password": "password123", "display_name": "L"});
                    send_json(c.post(format!("{base}/api/v1/auth/signup")).json(&signup)).await;
                    json!({"email": email, "password": "password123"})
                }
                "/api/v1/auth/verify" => json!({"token": format!("made-up-{}", unique_id())}),
                "/api/v1/rooms" => json!({"title": "matrix"}),
                "/api/v1/rooms/{id}" => json!({"title": "renamed"}),
                "/api/v1/webhooks" => {
                    json!({"url": "https://hooks.example.com/skylark", "events": ["room.live"]})
                }
                _ => json!({}),
            };
            if method != "GET" && method != "DELETE" {
                req = req.json(&body);
            }
            req.send().await.unwrap().status().as_u16()
        }
        Call::Whip | Call::Whep => {
            let kind = if matches!(call, Call::Whip) {
                "whip"
            } else {
                "whep"
            };
            let mut req = c
                .post(format!("{base}/{kind}/{room}"))
                .header("content-type", "application/sdp")
                .body("v=0\r\n");
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            req.send().await.unwrap().status().as_u16()
        }
        Call::WsWatch | Call::WsPublish => {
            let mut s = ws(base).await;
            let kind = if matches!(call, Call::WsWatch) {
                "watch"
            } else {
                "publish"
            };
            let mut m = json!({"type": kind, "room": room});
            if let Some(b) = bearer {
                m["token"] = json!(b);
            }
            ws_send(&mut s, m).await;
            ws_status(&next_json(&mut s).await.expect("an answer"))
        }
        Call::Hls | Call::Flv => {
            let path = if matches!(call, Call::Hls) {
                format!("/hls/{room}/index.m3u8")
            } else {
                format!("/flv/{room}.flv")
            };
            let query = creds
                .playback
                .get(&key(who))
                .map(|t| format!("?token={t}"))
                .unwrap_or_default();
            c.get(format!("{base}{path}{query}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
        Call::Page(path) => {
            let mut req = c.get(format!("{base}{}", path.replace("{id}", room)));
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            req.send().await.unwrap().status().as_u16()
        }
    }
}

#[tokio::test]
async fn who_may_do_what_on_every_endpoint() {
    let sk = Skylark::start_with(Options {
        env: [
            ("SKYLARK_JWT_SECRET", JWT_SECRET),
            ("SKYLARK_PLAYBACK_SECRET", PLAYBACK_SECRET),
            // The matrix signs up ~80 accounts from one address.
            ("SKYLARK_AUTH_RATE_BURST", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    })
    .await;
    let base = &sk.base;
    let owner = creator(base).await;
    let other = creator(base).await;
    let mut rooms = Vec::new();
    for visibility in VISIBILITIES {
        let title = format!("{visibility} room");
        let v = create_room(
            base,
            &owner,
            json!({"title": title, "visibility": visibility}),
        )
        .await;
        let room = v["room"]["id"].as_str().unwrap().to_string();
        let creds = credentials(base, &owner, &other, &room).await;
        rooms.push((room, creds));
    }

    // Every REST endpoint the API documents has a row.
    let doc: Value = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let rows = matrix();
    let covered: BTreeSet<(String, String)> = rows
        .iter()
        .filter_map(|(call, _)| match call {
            Call::Rest(m, p) => Some((m.to_string(), p.to_string())),
            _ => None,
        })
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "endpoints without a row in the authorization matrix: {missing:?}"
    );

    let mut wrong = Vec::new();
    for (call, expect) in &rows {
        for (v, (room, creds)) in rooms.iter().enumerate() {
            for (w, who) in WHO.iter().enumerate() {
                let got = run(base, *call, room, creds, *who).await;
                if got != expect[v][w] {
                    wrong.push(format!(
                        "{call:?} on a {} room as {who:?}: {got}, want {}",
                        VISIBILITIES[v], expect[v][w]
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The public room list shows live public rooms only: all three are live here.
    let mut ids = HashMap::new();
    let mut publishers = Vec::new();
    for visibility in VISIBILITIES {
        let v = create_room(
            base,
            &owner,
            json!({"title": "listed?", "visibility": visibility}),
        )
        .await;
        let room = v["room"]["id"].as_str().unwrap().to_string();
        publishers.push(publish(base, &room, v["stream_key"].as_str().unwrap()).await);
        ids.insert(visibility, room);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = reqwest::get(format!("{base}/api/v1/rooms"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if list.contains(&ids["public"]) {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live public room is listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !list.contains(&ids["unlisted"]),
        "unlisted rooms are not listed"
    );
    assert!(
        !list.contains(&ids["private"]),
        "private rooms are not listed"
    );
    let theirs = send_json(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/rooms?mine=1"))
            .bearer_auth(&other),
    )
    .await;
    assert!(
        !ids.values()
            .any(|id| theirs.to_string().contains(id.as_str())),
        "another creator's ?mine=1 lists none of the owner's rooms"
    );
}
