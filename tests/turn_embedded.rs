//! The embedded TURN server (`SKYLARK_TURN_ADDR`): coturn's own client
//! (`turnutils_uclient`, Debian coturn) relays through it with credentials minted by the
//! TURN REST scheme over UDP and TCP, to an allowed peer (`turnutils_peer` on an
//! allow-listed address) and between two of its allocations; wrong and expired
//! credentials, private peers and the (N+1)th allocation of one credential are refused,
//! checked with raw STUN requests; one credential's allocations share one bandwidth
//! budget; Chromium viewers forced to relay
//! (`iceTransportPolicy: 'relay'`) play a room through it over UDP and TLS, and through
//! a coturn started by the test over UDP and TLS with the same kind of secret; and a p2p
//! room whose studio and viewer sit in two network namespaces that can't reach each
//! other connects relay to relay through it.

mod common;

use common::browser::{plays_over, WatchPage};
use common::turn::{
    fresh_credential, has_uclient, now_s as now, read_stun, uclient_as, uclient_with, RawClient,
};
use common::*;
use skylark_auth::TurnSecret;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use turn_server_proto::stun::types::attribute::{
    Attribute, AttributeFromRaw, AttributeStaticType, ErrorCode, Nonce, Realm, Username,
};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite,
    MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::types::attribute::{
    AdditionalAddressFamily, RequestedAddressFamily, RequestedTransport, XorRelayedAddress,
};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_server_proto::types::AddressFamily;

const SECRET: &str = "embedded-turn-test-secret";

/// Skylark with the embedded TURN server on loopback, `env` on top.
async fn skylark_with_turn(env: &[(&str, &str)]) -> Skylark {
    turn::skylark_with_turn(SECRET, env).await
}

/// coturn's client with a fresh credential for `who`: two allocations on the server at
/// `port` relay 5 messages each way to each other (the p2p case); `flags` pick the
/// transport (`-t` TCP, `-S` TLS).
fn relays_between_allocations(port: u16, who: &str, flags: &[&str]) -> (bool, String) {
    let mut args = flags.to_vec();
    args.extend(["-y", "-c", "-n", "5", "-m", "1"]);
    uclient_as(SECRET, who, port, &args)
}

/// An Allocate request (REQUESTED-TRANSPORT UDP), signed as `auth` =
/// (user, password, realm, nonce) when given.
fn allocate_request(auth: Option<(&str, &str, &str, &str)>) -> Vec<u8> {
    allocate_request_for(auth, None)
}

/// [`allocate_request`] asking for `families` too.
fn allocate_request_for(
    auth: Option<(&str, &str, &str, &str)>,
    families: Option<Families>,
) -> Vec<u8> {
    let mut req = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    req.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    match families {
        Some(Families::Requested(f)) => req.add_attribute(&RequestedAddressFamily::new(f)).unwrap(),
        Some(Families::Dual) => req
            .add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap(),
        None => (),
    }
    if let Some((user, pass, realm, nonce)) = auth {
        req.add_attribute(&Username::new(user).unwrap()).unwrap();
        req.add_attribute(&Realm::new(realm).unwrap()).unwrap();
        req.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        let creds = LongTermKeyCredentials::new(user.into(), pass.into(), realm.into()).into();
        req.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
    }
    req.finish()
}

async fn metric(sk: &Skylark, line_start: &str) -> String {
    let m = sk.metrics().await;
    m.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in metrics:\n{m}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_turn_relays_fresh_credentials_and_refuses_the_rest() {
    if !has_uclient() {
        return;
    }
    // 127.0.0.2 (loopback, so private) is allowed by the list; 127.0.0.1 is the relay IP.
    let sk = skylark_with_turn(&[
        ("SKYLARK_TURN_ALLOW_PEERS", "127.0.0.2/32"),
        // coturn's client takes up to 4 allocations per run (`-y`).
        ("SKYLARK_TURN_USER_ALLOCATIONS", "4"),
        // Its credentials are unscoped: relayed as before scopes (the_turn_relays_*_scope).
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let secret = TurnSecret::new(SECRET.as_bytes());
    let ttl = Duration::from_secs(600);

    // Fresh credentials: two allocations relay to each other (the p2p case), over UDP
    // and over TCP; and to an allow-listed peer (coturn's echo peer).
    for (who, flags) in [("udp-client", &[][..]), ("tcp-client", &["-t"][..])] {
        let (ok, out) = relays_between_allocations(port, who, flags);
        assert!(
            ok && out.contains("tot_recv_msgs=10"),
            "{who} relays:\n{out}\n{}",
            sk.logs()
        );
    }
    let peer_port = free_port();
    let mut peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.2", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peer_port = peer_port.to_string();
    let flags = [
        "-c",
        "-e",
        "127.0.0.2",
        "-r",
        &peer_port,
        "-n",
        "5",
        "-m",
        "1",
    ];
    let (ok, out) = uclient_as(SECRET, "peer-client", port, &flags);
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        ok && out.contains("tot_recv_msgs=5"),
        "relays to the allowed peer:\n{out}"
    );

    // Wrong and expired credentials: 401, counted.
    let raw = RawClient::new(server).await;
    let good = fresh_credential(SECRET, "raw");
    assert_eq!(
        raw.request(ALLOCATE, &good.username, "not-the-password", None)
            .await,
        401
    );
    let expired = secret.mint("raw", now() - 120, Duration::from_secs(60));
    assert_eq!(
        raw.request(ALLOCATE, &expired.username, &expired.credential, None)
            .await,
        401
    );
    let other = TurnSecret::new(b"another-deployment-secret").mint("raw", now(), ttl);
    assert_eq!(
        raw.request(ALLOCATE, &other.username, &other.credential, None)
            .await,
        401
    );
    let flags = ["-n", "1", "-m", "1", "-e", "8.8.8.8"];
    let (ok, out) = uclient_with(&good.username, "nope", port, &flags);
    assert!(
        !ok,
        "coturn's client is refused with a wrong password:\n{out}"
    );

    // Fresh: allocated; peers outside the allowed set: 403.
    assert_eq!(
        raw.request(ALLOCATE, &good.username, &good.credential, None)
            .await,
        0
    );
    for peer in [
        "10.1.2.3:5000",
        "192.168.1.1:5000",
        "169.254.1.1:5000",
        "127.0.0.3:5000",
        "[::1]:5000",
    ] {
        let peer: SocketAddr = peer.parse().unwrap();
        assert_eq!(
            raw.request(
                CREATE_PERMISSION,
                &good.username,
                &good.credential,
                Some(peer)
            )
            .await,
            403,
            "relaying to {peer} is refused"
        );
    }
    let flags = ["-e", "127.0.0.1", "-r", "9", "-n", "1", "-m", "1"];
    let (ok, out) = uclient_as(SECRET, "loopback-client", port, &flags);
    assert!(
        !ok && out.contains("403"),
        "loopback that is not an allocation of ours: 403\n{out}"
    );
    assert_eq!(
        raw.request(
            CREATE_PERMISSION,
            &good.username,
            &good.credential,
            Some("127.0.0.2:5000".parse().unwrap())
        )
        .await,
        0,
        "the allow-listed peer is permitted"
    );

    // The per-credential cap (4): three more allocations of the same credential from
    // other clients are taken, the fifth refused with 486; another credential is not.
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = RawClient::new(server).await;
        assert_eq!(
            c.request(ALLOCATE, &good.username, &good.credential, None)
                .await,
            0
        );
        held.push(c);
    }
    let fifth = RawClient::new(server).await;
    assert_eq!(
        fifth
            .request(ALLOCATE, &good.username, &good.credential, None)
            .await,
        486
    );
    let fresh = fresh_credential(SECRET, "raw-2");
    assert_eq!(
        fifth
            .request(ALLOCATE, &fresh.username, &fresh.credential, None)
            .await,
        0
    );

    assert!(!metric(
        &sk,
        "skylark_turn_allocations_refused_total{reason=\"per_credential_cap\"}"
    )
    .await
    .ends_with(" 0"));
    assert!(
        !metric(&sk, "skylark_turn_auth_failures_total{reason=\"expired\"}")
            .await
            .ends_with(" 0")
    );
    assert!(
        !metric(&sk, "skylark_turn_auth_failures_total{reason=\"mismatch\"}")
            .await
            .ends_with(" 0")
    );
    assert!(!metric(&sk, "skylark_turn_peers_refused_total")
        .await
        .ends_with(" 0"));
    assert!(
        !metric(&sk, "skylark_turn_relayed_bytes_total{direction=\"out\"}")
            .await
            .ends_with(" 0")
    );
    // raw's, held ones and the fresh one are live.
    let live = metric(&sk, "skylark_turn_allocations ").await;
    assert!(!live.ends_with(" 0"), "{live}");
}

/// The SFU's UDP media address in an SDP answer (its host candidate).
fn sfu_media_addr(answer: &str) -> SocketAddr {
    answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2].eq_ignore_ascii_case("udp"))
        .and_then(|f| format!("{}:{}", f[4], f[5]).parse().ok())
        .unwrap_or_else(|| panic!("no UDP candidate in the answer:\n{answer}"))
}

/// A WHEP viewer's credential is scoped to its SFU session (`expiry:sfu:<session>`): it
/// relays to the SFU node's media address and to nothing else, not a public address nor
/// one the allow-list admits (127.0.0.2), not even another port of the node's IP. An
/// unscoped credential (`expiry:id`, older signaling) reaches what an SFU session does
/// (SKYLARK_TURN_UNSCOPED's default). Refusals are counted by scope and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_sessions_credential_relays_to_the_sfu_node_only() {
    let sk = skylark_with_turn(&[("SKYLARK_TURN_ALLOW_PEERS", "127.0.0.2/32")]).await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (_engine, _publisher) = publish(&sk.base, &room, &key).await;
    let res = reqwest::Client::new()
        .post(format!("{}/whep/{room}", sk.base))
        .header("content-type", "application/sdp")
        .body(turn::offer(str0m::media::Direction::RecvOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let servers = turn::ice_servers(res.headers());
    let (_, user, pass) = servers
        .first()
        .expect("a TURN server in the answer")
        .clone();
    assert!(user.contains(":sfu:"), "scoped to the session: {user}");
    let sfu = sfu_media_addr(&res.text().await.unwrap());
    // The TURN server reads the node registry every 2 s.
    eventually(
        Duration::from_secs(10),
        "the TURN server knows the SFU node",
        || async {
            let logs = sk.logs();
            match logs.contains("TURN relays to SFU nodes at 1 media") {
                true => Ok(()),
                false => Err(logs),
            }
        },
    )
    .await;

    // Something listening on the allow-listed address, to see nothing arrives there.
    let listed = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let listed_addr = listed.local_addr().unwrap();
    let legacy = fresh_credential(SECRET, "legacy-tool");
    for (user, pass) in [(&user, &pass), (&legacy.username, &legacy.credential)] {
        let raw = RawClient::new(server).await;
        assert_eq!(raw.request(ALLOCATE, user, pass, None).await, 0, "{user}");
        assert_eq!(
            raw.request(CREATE_PERMISSION, user, pass, Some(sfu)).await,
            0,
            "{user}: the SFU node"
        );
        assert_eq!(
            raw.request(CHANNEL_BIND, user, pass, Some(sfu)).await,
            0,
            "{user}: the SFU node's media address"
        );
        let other_port = SocketAddr::new(sfu.ip(), 9);
        for peer in [listed_addr, "8.8.8.8:53".parse().unwrap(), other_port] {
            assert_eq!(
                raw.request(CREATE_PERMISSION, user, pass, Some(peer)).await
                    + raw.request(CHANNEL_BIND, user, pass, Some(peer)).await,
                if peer == other_port { 403 } else { 2 * 403 },
                "{user}: {peer} is no SFU node's media address"
            );
        }
        // Data to the SFU goes out; to the listed address it is dropped.
        let out = "skylark_turn_relayed_packets_total{direction=\"out\"}";
        let before = metric_sum(&sk.metrics().await, out);
        raw.send_indication(sfu, b"to the sfu").await;
        raw.send_indication(listed_addr, b"to the listed peer")
            .await;
        eventually(
            Duration::from_secs(5),
            "the datagram to the SFU relayed",
            || async {
                let m = sk.metrics().await;
                let after = metric_sum(&m, out);
                if after > before {
                    Ok(())
                } else {
                    Err(m)
                }
            },
        )
        .await;
    }
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(500), listed.recv_from(&mut buf)).await;
    assert!(got.is_err(), "nothing relayed to the allow-listed address");
    let m = sk.metrics().await;
    for scope in ["sfu", "unscoped"] {
        let series =
            format!("skylark_turn_peers_refused_total{{scope=\"{scope}\",reason=\"not_sfu\"}}");
        assert!(metric_sum(&m, &series) >= 5.0, "{series}:\n{m}");
    }
}

/// The lowest `SKYLARK_TURN_BYTES_PER_S`.
const CAP: usize = 10_000;

/// The bandwidth cap is per credential: two allocations of one credential, each
/// offering twice the cap at once, relay no more together than the cap allows
/// over the time they took, and another credential's allocation still relays all it
/// sends afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_allocations_share_one_bandwidth_budget() {
    let cap = CAP.to_string();
    let sk = skylark_with_turn(&[
        ("SKYLARK_TURN_ALLOW_PEERS", "127.0.0.2/32"),
        ("SKYLARK_TURN_BYTES_PER_S", &cap),
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let peer = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (shared, other) = (
        fresh_credential(SECRET, "shared"),
        fresh_credential(SECRET, "other"),
    );
    let mut clients = Vec::new();
    for c in [&shared, &shared, &other] {
        let raw = RawClient::new(server).await;
        let (user, pass) = (&c.username, &c.credential);
        assert_eq!(raw.request(ALLOCATE, user, pass, None).await, 0);
        assert_eq!(
            raw.request(CREATE_PERMISSION, user, pass, Some(peer_addr))
                .await,
            0
        );
        clients.push(raw);
    }

    // The peer: bytes per client (the payload's first byte), and when the shared
    // credential's last datagram arrived; done with the other credential's last one
    // (relayed after every shared one), or after 3 s of silence.
    let received = tokio::spawn(async move {
        let mut bytes = [0usize; 3];
        let mut last_shared = None;
        let mut buf = vec![0u8; 2048];
        while bytes[2] < 5000 {
            let got = tokio::time::timeout(Duration::from_secs(3), peer.recv_from(&mut buf));
            let Ok(got) = got.await else { break };
            let (n, _) = got.unwrap();
            let who = usize::from(buf[0]);
            bytes[who] += n;
            if who < 2 {
                last_shared = Some(std::time::Instant::now());
            }
        }
        (bytes, last_shared)
    });
    let packet = |who: u8| vec![who; 1000];
    let start = std::time::Instant::now();
    for _ in 0..2 * CAP / 1000 {
        for (who, client) in (0u8..).zip(&clients[..2]) {
            client.send_indication(peer_addr, &packet(who)).await;
        }
    }
    // One listener's messages are handled in order: once this is answered the burst
    // has been, and the other credential sends into an empty queue while the shared
    // budget is spent (a budget of all credentials would drop its datagrams).
    let (user, pass) = (&shared.username, &shared.credential);
    assert_eq!(
        clients[1]
            .request(CREATE_PERMISSION, user, pass, Some(peer_addr))
            .await,
        0
    );
    for _ in 0..5 {
        clients[2].send_indication(peer_addr, &packet(2)).await;
    }
    let (bytes, last_shared) = received.await.unwrap();

    // The budget starts full (CAP) and refills at CAP per second: from the first
    // datagram sent to the last one relayed, no more can pass.
    let window = last_shared
        .expect("the shared credential relays")
        .duration_since(start);
    let allowed = CAP as f64 * (1.0 + window.as_secs_f64());
    let shared_bytes = bytes[0] + bytes[1];
    println!("one credential, two allocations: {bytes:?} bytes relayed in {window:?} (allowed {allowed:.0})");
    assert!(
        shared_bytes as f64 <= allowed,
        "one credential's two allocations relayed {shared_bytes} bytes in {window:?}, \
         more than its {CAP} B/s budget allows ({allowed:.0})"
    );
    assert_eq!(bytes[2], 5000, "the other credential relays all it sends");
    assert!(
        !metric(&sk, "skylark_turn_dropped_total{reason=\"bandwidth\"}")
            .await
            .ends_with(" 0")
    );
}

/// An Allocate asking for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY) from
/// How a raw Allocate asks for address families (RFC 8656 §7.1).
enum Families {
    Requested(AddressFamily),
    Dual,
}

/// An Allocate by `raw` as a fresh `who`: the relayed addresses, or the error code.
async fn allocate_families(
    raw: &RawClient,
    who: &str,
    families: Families,
) -> Result<Vec<SocketAddr>, u16> {
    let c = fresh_credential(SECRET, who);
    let auth = (&*c.username, &*c.credential, &*raw.realm, &*raw.nonce);
    let reply = raw
        .exchange(allocate_request_for(Some(auth), Some(families)))
        .await;
    let msg = Message::from_bytes(&reply).unwrap();
    let relayed: Vec<SocketAddr> = msg
        .iter_attributes()
        .filter(|(_, a)| a.get_type() == XorRelayedAddress::TYPE)
        .filter_map(|(_, a)| XorRelayedAddress::from_raw(a).ok())
        .map(|a| a.addr(msg.transaction_id()))
        .collect();
    if relayed.is_empty() {
        Err(msg.attribute::<ErrorCode>().map_or(1, |e| e.code()))
    } else {
        Ok(relayed)
    }
}

/// `raw` as a fresh `who` asking for IPv6: the relayed address, or the error code.
async fn allocate_v6(raw: &RawClient, who: &str) -> Result<SocketAddr, u16> {
    allocate_families(raw, who, Families::Requested(AddressFamily::IPV6))
        .await
        .map(|r| r[0])
}

/// IPv6 relayed addresses (RFC 8656) given SKYLARK_TURN_RELAY_IP6: coturn's client
/// relays between two IPv6 allocations (`-x`) over UDP and TCP, a raw Allocate takes
/// both families at once (ADDITIONAL-ADDRESS-FAMILY); without the setting IPv6 gets 440.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_relayed_addresses_given_an_ipv6_relay_ip() {
    if !has_uclient() {
        return;
    }
    let sk = skylark_with_turn(&[
        ("SKYLARK_TURN_RELAY_IP6", "::1"),
        ("SKYLARK_TURN_USER_ALLOCATIONS", "4"),
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    for (who, flags) in [("v6-udp", &["-x"][..]), ("v6-tcp", &["-x", "-t"][..])] {
        let (ok, out) = relays_between_allocations(port, who, flags);
        assert!(
            ok && out.contains("tot_recv_msgs=10"),
            "{who} relays over IPv6:\n{out}\n{}",
            sk.logs()
        );
    }
    let raw = RawClient::new(server).await;
    let relay = allocate_v6(&raw, "v6-raw")
        .await
        .expect("an IPv6 relayed address");
    assert_eq!(relay.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    // Both families in one Allocate (ADDITIONAL-ADDRESS-FAMILY, 0x8000). Not with
    // coturn's client: Debian's (4.6.1) still sends the draft's attribute 0x8032, which
    // RFC 8656 servers ignore, so `-Z` got IPv4 only (and 443 when its Refresh then
    // asked for IPv6).
    let raw = RawClient::new(server).await;
    let dual = allocate_families(&raw, "dual", Families::Dual)
        .await
        .expect("a dual allocation");
    let loopback6: std::net::IpAddr = "::1".parse().unwrap();
    assert!(
        dual.len() == 2
            && dual.iter().any(|a| a.is_ipv4())
            && dual.iter().any(|a| a.ip() == loopback6),
        "one relayed address per family: {dual:?}"
    );
    let v4_only = skylark_with_turn(&[]).await;
    let port = logged_port(&v4_only, "TURN UDP and TCP listening on");
    let raw = RawClient::new(([127, 0, 0, 1], port).into()).await;
    assert_eq!(allocate_v6(&raw, "v6-none").await, Err(440));
}

/// Opens the watch page of a room of `sk` forced to relay (`?ice=relay` →
/// `iceTransportPolicy: 'relay'`), waits until it decodes 30 frames and checks the
/// selected candidate pair is relayed over `relay_protocol` (`udp`, `tls`); the pair.
async fn play_relayed(
    sk: &Skylark,
    flags: &[&str],
    relay_protocol: &str,
) -> Option<serde_json::Value> {
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (_engine, _publisher) = publish(&sk.base, &room, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chromium-relay.log");
    let url = format!("{}/watch/{room}?transport=webrtc&ice=relay", sk.base);
    let mut page = WatchPage::open_with(None, &url, &sk.base, &log, flags)?;
    let playing = page
        .until(Duration::from_secs(45), |l| plays_over(l, "webrtc"))
        .await
        .unwrap_or_else(|| {
            panic!(
                "Chromium plays through TURN: {}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                sk.logs()
            )
        });
    let pair = playing["pair"].clone();
    assert_eq!(
        pair["localType"], "relay",
        "a relayed candidate pair: {pair}"
    );
    assert_eq!(
        pair["relayProtocol"], relay_protocol,
        "relayed over TURN/{relay_protocol}: {pair}"
    );
    Some(pair)
}

/// A Chromium viewer forced to relay plays a room through the embedded TURN over UDP,
/// its TURN server and credential taken from the WebSocket's watch reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_viewer_forced_to_relay_plays_through_the_embedded_turn() {
    let sk = skylark_with_turn(&[]).await;
    let Some(pair) = play_relayed(&sk, &[], "udp").await else {
        return;
    };
    let relayed = metric(&sk, "skylark_turn_relayed_packets_total{direction=\"in\"}").await;
    assert!(
        !relayed.ends_with(" 0"),
        "the SFU's media came through the relay: {relayed}"
    );
    println!("TURN/UDP viewer: pair {pair}");
}

/// A self-signed certificate for 127.0.0.1 and its key (PEM), made by openssl.
fn self_signed(dir: &std::path::Path) -> Option<(String, String)> {
    let cert = dir.join("turn-cert.pem");
    let key = dir.join("turn-key.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("no openssl to make a test certificate (apt-get install openssl)");
        return None;
    }
    Some((cert.display().to_string(), key.display().to_string()))
}

/// TURN over TLS (`turns:`, rustls on aws-lc-rs) with an operator's certificate:
/// coturn's client relays through it, and a Chromium viewer given only the `turns:`
/// URL (SKYLARK_TURN_URLS) plays through it (`--ignore-certificate-errors` makes
/// Chromium take the test's self-signed certificate for TURN too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_relays_coturns_client_and_a_chromium_viewer() {
    if !has_uclient() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        return;
    };
    let tls_port = free_port();
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let turns = format!("turns:127.0.0.1:{tls_port}?transport=tcp");
    let sk = skylark_with_turn(&[
        ("SKYLARK_TURN_TLS_CERT", &cert),
        ("SKYLARK_TURN_TLS_KEY", &key),
        ("SKYLARK_TURN_TLS_ADDR", &tls_addr),
        ("SKYLARK_TURN_URLS", &turns),
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    assert_eq!(logged_port(&sk, "TURN TLS listening on"), tls_port);

    let (ok, out) = relays_between_allocations(tls_port, "tls-client", &["-S", "-t"]);
    assert!(
        ok && out.contains("tot_recv_msgs=10"),
        "coturn's client relays over TLS:\n{out}\n{}",
        sk.logs()
    );
    // RFC 6062 TCP relays with TLS control and data connections.
    let (ok, out) = relays_between_allocations(tls_port, "tls-tcp-relay", &["-S", "-T"]);
    assert!(
        ok && out.contains("tot_recv_msgs=10"),
        "coturn's client relays over TCP relays on TLS:\n{out}\n{}",
        sk.logs()
    );

    let Some(pair) = play_relayed(&sk, &["--ignore-certificate-errors"], "tls").await else {
        return;
    };
    println!("TURN/TLS viewer: pair {pair}");
}

/// The studio (tests/e2e/lib/studio-cli.js) live in its creator's room, run inside
/// namespace `ns`; its browser is killed on drop.
struct Studio(std::process::Child);

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Opens the studio of the creator holding `token` at `base` inside `ns` and waits until
/// it is live; its console goes to `log`.
fn studio_live_in(ns: &NetNs, base: &str, token: &str, log: &std::path::Path) -> Studio {
    use std::io::BufRead;
    let cli = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/lib/studio-cli.js");
    let mut child = ns
        .command("node")
        .arg(cli)
        .args([&format!("{base}/studio"), token, "--insecure-origin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().unwrap();
    let studio = Studio(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the studio goes live within 60 s: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match v["type"].as_str() {
            Some("live") => return studio,
            Some("error") => panic!(
                "the studio could not go live: {v}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
            _ => {}
        }
    }
}

/// Runs `ip ARGS`, panicking with what failed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A p2p room whose broadcaster (the studio) and viewer (the watch page) sit in two
/// network namespaces that reach the server but not each other (no forwarding between
/// them): host candidates can't pair, the embedded TURN server refuses to relay to
/// either side's private address (403), and the two connect relay to relay through
/// two allocations of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2p_room_across_namespaces_that_cannot_reach_each_other_connects_through_turn() {
    let Some(a) = NetNs::create() else { return };
    let Some(b) = NetNs::create() else { return };
    // Both reach the server (on a's link) through their own link: default routes to the
    // host. The host forwards nothing between them (ip_forward off, checked).
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forward.trim() != "0" {
        skip("the host forwards IPv4 between interfaces: the namespaces would reach each other");
        return;
    }
    ip(&["-n", &a.name, "route", "add", "default", "via", &a.host_ip]);
    ip(&["-n", &b.name, "route", "add", "default", "via", &b.host_ip]);
    let ping = b
        .command("ping")
        .args(["-c", "1", "-W", "1", &a.peer_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        !ping,
        "the viewer's namespace must not reach the broadcaster's"
    );

    let turn_addr = format!("{}:0", a.host_ip);
    let mut opts = Options::default();
    for (k, v) in [
        ("SKYLARK_TURN_ADDR", turn_addr.as_str()),
        ("SKYLARK_TURN_SECRET", SECRET),
        ("RUST_LOG", "info,skylark_turn=debug"),
    ] {
        opts.env.insert(k.into(), v.into());
    }
    let sk = Skylark::start_at(&a.host_ip, opts).await;
    let (token, room, _) = creator_with_room(&sk.base, "public").await;
    let r = reqwest::Client::new()
        .patch(format!("{}/api/v1/rooms/{room}", sk.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"mode": "p2p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the room switches to p2p");

    let dir = tempfile::tempdir().unwrap();
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        skip("no Chromium at /usr/bin/chromium (apt-get install chromium)");
        return;
    }
    // The viewer first (it waits for the broadcaster; opening it also installs
    // playwright-core, which the studio's driver needs too).
    let log = dir.path().join("viewer.log");
    let url = format!("{}/watch/{room}", sk.base);
    let Some(mut page) = WatchPage::open_with(Some(&b.name), &url, &sk.base, &log, &[]) else {
        return;
    };
    let _studio = studio_live_in(&a, &sk.base, &token, &dir.path().join("studio.log"));
    let playing = page
        .until(Duration::from_secs(60), |l| plays_over(l, "p2p"))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the viewer plays the p2p room through TURN: {}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                sk.logs()
            )
        });
    let pair = &playing["pair"];
    assert_eq!(pair["localType"], "relay", "relayed: {pair}");
    assert_eq!(
        pair["remoteType"], "relay",
        "to the broadcaster's relayed address: {pair}"
    );
    let refused = metric(&sk, "skylark_turn_peers_refused_total").await;
    assert!(
        !refused.ends_with(" 0"),
        "permissions to the namespaces' private addresses were refused: {refused}"
    );
    println!("p2p across namespaces through TURN: pair {pair}");
}

/// Skylark handing out `url` (a coturn's) with credentials of coturn's shared secret,
/// no embedded TURN server.
async fn skylark_minting_for(url: String) -> Skylark {
    let mut opts = Options::default();
    opts.env.insert("SKYLARK_TURN_URLS".into(), url);
    opts.env
        .insert("SKYLARK_TURN_SECRET".into(), common::coturn::SECRET.into());
    Skylark::start_with(opts).await
}

/// The same relay-only viewer through coturn (Debian's `turnserver`, started here with
/// the same kind of shared secret) instead of the embedded server: the credentials
/// signaling mints work with either relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_viewer_forced_to_relay_plays_through_coturn_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some(coturn) = common::coturn::Coturn::start(&dir.path().join("coturn.log")) else {
        return;
    };
    let sk = skylark_minting_for(coturn.urls()[0].clone()).await;
    let Some(pair) = play_relayed(&sk, &[], "udp").await else {
        return;
    };
    println!("coturn TURN/UDP viewer: pair {pair}");
}

/// The relay-only viewer through coturn over TLS: coturn given the test's certificate,
/// Chromium given only its `turns:` URL (`--ignore-certificate-errors` for the
/// self-signed certificate, as with the embedded server's TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_viewer_forced_to_relay_plays_through_coturns_tls_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        return;
    };
    let log = dir.path().join("coturn.log");
    let Some(coturn) = common::coturn::Coturn::start_with(&log, Some((&cert, &key))) else {
        return;
    };
    let sk = skylark_minting_for(coturn.turns_url().unwrap()).await;
    let Some(pair) = play_relayed(&sk, &["--ignore-certificate-errors"], "tls").await else {
        return;
    };
    println!("coturn TURN/TLS viewer: pair {pair}");
}

/// `skylark turn`, the server as a target of its own (as the Helm chart runs it): ready
/// on its HTTP port, relaying for coturn's client, metrics on its internal port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skylark_turn_runs_the_server_alone() {
    if !has_uclient() {
        return;
    }
    let mut opts = Options {
        target: Some("turn"),
        ..Options::default()
    };
    opts.env
        .insert("SKYLARK_TURN_ADDR".into(), "127.0.0.1:0".into());
    opts.env.insert("SKYLARK_TURN_SECRET".into(), SECRET.into());
    opts.env
        .insert("SKYLARK_TURN_UNSCOPED".into(), "public".into());
    let sk = Skylark::start_with(opts).await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let (ok, out) = relays_between_allocations(port, "alone", &[]);
    assert!(
        ok && out.contains("tot_recv_msgs=10"),
        "relays:\n{out}\n{}",
        sk.logs()
    );
    assert!(
        !metric(&sk, "skylark_turn_relayed_packets_total{direction=\"out\"}")
            .await
            .ends_with(" 0")
    );
}

/// A TURN-over-TCP client's allocation goes with its connection: its place under the
/// caps is free again as soon as the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_clients_allocation_ends_with_its_connection() {
    use tokio::io::AsyncWriteExt;
    let sk = skylark_with_turn(&[("SKYLARK_TURN_USER_ALLOCATIONS", "1")]).await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    let c = fresh_credential(SECRET, "tcp");
    for round in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        conn.write_all(&allocate_request(None)).await.unwrap();
        let reply = read_stun(&mut conn).await;
        let msg = Message::from_bytes(&reply).unwrap();
        let realm = msg.attribute::<Realm>().unwrap().realm().to_string();
        let nonce = msg.attribute::<Nonce>().unwrap().nonce().to_string();
        conn.write_all(&allocate_request(Some((
            &c.username,
            &c.credential,
            &realm,
            &nonce,
        ))))
        .await
        .unwrap();
        let reply = read_stun(&mut conn).await;
        let msg = Message::from_bytes(&reply).unwrap();
        assert!(
            msg.has_class(MessageClass::Success),
            "round {round}: allocated (the cap is 1: the first connection's allocation is gone): {:?}",
            msg.attribute::<ErrorCode>().map(|e| e.code())
        );
        assert_eq!(
            metric(&sk, "skylark_turn_allocations ").await,
            "skylark_turn_allocations 1"
        );
        drop(conn);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while metric(&sk, "skylark_turn_allocations ").await != "skylark_turn_allocations 0" {
            assert!(
                std::time::Instant::now() < deadline,
                "the allocation ends with the connection"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
