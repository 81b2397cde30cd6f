//! Entry points for `cargo fuzz` (see `crates/media/fuzz/`).
//!
//! Each function feeds arbitrary bytes to one parser and checks invariants that
//! must hold for any input. They live in the crate itself so that the same code
//! is compiled and exercised by the property tests on stable Rust.

use crate::rtp::{RtpHeader, RtpPacket};

/// Parses `data` as an RTP packet; if it parses, checks the view is consistent
/// and that writing its header back yields a packet that parses the same.
pub fn fuzz_rtp_parse(data: &[u8]) {
    let Ok(pkt) = RtpPacket::parse(data) else {
        return;
    };
    let range = pkt.payload_range();
    assert!(range.start <= range.end && range.end <= data.len());
    assert_eq!(
        pkt.payload().len() + pkt.padding_len(),
        data.len() - range.start
    );
    for (id, value) in pkt.extensions() {
        assert!(id != 0 && value.len() <= 256);
    }
    let _ = pkt.csrcs().count();
    let header = RtpHeader::from_packet(&pkt);
    if let Ok(bytes) = header.to_packet(pkt.payload()) {
        let again = RtpPacket::parse(&bytes).expect("written packet parses");
        assert_eq!(again.payload(), pkt.payload());
        assert_eq!(RtpHeader::from_packet(&again), header);
    }
}

/// Parses `data` as SPS, PPS, `avcC` record, Annex-B and AVCC streams; when an
/// SPS parses, checks its derived values are sane.
pub fn fuzz_h264_sps(data: &[u8]) {
    use crate::h264::{
        annexb_nalus, avcc_nalus, remove_emulation_prevention, AvcDecoderConfigurationRecord, Pps,
        Sps,
    };

    // Force the SPS/PPS type so that the fuzzer spends its time in the syntax.
    let mut nal = Vec::with_capacity(data.len() + 1);
    nal.push(0x67);
    nal.extend_from_slice(data);
    if let Ok(sps) = Sps::parse(&nal) {
        assert!(sps.width > 0 && sps.height > 0);
        assert!(sps.width <= sps.pic_width_in_mbs * 16);
        assert_eq!(sps.codec_string().len(), "avc1.".len() + 6);
        if let Ok(record) = AvcDecoderConfigurationRecord::from_parameter_sets(&nal, &[0x68, 0xce])
        {
            let bytes = record.to_bytes().expect("one small SPS and PPS fit");
            assert_eq!(AvcDecoderConfigurationRecord::parse(&bytes), Ok(record));
        }
    }
    nal[0] = 0x68;
    let _ = Pps::parse(&nal);
    if let Ok(record) = AvcDecoderConfigurationRecord::parse(data) {
        let _ = record.codec_string();
        let _ = record.parse_sps();
        let _ = record.to_bytes();
    }
    for nal in annexb_nalus(data) {
        assert!(!nal.is_empty() && nal.last() != Some(&0));
        assert!(remove_emulation_prevention(nal).len() <= nal.len());
    }
    for size in [1, 2, 4] {
        for nal in avcc_nalus(data, size) {
            let _ = nal.map(|n| n.len());
        }
    }
}

/// Splits `data` into RTP payloads with sequence numbers, timestamps and marker
/// bits taken from the data itself, feeds them to an [`H264Depacketizer`] with
/// small limits, and checks what comes out.
///
/// Each packet is `[len, seq_step, flags, payload × len]`: `seq_step` is a
/// signed step (so reordering, duplicates and gaps all happen), `flags` bit 0 is
/// the marker, bits 1–2 pick the timestamp step (same, +3000, +1, big jump).
///
/// [`H264Depacketizer`]: crate::h264::H264Depacketizer
pub fn fuzz_h264_depacketize(data: &[u8]) {
    use crate::h264::{DepacketizerConfig, H264Depacketizer};
    use bytes::Bytes;

    let config = DepacketizerConfig {
        reorder_window: usize::from(data.first().copied().unwrap_or(0) % 8),
        max_access_unit_size: 4096,
        max_nalus_per_access_unit: 16,
        max_queued_access_units: 4,
    };
    let mut d = H264Depacketizer::with_config(config);
    let mut seq = 0u16;
    let mut ts = 0u32;
    let mut rest = data.get(1..).unwrap_or_default();
    let mut emitted = 0u64;
    let mut check = |au: crate::h264::AccessUnit| {
        emitted += 1;
        assert!(!au.nalus.is_empty());
        assert!(au.nalus.iter().all(|n| !n.is_empty()));
        assert_eq!(au.keyframe, crate::h264::is_keyframe(&au.nalus));
        assert!(au.nalus.len() <= 16);
        assert!(au.nalus.iter().map(|n| n.len()).sum::<usize>() <= 4096);
        if emitted == 1 {
            assert!(au.keyframe, "the first access unit out is a keyframe");
        }
    };
    while let [len, step, flags, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        seq = seq.wrapping_add_signed(i16::from(*step as i8));
        ts = match (flags >> 1) & 3 {
            0 => ts,
            1 => ts.wrapping_add(3000),
            2 => ts.wrapping_add(1),
            _ => ts.wrapping_add(u32::from(*flags) << 24),
        };
        let _ = d.push(Bytes::copy_from_slice(payload), seq, ts, flags & 1 == 1);
        let _ = d.take_keyframe_request();
        while let Some(au) = d.pop() {
            check(au);
        }
    }
    let _ = d.flush();
    while let Some(au) = d.pop() {
        check(au);
    }
    let stats = d.stats();
    assert_eq!(stats.access_units, emitted);
}

/// Parses `data` as one Opus packet and checks the framing invariants, then
/// feeds it, split into pieces, to an [`OpusDepacketizer`].
///
/// [`OpusDepacketizer`]: crate::opus::OpusDepacketizer
pub fn fuzz_opus_toc(data: &[u8]) {
    use crate::opus::{parse_packet, OpusDepacketizer};
    use bytes::Bytes;

    if let Ok(info) = parse_packet(data) {
        assert!((1..=48).contains(&info.frames));
        assert_eq!(
            info.samples,
            info.toc.frame_samples() * u32::from(info.frames)
        );
        assert!(info.samples <= 5760);
        assert!(info.frames == 1 || info.toc.code != 0);
    }
    // Each piece is `[seq_step, len, bytes × len]`.
    let mut d = OpusDepacketizer::with_reorder_window(2);
    let mut seq = 0u16;
    let mut ts = 0u32;
    let mut rest = data;
    while let [step, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        seq = seq.wrapping_add_signed(i16::from(*step as i8));
        ts = ts.wrapping_add(960);
        let _ = d.push(Bytes::copy_from_slice(payload), seq, ts);
        while let Some(packet) = d.pop() {
            assert!(!packet.data.is_empty());
            assert!(packet.duration > 0 && packet.duration <= 5760);
        }
    }
    let _ = d.flush();
    while d.pop().is_some() {}
}
