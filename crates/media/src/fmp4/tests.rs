use bytes::Bytes;

use super::*;
use crate::h264::AccessUnit;
use crate::opus::OpusPacket;

const SPS_720P: [u8; 13] = [
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x38, 0x80];

/// A minimal ISO BMFF reader: the boxes in `data`, as (type, body) pairs.
fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        assert!(rest.len() >= 8, "truncated box header");
        let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as u64;
        let kind: [u8; 4] = rest[4..8].try_into().unwrap();
        let (header, size) = if size == 1 {
            (16, u64::from_be_bytes(rest[8..16].try_into().unwrap()))
        } else {
            (8, size)
        };
        let size = size as usize;
        assert!(
            size >= header && size <= rest.len(),
            "bad size for {kind:?}"
        );
        out.push((kind, &rest[header..size]));
        rest = &rest[size..];
    }
    out
}

fn names(list: &[([u8; 4], &[u8])]) -> Vec<String> {
    list.iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// The body of the only child of `data` with type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    let found: Vec<_> = boxes(data).into_iter().filter(|(k, _)| k == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {:?}",
        String::from_utf8_lossy(kind)
    );
    found[0].1
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn tracks() -> Vec<Track> {
    let record = AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_720P, &PPS).unwrap();
    vec![Track::avc(1, record).unwrap(), Track::opus(2, 2)]
}

#[test]
fn init_segment_structure() {
    let tracks = tracks();
    let init = init_segment(&tracks).unwrap();
    let top = boxes(&init);
    assert_eq!(names(&top), ["ftyp", "moov"]);
    assert_eq!(top[0].1, b"iso6\0\0\0\0iso6cmfcmp41");

    let moov = top[1].1;
    assert_eq!(names(&boxes(moov)), ["mvhd", "trak", "trak", "mvex"]);
    let mvhd = child(moov, b"mvhd");
    assert_eq!(mvhd.len(), 100);
    assert_eq!(u32_at(mvhd, 12), 1000, "timescale");
    assert_eq!(u32_at(mvhd, 96), 3, "next_track_ID");

    let traks: Vec<&[u8]> = boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .map(|(_, b)| b)
        .collect();

    // Video track.
    let tkhd = child(traks[0], b"tkhd");
    assert_eq!(tkhd.len(), 84);
    assert_eq!(u32_at(tkhd, 0) & 0xff_ffff, 3, "enabled, in movie");
    assert_eq!(u32_at(tkhd, 12), 1, "track_ID");
    assert_eq!(u32_at(tkhd, 76) >> 16, 1280);
    assert_eq!(u32_at(tkhd, 80) >> 16, 720);
    let mdia = child(traks[0], b"mdia");
    assert_eq!(names(&boxes(mdia)), ["mdhd", "hdlr", "minf"]);
    assert_eq!(u32_at(child(mdia, b"mdhd"), 12), 90_000);
    assert_eq!(u16_at(child(mdia, b"mdhd"), 20), 0x55c4, "und");
    assert_eq!(&child(mdia, b"hdlr")[8..12], b"vide");
    let minf = child(mdia, b"minf");
    assert_eq!(names(&boxes(minf)), ["vmhd", "dinf", "stbl"]);
    let dref = child(child(minf, b"dinf"), b"dref");
    assert_eq!(u32_at(dref, 4), 1);
    assert_eq!(names(&boxes(&dref[8..])), ["url "]);
    let stbl = child(minf, b"stbl");
    assert_eq!(
        names(&boxes(stbl)),
        ["stsd", "stts", "stsc", "stsz", "stco"]
    );
    let stsd = child(stbl, b"stsd");
    assert_eq!(u32_at(stsd, 4), 1, "entry_count");
    let avc1 = child(&stsd[8..], b"avc1");
    assert_eq!(u16_at(avc1, 6), 1, "data_reference_index");
    assert_eq!((u16_at(avc1, 24), u16_at(avc1, 26)), (1280, 720));
    assert_eq!(u16_at(avc1, 74), 0x18, "depth");
    let avcc = child(&avc1[78..], b"avcC");
    let Codec::Avc { config, .. } = &tracks[0].codec else {
        unreachable!()
    };
    assert_eq!(avcc, &config.to_bytes().unwrap()[..]);

    // Audio track.
    let mdia = child(traks[1], b"mdia");
    assert_eq!(u32_at(child(mdia, b"mdhd"), 12), 48_000);
    assert_eq!(&child(mdia, b"hdlr")[8..12], b"soun");
    let tkhd = child(traks[1], b"tkhd");
    assert_eq!(u16_at(tkhd, 36), 0x0100, "volume");
    let minf = child(mdia, b"minf");
    assert_eq!(names(&boxes(minf)), ["smhd", "dinf", "stbl"]);
    let stsd = child(child(minf, b"stbl"), b"stsd");
    let opus = child(&stsd[8..], b"Opus");
    assert_eq!(u16_at(opus, 16), 2, "channelcount");
    assert_eq!(u16_at(opus, 18), 16, "samplesize");
    assert_eq!(u32_at(opus, 24), 48_000 << 16);
    let dops = child(&opus[28..], b"dOps");
    assert_eq!(dops, [0, 2, 0, 0, 0, 0, 0xbb, 0x80, 0, 0, 0]);

    let mvex = child(moov, b"mvex");
    let trex: Vec<u32> = boxes(mvex)
        .iter()
        .map(|(k, b)| {
            assert_eq!(k, b"trex");
            assert_eq!(b.len(), 24);
            assert_eq!(u32_at(b, 8), 1, "default_sample_description_index");
            u32_at(b, 4)
        })
        .collect();
    assert_eq!(trex, [1, 2]);
}

#[test]
fn init_segment_rejects_bad_tracks() {
    assert_eq!(init_segment(&[]), Err(Fmp4Error::NoTracks));
    let dup = [Track::opus(1, 2), Track::opus(1, 1)];
    assert_eq!(init_segment(&dup), Err(Fmp4Error::TrackId(1)));
    assert_eq!(
        init_segment(&[Track::opus(0, 2)]),
        Err(Fmp4Error::TrackId(0))
    );
    assert_eq!(
        init_segment(&[Track::opus(1, 6)]),
        Err(Fmp4Error::OpusChannels(6))
    );
    let mut t = Track::opus(1, 1);
    t.timescale = 0;
    assert_eq!(init_segment(&[t]), Err(Fmp4Error::Timescale));
}

#[test]
fn codec_strings() {
    let t = tracks();
    assert_eq!(t[0].codec_string(), "avc1.42c01f");
    assert_eq!(t[1].codec_string(), "opus");
}

fn sample(bytes: &'static [u8], duration: u32, keyframe: bool, cto: i32) -> Sample {
    Sample {
        duration,
        data: Bytes::from_static(bytes),
        keyframe,
        composition_offset: cto,
    }
}

#[test]
fn fragment_structure_and_data_offsets() {
    let video = [
        sample(b"IDR-PICTURE", 3000, true, 0),
        sample(b"P1", 3000, false, 6000),
        sample(b"P2", 3003, false, -3000),
    ];
    let audio = [
        sample(b"opus-a", 960, true, 0),
        sample(b"opus-b", 960, true, 0),
    ];
    let bytes = fragment(
        7,
        &[
            TrackFragment {
                track_id: 1,
                base_media_decode_time: 90_000 * 3600 * 24 * 30, // > 2^32
                samples: &video,
            },
            TrackFragment {
                track_id: 2,
                base_media_decode_time: 48_000,
                samples: &audio,
            },
        ],
    )
    .unwrap();
    let top = boxes(&bytes);
    assert_eq!(names(&top), ["moof", "mdat"]);
    let moof = top[0].1;
    let moof_size = moof.len() + 8;
    assert_eq!(names(&boxes(moof)), ["mfhd", "traf", "traf"]);
    assert_eq!(u32_at(child(moof, b"mfhd"), 4), 7);
    assert_eq!(top[1].1, b"IDR-PICTUREP1P2opus-aopus-b");

    let trafs: Vec<&[u8]> = boxes(moof).into_iter().skip(1).map(|(_, b)| b).collect();
    let mut expected_data: Vec<&[u8]> = vec![b"IDR-PICTUREP1P2", b"opus-aopus-b"];
    for (n, traf) in trafs.iter().enumerate() {
        assert_eq!(names(&boxes(traf)), ["tfhd", "tfdt", "trun"]);
        let tfhd = child(traf, b"tfhd");
        assert_eq!(u32_at(tfhd, 0), 0x02_0000, "default-base-is-moof");
        assert_eq!(u32_at(tfhd, 4), n as u32 + 1);
        let tfdt = child(traf, b"tfdt");
        assert_eq!(tfdt[0], 1, "64-bit decode time");
        let base = u64::from_be_bytes(tfdt[4..12].try_into().unwrap());
        assert_eq!(base, [90_000 * 3600 * 24 * 30, 48_000][n]);

        let trun = child(traf, b"trun");
        assert_eq!(u32_at(trun, 0), 0x0100_0f01, "version 1, all fields");
        let count = u32_at(trun, 4) as usize;
        let data_offset = u32_at(trun, 8) as usize;
        let total: usize = (0..count)
            .map(|i| u32_at(trun, 12 + 16 * i + 4) as usize)
            .sum();
        assert_eq!(
            &bytes[data_offset..data_offset + total],
            expected_data.remove(0),
            "data offset of track {n} points at its samples"
        );
        assert!(data_offset >= moof_size + 8);
    }

    let trun = child(trafs[0], b"trun");
    let entry =
        |i: usize| -> [u32; 4] { std::array::from_fn(|f| u32_at(trun, 12 + 16 * i + 4 * f)) };
    assert_eq!(entry(0), [3000, 11, 0x0200_0000, 0]);
    assert_eq!(entry(1), [3000, 2, 0x0101_0000, 6000]);
    assert_eq!(entry(2), [3003, 2, 0x0101_0000, (-3000i32) as u32]);
    let trun = child(trafs[1], b"trun");
    assert_eq!(u32_at(trun, 4), 2);
    assert_eq!(u32_at(trun, 12 + 8), 0x0200_0000, "audio samples are sync");
}

#[test]
fn fragment_with_no_samples_is_valid() {
    let bytes = fragment(
        1,
        &[TrackFragment {
            track_id: 1,
            base_media_decode_time: 0,
            samples: &[],
        }],
    )
    .unwrap();
    let top = boxes(&bytes);
    assert_eq!(names(&top), ["moof", "mdat"]);
    assert!(top[1].1.is_empty());
}

#[test]
fn fragment_rejects_bad_input() {
    assert_eq!(fragment(1, &[]), Err(Fmp4Error::NoTracks));
    assert_eq!(
        fragment(
            1,
            &[TrackFragment {
                track_id: 0,
                base_media_decode_time: 0,
                samples: &[]
            }]
        ),
        Err(Fmp4Error::TrackId(0))
    );
}

#[test]
fn samples_from_depacketized_units() {
    let au = AccessUnit {
        timestamp: 0,
        nalus: vec![
            Bytes::from_static(&[0x09, 0xf0]),
            Bytes::from_static(&SPS_720P),
            Bytes::from_static(&[0x65, 1, 2]),
        ],
        keyframe: true,
    };
    let s = Sample::from_access_unit(&au, 3000);
    let mut want = vec![0, 0, 0, 13];
    want.extend_from_slice(&SPS_720P);
    want.extend_from_slice(&[0, 0, 0, 3, 0x65, 1, 2]);
    assert_eq!(&s.data[..], want, "AUD dropped, lengths prefixed");
    assert!(s.keyframe);
    assert_eq!(s.duration, 3000);

    let packet = OpusPacket {
        timestamp: 0,
        duration: 960,
        data: Bytes::from_static(&[0xfc, 1]),
        discontinuity: false,
    };
    let s = Sample::from_opus(&packet);
    assert_eq!(
        (s.duration, s.keyframe, &s.data[..]),
        (960, true, &[0xfc, 1][..])
    );
}

#[test]
fn segment_type_box() {
    let styp = segment_type();
    let top = boxes(&styp);
    assert_eq!(names(&top), ["styp"]);
    assert_eq!(top[0].1, b"cmfs\0\0\0\0cmfsmsdhmsix");
}

/// The `mp4a` sample entry of AAC-LC, 44.1 kHz, stereo (FFmpeg's and OBS's default
/// RTMP audio), byte for byte.
#[test]
fn golden_mp4a_esds() {
    let asc = crate::aac::AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
    let init = init_segment(&[Track::aac(1, asc).unwrap()]).unwrap();
    let at = init.windows(4).position(|w| w == b"mp4a").unwrap() - 4;
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 75, b'm', b'p', b'4', b'a',
        0, 0, 0, 0, 0, 0, // reserved
        0, 1, // data_reference_index
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0, 2, // channelcount
        0, 16, // samplesize
        0, 0, 0, 0, // pre_defined, reserved
        0xac, 0x44, 0, 0, // samplerate 44100.0
        0, 0, 0, 39, b'e', b's', b'd', b's', 0, 0, 0, 0,
        0x03, 25, // ES_Descriptor
        0, 0, 0, // ES_ID, flags
        0x04, 17, // DecoderConfigDescriptor
        0x40, 0x15, // MPEG-4 audio, audio stream
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // bufferSizeDB, maxBitrate, avgBitrate
        0x05, 2, 0x12, 0x10, // DecoderSpecificInfo: the AudioSpecificConfig
        0x06, 1, 0x02, // SLConfigDescriptor: predefined MP4
    ];
    assert_eq!(&init[at..at + expected.len()], expected);
}

#[test]
fn init_segment_with_aac_audio() {
    let record = AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_720P, &PPS).unwrap();
    // HE-AAC v1: 24 kHz core, 48 kHz output, mono.
    let mut asc = crate::aac::AudioSpecificConfig::lc(24_000, 1).unwrap();
    asc.extension = Some(crate::aac::SbrExtension {
        object_type: crate::aac::AOT_SBR,
        sampling_frequency: 48_000,
    });
    let audio = Track::aac(2, asc.clone()).unwrap();
    assert_eq!(audio.timescale, 48_000, "output (SBR) rate");
    assert_eq!(audio.codec_string(), "mp4a.40.5");
    let init = init_segment(&[Track::avc(1, record).unwrap(), audio]).unwrap();
    let moov = child(&init, b"moov");
    let trak = boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .nth(1)
        .unwrap()
        .1;
    let mdia = child(trak, b"mdia");
    assert_eq!(u32_at(child(mdia, b"mdhd"), 12), 48_000);
    assert_eq!(&child(mdia, b"hdlr")[8..12], b"soun");
    let minf = child(mdia, b"minf");
    assert_eq!(names(&boxes(minf)), ["smhd", "dinf", "stbl"]);
    let stsd = child(child(minf, b"stbl"), b"stsd");
    let mp4a = child(&stsd[8..], b"mp4a");
    assert_eq!(u16_at(mp4a, 16), 1, "channelcount");
    assert_eq!(u32_at(mp4a, 24), 48_000 << 16);
    let esds = child(&mp4a[28..], b"esds");
    let asc_bytes = asc.to_bytes().unwrap();
    assert!(
        esds.ends_with(
            &[
                &[0x05, asc_bytes.len() as u8][..],
                &asc_bytes,
                &[0x06, 1, 2]
            ]
            .concat()
        ),
        "{esds:02x?}"
    );
}

#[test]
fn aac_track_rejects_an_unwritable_config() {
    let mut asc = crate::aac::AudioSpecificConfig::lc(44_100, 2).unwrap();
    asc.object_type = crate::aac::AOT_SBR; // SBR without its extension
    assert!(matches!(Track::aac(2, asc), Err(Fmp4Error::Aac(_))));
}

#[test]
fn a_still_is_the_video_track_alone_and_one_keyframe() {
    let video = tracks().remove(0);
    let picture = Bytes::from_static(&[0, 0, 0, 3, 0x65, 0x88, 0x84]);
    let still = still(&video, picture.clone()).unwrap();
    let top = boxes(&still);
    assert_eq!(names(&top), ["ftyp", "moov", "moof", "mdat"]);
    let info = read::tracks(&still).unwrap();
    assert_eq!(info.len(), 1, "video only: {info:?}");
    let runs = read::track_runs(&still[top[0].1.len() + 8 + top[1].1.len() + 8..]).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].sync, [true], "one keyframe");
    assert_eq!(top[3].1, &picture[..], "the picture is the sample");
}
