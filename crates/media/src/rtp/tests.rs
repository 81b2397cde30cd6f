use bytes::Bytes;

use super::*;

/// A packet with every feature: 2 CSRCs, one-byte extensions, padding.
fn full_packet() -> Vec<u8> {
    vec![
        0xb2, 0x60, 0xff, 0xff, // V=2 P=1 X=1 CC=2, M=0 PT=96, seq 65535
        0xde, 0xad, 0xbe, 0xef, // timestamp
        0x01, 0x02, 0x03, 0x04, // SSRC
        0x00, 0x00, 0x00, 0x0a, // CSRC 10
        0x00, 0x00, 0x00, 0x0b, // CSRC 11
        0xbe, 0xde, 0x00, 0x02, // one-byte extension profile, 2 words
        0x10, 0xaa, // id 1, len 1
        0x00, // padding between elements
        0x21, 0xbb, 0xcc, // id 2, len 2
        0x00, 0x00, // padding to the word
        0x41, 0x42, 0x43, // payload "ABC"
        0x00, 0x00, 0x03, // 3 bytes of padding
    ]
}

#[test]
fn parses_every_header_field() {
    let bytes = full_packet();
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.version(), 2);
    assert!(pkt.has_padding());
    assert!(pkt.has_extension());
    assert!(!pkt.marker());
    assert_eq!(pkt.payload_type(), 96);
    assert_eq!(pkt.sequence_number(), 65535);
    assert_eq!(pkt.timestamp(), 0xdead_beef);
    assert_eq!(pkt.ssrc(), 0x0102_0304);
    assert_eq!(pkt.csrcs().collect::<Vec<_>>(), [10, 11]);
    assert_eq!(pkt.extension_profile(), Some(ONE_BYTE_PROFILE));
    assert_eq!(
        pkt.extensions().collect::<Vec<_>>(),
        [(1, &[0xaa][..]), (2, &[0xbb, 0xcc][..])]
    );
    assert_eq!(pkt.extension(2), Some(&[0xbb, 0xcc][..]));
    assert_eq!(pkt.extension(3), None);
    assert_eq!(pkt.payload(), b"ABC");
    assert_eq!(pkt.padding_len(), 3);
    assert_eq!(&bytes[pkt.payload_range()], b"ABC");
}

#[test]
fn minimal_packet_has_empty_payload() {
    let bytes = [0x80, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.payload(), b"");
    assert_eq!(pkt.csrcs().len(), 0);
    assert_eq!(pkt.extensions().count(), 0);
    assert_eq!(pkt.padding_len(), 0);
}

#[test]
fn two_byte_extensions_allow_empty_and_long_elements() {
    let mut bytes = vec![0x90, 0x6f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend_from_slice(&[0x10, 0x00, 0x00, 0x03]); // profile 0x1000, 3 words
    bytes.extend_from_slice(&[0x05, 0x00]); // id 5, empty
    bytes.extend_from_slice(&[0x00]); // padding
    bytes.extend_from_slice(&[0x20, 0x05, 1, 2, 3, 4, 5]); // id 32, 5 bytes
    bytes.extend_from_slice(&[0x00, 0x00]); // padding to the word
    bytes.push(0x99);
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert!(!pkt.marker());
    assert_eq!(pkt.payload_type(), 111);
    assert_eq!(
        pkt.extensions().collect::<Vec<_>>(),
        [(5, &[][..]), (32, &[1, 2, 3, 4, 5][..])]
    );
    assert_eq!(pkt.payload(), &[0x99]);
}

#[test]
fn one_byte_id_15_stops_extension_processing() {
    let mut bytes = vec![0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x01, 0xf0, 0x30]);
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.extensions().collect::<Vec<_>>(), [(1, &[1][..])]);
}

#[test]
fn truncated_extension_element_ends_iteration() {
    let mut bytes = vec![0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    // id 1 claims 4 bytes but only 3 remain in the block.
    bytes.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x13, 0x01, 0x02, 0x03]);
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.extensions().count(), 0);
}

#[test]
fn unknown_extension_profile_exposes_raw_data_only() {
    let mut bytes = vec![0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend_from_slice(&[0x12, 0x34, 0x00, 0x01, 1, 2, 3, 4]);
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.extension_profile(), Some(0x1234));
    assert_eq!(pkt.extension_data(), Some(&[1, 2, 3, 4][..]));
    assert_eq!(pkt.extensions().count(), 0);
}

#[test]
fn rejects_malformed_headers() {
    assert!(matches!(
        RtpPacket::parse(&[0x80; 11]),
        Err(RtpError::TooShort { needed: 12, .. })
    ));
    let mut v1 = vec![0x40; 12];
    v1[0] = 0x40;
    assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));

    // CC=3 but no CSRCs.
    let mut cc = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        RtpPacket::parse(&cc),
        Err(RtpError::TooShort {
            what: "CSRC list",
            ..
        })
    ));
    cc.extend_from_slice(&[0; 12]);
    assert!(RtpPacket::parse(&cc).is_ok());

    // X=1 with an extension longer than the packet.
    let ext = [
        0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0x00, 0x02, 0, 0,
    ];
    assert!(matches!(
        RtpPacket::parse(&ext),
        Err(RtpError::TooShort {
            what: "header extension",
            ..
        })
    ));

    // P=1 with a zero count, and with a count larger than the body.
    let mut pad = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55, 0x00];
    assert!(matches!(
        RtpPacket::parse(&pad),
        Err(RtpError::BadPadding { padding: 0, .. })
    ));
    *pad.last_mut().unwrap() = 3;
    assert!(matches!(
        RtpPacket::parse(&pad),
        Err(RtpError::BadPadding { padding: 3, .. })
    ));
    *pad.last_mut().unwrap() = 2;
    assert_eq!(RtpPacket::parse(&pad).unwrap().payload(), b"");
}

#[test]
fn writer_round_trips_the_full_packet() {
    let bytes = full_packet();
    let pkt = RtpPacket::parse(&bytes).unwrap();
    let header = RtpHeader::from_packet(&pkt);
    assert_eq!(header.padding, 3);
    let written = header.to_packet(pkt.payload()).unwrap();
    // The writer packs extensions without the inter-element padding byte, so
    // compare the parsed view rather than the bytes.
    let again = RtpPacket::parse(&written).unwrap();
    assert_eq!(RtpHeader::from_packet(&again), header);
    assert_eq!(again.payload(), b"ABC");
    assert_eq!(written.len(), header.header_len().unwrap() + 3 + 3);
}

#[test]
fn writer_produces_exact_bytes_for_a_plain_header() {
    let header = RtpHeader {
        marker: true,
        payload_type: 96,
        sequence_number: 0x1234,
        timestamp: 0x0102_0304,
        ssrc: 0xcafe_babe,
        ..RtpHeader::default()
    };
    assert_eq!(
        header.to_packet(&[9]).unwrap(),
        [0x80, 0xe0, 0x12, 0x34, 1, 2, 3, 4, 0xca, 0xfe, 0xba, 0xbe, 9]
    );
}

#[test]
fn writer_switches_to_two_byte_extensions_when_needed() {
    let header = RtpHeader {
        extensions: vec![
            (1, Bytes::from_static(&[1])),
            (20, Bytes::from_static(&[])),
            (3, Bytes::from(vec![7; 17])),
        ],
        ..RtpHeader::default()
    };
    let bytes = header.to_packet(b"x").unwrap();
    let pkt = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(pkt.extension_profile(), Some(0x1000));
    let ext: Vec<_> = pkt.extensions().collect();
    assert_eq!(ext.len(), 3);
    assert_eq!(ext[1], (20, &[][..]));
    assert_eq!(ext[2].1.len(), 17);
    assert_eq!(pkt.payload(), b"x");
}

#[test]
fn writer_rejects_invalid_headers() {
    let bad_pt = RtpHeader {
        payload_type: 128,
        ..Default::default()
    };
    assert_eq!(bad_pt.to_packet(&[]), Err(RtpWriteError::PayloadType(128)));
    let many_csrcs = RtpHeader {
        csrcs: vec![0; 16],
        ..Default::default()
    };
    assert_eq!(
        many_csrcs.to_packet(&[]),
        Err(RtpWriteError::TooManyCsrcs(16))
    );
    let id0 = RtpHeader {
        extensions: vec![(0, Bytes::from_static(b"a"))],
        ..Default::default()
    };
    assert_eq!(id0.to_packet(&[]), Err(RtpWriteError::ExtensionId(0)));
    let long = RtpHeader {
        extensions: vec![(1, Bytes::from(vec![0; 256]))],
        ..Default::default()
    };
    assert!(matches!(
        long.to_packet(&[]),
        Err(RtpWriteError::ExtensionTooLong { id: 1, len: 256 })
    ));
    let mut out = vec![1, 2];
    assert!(long.write(&[], &mut out).is_err());
    assert_eq!(out, [1, 2], "nothing is appended on error");
}
