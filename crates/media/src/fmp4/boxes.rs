//! A tiny ISO BMFF box writer.

/// Appends big-endian fields and nested boxes to a byte buffer.
///
/// Box sizes are patched when a box's closure returns. Callers keep every box
/// but `mdat` far below 4 GiB (sizes are validated before writing), so 32-bit
/// sizes suffice.
#[derive(Debug, Default)]
pub(crate) struct BoxWriter {
    pub(crate) buf: Vec<u8>,
}

impl BoxWriter {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// The unity transformation matrix of `mvhd` and `tkhd`.
    pub(crate) fn matrix(&mut self) -> &mut Self {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
        self
    }

    /// Writes a box: size, type, then whatever `body` writes.
    pub(crate) fn boxed(&mut self, kind: &[u8; 4], body: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.buf.len();
        self.u32(0).bytes(kind);
        body(self);
        let size = self.buf.len() - start;
        // Sizes are bounded by the callers' validation; see the type's doc.
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        self
    }

    /// Writes a full box: a box whose body starts with version and 24-bit flags.
    pub(crate) fn full(
        &mut self,
        kind: &[u8; 4],
        version: u8,
        flags: u32,
        body: impl FnOnce(&mut Self),
    ) -> &mut Self {
        self.boxed(kind, |w| {
            w.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
            body(w);
        })
    }

    /// Position of the next byte, to patch a field later.
    pub(crate) fn position(&self) -> usize {
        self.buf.len()
    }

    /// Overwrites 4 bytes at `at` (a position returned earlier).
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }
}
