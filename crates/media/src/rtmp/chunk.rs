//! The RTMP chunk stream (RTMP 1.0 §5.3): splitting messages into chunks and
//! putting them back together.
//!
//! ```
//! use bytes::Bytes;
//! use skylark_media::rtmp::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, RawMessage};
//!
//! let message = RawMessage {
//!     csid: 6,
//!     timestamp: 40,
//!     type_id: 9,
//!     stream_id: 1,
//!     payload: Bytes::from(vec![0x17; 300]),
//! };
//! let mut wire = Vec::new();
//! ChunkEncoder::new().encode(&message, &mut wire); // 128-byte chunks: 3 of them
//! assert_eq!(wire.len(), 12 + 300 + 2);
//!
//! let mut decoder = ChunkDecoder::new(ChunkLimits::default());
//! decoder.push(&wire[..100]);
//! assert_eq!(decoder.next_message()?, None); // needs more
//! decoder.push(&wire[100..]);
//! assert_eq!(decoder.next_message()?, Some(message));
//! # Ok::<(), skylark_media::rtmp::RtmpError>(())
//! ```

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};

use super::RtmpError;

/// The chunk size both sides start with (RTMP 1.0 §5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size the protocol allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// The largest message length the 24-bit length field holds.
pub const MAX_MESSAGE_LEN: usize = 0x00ff_ffff;
/// The lowest and highest chunk stream ids.
pub const CSID_RANGE: std::ops::RangeInclusive<u32> = 2..=65_599;
/// A timestamp field of this value means a 32-bit extended timestamp follows.
const EXTENDED: u32 = 0x00ff_ffff;

/// A complete RTMP message as the chunk layer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The chunk stream it arrived on / is sent on (2–65599).
    pub csid: u32,
    /// The absolute 32-bit timestamp in milliseconds (wraps).
    pub timestamp: u32,
    /// The message type id (1–6 protocol control, 8 audio, 9 video, 20 command...).
    pub type_id: u8,
    /// The message stream id (0 for the connection itself).
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Bounds on what a [`ChunkDecoder`] buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message accepted; a header announcing more is an error.
    pub max_message_size: usize,
    /// Most chunk streams with state at once.
    pub max_chunk_streams: usize,
    /// Most bytes held in partly received messages, over all chunk streams.
    pub max_pending_bytes: usize,
}

impl Default for ChunkLimits {
    /// 8 MiB messages, 64 chunk streams, 16 MiB pending.
    fn default() -> Self {
        Self {
            max_message_size: 8 << 20,
            max_chunk_streams: 64,
            max_pending_bytes: 16 << 20,
        }
    }
}

/// Per chunk stream state: the last header, for the compressed formats.
#[derive(Debug, Default)]
struct StreamState {
    timestamp: u32,
    /// The last timestamp field: absolute after fmt 0, a delta after fmt 1/2.
    /// A fmt 3 chunk starting a message adds it again (§5.3.1.2.4).
    ts_field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Whether the last header used an extended timestamp, so that fmt 3
    /// chunks carry one too (as librtmp, FFmpeg and Flash do).
    extended: bool,
    /// The message being received, if any.
    partial: Option<BytesMut>,
}

/// Reassembles messages from the chunk stream of one connection.
///
/// Feed bytes with [`push`](Self::push), then call
/// [`next_message`](Self::next_message) until it returns `Ok(None)`. It reads
/// one chunk at a time, so a Set Chunk Size message applied with
/// [`set_chunk_size`](Self::set_chunk_size) before the next call takes effect
/// exactly where it should.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: ChunkLimits,
    chunk_size: u32,
    buf: BytesMut,
    streams: BTreeMap<u32, StreamState>,
    pending_bytes: usize,
}

/// A parsed chunk header (basic + message header + extended timestamp).
struct Header {
    fmt: u8,
    csid: u32,
    len: usize,
    timestamp: Option<u32>,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
    extended: bool,
}

impl ChunkDecoder {
    /// Changes the limits from the next header on (messages under way keep going).
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// A decoder with the default chunk size of 128.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            buf: BytesMut::new(),
            streams: BTreeMap::new(),
            pending_bytes: 0,
        }
    }

    /// The chunk size in use for incoming chunks.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies a Set Chunk Size from the peer: 1 to 2^31-1 (RTMP 1.0 §5.4.1).
    ///
    /// Sizes above the largest message length behave exactly like that
    /// length (no chunk can be longer than its message), so they are clamped
    /// to it.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.chunk_size = size.min(MAX_MESSAGE_LEN as u32);
        Ok(())
    }

    /// Drops the partly received message on `csid` (an Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.pending_bytes -= partial.len();
        }
    }

    /// Bytes buffered and not yet parsed (at most one chunk once
    /// [`next_message`](Self::next_message) has returned `Ok(None)`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Parses chunks until a message is complete or the data runs out.
    pub fn next_message(&mut self) -> Result<Option<RawMessage>, RtmpError> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            if let Some(message) = self.apply_chunk(header)? {
                return Ok(Some(message));
            }
        }
    }

    /// Parses the header of the next chunk if it and its payload are fully
    /// buffered; nothing is consumed or changed otherwise.
    fn parse_header(&mut self) -> Result<Option<Header>, RtmpError> {
        let b = &self.buf[..];
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match b.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + (u32::from(b2) << 8), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(mh) = b.get(pos..pos + header_len) else {
            return Ok(None);
        };
        pos += header_len;
        let u24 = |s: &[u8]| (u32::from(s[0]) << 16) | (u32::from(s[1]) << 8) | u32::from(s[2]);
        let state = self.streams.get(&csid);
        if fmt != 0 && state.is_none() {
            return Err(RtmpError::NoPreviousHeader { fmt, csid });
        }
        let mut h = Header {
            fmt,
            csid,
            len: 0,
            timestamp: None,
            length: None,
            type_id: None,
            stream_id: None,
            extended: false,
        };
        if fmt <= 2 {
            h.timestamp = Some(u24(&mh[0..3]));
        }
        if fmt <= 1 {
            h.length = Some(u24(&mh[3..6]));
            h.type_id = Some(mh[6]);
        }
        if fmt == 0 {
            h.stream_id = Some(u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]));
        }
        let needs_extended = match h.timestamp {
            Some(ts) => ts == EXTENDED,
            None => state.is_some_and(|s| s.extended),
        };
        if needs_extended {
            let Some(ext) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            h.timestamp = Some(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]));
            h.extended = true;
            pos += 4;
        }
        // The payload of this chunk.
        let in_progress = state.and_then(|s| s.partial.as_ref()).map(|p| p.len());
        if fmt != 3 && in_progress.is_some() {
            return Err(RtmpError::InterruptedMessage { fmt, csid });
        }
        let length = h.length.or(state.map(|s| s.length)).unwrap_or(0) as usize;
        if length > self.limits.max_message_size {
            return Err(RtmpError::MessageTooLarge {
                length,
                max: self.limits.max_message_size,
            });
        }
        let remaining = length - in_progress.unwrap_or(0);
        let chunk_payload = remaining.min(self.chunk_size as usize);
        if b.len() < pos + chunk_payload {
            return Ok(None);
        }
        h.len = pos;
        Ok(Some(h))
    }

    /// Consumes the chunk whose header was parsed; returns a message when
    /// this chunk completes one.
    fn apply_chunk(&mut self, h: Header) -> Result<Option<RawMessage>, RtmpError> {
        if !self.streams.contains_key(&h.csid) {
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(RtmpError::TooManyChunkStreams(
                    self.limits.max_chunk_streams,
                ));
            }
            self.streams.insert(h.csid, StreamState::default());
        }
        let chunk_size = self.chunk_size as usize;
        let max_pending = self.limits.max_pending_bytes;
        let state = self
            .streams
            .get_mut(&h.csid)
            .ok_or(RtmpError::NoPreviousHeader {
                fmt: h.fmt,
                csid: h.csid,
            })?;
        self.buf.advance(h.len);
        let continuing = state.partial.is_some();
        if !continuing {
            // A new message: update the header state.
            match h.fmt {
                0 => {
                    let ts = h.timestamp.unwrap_or(0);
                    state.timestamp = ts;
                    state.ts_field = ts;
                }
                1 | 2 => {
                    let delta = h.timestamp.unwrap_or(0);
                    state.timestamp = state.timestamp.wrapping_add(delta);
                    state.ts_field = delta;
                }
                _ => {
                    if let Some(ext) = h.timestamp {
                        state.ts_field = ext;
                    }
                    state.timestamp = state.timestamp.wrapping_add(state.ts_field);
                }
            }
            if let Some(length) = h.length {
                state.length = length;
            }
            if let Some(type_id) = h.type_id {
                state.type_id = type_id;
            }
            if let Some(stream_id) = h.stream_id {
                state.stream_id = stream_id;
            }
            if h.fmt <= 2 {
                state.extended = h.extended;
            }
        }
        let length = state.length as usize;
        let mut partial = state.partial.take().unwrap_or_else(|| {
            // Grows as chunks arrive: a header alone never reserves much.
            BytesMut::with_capacity(length.min(64 << 10))
        });
        let have = partial.len();
        let n = (length - have).min(chunk_size);
        if self.pending_bytes + n > max_pending {
            self.pending_bytes -= have;
            return Err(RtmpError::TooMuchPending(max_pending));
        }
        partial.extend_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        self.pending_bytes += n;
        if partial.len() < length {
            state.partial = Some(partial);
            return Ok(None);
        }
        self.pending_bytes -= partial.len();
        Ok(Some(RawMessage {
            csid: h.csid,
            timestamp: state.timestamp,
            type_id: state.type_id,
            stream_id: state.stream_id,
            payload: partial.freeze(),
        }))
    }
}

/// Splits messages into chunks: a type 0 header for each message's first
/// chunk and type 3 headers for the rest, with extended timestamps where
/// needed (repeated in the type 3 chunks, as librtmp and FFmpeg expect).
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder with the default chunk size of 128.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// The chunk size in use for outgoing chunks.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the outgoing chunk size. Send the Set Chunk Size message (with
    /// the old size) before calling this. Clamped to 1..=2^31-1.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Appends the chunks of `message` to `out`.
    ///
    /// The csid is clamped to 2–65599 and the payload is truncated to the
    /// 24-bit length field; messages built by this crate are always within
    /// both.
    pub fn encode(&self, message: &RawMessage, out: &mut Vec<u8>) {
        let csid = message.csid.clamp(*CSID_RANGE.start(), *CSID_RANGE.end());
        let payload = &message.payload[..message.payload.len().min(MAX_MESSAGE_LEN)];
        let extended = message.timestamp >= EXTENDED;
        let ts_field = if extended {
            EXTENDED
        } else {
            message.timestamp
        };
        let mut first = true;
        let mut chunks = payload.chunks(self.chunk_size as usize);
        loop {
            let chunk = chunks.next();
            if chunk.is_none() && !first {
                break;
            }
            let fmt = if first { 0 } else { 3 };
            basic_header(fmt, csid, out);
            if first {
                out.extend_from_slice(&ts_field.to_be_bytes()[1..]);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                out.push(message.type_id);
                out.extend_from_slice(&message.stream_id.to_le_bytes());
            }
            if extended {
                out.extend_from_slice(&message.timestamp.to_be_bytes());
            }
            out.extend_from_slice(chunk.unwrap_or_default());
            first = false;
        }
    }
}

/// Writes a basic header in its shortest form.
pub(crate) fn basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
    match csid {
        0..=63 => out.push((fmt << 6) | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
        _ => {
            let id = csid - 64;
            out.extend_from_slice(&[(fmt << 6) | 1, id as u8, (id >> 8) as u8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> RawMessage {
        RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: (0..len).map(|i| i as u8).collect::<Vec<_>>().into(),
        }
    }

    fn decode_all(decoder: &mut ChunkDecoder) -> Vec<RawMessage> {
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    /// Writes one chunk with an explicit header, for hand-built streams.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        out: &mut Vec<u8>,
        fmt: u8,
        csid: u32,
        ts: Option<u32>,
        len: Option<u32>,
        type_id: Option<u8>,
        stream_id: Option<u32>,
        ext: Option<u32>,
        payload: &[u8],
    ) {
        basic_header(fmt, csid, out);
        if let Some(ts) = ts {
            out.extend_from_slice(&ts.to_be_bytes()[1..]);
        }
        if let Some(len) = len {
            out.extend_from_slice(&len.to_be_bytes()[1..]);
        }
        if let Some(t) = type_id {
            out.push(t);
        }
        if let Some(s) = stream_id {
            out.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(e) = ext {
            out.extend_from_slice(&e.to_be_bytes());
        }
        out.extend_from_slice(payload);
    }

    #[test]
    fn basic_header_forms() {
        for (csid, expected) in [
            (2, vec![0x02]),
            (63, vec![0x3f]),
            (64, vec![0x00, 0x00]),
            (319, vec![0x00, 0xff]),
            (320, vec![0x01, 0x00, 0x01]),
            (65_599, vec![0x01, 0xff, 0xff]),
        ] {
            let mut out = Vec::new();
            basic_header(0, csid, &mut out);
            assert_eq!(out, expected, "csid {csid}");
            // And they decode back.
            let m = msg(csid, 0, 20, 0, 1);
            let mut wire = Vec::new();
            ChunkEncoder::new().encode(&m, &mut wire);
            let mut d = ChunkDecoder::new(ChunkLimits::default());
            d.push(&wire);
            assert_eq!(d.next_message().unwrap(), Some(m));
        }
    }

    #[test]
    fn all_four_formats() {
        // Spec example 1 (§5.3.2.1): audio on csid 3: fmt 0 at 1000, fmt 2
        // delta 20, then fmt 3 twice (delta 20 again).
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            3,
            Some(1000),
            Some(32),
            Some(8),
            Some(1),
            None,
            &[1; 32],
        );
        chunk(&mut wire, 2, 3, Some(20), None, None, None, None, &[2; 32]);
        chunk(&mut wire, 3, 3, None, None, None, None, None, &[3; 32]);
        chunk(&mut wire, 3, 3, None, None, None, None, None, &[4; 32]);
        // fmt 1: new length and type, delta 5.
        chunk(
            &mut wire,
            1,
            3,
            Some(5),
            Some(3),
            Some(9),
            None,
            None,
            &[5; 3],
        );
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        let got = decode_all(&mut d);
        let summary: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.timestamp,
                    m.type_id,
                    m.stream_id,
                    m.payload.len(),
                    m.payload[0],
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1000, 8, 1, 32, 1),
                (1020, 8, 1, 32, 2),
                (1040, 8, 1, 32, 3),
                (1060, 8, 1, 32, 4),
                (1065, 9, 1, 3, 5)
            ]
        );
    }

    #[test]
    fn fmt3_after_fmt0_repeats_the_timestamp_as_delta() {
        // RTMP 1.0 §5.3.1.2.4: type 3 right after type 0 when the delta
        // equals the first timestamp.
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            4,
            Some(40),
            Some(1),
            Some(8),
            Some(1),
            None,
            &[1],
        );
        chunk(&mut wire, 3, 4, None, None, None, None, None, &[2]);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        let ts: Vec<_> = decode_all(&mut d).iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [40, 80]);
    }

    #[test]
    fn multi_chunk_message_and_byte_by_byte_feeding() {
        let m = msg(6, 123, 9, 1, 1000);
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&m, &mut wire);
        // 1000 bytes in 128-byte chunks: 8 chunks, 7 one-byte type 3 headers.
        assert_eq!(wire.len(), 12 + 1000 + 7);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        let mut got = Vec::new();
        for b in &wire {
            d.push(&[*b]);
            got.extend(decode_all(&mut d));
            assert!(d.buffered() <= 12 + 128);
        }
        assert_eq!(got, [m]);
    }

    #[test]
    fn extended_timestamps_in_all_formats() {
        // fmt 0 with an extended timestamp over two chunks: the type 3
        // continuation repeats the extended field.
        let big = msg(4, 0x0100_0000, 9, 1, 200);
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&big, &mut wire);
        assert_eq!(wire.len(), 12 + 4 + 200 + 1 + 4);
        // Then fmt 1 with an extended delta, then fmt 3 starting a message
        // (delta repeated, extended field present).
        chunk(
            &mut wire,
            1,
            4,
            Some(EXTENDED),
            Some(2),
            Some(8),
            None,
            Some(0x0100_0000),
            &[7, 7],
        );
        chunk(
            &mut wire,
            3,
            4,
            None,
            None,
            None,
            None,
            Some(0x0100_0000),
            &[8, 8],
        );
        // Then fmt 2 with a small delta: no extended field, nor in the next fmt 3.
        chunk(&mut wire, 2, 4, Some(10), None, None, None, None, &[9, 9]);
        chunk(&mut wire, 3, 4, None, None, None, None, None, &[10, 10]);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        let got = decode_all(&mut d);
        let ts: Vec<_> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(
            ts,
            [
                0x0100_0000,
                0x0200_0000,
                0x0300_0000,
                0x0300_000a,
                0x0300_0014
            ]
        );
        assert_eq!(got[0], big);
        assert_eq!(got[4].payload[..], [10, 10]);
    }

    #[test]
    fn timestamps_wrap() {
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            4,
            Some(EXTENDED),
            Some(1),
            Some(8),
            Some(1),
            Some(u32::MAX - 5),
            &[1],
        );
        chunk(&mut wire, 2, 4, Some(10), None, None, None, None, &[2]);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        let ts: Vec<_> = decode_all(&mut d).iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [u32::MAX - 5, 4]);
    }

    #[test]
    fn interleaved_chunk_streams() {
        // Video on csid 6 and audio on csid 4 interleaved chunk by chunk.
        let video = msg(6, 0, 9, 1, 300);
        let audio = msg(4, 0, 8, 1, 200);
        let (mut v, mut a) = (Vec::new(), Vec::new());
        let enc = ChunkEncoder::new();
        enc.encode(&video, &mut v);
        enc.encode(&audio, &mut a);
        // Split each at their chunk boundaries: 12+128, 1+128, 1+44.
        let vparts = [&v[..140], &v[140..269], &v[269..]];
        let aparts = [&a[..140], &a[140..]];
        let mut wire = Vec::new();
        wire.extend_from_slice(vparts[0]);
        wire.extend_from_slice(aparts[0]);
        wire.extend_from_slice(vparts[1]);
        wire.extend_from_slice(aparts[1]);
        wire.extend_from_slice(vparts[2]);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        assert_eq!(decode_all(&mut d), [audio, video]);
    }

    #[test]
    fn chunk_size_change_mid_stream() {
        let first = msg(3, 0, 20, 0, 300);
        let second = msg(3, 0, 20, 0, 300);
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.encode(&first, &mut wire);
        enc.set_chunk_size(4096);
        let split = wire.len();
        enc.encode(&second, &mut wire);
        assert_eq!(wire.len() - split, 12 + 300);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        assert_eq!(d.next_message().unwrap(), Some(first));
        // Before the size changes, the rest looks like a short chunk.
        d.set_chunk_size(4096).unwrap();
        assert_eq!(d.next_message().unwrap(), Some(second));
        assert_eq!(d.chunk_size(), 4096);
    }

    #[test]
    fn chunk_size_bounds() {
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        assert_eq!(d.set_chunk_size(0), Err(RtmpError::InvalidChunkSize(0)));
        assert_eq!(
            d.set_chunk_size(0x8000_0000),
            Err(RtmpError::InvalidChunkSize(0x8000_0000))
        );
        d.set_chunk_size(MAX_CHUNK_SIZE).unwrap();
        assert_eq!(d.chunk_size(), MAX_MESSAGE_LEN as u32);
        d.set_chunk_size(1).unwrap();
        let m = msg(3, 7, 20, 0, 5);
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(1);
        let mut wire = Vec::new();
        enc.encode(&m, &mut wire);
        d.push(&wire);
        assert_eq!(d.next_message().unwrap(), Some(m));
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let m = msg(5, 0, 9, 1, 300);
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&m, &mut wire);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire[..140]); // the first chunk only
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.pending_bytes, 128);
        d.abort(5);
        assert_eq!(d.pending_bytes, 0);
        // A fresh message on the same csid with a fmt 1 header works.
        let mut more = Vec::new();
        chunk(
            &mut more,
            1,
            5,
            Some(0),
            Some(2),
            Some(8),
            None,
            None,
            &[1, 2],
        );
        d.push(&more);
        let got = d.next_message().unwrap().unwrap();
        assert_eq!((got.type_id, &got.payload[..]), (8, &[1u8, 2][..]));
    }

    #[test]
    fn zero_length_messages() {
        let m = msg(4, 10, 8, 1, 0);
        let mut wire = Vec::new();
        ChunkEncoder::new().encode(&m, &mut wire);
        assert_eq!(wire.len(), 12);
        chunk(&mut wire, 3, 4, None, None, None, None, None, &[]);
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        d.push(&wire);
        let got = decode_all(&mut d);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].timestamp, 20);
    }

    #[test]
    fn errors() {
        let limits = ChunkLimits {
            max_message_size: 1000,
            max_chunk_streams: 2,
            max_pending_bytes: 300,
        };
        // fmt 1 with no previous header on the csid.
        let mut d = ChunkDecoder::new(limits);
        d.push(&[0x43, 0, 0, 0, 0, 0, 1, 8]);
        assert_eq!(
            d.next_message(),
            Err(RtmpError::NoPreviousHeader { fmt: 1, csid: 3 })
        );
        // A message over the limit.
        let mut d = ChunkDecoder::new(limits);
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            3,
            Some(0),
            Some(1001),
            Some(9),
            Some(1),
            None,
            &[],
        );
        d.push(&wire);
        assert_eq!(
            d.next_message(),
            Err(RtmpError::MessageTooLarge {
                length: 1001,
                max: 1000
            })
        );
        // Too many chunk streams.
        let mut d = ChunkDecoder::new(limits);
        let mut wire = Vec::new();
        for csid in 3..6 {
            chunk(
                &mut wire,
                0,
                csid,
                Some(0),
                Some(1),
                Some(9),
                Some(1),
                None,
                &[0],
            );
        }
        d.push(&wire);
        assert!(d.next_message().unwrap().is_some());
        assert!(d.next_message().unwrap().is_some());
        assert_eq!(d.next_message(), Err(RtmpError::TooManyChunkStreams(2)));
        // Too many bytes pending over two chunk streams.
        let mut d = ChunkDecoder::new(limits);
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            3,
            Some(0),
            Some(900),
            Some(9),
            Some(1),
            None,
            &[0; 128],
        );
        chunk(
            &mut wire,
            0,
            4,
            Some(0),
            Some(900),
            Some(9),
            Some(1),
            None,
            &[0; 128],
        );
        chunk(&mut wire, 3, 3, None, None, None, None, None, &[0; 128]);
        d.push(&wire);
        assert_eq!(d.next_message(), Err(RtmpError::TooMuchPending(300)));
        // A new header in the middle of a message.
        let mut d = ChunkDecoder::new(ChunkLimits::default());
        let mut wire = Vec::new();
        chunk(
            &mut wire,
            0,
            3,
            Some(0),
            Some(200),
            Some(9),
            Some(1),
            None,
            &[0; 128],
        );
        chunk(&mut wire, 2, 3, Some(0), None, None, None, None, &[0; 72]);
        d.push(&wire);
        assert_eq!(
            d.next_message(),
            Err(RtmpError::InterruptedMessage { fmt: 2, csid: 3 })
        );
    }
}
