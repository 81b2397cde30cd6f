//! CMAF fragments: `moof` + `mdat` (ISO/IEC 14496-12 §8.8).

use bytes::Bytes;

use super::boxes::BoxWriter;
use super::Fmp4Error;
use crate::h264::{nal_type, AccessUnit, NAL_AUD};
use crate::opus::OpusPacket;

/// Most samples in one fragment, to keep `moof` far below 4 GiB.
const MAX_SAMPLES: usize = 1 << 20;

/// `sample_depends_on` = 2: a sync sample (keyframe, or any audio sample).
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on` = 1 and `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// One sample (a video picture or an audio packet) of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// The sample bytes: AVCC (length-prefixed) NAL units for H.264, the Opus
    /// packet for Opus.
    pub data: Bytes,
    /// A sync sample (IDR picture; every Opus packet).
    pub keyframe: bool,
    /// Presentation minus decoding time, in the timescale (0 without B-frames).
    pub composition_offset: i32,
}

impl Sample {
    /// A video sample from an access unit, its NAL units written with 4-byte
    /// length prefixes. Access unit delimiters are left out: MP4 samples
    /// already delimit pictures.
    pub fn from_access_unit(au: &AccessUnit, duration: u32) -> Self {
        let nalus = au.nalus.iter().filter(|n| nal_type(n) != Some(NAL_AUD));
        Self {
            duration,
            data: crate::h264::nalus_to_avcc(nalus),
            keyframe: au.keyframe,
            composition_offset: 0,
        }
    }

    /// An audio sample from an Opus packet, with its TOC duration.
    pub fn from_opus(packet: &OpusPacket) -> Self {
        Self {
            duration: packet.duration,
            data: packet.data.clone(),
            keyframe: true,
            composition_offset: 0,
        }
    }
}

/// The samples of one track in a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackFragment<'a> {
    /// The track, as in the init segment.
    pub track_id: u32,
    /// Decoding time of the first sample, in the track's timescale (`tfdt`).
    pub base_media_decode_time: u64,
    /// The samples, in decoding order.
    pub samples: &'a [Sample],
}

/// Writes one fragment: a `moof` with a `traf` per track and the `mdat`
/// holding their samples, track after track.
///
/// `sequence_number` counts fragments from 1 (`mfhd`). Each `trun` carries
/// per-sample duration, size, flags and composition offset, and its data
/// offset is relative to the `moof` (`default-base-is-moof`, as CMAF requires).
///
/// ```
/// use bytes::Bytes;
/// use skylark_media::fmp4::{fragment, Sample, TrackFragment};
///
/// let samples = [Sample {
///     duration: 960,
///     data: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
///     keyframe: true,
///     composition_offset: 0,
/// }];
/// let bytes = fragment(1, &[TrackFragment { track_id: 2, base_media_decode_time: 0, samples: &samples }])?;
/// assert_eq!(&bytes[4..8], b"moof");
/// assert_eq!(&bytes[bytes.len() - 3..], [0xfc, 0xff, 0xfe]);
/// # Ok::<(), skylark_media::fmp4::Fmp4Error>(())
/// ```
pub fn fragment(sequence_number: u32, tracks: &[TrackFragment<'_>]) -> Result<Bytes, Fmp4Error> {
    if tracks.is_empty() {
        return Err(Fmp4Error::NoTracks);
    }
    let sample_count: usize = tracks.iter().map(|t| t.samples.len()).sum();
    if sample_count > MAX_SAMPLES {
        return Err(Fmp4Error::TooManySamples(sample_count));
    }
    let mut data_len = 0u64;
    for track in tracks {
        if track.track_id == 0 {
            return Err(Fmp4Error::TrackId(0));
        }
        for sample in track.samples {
            if u32::try_from(sample.data.len()).is_err() {
                return Err(Fmp4Error::SampleTooLarge(sample.data.len()));
            }
            data_len += sample.data.len() as u64;
        }
    }
    // mdat uses a 64-bit size when the 32-bit one cannot hold it.
    let mdat_header: u64 = if data_len + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    };

    let mut w = BoxWriter::default();
    let mut offset_slots = Vec::with_capacity(tracks.len());
    w.boxed(b"moof", |w| {
        w.full(b"mfhd", 0, 0, |w| {
            w.u32(sequence_number);
        });
        for track in tracks {
            w.boxed(b"traf", |w| {
                // 0x020000: default-base-is-moof.
                w.full(b"tfhd", 0, 0x02_0000, |w| {
                    w.u32(track.track_id);
                });
                w.full(b"tfdt", 1, 0, |w| {
                    w.u64(track.base_media_decode_time);
                });
                // Version 1: signed composition offsets. Flags: data-offset,
                // sample duration, size, flags and composition offset present.
                w.full(b"trun", 1, 0x00_0f01, |w| {
                    // Bounded by MAX_SAMPLES.
                    w.u32(track.samples.len() as u32);
                    offset_slots.push(w.position());
                    w.i32(0); // data_offset, patched below
                    for s in track.samples {
                        let flags = if s.keyframe {
                            SYNC_SAMPLE_FLAGS
                        } else {
                            NON_SYNC_SAMPLE_FLAGS
                        };
                        // Checked above to fit in 32 bits.
                        w.u32(s.duration)
                            .u32(s.data.len() as u32)
                            .u32(flags)
                            .i32(s.composition_offset);
                    }
                });
            });
        }
    });

    // Data offsets count from the first byte of the moof to each track's first
    // sample in the mdat.
    let moof_len = w.position() as u64;
    let mut offset = moof_len + mdat_header;
    for (slot, track) in offset_slots.into_iter().zip(tracks) {
        let value = i32::try_from(offset).map_err(|_| Fmp4Error::FragmentTooLarge)?;
        w.patch_u32(slot, value as u32);
        offset += track
            .samples
            .iter()
            .map(|s| s.data.len() as u64)
            .sum::<u64>();
    }

    if mdat_header == 16 {
        w.u32(1).bytes(b"mdat").u64(data_len + 16);
    } else {
        w.u32((data_len + 8) as u32).bytes(b"mdat");
    }
    w.buf.reserve(usize::try_from(data_len).unwrap_or(0));
    for track in tracks {
        for s in track.samples {
            w.bytes(&s.data);
        }
    }
    Ok(Bytes::from(w.buf))
}

/// A `styp` box for the start of a CMAF segment (several fragments); LL-HLS
/// parts are bare fragments.
pub fn segment_type() -> Bytes {
    let mut w = BoxWriter::default();
    w.boxed(b"styp", |w| {
        w.bytes(b"cmfs").u32(0);
        for brand in [b"cmfs", b"msdh", b"msix"] {
            w.bytes(brand);
        }
    });
    Bytes::from(w.buf)
}
