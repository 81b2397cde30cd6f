//! Peer-to-peer rooms: the server only relays `offer`, `answer` and `candidate` between
//! the broadcaster and each viewer over WebSocket signaling.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The next message of `kind`, skipping room-state updates.
async fn expect<S>(s: &mut S, kind: &str) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    for _ in 0..10 {
        let m = next_json(s)
            .await
            .unwrap_or_else(|| panic!("no `{kind}` message"));
        if m["type"] == kind {
            return m;
        }
    }
    panic!("no `{kind}` message among the next 10");
}

/// A new creator's public room switched to p2p: `(room, stream key)`.
async fn p2p_room(base: &str) -> (String, String) {
    let (_, room, key) = p2p_room_of_owner(base).await;
    (room, key)
}

/// A new creator's public room switched to p2p: `(owner's token, room, stream key)`.
async fn p2p_room_of_owner(base: &str) -> (String, String, String) {
    let (token, room, key) = creator_with_room(base, "public").await;
    let r = reqwest::Client::new()
        .patch(format!("{base}/api/v1/rooms/{room}"))
        .bearer_auth(&token)
        .json(&json!({"mode": "p2p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (token, room, key)
}

/// A WebSocket that asked to broadcast in `room` with `key` (the reply is the caller's).
async fn broadcaster(
    base: &str,
    room: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut b = ws(base).await;
    ws_send(
        &mut b,
        json!({"type": "publish", "room": room, "stream_key": key}),
    )
    .await;
    b
}

#[tokio::test]
async fn p2p_room_relays_offer_answer_and_candidates() {
    let sk = Skylark::start().await;
    let c = reqwest::Client::new();
    let (room, key) = p2p_room(&sk.base).await;

    // WHIP is for SFU rooms: a p2p room says so.
    let r = c
        .post(format!("{}/whip/{room}", sk.base))
        .bearer_auth(&key)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let mut b = broadcaster(&sk.base, &room, &key).await;
    let joined = expect(&mut b, "room").await;
    assert_eq!(
        (joined["live"].as_bool(), joined["mode"].as_str()),
        (Some(true), Some("p2p"))
    );

    // Live means the same everywhere: the API and the playback answer agree.
    for path in [format!("rooms/{room}"), format!("rooms/{room}/playback")] {
        let v = send_json(c.get(format!("{}/api/v1/{path}", sk.base))).await;
        assert_eq!(v["live"], true, "{path}: {v}");
    }

    let mut v = ws(&sk.base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    let state = expect(&mut v, "room").await;
    assert_eq!(state["live"], true);
    let broadcaster = state["broadcaster"]
        .as_str()
        .expect("the broadcaster's id")
        .to_string();

    // The broadcaster learns of the viewer and offers to it.
    let vj = expect(&mut b, "viewer-joined").await;
    let viewer = vj["viewer"].as_str().unwrap().to_string();
    ws_send(
        &mut b,
        json!({"type": "offer", "to": viewer, "sdp": "v=0\r\no=- broadcaster"}),
    )
    .await;
    let offer = expect(&mut v, "offer").await;
    assert_eq!(
        (offer["sdp"].as_str(), offer["from"].as_str()),
        (Some("v=0\r\no=- broadcaster"), Some(broadcaster.as_str()))
    );

    // The viewer answers; candidates cross both ways.
    ws_send(
        &mut v,
        json!({"type": "answer", "sdp": "v=0\r\no=- viewer"}),
    )
    .await;
    let answer = expect(&mut b, "answer").await;
    assert_eq!(
        (answer["sdp"].as_str(), answer["from"].as_str()),
        (Some("v=0\r\no=- viewer"), Some(viewer.as_str()))
    );
    ws_send(&mut v, json!({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}})).await;
    let cand = expect(&mut b, "candidate").await;
    assert_eq!(cand["from"], viewer.as_str());
    ws_send(&mut b, json!({"type": "candidate", "to": viewer, "candidate": {"candidate": "candidate:2 1 udp 1 192.0.2.2 9 typ host"}})).await;
    let cand = expect(&mut v, "candidate").await;
    assert_eq!(cand["from"], broadcaster.as_str());

    // The viewer leaves: the broadcaster is told.
    ws_send(&mut v, json!({"type": "leave"})).await;
    let left = expect(&mut b, "viewer-left").await;
    assert_eq!(left["viewer"], viewer.as_str());

    // The broadcaster leaves: a new viewer waits.
    ws_send(&mut b, json!({"type": "leave"})).await;
    wait_offline(&sk.base, &room).await;
    let mut v2 = ws(&sk.base).await;
    ws_send(&mut v2, json!({"type": "watch", "room": room})).await;
    assert_eq!(expect(&mut v2, "waiting").await["room"], room.as_str());
}

/// `GET /rooms/{room}` once it reports `n` viewers (10 s at most).
async fn viewers_become(base: &str, room: &str, n: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = send_json(reqwest::Client::new().get(format!("{base}/api/v1/rooms/{room}"))).await;
        if v["viewers"] == n {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{room}: not {n} viewers: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every message until none comes for 5 s (or the connection closes).
async fn drain<S>(s: &mut S) -> Vec<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut out = vec![];
    while let Some(m) = next_json(s).await {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn p2p_viewers_waiting_before_go_live_are_announced_once_to_each_broadcaster() {
    let sk = Skylark::start().await;
    let (token, room, key) = p2p_room_of_owner(&sk.base).await;

    // A viewer waits before anyone broadcasts.
    let mut v = ws(&sk.base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    assert_eq!(expect(&mut v, "waiting").await["room"], room.as_str());

    // The broadcaster goes live: it hears of the waiting viewer at once, and the viewer
    // of the broadcaster.
    let mut b = broadcaster(&sk.base, &room, &key).await;
    assert_eq!(expect(&mut b, "room").await["live"], true);
    let vj = expect(&mut b, "viewer-joined").await;
    let viewer = vj["viewer"].as_str().unwrap().to_string();
    let live = expect(&mut v, "room").await;
    assert_eq!(live["live"], true);

    // The room counts the broadcaster's viewers (as WebRTC), though no SFU serves them.
    let counted = viewers_become(&sk.base, &room, 1).await;
    assert_eq!(counted["viewers_by_transport"]["webrtc"], 1, "{counted}");

    // The viewer can be reached: an offer to it arrives.
    ws_send(
        &mut b,
        json!({"type": "offer", "to": viewer, "sdp": "v=0\r\no=- first"}),
    )
    .await;
    assert_eq!(expect(&mut v, "offer").await["from"], live["broadcaster"]);

    // A second broadcaster with another credential (the owner's account, not the
    // stream key) can't take the live room: it is told why and let go.
    let mut b2 = ws(&sk.base).await;
    ws_send(
        &mut b2,
        json!({"type": "publish", "room": room, "token": token}),
    )
    .await;
    let busy = expect(&mut b2, "error").await;
    assert_eq!(busy["code"], "room_busy", "{busy}");
    assert!(
        closes(&mut b2).await,
        "the refused broadcaster is disconnected"
    );

    // Announced once: nothing more for the first broadcaster about this viewer.
    let rest = drain(&mut b).await;
    assert!(
        !rest.iter().any(|m| m["type"] == "viewer-joined"),
        "one viewer-joined per viewer: {rest:?}"
    );

    // The viewer leaves and comes back: counted out, then in.
    ws_send(&mut v, json!({"type": "leave"})).await;
    viewers_become(&sk.base, &room, 0).await;
    let mut v = ws(&sk.base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    assert_eq!(expect(&mut v, "room").await["live"], true);
    let viewer = expect(&mut b, "viewer-joined").await["viewer"]
        .as_str()
        .unwrap()
        .to_string();
    viewers_become(&sk.base, &room, 1).await;

    // The broadcaster leaves: the viewer is told the room went offline.
    ws_send(&mut b, json!({"type": "leave"})).await;
    let off = expect(&mut v, "room").await;
    assert_eq!(off["live"], false, "{off}");
    viewers_become(&sk.base, &room, 0).await;

    // Another broadcaster goes live: the same waiting viewer is announced to it.
    let mut b3 = broadcaster(&sk.base, &room, &key).await;
    assert_eq!(expect(&mut b3, "room").await["live"], true);
    assert_eq!(
        expect(&mut b3, "viewer-joined").await["viewer"],
        viewer.as_str()
    );
}

/// The `iceServers` of a `publish`/`watch` reply: `(urls, username, credential)`.
fn ice_server(reply: &Value) -> (Vec<String>, String, String) {
    let s = &reply["iceServers"][0];
    let urls = s["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no iceServers: {reply}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    (urls, text("username"), text("credential"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_broadcaster_and_viewers_get_turn_credentials_that_coturn_takes() {
    use common::coturn::{Coturn, SECRET};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coturn.log");
    let Some(coturn) = Coturn::start(&log) else {
        return;
    };
    let urls = coturn.urls().to_vec();
    let mut opts = Options::default();
    opts.env.insert("SKYLARK_TURN_URLS".into(), urls.join(","));
    opts.env.insert("SKYLARK_TURN_SECRET".into(), SECRET.into());
    let sk = Skylark::start_with(opts).await;
    let (room, key) = p2p_room(&sk.base).await;

    // A viewer waiting before go-live, the broadcaster, a viewer arriving while live:
    // each reply carries TURN servers with a credential of its own.
    let mut early = ws(&sk.base).await;
    ws_send(&mut early, json!({"type": "watch", "room": room})).await;
    let waiting = expect(&mut early, "waiting").await;
    let mut b = broadcaster(&sk.base, &room, &key).await;
    let published = expect(&mut b, "room").await;
    let mut late = ws(&sk.base).await;
    ws_send(&mut late, json!({"type": "watch", "room": room})).await;
    let watching = expect(&mut late, "room").await;
    assert_eq!(watching["live"], true);

    let servers: Vec<_> = [&waiting, &published, &watching]
        .into_iter()
        .map(ice_server)
        .collect();
    let mut users: Vec<&str> = servers.iter().map(|s| s.1.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), 3, "one credential per connection: {users:?}");
    let broadcaster = watching["broadcaster"].as_str().unwrap();
    assert!(
        servers[1].1.ends_with(&format!(":{broadcaster}:b")),
        "the broadcaster's credential names its connection and side: {}",
        servers[1].1
    );
    for (got_urls, user, credential) in &servers {
        assert_eq!(got_urls, &urls);
        let ok = tokio::task::block_in_place(|| coturn.relays(user, credential));
        assert!(
            ok,
            "coturn allocates with {user}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn without_turn_the_replies_carry_no_ice_servers() {
    let sk = Skylark::start().await;
    let (room, key) = p2p_room(&sk.base).await;
    let mut b = broadcaster(&sk.base, &room, &key).await;
    let published = expect(&mut b, "room").await;
    assert!(published.get("iceServers").is_none(), "{published}");
}

/// The studio reconnecting after a network drop: its old connection is silent (no
/// reads, no pongs, no close), so the server has not noticed it is dead. A new
/// connection with the same stream key takes the room over at once: the old one is
/// told and let go, viewers see the new broadcaster without the room going offline;
/// another credential is still refused.
#[tokio::test]
async fn p2p_same_key_takes_a_silent_broadcasters_room_over_at_once() {
    let sk = Skylark::start().await;
    let (token, room, key) = p2p_room_of_owner(&sk.base).await;
    let mut a = broadcaster(&sk.base, &room, &key).await;
    let a_live = expect(&mut a, "room").await;
    assert_eq!(a_live["live"], true, "{a_live}");
    let mut v = ws(&sk.base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    let first = expect(&mut v, "room").await;
    let a_id = first["broadcaster"].as_str().unwrap().to_string();
    expect(&mut a, "viewer-joined").await;
    // From here `a` is not read: its pings go unanswered and its socket stays open.

    // Another credential is refused while `a` holds the room.
    let mut other = ws(&sk.base).await;
    ws_send(
        &mut other,
        json!({"type": "publish", "room": room, "token": token}),
    )
    .await;
    assert_eq!(expect(&mut other, "error").await["code"], "room_busy");

    // The same key: live at once (well inside `expect`'s 5 s, not the 60 s it took
    // the server to notice the silent connection), and the viewer is offered by it.
    let mut b = broadcaster(&sk.base, &room, &key).await;
    let b_live = expect(&mut b, "room").await;
    assert_eq!(
        (b_live["live"].as_bool(), b_live["role"].as_str()),
        (Some(true), Some("publisher")),
        "{b_live}"
    );
    let vj = expect(&mut b, "viewer-joined").await;
    let viewer = vj["viewer"].as_str().unwrap().to_string();
    let now = expect(&mut v, "room").await;
    assert_eq!(now["live"], true, "{now}");
    let b_id = now["broadcaster"].as_str().unwrap().to_string();
    assert_ne!(b_id, a_id);
    ws_send(
        &mut b,
        json!({"type": "offer", "to": viewer, "sdp": "v=0\r\no=- b"}),
    )
    .await;
    assert_eq!(expect(&mut v, "offer").await["from"], b_id.as_str());
    let api =
        send_json(reqwest::Client::new().get(format!("{}/api/v1/rooms/{room}", sk.base))).await;
    assert_eq!(api["live"], true, "{api}");

    // `a` was told why, then let go.
    let told = drain(&mut a).await;
    let last = told.iter().rev().find(|m| m["type"] == "error");
    assert_eq!(
        last.map(|m| m["code"].clone()),
        Some(json!("publish_taken_over")),
        "{told:?}"
    );
    assert!(
        closes(&mut a).await,
        "the replaced broadcaster is disconnected"
    );

    // The room never went offline for the viewer, and `b` still holds it.
    let seen = drain(&mut v).await;
    assert!(
        !seen
            .iter()
            .any(|m| m["type"] == "room" && m["live"] == false),
        "the room went offline during the takeover: {seen:?}"
    );
    let mut late = ws(&sk.base).await;
    ws_send(&mut late, json!({"type": "watch", "room": room})).await;
    let state = expect(&mut late, "room").await;
    assert_eq!(state["broadcaster"], b_id.as_str(), "{state}");
}

/// The takeover across signaling pods (sharing only Redis): the silent broadcaster's
/// connection is on pod 1, the new one on pod 2; pod 1 hears of it over the bus, tells
/// its client and lets the room go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_takeover_reaches_the_old_connection_on_another_signaling_pod() {
    let Some(redis) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    let shared = scale_out_env(&redis, api_grpc, dir.path(), &[]);
    let api = start_api(&shared, api_grpc, dir.path()).await;
    let sig1 = start_target("signaling", shared(&[]), dir.path(), "sig1").await;
    let sig2 = start_target("signaling", shared(&[]), dir.path(), "sig2").await;
    let (_, room, key) = p2p_room_of_owner(&api.base).await;

    let mut a = broadcaster(&sig1.base, &room, &key).await;
    assert_eq!(expect(&mut a, "room").await["live"], true);
    // `a` is not read from here on.
    let mut b = broadcaster(&sig2.base, &room, &key).await;
    let live = expect(&mut b, "room").await;
    assert_eq!(
        (live["live"].as_bool(), live["role"].as_str()),
        (Some(true), Some("publisher")),
        "{live}"
    );
    let told = drain(&mut a).await;
    assert!(
        told.iter().any(|m| m["code"] == "publish_taken_over"),
        "{told:?}"
    );
    let mut v = ws(&sig1.base).await;
    ws_send(&mut v, json!({"type": "watch", "room": room})).await;
    let state = expect(&mut v, "room").await;
    assert_eq!(state["live"], true, "{state}");
    assert_eq!(
        expect(&mut b, "viewer-joined").await["type"],
        "viewer-joined"
    );
}

/// A p2p room's TURN credentials (its broadcaster's and viewers', in their `room`
/// replies) are scoped to the room (`expiry:p2p:<room>:<conn>:<b|v>`). Signaling records the
/// addresses of the candidates participants send — in an offer's SDP (room 1), trickled
/// (room 2) — and the embedded TURN server relays a room's credential to those only: a
/// viewer relays to its broadcaster's address, not to the one the other room's
/// broadcaster announced, nor to a public address no one announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_credentials_relay_only_to_addresses_their_room_announced() {
    use common::turn::RawClient;
    use turn_server_proto::types::message::{ALLOCATE, CREATE_PERMISSION};
    const SECRET: &str = "p2p-turn-scope-secret-0123";
    // 127.0.0.2 and .3 stand for the broadcasters' public addresses, .4 for the first
    // room's viewer's.
    let allow = (
        "SKYLARK_TURN_ALLOW_PEERS",
        "127.0.0.2/32,127.0.0.3/32,127.0.0.4/32",
    );
    let sk = common::turn::skylark_with_turn(SECRET, &[allow]).await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    let mut rooms = Vec::new();
    let mut first_broadcaster = (String::new(), String::new());
    for (i, ip) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let (room, key) = p2p_room(&sk.base).await;
        let mut b = broadcaster(&sk.base, &room, &key).await;
        let live = expect(&mut b, "room").await;
        let scoped = format!(":p2p:{room}:");
        let b_ice = live["iceServers"][0].clone();
        let b_user = b_ice["username"].as_str().unwrap_or_default().to_string();
        let b_pass = b_ice["credential"].as_str().unwrap_or_default().to_string();
        assert!(b_user.contains(&scoped), "the broadcaster's: {live}");
        let mut v = ws(&sk.base).await;
        ws_send(&mut v, json!({"type": "watch", "room": room})).await;
        let joined = expect(&mut v, "room").await;
        let ice = joined["iceServers"][0].clone();
        let user = ice["username"].as_str().unwrap().to_string();
        let pass = ice["credential"].as_str().unwrap().to_string();
        assert!(user.contains(&scoped), "the viewer's: {joined}");
        let viewer = expect(&mut b, "viewer-joined").await["viewer"]
            .as_str()
            .unwrap()
            .to_string();
        let line =
            format!("candidate:1 1 udp 1686052607 {ip} 40000 typ srflx raddr 0.0.0.0 rport 0");
        let mdns = "candidate:2 1 udp 2122260223 1f0c6e0a-5b1d-4f0e-9c1a-2b7d8e9f0a1b.local 40001 typ host";
        if i == 0 {
            let sdp = format!("v=0\r\na={mdns}\r\na={line}\r\n");
            ws_send(&mut b, json!({"type": "offer", "to": viewer, "sdp": sdp})).await;
            expect(&mut v, "offer").await;
            // The viewer announces its own address in its answer.
            let own =
                "candidate:3 1 udp 1686052607 127.0.0.4 40000 typ srflx raddr 0.0.0.0 rport 0";
            let sdp = format!("v=0\r\na={own}\r\n");
            ws_send(&mut v, json!({"type": "answer", "sdp": sdp})).await;
            expect(&mut b, "answer").await;
            first_broadcaster = (b_user.clone(), b_pass.clone());
        } else {
            let c = json!({"candidate": line, "sdpMid": "0"});
            ws_send(
                &mut b,
                json!({"type": "candidate", "to": viewer, "candidate": c}),
            )
            .await;
            expect(&mut v, "candidate").await;
        }
        rooms.push((user, pass, ip, b, v));
    }

    for (n, (user, pass, own, _, _)) in rooms.iter().enumerate() {
        let other = rooms[1 - n].2;
        let raw = RawClient::new(server).await;
        assert_eq!(raw.request(ALLOCATE, user, pass, None).await, 0);
        let permit = |ip: &str| {
            let peer = std::net::SocketAddr::new(ip.parse().unwrap(), 40000);
            raw.request(CREATE_PERMISSION, user, pass, Some(peer))
        };
        assert_eq!(permit(own).await, 0, "{user}: its broadcaster's {own}");
        assert_eq!(permit(other).await, 403, "{user}: the other room's {other}");
        assert_eq!(permit("8.8.4.4").await, 403, "{user}: announced by no one");

        // Data relayed to the broadcaster's address arrives there.
        let peer = tokio::net::UdpSocket::bind((*own, 0)).await.unwrap();
        let to = peer.local_addr().unwrap();
        raw.send_indication(to, b"to the broadcaster").await;
        let mut buf = [0u8; 64];
        let (len, _) =
            tokio::time::timeout(std::time::Duration::from_secs(5), peer.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{user}: relayed to {to} within 5 s\n{}", sk.logs()))
                .unwrap();
        assert_eq!(&buf[..len], b"to the broadcaster");
    }
    // The first room's viewer announced 127.0.0.4: its own relay can't reach it (no one
    // reaches an address by announcing it), its broadcaster's can.
    let permit_4 = |user: &str, pass: &str| {
        let (user, pass) = (user.to_string(), pass.to_string());
        async move {
            let raw = RawClient::new(server).await;
            assert_eq!(raw.request(ALLOCATE, &user, &pass, None).await, 0);
            let peer = std::net::SocketAddr::from(([127, 0, 0, 4], 40000));
            raw.request(CREATE_PERMISSION, &user, &pass, Some(peer))
                .await
        }
    };
    let (v_user, v_pass) = (&rooms[0].0, &rooms[0].1);
    assert_eq!(
        permit_4(v_user, v_pass).await,
        403,
        "a viewer, its own address"
    );
    let (b_user, b_pass) = &first_broadcaster;
    assert_eq!(
        permit_4(b_user, b_pass).await,
        0,
        "the broadcaster, its viewer's"
    );
    let m = sk.metrics().await;
    let series = "skylark_turn_peers_refused_total{scope=\"p2p\",reason=\"not_room_peer\"}";
    assert!(metric_sum(&m, series) >= 5.0, "{series}:\n{m}");
}
