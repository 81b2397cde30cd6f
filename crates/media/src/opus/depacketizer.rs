//! RFC 7587 depacketizer: one Opus packet per RTP payload, 48 kHz timestamps.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{parse_packet, OpusError};
use crate::rtp::{Arrival, Ordered, ReorderBuffer, TsUnwrapper};

/// Packets kept for [`OpusDepacketizer::pop`] before the oldest is dropped.
const MAX_QUEUED: usize = 256;

/// One Opus packet with its timing, ready for a muxer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// RTP timestamp extended to 64 bits; always a 48 kHz clock (RFC 7587 §4.1).
    pub timestamp: u64,
    /// Duration in samples at 48 kHz, from the TOC.
    pub duration: u32,
    /// The Opus packet, TOC byte first.
    pub data: Bytes,
    /// Packets are missing right before this one (lost, given up on, or
    /// malformed), so a decoder should conceal the gap.
    pub discontinuity: bool,
}

/// Counters of an [`OpusDepacketizer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpusStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets missing from the sequence.
    pub lost_packets: u64,
    /// Packets that came after their turn or twice.
    pub late_packets: u64,
    /// Packets whose Opus framing is invalid.
    pub malformed_packets: u64,
}

/// Sans-IO Opus RTP depacketizer.
///
/// ```
/// use bytes::Bytes;
/// use skylark_media::opus::OpusDepacketizer;
///
/// let mut d = OpusDepacketizer::new();
/// d.push(Bytes::from_static(&[0xfc, 0xff, 0xfe]), 7, 960)?;
/// let packet = d.pop().unwrap();
/// assert_eq!((packet.timestamp, packet.duration), (960, 960));
/// # Ok::<(), skylark_media::opus::OpusError>(())
/// ```
#[derive(Debug)]
pub struct OpusDepacketizer {
    reorder: ReorderBuffer<(Bytes, u32)>,
    timestamps: TsUnwrapper,
    gap: bool,
    out: VecDeque<OpusPacket>,
    stats: OpusStats,
}

impl Default for OpusDepacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl OpusDepacketizer {
    /// A depacketizer that waits for up to 4 out-of-order packets (80 ms of
    /// 20 ms packets) before declaring a gap lost.
    pub fn new() -> Self {
        Self::with_reorder_window(4)
    }

    /// A depacketizer with the given reorder window, in packets (0: no waiting).
    pub fn with_reorder_window(window: usize) -> Self {
        Self {
            reorder: ReorderBuffer::new(window),
            timestamps: TsUnwrapper::new(),
            gap: false,
            out: VecDeque::new(),
            stats: OpusStats::default(),
        }
    }

    /// Takes the payload of one RTP packet. Empty payloads are ignored.
    ///
    /// Returns the first framing error among the packets this push released;
    /// those packets are dropped and the next one is marked as a
    /// discontinuity. Call [`OpusDepacketizer::pop`] until `None` after each push.
    pub fn push(
        &mut self,
        payload: Bytes,
        sequence_number: u16,
        timestamp: u32,
    ) -> Result<(), OpusError> {
        self.stats.packets += 1;
        match self.reorder.push(sequence_number, (payload, timestamp)) {
            Arrival::Late | Arrival::Duplicate => {
                self.stats.late_packets += 1;
                Ok(())
            }
            Arrival::InOrder | Arrival::Buffered => self.drain_reorder(),
        }
    }

    /// Gives up on any sequence gap now and releases the held packets.
    pub fn flush(&mut self) -> Result<(), OpusError> {
        self.reorder.flush();
        self.drain_reorder()
    }

    /// The next packet in sequence order.
    pub fn pop(&mut self) -> Option<OpusPacket> {
        self.out.pop_front()
    }

    /// Counters since creation.
    pub fn stats(&self) -> OpusStats {
        self.stats
    }

    fn drain_reorder(&mut self) -> Result<(), OpusError> {
        let mut result = Ok(());
        while let Some(item) = self.reorder.pop() {
            match item {
                Ordered::Packet {
                    item: (payload, timestamp),
                    ..
                } => {
                    if payload.is_empty() {
                        continue;
                    }
                    let timestamp = self.timestamps.unwrap(timestamp);
                    match parse_packet(&payload) {
                        Ok(info) => {
                            if self.out.len() >= MAX_QUEUED {
                                self.out.pop_front();
                                self.gap = true;
                            }
                            self.out.push_back(OpusPacket {
                                timestamp,
                                duration: info.samples,
                                data: payload,
                                discontinuity: std::mem::take(&mut self.gap),
                            });
                        }
                        Err(e) => {
                            self.stats.malformed_packets += 1;
                            self.gap = true;
                            if result.is_ok() {
                                result = Err(e);
                            }
                        }
                    }
                }
                Ordered::Lost { count, .. } => {
                    self.stats.lost_packets += count;
                    self.gap = true;
                }
                Ordered::Reset => self.gap = true,
            }
        }
        result
    }
}
