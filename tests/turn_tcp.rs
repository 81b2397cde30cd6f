//! TCP relays of the embedded TURN server (RFC 6062): coturn's client (`turnutils_uclient
//! -T`, Debian coturn) relays between two TCP allocations (a Connect from one and a
//! ConnectionAttempt on the other); a raw client on a control connection connects its
//! allocation to an allow-listed echo peer, binds a data connection and gets its bytes
//! back; Connect to a peer outside the allowed set, or without a permission, gets 403;
//! SFU nodes are reached on the ICE-TCP address each announces in the node registry.

mod common;

use common::turn::{fresh_credential, has_uclient, read_stun, uclient_as};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turn_server_proto::stun::types::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_server_proto::types::attribute::{ConnectionId, RequestedTransport, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CONNECT, CONNECTION_BIND, CREATE_PERMISSION};

const SECRET: &str = "tcp-turn-test-secret-0123";

async fn skylark_with_turn(env: &[(&str, &str)]) -> (Skylark, u16) {
    let sk = turn::skylark_with_turn(SECRET, env).await;
    let port = logged_port(&sk, "TURN UDP and TCP listening on");
    (sk, port)
}

/// A TURN client's credentials and the server's realm and nonce.
struct Auth {
    user: String,
    pass: String,
    realm: String,
    nonce: String,
}

impl Auth {
    /// A request of `method` signed as this client, `attrs` added first.
    fn request(
        &self,
        method: Method,
        attrs: impl FnOnce(&mut MessageWriteVec, TransactionId),
    ) -> Vec<u8> {
        let mut req = Message::builder_request(method, MessageWriteVec::new());
        let tid = req.transaction_id();
        attrs(&mut req, tid);
        req.add_attribute(&Username::new(&self.user).unwrap())
            .unwrap();
        req.add_attribute(&Realm::new(&self.realm).unwrap())
            .unwrap();
        req.add_attribute(&Nonce::new(&self.nonce).unwrap())
            .unwrap();
        let creds =
            LongTermKeyCredentials::new(self.user.clone(), self.pass.clone(), self.realm.clone())
                .into();
        req.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
        req.finish()
    }
}

/// The answer's error code, 0 for success.
fn code(reply: &[u8]) -> u16 {
    let msg = Message::from_bytes(reply).unwrap();
    if msg.has_class(MessageClass::Success) {
        0
    } else {
        msg.attribute::<ErrorCode>().map_or(1, |e| e.code())
    }
}

/// A control connection with a TCP allocation (RFC 6062 §4.1).
async fn control(port: u16, who: &str) -> (TcpStream, Auth) {
    let c = fresh_credential(SECRET, who);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    req.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
        .unwrap();
    conn.write_all(&req.finish()).await.unwrap();
    let reply = read_stun(&mut conn).await;
    let msg = Message::from_bytes(&reply).unwrap();
    let auth = Auth {
        user: c.username,
        pass: c.credential,
        realm: msg.attribute::<Realm>().unwrap().realm().to_string(),
        nonce: msg.attribute::<Nonce>().unwrap().nonce().to_string(),
    };
    let req = auth.request(ALLOCATE, |r, _| {
        r.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
            .unwrap();
    });
    conn.write_all(&req).await.unwrap();
    assert_eq!(code(&read_stun(&mut conn).await), 0, "a TCP allocation");
    (conn, auth)
}

async fn exchange(conn: &mut TcpStream, req: Vec<u8>) -> Vec<u8> {
    conn.write_all(&req).await.unwrap();
    read_stun(conn).await
}

/// An echo server on `ip`: each connection gets its bytes back.
async fn echo_peer(ip: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_allocation_connects_to_an_allowed_peer_and_relays_its_bytes() {
    // 127.0.0.2 (loopback, so private) is allowed by the list; 127.0.0.3 is not.
    // Unscoped credentials relaying as before scopes: what this test is about is TCP.
    let (sk, port) = skylark_with_turn(&[
        ("SKYLARK_TURN_ALLOW_PEERS", "127.0.0.2/32"),
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    let peer = echo_peer("127.0.0.2").await;
    let forbidden = echo_peer("127.0.0.3").await;
    let (mut ctl, auth) = control(port, "tcp-raw").await;

    // Connect before a permission: refused (RFC 6062 relays to permitted peers only).
    let connect = |to: SocketAddr| {
        auth.request(CONNECT, |r, tid| {
            r.add_attribute(&XorPeerAddress::new(to, tid)).unwrap();
        })
    };
    assert_eq!(code(&exchange(&mut ctl, connect(peer)).await), 403);
    // A peer outside the allowed set: no permission, no Connect.
    let permit = |to: SocketAddr| {
        auth.request(CREATE_PERMISSION, |r, tid| {
            r.add_attribute(&XorPeerAddress::new(to, tid)).unwrap();
        })
    };
    assert_eq!(code(&exchange(&mut ctl, permit(forbidden)).await), 403);
    assert_eq!(
        code(&exchange(&mut ctl, connect(forbidden)).await),
        403,
        "Connect to a peer outside the allowed set"
    );

    assert_eq!(code(&exchange(&mut ctl, permit(peer)).await), 0);
    let reply = exchange(&mut ctl, connect(peer)).await;
    let msg = Message::from_bytes(&reply).unwrap();
    assert!(
        msg.has_class(MessageClass::Success),
        "Connect to the allowed peer: {:?}\n{}",
        msg.attribute::<ErrorCode>().map(|e| e.code()),
        sk.logs()
    );
    let id = msg.attribute::<ConnectionId>().unwrap().id();

    // The data connection: ConnectionBind, then raw bytes both ways.
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let bind = auth.request(CONNECTION_BIND, |r, _| {
        r.add_attribute(&ConnectionId::new(id)).unwrap();
    });
    assert_eq!(code(&exchange(&mut data, bind).await), 0, "bound");
    // Bytes that are no STUN at all, larger than a frame of the control protocol.
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 13) as u8).collect();
    let (mut rd, mut wr) = data.into_split();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr
        })
    };
    let mut got = vec![0u8; sent.len()];
    tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut got))
        .await
        .expect("the echo within 10 s")
        .unwrap();
    assert!(got == sent, "the peer's bytes come back unchanged");
    let _wr = writer.await.unwrap();

    // The same peer again while the first connection lives.
    let reply = exchange(&mut ctl, connect(peer)).await;
    assert_eq!(code(&reply), 446, "one connection per peer and allocation");

    let m = sk.metrics().await;
    let line = m
        .lines()
        .find(|l| l.starts_with("skylark_turn_tcp_connections_total"))
        .unwrap_or_else(|| panic!("no TCP connection counted:\n{m}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// coturn's client relays over TCP relays (`-T`): two allocations, one connecting to
/// the other's relayed address (the other takes it through a ConnectionAttempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_client_relays_over_tcp_relays() {
    if !has_uclient() {
        return;
    }
    let (sk, port) = skylark_with_turn(&[
        ("SKYLARK_TURN_USER_ALLOCATIONS", "4"),
        ("SKYLARK_TURN_UNSCOPED", "public"),
    ])
    .await;
    let flags = ["-T", "-n", "10", "-m", "1", "-l", "1000"];
    let (ok, text) = uclient_as(SECRET, "uclient-tcp", port, &flags);
    assert!(
        ok && text.contains("tot_recv_msgs=20"),
        "relays over TCP relays:\n{text}\n{}",
        sk.logs()
    );
}

/// Each SFU node announces its own ICE-TCP address in the node registry: TCP relays
/// reach two nodes on their different ICE-TCP ports, and no other port of their host
/// (a listening one there gets 403). The TURN server (`skylark turn`) has no ICE-TCP
/// port of its own to go by (`SKYLARK_RTC_TCP_ADDR` is port 0, as for every test
/// process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_relays_reach_each_sfu_nodes_announced_ice_tcp_address_only() {
    let Some(redis) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = scale_out_env(&redis, free_port(), dir.path(), &[]);
    let grpc = ("SKYLARK_GRPC_ADDR", "127.0.0.1:0".to_string());
    let mut ice_tcp = Vec::new();
    let mut sfus = Vec::new();
    for name in ["sfu1", "sfu2"] {
        let sfu = start_target("sfu", env(std::slice::from_ref(&grpc)), dir.path(), name).await;
        ice_tcp.push(SocketAddr::from((
            [127, 0, 0, 1],
            logged_port(&sfu, "ICE-TCP listening"),
        )));
        sfus.push(sfu);
    }
    assert_ne!(ice_tcp[0].port(), ice_tcp[1].port());
    let turn_env = env(&[
        ("SKYLARK_TURN_ADDR", "127.0.0.1:0".into()),
        ("SKYLARK_TURN_SECRET", SECRET.into()),
        ("RUST_LOG", "info,skylark_turn=debug".into()),
    ]);
    let turn = start_target("turn", turn_env, dir.path(), "turn").await;
    let port = logged_port(&turn, "TURN UDP and TCP listening on");
    eventually(
        Duration::from_secs(10),
        "the TURN server reads both nodes' ICE-TCP addresses from the registry",
        || async {
            let logs = turn.logs();
            match logs.lines().any(|l| l.contains("and 2 ICE-TCP addresses")) {
                true => Ok(()),
                false => Err(logs),
            }
        },
    )
    .await;

    let (mut ctl, auth) = control(port, "sfu-ice-tcp").await;
    let other = echo_peer("127.0.0.1").await;
    let permit = auth.request(CREATE_PERMISSION, |r, tid| {
        r.add_attribute(&XorPeerAddress::new(other, tid)).unwrap();
    });
    assert_eq!(code(&exchange(&mut ctl, permit).await), 0, "the SFUs' IP");
    let connect = |to: SocketAddr| {
        auth.request(CONNECT, |r, tid| {
            r.add_attribute(&XorPeerAddress::new(to, tid)).unwrap();
        })
    };
    for node in &ice_tcp {
        assert_eq!(
            code(&exchange(&mut ctl, connect(*node)).await),
            0,
            "Connect to the ICE-TCP address {node} a node announced\n{}",
            turn.logs()
        );
    }
    assert_eq!(
        code(&exchange(&mut ctl, connect(other)).await),
        403,
        "another listening port on the nodes' host"
    );
}
