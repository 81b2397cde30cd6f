//! Interop with str0m, the SRTP stack of the SFU's peers (load generator, test peers):
//! two real str0m `Rtc`s connect over an in-memory network (ICE, DTLS), then
//!
//! - str0m's SRTP and SRTCP, as the sender's `Rtc` puts them on the wire, open with our
//!   `Receiver`;
//! - RTP we seal with our `Sender` in place of the sender's own packets (across a
//!   sequence number rollover) reach the receiving `Rtc`'s application intact;
//! - SRTCP we seal (a PLI) reaches the sending `Rtc` as a keyframe request;
//!
//! for each SRTP profile. str0m has no public SRTP context, so its DTLS is wrapped: the
//! handshake runs for real, then both peers' keying material and profile are replaced
//! by ones the test knows (str0m derives its SRTP contexts from what DTLS reports).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skylark_srtp::{split_keying, Profile, Receiver, Sender};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::CryptoError;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const VP8: u8 = 96;

/// DTLS as str0m's own, except that the keying material it reports is `material`
/// for `profile`; records the role (client or server) str0m gives it.
#[derive(Debug)]
struct FixedKeys {
    inner: &'static dyn DtlsProvider,
    material: Vec<u8>,
    profile: SrtpProfile,
    dtls_client: Arc<Mutex<Option<bool>>>,
}

#[derive(Debug)]
struct FixedKeysDtls {
    inner: Box<dyn DtlsInstance>,
    material: Vec<u8>,
    profile: SrtpProfile,
    dtls_client: Arc<Mutex<Option<bool>>>,
}

impl DtlsProvider for FixedKeys {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        Ok(Box::new(FixedKeysDtls {
            inner: self.inner.new_dtls(cert, now, version, mtu)?,
            material: self.material.clone(),
            profile: self.profile,
            dtls_client: self.dtls_client.clone(),
        }))
    }
}

impl DtlsInstance for FixedKeysDtls {
    fn set_active(&mut self, active: bool) {
        *self.dtls_client.lock().unwrap() = Some(active);
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        match self.inner.poll_output(buf) {
            DtlsOutput::KeyingMaterial(_, _) => {
                DtlsOutput::KeyingMaterial(KeyingMaterial::new(&self.material), self.profile)
            }
            other => other,
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// One str0m peer on the in-memory network, and what it reported.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    next: Instant,
    connected: bool,
    events: Vec<Event>,
    /// Whether str0m made this peer the DTLS client (once it has).
    dtls_client: Arc<Mutex<Option<bool>>>,
}

impl Peer {
    fn new(now: Instant, addr: &str, ice_lite: bool, keys: (SrtpProfile, &[u8])) -> Peer {
        let dtls_client = Arc::new(Mutex::new(None));
        let mut crypto = str0m::crypto::from_feature_flags();
        // str0m takes providers as `&'static`: one small leak per test peer.
        crypto.dtls_provider = Box::leak(Box::new(FixedKeys {
            inner: crypto.dtls_provider,
            material: keys.1.to_vec(),
            profile: keys.0,
            dtls_client: dtls_client.clone(),
        }));
        let mut rtc = Rtc::builder()
            .set_ice_lite(ice_lite)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .set_crypto_provider(Arc::new(crypto))
            .build(now);
        let addr: SocketAddr = addr.parse().unwrap();
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer {
            rtc,
            addr,
            next: now,
            connected: false,
            events: Vec::new(),
            dtls_client,
        }
    }

    /// Runs due timers and collects what the peer sends until it asks for a timeout.
    fn poll(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self.next <= now {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        let mut out = Vec::new();
        while let Ok(o) = self.rtc.poll_output() {
            match o {
                Output::Timeout(t) => {
                    self.next = t;
                    break;
                }
                Output::Transmit(t) => out.push(t.contents.to_vec()),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(e) => self.events.push(e),
            }
        }
        out
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let receive = Receive::new(Protocol::Udp, from, self.addr, datagram).unwrap();
        self.rtc.handle_input(Input::Receive(now, receive)).unwrap();
    }
}

/// RTP or RTCP (RFC 7983: first byte 128..=191), and RTCP by payload type 192..=223
/// (RFC 5761).
fn is_media(d: &[u8]) -> bool {
    matches!(d.first(), Some(128..=191))
}

fn is_rtcp(d: &[u8]) -> bool {
    is_media(d) && d.len() > 1 && (192..=223).contains(&d[1])
}

/// Header length of an RTP packet: fixed part, CSRCs, extension block.
fn rtp_header_len(d: &[u8]) -> usize {
    let mut len = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([d[len + 2], d[len + 3]]);
        len += 4 + 4 * usize::from(words);
    }
    len
}

/// A connected offerer (sends video) and answerer (receives it), both in RTP mode.
struct Net {
    now: Instant,
    sender: Peer,
    receiver: Peer,
    mid: Mid,
    /// What the sender put on the wire for the receiver since last taken.
    sent_media: Vec<Vec<u8>>,
    /// What the receiver put on the wire for the sender since last taken.
    returned_media: Vec<Vec<u8>>,
}

impl Net {
    fn new(profile: SrtpProfile, material: &[u8]) -> Net {
        let now = Instant::now();
        let mut sender = Peer::new(now, "10.0.0.1:1000", false, (profile, material));
        let mut receiver = Peer::new(now, "10.0.0.2:2000", true, (profile, material));
        let mut api = sender.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = receiver.rtc.sdp_api().accept_offer(offer).unwrap();
        sender.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let mut net = Net {
            now,
            sender,
            receiver,
            mid,
            sent_media: Vec::new(),
            returned_media: Vec::new(),
        };
        for _ in 0..300 {
            net.pump();
            if net.sender.connected && net.receiver.connected {
                break;
            }
            net.now += Duration::from_millis(10);
        }
        assert!(net.sender.connected && net.receiver.connected, "connected");
        net
    }

    /// Delivers datagrams both ways until quiet, keeping copies of the media.
    fn pump(&mut self) {
        for _ in 0..50 {
            let to_receiver = self.sender.poll(self.now);
            let to_sender = self.receiver.poll(self.now);
            if to_receiver.is_empty() && to_sender.is_empty() {
                break;
            }
            for d in to_receiver {
                if is_media(&d) {
                    self.sent_media.push(d.clone());
                }
                self.receiver.receive(self.now, self.sender.addr, &d);
            }
            for d in to_sender {
                if is_media(&d) {
                    self.returned_media.push(d.clone());
                }
                self.sender.receive(self.now, self.receiver.addr, &d);
            }
        }
    }

    /// Lets `span` of simulated time pass in 10 ms steps.
    fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while self.now < until {
            self.now += Duration::from_millis(10);
            self.pump();
        }
    }

    /// The sender's `Rtc` writes one RTP packet (extended sequence number `seq`).
    fn str0m_writes(&mut self, seq: u64, payload: &[u8]) {
        let now = self.now;
        let mut api = self.sender.rtc.direct_api();
        let tx = api.stream_tx_by_mid(self.mid, None).expect("video stream");
        tx.write_rtp(RtpWrite::new(
            VP8.into(),
            SeqNo::from(seq),
            seq as u32 * 3000,
            now,
            payload.to_vec(),
        ));
        // The pacer releases it on a timeout: give it a few.
        let before = self.sent_media.len();
        for _ in 0..20 {
            self.sender.next = self.now;
            self.pump();
            if self.sent_media.len() > before {
                break;
            }
            self.now += Duration::from_millis(5);
        }
    }

    /// Payloads and extended sequence numbers of the RTP the receiver's app got.
    fn received_rtp(&mut self) -> Vec<(u64, Vec<u8>)> {
        let events = std::mem::take(&mut self.receiver.events);
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => Some((*p.seq_no, p.payload.to_vec())),
                _ => None,
            })
            .collect()
    }
}

/// `got == want`, reported by sequence number and length (payloads are long).
fn assert_same_rtp(got: Vec<(u64, Vec<u8>)>, want: &[(u64, Vec<u8>)], profile: Profile) {
    let summary = |v: &[(u64, Vec<u8>)]| -> Vec<(u64, usize)> {
        v.iter().map(|(s, p)| (*s, p.len())).collect()
    };
    assert!(
        got == want,
        "{profile:?}: the receiving Rtc got {:?}, want {:?}",
        summary(&got),
        summary(want)
    );
}

fn interop(profile: Profile, str0m_profile: SrtpProfile) {
    let material: Vec<u8> = (0..profile.keying_material_len())
        .map(|i| (i * 37 + 11) as u8)
        .collect();
    let mut net = Net::new(str0m_profile, &material);
    let sender_is_client = net.sender.dtls_client.lock().unwrap().expect("DTLS role");
    let receiver_is_client = net.receiver.dtls_client.lock().unwrap().expect("DTLS role");
    assert_ne!(sender_is_client, receiver_is_client);
    // The keys each side sends with, as the SFU splits them.
    let (sender_key, receiver_key) = split_keying(&material, profile, sender_is_client).unwrap();

    // str0m seals, we open: its first packets, just below a rollover.
    net.sent_media.clear();
    let opener = Receiver::new(&sender_key).unwrap();
    let mut template = None;
    for seq in [65533u64, 65534] {
        let payload: Vec<u8> = (0..300).map(|i| (i + seq as usize) as u8).collect();
        net.str0m_writes(seq, &payload);
        let rtp: Vec<_> = net.sent_media.drain(..).filter(|d| !is_rtcp(d)).collect();
        assert_eq!(rtp.len(), 1, "{profile:?}: one RTP datagram");
        let header_len = rtp_header_len(&rtp[0]);
        let plain = opener.open_rtp(&rtp[0], header_len, 0).unwrap();
        assert_eq!(plain[header_len..], payload[..], "{profile:?}");
        assert_eq!(u16::from_be_bytes([plain[2], plain[3]]), seq as u16);
        template = Some(plain[..header_len].to_vec());
    }
    let theirs: Vec<(u64, Vec<u8>)> = [65533u64, 65534]
        .map(|s| (s, (0..300).map(|i| (i + s as usize) as u8).collect()))
        .to_vec();
    assert_same_rtp(net.received_rtp(), &theirs, profile);

    // We seal in the sender's place, across the rollover (ROC 0, then 1); the
    // receiving `Rtc` opens them and hands the payloads on in order.
    let header = template.unwrap();
    let sealer = Sender::new(&sender_key).unwrap();
    let mut ours = Vec::new();
    for seq in [65535u64, 65536, 65537] {
        let mut packet = header.clone();
        packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&(seq as u32 * 3000).to_be_bytes());
        let payload = vec![seq as u8; 1100];
        packet.extend_from_slice(&payload);
        sealer
            .seal_rtp(&mut packet, header.len(), (seq >> 16) as u32)
            .unwrap();
        net.receiver.receive(net.now, net.sender.addr, &packet);
        // str0m reports a received packet on its next poll: poll before the next.
        net.pump();
        ours.push((seq, payload));
    }
    assert_same_rtp(net.received_rtp(), &ours, profile);

    // str0m seals after the rollover (ROC 1); we open it.
    net.sent_media.clear();
    let payload = vec![0x42; 500];
    net.str0m_writes(65538, &payload);
    let rtp: Vec<_> = net.sent_media.drain(..).filter(|d| !is_rtcp(d)).collect();
    let header_len = rtp_header_len(&rtp[0]);
    let plain = opener.open_rtp(&rtp[0], header_len, 1).unwrap();
    assert_eq!(plain[header_len..], payload[..]);

    // str0m's SRTCP both ways (sender reports; receiver reports and feedback) opens.
    net.run_for(Duration::from_secs(3));
    let reports: Vec<_> = net.sent_media.drain(..).filter(|d| is_rtcp(d)).collect();
    let feedback: Vec<_> = net
        .returned_media
        .drain(..)
        .filter(|d| is_rtcp(d))
        .collect();
    assert!(!reports.is_empty() && !feedback.is_empty(), "{profile:?}");
    for (srtcp, key) in reports
        .iter()
        .map(|d| (d, &sender_key))
        .chain(feedback.iter().map(|d| (d, &receiver_key)))
    {
        let plain = Receiver::new(key).unwrap().open_rtcp(srtcp).unwrap();
        assert!(is_rtcp(&plain), "{profile:?}: {plain:02x?}");
        // Plain compound RTCP: its packets' lengths add up to the whole.
        let mut at = 0;
        while at + 4 <= plain.len() {
            at += 4 + 4 * usize::from(u16::from_be_bytes([plain[at + 2], plain[at + 3]]));
        }
        assert_eq!(at, plain.len(), "{profile:?}: {plain:02x?}");
    }
    assert_eq!(reports[0][1], 200, "a sender report");

    // Our SRTCP: a receiver report and a PLI for the sender's SSRC, sealed with the
    // receiver's key; twice (SRTCP index 0, then 1), each a keyframe request.
    let media_ssrc = &header[8..12];
    let mut feedback_sealer = Sender::new(&receiver_key).unwrap();
    for _ in 0..2 {
        net.sender.events.clear();
        let mut rtcp = vec![0x80, 201, 0, 1, 0x12, 0x34, 0x56, 0x78];
        rtcp.extend_from_slice(&[0x81, 206, 0, 2, 0x12, 0x34, 0x56, 0x78]);
        rtcp.extend_from_slice(media_ssrc);
        feedback_sealer.seal_rtcp(&mut rtcp).unwrap();
        net.sender.receive(net.now, net.receiver.addr, &rtcp);
        net.pump();
        let requests: Vec<_> = net
            .sender
            .events
            .iter()
            .filter_map(|e| match e {
                Event::KeyframeRequest(r) => Some((r.mid, r.kind)),
                _ => None,
            })
            .collect();
        assert_eq!(
            requests,
            [(net.mid, KeyframeRequestKind::Pli)],
            "{profile:?}: str0m opens our SRTCP"
        );
    }
}

#[test]
fn str0m_and_we_open_each_others_aes_128_gcm() {
    interop(Profile::Aes128Gcm, SrtpProfile::AEAD_AES_128_GCM);
}

#[test]
fn str0m_and_we_open_each_others_aes_256_gcm() {
    interop(Profile::Aes256Gcm, SrtpProfile::AEAD_AES_256_GCM);
}

#[test]
fn str0m_and_we_open_each_others_aes_cm_hmac_sha1_80() {
    interop(Profile::Aes128CmSha1_80, SrtpProfile::AES128_CM_SHA1_80);
}
