//! Annex B framing and emulation prevention (H.264 Annex B, §7.3.1, §7.4.1).
//!
//! The synthetic source writes NAL units and the receivers read them back without a
//! decoder, so these few rules are all the H.264 bitstream knowledge the crate needs.

/// NAL unit type of a non-IDR coded slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of an IDR coded slice: a keyframe.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// NAL unit type of filler data (bytes of 0xFF) used to pad frames to a bitrate.
pub const NAL_FILLER: u8 = 12;

/// The 4-byte start code the source writes in front of every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The `nal_unit_type` of a NAL unit (its first byte's low 5 bits), 0 for an empty slice.
///
/// ```
/// assert_eq!(skylark_loadgen::source::nal_type(&[0x65, 0x88]), 5);
/// ```
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Iterates over the NAL units of an Annex B byte stream.
///
/// Each item is one NAL unit without its start code and without trailing zero bytes
/// (which belong to the byte stream, not the NAL unit: a NAL unit never ends in 0x00
/// because of its RBSP trailing bits). Bytes before the first start code are ignored.
///
/// ```
/// use skylark_loadgen::source::nal_units;
/// let stream = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0];
/// let nals: Vec<&[u8]> = nal_units(&stream).collect();
/// assert_eq!(nals, vec![&[0x67, 0x42][..], &[0x68, 0xce][..]]);
/// ```
pub fn nal_units(annexb: &[u8]) -> NalUnits<'_> {
    NalUnits {
        data: annexb,
        next_start: find_start_code(annexb, 0),
    }
}

/// Iterator returned by [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    /// Position of the next `00 00 01`, if any.
    next_start: Option<usize>,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.next_start? + 3;
            self.next_start = find_start_code(self.data, start);
            let end = self.next_start.unwrap_or(self.data.len());
            let mut nal = &self.data[start..end];
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Position of the first `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 2 < data.len() {
        let b2 = data[i + 2];
        // A start code beginning at i, i+1 or i+2 needs data[i+2] to be 0 or 1, so a
        // larger byte lets the scan skip three positions: the common case in slice data.
        if b2 > 1 {
            i += 3;
        } else if b2 == 1 && data[i + 1] == 0 && data[i] == 0 {
            return Some(i);
        } else {
            i += 1;
        }
    }
    None
}

/// Adds emulation prevention bytes: turns an RBSP into NAL unit payload bytes.
///
/// Inside a NAL unit the sequences `00 00 00`, `00 00 01`, `00 00 02` and `00 00 03`
/// must not occur (they would read as start codes), so a `0x03` is inserted after
/// every two zero bytes that precede a byte ≤ 3, and after two final zero bytes
/// (§7.4.1: an RBSP ending in a `cabac_zero_word`).
///
/// ```
/// use skylark_loadgen::source::{escape_rbsp, unescape_rbsp};
/// let rbsp = [0xaa, 0, 0, 1, 0, 0, 0, 0xbb];
/// let escaped = escape_rbsp(&rbsp);
/// assert_eq!(escaped, [0xaa, 0, 0, 3, 1, 0, 0, 3, 0, 0xbb]);
/// assert_eq!(unescape_rbsp(&escaped), rbsp);
/// ```
pub fn escape_rbsp(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    if zeros >= 2 {
        out.push(3);
    }
    out
}

/// Removes emulation prevention bytes: turns NAL unit payload bytes back into an RBSP.
///
/// Every `0x03` that follows two zero bytes is dropped; see [`escape_rbsp`].
pub fn unescape_rbsp(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Splits an Annex B stream into access units (frames), each a list of its NAL units.
///
/// A new access unit begins at every coded slice (type 1 or 5) whose
/// `first_mb_in_slice` is 0: its ue(v) code is then the single bit `1`, the top bit of
/// the byte after the NAL header. SEI, SPS, PPS and AUD units belong to the access unit
/// that follows them; any other non-slice unit (filler, end of sequence) stays with the
/// access unit it follows. Units before the first slice join the first access unit.
///
/// ```
/// use skylark_loadgen::source::split_access_units;
/// let stream = [
///     0, 0, 0, 1, 0x67, 0x42, // SPS
///     0, 0, 0, 1, 0x65, 0x88, // IDR, first_mb_in_slice = 0
///     0, 0, 0, 1, 0x41, 0x9a, // P slice, first_mb_in_slice = 0: a new frame
///     0, 0, 0, 1, 0x41, 0x20, // P slice of the same frame (first_mb_in_slice ≠ 0)
/// ];
/// let aus = split_access_units(&stream);
/// assert_eq!(aus.len(), 2);
/// assert_eq!(aus[0].len(), 2);
/// assert_eq!(aus[1].len(), 2);
/// ```
pub fn split_access_units(annexb: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut aus = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut current_has_slice = false;
    let mut prefix: Vec<&[u8]> = Vec::new();
    for nal in nal_units(annexb) {
        match nal_type(nal) {
            NAL_SLICE | NAL_IDR => {
                let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
                if first_mb_zero && current_has_slice {
                    aus.push(std::mem::take(&mut current));
                }
                current.append(&mut prefix);
                current.push(nal);
                current_has_slice = true;
            }
            NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD => prefix.push(nal),
            _ if current_has_slice && prefix.is_empty() => current.push(nal),
            _ => prefix.push(nal),
        }
    }
    current.append(&mut prefix);
    if current_has_slice {
        aus.push(current);
    }
    aus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_every_forbidden_triplet() {
        for b in 0..=3u8 {
            let rbsp = [0x11, 0, 0, b, 0x22];
            let escaped = escape_rbsp(&rbsp);
            assert_eq!(escaped, [0x11, 0, 0, 3, b, 0x22], "byte {b}");
            assert_eq!(unescape_rbsp(&escaped), rbsp);
        }
        // 00 00 04 is allowed as is.
        assert_eq!(escape_rbsp(&[0, 0, 4]), [0, 0, 4]);
        // Trailing zeros get a 0x03 so the NAL unit does not end in 0x00.
        assert_eq!(escape_rbsp(&[7, 0, 0]), [7, 0, 0, 3]);
        assert_eq!(unescape_rbsp(&[7, 0, 0, 3]), [7, 0, 0]);
    }

    #[test]
    fn escaped_bytes_never_contain_a_start_code() {
        // Every run of zeros, with each following byte: exhaustive over short patterns.
        for zeros in 0..6usize {
            for next in 0..=5u8 {
                let mut rbsp = vec![0x80; 2];
                rbsp.extend(std::iter::repeat_n(0, zeros));
                rbsp.push(next);
                rbsp.extend(std::iter::repeat_n(0, zeros));
                let e = escape_rbsp(&rbsp);
                assert!(
                    !e.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                    "{rbsp:?} → {e:?}"
                );
                assert_eq!(unescape_rbsp(&e), rbsp);
            }
        }
    }

    #[test]
    fn nal_units_handles_3_and_4_byte_start_codes() {
        let s = [
            9, 9, 0, 0, 1, 0x41, 1, 0, 0, 0, 1, 0x41, 2, 0, 0, 0, 0, 1, 0x0c, 0xff, 0x80,
        ];
        let nals: Vec<&[u8]> = nal_units(&s).collect();
        assert_eq!(
            nals,
            vec![&[0x41, 1][..], &[0x41, 2][..], &[0x0c, 0xff, 0x80][..]]
        );
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
    }
}
