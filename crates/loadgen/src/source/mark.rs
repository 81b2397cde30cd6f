//! The per-frame marker: an SEI `user_data_unregistered` message that lets a receiver
//! check a frame's integrity and measure its latency without decoding it.
//!
//! Layout of the SEI payload (payload type 5, 41 bytes, big endian):
//! `uuid[16] | seq u64 | sent_at_us u64 | hash u64 | layer u8`.

use serde::Serialize;

use skylark_media::h264::{
    add_emulation_prevention, annexb_nalus, is_idr, is_sample_nal, nal_type,
    remove_emulation_prevention, NAL_SEI,
};

/// Identifies Skylark's marker among other `user_data_unregistered` SEI messages.
pub const MARK_UUID: [u8; 16] = [
    0x5b, 0x1a, 0x7c, 0x3e, 0x9d, 0x2f, 0x4e, 0x61, 0x8a, 0x0b, 0x6c, 0x4d, 0x2e, 0x9f, 0x1a, 0x37,
];

/// SEI payload type `user_data_unregistered`.
const SEI_USER_DATA_UNREGISTERED: u8 = 5;
/// Bytes of the SEI payload: UUID + three u64 + the layer byte.
pub(crate) const MARK_PAYLOAD_LEN: usize = 16 + 3 * 8 + 1;

/// What a receiver learns from one frame's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameMark {
    /// Frame sequence number, counted by the publisher from 0.
    pub seq: u64,
    /// When the publisher handed the frame to its RTP stack, µs since the UNIX epoch.
    pub sent_at_us: u64,
    /// Whether the hash in the marker matches the frame's other NAL units.
    pub hash_ok: bool,
    /// Whether the frame holds an IDR slice.
    pub keyframe: bool,
    /// Which layer of the publisher's video the frame belongs to: the index in
    /// [`SIMULCAST_LAYERS`](super::SIMULCAST_LAYERS), 0 (full size) for a
    /// single-layer stream. Lets a viewer prove it never got frames of two layers mixed.
    pub layer: u8,
}

/// FNV-1a, 64 bit: tiny, no dependency, and any flipped byte changes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) const fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Hashes one NAL unit, length first, so moving a boundary changes the hash too.
    pub(crate) fn write_nal(&mut self, nal: &[u8]) {
        self.write(&(nal.len() as u32).to_be_bytes());
        self.write(nal);
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// Whether a NAL unit is covered by the frame hash.
///
/// Parameter sets and delimiters are left out: servers legitimately repeat, cache,
/// reorder or drop them (str0m packs SPS+PPS into one STAP-A, an SFU may re-insert them
/// before a keyframe), which is not corruption of the picture. That is the same set an
/// MP4 sample leaves out.
pub(crate) fn is_hashed(nal: &[u8]) -> bool {
    is_sample_nal(nal)
}

/// Builds the marker NAL unit (header byte included, escaped, no start code).
///
/// ```
/// use skylark_loadgen::source::{inspect_frame, mark_nal};
/// let mut frame = vec![0, 0, 0, 1];
/// frame.extend(mark_nal(7, 1_700_000_000_000_000, 0, 2));
/// let mark = inspect_frame(&frame).unwrap();
/// assert_eq!((mark.seq, mark.sent_at_us, mark.keyframe), (7, 1_700_000_000_000_000, false));
/// assert_eq!(mark.layer, 2);
/// ```
pub fn mark_nal(seq: u64, sent_at_us: u64, hash: u64, layer: u8) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(2 + MARK_PAYLOAD_LEN + 1);
    rbsp.push(SEI_USER_DATA_UNREGISTERED);
    rbsp.push(MARK_PAYLOAD_LEN as u8);
    rbsp.extend_from_slice(&MARK_UUID);
    rbsp.extend_from_slice(&seq.to_be_bytes());
    rbsp.extend_from_slice(&sent_at_us.to_be_bytes());
    rbsp.extend_from_slice(&hash.to_be_bytes());
    rbsp.push(layer);
    // rbsp_trailing_bits: a stop bit and alignment.
    rbsp.push(0x80);
    let mut nal = Vec::with_capacity(rbsp.len() + 8);
    // nal_ref_idc 0 (disposable), type 6.
    nal.push(NAL_SEI);
    nal.extend(add_emulation_prevention(&rbsp));
    nal
}

/// Reads `(seq, sent_at_us, hash, layer)` from a marker NAL unit, if it is one.
fn parse_mark(nal: &[u8]) -> Option<(u64, u64, u64, u8)> {
    if nal_type(nal) != Some(NAL_SEI) {
        return None;
    }
    let rbsp = remove_emulation_prevention(nal.get(1..)?);
    let mut i = 0;
    let read_varlen = |i: &mut usize| -> Option<usize> {
        // payloadType and payloadSize: a run of 0xFF bytes plus a final byte (§7.3.5).
        let mut v = 0usize;
        loop {
            let b = *rbsp.get(*i)?;
            *i += 1;
            v = v.checked_add(usize::from(b))?;
            if b != 0xff {
                return Some(v);
            }
        }
    };
    let payload_type = read_varlen(&mut i)?;
    let size = read_varlen(&mut i)?;
    if payload_type != usize::from(SEI_USER_DATA_UNREGISTERED) || size < MARK_PAYLOAD_LEN {
        return None;
    }
    let payload = rbsp.get(i..i + MARK_PAYLOAD_LEN)?;
    if payload[..16] != MARK_UUID {
        return None;
    }
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    Some((word(16)?, word(24)?, word(32)?, *payload.get(40)?))
}

/// Finds the marker in a received access unit (Annex B) and verifies it.
///
/// Returns `None` when the frame carries no Skylark marker (e.g. it came from a
/// browser publisher). The hash covers every other NAL unit of the frame except
/// parameter sets and delimiters, in order.
///
/// ```
/// use skylark_loadgen::source::{inspect_frame, VideoConfig, VideoSource};
/// let mut source = VideoSource::new(VideoConfig::default());
/// let frame = source.next_frame(1_000);
/// let mark = inspect_frame(&frame.data).unwrap();
/// assert!(mark.hash_ok && mark.keyframe);
/// assert_eq!((mark.seq, mark.sent_at_us), (0, 1_000));
/// ```
pub fn inspect_frame(annexb: &[u8]) -> Option<FrameMark> {
    let mut mark = None;
    let mut hash = Fnv64::new();
    let mut keyframe = false;
    for nal in annexb_nalus(annexb) {
        if mark.is_none() {
            if let Some(m) = parse_mark(nal) {
                mark = Some(m);
                continue;
            }
        }
        keyframe |= is_idr(nal);
        if is_hashed(nal) {
            hash.write_nal(nal);
        }
    }
    let (seq, sent_at_us, expected, layer) = mark?;
    Some(FrameMark {
        seq,
        sent_at_us,
        hash_ok: hash.finish() == expected,
        keyframe,
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trips_values_that_need_escaping() {
        // Zero-heavy values force emulation prevention bytes into the SEI.
        for (seq, at, h, layer) in [
            (0, 0, 0, 0),
            (1, 2, 3, 1),
            (
                0x0000_0001_0000_0000,
                0x0000_0000_0000_0300,
                0x0000_0000_0000_0002,
                2,
            ),
            (u64::MAX, u64::MAX - 1, 0x00ff_00ff_0000_0000, 255),
        ] {
            let nal = mark_nal(seq, at, h, layer);
            assert!(
                !nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                "unescaped start code in {nal:02x?}"
            );
            assert_eq!(parse_mark(&nal), Some((seq, at, h, layer)));
        }
        // The zero-heavy mark really did need escaping.
        let nal = mark_nal(0, 0, 0, 0);
        assert!(nal.len() > 1 + 2 + MARK_PAYLOAD_LEN + 1);
    }

    #[test]
    fn foreign_sei_is_not_a_mark() {
        let mut other = mark_nal(1, 2, 3, 0);
        other[5] ^= 0x40; // inside the UUID
        assert_eq!(parse_mark(&other), None);
        assert_eq!(parse_mark(&[0x06, 0x05]), None);
        assert_eq!(parse_mark(&[0x06]), None);
        assert_eq!(parse_mark(&[0x65, 0x88]), None);
    }
}
