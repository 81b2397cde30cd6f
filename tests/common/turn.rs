//! The embedded TURN server under test and the clients that drive it: coturn's
//! `turnutils_uclient` (Debian coturn) and raw STUN over TCP.

use super::{skip, Options, Skylark};
use skylark_auth::{TurnCredential, TurnSecret};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use turn_server_proto::stun::types::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, TransactionId,
};
use turn_server_proto::types::attribute::{
    ChannelNumber, Data, RequestedTransport, XorPeerAddress,
};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, SEND};

/// Seconds since the epoch (TURN REST credentials expire on this clock).
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Skylark with the embedded TURN server on a free loopback port, credentials signed
/// with `secret`, `env` on top.
pub async fn skylark_with_turn(secret: &str, env: &[(&str, &str)]) -> Skylark {
    let mut opts = Options::default();
    opts.env
        .insert("SKYLARK_TURN_ADDR".into(), "127.0.0.1:0".into());
    opts.env.insert("SKYLARK_TURN_SECRET".into(), secret.into());
    opts.env
        .insert("RUST_LOG".into(), "info,skylark_turn=debug".into());
    for (k, v) in env {
        opts.env.insert((*k).into(), (*v).into());
    }
    Skylark::start_with(opts).await
}

/// Whether coturn's client is installed; `skip` fails in CI when it is not.
pub fn has_uclient() -> bool {
    if Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        skip("no turnutils_uclient (Debian coturn): scripts/test installs it");
        return false;
    }
    true
}

/// A credential for `who`, valid 10 minutes from now, minted with `secret` (TURN REST).
pub fn fresh_credential(secret: &str, who: &str) -> TurnCredential {
    TurnSecret::new(secret.as_bytes()).mint(who, now_s(), Duration::from_secs(600))
}

/// `turnutils_uclient FLAGS -u USER -w PASS -p PORT 127.0.0.1`: whether it succeeded,
/// and what it printed.
pub fn uclient_with(user: &str, pass: &str, port: u16, flags: &[&str]) -> (bool, String) {
    let out = Command::new("turnutils_uclient")
        .args(flags)
        .args(["-u", user, "-w", pass, "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("turnutils_uclient (Debian coturn)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// [`uclient_with`] as `who` with a [`fresh_credential`] of `secret`.
pub fn uclient_as(secret: &str, who: &str, port: u16, flags: &[&str]) -> (bool, String) {
    let c = fresh_credential(secret, who);
    uclient_with(&c.username, &c.credential, port, flags)
}

/// One STUN message off a TURN-over-TCP stream.
pub async fn read_stun(conn: &mut TcpStream) -> Vec<u8> {
    let mut msg = vec![0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut msg))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(20 + len, 0);
    conn.read_exact(&mut msg[20..]).await.unwrap();
    msg
}

/// A TURN client on its own UDP socket speaking raw STUN (stun-types, the same crate
/// family as the server): enough to read error codes exactly.
pub struct RawClient {
    pub sock: tokio::net::UdpSocket,
    pub server: SocketAddr,
    pub realm: String,
    pub nonce: String,
    /// The channel number the next ChannelBind asks for.
    channel: std::sync::atomic::AtomicU16,
}

impl RawClient {
    /// Connects and learns the realm and nonce from the server's 401.
    pub async fn new(server: SocketAddr) -> RawClient {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut c = RawClient {
            sock,
            server,
            realm: String::new(),
            nonce: String::new(),
            channel: 0x4000.into(),
        };
        let mut req = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        req.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        let reply = c.exchange(req.finish()).await;
        let msg = Message::from_bytes(&reply).unwrap();
        assert_eq!(
            msg.attribute::<ErrorCode>().unwrap().code(),
            401,
            "an unauthenticated Allocate gets 401"
        );
        c.realm = msg.attribute::<Realm>().unwrap().realm().to_string();
        c.nonce = msg.attribute::<Nonce>().unwrap().nonce().to_string();
        c
    }

    pub async fn exchange(&self, req: Vec<u8>) -> Vec<u8> {
        self.sock.send_to(&req, self.server).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.sock.recv_from(&mut buf))
            .await
            .expect("the TURN server answers within 5 s")
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// An authenticated request of `method` as `user`/`pass` with `peer` (if any; a
    /// ChannelBind gets a channel number of its own); the error code of the answer, 0
    /// for success.
    pub async fn request(
        &self,
        method: turn_server_proto::stun::types::message::Method,
        user: &str,
        pass: &str,
        peer: Option<SocketAddr>,
    ) -> u16 {
        let mut req = Message::builder_request(method, MessageWriteVec::new());
        let tid: TransactionId = req.transaction_id();
        if method == ALLOCATE {
            req.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        }
        if let Some(p) = peer {
            req.add_attribute(&XorPeerAddress::new(p, tid)).unwrap();
        }
        if method == CHANNEL_BIND {
            let n = self
                .channel
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req.add_attribute(&ChannelNumber::new(n)).unwrap();
        }
        req.add_attribute(&Username::new(user).unwrap()).unwrap();
        req.add_attribute(&Realm::new(&self.realm).unwrap())
            .unwrap();
        req.add_attribute(&Nonce::new(&self.nonce).unwrap())
            .unwrap();
        let creds =
            LongTermKeyCredentials::new(user.into(), pass.into(), self.realm.clone()).into();
        req.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
        let reply = self.exchange(req.finish()).await;
        let msg = Message::from_bytes(&reply).unwrap();
        if msg.has_class(MessageClass::Success) {
            0
        } else {
            msg.attribute::<ErrorCode>().map_or(1, |e| e.code())
        }
    }

    /// A Send indication (RFC 8656 §11) of `data` to `peer`.
    pub async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut ind = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, SEND),
            TransactionId::generate(),
            MessageWriteVec::new(),
        );
        let tid = ind.transaction_id();
        ind.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        ind.add_attribute(&Data::new(data)).unwrap();
        self.sock.send_to(&ind.finish(), self.server).await.unwrap();
    }
}

/// `(url, username, credential)` of each `Link: <…>; rel="ice-server"` header.
pub fn ice_servers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String, String)> {
    let param = |link: &str, name: &str| {
        link.split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|l| l.contains("rel=\"ice-server\""))
        .map(|l| {
            let url = l.split('>').next().unwrap_or("").trim_start_matches('<');
            (
                url.to_string(),
                param(l, "username"),
                param(l, "credential"),
            )
        })
        .collect()
}

/// An offer of video and audio in `direction` from a str0m peer: `RecvOnly` for a
/// WHEP viewer, `SendOnly` for a WHIP publisher.
pub fn offer(direction: str0m::media::Direction) -> String {
    use str0m::media::MediaKind;
    let mut rtc = str0m::Rtc::builder()
        .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
        .build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, direction, None, None, None);
    api.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}
