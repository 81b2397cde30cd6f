//! The CMAF header: `ftyp` + `moov` (ISO/IEC 14496-12, 14496-15, 14496-14 for AAC,
//! Opus in ISOBMFF).

use bytes::Bytes;

use super::boxes::BoxWriter;
use super::{Codec, Fmp4Error, OpusConfig, Track};
use crate::aac::AudioSpecificConfig;

/// Writes the init segment (`ftyp` + `moov`) for `tracks`.
///
/// ```
/// use skylark_media::fmp4::{init_segment, Track};
/// use skylark_media::h264::AvcDecoderConfigurationRecord;
///
/// let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35];
/// let pps = [0x68, 0xce, 0x38, 0x80];
/// let video = Track::avc(1, AvcDecoderConfigurationRecord::from_parameter_sets(&sps, &pps)?)?;
/// let audio = Track::opus(2, 2);
/// let init = init_segment(&[video, audio])?;
/// assert_eq!(&init[4..8], b"ftyp");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init_segment(tracks: &[Track]) -> Result<Bytes, Fmp4Error> {
    super::validate_tracks(tracks)?;
    let mut w = BoxWriter::default();
    w.boxed(b"ftyp", |w| {
        w.bytes(b"iso6").u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            w.bytes(brand);
        }
    });
    let mut result = Ok(());
    w.boxed(b"moov", |w| {
        let next_track_id = tracks
            .iter()
            .map(|t| t.id)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        mvhd(w, next_track_id);
        for track in tracks {
            if let Err(e) = trak(w, track) {
                result = Err(e);
            }
        }
        w.boxed(b"mvex", |w| {
            for track in tracks {
                w.full(b"trex", 0, 0, |w| {
                    w.u32(track.id)
                        .u32(1) // default_sample_description_index
                        .u32(0) // default_sample_duration
                        .u32(0) // default_sample_size
                        .u32(0); // default_sample_flags
                });
            }
        });
    });
    result?;
    Ok(Bytes::from(w.buf))
}

fn mvhd(w: &mut BoxWriter, next_track_id: u32) {
    w.full(b"mvhd", 0, 0, |w| {
        w.u32(0) // creation_time
            .u32(0) // modification_time
            .u32(1000) // timescale
            .u32(0) // duration: unknown, fragments follow
            .u32(0x0001_0000) // rate 1.0
            .u16(0x0100) // volume 1.0
            .zeros(2 + 8) // reserved
            .matrix()
            .zeros(24) // pre_defined
            .u32(next_track_id);
    });
}

fn trak(w: &mut BoxWriter, track: &Track) -> Result<(), Fmp4Error> {
    let (handler, name, width, height, volume): (&[u8; 4], &[u8], u16, u16, u16) =
        match &track.codec {
            Codec::Avc { width, height, .. } => (b"vide", b"VideoHandler\0", *width, *height, 0),
            Codec::Opus(_) | Codec::Aac(_) => (b"soun", b"SoundHandler\0", 0, 0, 0x0100),
        };
    // Codec configurations that can fail to serialize, written before any box is open.
    let config = match &track.codec {
        Codec::Avc { config, .. } => config.to_bytes()?.to_vec(),
        Codec::Aac(asc) => asc.to_bytes()?,
        Codec::Opus(_) => Vec::new(),
    };
    w.boxed(b"trak", |w| {
        // Flags: track enabled, in movie.
        w.full(b"tkhd", 0, 3, |w| {
            w.u32(0) // creation_time
                .u32(0) // modification_time
                .u32(track.id)
                .u32(0) // reserved
                .u32(0) // duration
                .zeros(8) // reserved
                .u16(0) // layer
                .u16(0) // alternate_group
                .u16(volume)
                .u16(0) // reserved
                .matrix()
                .u32(u32::from(width) << 16)
                .u32(u32::from(height) << 16);
        });
        w.boxed(b"mdia", |w| {
            w.full(b"mdhd", 0, 0, |w| {
                w.u32(0) // creation_time
                    .u32(0) // modification_time
                    .u32(track.timescale)
                    .u32(0) // duration
                    .u16(0x55c4) // language "und", ISO-639-2/T packed
                    .u16(0); // pre_defined
            });
            w.full(b"hdlr", 0, 0, |w| {
                w.u32(0).bytes(handler).zeros(12).bytes(name);
            });
            w.boxed(b"minf", |w| {
                match track.codec {
                    Codec::Avc { .. } => w.full(b"vmhd", 0, 1, |w| {
                        w.u16(0).zeros(6); // graphicsmode, opcolor
                    }),
                    Codec::Opus(_) | Codec::Aac(_) => w.full(b"smhd", 0, 0, |w| {
                        w.i16(0).u16(0); // balance, reserved
                    }),
                };
                w.boxed(b"dinf", |w| {
                    w.full(b"dref", 0, 0, |w| {
                        w.u32(1);
                        // Flag 1: the media data is in this file.
                        w.full(b"url ", 0, 1, |_| {});
                    });
                });
                w.boxed(b"stbl", |w| {
                    w.full(b"stsd", 0, 0, |w| {
                        w.u32(1);
                        match &track.codec {
                            Codec::Avc { width, height, .. } => avc1(w, *width, *height, &config),
                            Codec::Opus(opus) => opus_entry(w, opus),
                            Codec::Aac(asc) => mp4a(w, asc, &config),
                        }
                    });
                    // Empty sample tables: the samples are in the fragments.
                    w.full(b"stts", 0, 0, |w| {
                        w.u32(0);
                    });
                    w.full(b"stsc", 0, 0, |w| {
                        w.u32(0);
                    });
                    w.full(b"stsz", 0, 0, |w| {
                        w.u32(0).u32(0);
                    });
                    w.full(b"stco", 0, 0, |w| {
                        w.u32(0);
                    });
                });
            });
        });
    });
    Ok(())
}

/// `avc1` VisualSampleEntry with its `avcC` (ISO/IEC 14496-15 §5.4.2).
fn avc1(w: &mut BoxWriter, width: u16, height: u16, avcc: &[u8]) {
    w.boxed(b"avc1", |w| {
        w.zeros(6) // reserved
            .u16(1) // data_reference_index
            .zeros(16) // pre_defined, reserved
            .u16(width)
            .u16(height)
            .u32(0x0048_0000) // 72 dpi
            .u32(0x0048_0000)
            .u32(0) // reserved
            .u16(1) // frame_count
            .zeros(32) // compressorname
            .u16(0x0018) // depth
            .i16(-1); // pre_defined
        w.boxed(b"avcC", |w| {
            w.bytes(avcc);
        });
    });
}

/// `Opus` AudioSampleEntry with its `dOps` ("Encapsulation of Opus in ISO Base
/// Media File Format" §4.3).
fn opus_entry(w: &mut BoxWriter, opus: &OpusConfig) {
    w.boxed(b"Opus", |w| {
        w.zeros(6) // reserved
            .u16(1) // data_reference_index
            .zeros(8) // reserved
            .u16(u16::from(opus.channels))
            .u16(16) // samplesize
            .u16(0) // pre_defined
            .u16(0) // reserved
            .u32(48_000 << 16); // samplerate, 16.16
        w.boxed(b"dOps", |w| {
            w.u8(0) // Version
                .u8(opus.channels)
                .u16(opus.pre_skip)
                .u32(opus.input_sample_rate)
                .i16(opus.output_gain)
                .u8(0); // ChannelMappingFamily 0: mono or stereo
        });
    });
}

/// `mp4a` AudioSampleEntry with its `esds` (ISO/IEC 14496-14 §3.1, 14496-1 §7.2.6): an
/// ES descriptor holding a DecoderConfigDescriptor for MPEG-4 audio (0x40) whose
/// DecoderSpecificInfo is the `AudioSpecificConfig` (`asc_bytes`).
fn mp4a(w: &mut BoxWriter, asc: &AudioSpecificConfig, asc_bytes: &[u8]) {
    let rate = asc.output_sampling_frequency();
    w.boxed(b"mp4a", |w| {
        w.zeros(6) // reserved
            .u16(1) // data_reference_index
            .zeros(8) // reserved
            .u16(u16::from(asc.channel_count().unwrap_or(2)))
            .u16(16) // samplesize
            .u16(0) // pre_defined
            .u16(0) // reserved
            // 16.16 fixed point; rates above 65535 Hz don't fit (decoders use the esds).
            .u32(if rate <= 0xffff { rate << 16 } else { 0 });
        let mut config = vec![
            0x40, // objectTypeIndication: Audio ISO/IEC 14496-3
            0x15, // streamType 5 (audio) << 2 | upStream 0 | reserved 1
            0, 0, 0, // bufferSizeDB: unknown
            0, 0, 0, 0, // maxBitrate: unknown
            0, 0, 0, 0, // avgBitrate: unknown
        ];
        config.extend(descriptor(0x05, asc_bytes)); // DecoderSpecificInfo
        let mut es = vec![0, 0, 0]; // ES_ID 0 (as stored in files), no flags
        es.extend(descriptor(0x04, &config)); // DecoderConfigDescriptor
        es.extend(descriptor(0x06, &[0x02])); // SLConfigDescriptor: predefined MP4
        w.full(b"esds", 0, 0, |w| {
            w.bytes(&descriptor(0x03, &es)); // ES_Descriptor
        });
    });
}

/// An MPEG-4 descriptor: tag, size in the expandable 7-bit encoding (shortest form),
/// body.
fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    let groups = (1..4).take_while(|i| len >> (7 * i) != 0).count();
    for i in (1..=groups).rev() {
        out.push(0x80 | ((len >> (7 * i)) & 0x7f) as u8);
    }
    out.push((len & 0x7f) as u8);
    out.extend_from_slice(body);
    out
}
