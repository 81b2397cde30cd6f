//! Cutting the embedded clips into access units (frames). NAL unit framing and
//! emulation prevention are `skylark_media::h264`'s; this adds only what a source
//! that replays a raw Annex B file needs.

use skylark_media::h264::{
    annexb_nalus, nal_type, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS,
};

/// The 4-byte start code the source writes in front of every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

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
    for nal in annexb_nalus(annexb) {
        match nal_type(nal) {
            Some(NAL_SLICE | NAL_IDR) => {
                let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
                if first_mb_zero && current_has_slice {
                    aus.push(std::mem::take(&mut current));
                }
                current.append(&mut prefix);
                current.push(nal);
                current_has_slice = true;
            }
            Some(NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD) => prefix.push(nal),
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
