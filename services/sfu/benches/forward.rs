//! The SFU's per-packet hot path, in isolation (no sockets, simulated time):
//!
//! - `sfu/keyframe`: the keyframe check the core runs on every published video frame.
//! - `sfu/core_forward/{N}subs`: one published video frame through the routing core
//!   to N connected subscribers — publisher's SRTP decrypt + depacketize and the room's
//!   packetizing once, then per subscriber str0m's RTP mode (`StreamTx::write_rtp` of
//!   the shared payloads: header + SRTP encrypt + RTX buffer). Divide by N (and by the
//!   packets per frame) for the per-subscriber cost.
//! - `sfu/str0m_send/{frame,rtp}`: one subscriber's send side alone, frame level
//!   (`Writer::write`, what the core did before) against str0m's RTP mode
//!   (`StreamTx::write_rtp` of ready packets, what the core does now).
//!
//! Frames are the load generator's (`skylark-loadgen`): real x264 slices padded with
//! filler to 600 kbit/s or 1.5 Mbit/s, 30 fps, keyframe every 2 s.
//!
//! - `sfu/route_unknown/{core,scan}/…`: a datagram from an unknown address with 1,000
//!   sessions on the node, through the core's indexes and through the per-session
//!   `Rtc::accepts` scan they replaced.
//!
//! `cargo bench -p skylark-sfu --bench forward -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use skylark_loadgen::source::{AudioPacket, OpusSource, VideoConfig, VideoSource};
use skylark_sfu::core::forward::h264_is_keyframe;
use skylark_sfu::core::{Core, CoreConfig, IdSeed, Output, WallClock};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

const SFU: &str = "10.0.0.1:7882";
const FRAME: Duration = Duration::from_micros(33_333);
/// RTP payload bytes per packet in the RTP-mode comparison: what str0m's H.264
/// packetizer fits under its 1150-byte datagram target.
const RTP_PAYLOAD: usize = 1100;

fn crypto() -> Arc<str0m::crypto::CryptoProvider> {
    Arc::new(str0m::crypto::from_feature_flags())
}

/// Video frames of a source at `kbps`, one GOP (60 frames, keyframe first).
fn gop(kbps: u32) -> Vec<Vec<u8>> {
    let mut v = VideoSource::new(VideoConfig {
        bitrate_kbps: kbps,
        gop: Duration::from_secs(2),
    });
    (0..60).map(|i| v.next_frame(i).data).collect()
}

/// Datagrams that are RTP or RTCP (first byte 128..=191, RFC 7983): media the
/// benchmarks don't need to deliver to the far side.
fn is_rtp(d: &[u8]) -> bool {
    matches!(d.first(), Some(128..=191))
}

/// A str0m peer on an in-memory network.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    video: Mid,
    audio: Mid,
    connected: bool,
    next: Instant,
}

impl Client {
    fn new(now: Instant, port: u16, dir: Direction) -> (Client, String) {
        let mut b = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(crypto());
        b.codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        let mut rtc = b.build(now);
        let addr: SocketAddr = format!("10.0.1.1:{port}").parse().expect("addr");
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let c = Client {
            rtc,
            addr,
            pending: Some(pending),
            video,
            audio,
            connected: false,
            next: now,
        };
        (c, offer.to_sdp_string())
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer");
        let pending = self.pending.take().expect("pending offer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accept");
    }

    /// Polls until str0m asks for a timeout; datagrams go to `wire`.
    fn drain(&mut self, wire: &mut Vec<(SocketAddr, Vec<u8>)>) {
        while let Ok(o) = self.rtc.poll_output() {
            match o {
                RtcOutput::Timeout(t) => {
                    self.next = t;
                    return;
                }
                RtcOutput::Transmit(t) => wire.push((t.source, t.contents.to_vec())),
                RtcOutput::Event(Event::Connected) => self.connected = true,
                RtcOutput::Event(_) => {}
            }
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, d: &[u8]) {
        let Ok(contents) = d.try_into() else { return };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.addr,
                contents,
            },
        );
        let _ = self.rtc.handle_input(input);
    }
}

/// The core with one publisher and N subscribers on an in-memory network.
struct Net {
    now: Instant,
    core: Core,
    publisher: Client,
    subs: Vec<Client>,
    h264_pt: Pt,
    opus_pt: Pt,
}

impl Net {
    fn new(subscribers: usize) -> Net {
        let now = Instant::now();
        let addr: SocketAddr = SFU.parse().expect("addr");
        let mut core = Core::new(CoreConfig {
            local_addr: addr,
            announce_addr: addr,
            tcp_addr: None,
            max_sessions: subscribers + 10,
            connect_timeout: skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT,
            wall_clock: WallClock::new(now, 0),
            id_seed: IdSeed::new([0; 32]),
            worker: Default::default(),
        });
        // `SKYLARK_SFU_SEND_PATH=str0m`: the viewers' str0m sessions seal, as before.
        if let Ok(path) = std::env::var("SKYLARK_SFU_SEND_PATH") {
            core.set_send_path(
                path.parse()
                    .expect("SKYLARK_SFU_SEND_PATH: direct or str0m"),
            );
        }
        let (mut publisher, offer) = Client::new(now, 1000, Direction::SendOnly);
        let (_, answer) = core.publish(now, "bench", &offer).expect("publish");
        publisher.accept(&answer);
        let mut subs = Vec::new();
        for i in 0..subscribers {
            let (mut c, offer) = Client::new(now, 2000 + i as u16, Direction::RecvOnly);
            let (_, answer) = core.subscribe(now, "bench", &offer).expect("subscribe");
            c.accept(&answer);
            subs.push(c);
        }
        let mut net = Net {
            now,
            core,
            publisher,
            subs,
            h264_pt: 102.into(),
            opus_pt: 111.into(),
        };
        for _ in 0..200 {
            net.pump(true);
            net.now += Duration::from_millis(10);
            if net.publisher.connected && net.subs.iter().all(|c| c.connected) {
                break;
            }
        }
        assert!(
            net.publisher.connected && net.subs.iter().all(|c| c.connected),
            "peers connected"
        );
        let vmid = net.publisher.video;
        net.h264_pt = net
            .publisher
            .rtc
            .writer(vmid)
            .and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == Codec::H264)
                    .map(|p| p.pt())
            })
            .expect("H.264 negotiated");
        let amid = net.publisher.audio;
        net.opus_pt = net
            .publisher
            .rtc
            .writer(amid)
            .and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt())
            })
            .expect("Opus negotiated");
        net
    }

    /// Moves datagrams until quiet. With `media` false, RTP/RTCP from the core to the
    /// subscribers is dropped: they only keep ICE/DTLS alive, which keeps the cost of
    /// the (unmeasured) far side out of the benchmark's wall time.
    fn pump(&mut self, media: bool) {
        let sfu: SocketAddr = SFU.parse().expect("addr");
        for _ in 0..50 {
            let mut wire = Vec::new();
            for c in std::iter::once(&mut self.publisher).chain(self.subs.iter_mut()) {
                if c.next <= self.now {
                    let _ = c.rtc.handle_input(Input::Timeout(self.now));
                }
                c.drain(&mut wire);
            }
            self.core.handle_timeout(self.now);
            let mut moved = !wire.is_empty();
            for (src, d) in wire.drain(..) {
                self.core.handle_datagram(self.now, src, &d);
            }
            while let Some(o) = self.core.poll_output() {
                if let Output::Transmit {
                    destination,
                    contents,
                    ..
                } = o
                {
                    if !media && is_rtp(&contents) {
                        continue;
                    }
                    moved = true;
                    let now = self.now;
                    if destination == self.publisher.addr {
                        self.publisher.receive(now, sfu, &contents);
                    } else if let Some(c) = self.subs.iter_mut().find(|c| c.addr == destination) {
                        c.receive(now, sfu, &contents);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The core takes the publisher's datagrams of one frame and forwards them: the RTP
    /// and RTCP datagrams it sent.
    // Never inlined: `callgrind.py --core-only` counts inside it by name, and an inlined
    // call site (the audio one was) would go uncounted.
    #[inline(never)]
    fn forward(&mut self, wire: &[(SocketAddr, Vec<u8>)]) -> u64 {
        for (src, d) in wire {
            self.core.handle_datagram(self.now, *src, d);
        }
        // The worker runs the due timeouts after every receive batch; that is when
        // str0m's pacer releases the subscribers' packets.
        let mut out = 0u64;
        for _ in 0..16 {
            self.core.handle_timeout(self.now);
            let mut any = false;
            while let Some(o) = self.core.poll_output() {
                if let Output::Transmit { contents, .. } = &o {
                    out += u64::from(is_rtp(contents));
                    any = true;
                }
                black_box(o);
            }
            if !any {
                break;
            }
        }
        out
    }

    /// Runs the core's timers that fall before `until`, as the worker's timer does
    /// between receives: the datagrams they sent.
    fn timers_until(&mut self, until: Instant) -> u64 {
        let mut out = 0;
        for _ in 0..64 {
            match self.core.next_timeout() {
                Some(t) if t > self.now && t < until => {
                    self.now = t;
                    out += self.forward(&[]);
                }
                _ => break,
            }
        }
        out
    }

    /// The publisher's datagrams for one video frame (encrypted, not yet delivered).
    fn publish_frame(&mut self, n: u64, frame: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        let vmid = self.publisher.video;
        let pt = self.h264_pt;
        if let Some(w) = self.publisher.rtc.writer(vmid) {
            let _ = w.write(
                pt,
                self.now,
                MediaTime::from_90khz(n * 3000),
                frame.to_vec(),
            );
        }
        self.publisher_datagrams()
    }

    /// The publisher's datagram for one Opus packet (encrypted, not yet delivered).
    fn publish_audio(&mut self, p: &AudioPacket) -> Vec<(SocketAddr, Vec<u8>)> {
        let (amid, pt) = (self.publisher.audio, self.opus_pt);
        if let Some(w) = self.publisher.rtc.writer(amid) {
            let time = MediaTime::new(p.rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ);
            let _ = w.write(pt, self.now, time, p.data.to_vec());
        }
        self.publisher_datagrams()
    }

    fn publisher_datagrams(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        // str0m's pacer releases queued packets on timeouts: feed them until quiet.
        let mut wire = Vec::new();
        for _ in 0..16 {
            let before = wire.len();
            let _ = self.publisher.rtc.handle_input(Input::Timeout(self.now));
            self.publisher.drain(&mut wire);
            if wire.len() == before {
                break;
            }
        }
        wire
    }
}

fn keyframe(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu/keyframe");
    for kbps in [600u32, 1500] {
        let frames = gop(kbps);
        for (name, f) in [("key", &frames[0]), ("p", &frames[30])] {
            g.throughput(Throughput::Bytes(f.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{kbps}kbps_{name}"), f.len()),
                f,
                |b, f| b.iter(|| h264_is_keyframe(black_box(f))),
            );
        }
    }
    g.finish();
}

fn core_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu/core_forward");
    g.sample_size(20);
    for kbps in [600u32, 1500] {
        let frames = gop(kbps);
        for subs in [1usize, 10, 50] {
            let mut net = Net::new(subs);
            let mut n = 0u64;
            let mut sent_packets = 0u64;
            let mut sent_frames = 0u64;
            g.throughput(Throughput::Elements(subs as u64));
            g.bench_function(format!("{kbps}kbps/{subs}subs"), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let wire = net.publish_frame(n, &frames[(n % 60) as usize]);
                        n += 1;
                        let t0 = Instant::now();
                        let out = net.forward(&wire);
                        spent += t0.elapsed();
                        sent_packets += out;
                        sent_frames += 1;
                        net.now += FRAME;
                        // Keep ICE/DTLS alive outside the measurement.
                        if n.is_multiple_of(15) {
                            net.pump(false);
                        }
                        // The sessions of this simulated network stop after ~34 s of
                        // simulated time (consent, with media to the peers dropped): a
                        // fresh network every 20 s keeps every frame forwarded.
                        if n.is_multiple_of(600) {
                            net = Net::new(subs);
                        }
                    }
                    spent
                })
            });
            let c = net.core.counters();
            eprintln!(
                "  sfu/core_forward/{kbps}kbps/{subs}subs: {:.2} RTP/RTCP datagrams out per frame per subscriber (core: {} frames in, {} out, {} datagrams in)",
                sent_packets as f64 / sent_frames.max(1) as f64 / subs as f64,
                c.frames_in, c.frames_out, c.datagrams_in
            );
        }
    }
    g.finish();
}

/// A connected sender/receiver pair: the sender is one subscriber's `Rtc` on the SFU
/// (ICE-lite, answering), optionally in RTP mode.
struct Pair {
    now: Instant,
    tx: Rtc,
    tx_addr: SocketAddr,
    rx: Client,
    mid: Mid,
    next_tx: Instant,
}

impl Pair {
    fn new(rtp_mode: bool) -> Pair {
        let now = Instant::now();
        let (mut rx, offer) = Client::new(now, 3000, Direction::RecvOnly);
        let mut b = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(rtp_mode)
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(crypto());
        b.codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        let mut tx = b.build(now);
        let tx_addr: SocketAddr = SFU.parse().expect("addr");
        tx.add_local_candidate(Candidate::host(tx_addr, "udp").expect("candidate"));
        let offer = SdpOffer::from_sdp_string(&offer).expect("offer");
        let answer = tx.sdp_api().accept_offer(offer).expect("answer");
        rx.accept(&answer.to_sdp_string());
        let mid = rx.video;
        let mut p = Pair {
            now,
            tx,
            tx_addr,
            rx,
            mid,
            next_tx: now,
        };
        for _ in 0..200 {
            p.pump(true);
            p.now += Duration::from_millis(10);
            if p.rx.connected {
                break;
            }
        }
        assert!(p.rx.connected, "pair connected");
        p
    }

    /// Releases and drains the sender's queue; returns the RTP datagrams it produced.
    fn drain_tx(&mut self, deliver: &mut Vec<Vec<u8>>) -> u64 {
        let mut rtp = 0;
        for _ in 0..16 {
            let before = rtp;
            let _ = self.tx.handle_input(Input::Timeout(self.now));
            while let Ok(o) = self.tx.poll_output() {
                match o {
                    RtcOutput::Timeout(t) => {
                        self.next_tx = t;
                        break;
                    }
                    RtcOutput::Transmit(t) => {
                        if is_rtp(&t.contents) {
                            rtp += 1;
                            black_box(&t.contents);
                        } else {
                            deliver.push(t.contents.to_vec());
                        }
                    }
                    RtcOutput::Event(_) => {}
                }
            }
            if rtp == before {
                break;
            }
        }
        rtp
    }

    /// Keeps ICE/DTLS going both ways; media is delivered only while connecting.
    fn pump(&mut self, media: bool) {
        for _ in 0..50 {
            if self.next_tx <= self.now {
                let _ = self.tx.handle_input(Input::Timeout(self.now));
            }
            let mut to_rx = Vec::new();
            let mut moved = false;
            while let Ok(o) = self.tx.poll_output() {
                match o {
                    RtcOutput::Timeout(t) => {
                        self.next_tx = t;
                        break;
                    }
                    RtcOutput::Transmit(t) => {
                        if media || !is_rtp(&t.contents) {
                            to_rx.push(t.contents.to_vec());
                        }
                    }
                    RtcOutput::Event(_) => {}
                }
            }
            for d in to_rx {
                moved = true;
                self.rx.receive(self.now, self.tx_addr, &d);
            }
            if self.rx.next <= self.now {
                let _ = self.rx.rtc.handle_input(Input::Timeout(self.now));
            }
            let mut wire = Vec::new();
            self.rx.drain(&mut wire);
            for (src, d) in wire {
                moved = true;
                let Ok(contents) = d.as_slice().try_into() else {
                    continue;
                };
                let _ = self.tx.handle_input(Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: src,
                        destination: self.tx_addr,
                        contents,
                    },
                ));
            }
            if !moved {
                break;
            }
        }
    }
}

fn str0m_send(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu/str0m_send");
    for kbps in [600u32, 1500] {
        let frames: Vec<Arc<[u8]>> = gop(kbps).into_iter().map(Arc::from).collect();
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        let mean_packets = bytes.div_ceil(RTP_PAYLOAD * frames.len()) as u64;
        g.throughput(Throughput::Elements(mean_packets));

        // Frame level: what the core does per subscriber today.
        let mut p = Pair::new(false);
        let mut n = 0u64;
        let mut pkts = 0u64;
        g.bench_function(format!("{kbps}kbps/frame"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut deliver = Vec::new();
                for _ in 0..iters {
                    let f = frames[(n % 60) as usize].clone();
                    let t0 = Instant::now();
                    if let Some(w) = p.tx.writer(p.mid) {
                        let _ = w.write(102.into(), p.now, MediaTime::from_90khz(n * 3000), f);
                    }
                    pkts += p.drain_tx(&mut deliver);
                    spent += t0.elapsed();
                    n += 1;
                    p.now += FRAME;
                    deliver.clear();
                    if n.is_multiple_of(15) {
                        p.pump(false);
                    }
                }
                spent
            })
        });
        eprintln!(
            "  sfu/str0m_send/{kbps}kbps/frame: {:.2} RTP packets per frame",
            pkts as f64 / n.max(1) as f64
        );

        // RTP mode: the packets are ready (as an RTP-forwarding SFU receives them);
        // str0m only rewrites the header, encrypts and keeps them for NACKs.
        let mut p = Pair::new(true);
        let mut n = 0u64;
        let mut seq = 0u64;
        let mut pkts = 0u64;
        let chunks: Vec<Vec<Arc<[u8]>>> = frames
            .iter()
            .map(|f| f.chunks(RTP_PAYLOAD).map(Arc::from).collect())
            .collect();
        g.bench_function(format!("{kbps}kbps/rtp"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut deliver = Vec::new();
                for _ in 0..iters {
                    let packets = &chunks[(n % 60) as usize];
                    let t0 = Instant::now();
                    if let Some(tx) = p.tx.direct_api().stream_tx_by_mid(p.mid, None) {
                        for (i, payload) in packets.iter().enumerate() {
                            let w = RtpWrite::new(
                                102.into(),
                                SeqNo::from(seq),
                                (n * 3000) as u32,
                                p.now,
                                payload.clone(),
                            )
                            .marker(i + 1 == packets.len())
                            .nackable(true);
                            tx.write_rtp(w);
                            seq += 1;
                        }
                    }
                    pkts += p.drain_tx(&mut deliver);
                    spent += t0.elapsed();
                    n += 1;
                    p.now += FRAME;
                    deliver.clear();
                    if n.is_multiple_of(15) {
                        p.pump(false);
                    }
                }
                spent
            })
        });
        eprintln!(
            "  sfu/str0m_send/{kbps}kbps/rtp: {:.2} RTP packets per frame",
            pkts as f64 / n.max(1) as f64
        );
    }
    g.finish();
}

/// A STUN Binding request for `username`, shaped like an ICE check (integrity made up).
fn stun_check(username: &[u8]) -> Vec<u8> {
    let mut attrs = vec![0, 6, 0, username.len() as u8];
    attrs.extend_from_slice(username);
    attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    attrs.extend_from_slice(&[0, 0x24, 0, 4, 0x6e, 0, 0x1e, 0xff]);
    attrs.extend_from_slice(&[0, 8, 0, 20]);
    attrs.extend_from_slice(&[0x5a; 20]);
    let mut d = vec![0, 1, 0, attrs.len() as u8, 0x21, 0x12, 0xa4, 0x42];
    d.extend_from_slice(&[7; 12]);
    d.extend_from_slice(&attrs);
    d
}

/// A datagram from an address no session uses, with 1,000 sessions on the node: RTP-
/// shaped junk, and an ICE check naming no session. `core/*` is `Core::handle_datagram`
/// (indexes only); `scan/*` is the routing it replaced (2026-12-04): str0m parses the
/// datagram and every session's `Rtc::accepts` is asked, on 1,000 `Rtc`s set up like
/// the SFU's (ICE lite, offer accepted). Sessions are not connected in either.
fn route_unknown(c: &mut Criterion) {
    const PEERS: usize = 1000;
    let now = Instant::now();
    let sfu: SocketAddr = SFU.parse().expect("addr");
    let mut core = Core::new(CoreConfig {
        local_addr: sfu,
        announce_addr: sfu,
        tcp_addr: None,
        max_sessions: PEERS * 2,
        connect_timeout: skylark_sfu::core::DEFAULT_CONNECT_TIMEOUT,
        wall_clock: WallClock::new(now, 0),
        id_seed: IdSeed::new([0; 32]),
        worker: Default::default(),
    });
    let mut scanned = Vec::new();
    for i in 0..PEERS {
        let (_, offer) = Client::new(now, 2000 + i as u16, Direction::RecvOnly);
        core.subscribe(now, "bench", &offer).expect("subscribe");
        let mut b = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(crypto());
        b.codec_config()
            .add_h264(102.into(), Some(103.into()), true, 0x42e01f);
        let mut rtc = b.build(now);
        rtc.add_local_candidate(Candidate::host(sfu, "udp").expect("candidate"));
        rtc.sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).expect("offer"))
            .expect("answer");
        scanned.push(rtc);
    }
    while core.poll_output().is_some() {}
    let stranger: SocketAddr = "10.9.9.9:9999".parse().expect("addr");
    let mut rtp = vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 0x11, 0x22, 0x33, 0x44];
    rtp.extend_from_slice(&[0x5a; 188]);
    let stun = stun_check(b"nosuchufrag:abcd");

    let mut g = c.benchmark_group("sfu/route_unknown");
    for (name, d) in [("rtp_junk", &rtp), ("stun_unknown_ufrag", &stun)] {
        g.bench_function(BenchmarkId::new("core", name), |b| {
            b.iter(|| core.handle_datagram(now, stranger, black_box(d)))
        });
        g.bench_function(BenchmarkId::new("scan", name), |b| {
            b.iter(|| {
                let Ok(contents) = black_box(d.as_slice()).try_into() else {
                    return None;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: stranger,
                        destination: sfu,
                        contents,
                    },
                );
                scanned.iter().position(|r| r.accepts(&input))
            })
        });
    }
    g.finish();
    let c = core.counters();
    assert!(c.datagrams_unmatched > 0 && c.datagrams_unmatched == c.datagrams_in);
}

/// A fixed workload for an instruction count (`benches/callgrind.py`): `frames` frames of
/// a 600 kbit/s stream forwarded through the core to `subs` subscribers, ICE/DTLS kept
/// alive as in the criterion run; with `audio`, also the load generator's 50 packets/s
/// Opus track, each packet arriving on its own (as on a server not yet busy enough to
/// batch its receives), and the core's timers run at their time between arrivals, as
/// the worker runs them. Prints the RTP/RTCP datagrams the core sent. The same inputs
/// give the same work, so two runs of different lengths under callgrind give the
/// instructions per forwarded packet without the setup's.
fn fixed_workload(subs: usize, frames: u64, audio: bool) {
    let gop = gop(600);
    let mut net = Net::new(subs);
    let start = net.now;
    let mut opus = OpusSource::default();
    let mut out = 0u64;
    for n in 0..frames {
        let at = start + FRAME * n as u32;
        while audio && start + OpusSource::packet_offset(opus.next_seq()) < at {
            let p = opus.next_packet();
            let t = start + OpusSource::packet_offset(p.seq);
            out += net.timers_until(t);
            net.now = t;
            let wire = net.publish_audio(&p);
            out += net.forward(&wire);
        }
        if audio {
            out += net.timers_until(at);
        }
        net.now = at;
        let wire = net.publish_frame(n, &gop[(n % 60) as usize]);
        out += net.forward(&wire);
        if (n + 1).is_multiple_of(15) {
            net.pump(false);
        }
    }
    let audio_packets = opus.next_seq();
    println!(
        "{{\"subscribers\":{subs},\"frames\":{frames},\"audio_packets\":{audio_packets},\"rtp_out\":{out}}}"
    );
}

/// `SUBS,FRAMES[,audio]`.
fn workload_spec(spec: &str) -> Option<(usize, u64, bool)> {
    let mut parts = spec.split(',');
    let subs = parts.next()?.parse().ok()?;
    let frames = parts.next()?.parse().ok()?;
    let audio = match parts.next() {
        None => false,
        Some("audio") => true,
        Some(_) => return None,
    };
    Some((subs, frames, audio))
}

criterion_group!(benches, keyframe, core_forward, str0m_send, route_unknown);

fn main() {
    // `SKYLARK_FORWARD_COUNT=SUBS,FRAMES[,audio]`: the fixed workload alone, no criterion.
    if let Ok(spec) = std::env::var("SKYLARK_FORWARD_COUNT") {
        let (subs, frames, audio) =
            workload_spec(&spec).expect("SKYLARK_FORWARD_COUNT=SUBSCRIBERS,FRAMES[,audio]");
        fixed_workload(subs, frames, audio);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
