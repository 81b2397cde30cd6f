//! A borrowed, validated view of one RTP packet (RFC 3550 §5.1, RFC 8285).

use super::RtpError;

/// Size of the fixed RTP header, before CSRCs and extensions.
pub const FIXED_HEADER_LEN: usize = 12;

/// The `defined by profile` value announcing one-byte header extensions (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// A parsed RTP packet borrowing the buffer it was parsed from.
///
/// [`RtpPacket::parse`] checks every length up front, so the accessors never fail
/// and never read past the buffer.
///
/// ```
/// use skylark_media::rtp::RtpPacket;
///
/// let bytes = [
///     0x80, 0xe0, 0x00, 0x07, // V=2, M=1, PT=96, seq 7
///     0x00, 0x00, 0x0b, 0xb8, // timestamp 3000
///     0x12, 0x34, 0x56, 0x78, // SSRC
///     0x65, 0x88,             // payload
/// ];
/// let pkt = RtpPacket::parse(&bytes)?;
/// assert!(pkt.marker());
/// assert_eq!(pkt.payload_type(), 96);
/// assert_eq!(pkt.sequence_number(), 7);
/// assert_eq!(pkt.timestamp(), 3000);
/// assert_eq!(pkt.ssrc(), 0x1234_5678);
/// assert_eq!(pkt.payload(), &[0x65, 0x88]);
/// # Ok::<(), skylark_media::rtp::RtpError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    /// Extension block after its 4-byte header: `(profile, data)`.
    extension: Option<(u16, &'a [u8])>,
    payload_start: usize,
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Parses and validates `buf` as one RTP packet.
    ///
    /// Fails if the version is not 2, or if the CSRC list, the header extension or
    /// the padding claims more bytes than the buffer holds.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort {
                what: "fixed header",
                needed: FIXED_HEADER_LEN,
                available: buf.len(),
            });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let csrc_count = usize::from(buf[0] & 0x0f);
        let mut pos = FIXED_HEADER_LEN + 4 * csrc_count;
        if buf.len() < pos {
            return Err(RtpError::TooShort {
                what: "CSRC list",
                needed: pos,
                available: buf.len(),
            });
        }

        let mut extension = None;
        if buf[0] & 0x10 != 0 {
            let header = buf.get(pos..pos + 4).ok_or(RtpError::TooShort {
                what: "header extension header",
                needed: pos + 4,
                available: buf.len(),
            })?;
            let profile = u16::from_be_bytes([header[0], header[1]]);
            let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let start = pos + 4;
            let end = start + 4 * words;
            let data = buf.get(start..end).ok_or(RtpError::TooShort {
                what: "header extension",
                needed: end,
                available: buf.len(),
            })?;
            extension = Some((profile, data));
            pos = end;
        }

        let mut payload_end = buf.len();
        if buf[0] & 0x20 != 0 {
            // The last octet counts the padding, itself included (RFC 3550 §5.1).
            let pad = usize::from(buf[buf.len() - 1]);
            if pad == 0 || pad > buf.len() - pos {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available: buf.len() - pos,
                });
            }
            payload_end -= pad;
        }

        Ok(Self {
            buf,
            extension,
            payload_start: pos,
            payload_end,
        })
    }

    /// The whole packet as it was parsed.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// RTP version; always 2 for a parsed packet.
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }

    /// Whether the packet carries padding after the payload.
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// Number of padding bytes after the payload (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    /// Whether a header extension is present (the X bit).
    pub fn has_extension(&self) -> bool {
        self.extension.is_some()
    }

    /// The marker bit; for video it marks the last packet of a frame.
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// Payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    /// Sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// Media timestamp in the payload's clock rate.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    /// Contributing sources, in order.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let count = usize::from(self.buf[0] & 0x0f);
        self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * count]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header extension's 16-bit profile (`0xBEDE` for one-byte elements).
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension.map(|(profile, _)| profile)
    }

    /// The raw header extension data, after its 4-byte header.
    pub fn extension_data(&self) -> Option<&'a [u8]> {
        self.extension.map(|(_, data)| data)
    }

    /// The RFC 8285 header extension elements as `(id, data)` pairs.
    ///
    /// Empty when there is no extension or its profile is neither the one-byte
    /// (`0xBEDE`) nor the two-byte (`0x100X`) form. A malformed element ends the
    /// iteration, as RFC 8285 §4.2 prescribes for ID 15.
    pub fn extensions(&self) -> Extensions<'a> {
        match self.extension {
            Some((ONE_BYTE_PROFILE, data)) => Extensions {
                data,
                form: ExtensionForm::OneByte,
            },
            Some((profile, data)) if profile & 0xfff0 == 0x1000 => Extensions {
                data,
                form: ExtensionForm::TwoByte,
            },
            _ => Extensions {
                data: &[],
                form: ExtensionForm::OneByte,
            },
        }
    }

    /// Looks up one header extension element by its negotiated ID.
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        self.extensions()
            .find(|&(i, _)| i == id)
            .map(|(_, data)| data)
    }

    /// The payload, without header, extension and padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_start..self.payload_end]
    }

    /// Byte range of the payload inside [`RtpPacket::as_bytes`], to slice a shared
    /// buffer (`Bytes::slice`) without copying.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.payload_start..self.payload_end
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtensionForm {
    OneByte,
    TwoByte,
}

/// Iterator over RFC 8285 header extension elements, see [`RtpPacket::extensions`].
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    data: &'a [u8],
    form: ExtensionForm,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&first, rest) = self.data.split_first()?;
            // A zero byte is padding between or after elements in both forms.
            if first == 0 {
                self.data = rest;
                continue;
            }
            let (id, len, header) = match self.form {
                ExtensionForm::OneByte => {
                    let id = first >> 4;
                    if id == 15 {
                        // Reserved: stop processing the whole block (RFC 8285 §4.2).
                        self.data = &[];
                        return None;
                    }
                    (id, usize::from(first & 0x0f) + 1, 1)
                }
                ExtensionForm::TwoByte => {
                    let Some(&len) = rest.first() else {
                        self.data = &[];
                        return None;
                    };
                    (first, usize::from(len), 2)
                }
            };
            let Some(value) = self.data.get(header..header + len) else {
                // Truncated element: nothing after it can be trusted.
                self.data = &[];
                return None;
            };
            self.data = &self.data[header + len..];
            return Some((id, value));
        }
    }
}
