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

/// Drives an RTMP [`ServerSession`] with `data` after a valid handshake, and
/// checks that whatever the server writes is a well-formed chunk stream, that
/// media events only come after an accepted publish, and that an error
/// closes the session.
///
/// The first byte picks the setup: bit 0 sends a scripted `connect`,
/// `createStream` and `publish` first (so that the fuzzer spends its time in
/// media and control messages), bit 1 accepts a publish request instead of
/// rejecting it, bits 2–7 set the size of the pieces the rest is fed in.
///
/// [`ServerSession`]: crate::rtmp::ServerSession
pub fn fuzz_rtmp_session(data: &[u8]) {
    use crate::rtmp::amf0::{encode_all, Amf0Value};
    use crate::rtmp::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, RawMessage};
    use crate::rtmp::handshake::HANDSHAKE_SIZE;
    use crate::rtmp::message::{ControlMessage, COMMAND_AMF0, SET_CHUNK_SIZE};
    use crate::rtmp::{ServerSession, SessionConfig, SessionEvent, SessionState};

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = SessionConfig {
        max_message_size: 64 << 10,
        max_amf_message_size: 4 << 10,
        max_chunk_streams: 8,
        max_pending_bytes: 128 << 10,
        ..SessionConfig::default()
    };
    let mut session = ServerSession::new(config);
    let mut input = vec![3u8];
    input.resize(1 + 2 * HANDSHAKE_SIZE, 0);
    if mode & 1 == 1 {
        let enc = ChunkEncoder::new();
        let command = |stream_id: u32, values: &[Amf0Value], out: &mut Vec<u8>| {
            let payload = encode_all(values).expect("small commands encode");
            let msg = RawMessage {
                csid: 3,
                timestamp: 0,
                type_id: COMMAND_AMF0,
                stream_id,
                payload: payload.into(),
            };
            enc.encode(&msg, out);
        };
        let app = Amf0Value::object([("app", Amf0Value::from("live"))]);
        command(0, &["connect".into(), 1.0.into(), app], &mut input);
        command(
            0,
            &["createStream".into(), 2.0.into(), Amf0Value::Null],
            &mut input,
        );
        let publish = ["publish".into(), 0.0.into(), Amf0Value::Null, "key".into()];
        command(1, &publish, &mut input);
    }
    input.extend_from_slice(rest);
    let piece = usize::from(mode >> 2) + 1;

    // The client side of the server's output.
    let mut out_decoder = ChunkDecoder::new(ChunkLimits::default());
    let mut handshake_left = 1 + 2 * HANDSHAKE_SIZE;
    let mut accepted = false;
    for chunk in input.chunks(piece) {
        let before = session.state();
        let result = session.feed(chunk);
        if before == SessionState::Closed {
            assert!(result.is_err());
        }
        if result.is_err() {
            assert_eq!(session.state(), SessionState::Closed);
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Publish { .. } => {
                    let answer = if mode & 2 == 2 {
                        session.accept_publish()
                    } else {
                        session.reject_publish("NetStream.Publish.BadName", "fuzz")
                    };
                    // The request may have been withdrawn (deleteStream) or
                    // the session failed later in the same feed.
                    accepted = answer.is_ok() && mode & 2 == 2;
                }
                SessionEvent::Audio { .. } | SessionEvent::Video { .. } => {
                    assert!(accepted, "media before an accepted publish");
                }
                SessionEvent::Unpublish => accepted = false,
                SessionEvent::Connect { .. } | SessionEvent::Metadata(_) => {}
            }
        }
        let mut out = session.take_output();
        let skip = handshake_left.min(out.len());
        handshake_left -= skip;
        out.drain(..skip);
        out_decoder.push(&out);
        while let Some(msg) = out_decoder
            .next_message()
            .expect("the server writes a valid chunk stream")
        {
            if msg.type_id == SET_CHUNK_SIZE {
                if let Ok(ControlMessage::SetChunkSize(n)) =
                    ControlMessage::parse(msg.type_id, &msg.payload)
                {
                    out_decoder.set_chunk_size(n).expect("a valid chunk size");
                }
            }
        }
        if result.is_err() {
            break;
        }
    }
    assert!(session.stats().bytes_received <= input.len() as u64);
}

/// Decodes `data` as AMF0 values; when that works, checks that encoding and
/// decoding again gives the same bytes (values may hold NaN, so bytes are
/// compared rather than values).
pub fn fuzz_amf0(data: &[u8]) {
    use crate::rtmp::amf0::{decode_all, encode_all, Amf0Value};

    if let Ok(values) = decode_all(data) {
        let bytes = encode_all(&values).expect("decoded values re-encode");
        let again = decode_all(&bytes).expect("encoded values decode");
        assert_eq!(encode_all(&again).expect("re-encode"), bytes);
        assert_eq!(again.len(), values.len());
    }
    if let Ok((value, used)) = Amf0Value::decode(data) {
        assert!(used >= 1 && used <= data.len());
        let _ = value.as_str();
        let _ = value.get("app");
    }
}

/// Parses `data` as FLV video and audio tag bodies, a tag, a file header,
/// an `OpusHead`, an `AudioSpecificConfig` and ADTS frames; when something
/// parses and this crate can write it, checks that writing it back parses the
/// same.
pub fn fuzz_flv_tag(data: &[u8]) {
    use crate::aac::{adts_frames, AdtsHeader, AudioSpecificConfig};
    use crate::flv::{
        aac_raw, avc_nalus, opus_frame, parse_file_header, split_avcc, write_tag, AudioTag, FlvTag,
        FrameType, OpusHead, VideoPacket, VideoTag,
    };

    if let Ok(tag) = VideoTag::parse(data) {
        match tag.packet {
            VideoPacket::AvcNalus {
                composition_time,
                data: avcc,
            } => {
                assert!((-(1 << 23)..(1 << 23)).contains(&composition_time));
                let _ = split_avcc(avcc, 4);
                let key = tag.frame_type == FrameType::Key;
                if key || tag.frame_type == FrameType::Inter {
                    let body = avc_nalus(key, composition_time, avcc).expect("in range");
                    let again = VideoTag::parse(&body).expect("written tag parses");
                    assert_eq!(again.packet, tag.packet);
                    assert_eq!(again.frame_type, tag.frame_type);
                }
            }
            VideoPacket::AvcSequenceHeader(record) => {
                let _ = record.parse_sps();
            }
            _ => {}
        }
    }
    if let Ok(tag) = AudioTag::parse(data) {
        match tag {
            AudioTag::AacRaw(frame) => {
                assert_eq!(
                    AudioTag::parse(&aac_raw(frame)),
                    Ok(AudioTag::AacRaw(frame))
                );
            }
            AudioTag::OpusFrame(packet) => {
                let body = opus_frame(packet);
                assert_eq!(AudioTag::parse(&body), Ok(AudioTag::OpusFrame(packet)));
            }
            _ => {}
        }
    }
    if let Ok((tag, used)) = FlvTag::parse(data) {
        assert!(used <= data.len());
        let mut out = Vec::new();
        write_tag(&mut out, tag.tag_type, tag.timestamp, tag.body).expect("a parsed body fits");
        assert_eq!(FlvTag::parse(&out), Ok((tag, out.len())));
    }
    if let Ok((_, first_tag)) = parse_file_header(data) {
        assert!(first_tag <= data.len());
    }
    if let Ok(head) = OpusHead::parse(data) {
        assert_eq!(OpusHead::parse(&head.to_bytes()), Ok(head));
    }
    if let Ok(asc) = AudioSpecificConfig::parse(data) {
        assert!(asc.sampling_frequency > 0);
        if let Ok(bytes) = asc.to_bytes() {
            assert_eq!(AudioSpecificConfig::parse(&bytes), Ok(asc));
        }
    }
    if let Ok((header, offset)) = AdtsHeader::parse(data) {
        assert!(offset == 7 || offset == 9);
        assert_eq!(
            AdtsHeader::parse(&header.to_bytes()).map(|(h, _)| h),
            Ok(header)
        );
    }
    for (header, payload) in adts_frames(data).take(64).flatten() {
        assert!(payload.len() < header.frame_length);
    }
}

/// Reads `data` as an init segment and as fragments (`fmp4::read`), and as a media
/// and a multivariant playlist; whatever parses goes through the checks, which must
/// not panic either. A parsed track run has one sync flag per duration.
pub fn fuzz_hls_read(data: &[u8]) {
    use crate::fmp4::read::{track_runs, tracks};
    use crate::hls::check;

    let tracks = tracks(data).unwrap_or_default();
    if let Ok(runs) = track_runs(data) {
        for r in &runs {
            assert_eq!(r.durations.len(), r.sync.len());
            let _ = r.end();
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(pl) = check::parse_media(&text) {
        let _ = check::check_media(&pl);
        let _ = check::check_reload(&pl, &pl);
        let _ = check::check_delta(&pl, &pl);
        let _ = check::check_rendition_reports(&pl, &[("a.m3u8", &pl)]);
        let _ = check::check_media_timing(&pl, &tracks, &|_| track_runs(data).ok());
    }
    if let Ok(variants) = check::parse_multivariant(&text) {
        let _ = check::check_multivariant(&variants);
    }
}
