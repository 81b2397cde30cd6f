//! One peer connection inside an engine: its `Rtc`, its role (publisher or viewer)
//! and what it measured. Driven by the engine loop: time in, datagrams out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaTime, Mid, Pt, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tracing::debug;

use crate::source::{
    inspect_frame, picture_size, unix_micros, OpusSource, VideoConfig, VideoSource,
    SIMULCAST_LAYERS,
};
use crate::stats::{Histogram, Percentiles};
use crate::FailureCause;

/// Engine-wide timing rules for sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub connect_timeout: Duration,
    pub keyframe_request_after: Duration,
}

/// How often a viewer without a keyframe repeats its PLI.
const PLI_INTERVAL: Duration = Duration::from_secs(1);
/// A publisher answers at most one keyframe request per layer per this interval, like
/// an encoder.
const FORCED_KEYFRAME_MIN_GAP: Duration = Duration::from_millis(300);
/// If the loop falls this far behind the media clock, skip ahead instead of bursting.
const MAX_MEDIA_LAG: Duration = Duration::from_millis(500);
/// A sequence number this far below the last one means the publisher restarted.
const SEQ_RESTART: u64 = 300;

/// Live totals across an engine's sessions (or a whole swarm), readable at any time
/// without asking the engine task: atomics, written by the engines only.
///
/// ```no_run
/// # fn demo(engine: &skylark_loadgen::Engine) {
/// let now = engine.counters().snapshot();
/// println!("{} playing, {} joining", now.viewers_playing, now.viewers_joining());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub(crate) viewers_requested: AtomicU64,
    pub(crate) viewers_connected: AtomicU64,
    pub(crate) viewers_playing: AtomicU64,
    pub(crate) viewers_failed: AtomicU64,
    pub(crate) publishers_connected: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_received: AtomicU64,
}

/// A snapshot of [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Viewers whose join started.
    pub viewers_requested: u64,
    /// Viewers with ICE+DTLS up now.
    pub viewers_connected: u64,
    /// Connected viewers that have received a keyframe.
    pub viewers_playing: u64,
    /// Viewers that failed (signaling or media).
    pub viewers_failed: u64,
    /// Publishers with ICE+DTLS up now.
    pub publishers_connected: u64,
    /// Media payload bytes received by all viewers.
    pub bytes_received: u64,
    /// Video frames received by all viewers.
    pub frames_received: u64,
}

impl CounterSnapshot {
    /// Viewers requested but neither connected nor failed (signaling or ICE in progress).
    pub fn viewers_joining(&self) -> u64 {
        self.viewers_requested
            .saturating_sub(self.viewers_connected + self.viewers_failed)
    }
}

impl LiveCounters {
    /// Reads every counter (each atomically; the set is not one transaction).
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            viewers_requested: r(&self.viewers_requested),
            viewers_connected: r(&self.viewers_connected),
            viewers_playing: r(&self.viewers_playing),
            viewers_failed: r(&self.viewers_failed),
            publishers_connected: r(&self.publishers_connected),
            bytes_received: r(&self.bytes_received),
            frames_received: r(&self.frames_received),
        }
    }

    pub(crate) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(a: &AtomicU64, n: u64) {
        a.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What a viewer measured. Times are milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewerStats {
    /// ICE+DTLS are up now.
    pub connected: bool,
    /// WHEP POST start → ICE+DTLS connected.
    pub connect_ms: Option<f64>,
    /// WHEP POST start → first keyframe received: the join time a user sees.
    pub join_ms: Option<f64>,
    /// Video frames received.
    pub frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// The layer of the last marked frame (index in
    /// [`SIMULCAST_LAYERS`](crate::source::SIMULCAST_LAYERS); 0 is full size, which a
    /// single-layer publisher sends).
    pub layer: Option<u8>,
    /// Marked frames whose layer differed from the frame before: the server moved the
    /// viewer to another layer (or mixed layers).
    pub layer_switches: u64,
    /// Picture width in the last SPS received, pixels.
    pub width: Option<u32>,
    /// Picture height in the last SPS received, pixels.
    pub height: Option<u32>,
    /// Frames whose hash did not match their marker: corrupted in transit.
    pub frames_bad_hash: u64,
    /// Frames without a Skylark marker (not from this crate's publisher).
    pub frames_unmarked: u64,
    /// Frames missing from the marker sequence (gaps).
    pub frames_missing: u64,
    /// Frames the sequence numbers say should have arrived, first to last seen.
    pub frames_expected: u64,
    /// Frames that arrived after a later one, or twice.
    pub frames_out_of_order: u64,
    /// Frames str0m flagged as following lost RTP packets.
    pub discontinuities: u64,
    /// Video payload bytes received.
    pub video_bytes: u64,
    /// Audio packets received.
    pub audio_packets: u64,
    /// Audio payload bytes received.
    pub audio_bytes: u64,
    /// Keyframe requests (PLI) sent.
    pub keyframe_requests: u64,
    /// Seconds from the first media received to the snapshot.
    pub media_secs: f64,
    /// Milliseconds from the last video frame received to the snapshot: how long the
    /// picture has been frozen (a player's stall watchdog reads the same).
    pub since_last_frame_ms: Option<f64>,
    /// Media payload rate over `media_secs`, kbit/s.
    pub kbps: f64,
    /// Frame latency (receive wallclock − marker send time).
    pub latency_ms: Option<Percentiles>,
    /// Frames stamped later than they arrived (clocks of sender and receiver differ).
    pub clock_skew_frames: u64,
    /// Why the viewer failed, if it did.
    pub failure: Option<FailureCause>,
    /// Frame latencies in µs, for merging across viewers.
    #[serde(skip)]
    pub latency_us: Histogram,
    /// The SFU node that served the viewer (`Skylark-Node` of the WHEP answer).
    #[serde(skip)]
    pub serving_node: Option<String>,
}

/// What a publisher sent on one video layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerStats {
    /// The layer's RTP stream id; `None` for a single-layer publisher.
    pub rid: Option<String>,
    /// Picture width in the layer's SPS.
    pub width: u32,
    /// Picture height in the layer's SPS.
    pub height: u32,
    /// The layer's target bitrate, kbit/s.
    pub target_kbps: u32,
    /// Frames written.
    pub frames_sent: u64,
    /// Of which keyframes.
    pub keyframes_sent: u64,
    /// Bytes written (access units).
    pub bytes_sent: u64,
    /// Keyframe requests (PLI/FIR) received for this layer.
    pub keyframe_requests: u64,
}

/// What a publisher did. Times are milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherStats {
    /// ICE+DTLS are up now.
    pub connected: bool,
    /// WHIP POST start → ICE+DTLS connected.
    pub connect_ms: Option<f64>,
    /// Video frames written, over all layers.
    pub frames_sent: u64,
    /// Of which keyframes.
    pub keyframes_sent: u64,
    /// Video bytes written (access units), over all layers.
    pub video_bytes_sent: u64,
    /// Per video layer: one entry without simulcast, one per RID with it (largest
    /// first).
    pub layers: Vec<LayerStats>,
    /// Audio packets written.
    pub audio_packets_sent: u64,
    /// PLI/FIR received from the server.
    pub keyframe_requests: u64,
    /// Frames str0m refused to queue.
    pub write_errors: u64,
    /// Why the publisher failed, if it did.
    pub failure: Option<FailureCause>,
}

/// Stats of either role.
#[derive(Debug, Clone)]
pub(crate) enum SessionStats {
    Publisher(PublisherStats),
    Viewer(Box<ViewerStats>),
}

/// One video layer a publisher sends: its RID (simulcast) and its source.
struct LayerOut {
    rid: Option<Rid>,
    source: VideoSource,
    last_forced_key: Option<Instant>,
    stats: LayerStats,
}

pub(crate) struct PublisherState {
    video_mid: Mid,
    audio_mid: Mid,
    /// At least one; with simulcast one per RID, largest first: the order their
    /// frames go on the wire.
    layers: Vec<LayerOut>,
    audio: OpusSource,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    video_epoch: Option<Instant>,
    audio_epoch: Option<Instant>,
    stats: PublisherStats,
}

impl PublisherState {
    /// A publisher of one full-size stream, or with `simulcast` of every layer of
    /// [`SIMULCAST_LAYERS`] (`video` then shapes the top layer).
    pub(crate) fn new(video_mid: Mid, audio_mid: Mid, video: VideoConfig, simulcast: bool) -> Self {
        let sources: Vec<(Option<Rid>, VideoSource)> = if simulcast {
            SIMULCAST_LAYERS
                .iter()
                .map(|l| (Some(Rid::from(l.rid)), VideoSource::for_layer(video, *l)))
                .collect()
        } else {
            vec![(None, VideoSource::new(video))]
        };
        let layers = sources
            .into_iter()
            .map(|(rid, source)| LayerOut {
                stats: LayerStats {
                    rid: rid.map(|r| r.to_string()),
                    width: source.layer().width,
                    height: source.layer().height,
                    target_kbps: source.config().bitrate_kbps,
                    ..Default::default()
                },
                rid,
                source,
                last_forced_key: None,
            })
            .collect();
        PublisherState {
            video_mid,
            audio_mid,
            layers,
            audio: OpusSource::default(),
            video_pt: None,
            audio_pt: None,
            video_epoch: None,
            audio_epoch: None,
            stats: PublisherStats::default(),
        }
    }

    /// When the next frame is due; the layers' sources advance together.
    fn video_due(&self) -> Option<Instant> {
        let next = self.layers.first()?.source.next_seq();
        Some(self.video_epoch? + VideoSource::frame_offset(next))
    }

    /// Answers a keyframe request for `rid` (`None`: every layer), at most once per
    /// layer per [`FORCED_KEYFRAME_MIN_GAP`].
    fn keyframe_request(&mut self, rid: Option<Rid>, now: Instant) {
        for l in &mut self.layers {
            let asked = rid.is_none() || l.rid.is_none() || l.rid == rid;
            if !asked {
                continue;
            }
            l.stats.keyframe_requests += 1;
            let recent = l
                .last_forced_key
                .is_some_and(|t| now.duration_since(t) < FORCED_KEYFRAME_MIN_GAP);
            if !recent {
                l.source.force_keyframe();
                l.last_forced_key = Some(now);
            }
        }
    }

    fn audio_due(&self) -> Option<Instant> {
        Some(self.audio_epoch? + OpusSource::packet_offset(self.audio.next_seq()))
    }
}

pub(crate) struct ViewerState {
    video_mid: Mid,
    audio_mid: Mid,
    first_keyframe: Option<Instant>,
    first_media: Option<Instant>,
    last_frame: Option<Instant>,
    next_pli: Option<Instant>,
    first_seq: Option<u64>,
    last_seq: u64,
    /// Frames expected in earlier sequence runs (before a publisher restart).
    expected_before: u64,
    stats: ViewerStats,
}

impl ViewerState {
    pub(crate) fn new(video_mid: Mid, audio_mid: Mid) -> Self {
        ViewerState {
            video_mid,
            audio_mid,
            first_keyframe: None,
            first_media: None,
            last_frame: None,
            next_pli: None,
            first_seq: None,
            last_seq: 0,
            expected_before: 0,
            stats: ViewerStats::default(),
        }
    }

    /// Notes the picture size a keyframe's SPS declares (what a player would show).
    fn saw_keyframe(&mut self, annexb: &[u8]) {
        if let Some((w, h)) = picture_size(annexb) {
            self.stats.width = Some(w);
            self.stats.height = Some(h);
        }
    }

    fn track_seq(&mut self, seq: u64) {
        let Some(first) = self.first_seq else {
            self.first_seq = Some(seq);
            self.last_seq = seq;
            return;
        };
        if seq > self.last_seq {
            self.stats.frames_missing += seq - self.last_seq - 1;
            self.last_seq = seq;
        } else if seq + SEQ_RESTART < self.last_seq {
            // The publisher started over: close this run, open a new one.
            self.expected_before += self.last_seq - first + 1;
            self.first_seq = Some(seq);
            self.last_seq = seq;
        } else {
            self.stats.frames_out_of_order += 1;
        }
    }
}

pub(crate) enum Role {
    Publisher(Box<PublisherState>),
    Viewer(Box<ViewerState>),
}

pub(crate) struct Session {
    rtc: Rtc,
    /// This peer's own socket: a server serving every session on one UDP port (the
    /// Skylark SFU, most SFUs) tells sessions apart by the client's address, so
    /// peers cannot share one.
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    role: Role,
    /// When the WHIP/WHEP POST started: the zero of connect and join times.
    post_started: Instant,
    added: Instant,
    next_timeout: Instant,
    connected_at: Option<Instant>,
    alive: bool,
    /// Whether this session is counted in the connected/playing gauges.
    in_gauges: bool,
    failure: Option<FailureCause>,
    timing: Timing,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Session {
    pub(crate) fn new(
        rtc: Rtc,
        socket: Arc<UdpSocket>,
        local_addr: SocketAddr,
        role: Role,
        post_started: Instant,
        now: Instant,
        timing: Timing,
    ) -> Self {
        Session {
            rtc,
            socket,
            local_addr,
            role,
            post_started,
            added: now,
            next_timeout: now,
            connected_at: None,
            alive: true,
            in_gauges: false,
            failure: None,
            timing,
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive
    }

    pub(crate) fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The earliest moment this session needs [`Session::drive`].
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let timing = &self.timing;
        if !self.alive {
            return None;
        }
        let mut d = self.next_timeout;
        match self.connected_at {
            None => d = d.min(self.added + timing.connect_timeout),
            Some(_) => match &self.role {
                Role::Publisher(p) => {
                    for due in [p.video_due(), p.audio_due()].into_iter().flatten() {
                        d = d.min(due);
                    }
                }
                Role::Viewer(v) => {
                    if let (None, Some(pli)) = (v.first_keyframe, v.next_pli) {
                        d = d.min(pli);
                    }
                }
            },
        }
        Some(d)
    }

    /// A datagram arrived on this session's socket.
    pub(crate) fn receive(
        &mut self,
        datagram: &[u8],
        source: SocketAddr,
        now: Instant,
        counters: &LiveCounters,
    ) {
        if !self.alive {
            return;
        }
        // Anything that is not STUN/DTLS/RTP/RTCP is noise: drop it.
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            debug!("rtc input: {e}");
            self.fail(FailureCause::Rtc, counters);
            return;
        }
        self.poll(now, counters);
    }

    /// Time-driven work: timeouts, media writes, keyframe requests.
    pub(crate) fn drive(&mut self, now: Instant, counters: &LiveCounters) {
        if !self.alive {
            return;
        }
        if self.connected_at.is_none() && now >= self.added + self.timing.connect_timeout {
            self.fail(FailureCause::IceTimeout, counters);
            return;
        }
        match &mut self.role {
            Role::Publisher(_) => {
                if let Err(cause) = self.write_media(now, counters) {
                    self.fail(cause, counters);
                    return;
                }
                if !self.alive {
                    return;
                }
            }
            Role::Viewer(v) => {
                if let (None, Some(at)) = (v.first_keyframe, v.next_pli) {
                    if now >= at {
                        // The first keyframe is late: ask for one (the server may
                        // forward it to the publisher or answer from a cache).
                        if let Some(mut w) = self.rtc.writer(v.video_mid) {
                            if w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok() {
                                v.stats.keyframe_requests += 1;
                            }
                        }
                        v.next_pli = Some(now + PLI_INTERVAL);
                    }
                }
            }
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            debug!("rtc timeout: {e}");
            self.fail(FailureCause::Rtc, counters);
            return;
        }
        self.poll(now, counters);
    }

    /// Drains str0m's output until it asks for the next timeout.
    fn poll(&mut self, now: Instant, counters: &LiveCounters) {
        while self.alive {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // UDP semantics: a full socket buffer drops the datagram, as the
                    // network would; str0m's NACK/RTX and PLI recover.
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        debug!("send to {}: {e}", t.destination);
                    }
                }
                Ok(Output::Event(e)) => self.on_event(e, now, counters),
                Err(e) => {
                    debug!("rtc poll: {e}");
                    self.fail(FailureCause::Rtc, counters);
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant, counters: &LiveCounters) {
        match event {
            Event::Connected => {
                if self.connected_at.is_some() {
                    return;
                }
                self.connected_at = Some(now);
                self.in_gauges = true;
                match &mut self.role {
                    Role::Publisher(p) => {
                        LiveCounters::add(&counters.publishers_connected, 1);
                        // Media is dropped before the connection is up, so the clock
                        // starts now: the first frame is a keyframe.
                        p.video_epoch = Some(now);
                        p.audio_epoch = Some(now);
                    }
                    Role::Viewer(v) => {
                        LiveCounters::add(&counters.viewers_connected, 1);
                        v.next_pli = Some(now + self.timing.keyframe_request_after);
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                if self.connected_at.is_some() =>
            {
                self.fail(FailureCause::Disconnected, counters);
            }
            // The server's close_notify: str0m only drains its own close output now.
            Event::Closed => self.fail(FailureCause::Closed, counters),
            Event::MediaData(data) => {
                if let Role::Viewer(v) = &mut self.role {
                    on_media(v, &data, now, counters);
                }
            }
            Event::KeyframeRequest(req) => {
                if let Role::Publisher(p) = &mut self.role {
                    p.stats.keyframe_requests += 1;
                    if req.mid == p.video_mid {
                        p.keyframe_request(req.rid, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Marks the session failed (first cause wins) and stops it.
    pub(crate) fn fail(&mut self, cause: FailureCause, counters: &LiveCounters) {
        if self.failure.is_none() {
            self.failure = Some(cause);
            if matches!(self.role, Role::Viewer(_)) {
                LiveCounters::add(&counters.viewers_failed, 1);
            }
        }
        self.leave_gauges(counters);
        self.rtc.disconnect();
        self.alive = false;
    }

    fn leave_gauges(&mut self, counters: &LiveCounters) {
        if !std::mem::take(&mut self.in_gauges) {
            return;
        }
        match &self.role {
            Role::Publisher(_) => LiveCounters::sub(&counters.publishers_connected, 1),
            Role::Viewer(v) => {
                LiveCounters::sub(&counters.viewers_connected, 1);
                if v.first_keyframe.is_some() {
                    LiveCounters::sub(&counters.viewers_playing, 1);
                }
            }
        }
    }

    /// Closes the connection politely (RTCP BYE, DTLS close_notify) and returns the
    /// final stats.
    pub(crate) fn close(mut self, now: Instant, counters: &LiveCounters) -> SessionStats {
        let stats = self.stats(now);
        self.leave_gauges(counters);
        if self.alive && self.rtc.close().is_ok() {
            // Bounded: close output is a handful of datagrams.
            for _ in 0..64 {
                match self.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(_)) | Err(_) => break,
                }
                if !self.rtc.is_alive() {
                    break;
                }
            }
        }
        stats
    }

    pub(crate) fn stats(&self, now: Instant) -> SessionStats {
        let connected = self.alive && self.connected_at.is_some();
        let connect_ms = self
            .connected_at
            .map(|t| ms(t.saturating_duration_since(self.post_started)));
        match &self.role {
            Role::Publisher(p) => SessionStats::Publisher(PublisherStats {
                connected,
                connect_ms,
                failure: self.failure,
                layers: p.layers.iter().map(|l| l.stats.clone()).collect(),
                ..p.stats.clone()
            }),
            Role::Viewer(v) => {
                let mut s = v.stats.clone();
                s.connected = connected;
                s.connect_ms = connect_ms;
                s.failure = self.failure;
                s.join_ms = v
                    .first_keyframe
                    .map(|t| ms(t.saturating_duration_since(self.post_started)));
                s.frames_expected =
                    v.expected_before + v.first_seq.map_or(0, |first| v.last_seq - first + 1);
                if let Some(first) = v.first_media {
                    let secs = now.saturating_duration_since(first).as_secs_f64();
                    s.media_secs = secs;
                    if secs > 0.0 {
                        s.kbps = (s.video_bytes + s.audio_bytes) as f64 * 8.0 / secs / 1000.0;
                    }
                }
                s.latency_ms = s.latency_us.percentiles_ms();
                s.since_last_frame_ms = v.last_frame.map(|t| ms(now.saturating_duration_since(t)));
                SessionStats::Viewer(Box::new(s))
            }
        }
    }
}

fn on_media(v: &mut ViewerState, data: &MediaData, now: Instant, counters: &LiveCounters) {
    let len = data.data.len() as u64;
    v.first_media.get_or_insert(now);
    LiveCounters::add(&counters.bytes_received, len);
    if data.mid == v.audio_mid {
        v.stats.audio_packets += 1;
        v.stats.audio_bytes += len;
        return;
    }
    if data.mid != v.video_mid {
        return;
    }
    v.stats.frames += 1;
    v.last_frame = Some(now);
    v.stats.video_bytes += len;
    LiveCounters::add(&counters.frames_received, 1);
    if !data.contiguous {
        v.stats.discontinuities += 1;
    }
    let Some(mark) = inspect_frame(&data.data) else {
        // A publisher that isn't ours (FFmpeg, OBS, a browser): no marks to check, but
        // its keyframes still tell when a viewer can start playing.
        v.stats.frames_unmarked += 1;
        if skylark_media::h264::annexb_nalus(&data.data).any(skylark_media::h264::is_idr) {
            v.saw_keyframe(&data.data);
            v.stats.keyframes += 1;
            if v.first_keyframe.is_none() {
                v.first_keyframe = Some(now);
                LiveCounters::add(&counters.viewers_playing, 1);
            }
        }
        return;
    };
    if !mark.hash_ok {
        v.stats.frames_bad_hash += 1;
    }
    if v.stats.layer.is_some_and(|l| l != mark.layer) {
        v.stats.layer_switches += 1;
    }
    v.stats.layer = Some(mark.layer);
    if mark.keyframe {
        v.saw_keyframe(&data.data);
        v.stats.keyframes += 1;
        if v.first_keyframe.is_none() && mark.hash_ok {
            v.first_keyframe = Some(now);
            LiveCounters::add(&counters.viewers_playing, 1);
        }
    }
    let now_us = unix_micros();
    if now_us >= mark.sent_at_us {
        v.stats.latency_us.record(now_us - mark.sent_at_us);
    } else {
        v.stats.clock_skew_frames += 1;
        v.stats.latency_us.record(0);
    }
    v.track_seq(mark.seq);
}

impl Session {
    /// Writes every video frame and audio packet that is due.
    ///
    /// With several layers, each layer's frame is packetized and put on the wire
    /// before the next layer's (largest first), rather than str0m interleaving their
    /// packets: a server that starts a viewer on the first layer keyframe it receives
    /// (the Skylark SFU) then starts every viewer on the full-size layer, a
    /// deterministic, heaviest-case fan-out.
    fn write_media(&mut self, now: Instant, counters: &LiveCounters) -> Result<(), FailureCause> {
        let Role::Publisher(p) = &mut self.role else {
            return Ok(());
        };
        if !prepare_media(&mut self.rtc, p, now)? {
            return Ok(());
        }
        loop {
            let Role::Publisher(p) = &mut self.role else {
                return Ok(());
            };
            if p.video_due().is_none_or(|due| due > now) {
                break;
            }
            let layers = p.layers.len();
            for i in 0..layers {
                let Role::Publisher(p) = &mut self.role else {
                    return Ok(());
                };
                write_video_layer(&mut self.rtc, p, i, now)?;
                if i + 1 < layers {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        debug!("rtc timeout: {e}");
                        return Err(FailureCause::Rtc);
                    }
                    self.poll(now, counters);
                    if !self.alive {
                        return Ok(());
                    }
                }
            }
        }
        let Role::Publisher(p) = &mut self.role else {
            return Ok(());
        };
        write_audio(&mut self.rtc, p, now)
    }
}

/// Finds the payload types and skips media a stalled loop fell behind on; `false`
/// until the connection is up.
fn prepare_media(
    rtc: &mut Rtc,
    p: &mut PublisherState,
    now: Instant,
) -> Result<bool, FailureCause> {
    let (Some(video_epoch), Some(audio_epoch)) = (p.video_epoch, p.audio_epoch) else {
        return Ok(false);
    };
    if p.video_pt.is_none() {
        p.video_pt = negotiated_pt(rtc, p.video_mid, Codec::H264);
        p.audio_pt = negotiated_pt(rtc, p.audio_mid, Codec::Opus);
        if p.video_pt.is_none() || p.audio_pt.is_none() {
            return Err(FailureCause::BadAnswer);
        }
    }

    // A stalled loop (CPU starvation) skips media rather than bursting it, as a live
    // encoder would; sequence numbers stay contiguous, so receivers see no loss.
    let lag = |due: Instant| now.saturating_duration_since(due);
    if let Some(due) = p.video_due() {
        if lag(due) > MAX_MEDIA_LAG {
            p.video_epoch = Some(video_epoch + lag(due));
        }
    }
    if let Some(due) = p.audio_due() {
        if lag(due) > MAX_MEDIA_LAG {
            p.audio_epoch = Some(audio_epoch + lag(due));
        }
    }
    Ok(true)
}

/// Writes the next frame of layer `i`.
fn write_video_layer(
    rtc: &mut Rtc,
    p: &mut PublisherState,
    i: usize,
    now: Instant,
) -> Result<(), FailureCause> {
    let Some(video_pt) = p.video_pt else {
        return Err(FailureCause::BadAnswer);
    };
    let Some(layer) = p.layers.get_mut(i) else {
        return Ok(());
    };
    let frame = layer.source.next_frame(unix_micros());
    let len = frame.data.len() as u64;
    let Some(w) = rtc.writer(p.video_mid) else {
        return Err(FailureCause::Rtc);
    };
    let w = match layer.rid {
        Some(rid) => w.rid(rid),
        None => w,
    };
    match w.write(
        video_pt,
        now,
        MediaTime::from_90khz(frame.rtp_time),
        frame.data,
    ) {
        Ok(()) => {
            let key = u64::from(frame.keyframe);
            p.stats.frames_sent += 1;
            p.stats.keyframes_sent += key;
            p.stats.video_bytes_sent += len;
            layer.stats.frames_sent += 1;
            layer.stats.keyframes_sent += key;
            layer.stats.bytes_sent += len;
        }
        Err(e) => {
            debug!("video write: {e}");
            p.stats.write_errors += 1;
        }
    }
    Ok(())
}

/// Writes every audio packet that is due.
fn write_audio(rtc: &mut Rtc, p: &mut PublisherState, now: Instant) -> Result<(), FailureCause> {
    let Some(audio_pt) = p.audio_pt else {
        return Err(FailureCause::BadAnswer);
    };
    while p.audio_due().is_some_and(|due| due <= now) {
        let packet = p.audio.next_packet();
        let Some(w) = rtc.writer(p.audio_mid) else {
            return Err(FailureCause::Rtc);
        };
        let time = MediaTime::new(packet.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        match w.write(audio_pt, now, time, packet.data) {
            Ok(()) => p.stats.audio_packets_sent += 1,
            Err(e) => {
                debug!("audio write: {e}");
                p.stats.write_errors += 1;
            }
        }
    }
    Ok(())
}

/// The payload type the answer settled on for `codec` in `mid`.
fn negotiated_pt(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let w = rtc.writer(mid)?;
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt());
    pt
}
