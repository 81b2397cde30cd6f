//! Event translation: one peer's str0m outputs become the core's — datagrams to send,
//! peer state (connected, media lines), frames for fan-out, keyframe wants, counters.

use super::codec::FrameCodec;
use super::counters::StreamTotals;
use super::direct::{DirectError, DirectTx};
use super::fanout::{track_id, InFrame};
use super::keyframe::Want;
use super::nominate;
use super::output::transmit_rtp;
use super::peer::{Peer, PeerRole, PublisherTrack};
use super::quality::Step;
use super::stun;
use super::sync::sender_clock_us;
use super::{CloseReason, Core, Output};
use std::time::{Duration, Instant};
use str0m::media::{MediaData, MediaKind};
use str0m::rtp::rtcp::{ReceiverReport, Rtcp, SenderReport};
use str0m::rtp::RawPacket;
use str0m::{Event, IceConnectionState, Output as RtcOutput, Rtc};

/// How long a subscriber's sent packets stay resendable. A NACK for an older packet
/// comes too late for a stream watched a fraction of a second behind live (its frame
/// was played or skipped), so it is not answered; and the cache, most of a subscriber's
/// memory, holds a second instead of str0m's three.
pub const RTX_CACHE_AGE: Duration = Duration::from_secs(1);
/// Packets of one subscriber stream kept for resends (a second of 4 Mbit/s video).
pub const RTX_CACHE_PACKETS: usize = 512;
/// Share of a subscriber's sending that may be resends; past it, str0m drops queued
/// resends, so a viewer on a bad link can't make the node spend its CPU resending.
pub const RTX_RATIO_CAP: f32 = 0.15;
/// The same while the worker is past its busy threshold: no resends at all, so the
/// viewers it serves keep their live packets' latency (a lost packet then costs a frame
/// until the next keyframe request, as without NACK).
pub const RTX_RATIO_SHED: f32 = 0.0;

/// Bounds the resends of a subscriber's send streams (see [`RTX_CACHE_AGE`]) to
/// `ratio` of what they send. Setting it empties the streams' resend caches.
fn bound_resends(rtc: &mut Rtc, mids: impl IntoIterator<Item = str0m::media::Mid>, ratio: f32) {
    let mut api = rtc.direct_api();
    for mid in mids {
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(ratio));
        }
    }
}

/// A subscriber's own send path from the keys its DTLS left (`super::direct`); `None`
/// (str0m sends, without sender reports) if there are none, which would be a bug.
fn direct_tx(p: &Peer) -> Option<Box<DirectTx>> {
    let keys = p.keys.as_ref()?;
    let made = keys
        .get()
        .ok_or(DirectError::NoKeys)
        // RTX sequence numbers start at random, as the subscriber's own do (`admission`).
        .and_then(|k| DirectTx::new(k, getrandom::u32().unwrap_or(0)));
    match made {
        Ok(d) => Some(Box::new(d)),
        Err(e) => {
            tracing::error!(session = %p.session, error = %e, "the core can't seal this viewer's packets; str0m sends them, without sender reports");
            None
        }
    }
}

impl Core {
    /// The node's retransmission budget: while `shed` (the worker past its busy
    /// threshold), every subscriber may spend [`RTX_RATIO_SHED`] of its sending on
    /// resends instead of [`RTX_RATIO_CAP`]; resends are the first work an overloaded
    /// worker drops, before the live packets every viewer needs. A change empties the
    /// resend caches; it says whether there was one.
    pub fn shed_resends(&mut self, shed: bool) -> bool {
        if shed == self.resends_shed {
            return false;
        }
        self.resends_shed = shed;
        let ratio = self.rtx_ratio();
        for p in self.peers.values_mut() {
            // A subscriber the core sends to itself gets the ratio with each NACK.
            if p.direct.is_some() {
                continue;
            }
            if let PeerRole::Subscriber(st) = &p.role {
                if p.connected {
                    let mids = [st.video_mid, st.audio_mid];
                    bound_resends(&mut p.rtc, mids.into_iter().flatten(), ratio);
                }
            }
        }
        tracing::info!(shed, "resend budget changed");
        true
    }

    pub(super) fn rtx_ratio(&self) -> f32 {
        if self.resends_shed {
            RTX_RATIO_SHED
        } else {
            RTX_RATIO_CAP
        }
    }

    /// Polls a peer until it has nothing more to say, routing what it produced.
    pub(super) fn drain(&mut self, key: u64, now: Instant) {
        let mut media: Vec<MediaData> = Vec::new();
        let mut want_keyframe: Option<Want> = None;
        let mut layer_step: Option<Step> = None;
        let mut alive = true;
        let rtx_ratio = self.rtx_ratio();
        {
            let Some(p) = self.peers.get_mut(&key) else {
                return;
            };
            loop {
                if !p.rtc.is_alive() {
                    alive = false;
                    break;
                }
                match p.rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => {
                        p.next_timeout = t;
                        break;
                    }
                    Ok(RtcOutput::Transmit(t)) => {
                        if nominate::is_own_response(&mut p.path, &t.contents) {
                            continue;
                        }
                        // DTLS and SRTCP go only on the nominated path (STUN answers go
                        // where each check came from).
                        if stun::classify(&t.contents) == stun::Kind::NotStun {
                            p.send_to = Some((t.proto, t.destination));
                        }
                        self.counters.datagrams_out += 1;
                        self.out.push_back(Output::Transmit {
                            proto: t.proto,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                    Ok(RtcOutput::Event(e)) => match e {
                        Event::Connected => {
                            p.connected = true;
                            tracing::debug!(session = %p.session, "connected");
                            // Its streams' resend bound goes on at `MediaAdded`, which
                            // str0m emits only after this.
                            if let PeerRole::Subscriber(_) = &p.role {
                                want_keyframe = Some(Want::All);
                                p.direct = direct_tx(p);
                            }
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            p.rtc.disconnect();
                        }
                        Event::MediaAdded(m) => match &mut p.role {
                            PeerRole::Subscriber(st) => {
                                match m.kind {
                                    MediaKind::Video => st.video_mid = st.video_mid.or(Some(m.mid)),
                                    MediaKind::Audio => st.audio_mid = st.audio_mid.or(Some(m.mid)),
                                }
                                // str0m announces media only once SRTP is up, after
                                // `Connected`: the bound goes on here, else the streams
                                // keep str0m's 3 s / 1,000-packet cache (measured: 473
                                // slots of 432 B, ~200 KiB per viewer).
                                if p.direct.is_none() {
                                    bound_resends(&mut p.rtc, [m.mid], rtx_ratio);
                                }
                            }
                            PeerRole::Publisher { tracks } => tracks.push(PublisherTrack {
                                mid: m.mid,
                                kind: m.kind,
                            }),
                        },
                        Event::MediaData(d) => {
                            if matches!(p.role, PeerRole::Publisher { .. }) {
                                media.push(d);
                            }
                        }
                        Event::KeyframeRequest(_) => {
                            // A viewer's PLI is for the layer it follows.
                            let want = match &p.role {
                                PeerRole::Subscriber(st) => {
                                    st.gate.layer.map_or(Want::All, Want::Layer)
                                }
                                PeerRole::Publisher { .. } => Want::All,
                            };
                            want_keyframe = Some(match want_keyframe.take() {
                                Some(w) => w.merge(want),
                                None => want,
                            });
                        }
                        Event::MediaIngressStats(st) => {
                            let growth = p
                                .stream_totals
                                .entry((false, st.mid, st.rid))
                                .or_default()
                                .advance(StreamTotals {
                                    packets: st.packets,
                                    nacks: st.nacks,
                                    plis: st.plis,
                                });
                            self.counters.add_ingress(growth);
                            if let Some(l) = st.loss {
                                p.loss = l;
                            }
                        }
                        Event::PeerStats(st) => {
                            // str0m's nominated path, should the peer have moved.
                            if let Some(pair) = st.selected_candidate_pair {
                                p.send_to = Some((pair.protocol, pair.remote.addr));
                            }
                        }
                        Event::RawPacket(raw) => {
                            let (PeerRole::Subscriber(sub), Some(direct), RawPacket::RtcpRx(fb)) =
                                (&mut p.role, p.direct.as_mut(), *raw)
                            else {
                                continue;
                            };
                            match fb {
                                Rtcp::Nack(nack) => {
                                    let codecs = p.rtc.codec_config();
                                    let rtx_pt = |pt: u8| {
                                        codecs
                                            .params()
                                            .iter()
                                            .find(|c| *c.pt() == pt)
                                            .and_then(|c| c.resend())
                                            .map(|r| *r)
                                    };
                                    let (resends, asked) =
                                        direct.answer_nack(&nack, rtx_pt, rtx_ratio, now);
                                    self.counters.nacks_from_subscribers += asked;
                                    let Some(to) = p.send_to else {
                                        continue;
                                    };
                                    transmit_rtp(&mut self.out, &mut self.counters, to, resends);
                                }
                                Rtcp::ReceiverReport(ReceiverReport { reports, .. })
                                | Rtcp::SenderReport(SenderReport { reports, .. }) => {
                                    for r in reports.iter() {
                                        let Some(loss) =
                                            direct.video_loss(*r.ssrc, r.fraction_lost)
                                        else {
                                            continue;
                                        };
                                        if sub.gate.layer.is_some() {
                                            layer_step =
                                                sub.quality.on_loss(loss, now).or(layer_step);
                                        }
                                    }
                                }
                                Rtcp::Pli(_) | Rtcp::Fir(_) => {
                                    self.counters.plis_from_subscribers += 1;
                                }
                                _ => {}
                            }
                        }
                        Event::MediaEgressStats(st) => {
                            if let (PeerRole::Subscriber(sub), Some(loss)) = (&mut p.role, st.loss)
                            {
                                if Some(st.mid) == sub.video_mid && sub.gate.layer.is_some() {
                                    layer_step = sub.quality.on_loss(loss, now).or(layer_step);
                                }
                            }
                            let growth = p
                                .stream_totals
                                .entry((true, st.mid, st.rid))
                                .or_default()
                                .advance(StreamTotals {
                                    packets: st.packets,
                                    nacks: st.nacks,
                                    plis: st.plis,
                                });
                            self.counters.add_egress(growth);
                        }
                        _ => {}
                    },
                    Err(e) => {
                        tracing::debug!(session = %p.session, error = %e, "session failed");
                        p.rtc.disconnect();
                    }
                }
            }
        }
        if !alive {
            self.remove_peer(key, CloseReason::Failed);
            return;
        }
        // Most drains of a subscriber only send: no room lookup (a String clone) then.
        if media.is_empty() && want_keyframe.is_none() && layer_step.is_none() {
            return;
        }
        let room = match self.peers.get(&key) {
            Some(p) => p.room.clone(),
            None => return,
        };
        for d in media {
            let spec = d.params.spec();
            let Some(codec) = FrameCodec::from_negotiated(spec.codec) else {
                continue;
            };
            let capture = match (
                sender_clock_us(d.time, d.last_sender_info.as_ref()),
                self.peers.get_mut(&key),
            ) {
                (Some(us), Some(p)) => p.clock.instant(d.network_time, us),
                // Before the track's first sender report: its arrival.
                _ => d.network_time,
            };
            let frame = InFrame {
                codec,
                spec: Some(spec),
                track: track_id(d.mid, d.rid),
                rid: d.rid,
                time: d.time.numer(),
                capture,
                data: d.data,
                contiguous: d.contiguous,
                fmtp: spec.format.to_string(),
                keyframe: None,
                origin_us: None,
            };
            self.route(key, &room, frame, now);
        }
        if let Some(want) = want_keyframe {
            self.request_keyframe(&room, want, now);
        }
        if let Some(step) = layer_step {
            self.step_layer(key, &room, step, now);
        }
    }
}
