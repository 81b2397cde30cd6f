//! The routing core with simulated time and in-memory datagrams: real str0m peers as
//! publisher and subscribers, no sockets, no clocks.

use skylark_sfu::core::{
    Choice, CloseReason, Core, CoreConfig, CoreEvent, DropReason, IdSeed, Output, Role, SendPath,
    SessionError, WallClock, WorkerSlot,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

#[path = "support/junk.rs"]
mod junk;
use junk::{junk, stun_request, Lcg};

const SFU: &str = "10.0.0.1:7882";
/// The SFU's ICE-TCP candidate, in the nets made by [`Net::with_tcp`].
const SFU_TCP: &str = "10.0.0.1:7881";
/// The simulated wall clock at the start of every test: 2001-01-01T00:00:00Z, far from
/// the machine's clock, so a wall time that leaks in from the system shows.
const WALL_START_US: u64 = 978_307_200_000_000;

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    /// Its candidate is TCP (active, RFC 6544): it talks to [`SFU_TCP`] over one
    /// connection, its datagrams RFC 4571 frames.
    proto: Protocol,
    pending: Option<SdpPendingOffer>,
    video: Option<Mid>,
    audio: Option<Mid>,
    frames: Vec<(MediaKind, u64, Vec<u8>)>,
    /// Per frame (same index): the track's last sender report as (NTP µs, RTP time).
    reports: Vec<Option<(i128, u32)>>,
    keyframe_requests: usize,
    connected: bool,
    next: Instant,
}

/// The `a=ice-ufrag` of an SDP.
fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("ufrag in the SDP")
        .trim()
        .to_string()
}

fn crypto() -> Arc<str0m::crypto::CryptoProvider> {
    Arc::new(str0m::crypto::from_feature_flags())
}

impl Client {
    fn new(now: Instant, port: u16, h264: bool, dir: Direction) -> (Client, String) {
        Self::with_layers(now, port, h264, dir, &[])
    }

    fn with_layers(
        now: Instant,
        port: u16,
        h264: bool,
        dir: Direction,
        rids: &[&str],
    ) -> (Client, String) {
        Self::with_profile(now, port, h264, dir, rids, 0x42e01f)
    }

    fn with_profile(
        now: Instant,
        port: u16,
        h264: bool,
        dir: Direction,
        rids: &[&str],
        profile: u32,
    ) -> (Client, String) {
        Self::build(now, port, h264, dir, rids, profile, false, Protocol::Udp)
    }

    /// A viewer that offers H.264 with RTX (pt 103), as browsers do: it asks for lost
    /// packets (NACK) and takes resends.
    fn with_rtx(now: Instant, port: u16) -> (Client, String) {
        Self::build(
            now,
            port,
            true,
            Direction::RecvOnly,
            &[],
            0x42e01f,
            true,
            Protocol::Udp,
        )
    }

    /// A viewer whose only candidate is ICE-TCP, as a browser behind a UDP block.
    fn over_tcp(now: Instant, port: u16) -> (Client, String) {
        let dir = Direction::RecvOnly;
        Self::build(now, port, true, dir, &[], 0x42e01f, false, Protocol::Tcp)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        now: Instant,
        port: u16,
        h264: bool,
        dir: Direction,
        rids: &[&str],
        profile: u32,
        rtx: bool,
        proto: Protocol,
    ) -> (Client, String) {
        let mut b = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(crypto());
        if h264 {
            let rtx = rtx.then(|| 103.into());
            b.codec_config().add_h264(102.into(), rtx, true, profile);
        } else {
            b = b.enable_vp8(true);
        }
        let mut rtc = b.build(now);
        let addr: SocketAddr = format!("10.0.1.1:{port}").parse().unwrap();
        let candidate = match proto {
            Protocol::Udp => Candidate::host(addr, "udp").unwrap(),
            _ => Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(str0m::net::TcpType::Active)
                .build()
                .unwrap(),
        };
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = str0m::media::Simulcast::new();
            for r in rids {
                s.add_send_layer(str0m::media::SimulcastLayer::new(r));
            }
            s
        });
        let video = api.add_media(MediaKind::Video, dir, None, None, simulcast);
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let c = Client {
            rtc,
            addr,
            proto,
            pending: Some(pending),
            video: Some(video),
            audio: Some(audio),
            frames: vec![],
            reports: vec![],
            keyframe_requests: 0,
            connected: false,
            next: now,
        };
        (c, offer.to_sdp_string())
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).unwrap();
        self.rtc
            .sdp_api()
            .accept_answer(self.pending.take().unwrap(), answer)
            .unwrap();
    }

    fn drain(&mut self, wire: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
        loop {
            match self.rtc.poll_output().unwrap() {
                RtcOutput::Timeout(t) => {
                    self.next = t;
                    return;
                }
                RtcOutput::Transmit(t) => wire.push((t.source, t.destination, t.contents.to_vec())),
                RtcOutput::Event(e) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaData(d) => {
                        let kind = if d.params.spec().codec == Codec::H264 {
                            MediaKind::Video
                        } else {
                            MediaKind::Audio
                        };
                        self.frames.push((kind, d.time.numer(), d.data.to_vec()));
                        self.reports.push(d.last_sender_info.map(|sr| {
                            let ntp = sr.ntp_time.duration_since(std::time::UNIX_EPOCH);
                            let us = ntp.map_or(0, |d| d.as_micros() as i128);
                            (us, sr.rtp_time.numer() as u32)
                        }));
                    }
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    _ => {}
                },
            }
        }
    }
}

struct Net {
    start: Instant,
    now: Instant,
    core: Core,
    clients: Vec<Client>,
    events: Vec<CoreEvent>,
    relayed: Vec<skylark_proto::sfu::v1::RelayMessage>,
    /// Keyframe wants an edge pull's publisher sent upstream, by track id.
    upstream: Vec<String>,
    /// A NAT in front of clients: client address → the source the SFU sees.
    nat: HashMap<SocketAddr, SocketAddr>,
    /// STUN Binding requests clients sent, by client address (latest last).
    stun_requests: Vec<(SocketAddr, Vec<u8>)>,
    /// A second worker of the node (`core` is then worker 0 of 2), sharing its port.
    sibling: Option<Core>,
    /// Clients whose datagrams the kernel hands to the sibling's socket.
    via_sibling: HashSet<SocketAddr>,
    /// Handshake datagrams on the wire, in order: (client, what, when).
    handshake: Vec<(SocketAddr, Wire, Instant)>,
    /// Checks carrying USE-CANDIDATE reach the SFU this much later than sent: a
    /// browser's timing (it nominates with a later check than the one that worked).
    nomination_lag: Duration,
    /// Nominating checks on their way: (due, client, datagram).
    lagging: Vec<(Instant, SocketAddr, Vec<u8>)>,
    /// STUN Binding success responses the SFU sent, by client address.
    stun_responses: Vec<SocketAddr>,
    /// Clients whose link loses every n-th RTP packet the SFU sends them: (n, sent).
    lose_every: HashMap<SocketAddr, (u32, u32)>,
    /// Clients whose next H.264 packet (payload type 102) from the SFU is lost.
    lose_next_video: Vec<SocketAddr>,
    /// Clients whose RTCP to the SFU is held back (NACKs arriving late), in order.
    hold_rtcp: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// Resends (RTX, payload type 103) the SFU sent, by client.
    resends: HashMap<SocketAddr, u32>,
    /// H.264 packets (payload type 102) the SFU sent: (client, when, datagram bytes).
    video_out: Vec<(SocketAddr, Instant, usize)>,
    /// ICE-TCP connections the core let go of, by remote address.
    tcp_closed: Vec<SocketAddr>,
}

/// A handshake datagram, as `Net` sees it pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// A client's STUN Binding request carrying USE-CANDIDATE: it nominates a path.
    Nomination,
    /// DTLS from a client.
    DtlsIn,
    /// DTLS from the SFU.
    DtlsOut,
}

/// RFC 7983: DTLS records start with 20..=63.
fn is_dtls(d: &[u8]) -> bool {
    d.first().is_some_and(|b| (20..=63).contains(b))
}

/// Whether a STUN message has a USE-CANDIDATE attribute (0x0025).
fn has_use_candidate(d: &[u8]) -> bool {
    let mut attrs = d.get(20..).unwrap_or_default();
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        if kind == 0x0025 {
            return true;
        }
        attrs = attrs.get(4 + len.div_ceil(4) * 4..).unwrap_or_default();
    }
    false
}

impl Net {
    fn new() -> Net {
        Self::with_seed([7; 32])
    }

    fn with_seed(seed: [u8; 32]) -> Net {
        Self::with(seed, 100, skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT)
    }

    fn with_timeout(timeout: Duration) -> Net {
        Self::with([7; 32], 100, timeout)
    }

    fn with_capacity(max_sessions: usize) -> Net {
        Self::with(
            [7; 32],
            max_sessions,
            skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT,
        )
    }

    fn with(seed: [u8; 32], max_sessions: usize, connect_timeout: Duration) -> Net {
        Self::with_worker(seed, max_sessions, connect_timeout, WorkerSlot::default())
    }

    /// A node with an ICE-TCP candidate at [`SFU_TCP`] beside its UDP one.
    fn with_tcp() -> Net {
        let mut net = Self::new();
        let addr: SocketAddr = SFU.parse().unwrap();
        net.core = Core::new(CoreConfig {
            local_addr: addr,
            announce_addr: addr,
            tcp_addr: Some(SFU_TCP.parse().unwrap()),
            max_sessions: 100,
            connect_timeout: skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT,
            wall_clock: WallClock::new(net.start, WALL_START_US),
            id_seed: IdSeed::new([7; 32]),
            worker: WorkerSlot::default(),
        });
        net
    }

    /// A node of two workers: `core` is worker 0, `sibling` worker 1.
    fn two_workers() -> Net {
        let slot = |index| WorkerSlot { index, count: 2 };
        let timeout = skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT;
        let mut net = Self::with_worker([7; 32], 100, timeout, slot(0));
        let other = Self::with_worker([8; 32], 100, timeout, slot(1));
        net.sibling = Some(other.core);
        net
    }

    fn with_worker(
        seed: [u8; 32],
        max_sessions: usize,
        connect_timeout: Duration,
        worker: WorkerSlot,
    ) -> Net {
        let addr: SocketAddr = SFU.parse().unwrap();
        let start = Instant::now();
        let core = Core::new(CoreConfig {
            local_addr: addr,
            announce_addr: addr,
            tcp_addr: None,
            max_sessions,
            connect_timeout,
            wall_clock: WallClock::new(start, WALL_START_US),
            id_seed: IdSeed::new(seed),
            worker,
        });
        Net {
            start,
            now: start,
            core,
            clients: vec![],
            events: vec![],
            relayed: vec![],
            upstream: vec![],
            nat: HashMap::new(),
            stun_requests: vec![],
            sibling: None,
            via_sibling: HashSet::new(),
            handshake: vec![],
            nomination_lag: Duration::ZERO,
            lagging: vec![],
            stun_responses: vec![],
            lose_every: HashMap::new(),
            lose_next_video: vec![],
            hold_rtcp: HashMap::new(),
            resends: HashMap::new(),
            video_out: Vec::new(),
            tcp_closed: Vec::new(),
        }
    }

    /// A client's datagram to the SFU, through the NAT.
    fn deliver_to_core(&mut self, src: SocketAddr, bytes: &[u8]) {
        // Binding request: class/method 0x0001, magic cookie.
        if bytes.len() >= 20 && bytes[..2] == [0, 1] && bytes[4..8] == [0x21, 0x12, 0xa4, 0x42] {
            if !self.nomination_lag.is_zero() && has_use_candidate(bytes) {
                let due = self.now + self.nomination_lag;
                self.lagging.push((due, src, bytes.to_vec()));
                return;
            }
            self.arrive(src, bytes);
        } else {
            self.arrive(src, bytes);
        }
    }

    /// Nominating checks whose lag is over.
    fn deliver_lagging(&mut self) -> bool {
        let now = self.now;
        let (due, later) = self.lagging.drain(..).partition(|(t, ..)| *t <= now);
        self.lagging = later;
        let due: Vec<(Instant, SocketAddr, Vec<u8>)> = due;
        for (_, src, bytes) in &due {
            self.arrive(*src, bytes);
        }
        !due.is_empty()
    }

    fn arrive(&mut self, src: SocketAddr, bytes: &[u8]) {
        if bytes.len() >= 20 && bytes[..2] == [0, 1] && bytes[4..8] == [0x21, 0x12, 0xa4, 0x42] {
            self.stun_requests.push((src, bytes.to_vec()));
            if has_use_candidate(bytes) {
                self.handshake.push((src, Wire::Nomination, self.now));
            }
        }
        if is_dtls(bytes) {
            self.handshake.push((src, Wire::DtlsIn, self.now));
        }
        let seen = self.nat.get(&src).copied().unwrap_or(src);
        match &mut self.sibling {
            Some(s) if self.via_sibling.contains(&src) => s.handle_datagram(self.now, seen, bytes),
            _ => self.core.handle_datagram(self.now, seen, bytes),
        }
    }

    /// Moves every datagram until the network is quiet, then advances time by `step`.
    fn run(&mut self, step: Duration) {
        for _ in 0..200 {
            let mut wire = Vec::new();
            for c in &mut self.clients {
                c.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                c.drain(&mut wire);
            }
            self.core.handle_timeout(self.now);
            if let Some(s) = &mut self.sibling {
                s.handle_timeout(self.now);
            }
            let lagged = self.deliver_lagging();
            let mut moved = !wire.is_empty() || lagged;
            for (src, dst, bytes) in wire.drain(..) {
                if dst == SFU_TCP.parse().unwrap() {
                    // A frame on the client's ICE-TCP connection.
                    self.core.handle_tcp_frame(self.now, src, &bytes);
                    continue;
                }
                // RTCP: version 2, packet type 192..=223.
                let rtcp = bytes.len() > 8 && bytes[0] >> 6 == 2 && (192..=223).contains(&bytes[1]);
                if let Some(held) = self.hold_rtcp.get_mut(&src).filter(|_| rtcp) {
                    held.push(bytes);
                    continue;
                }
                self.deliver_to_core(src, &bytes);
            }
            while let Some(o) = self
                .core
                .poll_output()
                .or_else(|| self.sibling.as_mut().and_then(Core::poll_output))
            {
                match o {
                    Output::Transmit {
                        proto,
                        destination,
                        contents,
                    } => {
                        moved = true;
                        let nat = &self.nat;
                        if let Some(c) = self.clients.iter_mut().find(|c| {
                            c.proto == proto
                                && nat.get(&c.addr).copied().unwrap_or(c.addr) == destination
                        }) {
                            if is_dtls(&contents) {
                                self.handshake.push((c.addr, Wire::DtlsOut, self.now));
                            }
                            if contents.len() >= 20 && contents[..2] == [1, 1] {
                                self.stun_responses.push(c.addr);
                            }
                            // RTP (version 2, not an RTCP packet type): maybe lost.
                            let rtp = contents.len() > 12
                                && contents[0] >> 6 == 2
                                && !(192..=223).contains(&contents[1]);
                            if rtp && contents[1] & 0x7f == 103 {
                                *self.resends.entry(c.addr).or_default() += 1;
                            }
                            if rtp && contents[1] & 0x7f == 102 {
                                self.video_out.push((c.addr, self.now, contents.len()));
                                if let Some(i) =
                                    self.lose_next_video.iter().position(|a| *a == c.addr)
                                {
                                    self.lose_next_video.remove(i);
                                    continue;
                                }
                            }
                            if let Some((n, sent)) =
                                self.lose_every.get_mut(&c.addr).filter(|_| rtp)
                            {
                                *sent += 1;
                                if *sent % *n == 0 {
                                    continue;
                                }
                            }
                            let source = match proto {
                                Protocol::Udp => SFU.parse().unwrap(),
                                _ => SFU_TCP.parse().unwrap(),
                            };
                            let input = Input::Receive(
                                self.now,
                                Receive {
                                    proto,
                                    source,
                                    destination: c.addr,
                                    contents: contents.as_slice().try_into().unwrap(),
                                },
                            );
                            c.rtc.handle_input(input).unwrap();
                            c.drain(&mut wire);
                        }
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::CloseTcp { remote } => self.tcp_closed.push(remote),
                    Output::Relay { msg, .. } => self.relayed.push(msg),
                    Output::UpstreamKeyframe { track_id, .. } => self.upstream.push(track_id),
                    Output::Steer {
                        worker,
                        source,
                        contents,
                    } => {
                        moved = true;
                        let to = match (worker, &mut self.sibling) {
                            (0, _) => &mut self.core,
                            (1, Some(s)) => s,
                            _ => panic!("steered to worker {worker}, which does not exist"),
                        };
                        to.handle_steered_datagram(self.now, source, &contents);
                    }
                }
            }
            for (src, dst, bytes) in wire.drain(..) {
                if dst == SFU_TCP.parse().unwrap() {
                    self.core.handle_tcp_frame(self.now, src, &bytes);
                } else {
                    self.deliver_to_core(src, &bytes);
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.now += step;
    }

    fn publisher(&mut self, room: &str, port: u16) -> usize {
        self.publisher_with_layers(room, port, &[])
    }

    /// A publisher of simulcast layers `rids` (none: one stream).
    fn publisher_with_layers(&mut self, room: &str, port: u16, rids: &[&str]) -> usize {
        let (mut c, offer) = Client::with_layers(self.now, port, true, Direction::SendOnly, rids);
        let (_, answer) = self.core.publish(self.now, room, &offer).unwrap();
        c.accept(&answer);
        self.clients.push(c);
        self.clients.len() - 1
    }

    fn subscriber(&mut self, room: &str, port: u16) -> usize {
        self.subscriber_session(room, port).0
    }

    /// A subscriber: its client index, session id and the SFU's ICE ufrag for it.
    fn subscriber_session(&mut self, room: &str, port: u16) -> (usize, String, String) {
        let (mut c, offer) = Client::new(self.now, port, true, Direction::RecvOnly);
        let (session, answer) = self.core.subscribe(self.now, room, &offer).unwrap();
        c.accept(&answer);
        self.clients.push(c);
        (self.clients.len() - 1, session, ice_ufrag(&answer))
    }

    /// A subscriber whose only candidate is ICE-TCP: its client index and session id.
    fn tcp_subscriber(&mut self, room: &str, port: u16) -> (usize, String) {
        let (mut c, offer) = Client::over_tcp(self.now, port);
        let (session, answer) = self.core.subscribe(self.now, room, &offer).unwrap();
        c.accept(&answer);
        self.clients.push(c);
        (self.clients.len() - 1, session)
    }

    fn video_frames(&self, c: usize) -> usize {
        self.clients[c]
            .frames
            .iter()
            .filter(|f| f.0 == MediaKind::Video)
            .count()
    }

    /// Writes one video frame (keyframe or not) and one audio frame from client `p`.
    fn send(&mut self, p: usize, n: u64, keyframe: bool) {
        let c = &mut self.clients[p];
        let nal = if keyframe { 0x65 } else { 0x41 };
        let mut video = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, nal];
        // Payload without zero bytes, so it can't emulate a start code.
        video.extend_from_slice(format!("{n:08}").as_bytes());
        video.extend(std::iter::repeat_n(0xaa, 3000));
        let vmid = c.video.unwrap();
        let w = c.rtc.writer(vmid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .unwrap()
            .pt();
        w.write(pt, self.now, MediaTime::from_90khz(n * 3000), video)
            .unwrap();
        let amid = c.audio.unwrap();
        let w = c.rtc.writer(amid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        w.write(
            pt,
            self.now,
            MediaTime::new(n * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            vec![0xf8, 1, 2, n as u8],
        )
        .unwrap();
    }

    fn connect_all(&mut self) {
        for _ in 0..100 {
            self.run(Duration::from_millis(10));
            if self.clients.iter().all(|c| c.connected) {
                return;
            }
        }
        panic!("peers did not connect");
    }
}

#[test]
fn publisher_fans_out_to_subscribers_from_a_keyframe() {
    let mut net = Net::new();
    let p = net.publisher("r1", 5000);
    let subs: Vec<usize> = (0..5).map(|i| net.subscriber("r1", 6000 + i)).collect();
    net.connect_all();
    assert!(net
        .events
        .contains(&CoreEvent::RoomLive { room: "r1".into() }));
    // Subscribers joined: the publisher is asked for a keyframe.
    net.run(Duration::from_millis(400));
    assert!(
        net.clients[p].keyframe_requests >= 1,
        "keyframe requested from the publisher"
    );

    // Delta frames before any keyframe are not forwarded; from the keyframe on, all are.
    for n in 0..3 {
        net.send(p, n, false);
        net.run(Duration::from_millis(33));
    }
    for n in 3..30 {
        net.send(p, n, n == 3);
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    for &s in &subs {
        let video: Vec<_> = net.clients[s]
            .frames
            .iter()
            .filter(|f| f.0 == MediaKind::Video)
            .collect();
        assert_eq!(
            video.len(),
            27,
            "subscriber {s} got every frame from the keyframe on"
        );
        assert!(video[0].2.contains(&0x65), "first frame is the keyframe");
        for (i, f) in video.iter().enumerate() {
            let n = (i + 3) as u64;
            let nal = if n == 3 { 0x65 } else { 0x41 };
            let at =
                f.2.windows(4)
                    .position(|w| w == [0, 0, 1, nal])
                    .expect("slice NAL")
                    + 4;
            assert_eq!(
                &f.2[at..at + 8],
                format!("{n:08}").as_bytes(),
                "frame order and payload intact"
            );
            assert!(f.2[at + 8..].iter().all(|b| *b == 0xaa) && f.2.len() - at - 8 == 3000);
        }
        let audio = net.clients[s]
            .frames
            .iter()
            .filter(|f| f.0 == MediaKind::Audio)
            .count();
        assert!(audio >= 27, "audio forwarded ({audio})");
    }
}

#[test]
fn publisher_reconnect_keeps_subscriber_timeline_moving_forward() {
    let mut net = Net::new();
    let p1 = net.publisher("r2", 5000);
    let s = net.subscriber("r2", 6000);
    net.connect_all();
    for n in 0..10 {
        net.send(p1, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    // A new publisher session replaces the first one (same room).
    let p2 = net.publisher("r2", 5001);
    net.connect_all();
    assert!(
        !net.clients[p1].rtc.is_alive()
            || net
                .events
                .iter()
                .any(|e| matches!(e, CoreEvent::SessionClosed { .. }))
    );
    for n in 0..10 {
        // Its clock starts somewhere else entirely.
        net.send(p2, 20 + n, n == 0);
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    let times: Vec<u64> = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .map(|f| f.1)
        .collect();
    assert_eq!(times.len(), 20, "frames from both publishers");
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "timeline strictly increasing: {times:?}"
    );
    assert!(
        times[10] - times[9] <= 6000,
        "no jump at the switch: {} → {}",
        times[9],
        times[10]
    );
}

#[test]
fn offers_without_h264_and_garbage_are_refused() {
    let mut net = Net::new();
    let (_, vp8_offer) = Client::new(net.now, 5000, false, Direction::SendOnly);
    assert!(matches!(
        net.core.publish(net.now, "r", &vp8_offer),
        Err(SessionError::UnsupportedCodec(_))
    ));
    assert!(matches!(
        net.core.publish(net.now, "r", "v=0\r\nnonsense"),
        Err(SessionError::BadSdp(_))
    ));
    assert!(matches!(
        net.core.subscribe(net.now, "r", "garbage"),
        Err(SessionError::BadSdp(_))
    ));
    assert_eq!(net.core.close("nope"), Err(SessionError::UnknownSession));
    assert!(net
        .core
        .add_candidate("nope", "candidate:1 1 udp 1 1.2.3.4 5 typ host")
        .is_err());
}

#[test]
fn random_datagrams_do_not_disturb_a_live_session() {
    let mut net = Net::new();
    let p = net.publisher("r3", 5000);
    let s = net.subscriber("r3", 6000);
    net.connect_all();
    let mut seed = 0x1234_5678_u64;
    for n in 0..20 {
        net.send(p, n, n == 0);
        for k in 0..20 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 40) as usize % 1400;
            let junk: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            // From strangers and from the peers' own addresses.
            let src: SocketAddr = if k % 2 == 0 {
                "10.9.9.9:1".parse().unwrap()
            } else {
                net.clients[s].addr
            };
            net.core.handle_datagram(net.now, src, &junk);
        }
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    assert_eq!(video, 20, "every frame still arrived");
    assert!(net.core.counters().datagrams_unmatched > 0);
}

#[test]
fn simulcast_layers_are_tracks_and_a_subscriber_follows_one() {
    let mut net = Net::new();
    let p = net.publisher_with_layers("r4", 5000, &["h", "l"]);
    let s = net.subscriber("r4", 6000);
    net.core.attach_relay(net.now, "r4", 7);
    net.connect_all();
    for n in 0..10u64 {
        for (rid, tag) in [("l", b'L'), ("h", b'H')] {
            let c = &mut net.clients[p];
            let mut frame = vec![0, 0, 0, 1, if n == 0 { 0x65 } else { 0x41 }, tag];
            frame.extend_from_slice(format!("{n:08}").as_bytes());
            frame.extend(std::iter::repeat_n(0xaa, 500));
            let w = c.rtc.writer(c.video.unwrap()).unwrap().rid(rid.into());
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::H264)
                .unwrap()
                .pt();
            w.write(pt, net.now, MediaTime::from_90khz(n * 3000), frame)
                .unwrap();
        }
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    let video: Vec<u8> = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .map(|f| f.2[f.2.windows(3).position(|w| w == [0, 0, 1]).unwrap() + 4])
        .collect();
    assert_eq!(video.len(), 10, "one layer's frames: {video:?}");
    assert!(
        video.iter().all(|t| *t == video[0]),
        "a single layer, no mixing: {video:?}"
    );
    // Relay consumers get every layer as its own track.
    use skylark_proto::sfu::v1::relay_message::Msg;
    let mut tracks: Vec<String> = net
        .relayed
        .iter()
        .filter_map(|m| match &m.msg {
            Some(Msg::Track(t)) => Some(t.rid.clone()),
            _ => None,
        })
        .collect();
    tracks.sort();
    assert_eq!(tracks, vec!["h", "l"]);
    let frames = net.relayed.iter().filter(|m| matches!(&m.msg, Some(Msg::Frame(f)) if f.track_id.ends_with(":h") || f.track_id.ends_with(":l"))).count();
    assert!(frames >= 20, "both layers relayed ({frames})");
}

/// Frame `n` of each of `layers` (rid, tag byte, size) from publisher `p`, a keyframe every
/// 10th; without an SPS a keyframe's size stands for its picture, so larger means larger.
/// Each layer's RTP time starts elsewhere (a browser's start at random values).
fn send_layers(net: &mut Net, p: usize, layers: &[(&str, u8, usize)], n: u64) {
    for &(rid, tag, size) in layers {
        let base = u64::from(tag) * 100_000_000;
        let c = &mut net.clients[p];
        let mut frame = vec![
            0,
            0,
            0,
            1,
            if n.is_multiple_of(10) { 0x65 } else { 0x41 },
            tag,
        ];
        frame.extend_from_slice(format!("{n:08}").as_bytes());
        frame.extend(std::iter::repeat_n(0xaa, size));
        let w = c.rtc.writer(c.video.unwrap()).unwrap().rid(rid.into());
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .unwrap()
            .pt();
        w.write(pt, net.now, MediaTime::from_90khz(base + n * 3000), frame)
            .unwrap();
    }
    net.run(Duration::from_millis(33));
}

/// The tag byte (the layer) of each video frame client `c` received, from index `from`.
fn layer_tags(net: &Net, c: usize, from: usize) -> Vec<u8> {
    net.clients[c]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .skip(from)
        .map(|f| f.2[f.2.windows(3).position(|w| w == [0, 0, 1]).unwrap() + 4])
        .collect()
}

/// A browser publisher pauses its upper simulcast layers when its bandwidth estimate or
/// CPU drops. A viewer on a layer gone silent moves to the top layer still sending (it
/// froze before: a silent layer shows no loss to step down on), Auto or not; one that
/// chose the layer goes back to it when it sends again. Each layer's RTP clock starts
/// elsewhere, as a browser's do, and the viewer's timeline never jumps between them.
#[test]
fn a_viewer_leaves_a_layer_gone_silent_and_returns_to_its_choice() {
    let mut net = Net::new();
    let p = net.publisher_with_layers("r9", 5000, &["h", "l"]);
    let (s, session, _) = net.subscriber_session("r9", 6000);
    net.connect_all();
    let (h, l) = (("h", b'H', 3000), ("l", b'L', 500));
    let mut n = 0;
    let mut phase = |net: &mut Net, layers: &[(&str, u8, usize)], frames: u64| {
        let from = net.video_frames(s);
        for _ in 0..frames {
            send_layers(net, p, layers, n);
            n += 1;
        }
        layer_tags(net, s, from)
    };
    let both = phase(&mut net, &[h, l], 30);
    assert_eq!(
        both.last(),
        Some(&b'H'),
        "Auto starts on the top layer: {both:?}"
    );
    let now = net.now;
    net.core
        .layers(&session, Some(Choice::Layer("h".into())), now)
        .unwrap();

    // h pauses: after 500 ms without a frame the viewer takes l from its next keyframe.
    let paused = phase(&mut net, &[l], 90);
    assert!(
        paused.len() >= 30,
        "frames keep coming while h is silent: {paused:?}"
    );
    let tail = &paused[paused.len() - 30..];
    assert!(
        tail.iter().all(|t| *t == b'L'),
        "on l while h is silent: {paused:?}"
    );
    // h sends again: the chosen layer comes back at its keyframe.
    let resumed = phase(&mut net, &[h, l], 40);
    assert!(
        resumed[resumed.len() - 15..].iter().all(|t| *t == b'H'),
        "back on the chosen h: {resumed:?}"
    );
    let report = net.core.layers(&session, None, net.now).unwrap();
    assert_eq!(report.choice, Choice::Layer("h".into()));

    // Auto alike.
    let now = net.now;
    net.core.layers(&session, Some(Choice::Auto), now).unwrap();
    let paused = phase(&mut net, &[l], 90);
    assert!(
        paused.len() >= 30,
        "Auto: frames keep coming while h is silent: {paused:?}"
    );
    assert!(
        paused[paused.len() - 30..].iter().all(|t| *t == b'L'),
        "Auto on l while h is silent: {paused:?}"
    );
    // One timeline across the switches: no jump between the layers' RTP clocks.
    let times: Vec<u64> = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .map(|f| f.1)
        .collect();
    for w in times.windows(2) {
        assert!(
            w[1] > w[0] && w[1] - w[0] <= 90_000,
            "RTP time jumps {} → {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn baseline_publisher_reaches_constrained_baseline_subscriber() {
    // FFmpeg offers 42001e (baseline); a WHEP client may accept only 42e01f.
    let mut net = Net::new();
    let s = net.subscriber("r5", 6000);
    let (mut c, offer) =
        Client::with_profile(net.now, 5000, true, Direction::SendOnly, &[], 0x42001e);
    let (_, answer) = net.core.publish(net.now, "r5", &offer).unwrap();
    c.accept(&answer);
    net.clients.push(c);
    let p = net.clients.len() - 1;
    net.connect_all();
    for n in 0..10 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    assert_eq!(video, 10);
}

#[test]
fn local_publisher_feeds_webrtc_subscribers_and_relays_aac() {
    use skylark_sfu::core::FrameCodec;
    use std::sync::Arc as A;
    let mut net = Net::new();
    let s = net.subscriber("r6", 6000);
    net.core.attach_relay(net.now, "r6", 9);
    net.connect_all();
    let session = net.core.publish_local("r6").unwrap();
    assert!(
        net.events
            .contains(&CoreEvent::RoomLive { room: "r6".into() })
            || {
                net.run(Duration::from_millis(1));
                net.events
                    .contains(&CoreEvent::RoomLive { room: "r6".into() })
            }
    );
    for n in 0..10u64 {
        let v = tagged_h264(n, n == 0);
        let now = net.now;
        net.core
            .push_local(now, &session, FrameCodec::H264, n * 3000, A::from(v), "")
            .unwrap();
        net.core
            .push_local(
                now,
                &session,
                FrameCodec::Opus,
                n * 960,
                A::from(vec![0xf8, 0xff, 0xfe]),
                "",
            )
            .unwrap();
        net.core
            .push_local(
                now,
                &session,
                FrameCodec::Aac,
                n * 1024,
                A::from(vec![0x21, 0x10]),
                "1190",
            )
            .unwrap();
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    let audio = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Audio)
        .count();
    assert_eq!(
        video, 10,
        "H.264 from the local publisher reaches the WebRTC viewer"
    );
    assert_eq!(audio, 10, "Opus too; AAC is not sent to WebRTC viewers");
    use skylark_proto::sfu::v1::relay_message::Msg;
    let aac_track = net
        .relayed
        .iter()
        .any(|m| matches!(&m.msg, Some(Msg::Track(t)) if t.codec == "aac" && t.fmtp == "1190"));
    assert!(
        aac_track,
        "relay consumers get the AAC track with its config"
    );
    let aac_frames = net
        .relayed
        .iter()
        .filter(|m| matches!(&m.msg, Some(Msg::Frame(f)) if f.track_id == "local-aac"))
        .count();
    assert_eq!(aac_frames, 10);
    assert_eq!(net.core.session_counts(), (1, 1));
    net.core.close(&session).unwrap();
    assert!(net.core.session_room(&session).is_none());
    net.run(Duration::from_millis(1));
    assert!(net
        .events
        .contains(&CoreEvent::RoomOffline { room: "r6".into() }));
}

/// The SFU answers a viewer's ClientHello at once, on the path it came from. An
/// ice-lite agent may only send on a path the viewer nominated, and browsers nominate
/// with their next check (Chromium: ~48 ms after the path works), while they send the
/// ClientHello as soon as it works: the SFU's flight used to wait for that check, which
/// made the DTLS handshake ~50 ms of every WHEP join.
#[test]
fn the_sfu_answers_a_client_hello_before_the_path_is_nominated() {
    let mut net = Net::new();
    net.nomination_lag = Duration::from_millis(48);
    let p = net.publisher("r10", 5000);
    let s = net.subscriber("r10", 6000);
    // 1 ms steps: each datagram is answered within the step it arrives in. The run
    // lasts past the lagging nominations.
    for _ in 0..200 {
        net.run(Duration::from_millis(1));
    }
    assert!(net.clients[p].connected && net.clients[s].connected);
    let addr = net.clients[s].addr;
    let seen: Vec<(Wire, Instant)> = net
        .handshake
        .iter()
        .filter(|(a, ..)| *a == addr)
        .map(|(_, w, t)| (*w, *t))
        .collect();
    let first = |w: Wire| seen.iter().find(|(x, _)| *x == w).map(|(_, t)| *t);
    let hello = first(Wire::DtlsIn).expect("a ClientHello");
    let nomination = first(Wire::Nomination).expect("a nominating check");
    let answer = first(Wire::DtlsOut).expect("the SFU's flight");
    // What makes this test mean something: the client nominates after its hello.
    assert!(hello < nomination, "{seen:?}");
    assert_eq!(
        answer, hello,
        "the flight left when the hello came: {seen:?}"
    );
    // The check the SFU made in the client's name is answered to nobody: each response
    // the client got answers a check of its own.
    let asked = net.stun_requests.iter().filter(|(a, _)| *a == addr).count();
    let answered = net.stun_responses.iter().filter(|a| **a == addr).count();
    assert_eq!(answered, asked);
    // Media takes the path too, before and after the client's own nomination.
    for n in 0..10 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.video_frames(s), 10);
}

#[test]
fn sfu_takes_the_dtls_server_role() {
    // WHIP/WHEP clients offer `actpass`; answering `passive` makes the SFU the DTLS
    // server, so a client's own DTLS server side (GStreamer 1.22's fails against
    // ECDSA-only clients) is never used against us.
    let mut net = Net::new();
    let (_, offer) = Client::new(net.now, 5000, true, Direction::SendOnly);
    assert!(offer.contains("a=setup:actpass"));
    let (_, answer) = net.core.publish(net.now, "r7", &offer).unwrap();
    assert!(answer.contains("a=setup:passive"), "answer: {answer}");
    assert!(answer.contains("a=fingerprint:sha-256 "));
}

/// The `a=fingerprint` of an SDP.
fn fingerprint(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:"))
        .expect("fingerprint in the SDP")
        .trim()
        .to_string()
}

#[test]
fn a_worker_presents_one_certificate_to_all_its_peers_and_another_worker_its_own() {
    // One certificate per worker, as mediasoup does: no key generation per join, and
    // one shared OpenSSL context. Each worker makes its own.
    let mut net = Net::two_workers();
    let (_, offer) = Client::new(net.now, 5200, true, Direction::SendOnly);
    let (_, publisher) = net.core.publish(net.now, "fp", &offer).unwrap();
    let answers: Vec<String> = (0..2)
        .map(|i| {
            let (_, offer) = Client::new(net.now, 5201 + i, true, Direction::RecvOnly);
            net.core.subscribe(net.now, "fp", &offer).unwrap().1
        })
        .collect();
    assert_eq!(fingerprint(&answers[0]), fingerprint(&answers[1]));
    assert_eq!(fingerprint(&publisher), fingerprint(&answers[0]));
    let (_, offer) = Client::new(net.now, 5203, true, Direction::RecvOnly);
    let sibling = net.sibling.as_mut().unwrap();
    let (_, other) = sibling.subscribe(net.now, "fp", &offer).unwrap();
    assert_ne!(fingerprint(&other), fingerprint(&answers[0]));
}

#[test]
fn subscribers_get_no_header_extension_and_publishers_keep_theirs() {
    // TWCC feedback only feeds a sender's bandwidth estimate; viewers' feedback cost the
    // SFU a fifth of its CPU (docs/benchmarks.md). Publishers' encoders need it, and
    // their simulcast layers are told apart by MID and RID.
    let mut net = Net::new();
    let (_, offer) = Client::new(net.now, 5100, true, Direction::SendOnly);
    let (_, answer) = net.core.publish(net.now, "r8", &offer).unwrap();
    assert!(answer.contains("transport-wide-cc"), "publisher: {answer}");
    assert!(answer.contains("sdes:mid"), "publisher: {answer}");
    let (_, offer) = Client::with_rtx(net.now, 5101);
    assert!(offer.contains("transport-wide-cc") && offer.contains("sdes:mid"));
    let (_, answer) = net.core.subscribe(net.now, "r8", &offer).unwrap();
    // No MID either (str0m would write it on every forwarded packet): the viewer binds
    // each stream by the SSRCs the answer lists, RTX with its FID group.
    assert!(!answer.contains("a=extmap:"), "subscriber: {answer}");
    let media = answer.split("\r\nm=").skip(1);
    for m in media {
        assert!(
            m.contains("a=ssrc:"),
            "subscriber media without a=ssrc: {m}"
        );
    }
    assert!(answer.contains("a=ssrc-group:FID"), "subscriber: {answer}");
}

#[test]
fn a_subscribers_audio_and_video_are_one_stream_for_lip_sync() {
    // Browsers synchronise a stream's tracks, not tracks of different streams.
    let mut net = Net::new();
    let (_, offer) = Client::new(net.now, 5102, true, Direction::RecvOnly);
    let (_, answer) = net.core.subscribe(net.now, "sync", &offer).unwrap();
    let streams: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .map(|m| m.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(streams, ["skylark-sync", "skylark-sync"], "{answer}");
}

/// A local publisher's H.264 access unit (SPS, PPS, a slice) tagged with `n` (see
/// [`frame_tag`]).
fn tagged_h264(n: u64, keyframe: bool) -> Vec<u8> {
    let nal = if keyframe { 0x65 } else { 0x41 };
    let mut v = vec![
        0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, nal,
    ];
    v.extend_from_slice(format!("{n:08}").as_bytes());
    v
}

/// The number a test wrote into a frame: 8 digits after the H.264 slice's NAL header
/// (video), bytes 2–3 (audio).
fn frame_tag(kind: MediaKind, data: &[u8]) -> u64 {
    match kind {
        MediaKind::Video => {
            let slice = |nal: u8| data.windows(4).position(|w| w == [0, 0, 1, nal]);
            let at = slice(0x65).or_else(|| slice(0x41)).unwrap() + 4;
            std::str::from_utf8(&data[at..at + 8])
                .unwrap()
                .parse()
                .unwrap()
        }
        MediaKind::Audio => u64::from(data[2]) << 8 | u64::from(data[3]),
    }
}

/// Each frame client `c` received after a sender report, keyed by its kind and `key` of
/// its data: its capture time (µs) on the clock that report gives.
fn report_times(
    c: &Client,
    key: impl Fn(MediaKind, &[u8]) -> u64,
) -> HashMap<(MediaKind, u64), i128> {
    let mut at = HashMap::new();
    for ((kind, time, data), report) in c.frames.iter().zip(&c.reports) {
        let Some((ntp_us, rtp)) = report else {
            continue;
        };
        let hz = if *kind == MediaKind::Video {
            90_000
        } else {
            48_000
        };
        let ticks = (*time as u32).wrapping_sub(*rtp) as i32;
        at.insert(
            (*kind, key(*kind, data)),
            ntp_us + i128::from(ticks) * 1_000_000 / hz,
        );
    }
    at
}

#[test]
fn sender_reports_put_audio_and_video_on_the_capture_clock() {
    // The publisher's video takes 60 ms longer to encode than its audio: a frame of each
    // captured at the same instant reaches the SFU 60 ms apart. The subscriber's sender
    // reports must still map both to one capture time, or the browser delays the audio
    // to match video that is really 60 ms late (lip sync off by the encoder's delay).
    let mut net = Net::new();
    let p = net.publisher("lips", 5000);
    let s = net.subscriber("lips", 6000);
    net.connect_all();
    let start = net.now;
    let capture = |n: u64| start + Duration::from_millis(30 * n);
    // Browsers send an audio sender report only every 5 s (str0m too): run past it.
    for tick in 0..900u64 {
        let now = net.now;
        let c = &mut net.clients[p];
        if tick % 3 == 0 {
            let n = tick / 3;
            let w = c.rtc.writer(c.audio.unwrap()).unwrap();
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .unwrap()
                .pt();
            let t = MediaTime::new(1_000 + n * 1440, str0m::media::Frequency::FORTY_EIGHT_KHZ);
            w.write(pt, now, t, vec![0xf8, 1, (n >> 8) as u8, n as u8])
                .unwrap();
        }
        if tick % 3 == 0 && tick >= 6 {
            let n = tick / 3 - 2;
            let mut video = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x65];
            video.extend_from_slice(format!("{n:08}").as_bytes());
            video.extend(std::iter::repeat_n(0xaa, 1500));
            let w = c.rtc.writer(c.video.unwrap()).unwrap();
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::H264)
                .unwrap()
                .pt();
            let t = MediaTime::from_90khz(777_000 + n * 2700);
            w.write(pt, capture(n), t, video).unwrap();
        }
        net.run(Duration::from_millis(10));
    }
    // Capture time of frame n per kind, on the clock the subscriber's reports give.
    let sub = &net.clients[s];
    let at = report_times(sub, frame_tag);
    let offsets: Vec<i128> = (200..290)
        .filter_map(|n| Some(at.get(&(MediaKind::Video, n))? - at.get(&(MediaKind::Audio, n))?))
        .collect();
    assert!(
        offsets.len() >= 40,
        "frames with sender reports: {} (frames {}, with a report {}, keyed {})",
        offsets.len(),
        sub.frames.len(),
        sub.reports.iter().flatten().count(),
        at.keys().filter(|k| k.0 == MediaKind::Video).count()
    );
    let worst = offsets.iter().map(|o| o.abs()).max().unwrap();
    assert!(
        worst <= 5_000,
        "audio–video offset up to {worst} µs: {offsets:?}"
    );
}

#[test]
fn an_rtmp_sources_sender_reports_put_transcoded_audio_on_its_video_clock() {
    // An RTMP source's audio reaches the SFU transcoded: 20 ms Opus packets released in
    // 100 ms bursts (AAC frames of 23.2 ms complete them, FFmpeg interleaves), 60–180 ms
    // after their media time, video 40 ms after; the first video frames come 150 ms later
    // still (encoder start-up), so the source clock's anchor moves back once the faster
    // ones arrive. The viewer's sender reports must still give one capture time to audio
    // and video of one media time: the browser lines them up by those reports.
    use skylark_sfu::core::FrameCodec;
    let mut net = Net::new();
    let s = net.subscriber("rtmp-lips", 6000);
    net.connect_all();
    let session = net.core.publish_local("rtmp-lips").unwrap();
    let start = net.now;
    // (arrival ms after start, is video, frame number); 12 s of media: past str0m's 5 s
    // audio report interval twice.
    let mut arrivals: Vec<(u64, bool, u64)> = Vec::new();
    for n in 0..360u64 {
        let media = n * 100 / 3;
        arrivals.push((media + 40 + if n < 10 { 150 } else { 0 }, true, n));
    }
    for k in 0..600u64 {
        arrivals.push(((20 * (k + 1) + 60).div_ceil(100) * 100, false, k));
    }
    arrivals.sort();
    for (at, video, n) in arrivals {
        let due = start + Duration::from_millis(at);
        if due > net.now {
            net.run(due - net.now);
        }
        let now = net.now;
        if video {
            let v = tagged_h264(n, n % 60 == 0);
            net.core
                .push_local(now, &session, FrameCodec::H264, n * 3000, Arc::from(v), "")
                .unwrap();
        } else {
            let opus: Arc<[u8]> = Arc::from(vec![0xf8, 0xff, (n >> 8) as u8, n as u8]);
            let codec = FrameCodec::Opus;
            net.core
                .push_local(now, &session, codec, n * 960, opus, "")
                .unwrap();
        }
    }
    net.run(Duration::from_millis(300));
    // Capture time (µs, the reports' clock) of each frame, by kind and media time in ms.
    let sub = &net.clients[s];
    let at = report_times(sub, |kind, data| match kind {
        MediaKind::Video => frame_tag(kind, data) * 100 / 3,
        MediaKind::Audio => frame_tag(kind, data) * 20,
    });
    // Media times both kinds have (every 100 ms), after the audio's first report (5 s).
    let offsets: Vec<(u64, i128)> = (60..120)
        .map(|m| m * 100)
        .filter_map(|ms| {
            let v = at.get(&(MediaKind::Video, ms))?;
            let a = at.get(&(MediaKind::Audio, ms))?;
            Some((ms, v - a))
        })
        .collect();
    assert!(
        offsets.len() >= 40,
        "frames with sender reports at common media times: {} (frames {}, with a report {})",
        offsets.len(),
        sub.frames.len(),
        sub.reports.iter().flatten().count()
    );
    // RTP ticks are whole: 1/90 ms for video, 1/48 ms for audio.
    let worst = offsets.iter().map(|o| o.1.abs()).max().unwrap();
    assert!(
        worst <= 1_000,
        "video − audio capture time up to {worst} µs (media ms, µs): {offsets:?}"
    );
}

#[test]
fn session_ids_come_from_the_seed() {
    // Two nodes with one seed hand out the same ids; another seed, other ids. The
    // counter prefix keeps them unique on a node either way.
    let ids = |seed: [u8; 32]| -> Vec<String> {
        let mut net = Net::with_seed(seed);
        let mut ids = Vec::new();
        for port in 0..3 {
            let (_, offer) = Client::new(net.now, 5200 + port, true, Direction::RecvOnly);
            ids.push(net.core.subscribe(net.now, "ids", &offer).unwrap().0);
        }
        ids.push(net.core.publish_local("ids").unwrap());
        ids
    };
    let a = ids([1; 32]);
    assert_eq!(a, ids([1; 32]), "same seed, same ids");
    let b = ids([2; 32]);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x[..16],
            y[..16],
            "the counter prefix does not depend on the seed"
        );
        assert_ne!(x[16..], y[16..], "the secret suffix does");
    }
    assert_eq!(a[0][..16], *"0000000000000001");
    assert!(a
        .iter()
        .all(|id| id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())));
    let mut unique = a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), a.len());
}

#[test]
fn relayed_frames_carry_the_injected_wall_clock() {
    use skylark_proto::sfu::v1::relay_message::Msg;
    use skylark_sfu::core::FrameCodec;
    let mut net = Net::new();
    net.core.attach_relay(net.now, "wall", 3);
    let session = net.core.publish_local("wall").unwrap();
    // Ten frames 40 ms apart in simulated time, starting 5 s in.
    let mut expected = Vec::new();
    net.now += Duration::from_secs(5);
    for n in 0..10u64 {
        let now = net.now;
        net.core
            .push_local(
                now,
                &session,
                FrameCodec::Opus,
                n * 1920,
                Arc::from(vec![0xf8, n as u8]),
                "",
            )
            .unwrap();
        expected.push(WALL_START_US + 5_000_000 + n * 40_000);
        net.now += Duration::from_millis(40);
    }
    net.run(Duration::ZERO);
    let received: Vec<u64> = net
        .relayed
        .iter()
        .filter_map(|m| match &m.msg {
            Some(Msg::Frame(f)) => Some(f.received_at_us),
            _ => None,
        })
        .collect();
    assert_eq!(
        received, expected,
        "wall time = injected start + simulated time"
    );
}

#[test]
fn webrtc_frames_are_stamped_by_the_simulated_clock_not_the_system_one() {
    use skylark_proto::sfu::v1::relay_message::Msg;
    let mut net = Net::new();
    let p = net.publisher("wall2", 5300);
    net.core.attach_relay(net.now, "wall2", 4);
    net.connect_all();
    let first = net.now;
    for n in 0..5 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    let last = net.now;
    let stamps: Vec<u64> = net
        .relayed
        .iter()
        .filter_map(|m| match &m.msg {
            Some(Msg::Frame(f)) => Some(f.received_at_us),
            _ => None,
        })
        .collect();
    assert!(!stamps.is_empty(), "frames were relayed");
    let wall = |t: Instant| WALL_START_US + (t - net.start).as_micros() as u64;
    for s in &stamps {
        assert!(
            (wall(first)..=wall(last)).contains(s),
            "{s} within the simulated run [{}, {}]",
            wall(first),
            wall(last)
        );
    }
}

/// An edge pull's publisher: relayed simulcast frames keep their track, layer, flags
/// and origin receipt time; keyframe wants go upstream per layer, coalesced; a gap
/// upstream (`contiguous = false`) makes the layer's viewers wait for a keyframe; and
/// the room's origin is not claimed here (no `RoomLive`).
#[test]
fn relayed_publisher_keeps_layers_and_asks_upstream_per_layer() {
    use skylark_proto::sfu::v1::relay_message::Msg;
    use skylark_sfu::core::{FrameCodec, RelayedFrame};
    let mut net = Net::new();
    let s = net.subscriber("edge", 6100);
    net.core.attach_relay(net.now, "edge", 4);
    net.connect_all();
    let session = net.core.publish_relayed("edge").unwrap();
    let frame = |rid: &str, n: u64, key: bool, contiguous: bool| {
        let nal = if key { 0x65 } else { 0x41 };
        let mut v = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, nal,
        ];
        v.extend_from_slice(format!("{rid}{n:08}").as_bytes());
        RelayedFrame {
            codec: FrameCodec::H264,
            track_id: format!("1:{rid}"),
            rid: rid.into(),
            fmtp: "packetization-mode=1".into(),
            time: n * 3000,
            data: Arc::from(v),
            keyframe: key,
            contiguous,
            received_at_us: 42 + n,
        }
    };
    // Layer l's keyframe first: the viewer follows l.
    for n in 0..5u64 {
        for rid in ["l", "h"] {
            let now = net.now;
            net.core
                .push_relayed(now, &session, frame(rid, n, n == 0 && rid == "l", true))
                .unwrap();
        }
        net.run(Duration::from_millis(33));
    }
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, CoreEvent::RoomLive { .. })),
        "an edge does not claim the room"
    );
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    assert_eq!(video, 5, "one whole layer");
    let tracks: Vec<(String, String)> = net
        .relayed
        .iter()
        .filter_map(|m| match &m.msg {
            Some(Msg::Track(t)) => Some((t.track_id.clone(), t.rid.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        tracks,
        vec![("1:l".into(), "l".into()), ("1:h".into(), "h".into())]
    );
    assert!(net.relayed.iter().any(|m| matches!(&m.msg,
        Some(Msg::Frame(f)) if f.received_at_us == 42 && f.keyframe && f.track_id == "1:l")));

    // A gap upstream on l: the viewer waits for l's keyframe and asks for l only, once
    // for a burst of frames.
    net.upstream.clear();
    net.now += Duration::from_secs(1);
    for n in 5..8u64 {
        let now = net.now;
        net.core
            .push_relayed(now, &session, frame("l", n, false, n != 5))
            .unwrap();
        net.core
            .push_relayed(now, &session, frame("h", n, false, true))
            .unwrap();
        net.run(Duration::from_millis(10));
    }
    assert_eq!(
        net.upstream,
        vec!["1:l".to_string()],
        "one ask, for layer l"
    );
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    assert_eq!(video, 5, "nothing after the gap until a keyframe");
    let now = net.now;
    net.core
        .push_relayed(now, &session, frame("l", 8, true, true))
        .unwrap();
    net.run(Duration::from_millis(50));
    let video = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .count();
    assert_eq!(video, 6, "resumed at the keyframe");
}

/// A source address no client uses.
fn stranger(rng: &mut Lcg) -> SocketAddr {
    let n = rng.next();
    SocketAddr::from((
        [10, 66, (n >> 8) as u8, n as u8],
        1024 + (n >> 20) as u16 % 60000,
    ))
}

#[test]
fn junk_from_strangers_is_dropped_before_any_session_sees_it() {
    let mut net = Net::new();
    let p = net.publisher("j", 5000);
    let (s, _, ufrag) = net.subscriber_session("j", 6000);
    net.connect_all();
    let before = net.core.counters();
    let routes = net.core.index_sizes();
    let mut rng = Lcg(0x5eed);
    let (mut junk_sent, mut forged) = (0u64, 0u64);
    for n in 0..30 {
        net.send(p, n, n == 0);
        for k in 0..400 {
            let src = stranger(&mut rng);
            // Now and then a check for the live session's own ufrag, forged (the
            // password is not known): the session must refuse it.
            let d = if k % 40 == 0 {
                forged += 1;
                stun_request(&mut rng, format!("{ufrag}:zzzz").as_bytes())
            } else {
                junk_sent += 1;
                junk(&mut rng)
            };
            net.core.handle_datagram(net.now, src, &d);
            assert!(
                net.core.poll_output().is_none(),
                "nothing answers a stranger's junk"
            );
        }
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    assert_eq!(net.video_frames(s), 30, "every frame still arrived");
    let c = net.core.counters();
    let grew = |r: DropReason| c.dropped(r) - before.dropped(r);
    assert_eq!(
        grew(DropReason::UnknownSource) + grew(DropReason::UnknownUfrag),
        junk_sent,
        "every junk datagram dropped on the indexes alone"
    );
    assert!(grew(DropReason::UnknownSource) > 0 && grew(DropReason::UnknownUfrag) > 0);
    assert_eq!(grew(DropReason::Rejected), forged, "forged checks refused");
    assert_eq!(grew(DropReason::Malformed), 0);
    assert_eq!(
        net.core.index_sizes(),
        routes,
        "no stranger got a route to a session"
    );
}

#[test]
fn stun_with_an_unknown_ufrag_is_dropped_from_anywhere() {
    let mut net = Net::new();
    let p = net.publisher("u", 5000);
    let s = net.subscriber("u", 6000);
    net.connect_all();
    let mut rng = Lcg(3);
    let before = net.core.counters();
    let known = net.clients[s].addr;
    for src in [stranger(&mut rng), known, net.clients[p].addr] {
        let d = stun_request(&mut rng, b"nosuchufrag:abcd");
        net.core.handle_datagram(net.now, src, &d);
        assert!(net.core.poll_output().is_none());
    }
    // A request without USERNAME, and a Binding response, from a stranger.
    let mut d = stun_request(&mut rng, b"x:y");
    d[1] = 0x11;
    net.core.handle_datagram(net.now, stranger(&mut rng), &d);
    let c = net.core.counters();
    assert_eq!(
        c.dropped(DropReason::UnknownUfrag) - before.dropped(DropReason::UnknownUfrag),
        4
    );
    assert_eq!(c.datagrams_unmatched - before.datagrams_unmatched, 4);
}

/// After a NAT rebinding the client's checks come from a new address: the ufrag finds
/// the session, and media follows the new address.
#[test]
fn stun_for_a_known_ufrag_from_a_new_address_finds_its_session() {
    let mut net = Net::new();
    let p = net.publisher("n", 5000);
    let s = net.subscriber("n", 6000);
    net.connect_all();
    for n in 0..10 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.video_frames(s), 10);
    let client = net.clients[s].addr;
    let rebound: SocketAddr = "10.2.2.2:40000".parse().unwrap();
    net.nat.insert(client, rebound);

    // The client's next check, seen from the new address, is answered there.
    let (_, check) = net
        .stun_requests
        .iter()
        .rev()
        .find(|(src, _)| *src == client)
        .cloned()
        .expect("the subscriber sent ICE checks");
    let before = net.core.counters();
    net.core.handle_datagram(net.now, rebound, &check);
    let mut answered = false;
    while let Some(o) = net.core.poll_output() {
        if let Output::Transmit { destination, .. } = o {
            answered |= destination == rebound;
        }
    }
    assert!(
        answered,
        "the session answered its check at the new address"
    );
    assert_eq!(
        net.core.counters().datagrams_unmatched,
        before.datagrams_unmatched
    );

    assert_eq!(
        net.core.index_sizes().addrs,
        3,
        "publisher, subscriber's old and new address"
    );

    // Media resumes through the new mapping. str0m keeps sending on the old pair (its
    // priority is higher than the new peer-reflexive one) until that pair's checks time
    // out, ~15 s here; that wait is str0m's, the routing above is ours.
    let mut resumed = None;
    for n in 10..(10 + 30 * 25) {
        net.send(p, n, n % 30 == 0);
        net.run(Duration::from_millis(33));
        if resumed.is_none() && net.video_frames(s) > 10 {
            resumed = Some((n - 10) / 30);
        }
    }
    let resumed = resumed.expect("media resumed at the new address within 25 s");
    eprintln!("media resumed {resumed} s after the rebinding");
    assert!(net.video_frames(s) > 10 + 30 * 5);
}

#[test]
fn a_session_that_never_connects_is_dropped_after_the_connect_timeout() {
    for timeout in [Duration::from_secs(10), Duration::from_secs(5)] {
        let mut net = Net::with_timeout(timeout);
        let p = net.publisher("t", 5000);
        let s = net.subscriber("t", 6000);
        net.connect_all();
        // A viewer whose client never answers: no ICE, no DTLS.
        let (_, offer) = Client::new(net.now, 6001, true, Direction::RecvOnly);
        let created = net.now;
        let (ghost, _) = net.core.subscribe(net.now, "t", &offer).unwrap();
        assert_eq!(net.core.session_counts(), (1, 2));
        assert!(net.core.next_timeout().unwrap() <= created + timeout);
        while net.now < created + timeout - Duration::from_millis(100) {
            net.send(p, 0, true);
            net.run(Duration::from_millis(250));
        }
        assert!(net.core.session_room(&ghost).is_some(), "not dropped early");
        net.now = created + timeout;
        net.core.handle_timeout(net.now);
        assert!(net.core.session_room(&ghost).is_none(), "dropped on time");
        assert_eq!(net.core.session_counts(), (1, 1), "its slot is free");
        assert_eq!(net.core.counters().connect_timeouts, 1);
        net.run(Duration::from_millis(10));
        assert!(net.events.contains(&CoreEvent::SessionClosed {
            session: ghost.clone(),
            room: "t".into(),
            role: Role::Subscriber,
            reason: CloseReason::NeverConnected,
        }));
        // The connected ones stay, long past the timeout.
        for _ in 0..40 {
            net.send(p, 0, true);
            net.run(Duration::from_millis(500));
        }
        assert!(net.clients[s].rtc.is_alive());
        assert_eq!(net.core.session_counts(), (1, 1));
        assert_eq!(net.core.counters().connect_timeouts, 1);
    }
}

#[test]
fn routing_indexes_shrink_with_the_sessions() {
    let mut net = Net::new();
    let p = net.publisher("l", 5000);
    net.connect_all();
    let base = net.core.index_sizes();
    assert_eq!((base.peers, base.sessions, base.ufrags), (1, 1, 1));
    let mut port = 6000;
    for round in 0..10 {
        let mut sessions = Vec::new();
        for _ in 0..10 {
            let (_, session, _) = net.subscriber_session("l", port);
            port += 1;
            sessions.push(session);
        }
        // A few never connect and time out; the rest connect and close.
        for _ in 0..3 {
            let (_, offer) = Client::new(net.now, 1, true, Direction::RecvOnly);
            net.core.subscribe(net.now, "l", &offer).unwrap();
        }
        net.connect_all();
        let sizes = net.core.index_sizes();
        assert_eq!((sizes.peers, sizes.ufrags), (14, 14), "round {round}");
        assert!(
            sizes.addrs >= 11,
            "connected sessions have routes: {sizes:?}"
        );
        for session in &sessions {
            net.core.close(session).unwrap();
        }
        net.clients.truncate(1);
        for _ in 0..45 {
            net.send(p, 0, true);
            net.run(Duration::from_millis(250));
        }
        assert_eq!(net.core.index_sizes(), base, "round {round}");
    }
    assert!(net.core.end_publisher("l"));
    let empty = net.core.index_sizes();
    assert_eq!(
        (empty.peers, empty.sessions, empty.addrs, empty.ufrags),
        (0, 0, 0, 0)
    );
}

/// A client that spreads checks over many source ports gets a bounded number of routes.
#[test]
fn routes_per_session_are_bounded() {
    let mut net = Net::new();
    let _p = net.publisher("b", 5000);
    let s = net.subscriber("b", 6000);
    net.connect_all();
    let client = net.clients[s].addr;
    let (_, check) = net
        .stun_requests
        .iter()
        .rev()
        .find(|(src, _)| *src == client)
        .cloned()
        .unwrap();
    let before = net.core.index_sizes().addrs;
    for port in 0..100 {
        let src = SocketAddr::from(([10, 3, 3, 3], 20000 + port));
        net.core.handle_datagram(net.now, src, &check);
        while net.core.poll_output().is_some() {}
    }
    let after = net.core.index_sizes().addrs;
    assert!(after <= before + 8, "{before} → {after} routes");
    assert_eq!(
        after - before,
        7,
        "the subscriber's 8 most recent addresses"
    );
}

#[test]
fn subscribers_leave_the_publisher_reserve_free() {
    let mut net = Net::with_capacity(10);
    assert_eq!(skylark_sfu::core::publisher_reserve(10), 1);
    for i in 0..9 {
        let (_, offer) = Client::new(net.now, 6000 + i, true, Direction::RecvOnly);
        net.core.subscribe(net.now, "c", &offer).unwrap();
    }
    let (_, offer) = Client::new(net.now, 6100, true, Direction::RecvOnly);
    assert_eq!(
        net.core.subscribe(net.now, "c", &offer),
        Err(SessionError::AtCapacity),
        "the 10th session is the publishers'"
    );
    let (_, offer) = Client::new(net.now, 5000, true, Direction::SendOnly);
    net.core
        .publish(net.now, "c", &offer)
        .expect("a publisher takes the reserve");
    let (_, offer) = Client::new(net.now, 5001, true, Direction::SendOnly);
    assert_eq!(
        net.core.publish(net.now, "other", &offer),
        Err(SessionError::AtCapacity),
        "and no more than max_sessions"
    );
}

/// Two workers share the node's port, and the kernel hands a client's datagrams to the
/// socket its address hashes to, not to the worker holding its session. Sessions whose
/// every datagram reaches the other worker connect and get every frame, like those whose
/// datagrams reach their own worker; their ids and ufrags name their worker.
#[test]
fn datagrams_reaching_the_other_worker_are_steered_to_their_session() {
    let mut net = Net::two_workers();
    let p = net.publisher("w", 5000);
    let (local, local_id, local_ufrag) = net.subscriber_session("w", 6000);
    let (steered, steered_id, steered_ufrag) = net.subscriber_session("w", 6001);
    for c in [p, steered] {
        let a = net.clients[c].addr;
        net.via_sibling.insert(a);
    }
    net.connect_all();
    net.run(Duration::from_millis(400));
    for n in 0..30 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    net.run(Duration::from_millis(200));
    assert_eq!(
        net.video_frames(local),
        30,
        "the local subscriber got every frame"
    );
    assert_eq!(
        net.video_frames(steered),
        30,
        "the steered subscriber got every frame"
    );
    for (id, ufrag) in [(&local_id, &local_ufrag), (&steered_id, &steered_ufrag)] {
        assert_eq!(skylark_sfu::core::session_worker(id), Some(0));
        assert!(ufrag.starts_with('0'), "ufrag {ufrag} names worker 0");
    }
    let sibling = net.sibling.as_ref().unwrap().counters();
    assert!(
        sibling.datagrams_steered > 60,
        "the publisher's media and both clients' checks went through worker 1 ({})",
        sibling.datagrams_steered
    );
    assert_eq!(sibling.datagrams_unmatched, 0, "worker 1 dropped nothing");
    let own = net.core.counters();
    assert_eq!(own.datagrams_steered, 0, "worker 0 holds every session");
    assert_eq!(own.datagrams_unmatched, 0);
}

/// A stranger can't use steering: a check naming no worker of the node, or traffic from
/// an address no check came from, is dropped where it arrived.
#[test]
fn strangers_are_not_steered() {
    let mut net = Net::two_workers();
    let p = net.publisher("x", 5000);
    net.connect_all();
    let mut rng = Lcg(11);
    let before = net.core.counters();
    // 'z' would be worker 35 of 2; non-STUN junk from strangers.
    let junk = [
        stun_request(&mut rng, b"zabc:abcd"),
        vec![0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        vec![0x16, 0xfe, 0xfd, 0, 0],
    ];
    for d in &junk {
        net.core.handle_datagram(net.now, stranger(&mut rng), d);
        assert!(
            net.core.poll_output().is_none(),
            "nothing steered or answered"
        );
    }
    let c = net.core.counters();
    assert_eq!(c.datagrams_unmatched - before.datagrams_unmatched, 3);
    assert_eq!(c.datagrams_steered, before.datagrams_steered);
    assert!(net.clients[p].connected);
}

/// A viewer joining mid-GOP of a local (RTMP) publisher, which can't be asked for a
/// keyframe, gets what `JoinFrames` says: nothing until the next keyframe, the cached
/// keyframe, or the cached GOP at its own times or squeezed before the newest frame.
#[test]
fn a_viewer_joining_mid_gop_of_a_local_publisher_gets_the_join_frames() {
    use skylark_sfu::core::{FrameCodec, JoinFrames};
    use std::sync::Arc as A;
    for mode in [
        JoinFrames::Wait,
        JoinFrames::Keyframe,
        JoinFrames::Gop,
        JoinFrames::GopFast,
    ] {
        let mut net = Net::new();
        net.core.set_join_frames(mode);
        let session = net.core.publish_local("r7").unwrap();
        let push = |net: &mut Net, n: u64| {
            let v = tagged_h264(n, n == 0);
            let now = net.now;
            net.core
                .push_local(now, &session, FrameCodec::H264, n * 3000, A::from(v), "")
                .unwrap();
            net.run(Duration::from_millis(33));
        };
        // A keyframe and 5 frames after it, then a viewer joins, then 4 more frames.
        for n in 0..6 {
            push(&mut net, n);
        }
        let s = net.subscriber("r7", 7000);
        net.connect_all();
        for n in 6..10 {
            push(&mut net, n);
        }
        net.run(Duration::from_millis(200));
        let got: Vec<(u64, String)> = net.clients[s]
            .frames
            .iter()
            .filter(|f| f.0 == MediaKind::Video)
            .map(|f| {
                let tail = String::from_utf8_lossy(&f.2[f.2.len() - 8..]).into_owned();
                (f.1, tail)
            })
            .collect();
        let numbers: Vec<u64> = got.iter().map(|(_, n)| n.parse().unwrap()).collect();
        let times: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        match mode {
            JoinFrames::Wait => assert!(numbers.is_empty(), "{mode:?}: {got:?}"),
            JoinFrames::Keyframe => assert_eq!(numbers, [0, 6, 7, 8, 9], "{mode:?}"),
            JoinFrames::Gop | JoinFrames::GopFast => {
                assert_eq!(numbers, (0..10).collect::<Vec<_>>(), "{mode:?}")
            }
        }
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{mode:?}: times rise {times:?}"
        );
        if mode == JoinFrames::GopFast {
            // The burst (frames 0–6) ends at frame 6's time, one tick apart; live after.
            let t6 = times[6];
            assert_eq!(
                times[..7],
                (0..7).map(|i| t6 - 6 + i).collect::<Vec<_>>()[..]
            );
            assert_eq!(times[7] - t6, 3000);
        }
        if mode == JoinFrames::Gop {
            assert!(times.windows(2).all(|w| w[1] - w[0] == 3000), "{times:?}");
        }
    }
}

/// A joiner's cached GOP does not leave in one burst, which a viewer's socket buffer
/// or router queue would drop much of: a first slice at once, the rest paced well above
/// the stream's rate, in order, with the live frames behind it; then live frames leave
/// as they come.
#[test]
fn a_joiners_cached_gop_leaves_paced_and_live_frames_follow_it() {
    use skylark_sfu::core::{FrameCodec, JoinFrames};
    use std::sync::Arc as A;
    let mut net = Net::new();
    net.core.set_join_frames(JoinFrames::Gop);
    let session = net.core.publish_local("paced").unwrap();
    // A 30 KB keyframe, then ~6 KB frames at 30 fps: 1.4 Mbit/s.
    let push = |net: &mut Net, n: u64| {
        let mut v = tagged_h264(n, n == 0);
        v.extend(std::iter::repeat_n(
            0x55,
            if n == 0 { 30_000 } else { 6000 },
        ));
        let now = net.now;
        net.core
            .push_local(now, &session, FrameCodec::H264, n * 3000, A::from(v), "")
            .unwrap();
    };
    // A GOP of 2 s, then a viewer joins.
    for n in 0..60 {
        push(&mut net, n);
        net.run(Duration::from_millis(33));
    }
    let s = net.subscriber("paced", 7000);
    net.connect_all();
    let to = net.clients[s].addr;
    let joined = net.now;
    push(&mut net, 60);
    let mut n = 61;
    let mut next_frame = joined + Duration::from_millis(33);
    while net.now < joined + Duration::from_millis(1500) {
        if net.now >= next_frame {
            push(&mut net, n);
            n += 1;
            next_frame += Duration::from_millis(33);
        }
        net.run(Duration::from_millis(1));
    }
    let sent: Vec<(Duration, usize)> = net
        .video_out
        .iter()
        .filter(|(c, ..)| *c == to)
        .map(|(_, at, len)| (at.duration_since(joined), *len))
        .collect();
    let bytes_by =
        |t: Duration| -> usize { sent.iter().filter(|(at, _)| *at <= t).map(|x| x.1).sum() };
    let gop: usize = 24_000 + 61 * 6030;
    // The keyframe at once (the first picture waits for no pace), not the GOP.
    let at_once = bytes_by(Duration::ZERO);
    assert!(
        (30_000..=50_000).contains(&at_once),
        "{at_once} bytes at the join"
    );
    // Then at least 8 Mbit/s and at most about 1.1 MB/s (the floor plus a slice).
    for ms in [100u64, 200, 300] {
        let b = bytes_by(Duration::from_millis(ms));
        let (low, high) = (30_000 + ms as usize * 900, 50_000 + ms as usize * 1_100);
        assert!(
            (low..=high).contains(&b),
            "{b} bytes by {ms} ms: between {low} and {high}"
        );
    }
    // Drained well within the GOP's span, and live after.
    let drained = sent
        .iter()
        .scan(0, |sum, (at, len)| {
            *sum += len;
            Some((*at, *sum))
        })
        .find(|(_, sum)| *sum >= gop)
        .map(|(at, _)| at)
        .expect("the GOP drains");
    assert!(
        drained < Duration::from_millis(700),
        "drained after {drained:?}"
    );
    let late: Vec<Duration> = sent
        .iter()
        .filter(|(at, _)| *at > Duration::from_millis(1000))
        .map(|(at, _)| *at)
        .collect();
    assert!(!late.is_empty());
    // Every frame, in order, none lost or repeated.
    let numbers: Vec<u64> = net.clients[s]
        .frames
        .iter()
        .filter(|f| f.0 == MediaKind::Video)
        .map(|f| frame_tag(MediaKind::Video, &f.2))
        .collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
    assert!(
        numbers.len() as u64 >= n - 2,
        "{} of {n} frames",
        numbers.len()
    );
}

impl Net {
    /// A connected publisher and one viewer that takes resends (RTX), in room "rtx":
    /// the network and their client indexes.
    fn with_rtx_viewer() -> (Net, usize, usize) {
        let mut net = Net::new();
        let p = net.publisher("rtx", 5000);
        let (mut c, offer) = Client::with_rtx(net.now, 6000);
        let (_, answer) = net.core.subscribe(net.now, "rtx", &offer).unwrap();
        c.accept(&answer);
        net.clients.push(c);
        let s = net.clients.len() - 1;
        net.connect_all();
        (net, p, s)
    }
}

/// A NACK is answered while its packet is in the subscriber's resend cache
/// (`RTX_CACHE_AGE`, 1 s), not after. The bound was once set before str0m announced the
/// media, on no stream, and every viewer kept str0m's 3 s cache (and its memory).
#[test]
fn a_nack_older_than_the_resend_cache_is_not_answered() {
    let mut resent = Vec::new();
    for late in [Duration::from_millis(300), Duration::from_millis(1600)] {
        let (mut net, p, s) = Net::with_rtx_viewer();
        let addr = net.clients[s].addr;
        for n in 0..10 {
            net.send(p, n, n == 0);
            net.run(Duration::from_millis(33));
        }
        // One video packet lost; the viewer's NACKs for it reach the SFU `late`.
        net.lose_next_video.push(addr);
        net.hold_rtcp.insert(addr, Vec::new());
        let until = net.now + late;
        let mut n = 10;
        while net.now < until {
            net.send(p, n, false);
            net.run(Duration::from_millis(33));
            n += 1;
        }
        assert!(net.lose_next_video.is_empty(), "a video packet was lost");
        for d in net.hold_rtcp.remove(&addr).unwrap_or_default() {
            net.deliver_to_core(addr, &d);
        }
        for _ in 0..10 {
            net.send(p, n, false);
            net.run(Duration::from_millis(33));
            n += 1;
        }
        resent.push(net.resends.get(&addr).copied().unwrap_or(0));
    }
    assert!(resent[0] > 0, "a NACK 0.3 s late is answered: {resent:?}");
    assert_eq!(resent[1], 0, "a NACK 1.6 s late is not: {resent:?}");
}

/// The node's retransmission budget: a subscriber losing every 20th packet gets every
/// frame back by NACK and resend; while its worker sheds resends (past its busy
/// threshold), the resends stop and frames are lost instead: the node spends what it
/// has on live packets.
#[test]
fn an_overloaded_worker_sheds_resends_first() {
    let mut delivered = Vec::new();
    for shed in [false, true] {
        let (mut net, p, s) = Net::with_rtx_viewer();
        net.core.shed_resends(shed);
        let addr = net.clients[s].addr;
        net.lose_every.insert(addr, (20, 0));
        for n in 0..60 {
            net.send(p, n, n == 0);
            net.run(Duration::from_millis(33));
        }
        net.lose_every.clear();
        for _ in 0..20 {
            net.run(Duration::from_millis(50));
        }
        let video = net.clients[s]
            .frames
            .iter()
            .filter(|f| f.0 == MediaKind::Video)
            .count();
        delivered.push(video);
    }
    assert_eq!(
        delivered[0], 60,
        "every frame recovered by resends: {delivered:?}"
    );
    assert!(
        delivered[1] < delivered[0],
        "shedding resends loses frames instead: {delivered:?}"
    );
}

/// A ramp of joins into a room whose publisher never sends a keyframe (every join
/// asks for one): one request per 300 ms, and while the worker is near its busy
/// threshold one per second, so a ramp on a full node is not a keyframe storm.
#[test]
fn an_overloaded_worker_spaces_out_keyframe_requests() {
    let mut requests = Vec::new();
    for overloaded in [false, true] {
        let mut net = Net::new();
        net.core.space_keyframes(overloaded);
        let p = net.publisher("ramp", 5000);
        net.connect_all();
        // Let the publisher's tracks be known (delta frames: no keyframe ends the asks).
        net.send(p, 0, false);
        net.run(Duration::from_millis(33));
        let before = net.clients[p].keyframe_requests;
        let start = net.now;
        let mut i = 0;
        while net.now < start + Duration::from_secs(3) {
            net.subscriber("ramp", 6000 + i);
            net.connect_all();
            net.send(p, 1 + u64::from(i), false);
            net.run(Duration::from_millis(50));
            i += 1;
        }
        requests.push(net.clients[p].keyframe_requests - before);
    }
    assert!(
        (8..=12).contains(&requests[0]),
        "one keyframe request per 300 ms over 3 s: {requests:?}"
    );
    assert!(
        (2..=4).contains(&requests[1]),
        "one per second when overloaded: {requests:?}"
    );
}

/// Admission measures a worker's cost per viewer over the viewers it forwards to: a
/// viewer connected but waiting for its first keyframe is counted apart, until the
/// keyframe starts its video.
#[test]
fn viewers_waiting_for_their_first_keyframe_are_counted_apart() {
    let mut net = Net::new();
    let p = net.publisher("wait", 5000);
    let subs: Vec<usize> = (0..3).map(|i| net.subscriber("wait", 6000 + i)).collect();
    assert_eq!(net.core.waiting_viewers(), 3, "connecting");
    net.connect_all();
    for n in 0..3 {
        net.send(p, n, false);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.core.waiting_viewers(), 3, "no keyframe yet");
    net.send(p, 3, true);
    net.run(Duration::from_millis(33));
    assert!(subs.iter().all(|&s| net.video_frames(s) == 1));
    assert_eq!(net.core.waiting_viewers(), 0, "all playing");
}

/// A consumer that attaches as the room goes offline (the packager re-pulling before
/// the origin claim is released) learns it ended at once instead of holding the room.
#[test]
fn a_relay_attached_where_the_room_has_no_publisher_is_told_it_ended() {
    use skylark_proto::sfu::v1::relay_message::Msg;
    let mut net = Net::new();
    let session = net.core.publish_local("gone").unwrap();
    net.core.attach_relay(net.now, "gone", 1);
    net.core.close(&session).unwrap();
    net.run(Duration::ZERO);
    let ended = |net: &Net| {
        net.relayed
            .iter()
            .filter(|m| matches!(m.msg, Some(Msg::Ended(_))))
            .count()
    };
    assert_eq!(
        ended(&net),
        1,
        "the live room's consumer is told when it ends"
    );
    net.core.attach_relay(net.now, "gone", 2);
    net.run(Duration::ZERO);
    assert_eq!(ended(&net), 2, "a late consumer is told at once");
    net.core.detach_relay("gone", 1);
    net.core.detach_relay("gone", 2);
    assert!(net.core.room_stats().is_empty(), "nothing holds the room");
}

/// A packager's pull (`RelayStart.from_gop`) of a local (RTMP) publisher's room starts
/// with the room's cached GOP — announced, keyframe first, at its own times and capture
/// wall clock — and goes on with the live frames; an edge's pull (no flag) gets the live
/// frames only, and so does a flagged pull where the room keeps no GOP (`JoinFrames::Wait`).
#[test]
fn a_relay_attached_from_the_gop_starts_with_the_cached_gop() {
    use skylark_proto::sfu::v1::relay_message::Msg;
    use skylark_sfu::core::{FrameCodec, JoinFrames};
    use std::sync::Arc as A;
    for mode in [JoinFrames::Gop, JoinFrames::Wait] {
        let mut net = Net::new();
        net.core.set_join_frames(mode);
        let session = net.core.publish_local("g").unwrap();
        let push = |net: &mut Net, n: u64| {
            let now = net.now;
            let v = A::from(tagged_h264(n, n.is_multiple_of(10)));
            net.core
                .push_local(now, &session, FrameCodec::H264, n * 3000, v, "")
                .unwrap();
            let a = A::from(vec![0x21, 0x10, 0, n as u8]);
            net.core
                .push_local(now, &session, FrameCodec::Aac, n * 1600, a, "1190")
                .unwrap();
            net.run(Duration::from_millis(33));
        };
        // Two GOPs: the cache holds the second one's keyframe (12 → 10) and 11–13.
        for n in 0..14 {
            push(&mut net, n);
        }
        let video = |msgs: &[skylark_proto::sfu::v1::RelayMessage]| -> Vec<(u64, bool, u64)> {
            msgs.iter()
                .filter_map(|m| match &m.msg {
                    Some(Msg::Frame(f)) if f.track_id == "local-H264" => Some((
                        frame_tag(MediaKind::Video, &f.data),
                        f.keyframe,
                        f.received_at_us,
                    )),
                    _ => None,
                })
                .collect()
        };
        let announced = |msgs: &[skylark_proto::sfu::v1::RelayMessage]| {
            msgs.iter().find_map(|m| match &m.msg {
                Some(Msg::CachedGop(g)) => Some(g.frames),
                _ => None,
            })
        };
        net.relayed.clear();
        net.core.attach_relay(net.now, "g", 1);
        net.run(Duration::ZERO);
        assert!(video(&net.relayed).is_empty(), "{mode:?}: an edge's pull");
        assert_eq!(announced(&net.relayed), None);
        net.relayed.clear();
        net.core.attach_relay_from_gop(net.now, "g", 2);
        net.run(Duration::ZERO);
        let gop = video(&net.relayed);
        let tracks = net
            .relayed
            .iter()
            .take_while(|m| matches!(m.msg, Some(Msg::Track(_))))
            .count();
        assert_eq!(tracks, 2, "{mode:?}: the tracks come first");
        if mode == JoinFrames::Wait {
            assert!(gop.is_empty(), "no cache, no GOP: {gop:?}");
            assert_eq!(announced(&net.relayed), None);
            continue;
        }
        assert!(
            matches!(net.relayed[tracks].msg, Some(Msg::CachedGop(_))),
            "then the announcement: {:?}",
            net.relayed[tracks]
        );
        assert_eq!(announced(&net.relayed), Some(4));
        let numbers: Vec<u64> = gop.iter().map(|f| f.0).collect();
        assert_eq!(numbers, [10, 11, 12, 13]);
        let keys: Vec<bool> = gop.iter().map(|f| f.1).collect();
        assert_eq!(keys, [true, false, false, false]);
        // Stamped with their capture on the core's (simulated) wall clock, 33 ms apart.
        let wall: Vec<u64> = gop.iter().map(|f| f.2).collect();
        assert!(wall[0] >= WALL_START_US + 300_000, "{wall:?}");
        assert!(wall.windows(2).all(|w| w[1] > w[0]), "{wall:?}");
        // Live frames follow, to both sinks.
        net.relayed.clear();
        push(&mut net, 14);
        let live: Vec<u64> = video(&net.relayed).iter().map(|f| f.0).collect();
        assert_eq!(live, [14, 14]);
    }
}

/// ICE over TCP: the answer offers a passive TCP candidate below the UDP one, a viewer
/// whose only candidate is TCP connects and plays through it, and a UDP viewer on the
/// very same address and port is another route: neither gets the other's packets. Its
/// session's end lets its connection go.
#[test]
fn a_viewer_over_ice_tcp_plays_beside_a_udp_viewer_on_the_same_address() {
    let mut net = Net::with_tcp();
    let p = net.publisher("t", 5000);
    let (tcp, session) = net.tcp_subscriber("t", 6000);
    let udp = net.subscriber("t", 6000);
    assert_eq!(net.clients[tcp].addr, net.clients[udp].addr);
    net.connect_all();

    let (_, answer) = Client::new(net.now, 7000, true, Direction::RecvOnly);
    let (_, answer) = net.core.subscribe(net.now, "t", &answer).unwrap();
    let prio = |proto: &str| {
        answer
            .lines()
            .find(|l| l.starts_with("a=candidate:") && l.contains(&format!(" {proto} ")))
            .and_then(|l| l.split(' ').nth(3))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("a {proto} candidate in {answer}"))
    };
    assert!(prio("udp") > prio("tcp"), "UDP is preferred");
    assert!(
        answer.contains(&format!(
            "tcp {} 10.0.0.1 7881 typ host tcptype passive",
            prio("tcp")
        )),
        "{answer}"
    );

    for n in 0..10 {
        net.send(p, n, n == 0);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.video_frames(tcp), 10, "the ICE-TCP viewer plays");
    assert_eq!(net.video_frames(udp), 10, "the UDP viewer plays");

    assert!(net.tcp_closed.is_empty());
    net.core.close(&session).unwrap();
    net.run(Duration::from_millis(10));
    assert_eq!(
        net.tcp_closed,
        [net.clients[tcp].addr],
        "the ended session's connection is let go, the UDP viewer's route is not"
    );
    for n in 10..20 {
        net.send(p, n, false);
        net.run(Duration::from_millis(33));
    }
    assert_eq!(net.video_frames(udp), 20, "the UDP viewer plays on");
}

/// The publisher's next frame, delivered to the core by hand: how many RTP packets the
/// core sends viewer `s` in answer to those datagrams alone, before any timeout (each
/// datagram the core sends a client reaches it).
fn packets_with_the_frame(net: &mut Net, p: usize, s: usize, n: u64) -> usize {
    net.send(p, n, false);
    let mut wire = Vec::new();
    let now = net.now;
    net.clients[p]
        .rtc
        .handle_input(Input::Timeout(now))
        .unwrap();
    net.clients[p].drain(&mut wire);
    let viewer = net.clients[s].addr;
    let mut to_viewer = 0;
    for (src, _, bytes) in wire {
        net.core.handle_datagram(now, src, &bytes);
        while let Some(o) = net.core.poll_output() {
            if let Output::Transmit {
                destination,
                contents,
                ..
            } = o
            {
                let rtp = contents.len() > 12
                    && contents[0] >> 6 == 2
                    && !(192..=223).contains(&contents[1]);
                if destination == viewer && rtp {
                    to_viewer += 1;
                }
                // Delivered as the network would: the test counts, it does not lose.
                if let Some(c) = net.clients.iter_mut().find(|c| c.addr == destination) {
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: SFU.parse().unwrap(),
                            destination,
                            contents: contents.as_slice().try_into().unwrap(),
                        },
                    );
                    c.rtc.handle_input(input).unwrap();
                }
            }
        }
    }
    to_viewer
}

#[test]
fn a_viewers_packets_leave_with_the_publishers_datagram_that_brought_them() {
    for path in [SendPath::Direct, SendPath::Str0m] {
        let mut net = Net::new();
        net.core.set_send_path(path);
        let p = net.publisher("now", 5000);
        let s = net.subscriber("now", 6000);
        net.connect_all();
        net.run(Duration::from_millis(400));
        for n in 0..5 {
            net.send(p, n, n == 0);
            net.run(Duration::from_millis(33));
        }
        assert_eq!(net.video_frames(s), 5, "{path:?}: the viewer plays");
        let sent = packets_with_the_frame(&mut net, p, s, 5);
        match path {
            // The core seals each copy as the frame passes: no pass through the
            // viewer's str0m session, no wait for its next timeout.
            SendPath::Direct => assert!(sent >= 3, "{path:?}: {sent} packets sent at once"),
            // str0m releases what it was given on the viewer's next timeout.
            SendPath::Str0m => assert_eq!(sent, 0, "{path:?}: str0m sent at once"),
        }
        // Either way the viewer plays on.
        for n in 6..10 {
            net.send(p, n, false);
            net.run(Duration::from_millis(33));
        }
        net.run(Duration::from_millis(200));
        let frames = net.video_frames(s);
        assert!(
            frames >= 9,
            "{path:?}: the viewer plays on ({frames} frames)"
        );
    }
}
