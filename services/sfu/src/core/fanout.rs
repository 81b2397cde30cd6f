//! Fan-out: one frame of a room's publisher goes to every relay sink as it came, and to
//! every connected subscriber its gate lets it through to, on the subscriber's own
//! timeline and payload type.

use super::codec::{subscriber_pt, FrameCodec};
use super::datagram::Route;
use super::direct::DirectTx;
use super::forward::{h264_is_keyframe, keyframe_picture};
use super::join::{burst, gop_limits, squeezed_capture, CachedFrame, JoinFrames, TrackGop};
use super::keyframe::Want;
use super::output::{relay_msg, transmit_rtp};
use super::packetize::{packetize, Payloads};
use super::peer::PeerRole;
use super::quality::{Choice, Step};
use super::sync::media_us;
use super::{Core, Output, SessionError};
use skylark_proto::sfu::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::CodecSpec;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::{RtpWrite, StreamTx};
use str0m::Rtc;

/// A followed layer without a frame this long is taken as paused by its publisher, and
/// its viewers move to the top layer sending: well under a player's stall timeout (the
/// watch page's is 2 s), well over a frame interval at a low frame rate.
const LAYER_SILENT: Duration = Duration::from_millis(500);

/// Where a subscriber's forwarded packets go (`SendPath`).
enum Sink<'a> {
    /// Sealed by the core and sent to the peer's nominated path.
    Direct(&'a mut DirectTx, &'a mut Rtc, Route),
    /// Written to the peer's str0m stream.
    Str0m(&'a mut StreamTx),
}

/// A frame entering the router.
pub(super) struct InFrame {
    pub codec: FrameCodec,
    /// The publisher's codec parameters, when it negotiated them (WebRTC).
    pub spec: Option<CodecSpec>,
    pub track: String,
    pub rid: Option<Rid>,
    /// RTP time in the codec's clock rate, extended to 64 bits.
    pub time: u64,
    /// When it was captured, on one clock for all the publisher's tracks (`sync`).
    pub capture: Instant,
    pub data: Arc<[u8]>,
    pub contiguous: bool,
    /// Codec configuration for relay consumers (e.g. the AAC AudioSpecificConfig, hex).
    pub fmtp: String,
    /// Whether it is a keyframe, when the source said so (a relay); else detected.
    pub keyframe: Option<bool>,
    /// Wall clock at the origin's receipt (µs since the epoch): set for relayed frames,
    /// which also make the viewers of their layer wait for a keyframe after a gap.
    pub origin_us: Option<u64>,
}

/// A frame an edge pull got from its parent node, with the track it belongs to.
#[derive(Debug, Clone)]
pub struct RelayedFrame {
    pub codec: FrameCodec,
    pub track_id: String,
    /// Simulcast layer; empty without simulcast.
    pub rid: String,
    pub fmtp: String,
    /// RTP time in the codec's clock rate, extended to 64 bits.
    pub time: u64,
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    /// False after frames were lost upstream: wait for the next keyframe.
    pub contiguous: bool,
    /// The origin's receipt time, kept across hops (latency is measured from it).
    pub received_at_us: u64,
}

/// A WebRTC publisher's track id: its media line, and simulcast layer if any.
pub(super) fn track_id(mid: Mid, rid: Option<Rid>) -> String {
    match rid {
        Some(r) => format!("{mid}:{r}"),
        None => mid.to_string(),
    }
}

impl Core {
    /// One frame of a local publisher: `time` in the codec's clock (90 kHz video, 48 kHz
    /// audio), `config` the codec configuration relay consumers need (AAC).
    pub fn push_local(
        &mut self,
        now: Instant,
        session: &str,
        codec: FrameCodec,
        time: u64,
        data: Arc<[u8]>,
        config: &str,
    ) -> Result<(), SessionError> {
        let (key, room) = self.local_publisher(session)?;
        let capture = self.local_clock(key, now, media_us(time, codec.clock_rate()));
        let frame = InFrame {
            codec,
            spec: None,
            track: format!("local-{}", codec.name()),
            rid: None,
            time,
            capture,
            data,
            contiguous: true,
            fmtp: config.to_string(),
            keyframe: None,
            origin_us: None,
        };
        self.route(key, &room, frame, now);
        Ok(())
    }

    /// One frame of an edge pull's publisher ([`Core::publish_relayed`]), routed as the
    /// origin routed it: same track, layer, flags and receipt time.
    pub fn push_relayed(
        &mut self,
        now: Instant,
        session: &str,
        f: RelayedFrame,
    ) -> Result<(), SessionError> {
        let (key, room) = self.local_publisher(session)?;
        // The origin's receipt clock is common to all its tracks (an edge has no sender
        // reports of the publisher).
        let capture = self.local_clock(key, now, i128::from(f.received_at_us));
        let frame = InFrame {
            codec: f.codec,
            spec: None,
            track: f.track_id,
            rid: (!f.rid.is_empty()).then(|| Rid::from(f.rid.as_str())),
            time: f.time,
            capture,
            data: f.data,
            contiguous: f.contiguous,
            fmtp: f.fmtp,
            keyframe: Some(f.keyframe),
            origin_us: Some(f.received_at_us),
        };
        self.route(key, &room, frame, now);
        Ok(())
    }

    /// A local publisher's capture instant of source time `source_us`.
    fn local_clock(&mut self, key: u64, now: Instant, source_us: i128) -> Instant {
        match self.locals.get_mut(&key) {
            Some(l) => l.clock.instant(now, source_us),
            None => now,
        }
    }

    /// A local publisher's key and room.
    fn local_publisher(&self, session: &str) -> Result<(u64, String), SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        let local = self.locals.get(&key).ok_or(SessionError::UnknownSession)?;
        Ok((key, local.room.clone()))
    }

    /// A frame from a room's publisher: to each subscriber and relay sink.
    pub(super) fn route(&mut self, publisher: u64, room_id: &str, d: InFrame, now: Instant) {
        let kind = d.codec.kind();
        self.counters.frames_in += 1;
        self.counters.bytes_in += d.data.len() as u64;
        *self
            .track_bytes
            .entry((room_id.to_string(), d.track.clone()))
            .or_default() += d.data.len() as u64;
        let keyframe =
            kind == MediaKind::Video && d.keyframe.unwrap_or_else(|| h264_is_keyframe(&d.data));
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.publisher != Some(publisher) {
            return;
        }
        let tid = d.track.clone();
        if !room.tracks.iter().any(|t| t.track_id == tid) {
            let info = pb::TrackInfo {
                track_id: tid.clone(),
                kind: match kind {
                    MediaKind::Video => pb::TrackKind::Video,
                    MediaKind::Audio => pb::TrackKind::Audio,
                } as i32,
                codec: d.codec.name().into(),
                clock_rate: d.codec.clock_rate(),
                fmtp: d.fmtp.clone(),
                rid: d.rid.map(|r| r.to_string()).unwrap_or_default(),
            };
            room.tracks.push(info.clone());
            for sink in room.relays.clone() {
                self.out.push_back(Output::Relay {
                    sink,
                    msg: relay_msg(pb::relay_message::Msg::Track(info.clone())),
                });
            }
        }
        // The latest GOP, for joiners, of publishers that can't be asked for a keyframe.
        let cache_gop = kind == MediaKind::Video
            && self.join_frames != JoinFrames::Wait
            && self.locals.contains_key(&publisher);
        if let Some(room) = self.rooms.get_mut(room_id).filter(|_| cache_gop) {
            let gop = room
                .gops
                .entry(tid.clone())
                .or_insert_with(|| TrackGop::new(gop_limits()));
            if !d.contiguous {
                gop.clear();
            }
            gop.push(
                CachedFrame {
                    time: d.time,
                    capture: d.capture,
                    data: d.data.clone(),
                },
                d.data.len(),
                d.time / 90,
                keyframe,
            );
        }
        // Where a viewer with no layer yet may start: the top layer still sending.
        let joinable = match (self.rooms.get_mut(room_id), d.rid) {
            (Some(room), Some(rid)) if kind == MediaKind::Video => {
                let pixels = keyframe.then(|| keyframe_picture(&d.data));
                room.layers.saw(rid, pixels, now);
                room.layers.is_top(rid, now)
            }
            _ => true,
        };
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        // The layers sending now, largest first: a browser publisher pauses its upper
        // layers when its bandwidth estimate or CPU drops, and resumes them later.
        let sending: Vec<Rid> = match d.rid {
            Some(_) if kind == MediaKind::Video => room.layers.sent_within(LAYER_SILENT, now),
            _ => Vec::new(),
        };
        let epoch = room.epoch;
        let subscribers = room.subscribers.clone();
        let received_at_us = d
            .origin_us
            .unwrap_or_else(|| self.config.wall_clock.unix_us(now));
        // A gap upstream: the viewers of this layer restart at its next keyframe.
        let resync = kind == MediaKind::Video && d.origin_us.is_some() && !d.contiguous;
        for sink in room.relays.clone() {
            self.out.push_back(Output::Relay {
                sink,
                msg: relay_msg(pb::relay_message::Msg::Frame(pb::Frame {
                    track_id: tid.clone(),
                    rtp_time: d.time,
                    keyframe,
                    data: d.data.to_vec(),
                    received_at_us,
                    contiguous: d.contiguous,
                })),
            });
        }
        if d.codec == FrameCodec::Aac {
            return;
        }
        let mut payloads: Option<Payloads> = None;
        let mut need_keyframe: Option<Want> = None;
        // The cached GOP ends with this frame (else it is not one a joiner can start on).
        let joiner_gop: &[CachedFrame] =
            match self.rooms.get(room_id).and_then(|r| r.gops.get(&tid)) {
                Some(g)
                    if cache_gop
                        && !keyframe
                        && g.items()
                            .last()
                            .is_some_and(|f| Arc::ptr_eq(&f.data, &d.data)) =>
                {
                    g.items()
                }
                _ => &[],
            };
        for s in subscribers {
            let Some(p) = self.peers.get_mut(&s) else {
                continue;
            };
            if !p.connected {
                continue;
            }
            let PeerRole::Subscriber(st) = &mut p.role else {
                continue;
            };
            let mut joining: Vec<(u64, &CachedFrame)> = Vec::new();
            let (mid, out, step) = match kind {
                MediaKind::Video => {
                    let layer_before = st.gate.layer;
                    if let (Some(rid), Some(layer)) = (d.rid, st.gate.layer) {
                        let silent = |r: Rid| !sending.contains(&r);
                        if rid != layer && silent(layer) {
                            // Its layer went silent (no loss to step on: it froze until
                            // the layer came back): the top layer sending takes over at
                            // its next keyframe.
                            if sending.first() == Some(&rid) && st.gate.next.is_none_or(silent) {
                                st.gate.next = Some(rid);
                                st.quality.moved(Step::Down, now);
                                self.counters.layer_switches += 1;
                            }
                        } else if st.quality.choice == Choice::Layer(rid)
                            && rid != layer
                            && st.gate.next.is_none()
                        {
                            // The chosen layer sends again after such a fallback.
                            st.gate.next = Some(rid);
                            self.counters.layer_switches += 1;
                        }
                    }
                    // A viewer that chose a layer before its first picture starts there.
                    let joinable = match st.gate.next {
                        Some(chosen) if st.gate.layer.is_none() => d.rid == Some(chosen),
                        _ => joinable,
                    };
                    if resync && (st.gate.layer.is_none() || st.gate.layer == d.rid) {
                        st.gate.wants_keyframe = true;
                    }
                    // Would the gate hold this frame back for want of a keyframe?
                    let waiting =
                        st.gate.wants_keyframe || (d.rid.is_some() && st.gate.layer.is_none());
                    let starts_here =
                        st.gate.layer == d.rid || (st.gate.layer.is_none() && joinable);
                    if waiting && starts_here {
                        joining = burst(self.join_frames, joiner_gop);
                        if !joining.is_empty() {
                            // It starts at the cached keyframe.
                            st.gate.pass_video(d.rid, true);
                        }
                    }
                    // A keyframe of a lower layer does not start a viewer with none yet.
                    let keyframe = keyframe && (st.gate.layer.is_some() || joinable);
                    if joining.is_empty() && !st.gate.pass_video(d.rid, keyframe) {
                        let switching = d.rid.is_some() && st.gate.next == d.rid;
                        if switching || st.gate.wants_keyframe || st.gate.layer.is_none() {
                            let want = match (switching, st.gate.layer) {
                                (true, _) => d.rid.map_or(Want::All, Want::Layer),
                                (false, layer) => layer.map_or(Want::All, Want::Layer),
                            };
                            need_keyframe = Some(match need_keyframe.take() {
                                Some(w) => w.merge(want),
                                None => want,
                            });
                        }
                        continue;
                    }
                    if layer_before.is_some() && st.gate.layer != layer_before {
                        st.video.timeline.rebase();
                    }
                    (st.video_mid, &mut st.video, 3000)
                }
                MediaKind::Audio => (st.audio_mid, &mut st.audio, 960),
            };
            let Some(mid) = mid else { continue };
            let pt = match out.pt {
                Some((e, pt)) if e == epoch => pt,
                _ => {
                    let Some(pt) = subscriber_pt(&p.rtc, mid, d.spec, kind) else {
                        tracing::debug!(session = %p.session, "subscriber did not negotiate the publisher's codec");
                        continue;
                    };
                    out.pt = Some((epoch, pt));
                    pt
                }
            };
            let packets = payloads
                .get_or_insert_with(|| {
                    packetize(d.codec, &d.data).unwrap_or_else(|| Payloads::from(Vec::new()))
                })
                .clone();
            if packets.is_empty() {
                continue;
            }
            let video = kind == MediaKind::Video;
            // A joiner's cached frames (the last is this one), else this frame.
            let newest = joining.last().map(|(_, f)| *f);
            let frames = joining
                .iter()
                .map(|&(time, f)| {
                    let capture = match newest {
                        Some(last) if time != f.time => squeezed_capture(last, time),
                        _ => f.capture,
                    };
                    let packets = if Arc::ptr_eq(&f.data, &d.data) {
                        packets.clone()
                    } else {
                        packetize(d.codec, &f.data).unwrap_or_else(|| Payloads::from(Vec::new()))
                    };
                    (time, capture, packets, f.data.len())
                })
                .chain(
                    joining
                        .is_empty()
                        .then(|| (d.time, d.capture, packets.clone(), d.data.len())),
                );
            // The core seals and sends them itself (`direct`), or str0m's session does.
            let mut api = None;
            let mut sink = match (p.direct.as_mut(), p.send_to) {
                (Some(direct), Some(to)) => Sink::Direct(direct, &mut p.rtc, to),
                _ => match api.insert(p.rtc.direct_api()).stream_tx_by_mid(mid, None) {
                    Some(tx) => Sink::Str0m(tx),
                    None => continue,
                },
            };
            // A joiner's cached GOP drains at its pace, and its live video behind it.
            if let (Sink::Direct(direct, ..), Some((_, first)), Some((_, last))) =
                (&mut sink, joining.first(), joining.last())
            {
                let bytes: u64 = joining.iter().map(|(_, f)| f.data.len() as u64).sum();
                let span = Duration::from_micros(last.time.saturating_sub(first.time) * 100 / 9);
                direct.pace(bytes, span, first.data.len(), now);
                self.pacing.insert(s);
            }
            for (time, capture, packets, bytes) in frames {
                let Some(last) = packets.len().checked_sub(1) else {
                    continue;
                };
                let time = out.timeline.map(epoch, time, step) as u32;
                for (i, payload) in packets.iter().enumerate() {
                    let (seq, marker) = (out.take_seq(), video && i == last);
                    match &mut sink {
                        Sink::Direct(direct, rtc, to) => {
                            let header = (*pt, seq, time, marker);
                            if video && direct.pacing() {
                                direct.hold(mid, header, payload, capture, now);
                                continue;
                            }
                            let sealed =
                                direct.packet(rtc, kind, mid, header, payload, capture, now);
                            transmit_rtp(&mut self.out, &mut self.counters, *to, sealed);
                        }
                        Sink::Str0m(tx) => tx.write_rtp(
                            RtpWrite::new(pt, seq.into(), time, capture, payload.clone())
                                .marker(marker)
                                .nackable(video),
                        ),
                    }
                }
                self.counters.frames_out += 1;
                self.counters.bytes_out += bytes as u64;
            }
            match sink {
                Sink::Direct(direct, rtc, (proto, destination)) => {
                    let paced = direct.paced(rtc, now);
                    transmit_rtp(
                        &mut self.out,
                        &mut self.counters,
                        (proto, destination),
                        paced,
                    );
                    let unix_us = self.config.wall_clock.unix_us(now);
                    if let Some(contents) = direct.reports(now, unix_us) {
                        self.counters.datagrams_out += 1;
                        self.out.push_back(Output::Transmit {
                            proto,
                            destination,
                            contents,
                        });
                    }
                }
                // str0m releases written packets on its next timeout, not on a poll: the
                // peer is due now, and the core's `handle_timeout` sends every
                // subscriber's packets of a receive batch in one pass (a drain here found
                // nothing to send, at ~550 instructions per forwarded packet).
                Sink::Str0m(_) => p.next_timeout = p.next_timeout.min(now),
            }
        }
        if let Some(want) = need_keyframe {
            self.request_keyframe(room_id, want, now);
        }
    }

    /// Sends what each joiner's pace lets go by `now` (see [`DirectTx::pace`]).
    pub(super) fn send_paced(&mut self, now: Instant) {
        let (peers, out, counters) = (&mut self.peers, &mut self.out, &mut self.counters);
        self.pacing.retain(|key| {
            let Some(p) = peers.get_mut(key) else {
                return false;
            };
            let (Some(direct), Some(to)) = (p.direct.as_mut(), p.send_to) else {
                return false;
            };
            if direct.pace_due().is_some_and(|t| t <= now) {
                let paced = direct.paced(&mut p.rtc, now);
                transmit_rtp(out, counters, to, paced);
            }
            direct.pacing()
        });
    }
}
