//! Byte-stream formats for NAL units: Annex-B (start codes), AVCC (length
//! prefixes, as in MP4, FLV and RTMP), and emulation prevention (H.264 §7.4.1).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::H264Error;

/// Iterates over the NAL units of an Annex-B byte stream.
///
/// Accepts 3- and 4-byte start codes and leading garbage before the first start
/// code (skipped). Trailing zero bytes of a NAL unit belong to the next start
/// code or are `trailing_zero_8bits`, so they are trimmed. Empty NAL units are
/// skipped.
///
/// ```
/// use skylark_media::h264::annexb_nalus;
///
/// let stream = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88];
/// let nalus: Vec<&[u8]> = annexb_nalus(&stream).collect();
/// assert_eq!(nalus, [&[0x67, 0x42][..], &[0x68, 0xce], &[0x65, 0x88]]);
/// ```
pub fn annexb_nalus(data: &[u8]) -> AnnexBNalus<'_> {
    let rest = match find_start_code(data) {
        Some((_, after)) => &data[after..],
        None => &[],
    };
    AnnexBNalus { rest }
}

/// Iterator returned by [`annexb_nalus`].
#[derive(Debug, Clone)]
pub struct AnnexBNalus<'a> {
    /// Bytes after the last start code consumed.
    rest: &'a [u8],
}

impl<'a> Iterator for AnnexBNalus<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (nal, rest) = match find_start_code(self.rest) {
                Some((at, after)) => (&self.rest[..at], &self.rest[after..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
        None
    }
}

/// Finds the first `00 00 01`; returns (index of its first zero, index after it).
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i + 2] > 1 {
            // Neither this position nor the next can start `00 00 01`.
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Iterates over length-prefixed (AVCC) NAL units.
///
/// `length_size` is 1, 2 or 4 bytes (`lengthSizeMinusOne + 1` in `avcC`). A
/// truncated unit yields one error and ends the iteration.
pub fn avcc_nalus(data: &[u8], length_size: usize) -> AvccNalus<'_> {
    AvccNalus {
        rest: data,
        length_size,
        failed: false,
    }
}

/// Iterator returned by [`avcc_nalus`].
#[derive(Debug, Clone)]
pub struct AvccNalus<'a> {
    rest: &'a [u8],
    length_size: usize,
    failed: bool,
}

impl<'a> Iterator for AvccNalus<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = self.next_unit();
        self.failed = result.is_err();
        Some(result)
    }
}

impl<'a> AvccNalus<'a> {
    fn next_unit(&mut self) -> Result<&'a [u8], H264Error> {
        if !matches!(self.length_size, 1 | 2 | 4) {
            return Err(H264Error::LengthSize(self.length_size));
        }
        let prefix = self
            .rest
            .get(..self.length_size)
            .ok_or(H264Error::Truncated {
                what: "AVCC length prefix",
                needed: self.length_size,
                available: self.rest.len(),
            })?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let body = &self.rest[self.length_size..];
        let nal = body.get(..len).ok_or(H264Error::Truncated {
            what: "AVCC NAL unit",
            needed: len,
            available: body.len(),
        })?;
        self.rest = &body[len..];
        Ok(nal)
    }
}

/// Converts an Annex-B stream to AVCC with 4-byte lengths (the MP4 sample format).
///
/// ```
/// use skylark_media::h264::annexb_to_avcc;
///
/// let avcc = annexb_to_avcc(&[0, 0, 1, 0x65, 0x88, 0x84]);
/// assert_eq!(&avcc[..], [0, 0, 0, 3, 0x65, 0x88, 0x84]);
/// ```
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    nalus_to_avcc(annexb_nalus(data))
}

/// Writes NAL units with 4-byte length prefixes, e.g. an
/// [`AccessUnit`](super::AccessUnit)'s NAL units as one MP4 sample.
pub fn nalus_to_avcc<I, N>(nalus: I) -> Bytes
where
    I: IntoIterator<Item = N>,
    N: AsRef<[u8]>,
{
    let mut out = BytesMut::new();
    for nal in nalus {
        let nal = nal.as_ref();
        // A NAL unit over 4 GiB cannot come from a parsed input (inputs are
        // slices in memory) in practice; saturating keeps this infallible.
        out.put_u32(u32::try_from(nal.len()).unwrap_or(u32::MAX));
        out.put_slice(nal);
    }
    out.freeze()
}

/// Converts AVCC (length-prefixed, `length_size` bytes) to Annex-B with 4-byte
/// start codes.
pub fn avcc_to_annexb(data: &[u8], length_size: usize) -> Result<Bytes, H264Error> {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in avcc_nalus(data, length_size) {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal?);
    }
    Ok(out.freeze())
}

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`), giving the RBSP
/// that the SPS/PPS syntax is defined on. Borrows when there is nothing to remove.
///
/// ```
/// use skylark_media::h264::remove_emulation_prevention;
///
/// assert_eq!(&*remove_emulation_prevention(&[1, 0, 0, 3, 0, 0, 3]), [1, 0, 0, 0, 0]);
/// ```
pub fn remove_emulation_prevention(nal: &[u8]) -> Cow<'_, [u8]> {
    if !nal.windows(3).any(|w| w == [0, 0, 3]) {
        return Cow::Borrowed(nal);
    }
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    Cow::Owned(out)
}

/// Inserts emulation-prevention bytes so that no `00 00 0x` (x ≤ 3) appears,
/// turning an RBSP into NAL unit payload bytes. The inverse of
/// [`remove_emulation_prevention`].
///
/// ```
/// use skylark_media::h264::{add_emulation_prevention, remove_emulation_prevention};
///
/// let rbsp = [0xaa, 0, 0, 1, 0, 0, 0, 0xbb];
/// let nal = add_emulation_prevention(&rbsp);
/// assert_eq!(nal, [0xaa, 0, 0, 3, 1, 0, 0, 3, 0, 0xbb]);
/// assert_eq!(&*remove_emulation_prevention(&nal), rbsp);
/// ```
pub fn add_emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    // A trailing `00 00` would merge with a following start code.
    if zeros >= 2 {
        out.push(3);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mixed_start_codes_and_trims_trailing_zeros() {
        let stream = [
            0xff, 0xfe, // garbage before the first start code
            0, 0, 0, 1, 0x09, 0xf0, // AUD, 4-byte start code
            0, 0, 1, 0x67, 0x42, 0x00, // SPS ending in a real zero byte...
            0, 0, 0, 0, 1, 0x68, 0xce, // ...indistinguishable from trailing_zero_8bits
            0, 0, 1, // empty NAL
            0, 0, 1, 0x65, 0x88, 0x00, 0x00,
        ];
        let nalus: Vec<&[u8]> = annexb_nalus(&stream).collect();
        assert_eq!(
            nalus,
            [
                &[0x09, 0xf0][..],
                &[0x67, 0x42],
                &[0x68, 0xce],
                &[0x65, 0x88]
            ]
        );
    }

    #[test]
    fn no_start_code_means_no_nalus() {
        assert_eq!(annexb_nalus(&[0x65, 0x88, 0, 0]).count(), 0);
        assert_eq!(annexb_nalus(&[]).count(), 0);
        assert_eq!(annexb_nalus(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn start_code_search_does_not_skip_past_a_code() {
        // The 3-byte skip must not jump over `00 00 01` starting at i+1 or i+2.
        let stream = [0x02, 0, 0, 1, 0x41, 0x05, 0, 0, 1, 0x41, 0x06];
        assert_eq!(annexb_nalus(&stream).count(), 2);
        let stream = [0, 0, 1, 0x41, 0x00, 0x00, 0x00, 0x01, 0x41];
        assert_eq!(annexb_nalus(&stream).count(), 2);
    }

    #[test]
    fn annexb_avcc_round_trip() {
        let annexb = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 6,
        ];
        let avcc = annexb_to_avcc(&annexb);
        assert_eq!(
            &avcc[..],
            [0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 4, 0x65, 4, 5, 6]
        );
        assert_eq!(&avcc_to_annexb(&avcc, 4).unwrap()[..], annexb);
    }

    #[test]
    fn avcc_with_short_lengths() {
        let two = [0, 2, 0x41, 0x01, 0, 1, 0x41];
        let nalus: Vec<_> = avcc_nalus(&two, 2).collect::<Result<_, _>>().unwrap();
        assert_eq!(nalus, [&[0x41, 0x01][..], &[0x41]]);
        let one = [2, 0x41, 0x01];
        assert_eq!(avcc_nalus(&one, 1).count(), 1);
    }

    #[test]
    fn avcc_errors_end_iteration() {
        let truncated = [0, 0, 0, 9, 0x65];
        let results: Vec<_> = avcc_nalus(&truncated, 4).collect();
        assert_eq!(results.len(), 1);
        assert!(matches!(results[0], Err(H264Error::Truncated { .. })));
        assert!(avcc_to_annexb(&truncated, 4).is_err());
        assert_eq!(
            avcc_nalus(&[1, 2, 3], 3).next(),
            Some(Err(H264Error::LengthSize(3)))
        );
        assert!(matches!(
            avcc_nalus(&[0, 0], 4).next(),
            Some(Err(H264Error::Truncated { .. }))
        ));
    }

    #[test]
    fn three_and_four_byte_start_codes_after_garbage() {
        let s = [
            9, 9, 0, 0, 1, 0x41, 1, 0, 0, 0, 1, 0x41, 2, 0, 0, 0, 0, 1, 0x0c, 0xff, 0x80,
        ];
        let nals: Vec<&[u8]> = annexb_nalus(&s).collect();
        assert_eq!(
            nals,
            vec![&[0x41, 1][..], &[0x41, 2][..], &[0x0c, 0xff, 0x80][..]]
        );
        assert_eq!(annexb_nalus(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn emulation_prevention_covers_every_forbidden_triplet() {
        for b in 0..=3u8 {
            let rbsp = [0x11, 0, 0, b, 0x22];
            let escaped = add_emulation_prevention(&rbsp);
            assert_eq!(escaped, [0x11, 0, 0, 3, b, 0x22], "byte {b}");
            assert_eq!(&*remove_emulation_prevention(&escaped), rbsp);
        }
        // 00 00 04 is allowed as is.
        assert_eq!(add_emulation_prevention(&[0, 0, 4]), [0, 0, 4]);
        // Trailing zeros get a 0x03 so the NAL unit does not end in 0x00.
        assert_eq!(add_emulation_prevention(&[7, 0, 0]), [7, 0, 0, 3]);
        assert_eq!(&*remove_emulation_prevention(&[7, 0, 0, 3]), [7, 0, 0]);
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
                let e = add_emulation_prevention(&rbsp);
                assert!(
                    !e.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                    "{rbsp:?} → {e:?}"
                );
                assert_eq!(&*remove_emulation_prevention(&e), rbsp);
            }
        }
    }

    #[test]
    fn emulation_prevention_round_trip() {
        let rbsp = [0x42, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0];
        let nal = add_emulation_prevention(&rbsp);
        assert_eq!(
            nal,
            [0x42, 0, 0, 3, 0, 0, 3, 0, 1, 0, 0, 3, 2, 0, 0, 3, 3, 0, 0, 4, 0, 0, 3]
        );
        assert!(!nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
        assert_eq!(&*remove_emulation_prevention(&nal), rbsp);
        assert!(matches!(
            remove_emulation_prevention(&[1, 2, 3]),
            Cow::Borrowed(_)
        ));
    }
}
