//! Property tests: parsers never panic, encoders and decoders round-trip,
//! unwrappers stay exact over bounded random walks.

use proptest::prelude::*;
use skylark_media::fuzzing;
use skylark_media::rtp::{RtpHeader, RtpPacket, SeqUnwrapper, TsUnwrapper};

#[path = "common/fuzz_regressions.rs"]
mod fuzz_regressions;

proptest! {
    #[test]
    fn rtp_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::fuzz_rtp_parse(&data);
    }

    #[test]
    fn rtp_header_round_trips(
        marker in any::<bool>(),
        payload_type in 0u8..128,
        sequence_number in any::<u16>(),
        timestamp in any::<u32>(),
        ssrc in any::<u32>(),
        csrcs in proptest::collection::vec(any::<u32>(), 0..16),
        extensions in proptest::collection::vec(
            (1u8..=255, proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
        padding in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let header = RtpHeader {
            marker, payload_type, sequence_number, timestamp, ssrc, csrcs,
            extensions: extensions.into_iter().map(|(id, d)| (id, d.into())).collect(),
            padding,
        };
        let bytes = header.to_packet(&payload).unwrap();
        let pkt = RtpPacket::parse(&bytes).unwrap();
        prop_assert_eq!(RtpHeader::from_packet(&pkt), header);
        prop_assert_eq!(pkt.payload(), &payload[..]);
    }

    /// Over any walk whose steps stay under half the counter range, the unwrapped
    /// value is exactly the true position (clamped at zero), so it is monotonic.
    #[test]
    fn seq_unwrapper_is_exact_over_bounded_walks(
        start in any::<u16>(),
        steps in proptest::collection::vec(-32_767i64..=32_767, 1..300),
    ) {
        let mut u = SeqUnwrapper::new();
        let mut pos = i64::from(start);
        prop_assert_eq!(u.unwrap(start), u64::from(start));
        let mut prev = (pos, u64::from(start));
        for step in steps {
            pos += step;
            let got = u.unwrap(pos.rem_euclid(1 << 16) as u16);
            prop_assert_eq!(got, pos.max(0) as u64);
            // Monotonic: order of true positions is preserved (non-strictly).
            if pos >= prev.0 { prop_assert!(got >= prev.1) } else { prop_assert!(got <= prev.1) }
            prev = (pos, got);
        }
    }

    #[test]
    fn ts_unwrapper_is_exact_over_bounded_walks(
        start in any::<u32>(),
        steps in proptest::collection::vec(-(1i64 << 31) + 1..(1i64 << 31), 1..300),
    ) {
        let mut u = TsUnwrapper::new();
        let mut pos = i64::from(start);
        u.unwrap(start);
        for step in steps {
            pos += step;
            let got = u.unwrap(pos.rem_euclid(1 << 32) as u32);
            prop_assert_eq!(got, pos.max(0) as u64);
        }
    }

    /// Realistic walks: mostly forward by one frame, sometimes a late packet.
    #[test]
    fn ts_unwrapper_is_monotonic_for_forward_streams(
        start in any::<u32>(),
        steps in proptest::collection::vec(0u32..100_000, 1..500),
    ) {
        let mut u = TsUnwrapper::new();
        let mut raw = start;
        let mut last = u.unwrap(raw);
        for step in steps {
            raw = raw.wrapping_add(step);
            let got = u.unwrap(raw);
            prop_assert_eq!(got, last + u64::from(step));
            last = got;
        }
    }
}

/// Inputs that once broke a fuzz target, kept in `tests/fuzz-regressions/<target>/`.
#[test]
fn fuzz_regressions_stay_fixed() {
    let ran = fuzz_regressions::replay(&[
        ("rtp_parse", fuzzing::fuzz_rtp_parse),
        ("h264_depacketize", fuzzing::fuzz_h264_depacketize),
        ("h264_sps", fuzzing::fuzz_h264_sps),
        ("opus_toc", fuzzing::fuzz_opus_toc),
    ]);
    let dir = fuzz_regressions::dir();
    assert!(ran > 0, "no regression inputs found in {}", dir.display());
}

mod h264 {
    use bytes::Bytes;
    use proptest::prelude::*;
    use skylark_media::fuzzing;
    use skylark_media::h264::{
        add_emulation_prevention, annexb_nalus, annexb_to_avcc, avcc_to_annexb,
        remove_emulation_prevention, H264Depacketizer, H264Packetizer,
    };

    /// A NAL unit of a type that single NAL unit packets may carry.
    fn nal(types: std::ops::RangeInclusive<u8>, max_len: usize) -> impl Strategy<Value = Bytes> {
        (
            types,
            0u8..4,
            proptest::collection::vec(any::<u8>(), 0..max_len),
        )
            .prop_map(|(ty, nri, body)| {
                let mut v = vec![(nri << 5) | ty];
                v.extend(body);
                Bytes::from(v)
            })
    }

    /// Access units: the first starts with SPS, PPS and an IDR (so decoding can start),
    /// the rest are arbitrary NAL units.
    fn access_units() -> impl Strategy<Value = Vec<Vec<Bytes>>> {
        let first = proptest::collection::vec(nal(1..=23, 3000), 0..6).prop_map(|mut rest| {
            rest.insert(0, Bytes::from_static(&[0x65, 0x88, 0x84]));
            rest.insert(0, Bytes::from_static(&[0x68, 0xce, 0x38, 0x80]));
            rest.insert(0, Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0xda]));
            rest
        });
        let others =
            proptest::collection::vec(proptest::collection::vec(nal(1..=23, 3000), 1..8), 0..5);
        (first, others).prop_map(|(first, mut others)| {
            others.insert(0, first);
            others
        })
    }

    /// Pictures shaped like an encoder's: optional parameter sets, then slices of
    /// one type (IDR or not) where only the first has `first_mb_in_slice` = 0.
    /// The depacketizer's loss recovery relies on that shape.
    fn realistic_access_units() -> impl Strategy<Value = Vec<Vec<Bytes>>> {
        let picture = (
            any::<bool>(),
            1usize..5,
            proptest::collection::vec(any::<u8>(), 1..1500),
        )
            .prop_map(|(idr, slices, body)| {
                let mut au = Vec::new();
                if idr {
                    au.push(Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0xda]));
                    au.push(Bytes::from_static(&[0x68, 0xce, 0x38, 0x80]));
                }
                for n in 0..slices {
                    let mut nal = vec![if idr { 0x65 } else { 0x41 }];
                    nal.push(if n == 0 {
                        0x80 | body[0]
                    } else {
                        0x7f & body[0]
                    });
                    nal.extend_from_slice(&body[..body.len() / (n + 1)]);
                    au.push(Bytes::from(nal));
                }
                au
            });
        proptest::collection::vec(picture, 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn packetize_then_depacketize_gives_the_same_nalus(
            aus in access_units(),
            mtu in 3usize..1500,
            aggregate in any::<bool>(),
            seq0 in any::<u16>(),
            ts0 in any::<u32>(),
        ) {
            let packetizer = H264Packetizer::new(mtu).unwrap().with_aggregation(aggregate);
            let mut d = H264Depacketizer::new();
            let mut seq = seq0;
            let mut out = Vec::new();
            for (n, au) in aus.iter().enumerate() {
                let ts = ts0.wrapping_add(3000 * n as u32);
                let payloads = packetizer.packetize(au).unwrap();
                prop_assert!(payloads.iter().all(|p| p.len() <= mtu));
                let last = payloads.len() - 1;
                for (i, p) in payloads.into_iter().enumerate() {
                    d.push(p, seq, ts, i == last).unwrap();
                    seq = seq.wrapping_add(1);
                }
                out.extend(std::iter::from_fn(|| d.pop()));
            }
            prop_assert_eq!(out.len(), aus.len());
            for (n, (got, want)) in out.iter().zip(&aus).enumerate() {
                prop_assert_eq!(&got.nalus, want);
                prop_assert_eq!(got.timestamp, u64::from(ts0) + 3000 * n as u64);
            }
            prop_assert_eq!(d.stats().lost_packets, 0);
        }

        #[test]
        fn depacketizer_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            fuzzing::fuzz_h264_depacketize(&data);
        }

        #[test]
        fn depacketizer_survives_shuffled_valid_packets(
            aus in realistic_access_units(),
            swaps in proptest::collection::vec((0usize..64, 0usize..64), 0..10),
            drops in proptest::collection::vec(0usize..64, 0..3),
        ) {
            let packetizer = H264Packetizer::new(500).unwrap();
            let mut packets = Vec::new();
            let mut seq = 0u16;
            for (n, au) in aus.iter().enumerate() {
                let payloads = packetizer.packetize(au).unwrap();
                let last = payloads.len() - 1;
                for (i, p) in payloads.into_iter().enumerate() {
                    packets.push((p, seq, 3000 * n as u32, i == last));
                    seq += 1;
                }
            }
            for (a, b) in swaps {
                if a < packets.len() && b < packets.len() {
                    packets.swap(a, b);
                }
            }
            for i in drops {
                if i < packets.len() {
                    packets.remove(i);
                }
            }
            let mut d = H264Depacketizer::new();
            let mut out = Vec::new();
            for (p, seq, ts, marker) in packets {
                let _ = d.push(p, seq, ts, marker);
                out.extend(std::iter::from_fn(|| d.pop()));
            }
            let _ = d.flush();
            out.extend(std::iter::from_fn(|| d.pop()));
            // Whatever came out is an ordered subset of the input pictures,
            // starting with a keyframe, each with all its slices. Only leading
            // parameter sets can go missing unnoticed (lost with their packet).
            let mut last_ts = None;
            for au in &out {
                let n = (au.timestamp / 3000) as usize;
                prop_assert!(last_ts < Some(au.timestamp));
                last_ts = Some(au.timestamp);
                let want = &aus[n];
                prop_assert!(want.ends_with(&au.nalus), "picture {} damaged", n);
                let missing = &want[..want.len() - au.nalus.len()];
                prop_assert!(missing.iter().all(|nal| matches!(nal[0] & 0x1f, 7 | 8)));
            }
            if let Some(first) = out.first() {
                prop_assert!(first.keyframe);
            }
        }

        #[test]
        fn sps_and_friends_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            fuzzing::fuzz_h264_sps(&data);
        }

        #[test]
        fn emulation_prevention_round_trips(rbsp in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(3u8), any::<u8>()], 0..200)) {
            let escaped = add_emulation_prevention(&rbsp);
            prop_assert!(!escaped.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
            prop_assert_eq!(&*remove_emulation_prevention(&escaped), &rbsp[..]);
        }

        #[test]
        fn annexb_and_avcc_round_trip(bodies in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..100), 1..8)) {
            // Real NAL units: a header byte, escaped payload, and a non-zero
            // last byte (rbsp_trailing_bits).
            let nalus: Vec<Vec<u8>> = bodies.into_iter().map(|mut b| {
                b.push(0x80);
                let mut nal = vec![0x41];
                nal.extend(add_emulation_prevention(&b));
                nal
            }).collect();
            let mut stream = Vec::new();
            for (i, nal) in nalus.iter().enumerate() {
                stream.extend_from_slice(if i % 2 == 0 { &[0, 0, 0, 1][..] } else { &[0, 0, 1][..] });
                stream.extend_from_slice(nal);
            }
            let split: Vec<&[u8]> = annexb_nalus(&stream).collect();
            let want: Vec<&[u8]> = nalus.iter().map(|n| &n[..]).collect();
            prop_assert_eq!(&split, &want);
            let avcc = annexb_to_avcc(&stream);
            let back = avcc_to_annexb(&avcc, 4).unwrap();
            let again: Vec<&[u8]> = annexb_nalus(&back).collect();
            prop_assert_eq!(again, want);
        }
    }
}

mod opus {
    use bytes::Bytes;
    use proptest::prelude::*;
    use skylark_media::fuzzing;
    use skylark_media::opus::{parse_packet, OpusDepacketizer, Toc};

    proptest! {
        #[test]
        fn opus_parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            fuzzing::fuzz_opus_toc(&data);
        }

        /// Code 3 CBR packets built from parts parse back to what was built.
        #[test]
        fn code3_cbr_round_trips(config in 0u8..32, stereo in any::<bool>(),
                                 frames in 1u8..=48, frame_len in 0usize..100, padding in 0usize..600) {
            let toc = (config << 3) | (u8::from(stereo) << 2) | 3;
            let mut p = vec![toc, frames | if padding > 0 { 0x40 } else { 0 }];
            if padding > 0 {
                let mut left = padding;
                while left >= 255 { p.push(255); left -= 254; }
                p.push(left as u8);
            }
            p.extend(std::iter::repeat_n(0x55, frame_len * usize::from(frames)));
            p.extend(std::iter::repeat_n(0, padding));
            let samples = Toc::from_byte(toc).frame_samples() * u32::from(frames);
            match parse_packet(&p) {
                Ok(info) => {
                    prop_assert_eq!(info.frames, frames);
                    prop_assert_eq!(info.samples, samples);
                }
                Err(_) => prop_assert!(samples > 5760),
            }
        }

        #[test]
        fn depacketizer_releases_in_order(order in Just((0u16..40).collect::<Vec<_>>()).prop_shuffle(),
                                          start in any::<u16>()) {
            // Shuffle within windows of 4 so that the reorder buffer can undo
            // it; the first packet stays first, as it defines where the stream
            // starts (anything older is late).
            let mut seqs: Vec<u16> = (0..40).collect();
            for chunk in seqs[1..].chunks_mut(4) {
                chunk.sort_by_key(|s| order[usize::from(*s)]);
            }
            let mut d = OpusDepacketizer::new();
            let mut out = Vec::new();
            for s in seqs {
                d.push(Bytes::from_static(&[0xfc, 0]), start.wrapping_add(s), u32::from(s) * 960).unwrap();
                out.extend(std::iter::from_fn(|| d.pop()));
            }
            prop_assert_eq!(out.len(), 40);
            for (n, p) in out.iter().enumerate() {
                prop_assert_eq!(p.timestamp, n as u64 * 960);
                prop_assert!(!p.discontinuity);
            }
        }
    }
}

mod hls_and_fmp4 {
    use proptest::prelude::*;
    use skylark_media::aac::AudioSpecificConfig;
    use skylark_media::fmp4::{init_segment, Track};
    use skylark_media::hls::check::{self, MediaPlaylistText};
    use skylark_media::hls::{MediaPlaylist, Part, Segment};

    /// What happens at a live edge between two playlists served, as the segmenter and
    /// the store drive one (a segment's last part and its end are one change).
    #[derive(Debug, Clone)]
    enum Edge {
        /// The next part (it opens a segment if none is open).
        Part,
        /// The open segment's last part: the segment completes.
        LastPart,
        /// The open segment's last part, and the next segment starts with a new init after
        /// a discontinuity (an encoder's new resolution).
        NewInit,
    }

    fn edge() -> impl Strategy<Value = Edge> {
        prop_oneof![8 => Just(Edge::Part), 2 => Just(Edge::LastPart), 1 => Just(Edge::NewInit)]
    }

    /// Applies `e` as the store does (hint, window), 200 ms parts on a continuous clock; a
    /// segment closes by 2 s, as the segmenter cuts them.
    fn live_edge(pl: &mut MediaPlaylist, e: &Edge, window: usize, inits: &mut u32) {
        if pl.segments.last().is_none_or(|s| s.complete) {
            let msn = pl.media_sequence + pl.segments.len() as u64;
            let pdt = pl.segments.last().map_or(1_795_533_260_000, |s| {
                s.program_date_time_ms + (s.duration * 1000.0).round() as i64
            });
            pl.open_segment(Segment {
                uri: format!("seg{msn}.m4s"),
                duration: 0.0,
                program_date_time_ms: pdt,
                discontinuity: false,
                independent: true,
                parts: Vec::new(),
                complete: false,
                map_uri: None,
            });
        }
        let msn = pl.media_sequence + pl.segments.len() as u64 - 1;
        let s = pl.segments.last_mut().unwrap();
        let p = s.parts.len();
        s.parts.push(Part {
            uri: format!("seg{msn}.{p}.m4s"),
            duration: 0.2,
            independent: p == 0,
        });
        s.duration = 0.2 * (p + 1) as f64;
        if matches!(e, Edge::Part) && p + 1 < 10 {
            pl.preload_hint = Some(format!("seg{msn}.{}.m4s", p + 1));
            return;
        }
        s.complete = true;
        pl.preload_hint = Some(format!("seg{}.0.m4s", msn + 1));
        while pl.segments.len() > window {
            pl.remove_oldest();
        }
        if matches!(e, Edge::NewInit) {
            *inits += 1;
            pl.next_init(format!("init{inits}.mp4"), true);
        }
    }

    fn parsed(text: &str) -> MediaPlaylistText {
        check::parse_media(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    proptest! {
        /// Any run of parts, segments and init changes (each after a discontinuity) at a
        /// live edge, with the window sliding and delta updates offered: every playlist
        /// keeps `hls::check`'s rules, on its own and as a reload of the one before (a
        /// full one and a delta update): the segment a hint opens starts with the init
        /// and discontinuity listed ahead of the hint, and each segment's discontinuity
        /// sequence number stays as the window slides.
        #[test]
        fn init_changes_at_the_live_edge_keep_the_rules(
            edges in proptest::collection::vec(edge(), 1..400),
            window in 2usize..40,
            delta_updates in any::<bool>(),
        ) {
            let mut pl = MediaPlaylist::new(2.0, 0.2);
            pl.delta_updates = delta_updates;
            pl.next_init("init0.mp4".into(), false);
            let mut inits = 0;
            let mut prev: Option<MediaPlaylistText> = None;
            for e in &edges {
                live_edge(&mut pl, e, window, &mut inits);
                if !pl.segments.iter().any(|s| s.complete) {
                    continue; // the store serves no playlist before its first segment
                }
                let (text, delta_text) = (pl.render(), pl.render_delta());
                let (full, delta) = (parsed(&text), parsed(&delta_text));
                prop_assert_eq!(check::check_media(&full), vec![], "{}", text);
                prop_assert_eq!(check::check_media(&delta), vec![], "{}", delta_text);
                if let Some(prev) = &prev {
                    prop_assert_eq!(check::check_reload(prev, &full), vec![], "{:?}\n{}", e, text);
                    prop_assert_eq!(check::check_delta(prev, &delta), vec![], "{:?}\n{}", e, delta_text);
                }
                prev = Some(full);
            }
        }

        /// RFC 8216 §4.3.3.1 over any run of segment durations: every `EXTINF` rounded
        /// ≤ `EXT-X-TARGETDURATION`, which never shrinks, and `HOLD-BACK` ≥ 3 × target.
        #[test]
        fn target_duration_covers_every_segment_and_never_shrinks(
            durations in proptest::collection::vec(0.2f64..7.0, 1..40),
            target in prop_oneof![Just(1.0f64), Just(2.0), Just(1.5), Just(4.0)],
        ) {
            let mut pl = MediaPlaylist::new(target, 0.2);
            let mut last_target = 0;
            for (n, d) in durations.iter().enumerate() {
                pl.segments.push(Segment {
                    uri: format!("seg{n}.m4s"),
                    duration: *d,
                    program_date_time_ms: 0,
                    discontinuity: false,
                    independent: true,
                    parts: Vec::new(),
                    complete: true,
                    map_uri: None,
                });
                pl.note_segment(*d);
                if pl.segments.len() > 8 {
                    pl.segments.remove(0);
                    pl.media_sequence += 1;
                }
                let text = pl.render();
                let t: u64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                for l in text.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
                    let d: f64 = l.trim_end_matches(',').parse().unwrap();
                    prop_assert!(d.round() as u64 <= t, "{d} > {t}");
                }
                prop_assert!(t >= last_target);
                prop_assert!(t as f64 >= target.ceil());
                let hold_back = format!("HOLD-BACK={:.3}", 3.0 * t as f64);
                prop_assert!(text.contains(&hold_back), "{}", text);
                last_target = t;
            }
        }

        /// Any AudioSpecificConfig that parses either is refused with an error or makes
        /// an init segment whose esds carries it; never a panic.
        #[test]
        fn aac_init_segments_never_panic(data in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(asc) = AudioSpecificConfig::parse(&data) {
                if let Ok(track) = Track::aac(1, asc.clone()) {
                    let init = init_segment(&[track]).unwrap();
                    let bytes = asc.to_bytes().unwrap();
                    let dsi = [&[0x05, bytes.len() as u8][..], &bytes].concat();
                    prop_assert!(init.windows(dsi.len()).any(|w| w == dsi.as_slice()));
                }
            }
        }
    }
}
