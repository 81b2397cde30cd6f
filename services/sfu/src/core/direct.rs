//! A subscriber's forward path past str0m: the core writes each forwarded packet's
//! 12-byte RTP header itself and seals it with its own SRTP context (the keys its DTLS
//! exported), straight into the datagram it sends. str0m keeps the session: ICE, DTLS,
//! the subscriber's RTCP in (PLI, NACK and reports reach the core as raw packets), and
//! BYE at the end. What str0m did per sent packet moves here, once per packet instead
//! of a whole `Rtc` pass per subscriber and frame (docs/benchmarks.md, "Where a
//! forwarded packet's CPU goes"): sender reports for lip sync, and NACKs answered from
//! the packets already shared by every subscriber of the frame (`Payloads`).

use super::translate::{RTX_CACHE_AGE, RTX_CACHE_PACKETS};
use skylark_srtp::{MasterKey, Profile, Sender, SrtpError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use str0m::crypto::dtls::SrtpProfile;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::rtcp::Nack;
use str0m::Rtc;

/// Who seals and sends a subscriber's forwarded packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendPath {
    /// The core, past str0m (this module).
    #[default]
    Direct,
    /// str0m's `Rtc` (`write_rtp`), as before: kept to measure one against the other.
    Str0m,
}

impl std::str::FromStr for SendPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(Self::Direct),
            "str0m" => Ok(Self::Str0m),
            _ => Err(format!("{s:?}: one of direct, str0m")),
        }
    }
}

/// RTP header without CSRCs or extensions: subscribers negotiate none (`codec`).
const HEADER: usize = 12;
/// Seconds between 1900 (NTP) and 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Sender reports go out this often per stream while it sends (str0m's was 1 s for
/// both kinds here): browsers lip-sync once they have one of each stream.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The window a subscriber's resend share is measured over (str0m's was 1 s too).
const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
/// Our SRTCP indices start here, far from str0m's (it seals the session's BYE with
/// the same key and its own counter from 0): no index is sealed twice for one SSRC.
pub(super) const RTCP_INDEX_START: u32 = 1 << 30;

/// A joiner's cached GOP leaves at least this fast (bytes/s, 8 Mbit/s), or at three
/// times the GOP's own rate when that is more: it drains in at most half the GOP's span,
/// and the live frames queued behind it are late by no more.
const PACE_FLOOR: u64 = 1_000_000;
/// What may leave at once before the pace holds the rest back: a burst of a whole GOP
/// at once overflowed a loopback viewer's socket buffer (160 of ~1,000 datagrams of an
/// RTMP join in `rtmp.rs`), as it would a home router's queue.
const PACE_BURST: i64 = 16 * 1024;
/// The joiner's first picture, the cached keyframe, leaves at once up to this size.
const PACE_FIRST: usize = 64 * 1024;
/// The pace's timer step: a few packets each, not one wake-up per packet.
const PACE_TICK: std::time::Duration = std::time::Duration::from_millis(2);
/// A packet held back this long goes at once, with everything before it: the queue's
/// latency and memory stay bounded should a stream outrun its pace.
const PACE_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A video packet whose header is written (sequence number taken) waiting for its pace.
struct Queued {
    mid: Mid,
    header: (u8, u64, u32, bool),
    payload: Arc<[u8]>,
    capture: Instant,
    queued: Instant,
}

/// A joiner's video while its cached GOP drains: packets leave in order at `rate`.
struct Pacer {
    queue: VecDeque<Queued>,
    /// Bytes per second.
    rate: u64,
    /// Bytes that may leave now (negative: owed), as of `at`.
    credit: i64,
    at: Instant,
}

impl Pacer {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1_000_000;
        // Earned credit tops up to a slice; the first picture's may be more.
        self.credit = (self.credit + earned as i64).min(PACE_BURST.max(self.credit));
        self.at = now;
    }

    /// When the next packet may leave.
    fn due(&self) -> Instant {
        if self.credit > 0 {
            return self.at;
        }
        let owed = (-self.credit) as u64 + 1;
        let wait = std::time::Duration::from_micros(owed * 1_000_000 / self.rate.max(1));
        self.at + wait.max(PACE_TICK)
    }
}

/// One forwarded packet, kept for resends: the payload is the frame's, shared by all
/// its subscribers.
struct Sent {
    seq: u64,
    time: u32,
    pt: u8,
    marker: bool,
    at: Instant,
    payload: Arc<[u8]>,
}

/// What the core keeps per subscriber stream (video or audio) it sends itself.
pub(super) struct DirectStream {
    pub mid: Mid,
    ssrc: u32,
    /// RTX SSRC and the next RTX sequence number.
    rtx: Option<(u32, u64)>,
    cname: String,
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// RTP time and capture instant of the newest packet: a report's RTP time runs on
    /// from it (as str0m's did).
    last: Option<(u32, Instant)>,
    /// Video only: what a NACK may ask for, oldest first.
    resend: VecDeque<Sent>,
}

impl DirectStream {
    fn new(rtc: &mut Rtc, mid: Mid, kind: MediaKind, rtx_seed: u16) -> Option<Self> {
        let cname = rtc.media(mid)?.cname().to_string();
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None)?;
        Some(Self {
            mid,
            ssrc: *tx.ssrc(),
            rtx: tx.rtx().map(|s| (*s, u64::from(rtx_seed & 0x7fff))),
            cname,
            clock_rate: match kind {
                MediaKind::Video => 90_000,
                MediaKind::Audio => 48_000,
            },
            packets: 0,
            octets: 0,
            last: None,
            resend: VecDeque::new(),
        })
    }

    /// The RTP time at `now`, run on from the newest packet's capture.
    fn rtp_time(&self, now: Instant) -> Option<u32> {
        let (time, capture) = self.last?;
        let ahead = match now.checked_duration_since(capture) {
            Some(d) => d.as_micros() as i128,
            None => -(capture.duration_since(now).as_micros() as i128),
        };
        let ticks = ahead * i128::from(self.clock_rate) / 1_000_000;
        Some((i128::from(time) + ticks) as u32)
    }
}

/// Why a subscriber can't send past str0m.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirectError {
    #[error("DTLS exported no SRTP keys")]
    NoKeys,
    #[error("SRTP profile {0:?} is not one the core seals")]
    Profile(SrtpProfile),
    #[error(transparent)]
    Srtp(#[from] SrtpError),
}

/// Bytes sent and resent over about the last [`RESEND_WINDOW`]: this window's and the
/// one before.
#[derive(Default)]
struct ResendShare {
    since: Option<Instant>,
    sent: [u64; 2],
    resent: [u64; 2],
}

impl ResendShare {
    fn roll(&mut self, now: Instant) {
        match self.since {
            Some(t) if now.saturating_duration_since(t) < RESEND_WINDOW => {}
            Some(t) if now.saturating_duration_since(t) < 2 * RESEND_WINDOW => {
                self.sent = [0, self.sent[0]];
                self.resent = [0, self.resent[0]];
                self.since = Some(now);
            }
            _ => {
                *self = Self {
                    since: Some(now),
                    ..Self::default()
                }
            }
        }
    }

    /// Resent bytes over all bytes sent, over the last one to two windows.
    fn ratio(&self) -> f32 {
        let resent = (self.resent[0] + self.resent[1]) as f32;
        let all = resent + (self.sent[0] + self.sent[1]) as f32;
        if all > 0.0 {
            resent / all
        } else {
            0.0
        }
    }
}

/// A subscriber's own send path: SRTP context, streams, resend share.
pub(super) struct DirectTx {
    srtp: Sender,
    overhead: usize,
    pub video: Option<DirectStream>,
    pub audio: Option<DirectStream>,
    /// What of its sending was resends lately (the node's resend ratio bounds it).
    share: ResendShare,
    next_report: Option<Instant>,
    seed: u32,
    /// A joiner's video held to its pace while its cached GOP drains.
    pacer: Option<Pacer>,
}

impl DirectTx {
    /// From the keys the session's DTLS exported.
    pub fn new(keys: &skylark_dtls::SrtpKeys, seed: u32) -> Result<Self, DirectError> {
        let profile = match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => Profile::Aes128Gcm,
            SrtpProfile::AEAD_AES_256_GCM => Profile::Aes256Gcm,
            SrtpProfile::AES128_CM_SHA1_80 => Profile::Aes128CmSha1_80,
            other => return Err(DirectError::Profile(other)),
        };
        let (ours, _theirs): (MasterKey, MasterKey) =
            skylark_srtp::split_keying(&keys.material, profile, keys.dtls_client)?;
        let mut srtp = Sender::new(&ours)?;
        srtp.set_rtcp_index(RTCP_INDEX_START);
        Ok(Self {
            overhead: srtp.rtp_overhead(),
            srtp,
            video: None,
            audio: None,
            share: ResendShare::default(),
            next_report: None,
            seed,
            pacer: None,
        })
    }

    /// The stream of `kind` on `mid`, set up from str0m's on first use.
    fn stream(&mut self, rtc: &mut Rtc, kind: MediaKind, mid: Mid) -> Option<&mut DirectStream> {
        let (slot, seed) = match kind {
            MediaKind::Video => (&mut self.video, self.seed as u16),
            MediaKind::Audio => (&mut self.audio, (self.seed >> 16) as u16),
        };
        if slot.as_ref().is_none_or(|s| s.mid != mid) {
            *slot = DirectStream::new(rtc, mid, kind, seed);
        }
        slot.as_mut()
    }

    /// One forwarded packet, sealed: `seq` extended (its high bits are the rollover
    /// counter). Video packets are kept for NACKs. `None`: the stream is not set up in
    /// str0m (no such media line) or sealing failed.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        rtc: &mut Rtc,
        kind: MediaKind,
        mid: Mid,
        (pt, seq, time, marker): (u8, u64, u32, bool),
        payload: &Arc<[u8]>,
        capture: Instant,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let overhead = self.overhead;
        let stream = self.stream(rtc, kind, mid)?;
        let mut buf = Vec::with_capacity(HEADER + payload.len() + overhead);
        write_header(&mut buf, pt, marker, seq as u16, time, stream.ssrc);
        buf.extend_from_slice(payload);
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(payload.len() as u32);
        stream.last = Some((time, capture));
        if kind == MediaKind::Video {
            if stream.resend.len() >= RTX_CACHE_PACKETS
                || stream
                    .resend
                    .front()
                    .is_some_and(|s| now.saturating_duration_since(s.at) > RTX_CACHE_AGE)
            {
                stream.resend.pop_front();
            }
            stream.resend.push_back(Sent {
                seq,
                time,
                pt,
                marker,
                at: now,
                payload: payload.clone(),
            });
            self.share.roll(now);
            self.share.sent[0] += payload.len() as u64;
        }
        if self.next_report.is_none() {
            self.next_report = Some(now);
        }
        match self.srtp.seal_rtp(&mut buf, HEADER, (seq >> 16) as u32) {
            Ok(()) => Some(buf),
            Err(e) => {
                tracing::warn!(error = %e, "sealing a forwarded packet failed");
                None
            }
        }
    }

    /// Paces the video from here on: a joiner's cached GOP of `bytes` spanning `span`,
    /// starting with a keyframe of `keyframe` bytes, is about to be queued
    /// ([`DirectTx::hold`]). The keyframe goes at once, the rest at the pace.
    pub fn pace(&mut self, bytes: u64, span: std::time::Duration, keyframe: usize, now: Instant) {
        let own = bytes.saturating_mul(3_000_000) / (span.as_micros() as u64).max(1);
        self.pacer = Some(Pacer {
            queue: VecDeque::new(),
            rate: own.max(PACE_FLOOR),
            credit: PACE_BURST.max(keyframe.min(PACE_FIRST) as i64),
            at: now,
        });
    }

    /// Whether video packets wait for their pace (a cached GOP is draining).
    pub fn pacing(&self) -> bool {
        self.pacer.is_some()
    }

    /// Queues a video packet behind the ones pacing holds back (its header written:
    /// see [`DirectTx::packet`]).
    pub fn hold(
        &mut self,
        mid: Mid,
        header: (u8, u64, u32, bool),
        payload: &Arc<[u8]>,
        capture: Instant,
        now: Instant,
    ) {
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.queue.push_back(Queued {
                mid,
                header,
                payload: payload.clone(),
                capture,
                queued: now,
            });
        }
    }

    /// When the pace lets the next held packet go.
    pub fn pace_due(&self) -> Option<Instant> {
        self.pacer.as_ref().map(Pacer::due)
    }

    /// The held packets their pace lets go now, sealed, in order; pacing ends with the
    /// queue.
    pub fn paced(&mut self, rtc: &mut Rtc, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(pacer) = self.pacer.as_mut() else {
            return out;
        };
        pacer.refill(now);
        // Everything up to the last packet held too long goes now.
        let overdue = pacer
            .queue
            .iter()
            .rposition(|q| now.saturating_duration_since(q.queued) >= PACE_MAX_WAIT)
            .map_or(0, |i| i + 1);
        let mut go = Vec::new();
        while let Some(q) = pacer.queue.front() {
            if go.len() >= overdue && pacer.credit <= 0 {
                break;
            }
            pacer.credit -= q.payload.len() as i64;
            go.extend(pacer.queue.pop_front());
        }
        if pacer.queue.is_empty() {
            self.pacer = None;
        }
        for q in go {
            let sealed = self.packet(
                rtc,
                MediaKind::Video,
                q.mid,
                q.header,
                &q.payload,
                q.capture,
                now,
            );
            out.extend(sealed);
        }
        out
    }

    /// Resends the video packets a NACK asks for that are still kept and fresh, on the
    /// RTX stream when negotiated (`rtx_pt`), else as they were: all of them while
    /// resends were at most `ratio` of its sending over the last second, none past it
    /// (str0m's rule, which it checked every 50 ms: a viewer that lost much of a join
    /// burst gets it back, one on a bad link can't make the node resend more than its
    /// share for long; `ratio` 0: none). Returns the sealed datagrams and how many
    /// packets it asked for.
    pub fn answer_nack(
        &mut self,
        nack: &Nack,
        rtx_pt: impl Fn(u8) -> Option<u8>,
        ratio: f32,
        now: Instant,
    ) -> (Vec<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let mut asked = 0;
        self.share.roll(now);
        let refuse = ratio <= 0.0 || self.share.ratio() > ratio;
        let Some(stream) = self.video.as_mut().filter(|s| s.ssrc == *nack.ssrc) else {
            return (out, asked);
        };
        let Some(newest) = stream.resend.back().map(|s| s.seq) else {
            return (out, asked);
        };
        for entry in nack.reports.iter() {
            let lost = std::iter::once(entry.pid).chain(
                (0..16u16)
                    .filter(|b| entry.blp & (1 << b) != 0)
                    .map(|b| entry.pid.wrapping_add(b + 1)),
            );
            for seq16 in lost {
                asked += 1;
                let Some(seq) = extend_seq(newest, seq16) else {
                    continue;
                };
                let Ok(at) = stream.resend.binary_search_by_key(&seq, |s| s.seq) else {
                    continue;
                };
                let sent = &stream.resend[at];
                // Too old to help: its frame was played or skipped.
                if now.saturating_duration_since(sent.at) > RTX_CACHE_AGE {
                    continue;
                }
                if refuse {
                    continue;
                }
                self.share.resent[0] += sent.payload.len() as u64;
                let mut buf = Vec::with_capacity(HEADER + 2 + sent.payload.len() + self.overhead);
                let roc = match (stream.rtx.as_mut(), rtx_pt(sent.pt)) {
                    (Some((ssrc, next)), Some(pt)) => {
                        let rtx_seq = *next;
                        *next += 1;
                        write_header(&mut buf, pt, sent.marker, rtx_seq as u16, sent.time, *ssrc);
                        buf.extend_from_slice(&(sent.seq as u16).to_be_bytes());
                        (rtx_seq >> 16) as u32
                    }
                    _ => {
                        let (pt, marker, time) = (sent.pt, sent.marker, sent.time);
                        write_header(&mut buf, pt, marker, sent.seq as u16, time, stream.ssrc);
                        (sent.seq >> 16) as u32
                    }
                };
                buf.extend_from_slice(&sent.payload);
                match self.srtp.seal_rtp(&mut buf, HEADER, roc) {
                    Ok(()) => out.push(buf),
                    Err(e) => tracing::warn!(error = %e, "sealing a resend failed"),
                }
            }
        }
        (out, asked)
    }

    /// The loss fraction a reception report block gives for its video, if it is ours.
    pub fn video_loss(&self, ssrc: u32, fraction_lost: u8) -> Option<f32> {
        self.video
            .as_ref()
            .filter(|s| s.ssrc == ssrc)
            .map(|_| f32::from(fraction_lost) / 256.0)
    }

    /// A sealed sender report of each stream that has sent (one compound packet, with
    /// their CNAMEs), when due: every [`REPORT_EVERY`] from the first packet.
    pub fn reports(&mut self, now: Instant, unix_us: u64) -> Option<Vec<u8>> {
        if self.next_report.is_none_or(|t| now < t) {
            return None;
        }
        self.next_report = Some(now + REPORT_EVERY);
        let streams: Vec<&DirectStream> = [self.video.as_ref(), self.audio.as_ref()]
            .into_iter()
            .flatten()
            .filter(|s| s.packets > 0)
            .collect();
        if streams.is_empty() {
            return None;
        }
        let ntp_secs = unix_us / 1_000_000 + NTP_UNIX_OFFSET;
        let ntp_frac = ((unix_us % 1_000_000) << 32) / 1_000_000;
        let mut buf = Vec::with_capacity(128);
        for s in &streams {
            buf.extend_from_slice(&[0x80, 200, 0, 6]);
            buf.extend_from_slice(&s.ssrc.to_be_bytes());
            buf.extend_from_slice(&(ntp_secs as u32).to_be_bytes());
            buf.extend_from_slice(&(ntp_frac as u32).to_be_bytes());
            buf.extend_from_slice(&s.rtp_time(now).unwrap_or(0).to_be_bytes());
            buf.extend_from_slice(&s.packets.to_be_bytes());
            buf.extend_from_slice(&s.octets.to_be_bytes());
        }
        write_sdes(&mut buf, &streams);
        match self.srtp.seal_rtcp(&mut buf) {
            Ok(()) => Some(buf),
            Err(e) => {
                tracing::warn!(error = %e, "sealing a sender report failed");
                None
            }
        }
    }
}

fn write_header(buf: &mut Vec<u8>, pt: u8, marker: bool, seq: u16, time: u32, ssrc: u32) {
    buf.push(0x80);
    buf.push((pt & 0x7f) | (u8::from(marker) << 7));
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&time.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
}

/// SDES with each stream's CNAME (RFC 3550 §6.5): a compound packet carries one.
fn write_sdes(buf: &mut Vec<u8>, streams: &[&DirectStream]) {
    let start = buf.len();
    buf.extend_from_slice(&[0x80 | streams.len() as u8, 202, 0, 0]);
    for s in streams {
        buf.extend_from_slice(&s.ssrc.to_be_bytes());
        let cname = &s.cname.as_bytes()[..s.cname.len().min(255)];
        buf.push(1);
        buf.push(cname.len() as u8);
        buf.extend_from_slice(cname);
        // END, then padding to a 32-bit boundary (at least one zero byte).
        buf.push(0);
        while !(buf.len() - start).is_multiple_of(4) {
            buf.push(0);
        }
    }
    let words = ((buf.len() - start) / 4 - 1) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// The extended sequence number closest to `newest` with low 16 bits `seq16`; `None`
/// if that is before the stream's first.
fn extend_seq(newest: u64, seq16: u16) -> Option<u64> {
    let candidate = (newest & !0xffff) | u64::from(seq16);
    if candidate > newest + 0x8000 {
        candidate.checked_sub(0x1_0000)
    } else if candidate + 0x8000 < newest {
        Some(candidate + 0x1_0000)
    } else {
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nacked_sequence_number_extends_to_the_nearest_sent() {
        assert_eq!(extend_seq(0x1_0005, 0xfffe), Some(0xfffe));
        assert_eq!(extend_seq(0x1_fffe, 0x0002), Some(0x2_0002));
        assert_eq!(extend_seq(0x1_0100, 0x00f0), Some(0x1_00f0));
        // Before the first packet: no packet of the stream.
        assert_eq!(extend_seq(5, 0xfff0), None);
    }

    #[test]
    fn sdes_chunks_end_on_a_word_with_their_length_in_the_header() {
        let mut buf = Vec::new();
        let stream = |ssrc, cname: &str| DirectStream {
            mid: Mid::from("0"),
            ssrc,
            rtx: None,
            cname: cname.into(),
            clock_rate: 90_000,
            packets: 1,
            octets: 1,
            last: None,
            resend: VecDeque::new(),
        };
        let (a, b) = (stream(1, "abc"), stream(2, "abcd"));
        write_sdes(&mut buf, &[&a, &b]);
        // header 4 + (4 + 2 + 3 + 1 END + 2 pad) + (4 + 2 + 4 + 1 END + 1 pad)
        assert_eq!(buf.len(), 4 + 12 + 12);
        assert_eq!(buf[0], 0x82);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 6);
        assert_eq!(&buf[8..13], &[1, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn a_reports_rtp_time_runs_on_from_the_newest_packets_capture() {
        let now = Instant::now();
        let mut s = DirectStream {
            mid: Mid::from("0"),
            ssrc: 1,
            rtx: None,
            cname: String::new(),
            clock_rate: 90_000,
            packets: 1,
            octets: 1,
            last: Some((1_000, now)),
            resend: VecDeque::new(),
        };
        assert_eq!(
            s.rtp_time(now + std::time::Duration::from_millis(100)),
            Some(10_000)
        );
        s.last = Some((5, now + std::time::Duration::from_millis(1)));
        assert_eq!(s.rtp_time(now), Some(5u32.wrapping_sub(90)));
    }
}
