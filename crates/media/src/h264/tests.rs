use bytes::Bytes;

use super::bits::writer::BitWriter;
use super::*;

/// x264 Baseline 1280x720 level 3.1 (with VUI).
const SPS_720P: [u8; 13] = [
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
];
/// High profile 1920x1080 level 4.0: 1088 coded rows cropped by 8. Contains two
/// emulation-prevention bytes.
const SPS_1080P: [u8; 26] = [
    0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00,
    0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x38, 0x80];

/// Builds an SPS NAL unit from its RBSP fields with the test bit writer.
fn sps_nal(build: impl FnOnce(&mut BitWriter)) -> Vec<u8> {
    let mut w = BitWriter::default();
    build(&mut w);
    let rbsp = w.trailing();
    let mut nal = vec![0x67];
    nal.extend(add_emulation_prevention(&rbsp));
    nal
}

/// A constrained-baseline 640x480 SPS like Chromium's OpenH264 sends.
fn sps_640x480() -> Vec<u8> {
    sps_nal(|w| {
        w.bits(8, 66).bits(8, 0xe0).bits(8, 31); // profile, constraint_set0-2, level 3.1
        w.ue(0); // sps id
        w.ue(12); // log2_max_frame_num_minus4
        w.ue(2); // pic_order_cnt_type
        w.ue(1); // max_num_ref_frames
        w.bit(false); // gaps
        w.ue(39).ue(29); // 40 x 30 macroblocks
        w.bit(true).bit(true); // frame_mbs_only, direct_8x8
        w.bit(false).bit(false); // no cropping, no VUI
    })
}

// ---------------------------------------------------------------- SPS / PPS

#[test]
fn sps_x264_baseline_720p() {
    let sps = Sps::parse(&SPS_720P).unwrap();
    assert_eq!(sps.profile_idc, 66);
    assert_eq!(sps.constraint_flags, 0xc0);
    assert_eq!(sps.level_idc, 31);
    assert_eq!(sps.id, 0);
    assert_eq!(sps.chroma_format_idc, 1);
    assert_eq!(sps.log2_max_frame_num, 4);
    assert_eq!(sps.pic_order_cnt_type, 2);
    assert_eq!(sps.max_num_ref_frames, 1);
    assert_eq!(
        (sps.pic_width_in_mbs, sps.pic_height_in_map_units),
        (80, 45)
    );
    assert!(sps.frame_mbs_only);
    assert_eq!(sps.frame_cropping, None);
    assert!(sps.vui_present);
    assert_eq!((sps.width, sps.height), (1280, 720));
    assert_eq!(sps.codec_string(), "avc1.42c01f");
}

#[test]
fn sps_high_1080p_is_cropped_from_1088() {
    // Verified by hand: chroma 4:2:0, 8-bit, poc type 0, 4 ref frames,
    // 120 x 68 macroblocks, crop bottom 4 units of 2 rows.
    let sps = Sps::parse(&SPS_1080P).unwrap();
    assert_eq!(sps.profile_idc, 100);
    assert_eq!(sps.constraint_flags, 0);
    assert_eq!(sps.level_idc, 40);
    assert_eq!(sps.chroma_format_idc, 1);
    assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (8, 8));
    assert_eq!(sps.pic_order_cnt_type, 0);
    assert_eq!(sps.max_num_ref_frames, 4);
    assert_eq!(
        (sps.pic_width_in_mbs, sps.pic_height_in_map_units),
        (120, 68)
    );
    assert_eq!(
        sps.frame_cropping,
        Some(FrameCropping {
            left: 0,
            right: 0,
            top: 0,
            bottom: 4
        })
    );
    assert!(sps.vui_present);
    assert_eq!((sps.width, sps.height), (1920, 1080));
    assert_eq!(sps.codec_string(), "avc1.640028");
}

#[test]
fn sps_constructed_constrained_baseline_640x480() {
    let nal = sps_640x480();
    let sps = Sps::parse(&nal).unwrap();
    assert_eq!((sps.width, sps.height), (640, 480));
    assert_eq!(sps.profile_idc, 66);
    assert_eq!(sps.log2_max_frame_num, 16);
    assert!(!sps.vui_present);
    assert_eq!(sps.codec_string(), "avc1.42e01f");
}

#[test]
fn sps_interlaced_crop_units_are_doubled() {
    // Main profile 1920x1080i: 34 map units of 32 rows, bottom crop 2 units x 4 rows.
    let nal = sps_nal(|w| {
        w.bits(8, 77).bits(8, 0x40).bits(8, 40);
        w.ue(1).ue(0).ue(0).ue(2); // id 1, frame_num, poc type 0, lsb
        w.ue(4).bit(false);
        w.ue(119).ue(33);
        w.bit(false).bit(true); // frame_mbs_only = 0, mb_adaptive_frame_field
        w.bit(true); // direct_8x8
        w.bit(true).ue(0).ue(0).ue(0).ue(2); // cropping
        w.bit(false);
    });
    let sps = Sps::parse(&nal).unwrap();
    assert_eq!(sps.id, 1);
    assert!(!sps.frame_mbs_only);
    assert_eq!((sps.width, sps.height), (1920, 1080));
}

#[test]
fn sps_high_444_with_scaling_lists_and_poc_type_1() {
    let nal = sps_nal(|w| {
        w.bits(8, 244).bits(8, 0).bits(8, 51);
        w.ue(0);
        w.ue(3).bit(false); // 4:4:4, separate_colour_plane = 0
        w.ue(2).ue(2); // 10-bit
        w.bit(false); // qpprime
        w.bit(true); // scaling matrix present: 12 lists for 4:4:4
        w.bit(true); // list 0 present (4x4, 16 entries)
        for _ in 0..16 {
            w.se(1);
        }
        w.bit(true); // list 1 present, ends early with next_scale 0
        w.se(-8);
        for _ in 2..6 {
            w.bit(false);
        }
        w.bit(true); // list 6 (8x8, 64 entries), never reaching scale 0
        for i in 0..64 {
            w.se(if i % 2 == 0 { 1 } else { -1 });
        }
        for _ in 7..12 {
            w.bit(false);
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // poc type 1
        w.bit(false).se(-2).se(3).ue(2).se(5).se(-7);
        w.ue(2).bit(false);
        w.ue(19).ue(14); // 320 x 240
        w.bit(true).bit(true);
        w.bit(true).ue(2).ue(3).ue(1).ue(0); // crop 5 px wide, 1 row high
        w.bit(true);
    });
    let sps = Sps::parse(&nal).unwrap();
    assert_eq!(sps.chroma_format_idc, 3);
    assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
    assert_eq!(sps.pic_order_cnt_type, 1);
    // 4:4:4 crop units are 1 x 1.
    assert_eq!((sps.width, sps.height), (315, 239));
    assert_eq!(sps.codec_string(), "avc1.f40033");
}

#[test]
fn sps_rejects_bad_input() {
    assert_eq!(Sps::parse(&[]), Err(H264Error::Empty));
    assert_eq!(
        Sps::parse(&PPS),
        Err(H264Error::UnexpectedNalType {
            expected: NAL_SPS,
            found: NAL_PPS
        })
    );
    // The last parsed field (vui_parameters_present_flag) is in byte 8.
    for len in 1..=8 {
        assert!(Sps::parse(&SPS_720P[..len]).is_err(), "truncated to {len}");
    }
    // Crop of the whole width.
    let nal = sps_nal(|w| {
        w.bits(8, 66).bits(8, 0).bits(8, 30);
        w.ue(0).ue(0).ue(2).ue(1).bit(false);
        w.ue(0).ue(0); // 16 x 16
        w.bit(true).bit(true);
        w.bit(true).ue(4).ue(4).ue(0).ue(0);
        w.bit(false);
    });
    assert_eq!(Sps::parse(&nal), Err(H264Error::BadCropping));
    // sps id out of range.
    let nal = sps_nal(|w| {
        w.bits(24, 0x42_00_1e).ue(32);
    });
    assert!(matches!(
        Sps::parse(&nal),
        Err(H264Error::OutOfRange {
            field: "seq_parameter_set_id",
            value: 32
        })
    ));
}

#[test]
fn pps_ids() {
    assert_eq!(Pps::parse(&PPS).unwrap(), Pps { id: 0, sps_id: 0 });
    let mut w = BitWriter::default();
    w.ue(200).ue(31).bit(true);
    let mut nal = vec![0x68];
    nal.extend(w.trailing());
    assert_eq!(
        Pps::parse(&nal).unwrap(),
        Pps {
            id: 200,
            sps_id: 31
        }
    );
    assert!(Pps::parse(&SPS_720P).is_err());
    assert!(Pps::parse(&[0x68]).is_err());
}

// ---------------------------------------------------------------- avcC

#[test]
fn avcc_record_for_baseline_has_no_extension() {
    let record = AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_720P, &PPS).unwrap();
    let bytes = record.to_bytes().unwrap();
    let mut want = vec![1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 13];
    want.extend_from_slice(&SPS_720P);
    want.extend_from_slice(&[1, 0, 4]);
    want.extend_from_slice(&PPS);
    assert_eq!(&bytes[..], want);
    assert_eq!(record.codec_string(), "avc1.42c01f");
    assert_eq!(record.parse_sps().unwrap().width, 1280);
}

#[test]
fn avcc_record_for_high_profile_round_trips_with_extension() {
    let record = AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_1080P, &PPS).unwrap();
    let ext = record.extension.as_ref().unwrap();
    assert_eq!(ext.chroma_format, 1);
    let bytes = record.to_bytes().unwrap();
    assert_eq!(&bytes[bytes.len() - 4..], [0xfd, 0xf8, 0xf8, 0]);
    assert_eq!(
        AvcDecoderConfigurationRecord::parse(&bytes).unwrap(),
        record
    );
    // Many encoders omit the extension; that parses too.
    let short = &bytes[..bytes.len() - 4];
    let parsed = AvcDecoderConfigurationRecord::parse(short).unwrap();
    assert_eq!(parsed.extension, None);
    assert_eq!(parsed.sps, record.sps);
}

#[test]
fn avcc_record_rejects_bad_input() {
    assert!(AvcDecoderConfigurationRecord::parse(&[]).is_err());
    assert_eq!(
        AvcDecoderConfigurationRecord::parse(&[0, 0x42, 0, 0x1f, 0xff, 0xe0, 0]),
        Err(H264Error::ConfigVersion(0))
    );
    assert_eq!(
        AvcDecoderConfigurationRecord::parse(&[1, 0x42, 0, 0x1f, 0xfe, 0xe0, 0]),
        Err(H264Error::LengthSize(3))
    );
    // One SPS announced, none present.
    assert!(matches!(
        AvcDecoderConfigurationRecord::parse(&[1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 9, 0x67]),
        Err(H264Error::Truncated { .. })
    ));
    // A PPS in the SPS list.
    assert!(matches!(
        AvcDecoderConfigurationRecord::parse(&[1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 1, 0x68, 0]),
        Err(H264Error::UnexpectedNalType { .. })
    ));
    assert!(AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_720P, &SPS_720P).is_err());
    let mut record = AvcDecoderConfigurationRecord::from_parameter_sets(&SPS_720P, &PPS).unwrap();
    record.sps = vec![Bytes::from_static(&SPS_720P); 32];
    assert_eq!(record.to_bytes(), Err(H264Error::TooManyParameterSets(32)));
}

#[test]
fn keyframe_detection() {
    assert!(is_idr(&[0x65, 0x88]));
    assert!(is_idr(&[0x25, 0x88])); // NRI does not matter
    assert!(!is_idr(&[0x41, 0x9a]));
    assert!(is_keyframe(&[&SPS_720P[..], &PPS, &[0x65, 0x88]]));
    assert!(!is_keyframe(&[&[0x41u8, 0x9a][..]]));
    assert!(!is_keyframe::<&[u8]>(&[]));
}

// ---------------------------------------------------------------- depacketizer

const TS: u32 = 3000;
const P_SLICE: [u8; 4] = [0x41, 0x9a, 0x02, 0x03]; // first_mb_in_slice = 0

fn stap_a(nalus: &[&[u8]]) -> Bytes {
    let mut out = vec![0x78];
    for nal in nalus {
        out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out.into()
}

fn fu_a(header: u8, start: bool, end: bool, data: &[u8]) -> Bytes {
    let mut out = vec![
        (header & 0xe0) | 28,
        (u8::from(start) << 7) | (u8::from(end) << 6) | (header & 0x1f),
    ];
    out.extend_from_slice(data);
    out.into()
}

/// IDR slice data, split into three FU-A fragments.
const IDR: [u8; 7] = [0x65, 0xb8, 0x00, 0x04, 0x00, 0x00, 0x09];

fn idr_packets() -> Vec<Bytes> {
    vec![
        stap_a(&[&SPS_720P, &PPS]),
        fu_a(IDR[0], true, false, &IDR[1..3]),
        fu_a(IDR[0], false, false, &IDR[3..5]),
        fu_a(IDR[0], false, true, &IDR[5..]),
    ]
}

/// Feeds one access unit, marker on its last packet; returns the next seq.
fn feed(d: &mut H264Depacketizer, seq: u16, ts: u32, packets: &[Bytes]) -> u16 {
    let mut seq = seq;
    for (i, p) in packets.iter().enumerate() {
        d.push(p.clone(), seq, ts, i + 1 == packets.len()).unwrap();
        seq = seq.wrapping_add(1);
    }
    seq
}

fn drain(d: &mut H264Depacketizer) -> Vec<AccessUnit> {
    std::iter::from_fn(|| d.pop()).collect()
}

fn idr_nalus() -> Vec<Bytes> {
    vec![
        Bytes::from_static(&SPS_720P),
        Bytes::from_static(&PPS),
        Bytes::from_static(&IDR),
    ]
}

#[test]
fn stap_a_and_fu_a_make_a_keyframe() {
    let mut d = H264Depacketizer::new();
    assert!(d.waiting_for_keyframe());
    assert!(d.take_keyframe_request(), "asks for a keyframe at start");
    assert!(!d.take_keyframe_request(), "only once");
    feed(&mut d, 10, TS, &idr_packets());
    let aus = drain(&mut d);
    assert_eq!(
        aus,
        [AccessUnit {
            timestamp: u64::from(TS),
            nalus: idr_nalus(),
            keyframe: true
        }]
    );
    assert!(!d.waiting_for_keyframe());
    let stats = d.stats();
    assert_eq!(
        (stats.packets, stats.access_units, stats.lost_packets),
        (4, 1, 0)
    );
}

#[test]
fn single_nal_packets_and_timestamp_change_without_marker() {
    let mut d = H264Depacketizer::new();
    feed(&mut d, 0, TS, &idr_packets());
    // Two slices of one picture, no marker; the next picture's first packet
    // completes it.
    let slice2: &'static [u8] = &[0x41, 0x20, 0x01];
    d.push(Bytes::from_static(&P_SLICE), 4, TS + 3000, false)
        .unwrap();
    d.push(Bytes::from_static(slice2), 5, TS + 3000, false)
        .unwrap();
    assert_eq!(drain(&mut d).len(), 1, "only the IDR so far");
    d.push(Bytes::from_static(&P_SLICE), 6, TS + 6000, true)
        .unwrap();
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 2);
    assert_eq!(aus[0].timestamp, u64::from(TS) + 3000);
    assert_eq!(aus[0].nalus, [&P_SLICE[..], slice2]);
    assert!(!aus[0].keyframe);
    assert_eq!(aus[1].timestamp, u64::from(TS) + 6000);
}

#[test]
fn drops_pictures_until_the_first_idr() {
    let mut d = H264Depacketizer::new();
    d.push(Bytes::from_static(&P_SLICE), 0, 0, true).unwrap();
    d.push(Bytes::from_static(&P_SLICE), 1, 3000, true).unwrap();
    assert!(drain(&mut d).is_empty());
    feed(&mut d, 2, 6000, &idr_packets());
    d.push(Bytes::from_static(&P_SLICE), 6, 9000, true).unwrap();
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 2);
    assert!(aus[0].keyframe);
    assert_eq!(d.stats().dropped_access_units, 2);
}

#[test]
fn an_idr_without_parameter_sets_cannot_start_the_stream() {
    let mut d = H264Depacketizer::new();
    // The STAP-A with SPS and PPS was lost before the first packet we saw.
    let packets = idr_packets();
    feed(&mut d, 1, 0, &packets[1..]);
    assert!(drain(&mut d).is_empty());
    assert!(d.waiting_for_keyframe());
    // Once they have been seen, a later IDR that lost them is usable: the
    // decoder still has them.
    let seq = feed(&mut d, 4, 3000, &packets);
    feed(&mut d, seq + 1, 6000, &packets[1..]);
    d.flush().unwrap();
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 2);
    assert_eq!(aus[1].nalus, [Bytes::from_static(&IDR)]);
}

#[test]
fn fu_a_missing_middle_drops_until_next_idr() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        reorder_window: 0,
        ..Default::default()
    });
    let mut seq = feed(&mut d, 100, TS, &idr_packets());
    assert_eq!(drain(&mut d).len(), 1);
    d.take_keyframe_request();

    // P frame as FU-A: start, (middle lost), end.
    let p = [0x41, 0x9a, 1, 2, 3, 4];
    d.push(fu_a(p[0], true, false, &p[1..3]), seq, TS + 3000, false)
        .unwrap();
    d.push(fu_a(p[0], false, true, &p[5..]), seq + 2, TS + 3000, true)
        .unwrap();
    seq += 3;
    assert!(drain(&mut d).is_empty());
    assert!(d.waiting_for_keyframe());
    assert!(d.take_keyframe_request());
    assert_eq!(d.stats().lost_packets, 1);

    // Following P frames are dropped: they reference the damaged one.
    d.push(Bytes::from_static(&P_SLICE), seq, TS + 6000, true)
        .unwrap();
    seq += 1;
    assert!(drain(&mut d).is_empty());
    assert!(!d.take_keyframe_request(), "one request per loss");

    // The next IDR resumes output.
    seq = feed(&mut d, seq, TS + 9000, &idr_packets());
    d.push(Bytes::from_static(&P_SLICE), seq, TS + 12000, true)
        .unwrap();
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 2);
    assert!(aus[0].keyframe);
    assert_eq!(aus[0].nalus, idr_nalus());
    assert!(!d.waiting_for_keyframe());
}

#[test]
fn loss_of_a_whole_picture_keeps_a_cleanly_starting_idr() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        reorder_window: 0,
        ..Default::default()
    });
    feed(&mut d, 0, 0, &idr_packets());
    // seq 4 (a whole P frame) is lost; the IDR at seq 5 starts with a STAP-A.
    feed(&mut d, 5, 6000, &idr_packets());
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 2);
    assert!(aus[1].keyframe);
}

#[test]
fn loss_of_a_first_fragment_discards_the_rest_of_its_picture() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        reorder_window: 0,
        ..Default::default()
    });
    let seq = feed(&mut d, 0, 0, &idr_packets());
    drain(&mut d);
    // A P picture in three fragments; the start (seq) is lost. The middle and
    // end fragments must be discarded quietly, not reported as protocol errors.
    let p = [0x41, 0x9a, 1, 2, 3, 4];
    d.push(fu_a(p[0], false, false, &p[3..5]), seq + 1, 3000, false)
        .unwrap();
    d.push(fu_a(p[0], false, true, &p[5..]), seq + 2, 3000, true)
        .unwrap();
    assert!(drain(&mut d).is_empty());
    assert!(d.waiting_for_keyframe());
    assert_eq!(d.stats().lost_packets, 1);
    assert_eq!(d.stats().malformed_packets, 0);
    // A complete IDR afterwards is accepted.
    feed(&mut d, seq + 3, 6000, &idr_packets());
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 1);
    assert_eq!(aus[0].timestamp, 6000);
}

#[test]
fn reordered_packets_within_the_window_are_not_loss() {
    let mut d = H264Depacketizer::new();
    let packets = idr_packets();
    // Arrival order 0, 2, 1, 3 around the sequence wrap.
    let order = [0usize, 2, 1, 3];
    for &i in &order {
        let seq = 65534u16.wrapping_add(i as u16);
        d.push(packets[i].clone(), seq, TS, i == 3).unwrap();
    }
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 1);
    assert_eq!(aus[0].nalus, idr_nalus());
    assert_eq!(d.stats().lost_packets, 0);
    // A duplicate of an already released packet is dropped.
    d.push(packets[3].clone(), 1, TS, true).unwrap();
    assert_eq!(d.stats().late_packets, 1);
    assert!(drain(&mut d).is_empty());
}

#[test]
fn sequence_wrap_at_65535_is_continuous() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        reorder_window: 0,
        ..Default::default()
    });
    let seq = feed(&mut d, 65533, 0, &idr_packets());
    assert_eq!(seq, 1);
    for n in 1..5u16 {
        d.push(Bytes::from_static(&P_SLICE), n, u32::from(n) * 3000, true)
            .unwrap();
    }
    assert_eq!(drain(&mut d).len(), 5);
    assert_eq!(d.stats().lost_packets, 0);
}

#[test]
fn timestamps_unwrap_at_2_pow_32() {
    let mut d = H264Depacketizer::new();
    let start = u32::MAX - 2999;
    let seq = feed(&mut d, 0, start, &idr_packets());
    for n in 1..4u16 {
        let ts = start.wrapping_add(u32::from(n) * 3000);
        d.push(Bytes::from_static(&P_SLICE), seq + n - 1, ts, true)
            .unwrap();
    }
    let ts: Vec<u64> = drain(&mut d).iter().map(|au| au.timestamp).collect();
    let base = u64::from(start);
    assert_eq!(ts, [base, base + 3000, base + 6000, base + 9000]);
    assert!(ts[1] >= 1 << 32);
}

#[test]
fn malformed_stap_a_is_an_error_and_drops_the_picture() {
    let mut d = H264Depacketizer::new();
    let seq = feed(&mut d, 0, 0, &idr_packets());
    drain(&mut d);
    d.take_keyframe_request();
    let bad = Bytes::from_static(&[0x78, 0x00, 0x05, 0x41, 0x9a]);
    assert_eq!(
        d.push(bad, seq, 3000, false),
        Err(DepacketizeError::MalformedStapA(
            "unit runs past the packet"
        ))
    );
    // The rest of that picture is discarded.
    d.push(Bytes::from_static(&P_SLICE), seq + 1, 3000, true)
        .unwrap();
    assert!(drain(&mut d).is_empty());
    assert!(d.take_keyframe_request());
    assert_eq!(d.stats().malformed_packets, 1);

    let zero = Bytes::from_static(&[0x78, 0x00, 0x00]);
    assert!(matches!(
        d.push(zero, seq + 2, 6000, true),
        Err(DepacketizeError::MalformedStapA(_))
    ));
    let empty = Bytes::from_static(&[0x78]);
    assert!(d.push(empty, seq + 3, 9000, true).is_err());
}

#[test]
fn fu_a_protocol_errors() {
    let mut d = H264Depacketizer::new();
    let seq = feed(&mut d, 0, 0, &idr_packets());
    drain(&mut d);
    // Middle fragment with no start, without any sequence gap.
    assert_eq!(
        d.push(fu_a(0x41, false, true, &[1]), seq, 3000, true),
        Err(DepacketizeError::FuAWithoutStart)
    );
    assert!(d.waiting_for_keyframe());
    let seq = feed(&mut d, seq + 1, 6000, &idr_packets());
    drain(&mut d);
    // A new start before the end.
    d.push(fu_a(0x41, true, false, &[0x9a]), seq, 9000, false)
        .unwrap();
    assert_eq!(
        d.push(fu_a(0x41, true, false, &[0x9a]), seq + 1, 9000, false),
        Err(DepacketizeError::FuAInterrupted)
    );
    assert_eq!(
        d.push(Bytes::from_static(&[0x7c]), seq + 2, 12000, true),
        Err(DepacketizeError::ShortFuA(1))
    );
}

#[test]
fn picture_ending_inside_a_fragment_is_dropped() {
    let mut d = H264Depacketizer::new();
    let seq = feed(&mut d, 0, 0, &idr_packets());
    d.push(fu_a(0x41, true, false, &[0x9a]), seq, 3000, true)
        .unwrap();
    assert_eq!(drain(&mut d).len(), 1);
    assert!(d.waiting_for_keyframe());
}

#[test]
fn unsupported_packet_types_are_ignored() {
    let mut d = H264Depacketizer::new();
    let seq = feed(&mut d, 0, 0, &idr_packets());
    drain(&mut d);
    for (i, ty) in [0u8, 25, 26, 27, 29, 30, 31].into_iter().enumerate() {
        let seq = seq + i as u16;
        assert_eq!(
            d.push(Bytes::from(vec![ty, 1, 2]), seq, 3000, false),
            Err(DepacketizeError::UnsupportedPacketType(ty))
        );
    }
    d.push(Bytes::from_static(&P_SLICE), seq + 7, 3000, true)
        .unwrap();
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 1);
    assert!(!d.waiting_for_keyframe());
}

#[test]
fn empty_padding_packets_keep_the_sequence() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        reorder_window: 0,
        ..Default::default()
    });
    let seq = feed(&mut d, 0, 0, &idr_packets());
    d.push(Bytes::new(), seq, 0, false).unwrap();
    d.push(Bytes::from_static(&P_SLICE), seq + 1, 3000, true)
        .unwrap();
    assert_eq!(drain(&mut d).len(), 2);
    assert_eq!(d.stats().lost_packets, 0);
}

#[test]
fn access_unit_size_is_bounded() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        max_access_unit_size: 100,
        ..Default::default()
    });
    d.push(fu_a(0x65, true, false, &[0xb8; 60]), 0, 0, false)
        .unwrap();
    assert_eq!(
        d.push(fu_a(0x65, false, false, &[0; 60]), 1, 0, false),
        Err(DepacketizeError::AccessUnitTooLarge {
            what: "bytes",
            limit: 100
        })
    );
    // Further fragments of that picture are discarded quietly.
    d.push(fu_a(0x65, false, true, &[0; 10]), 2, 0, true)
        .unwrap();
    assert!(drain(&mut d).is_empty());

    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        max_nalus_per_access_unit: 2,
        ..Default::default()
    });
    let three = stap_a(&[&SPS_720P, &PPS, &IDR]);
    assert!(matches!(
        d.push(three, 0, 0, true),
        Err(DepacketizeError::AccessUnitTooLarge {
            what: "NAL units",
            ..
        })
    ));
}

#[test]
fn a_full_output_queue_is_cleared_not_trimmed() {
    let mut d = H264Depacketizer::with_config(DepacketizerConfig {
        max_queued_access_units: 2,
        ..Default::default()
    });
    let seq = feed(&mut d, 0, 0, &idr_packets());
    d.push(Bytes::from_static(&P_SLICE), seq, 3000, true)
        .unwrap();
    // Nobody popped: the third picture overflows the queue. Keeping the P
    // picture without the IDR it depends on would be worse than dropping both.
    d.push(Bytes::from_static(&P_SLICE), seq + 1, 6000, true)
        .unwrap();
    assert!(drain(&mut d).is_empty());
    assert!(d.take_keyframe_request());
    feed(&mut d, seq + 2, 9000, &idr_packets());
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 1);
    assert!(aus[0].keyframe);
}

#[test]
fn flush_gives_up_on_a_gap() {
    let mut d = H264Depacketizer::new();
    let seq = feed(&mut d, 0, 0, &idr_packets());
    drain(&mut d);
    d.push(Bytes::from_static(&P_SLICE), seq + 1, 6000, true)
        .unwrap();
    assert!(drain(&mut d).is_empty(), "held behind the gap");
    d.flush().unwrap();
    assert!(drain(&mut d).is_empty(), "dropped: its predecessor is lost");
    assert!(d.take_keyframe_request());
    assert_eq!(d.stats().lost_packets, 1);
}

// ---------------------------------------------------------------- packetizer

#[test]
fn packetizer_aggregates_small_units_and_fragments_large_ones() {
    let idr: Vec<u8> = std::iter::once(0x65)
        .chain((0..2000).map(|i| i as u8))
        .collect();
    let nalus: Vec<&[u8]> = vec![&SPS_720P, &PPS, &idr];
    let payloads = H264Packetizer::new(1000)
        .unwrap()
        .packetize(&nalus)
        .unwrap();
    assert_eq!(payloads.len(), 4);
    assert_eq!(payloads[0], stap_a(&[&SPS_720P, &PPS]));
    assert_eq!(payloads[1].len(), 1000);
    assert_eq!(&payloads[1][..2], [0x7c, 0x85]);
    assert_eq!(&payloads[2][..2], [0x7c, 0x05]);
    assert_eq!(&payloads[3][..2], [0x7c, 0x45]);
    let reassembled: Vec<u8> = std::iter::once(0x65)
        .chain(payloads[1..].iter().flat_map(|p| p[2..].to_vec()))
        .collect();
    assert_eq!(reassembled, idr);
}

#[test]
fn packetizer_stap_a_header_takes_max_nri_and_or_of_f() {
    let a = [0x06, 1]; // NRI 0, SEI
    let b = [0xc1, 2]; // F=1, NRI 2
    let payloads = H264Packetizer::new(100)
        .unwrap()
        .packetize(&[&a[..], &b[..]])
        .unwrap();
    assert_eq!(&payloads[0][..], [0xd8, 0, 2, 0x06, 1, 0, 2, 0xc1, 2]);
}

#[test]
fn packetizer_without_aggregation_and_at_exact_sizes() {
    let p = H264Packetizer::new(10).unwrap().with_aggregation(false);
    let fits = [0x41; 10];
    let over = [0x41; 11];
    let out = p.packetize(&[&fits[..], &fits[..]]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(&out[0][..], fits);
    let out = p.packetize(&[&over[..]]).unwrap();
    // 10 bytes after the header, 8 per fragment.
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), 10);
    assert_eq!(out[1].len(), 4);
    // With aggregation, a unit that alone fills the payload is not aggregated.
    let out = H264Packetizer::new(10)
        .unwrap()
        .packetize(&[&fits[..], &[0x41, 1][..]])
        .unwrap();
    assert_eq!(out.len(), 2);
}

#[test]
fn packetizer_rejects_bad_input() {
    assert_eq!(
        H264Packetizer::new(2),
        Err(PacketizeError::PayloadSizeTooSmall(2))
    );
    let p = H264Packetizer::new(1200).unwrap();
    assert_eq!(
        p.packetize(&[&[0x41u8][..], &[][..]]),
        Err(PacketizeError::EmptyNalUnit(1))
    );
    assert_eq!(
        p.packetize(&[&[0x7cu8, 0][..]]),
        Err(PacketizeError::InvalidNalType {
            index: 0,
            nal_type: 28
        })
    );
    assert!(p.packetize::<&[u8]>(&[]).unwrap().is_empty());
}

#[test]
fn packetize_then_depacketize_round_trips() {
    let big: Vec<u8> = std::iter::once(0x65)
        .chain((0..5000).map(|i| (i * 7) as u8))
        .collect();
    let nalus: Vec<Bytes> = vec![
        Bytes::from_static(&[0x09, 0xf0]),
        Bytes::from_static(&SPS_720P),
        Bytes::from_static(&PPS),
        Bytes::from(big),
        Bytes::from_static(&[0x06, 5, 1, 0x80]),
    ];
    let payloads = H264Packetizer::new(1200)
        .unwrap()
        .packetize(&nalus)
        .unwrap();
    let mut d = H264Depacketizer::new();
    feed(&mut d, 0, 0, &payloads);
    let aus = drain(&mut d);
    assert_eq!(aus.len(), 1);
    assert_eq!(aus[0].nalus, nalus);
}

#[test]
fn parameter_sets_and_sample_nalus() {
    let (aud, sps, pps, idr) = (
        &[0x09, 0xf0][..],
        &[0x67, 0x42][..],
        &[0x68, 0xce][..],
        &[0x65, 0x88][..],
    );
    assert_eq!(parameter_sets(&[aud, sps, pps, idr]), Some((sps, pps)));
    assert_eq!(parameter_sets(&[pps, idr, sps]), Some((sps, pps)));
    assert_eq!(parameter_sets(&[sps, idr]), None);
    assert_eq!(parameter_sets(&[]), None);
    let kept: Vec<&[u8]> = [aud, sps, pps, idr, &[][..]]
        .into_iter()
        .filter(|n| is_sample_nal(n))
        .collect();
    assert_eq!(kept, vec![idr, &[][..]]);
}
