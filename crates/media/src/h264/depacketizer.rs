//! RFC 6184 depacketizer (packetization-mode 1): single NAL unit packets,
//! STAP-A and FU-A, with loss handling.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{
    is_keyframe, nal_type, NAL_AUD, NAL_FU_A, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS,
    NAL_STAP_A,
};
use crate::rtp::{Arrival, Ordered, ReorderBuffer, TsUnwrapper};

/// One picture: the NAL units sharing an RTP timestamp, in decoding order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// RTP timestamp extended to 64 bits (90 kHz).
    pub timestamp: u64,
    /// NAL units without start codes or length prefixes.
    pub nalus: Vec<Bytes>,
    /// Whether it holds an IDR slice, so decoding can start here.
    pub keyframe: bool,
}

/// Why a packet could not be depacketized.
///
/// The depacketizer has already recovered when it returns one of these: the
/// access unit the packet belonged to is dropped and it waits for a keyframe
/// (see [`H264Depacketizer::take_keyframe_request`]). The error is for logs
/// and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepacketizeError {
    /// A STAP-A unit length runs past the packet, or is zero.
    #[error("malformed STAP-A: {0}")]
    MalformedStapA(&'static str),
    /// An FU-A packet shorter than its two header bytes.
    #[error("FU-A packet of {0} bytes is too short")]
    ShortFuA(usize),
    /// A middle or end fragment without the start fragment.
    #[error("FU-A fragment without a start fragment")]
    FuAWithoutStart,
    /// A new NAL unit began before the fragmented one ended.
    #[error("FU-A fragmented NAL unit interrupted before its end fragment")]
    FuAInterrupted,
    /// NAL unit types 0 and 25–31 are not allowed in packetization-mode 1; the
    /// packet is ignored.
    #[error("RTP payload with NAL unit type {0} is not supported in packetization-mode 1")]
    UnsupportedPacketType(u8),
    /// An access unit grew past [`DepacketizerConfig::max_access_unit_size`] or
    /// [`DepacketizerConfig::max_nalus_per_access_unit`].
    #[error("access unit exceeds the configured limit of {limit} {what}")]
    AccessUnitTooLarge {
        /// `"bytes"` or `"NAL units"`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// Limits and buffering of an [`H264Depacketizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepacketizerConfig {
    /// Packets held behind a sequence gap before the gap counts as loss (see
    /// [`ReorderBuffer`]). 0 treats every gap as loss at once.
    pub reorder_window: usize,
    /// Largest access unit accepted, in bytes; bounds memory on hostile input.
    pub max_access_unit_size: usize,
    /// Most NAL units accepted in one access unit.
    pub max_nalus_per_access_unit: usize,
    /// Completed access units kept for [`H264Depacketizer::pop`]; past this the
    /// queue is cleared and a keyframe is awaited.
    pub max_queued_access_units: usize,
}

impl Default for DepacketizerConfig {
    fn default() -> Self {
        Self {
            // ~100 ms at a few Mbit/s: enough for network reordering, short
            // enough that a real loss is acted on (PLI) quickly.
            reorder_window: 16,
            // Far above any level 5.2 frame (MaxCPB 240 Mbit is per second).
            max_access_unit_size: 8 << 20,
            max_nalus_per_access_unit: 1024,
            max_queued_access_units: 64,
        }
    }
}

/// Counters of an [`H264Depacketizer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets missing from the sequence (given up on).
    pub lost_packets: u64,
    /// Packets that arrived after their turn or twice, and were dropped.
    pub late_packets: u64,
    /// Packets that could not be parsed.
    pub malformed_packets: u64,
    /// Access units delivered to [`H264Depacketizer::pop`].
    pub access_units: u64,
    /// Access units dropped: damaged, or waiting for a keyframe.
    pub dropped_access_units: u64,
}

#[derive(Debug, Clone)]
struct Packet {
    payload: Bytes,
    timestamp: u32,
    marker: bool,
}

#[derive(Debug)]
struct PartialAu {
    rtp_timestamp: u32,
    timestamp: u64,
    nalus: Vec<Bytes>,
    size: usize,
}

/// Sans-IO H.264 RTP depacketizer.
///
/// Push RTP payloads in any order with [`H264Depacketizer::push`]; pop complete
/// access units with [`H264Depacketizer::pop`]. An access unit is complete when
/// the marker bit is set or the next packet has a new timestamp.
///
/// Loss handling: when a sequence gap is given up on (after the reorder window),
/// or a packet is malformed, the damaged access unit is discarded and everything
/// is dropped until an access unit holding an IDR slice, once an SPS and a PPS
/// have been seen. The depacketizer starts in that state too, since a decoder
/// cannot start without a keyframe and parameter sets. After a loss the first
/// access unit is only taken if its first packet visibly starts a picture (a
/// parameter set, AUD or SEI, or a slice with `first_mb_in_slice` 0), so
/// the loss of its leading parameter sets (or AUD/SEI) goes unnoticed: the
/// decoder uses the ones it already has.
/// [`H264Depacketizer::take_keyframe_request`] then returns `true` once, so the
/// caller can send a PLI; while [`H264Depacketizer::waiting_for_keyframe`] is
/// true it may repeat the request at its own pace.
#[derive(Debug)]
pub struct H264Depacketizer {
    config: DepacketizerConfig,
    reorder: ReorderBuffer<Packet>,
    timestamps: TsUnwrapper,
    au: Option<PartialAu>,
    /// A fragmented NAL unit being reassembled, header byte first.
    fu: Option<BytesMut>,
    /// Packets with this RTP timestamp belong to a damaged access unit.
    discard_timestamp: Option<u32>,
    /// After a loss the next access unit may have lost its start: only begin
    /// one at a packet that visibly starts a picture.
    resync: bool,
    waiting_for_keyframe: bool,
    keyframe_request: bool,
    /// Whether an SPS and a PPS have come in an intact access unit. A keyframe
    /// without them cannot start decoding (their packet may have been lost).
    seen_sps: bool,
    seen_pps: bool,
    out: VecDeque<AccessUnit>,
    stats: DepacketizerStats,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    /// A depacketizer with the default [`DepacketizerConfig`].
    pub fn new() -> Self {
        Self::with_config(DepacketizerConfig::default())
    }

    /// A depacketizer with the given limits.
    pub fn with_config(config: DepacketizerConfig) -> Self {
        Self {
            reorder: ReorderBuffer::new(config.reorder_window),
            config,
            timestamps: TsUnwrapper::new(),
            au: None,
            fu: None,
            discard_timestamp: None,
            resync: true,
            waiting_for_keyframe: true,
            keyframe_request: true,
            seen_sps: false,
            seen_pps: false,
            out: VecDeque::new(),
            stats: DepacketizerStats::default(),
        }
    }

    /// Takes the payload of one RTP packet (after the RTP header and padding).
    ///
    /// Returns the first error met while processing the packets this push
    /// released; the state has recovered either way. Call
    /// [`H264Depacketizer::pop`] until it returns `None` after each push.
    pub fn push(
        &mut self,
        payload: Bytes,
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
    ) -> Result<(), DepacketizeError> {
        self.stats.packets += 1;
        let packet = Packet {
            payload,
            timestamp,
            marker,
        };
        match self.reorder.push(sequence_number, packet) {
            Arrival::Late | Arrival::Duplicate => {
                self.stats.late_packets += 1;
                Ok(())
            }
            Arrival::InOrder | Arrival::Buffered => self.drain_reorder(),
        }
    }

    /// Gives up on any sequence gap now (e.g. from the caller's timer, when the
    /// missing packets have not come in time), processing the held packets.
    pub fn flush(&mut self) -> Result<(), DepacketizeError> {
        self.reorder.flush();
        self.drain_reorder()
    }

    /// The next complete access unit, oldest first.
    pub fn pop(&mut self) -> Option<AccessUnit> {
        self.out.pop_front()
    }

    /// Whether access units are being dropped until the next keyframe.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// `true` once after the depacketizer starts waiting for a keyframe: the
    /// moment to send a PLI (or FIR) upstream.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_request)
    }

    /// Counters since creation.
    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    fn drain_reorder(&mut self) -> Result<(), DepacketizeError> {
        let mut result = Ok(());
        while let Some(item) = self.reorder.pop() {
            match item {
                Ordered::Packet { item, .. } => {
                    if let Err(e) = self.process(item) {
                        self.stats.malformed_packets += 1;
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
                Ordered::Lost { count, .. } => {
                    self.stats.lost_packets += count;
                    self.on_loss();
                }
                Ordered::Reset => self.on_loss(),
            }
        }
        result
    }

    fn process(&mut self, packet: Packet) -> Result<(), DepacketizeError> {
        // Padding-only packets (bandwidth probes) carry no media.
        if packet.payload.is_empty() {
            return Ok(());
        }
        let timestamp = self.timestamps.unwrap(packet.timestamp);
        match self.discard_timestamp {
            Some(ts) if ts == packet.timestamp => return Ok(()),
            Some(_) => self.discard_timestamp = None,
            None => {}
        }
        if self
            .au
            .as_ref()
            .is_some_and(|au| au.rtp_timestamp != packet.timestamp)
        {
            self.finish_access_unit();
        }
        if self.au.is_none() {
            if self.resync && !starts_picture(&packet.payload) {
                self.discard_timestamp = Some(packet.timestamp);
                return Ok(());
            }
            self.resync = false;
            self.au = Some(PartialAu {
                rtp_timestamp: packet.timestamp,
                timestamp,
                nalus: Vec::new(),
                size: 0,
            });
        }
        if let Err(e) = self.add_payload(&packet.payload) {
            if !matches!(e, DepacketizeError::UnsupportedPacketType(_)) {
                self.damage_current(packet.timestamp);
            }
            return Err(e);
        }
        if packet.marker {
            self.finish_access_unit();
        }
        Ok(())
    }

    fn add_payload(&mut self, payload: &Bytes) -> Result<(), DepacketizeError> {
        let Some(&first) = payload.first() else {
            return Ok(());
        };
        match first & 0x1f {
            1..=23 => {
                self.check_no_fragment()?;
                self.add_nal(payload.clone())
            }
            NAL_STAP_A => {
                self.check_no_fragment()?;
                let mut rest = payload.slice(1..);
                if rest.is_empty() {
                    return Err(DepacketizeError::MalformedStapA("no aggregation units"));
                }
                while !rest.is_empty() {
                    let [hi, lo, ..] = rest[..] else {
                        return Err(DepacketizeError::MalformedStapA("truncated unit size"));
                    };
                    let len = usize::from(u16::from_be_bytes([hi, lo]));
                    if len == 0 {
                        return Err(DepacketizeError::MalformedStapA("zero unit size"));
                    }
                    if rest.len() < 2 + len {
                        return Err(DepacketizeError::MalformedStapA(
                            "unit runs past the packet",
                        ));
                    }
                    self.add_nal(rest.slice(2..2 + len))?;
                    rest = rest.slice(2 + len..);
                }
                Ok(())
            }
            NAL_FU_A => {
                let [indicator, header, ref data @ ..] = payload[..] else {
                    return Err(DepacketizeError::ShortFuA(payload.len()));
                };
                let start = header & 0x80 != 0;
                let end = header & 0x40 != 0;
                if start {
                    self.check_no_fragment()?;
                    self.reserve(1 + data.len())?;
                    let mut nal = BytesMut::with_capacity(1 + data.len());
                    nal.extend_from_slice(&[(indicator & 0xe0) | (header & 0x1f)]);
                    nal.extend_from_slice(data);
                    self.fu = Some(nal);
                } else {
                    self.reserve(data.len())?;
                    let nal = self.fu.as_mut().ok_or(DepacketizeError::FuAWithoutStart)?;
                    nal.extend_from_slice(data);
                }
                if end {
                    if let Some(nal) = self.fu.take() {
                        // The bytes were counted by `reserve` already.
                        if let Some(au) = self.au.as_mut() {
                            au.nalus.push(nal.freeze());
                        }
                    }
                }
                Ok(())
            }
            other => Err(DepacketizeError::UnsupportedPacketType(other)),
        }
    }

    fn check_no_fragment(&self) -> Result<(), DepacketizeError> {
        if self.fu.is_some() {
            return Err(DepacketizeError::FuAInterrupted);
        }
        Ok(())
    }

    /// Accounts for `bytes` more in the current access unit, enforcing limits.
    fn reserve(&mut self, bytes: usize) -> Result<(), DepacketizeError> {
        let Some(au) = self.au.as_mut() else {
            return Ok(());
        };
        au.size += bytes;
        if au.size > self.config.max_access_unit_size {
            return Err(DepacketizeError::AccessUnitTooLarge {
                what: "bytes",
                limit: self.config.max_access_unit_size,
            });
        }
        Ok(())
    }

    fn add_nal(&mut self, nal: Bytes) -> Result<(), DepacketizeError> {
        self.reserve(nal.len())?;
        let limit = self.config.max_nalus_per_access_unit;
        let Some(au) = self.au.as_mut() else {
            return Ok(());
        };
        if au.nalus.len() >= limit {
            return Err(DepacketizeError::AccessUnitTooLarge {
                what: "NAL units",
                limit,
            });
        }
        au.nalus.push(nal);
        Ok(())
    }

    fn finish_access_unit(&mut self) {
        let Some(au) = self.au.take() else {
            return;
        };
        if self.fu.take().is_some() {
            // The picture ended inside a fragmented NAL unit: it is damaged.
            self.stats.dropped_access_units += 1;
            self.start_waiting_for_keyframe();
            return;
        }
        if au.nalus.is_empty() {
            return;
        }
        if self.out.len() >= self.config.max_queued_access_units {
            // Nobody is popping. Every queued picture may reference the oldest,
            // so drop them all and start again at a keyframe.
            let cleared = self.out.len() as u64;
            self.stats.access_units = self.stats.access_units.saturating_sub(cleared);
            self.stats.dropped_access_units += cleared;
            self.out.clear();
            self.start_waiting_for_keyframe();
        }
        for nal in &au.nalus {
            match nal_type(nal) {
                Some(NAL_SPS) => self.seen_sps = true,
                Some(NAL_PPS) => self.seen_pps = true,
                _ => {}
            }
        }
        let keyframe = is_keyframe(&au.nalus);
        if self.waiting_for_keyframe {
            if !(keyframe && self.seen_sps && self.seen_pps) {
                self.stats.dropped_access_units += 1;
                return;
            }
            self.waiting_for_keyframe = false;
        }
        self.stats.access_units += 1;
        self.out.push_back(AccessUnit {
            timestamp: au.timestamp,
            nalus: au.nalus,
            keyframe,
        });
    }

    /// Drops the access unit with `rtp_timestamp` (including packets of it still
    /// to come) after a malformed packet.
    fn damage_current(&mut self, rtp_timestamp: u32) {
        if self.au.take().is_some() {
            self.stats.dropped_access_units += 1;
        }
        self.fu = None;
        self.discard_timestamp = Some(rtp_timestamp);
        self.start_waiting_for_keyframe();
    }

    fn on_loss(&mut self) {
        if let Some(au) = self.au.take() {
            self.stats.dropped_access_units += 1;
            self.discard_timestamp = Some(au.rtp_timestamp);
        }
        self.fu = None;
        self.resync = true;
        self.start_waiting_for_keyframe();
    }

    fn start_waiting_for_keyframe(&mut self) {
        if !self.waiting_for_keyframe {
            self.waiting_for_keyframe = true;
            self.keyframe_request = true;
        }
    }
}

/// Whether an RTP payload visibly begins a picture: it starts with a NAL unit
/// that may only precede the first slice (AUD, SEI, SPS, PPS), or with a slice
/// whose `first_mb_in_slice` is 0. After a loss, a packet that does not could
/// be the middle of a picture whose start was lost.
fn starts_picture(payload: &[u8]) -> bool {
    let first_nal: &[u8] = match payload.first().map(|b| b & 0x1f) {
        Some(NAL_STAP_A) => payload.get(3..).unwrap_or_default(),
        Some(NAL_FU_A) => {
            let [indicator, header, ref rest @ ..] = payload[..] else {
                return false;
            };
            return header & 0x80 != 0
                && starts_picture_nal((indicator & 0xe0) | (header & 0x1f), rest.first());
        }
        _ => payload,
    };
    match first_nal.split_first() {
        Some((&header, rest)) => starts_picture_nal(header, rest.first()),
        None => false,
    }
}

fn starts_picture_nal(header: u8, first_payload_byte: Option<&u8>) -> bool {
    match header & 0x1f {
        NAL_SEI..=NAL_AUD => true,
        // first_mb_in_slice is ue(v): a leading 1 bit encodes 0. (Partitions
        // B and C, types 3 and 4, start with slice_id instead.)
        NAL_SLICE | 2 | NAL_IDR => first_payload_byte.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}
