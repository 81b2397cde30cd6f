//! A bit reader over RBSP bytes with Exp-Golomb decoding (H.264 §7.2, §9.1).

use super::H264Error;

/// Reads bits most-significant first; every read is bounds-checked.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn eof(&self) -> H264Error {
        H264Error::Truncated {
            what: "bitstream",
            needed: self.pos / 8 + 1,
            available: self.data.len(),
        }
    }

    pub(crate) fn bit(&mut self) -> Result<bool, H264Error> {
        let byte = *self.data.get(self.pos / 8).ok_or_else(|| self.eof())?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n <= 32` bits as an unsigned number.
    pub(crate) fn bits(&mut self, n: u32) -> Result<u32, H264Error> {
        debug_assert!(n <= 32);
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, H264Error> {
        // 8 bits always fit a u8.
        Ok(self.bits(8)? as u8)
    }

    /// `ue(v)`: unsigned Exp-Golomb. Codes longer than 32 bits of value are
    /// rejected, which also bounds the loop on long runs of zeros.
    pub(crate) fn ue(&mut self) -> Result<u32, H264Error> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(H264Error::ExpGolombOverflow);
            }
        }
        let suffix = self.bits(zeros)?;
        // (2^zeros - 1) + suffix <= 2^32 - 2 for zeros <= 31: no overflow.
        Ok(((1u64 << zeros) - 1 + u64::from(suffix)) as u32)
    }

    /// `se(v)`: signed Exp-Golomb, mapped 1, -1, 2, -2, ...
    pub(crate) fn se(&mut self) -> Result<i32, H264Error> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        // |v| <= 2^31 - 1 since k <= 2^32 - 2.
        Ok(v as i32)
    }

    /// `ue(v)` that must not exceed `max`.
    pub(crate) fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, H264Error> {
        let v = self.ue()?;
        if v > max {
            return Err(H264Error::OutOfRange {
                field,
                value: i64::from(v),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
pub(crate) mod writer {
    //! A bit writer for building test bitstreams.

    #[derive(Default)]
    pub(crate) struct BitWriter {
        pub(crate) bytes: Vec<u8>,
        bit: u32,
    }

    impl BitWriter {
        pub(crate) fn bit(&mut self, b: bool) -> &mut Self {
            if self.bit == 0 {
                self.bytes.push(0);
            }
            if b {
                *self.bytes.last_mut().unwrap() |= 0x80 >> self.bit;
            }
            self.bit = (self.bit + 1) % 8;
            self
        }

        pub(crate) fn bits(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
            self
        }

        pub(crate) fn ue(&mut self, v: u32) -> &mut Self {
            let x = u64::from(v) + 1;
            let len = 64 - x.leading_zeros();
            for _ in 0..len - 1 {
                self.bit(false);
            }
            for i in (0..len).rev() {
                self.bit((x >> i) & 1 == 1);
            }
            self
        }

        pub(crate) fn se(&mut self, v: i32) -> &mut Self {
            let k = if v > 0 {
                2 * v as u32 - 1
            } else {
                2 * v.unsigned_abs()
            };
            self.ue(k)
        }

        /// rbsp_trailing_bits: a one, then zeros to the byte boundary.
        pub(crate) fn trailing(&mut self) -> Vec<u8> {
            self.bit(true);
            while self.bit != 0 {
                self.bit(false);
            }
            std::mem::take(&mut self.bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writer::BitWriter;
    use super::*;

    #[test]
    fn exp_golomb_round_trips() {
        let values = [0u32, 1, 2, 3, 7, 8, 254, 255, 65535, 1 << 20, u32::MAX - 1];
        let signed = [0i32, 1, -1, 2, -2, 1000, -1000, i32::MAX, -i32::MAX];
        let mut w = BitWriter::default();
        for &v in &values {
            w.ue(v);
        }
        for &v in &signed {
            w.se(v);
        }
        let bytes = w.trailing();
        let mut r = BitReader::new(&bytes);
        for &v in &values {
            assert_eq!(r.ue().unwrap(), v);
        }
        for &v in &signed {
            assert_eq!(r.se().unwrap(), v);
        }
    }

    #[test]
    fn exp_golomb_known_codes() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.ue().unwrap(), 0);
        assert_eq!(r.ue().unwrap(), 1);
        assert_eq!(r.ue().unwrap(), 2);
        assert_eq!(r.ue().unwrap(), 3);
    }

    #[test]
    fn overlong_and_truncated_codes_fail() {
        let zeros = [0u8; 8];
        assert_eq!(
            BitReader::new(&zeros).ue(),
            Err(H264Error::ExpGolombOverflow)
        );
        assert!(matches!(
            BitReader::new(&[0x00, 0x01]).ue(),
            Err(H264Error::Truncated { .. })
        ));
        assert!(BitReader::new(&[]).bit().is_err());
    }
}
