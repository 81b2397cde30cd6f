use bytes::Bytes;

use super::*;

#[test]
fn frame_durations_for_every_config() {
    let samples: Vec<u32> = (0u8..32)
        .map(|c| Toc::from_byte(c << 3).frame_samples())
        .collect();
    let silk = [480, 960, 1920, 2880];
    let hybrid = [480, 960];
    let celt = [120, 240, 480, 960];
    let want: Vec<u32> = silk
        .iter()
        .cycle()
        .take(12)
        .chain(hybrid.iter().cycle().take(4))
        .chain(celt.iter().cycle().take(16))
        .copied()
        .collect();
    assert_eq!(samples, want);
}

#[test]
fn modes_and_bandwidths() {
    let toc = |config: u8| Toc::from_byte(config << 3);
    assert_eq!(toc(0).mode(), Mode::Silk);
    assert_eq!(toc(0).bandwidth(), Bandwidth::Narrowband);
    assert_eq!(toc(5).bandwidth(), Bandwidth::Mediumband);
    assert_eq!(toc(11).bandwidth(), Bandwidth::Wideband);
    assert_eq!(toc(12).mode(), Mode::Hybrid);
    assert_eq!(toc(13).bandwidth(), Bandwidth::SuperWideband);
    assert_eq!(toc(15).bandwidth(), Bandwidth::Fullband);
    assert_eq!(toc(16).mode(), Mode::Celt);
    assert_eq!(toc(19).bandwidth(), Bandwidth::Narrowband);
    assert_eq!(toc(22).bandwidth(), Bandwidth::Wideband);
    assert_eq!(toc(26).bandwidth(), Bandwidth::SuperWideband);
    assert_eq!(toc(31).bandwidth(), Bandwidth::Fullband);
    let t = Toc::from_byte(0b0111_1110);
    assert_eq!((t.config, t.stereo, t.code), (15, true, 2));
}

#[test]
fn code_0_one_frame() {
    // libopus 20 ms SILK wideband mono (config 9): TOC 0x48.
    let info = parse_packet(&[0x48, 1, 2, 3]).unwrap();
    assert_eq!((info.frames, info.samples), (1, 960));
    // A TOC alone is a valid (DTX) packet.
    assert_eq!(packet_samples(&[0x48]).unwrap(), 960);
    let mut big = vec![0x48];
    big.resize(1 + 1275, 0);
    assert!(parse_packet(&big).is_ok());
    big.push(0);
    assert_eq!(parse_packet(&big), Err(OpusError::FrameTooLarge(1276)));
}

#[test]
fn code_1_two_equal_frames() {
    // 10 ms CELT (config 30) x 2.
    assert_eq!(packet_samples(&[0xf1, 1, 2, 3, 4]).unwrap(), 960);
    assert_eq!(packet_samples(&[0xf1]).unwrap(), 960);
    assert!(matches!(
        parse_packet(&[0xf1, 1, 2, 3]),
        Err(OpusError::Malformed(_))
    ));
}

#[test]
fn code_2_two_frames_with_explicit_first_length() {
    // 60 ms SILK (config 3) x 2 = 120 ms.
    let info = parse_packet(&[0x1a, 2, 0xaa, 0xbb, 0xcc]).unwrap();
    assert_eq!((info.frames, info.samples), (2, 5760));
    // Two-byte length: 252 + 4 * 1 = 256.
    let mut p = vec![0x1a, 252, 1];
    p.resize(3 + 256 + 10, 7);
    assert!(parse_packet(&p).is_ok());
    p.truncate(3 + 255);
    assert!(matches!(parse_packet(&p), Err(OpusError::Malformed(_))));
    assert!(parse_packet(&[0x1a]).is_err());
    assert!(parse_packet(&[0x1a, 252]).is_err());
    // First frame length 0 is allowed (DTX frame).
    assert!(parse_packet(&[0x1a, 0, 1]).is_ok());
}

#[test]
fn code_3_cbr_vbr_and_padding() {
    // 2.5 ms CELT NB (config 16) x 48 = 120 ms.
    let mut p = vec![0x83, 48];
    p.resize(2 + 48, 1);
    let info = parse_packet(&p).unwrap();
    assert_eq!((info.frames, info.samples), (48, 5760));
    // 49 frames would be 122.5 ms.
    assert_eq!(parse_packet(&[0x83, 49]), Err(OpusError::TooLong(5880)));
    // 20 ms x 7 = 140 ms.
    assert_eq!(parse_packet(&[0xfb, 7]), Err(OpusError::TooLong(6720)));
    assert!(matches!(
        parse_packet(&[0xfb, 0]),
        Err(OpusError::Malformed(_))
    ));
    assert!(parse_packet(&[0xfb]).is_err());

    // CBR, 3 frames, 7 bytes: not a multiple.
    assert!(parse_packet(&[0xfb, 3, 1, 2, 3, 4, 5, 6, 7]).is_err());

    // VBR with padding: 3 frames of 20 ms; lengths 2, 1, rest; padding 256 + 2.
    let mut p = vec![0xfb, 0xc3, 255, 4, 2, 1];
    p.extend_from_slice(&[0xa, 0xb, 0xc, 0xd, 0xe]); // frames: 2 + 1 + 2
    p.extend(std::iter::repeat_n(0, 254 + 4));
    let info = parse_packet(&p).unwrap();
    assert_eq!((info.frames, info.samples), (3, 2880));
    // One padding byte short.
    p.pop();
    p.pop();
    p.pop();
    assert!(parse_packet(&p).is_err());
    // VBR lengths larger than the packet.
    assert!(parse_packet(&[0xfb, 0x82, 200, 1, 2]).is_err());
    // Padding length bytes missing.
    assert!(parse_packet(&[0xfb, 0x41]).is_err());
    assert!(parse_packet(&[0xfb, 0x41, 255]).is_err());
}

#[test]
fn empty_packet_is_an_error() {
    assert_eq!(parse_packet(&[]), Err(OpusError::Empty));
}

#[test]
fn depacketizer_unwraps_48k_timestamps_across_the_wrap() {
    let mut d = OpusDepacketizer::with_reorder_window(0);
    let start = u32::MAX - 959;
    for n in 0..4u32 {
        d.push(
            Bytes::from_static(&[0xfc, 1, 2]),
            65534u16.wrapping_add(n as u16),
            start.wrapping_add(n * 960),
        )
        .unwrap();
    }
    let out: Vec<OpusPacket> = std::iter::from_fn(|| d.pop()).collect();
    let ts: Vec<u64> = out.iter().map(|p| p.timestamp).collect();
    let base = u64::from(start);
    assert_eq!(ts, [base, base + 960, base + 1920, base + 2880]);
    assert!(out.iter().all(|p| p.duration == 960 && !p.discontinuity));
    assert_eq!(d.stats().lost_packets, 0);
}

#[test]
fn depacketizer_reorders_and_marks_losses() {
    let mut d = OpusDepacketizer::new();
    let pkt = |b: u8| Bytes::from(vec![0xfc, b]);
    d.push(pkt(0), 10, 0).unwrap();
    d.push(pkt(2), 12, 1920).unwrap();
    d.push(pkt(1), 11, 960).unwrap();
    let out: Vec<OpusPacket> = std::iter::from_fn(|| d.pop()).collect();
    assert_eq!(out.iter().map(|p| p.data[1]).collect::<Vec<_>>(), [0, 1, 2]);
    // 13 lost; 14 and 15 wait behind it until flushed.
    d.push(pkt(4), 14, 3840).unwrap();
    d.push(pkt(5), 15, 4800).unwrap();
    assert!(d.pop().is_none());
    d.flush().unwrap();
    let out: Vec<OpusPacket> = std::iter::from_fn(|| d.pop()).collect();
    assert_eq!(out.len(), 2);
    assert!(out[0].discontinuity);
    assert!(!out[1].discontinuity);
    assert_eq!(d.stats().lost_packets, 1);
    d.push(pkt(3), 13, 2880).unwrap();
    assert_eq!(d.stats().late_packets, 1);
    assert!(d.pop().is_none());
}

#[test]
fn depacketizer_drops_malformed_packets_and_skips_empty_ones() {
    let mut d = OpusDepacketizer::with_reorder_window(0);
    d.push(Bytes::from_static(&[0xfc, 1]), 1, 0).unwrap();
    assert!(d
        .push(Bytes::from_static(&[0xfd, 1, 2, 3]), 2, 960)
        .is_err());
    d.push(Bytes::new(), 3, 1920).unwrap();
    d.push(Bytes::from_static(&[0xfc, 1]), 4, 1920).unwrap();
    let out: Vec<OpusPacket> = std::iter::from_fn(|| d.pop()).collect();
    assert_eq!(out.len(), 2);
    assert!(out[1].discontinuity);
    assert_eq!(d.stats().malformed_packets, 1);
    assert_eq!(d.stats().lost_packets, 0);
}
