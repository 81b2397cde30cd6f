//! Known-answer vectors (RFC 3711 Appendix B, RFC 7714 §16–17, libsrtp's own
//! `srtp_validate` packets), round trips, tampering and junk input.

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn master(profile: Profile, key: &str, salt: &str) -> MasterKey {
    MasterKey {
        profile,
        key: hex(key),
        salt: hex(salt),
    }
}

/// RFC 3711 B.2: AES-CM keystream, session key and (pre-shifted) salt given, SSRC and
/// index zero; three blocks at the start of the segment and three near its end.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = ctr_key(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
    let salt: [u8; CM_SALT_LEN] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let mut stream = vec![0; 16 * 0xff02];
    ctr_apply(&key, iv, &mut stream).unwrap();
    assert_eq!(
        stream[..48],
        hex("E03EAD0935C95E80E166B16DD92B4EB4
             D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0")
    );
    assert_eq!(
        stream[16 * 0xfeff..],
        hex("EC8CDF7398607CB0F2D21675EA9EA1E4
             362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44")
    );
}

/// RFC 3711 B.3: session encryption key, salt and authentication key from a master.
#[test]
fn rfc3711_b3_key_derivation() {
    let m = master(
        Profile::Aes128CmSha1_80,
        "E1F97A0D3E018BE0D64FA32C06DE4139",
        "0EC675AD498AFEEBB6960B3AABE6",
    );
    let prf = Prf::new(&m).unwrap();
    let mut enc = [0; 16];
    prf.derive(LABEL_RTP_ENC, &mut enc).unwrap();
    assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0; 14];
    prf.derive(LABEL_RTP_SALT, &mut salt).unwrap();
    assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0; 20];
    prf.derive(LABEL_RTP_AUTH, &mut auth).unwrap();
    assert_eq!(
        auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
}

/// A GCM session with the given session key and salt for RTP and RTCP alike, as
/// RFC 7714's vectors are given (no KDF).
fn gcm_session(profile: Profile, key: &[u8], salt: &str) -> Session {
    let keys = || {
        let alg = if profile == Profile::Aes128Gcm {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        SessionKeys::Gcm {
            aead: LessSafeKey::new(UnboundKey::new(alg, key).unwrap()),
            salt: hex(salt).try_into().unwrap(),
        }
    };
    Session {
        profile,
        rtp: keys(),
        rtcp: keys(),
    }
}

const RFC7714_SALT: &str = "517569642070726f2071756f";
const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e697320646976697361
                           20696e207061727465732074726573";
const RFC7714_RTCP: &str = "81c8000d4d617273 4e5450314e545032525450200000042a0000e9304c756e61
                            deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
const RFC7714_SRTCP_INDEX: u32 = 0x5d4;

struct Rfc7714 {
    profile: Profile,
    key: Vec<u8>,
    srtp: &'static str,
    srtcp: &'static str,
    /// E = 0: authenticated, not encrypted.
    srtcp_auth_only: &'static str,
}

fn rfc7714_vectors() -> [Rfc7714; 2] {
    [
        Rfc7714 {
            profile: Profile::Aes128Gcm,
            key: hex("000102030405060708090a0b0c0d0e0f"),
            srtp: "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f
                   42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
            srtcp: "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1
                    730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade 800005d4",
            srtcp_auth_only: "81c8000d4d617273 4e5450314e545032525450200000042a0000e9304c756e61
                              deadbeefdeadbeefdeadbeefdeadbeefdeadbeef
                              841dd9683dd78ec92ae58790125f62b3 000005d4",
        },
        Rfc7714 {
            profile: Profile::Aes256Gcm,
            key: hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            srtp: "8040f17b8041f8d35501a0b2 32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3
                   b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
            srtcp: "81c8000d4d617273 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1
                    110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be 800005d4",
            srtcp_auth_only: "81c8000d4d617273 4e5450314e545032525450200000042a0000e9304c756e61
                              deadbeefdeadbeefdeadbeefdeadbeefdeadbeef
                              91db4afbfeee5a978fab4393ed2615fe 000005d4",
        },
    ]
}

/// RFC 7714 §16.1/§16.2 (RTP) and §17.1/§17.2 (RTCP), both GCM key sizes, both ways.
#[test]
fn rfc7714_gcm_vectors() {
    for v in rfc7714_vectors() {
        let session = || gcm_session(v.profile, &v.key, RFC7714_SALT);
        let mut sender = Sender {
            session: session(),
            srtcp_index: RFC7714_SRTCP_INDEX,
        };
        let receiver = Receiver { session: session() };

        let mut rtp = hex(RFC7714_RTP);
        sender.seal_rtp(&mut rtp, 12, 0).unwrap();
        assert_eq!(rtp, hex(v.srtp), "{:?} SRTP", v.profile);
        assert_eq!(
            receiver.open_rtp(&hex(v.srtp), 12, 0).unwrap(),
            hex(RFC7714_RTP)
        );

        let mut rtcp = hex(RFC7714_RTCP);
        sender.seal_rtcp(&mut rtcp).unwrap();
        assert_eq!(rtcp, hex(v.srtcp), "{:?} SRTCP", v.profile);
        assert_eq!(sender.srtcp_index, RFC7714_SRTCP_INDEX + 1);
        assert_eq!(
            receiver.open_rtcp(&hex(v.srtcp)).unwrap(),
            hex(RFC7714_RTCP)
        );
        assert_eq!(
            receiver.open_rtcp(&hex(v.srtcp_auth_only)).unwrap(),
            hex(RFC7714_RTCP)
        );
        let mut forged = hex(v.srtcp_auth_only);
        forged[20] ^= 1;
        assert_eq!(receiver.open_rtcp(&forged), Err(SrtpError::Auth));
    }
}

/// libsrtp's `srtp_validate` and `srtp_validate_gcm` known answers, from master keys
/// (so through the KDF, the GCM profile's 12-byte salt included). libsrtp numbers
/// its first SRTCP packet 1, ours is 0: the vector is our second packet.
#[test]
fn libsrtp_known_answers() {
    let rtp = "800f1234decafbadcafebabe abababababababababababababababab";
    let rtcp = "81c8000bcafebabe abababababababababababababababab";
    let cases = [
        (
            master(
                Profile::Aes128CmSha1_80,
                "e1f97a0d3e018be0d64fa32c06de4139",
                "0ec675ad498afeebb6960b3aabe6",
            ),
            "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb",
            "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
        ),
        (
            master(
                Profile::Aes128Gcm,
                "000102030405060708090a0b0c0d0e0f",
                "a0a1a2a3a4a5a6a7a8a9aaab",
            ),
            "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e
             d2976826f796b201df3131a127e8a392",
            "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025
             c52c6fbea2b3b446ea31123ba88ce61e 80000001",
        ),
    ];
    for (key, srtp, srtcp) in cases {
        let mut sender = Sender::new(&key).unwrap();
        let receiver = Receiver::new(&key).unwrap();
        let mut packet = hex(rtp);
        sender.seal_rtp(&mut packet, 12, 0).unwrap();
        assert_eq!(packet, hex(srtp), "{:?} SRTP", key.profile);
        assert_eq!(receiver.open_rtp(&packet, 12, 0).unwrap(), hex(rtp));

        let mut first = hex(rtcp);
        sender.seal_rtcp(&mut first).unwrap();
        assert_eq!(srtcp_trailer(key.profile, &first), E_FLAG, "first index 0");
        let mut second = hex(rtcp);
        sender.seal_rtcp(&mut second).unwrap();
        assert_eq!(second, hex(srtcp), "{:?} SRTCP", key.profile);
        assert_eq!(receiver.open_rtcp(&second).unwrap(), hex(rtcp));
        assert_eq!(receiver.open_rtcp(&first).unwrap(), hex(rtcp));
    }
}

/// The E flag and SRTCP index of a sealed RTCP packet.
fn srtcp_trailer(profile: Profile, sealed: &[u8]) -> u32 {
    let end = match profile {
        Profile::Aes128CmSha1_80 => sealed.len() - HMAC_TAG_LEN,
        Profile::Aes128Gcm | Profile::Aes256Gcm => sealed.len(),
    };
    be_u32(&sealed[end - SRTCP_INDEX_LEN..end])
}

const PROFILES: [Profile; 3] = [
    Profile::Aes128Gcm,
    Profile::Aes256Gcm,
    Profile::Aes128CmSha1_80,
];

/// Keying material 0, 1, 2, … for `profile`, split as the DTLS client would.
fn pair(profile: Profile) -> (Sender, Receiver) {
    let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
    let (ours, _) = split_keying(&material, profile, true).unwrap();
    (Sender::new(&ours).unwrap(), Receiver::new(&ours).unwrap())
}

/// An RTP packet: 12-byte header, then a one-byte-extension block of `ext_words`
/// words (X bit set) if any, then `payload`.
fn rtp_packet(ssrc: u32, seq: u16, ext_words: u16, payload: &[u8]) -> (Vec<u8>, usize) {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if ext_words > 0 {
        p[0] |= 0x10;
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&ext_words.to_be_bytes());
        p.extend((0..ext_words * 4).map(|i| i as u8));
    }
    let header_len = p.len();
    p.extend_from_slice(payload);
    (p, header_len)
}

#[test]
fn split_keying_follows_rfc5764_layout_and_dtls_role() {
    for profile in PROFILES {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let (k, s) = (profile.key_len(), profile.salt_len());
        let (ours, theirs) = split_keying(&material, profile, true).unwrap();
        assert_eq!(ours.key, material[..k]);
        assert_eq!(theirs.key, material[k..2 * k]);
        assert_eq!(ours.salt, material[2 * k..2 * k + s]);
        assert_eq!(theirs.salt, material[2 * k + s..]);
        let (server_ours, server_theirs) = split_keying(&material, profile, false).unwrap();
        assert_eq!(server_ours.key, theirs.key);
        assert_eq!(server_theirs.salt, ours.salt);
        assert_eq!(
            split_keying(&material[1..], profile, true).err(),
            Some(SrtpError::KeyingLength {
                got: material.len() - 1,
                want: material.len()
            })
        );
    }
    assert_eq!(Profile::Aes128Gcm.keying_material_len(), 56);
    assert_eq!(Profile::Aes256Gcm.keying_material_len(), 88);
    assert_eq!(Profile::Aes128CmSha1_80.keying_material_len(), 60);
}

#[test]
fn master_key_of_the_wrong_size_is_refused() {
    let mut key = master(Profile::Aes256Gcm, "00", "00");
    key.key = vec![0; 16];
    key.salt = vec![0; 12];
    assert!(matches!(
        Sender::new(&key),
        Err(SrtpError::KeyingLength { got: 28, want: 44 })
    ));
    assert!(Receiver::new(&key).is_err());
}

#[test]
fn rtp_round_trips_with_extensions_and_rollover() {
    for profile in PROFILES {
        let (sender, receiver) = pair(profile);
        assert_eq!(sender.rtp_overhead(), profile.tag_len());
        for (roc, seq, ext_words, len) in [(0, 1, 0, 160), (1, 0, 2, 1100), (70_000, 65535, 1, 0)] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (plain, header_len) = rtp_packet(0xcafe_babe, seq, ext_words, &payload);
            let mut sealed = plain.clone();
            sender.seal_rtp(&mut sealed, header_len, roc).unwrap();
            assert_eq!(sealed.len(), plain.len() + sender.rtp_overhead());
            assert_eq!(sealed[..header_len], plain[..header_len], "header in clear");
            if len > 0 {
                assert_ne!(sealed[header_len..plain.len()], plain[header_len..]);
            }
            assert_eq!(receiver.open_rtp(&sealed, header_len, roc).unwrap(), plain);
            // The ROC is part of the IV and (CM) the tag: a wrong one never opens.
            assert_eq!(
                receiver.open_rtp(&sealed, header_len, roc.wrapping_add(1)),
                Err(SrtpError::Auth),
                "{profile:?}"
            );
        }
    }
}

#[test]
fn seal_rtp_does_not_reallocate_when_capacity_is_reserved() {
    for profile in PROFILES {
        let (sender, _) = pair(profile);
        let (plain, header_len) = rtp_packet(1, 2, 0, &[9; 1100]);
        let mut packet = Vec::with_capacity(plain.len() + sender.rtp_overhead());
        packet.extend_from_slice(&plain);
        let before = packet.as_ptr();
        sender.seal_rtp(&mut packet, header_len, 0).unwrap();
        assert_eq!(packet.as_ptr(), before);
    }
}

#[test]
fn rtcp_round_trips_and_counts_its_index() {
    for profile in PROFILES {
        let (mut sender, receiver) = pair(profile);
        let plain = hex("81c90007 11223344 55667788 00000001 00000002 00000003 00000004 00000005");
        for index in 0..3 {
            let mut sealed = plain.clone();
            sender.seal_rtcp(&mut sealed).unwrap();
            assert_eq!(sealed.len(), plain.len() + sender.rtcp_overhead());
            assert_eq!(sealed[..8], plain[..8], "header and SSRC in clear");
            assert_eq!(srtcp_trailer(profile, &sealed), E_FLAG | index);
            assert_eq!(receiver.open_rtcp(&sealed).unwrap(), plain);
        }
        // The index is 31 bits and wraps to 0 (RFC 3711 §3.3.1).
        sender.srtcp_index = SRTCP_INDEX_MASK;
        let mut last = plain.clone();
        sender.seal_rtcp(&mut last).unwrap();
        assert_eq!(srtcp_trailer(profile, &last), E_FLAG | SRTCP_INDEX_MASK);
        assert_eq!(receiver.open_rtcp(&last).unwrap(), plain);
        assert_eq!(sender.srtcp_index, 0);
    }
}

#[test]
fn set_rtcp_index_sets_the_next_packets_index() {
    for profile in PROFILES {
        let (mut sender, receiver) = pair(profile);
        let plain = hex("80c90001 11223344");
        for (set, want) in [(1 << 30, 1 << 30), (u32::MAX, SRTCP_INDEX_MASK)] {
            sender.set_rtcp_index(set);
            let mut sealed = plain.clone();
            sender.seal_rtcp(&mut sealed).unwrap();
            assert_eq!(
                srtcp_trailer(profile, &sealed),
                E_FLAG | want,
                "{profile:?}"
            );
            assert_eq!(receiver.open_rtcp(&sealed).unwrap(), plain);
        }
    }
}

/// Any one flipped bit anywhere in a sealed packet, header, payload, index or tag,
/// fails authentication.
#[test]
fn tampering_anywhere_fails_authentication() {
    for profile in PROFILES {
        let (mut sender, receiver) = pair(profile);
        let (plain, header_len) = rtp_packet(7, 8, 1, &[0x5a; 40]);
        let mut rtp = plain.clone();
        sender.seal_rtp(&mut rtp, header_len, 3).unwrap();
        for i in 0..rtp.len() {
            let mut bad = rtp.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                receiver.open_rtp(&bad, header_len, 3),
                Err(SrtpError::Auth),
                "{profile:?} RTP byte {i}"
            );
        }
        let mut rtcp = hex("80c80006 11223344 0102030405060708090a0b0c0d0e0f101112131415161718");
        sender.seal_rtcp(&mut rtcp).unwrap();
        for i in 0..rtcp.len() {
            let mut bad = rtcp.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                receiver.open_rtcp(&bad),
                Err(SrtpError::Auth),
                "{profile:?} RTCP byte {i}"
            );
        }
    }
}

#[test]
fn short_packets_are_refused() {
    for profile in PROFILES {
        let (mut sender, receiver) = pair(profile);
        let mut tiny = vec![0x80; 11];
        assert_eq!(sender.seal_rtp(&mut tiny, 11, 0), Err(SrtpError::Short));
        assert_eq!(sender.seal_rtp(&mut tiny, 12, 0), Err(SrtpError::Short));
        let mut rtcp = vec![0x80; 7];
        assert_eq!(sender.seal_rtcp(&mut rtcp), Err(SrtpError::Short));
        assert_eq!(sender.srtcp_index, 0, "a refused packet takes no index");
        let header_only = [0x80; 12];
        assert_eq!(
            receiver.open_rtp(&header_only, 12, 0),
            Err(SrtpError::Short)
        );
        let tag_short = vec![0x80; 12 + profile.tag_len() - 1];
        assert_eq!(receiver.open_rtp(&tag_short, 12, 0), Err(SrtpError::Short));
        let rtcp_short = vec![0x80; 8 + SRTCP_INDEX_LEN + profile.tag_len() - 1];
        assert_eq!(receiver.open_rtcp(&rtcp_short), Err(SrtpError::Short));
    }
}

#[test]
fn sender_and_receiver_are_send() {
    fn send<T: Send>() {}
    send::<Sender>();
    send::<Receiver>();
}

fn profile() -> impl Strategy<Value = Profile> {
    prop::sample::select(PROFILES.to_vec())
}

proptest! {
    #[test]
    fn any_rtp_packet_round_trips(
        profile in profile(),
        ssrc: u32,
        seq: u16,
        roc: u32,
        ext_words in 0u16..4,
        payload in prop::collection::vec(any::<u8>(), 0..1400),
    ) {
        let (sender, receiver) = pair(profile);
        let (plain, header_len) = rtp_packet(ssrc, seq, ext_words, &payload);
        let mut sealed = plain.clone();
        sender.seal_rtp(&mut sealed, header_len, roc).unwrap();
        prop_assert_eq!(receiver.open_rtp(&sealed, header_len, roc).unwrap(), plain);
    }

    #[test]
    fn any_rtcp_packet_round_trips(
        profile in profile(),
        plain in prop::collection::vec(any::<u8>(), 8..1400),
    ) {
        let (mut sender, receiver) = pair(profile);
        let mut sealed = plain.clone();
        sender.seal_rtcp(&mut sealed).unwrap();
        prop_assert_eq!(receiver.open_rtcp(&sealed).unwrap(), plain);
    }

    /// Junk never panics; it is refused (a forgery passing would be a 2^-80 fluke).
    #[test]
    fn junk_never_opens_or_panics(
        profile in profile(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
        header_len in 0usize..64,
        roc: u32,
    ) {
        let (_, receiver) = pair(profile);
        prop_assert!(receiver.open_rtp(&junk, header_len, roc).is_err());
        prop_assert!(receiver.open_rtcp(&junk).is_err());
    }
}
