//! Property tests for RTMP, AMF0, FLV and AAC: parsers never panic, writers
//! and parsers round-trip, and the chunk stream and the session reassemble
//! whatever the sender's chunk size and the receiver's read sizes.

use bytes::Bytes;
use proptest::prelude::*;
use skylark_media::aac::{AdtsHeader, AudioSpecificConfig, SbrExtension, SAMPLING_FREQUENCIES};
use skylark_media::flv::{self, AudioTag, FlvTag, OpusHead, VideoPacket, VideoTag};
use skylark_media::fuzzing;
use skylark_media::h264::AvcDecoderConfigurationRecord;
use skylark_media::rtmp::amf0::{self, Amf0Value};
use skylark_media::rtmp::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, RawMessage};
use skylark_media::rtmp::handshake::HANDSHAKE_SIZE;
use skylark_media::rtmp::message;
use skylark_media::rtmp::{ServerSession, SessionConfig, SessionEvent};

#[path = "common/fuzz_regressions.rs"]
mod fuzz_regressions;

fn amf0_value() -> impl Strategy<Value = Amf0Value> {
    let leaf = prop_oneof![
        any::<f64>()
            .prop_filter("NaN != NaN", |n| !n.is_nan())
            .prop_map(Amf0Value::Number),
        any::<bool>().prop_map(Amf0Value::Boolean),
        ".{0,20}".prop_map(Amf0Value::String),
        Just(Amf0Value::Null),
        Just(Amf0Value::Undefined),
        (
            any::<f64>().prop_filter("NaN != NaN", |n| !n.is_nan()),
            any::<i16>()
        )
            .prop_map(|(millis, time_zone)| Amf0Value::Date { millis, time_zone }),
        ".{0,20}".prop_map(Amf0Value::XmlDocument),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let props = proptest::collection::vec((".{0,10}", inner.clone()), 0..6);
        prop_oneof![
            props.clone().prop_map(Amf0Value::Object),
            props.clone().prop_map(Amf0Value::EcmaArray),
            proptest::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
            ("[a-zA-Z]{1,8}", props).prop_map(|(class_name, properties)| {
                Amf0Value::TypedObject {
                    class_name,
                    properties,
                }
            }),
        ]
    })
}

fn message(csid_max: u32) -> impl Strategy<Value = RawMessage> {
    (
        2..=csid_max,
        any::<u32>(),
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..1500),
    )
        .prop_map(
            |(csid, timestamp, type_id, stream_id, payload)| RawMessage {
                csid,
                timestamp,
                type_id,
                stream_id,
                payload: payload.into(),
            },
        )
}

proptest! {
    #[test]
    fn rtmp_session_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::fuzz_rtmp_session(&data);
    }

    #[test]
    fn amf0_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::fuzz_amf0(&data);
    }

    /// Mostly-valid AMF0: markers and small lengths are likely.
    #[test]
    fn amf0_never_panics_on_structured_noise(data in proptest::collection::vec(
        prop_oneof![0u8..=0x11, Just(0u8), any::<u8>()], 0..256)) {
        fuzzing::fuzz_amf0(&data);
    }

    #[test]
    fn flv_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::fuzz_flv_tag(&data);
    }

    /// Plausible tag headers with random bodies.
    #[test]
    fn flv_parsers_never_panic_on_plausible_headers(
        first in prop_oneof![Just(0x17u8), Just(0x27), Just(0xaf), Just(0x90), Just(0x91),
                             Just(0x93), Just(0x97), Just(0x94), Just(0x57), any::<u8>()],
        second in prop_oneof![0u8..4, any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut data = vec![first, second];
        data.extend(rest);
        fuzzing::fuzz_flv_tag(&data);
    }

    /// Playlist text and box bytes: the CMAF and HLS readers never panic.
    #[test]
    fn hls_readers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::fuzz_hls_read(&data);
    }

    /// Playlist-like text: tags with attribute lists and numbers.
    #[test]
    fn hls_readers_never_panic_on_playlist_noise(lines in proptest::collection::vec(prop_oneof![
        Just("#EXTM3U".to_string()), Just("#EXTINF:2.0,".to_string()), Just("seg1.m4s".to_string()),
        Just("#EXT-X-DISCONTINUITY".to_string()), Just("#EXT-X-PART-INF:PART-TARGET=0.2".to_string()),
        "#EXT-X-PART:DURATION=[0-9.]{0,4},URI=\"[a-z.]{0,4}\"(,INDEPENDENT=YES)?",
        "#EXT-X-PROGRAM-DATE-TIME:20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,4})?Z",
        "#EXT-X-(MEDIA-SEQUENCE|TARGETDURATION|VERSION):[0-9]{0,3}",
        "#EXT-X-RENDITION-REPORT:URI=\"a\",LAST-MSN=[0-9]{1,2}(,LAST-PART=[0-9])?",
        "#EXT-X-STREAM-INF:BANDWIDTH=[0-9]{1,3},CODECS=\"[a-z0-9.,]{0,10}\"",
    ], 0..24)) {
        let mut text = String::from("#EXTM3U\n");
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        fuzzing::fuzz_hls_read(text.as_bytes());
    }

    #[test]
    fn amf0_round_trips(values in proptest::collection::vec(amf0_value(), 0..4)) {
        let bytes = amf0::encode_all(&values).unwrap();
        prop_assert_eq!(amf0::decode_all(&bytes).unwrap(), values);
    }

    /// Messages chunked at any chunk size, interleaved across chunk streams
    /// by whole messages, and read in arbitrary pieces come back intact.
    #[test]
    fn chunk_stream_round_trips(
        messages in proptest::collection::vec(message(400), 1..12),
        chunk_size in 1u32..3000,
        pieces in proptest::collection::vec(1usize..700, 1..20),
    ) {
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(chunk_size);
        let mut wire = Vec::new();
        for m in &messages {
            enc.encode(m, &mut wire);
        }
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.set_chunk_size(chunk_size).unwrap();
        let mut got = Vec::new();
        let mut pos = 0;
        for size in pieces.iter().cycle() {
            if pos >= wire.len() {
                break;
            }
            let end = (pos + size).min(wire.len());
            dec.push(&wire[pos..end]);
            pos = end;
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// A publisher's media, with timestamps that may wrap past 2^32, comes
    /// out of the session unchanged and unwrapped, whatever the read sizes.
    #[test]
    fn session_delivers_media_in_order(
        start in any::<u32>(),
        steps in proptest::collection::vec((any::<bool>(), 0u32..5000,
            proptest::collection::vec(any::<u8>(), 1..3000)), 1..30),
        chunk_size in prop_oneof![Just(128u32), Just(4096), 1u32..9000],
        piece in 1usize..5000,
    ) {
        let enc = ChunkEncoder::new();
        let mut wire = vec![3u8];
        wire.resize(1 + 2 * HANDSHAKE_SIZE, 0);
        let command = |stream_id: u32, values: Vec<Amf0Value>, wire: &mut Vec<u8>| {
            enc.encode(&RawMessage {
                csid: 3, timestamp: 0, type_id: message::COMMAND_AMF0, stream_id,
                payload: amf0::encode_all(&values).unwrap().into(),
            }, wire);
        };
        command(0, vec!["connect".into(), 1.0.into(),
            Amf0Value::object([("app", Amf0Value::from("live"))])], &mut wire);
        command(0, vec!["createStream".into(), 2.0.into(), Amf0Value::Null], &mut wire);
        command(1, vec!["publish".into(), 0.0.into(), Amf0Value::Null, "key".into()], &mut wire);
        let setup_len = wire.len();

        let mut media = Vec::new();
        let mut enc = ChunkEncoder::new();
        enc.encode(&message::ControlMessage::SetChunkSize(chunk_size).to_message(), &mut media);
        enc.set_chunk_size(chunk_size);
        let mut ts = start;
        let mut expected = Vec::new();
        // The first timestamp is taken as it is, the rest follow from it.
        let mut clock: Option<u64> = None;
        for (video, step, body) in &steps {
            ts = ts.wrapping_add(*step);
            let t = clock.map_or(u64::from(ts), |c| c + u64::from(*step));
            clock = Some(t);
            let type_id = if *video { message::VIDEO } else { message::AUDIO };
            enc.encode(&RawMessage {
                csid: if *video { 6 } else { 4 }, timestamp: ts, type_id, stream_id: 1,
                payload: Bytes::copy_from_slice(body),
            }, &mut media);
            expected.push((*video, t, body.clone()));
        }

        let mut session = ServerSession::new(SessionConfig::default());
        for part in wire[..setup_len].chunks(piece) {
            session.feed(part).unwrap();
        }
        let mut published = false;
        while let Some(e) = session.poll_event() {
            if let SessionEvent::Publish { ref stream_name, .. } = e {
                prop_assert_eq!(stream_name, "key");
                session.accept_publish().unwrap();
                published = true;
            }
        }
        prop_assert!(published);
        let mut got = Vec::new();
        for part in media.chunks(piece) {
            session.feed(part).unwrap();
            while let Some(e) = session.poll_event() {
                match e {
                    SessionEvent::Video { timestamp, data } => got.push((true, timestamp, data.to_vec())),
                    SessionEvent::Audio { timestamp, data } => got.push((false, timestamp, data.to_vec())),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
        // Audio and video share one clock, unwrapped past 2^32.
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn flv_video_tags_round_trip(
        keyframe in any::<bool>(),
        composition_time in -(1i32 << 23)..(1 << 23),
        avcc in proptest::collection::vec(any::<u8>(), 0..500),
        timestamp in any::<u32>(),
    ) {
        let body = flv::avc_nalus(keyframe, composition_time, &avcc).unwrap();
        let mut file = Vec::new();
        flv::write_tag(&mut file, flv::TAG_VIDEO, timestamp, &body).unwrap();
        let (tag, used) = FlvTag::parse(&file).unwrap();
        prop_assert_eq!(used, file.len());
        prop_assert_eq!(tag.timestamp, timestamp);
        let video = VideoTag::parse(tag.body).unwrap();
        prop_assert_eq!(video.is_keyframe(), keyframe);
        prop_assert_eq!(video.packet, VideoPacket::AvcNalus { composition_time, data: &avcc });
    }

    #[test]
    fn flv_avc_sequence_headers_round_trip(
        profile in prop_oneof![Just(66u8), Just(77)],
        compat in any::<u8>(),
        level in any::<u8>(),
        length_size in prop_oneof![Just(1u8), Just(2), Just(4)],
        sps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..3),
        pps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..3),
    ) {
        let record = AvcDecoderConfigurationRecord {
            profile_idc: profile,
            profile_compatibility: compat,
            level_idc: level,
            length_size,
            sps: sps.into_iter().map(|mut b| { b.insert(0, 0x67); Bytes::from(b) }).collect(),
            pps: pps.into_iter().map(|mut b| { b.insert(0, 0x68); Bytes::from(b) }).collect(),
            extension: None,
        };
        let body = flv::avc_sequence_header(&record).unwrap();
        prop_assert_eq!(VideoTag::parse(&body).unwrap().packet, VideoPacket::AvcSequenceHeader(record));
    }

    #[test]
    fn flv_audio_tags_round_trip(
        frame in proptest::collection::vec(any::<u8>(), 0..800),
        freq_index in 0usize..13,
        channels in 1u8..8,
        opus_channels in 1u8..=2,
        pre_skip in any::<u16>(),
    ) {
        let asc = AudioSpecificConfig::lc(SAMPLING_FREQUENCIES[freq_index], channels).unwrap();
        let seq = flv::aac_sequence_header(&asc).unwrap();
        prop_assert_eq!(AudioTag::parse(&seq).unwrap(), AudioTag::AacSequenceHeader(asc.clone()));
        let raw = flv::aac_raw(&frame);
        prop_assert_eq!(AudioTag::parse(&raw).unwrap(), AudioTag::AacRaw(&frame));
        let head = OpusHead::new(opus_channels, pre_skip);
        let opus_seq = flv::opus_sequence_header(&head);
        prop_assert_eq!(AudioTag::parse(&opus_seq).unwrap(), AudioTag::OpusSequenceHeader(Some(head)));
        let opus = flv::opus_frame(&frame);
        prop_assert_eq!(AudioTag::parse(&opus).unwrap(), AudioTag::OpusFrame(&frame));
        // And as an ADTS frame.
        if frame.len() + 7 <= 8191 {
            let header = AdtsHeader::for_frame(&asc, frame.len()).unwrap();
            let mut adts = header.to_bytes().to_vec();
            adts.extend_from_slice(&frame);
            let (parsed, offset) = AdtsHeader::parse(&adts).unwrap();
            prop_assert_eq!(parsed, header);
            prop_assert_eq!(&adts[offset..parsed.frame_length], &frame[..]);
            prop_assert_eq!(parsed.to_audio_specific_config().unwrap(), asc);
        }
    }

    #[test]
    fn audio_specific_config_round_trips(
        object_type in prop_oneof![1u8..=30, 32u8..=95],
        freq in prop_oneof![
            (0u8..13).prop_map(|i| (i, SAMPLING_FREQUENCIES[usize::from(i)])),
            (1u32..(1 << 24)).prop_map(|f| (15u8, f)),
        ],
        channel_configuration in 0u8..16,
        frame_length_960 in any::<bool>(),
        sbr in proptest::option::of((prop_oneof![Just(5u8), Just(29)], 0usize..13)),
    ) {
        let ga = matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23);
        let asc = AudioSpecificConfig {
            object_type,
            sampling_frequency_index: freq.0,
            sampling_frequency: freq.1,
            channel_configuration,
            frame_length_960: frame_length_960 && ga,
            extension: sbr.filter(|_| object_type != 5 && object_type != 29).map(|(aot, i)| SbrExtension {
                object_type: aot,
                sampling_frequency: SAMPLING_FREQUENCIES[i],
            }),
        };
        match asc.to_bytes() {
            Ok(bytes) => prop_assert_eq!(AudioSpecificConfig::parse(&bytes).unwrap(), asc),
            // SBR/PS as the object type itself announce an extension.
            Err(_) => prop_assert!(asc.extension.is_none() && matches!(object_type, 5 | 29)),
        }
    }

    #[test]
    fn flv_files_round_trip(tags in proptest::collection::vec(
        (prop_oneof![Just(8u8), Just(9), Just(18)], any::<u32>(),
         proptest::collection::vec(any::<u8>(), 0..300)), 0..10)) {
        let mut file = flv::file_header(true, true).to_vec();
        for (ty, ts, body) in &tags {
            flv::write_tag(&mut file, *ty, *ts, body).unwrap();
        }
        let (_, mut pos) = flv::parse_file_header(&file).unwrap();
        for (ty, ts, body) in &tags {
            let (tag, used) = FlvTag::parse(&file[pos..]).unwrap();
            prop_assert_eq!(tag, FlvTag { tag_type: *ty, timestamp: *ts, body });
            pos += used;
        }
        prop_assert_eq!(pos, file.len());
    }
}

/// Inputs that once broke one of these fuzz targets, kept in
/// `tests/fuzz-regressions/<target>/` (none yet is fine).
#[test]
fn rtmp_flv_fuzz_regressions_stay_fixed() {
    fuzz_regressions::replay(&[
        ("rtmp_session", fuzzing::fuzz_rtmp_session),
        ("amf0", fuzzing::fuzz_amf0),
        ("flv_tag", fuzzing::fuzz_flv_tag),
        ("hls_read", fuzzing::fuzz_hls_read),
    ]);
}
