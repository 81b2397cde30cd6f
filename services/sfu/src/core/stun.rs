//! Just enough STUN (RFC 8489) to find whose ICE check a datagram is: the local ufrag
//! in a Binding request's USERNAME. Anything else a stranger sends is dropped before a
//! peer sees it, so this runs on attacker bytes: every read is bounds-checked and the
//! walk is bounded by the datagram's own length.

/// Magic cookie of RFC 5389 and later; older STUN has none and WebRTC never sends it.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const USERNAME: u16 = 0x0006;
/// RFC 8489 §14.3: USERNAME is under 513 bytes.
const MAX_USERNAME: usize = 513;

/// What a datagram is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind<'a> {
    /// Not a STUN message (DTLS, RTP, RTCP or junk).
    NotStun,
    /// A Binding request whose USERNAME is `local:remote`: `local` is ours.
    Request { local_ufrag: &'a str },
    /// STUN, but not a Binding request with a usable USERNAME (a response, an
    /// indication, or a request without one).
    Other,
}

/// Classifies `d` without allocating.
pub(super) fn classify(d: &[u8]) -> Kind<'_> {
    let Some(header) = d.get(..HEADER) else {
        return Kind::NotStun;
    };
    // RFC 7983 demultiplexing: STUN starts 0..=3; the length counts the attributes only
    // and is a multiple of 4.
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header[0] > 3 || header[4..8] != MAGIC_COOKIE || len % 4 != 0 || HEADER + len != d.len() {
        return Kind::NotStun;
    }
    if u16::from_be_bytes([header[0], header[1]]) != BINDING_REQUEST {
        return Kind::Other;
    }
    match username(&d[HEADER..]) {
        Some(u) => match u.split_once(':') {
            Some((local, _)) if !local.is_empty() => Kind::Request { local_ufrag: local },
            _ => Kind::Other,
        },
        None => Kind::Other,
    }
}

/// The USERNAME value among `attrs`, if it is there and UTF-8.
fn username(mut attrs: &[u8]) -> Option<&str> {
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == USERNAME {
            return (len <= MAX_USERNAME)
                .then(|| std::str::from_utf8(value).ok())
                .flatten();
        }
        // Values are padded to 4 bytes.
        let next = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(next..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with `attrs` (type, value) after the header.
    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut d = vec![0, 1];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn finds_the_local_ufrag_after_other_attributes() {
        // PRIORITY first, then USERNAME of odd length (padded).
        let d = request(&[(0x0024, &[0, 0, 0, 1]), (USERNAME, b"abcd:xyz")]);
        assert_eq!(
            classify(&d),
            Kind::Request {
                local_ufrag: "abcd"
            }
        );
        let d = request(&[(USERNAME, b"abc:x")]);
        assert_eq!(classify(&d), Kind::Request { local_ufrag: "abc" });
    }

    #[test]
    fn requests_without_a_usable_username_are_other() {
        assert_eq!(classify(&request(&[])), Kind::Other);
        assert_eq!(classify(&request(&[(USERNAME, b"nocolon")])), Kind::Other);
        assert_eq!(classify(&request(&[(USERNAME, b":remote")])), Kind::Other);
        assert_eq!(
            classify(&request(&[(USERNAME, &[0xff, b':', 1])])),
            Kind::Other
        );
        let long = [b'a'; MAX_USERNAME + 3];
        assert_eq!(classify(&request(&[(USERNAME, &long)])), Kind::Other);
        // A response is STUN but not a request.
        let mut d = request(&[(USERNAME, b"a:b")]);
        d[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(classify(&d), Kind::Other);
    }

    #[test]
    fn broken_headers_and_lengths_are_not_stun() {
        let good = request(&[(USERNAME, b"abcd:xyz")]);
        assert_eq!(classify(&good[..19]), Kind::NotStun);
        assert_eq!(classify(&good[..good.len() - 4]), Kind::NotStun);
        let mut d = good.clone();
        d[4] = 0;
        assert_eq!(classify(&d), Kind::NotStun, "no magic cookie");
        let mut d = good.clone();
        d[0] = 0x80;
        assert_eq!(classify(&d), Kind::NotStun, "RTP's first byte");
        // An attribute length that runs past the end.
        let mut d = good;
        d[HEADER + 3] = 200;
        assert_eq!(classify(&d), Kind::Other);
        assert_eq!(classify(&[]), Kind::NotStun);
    }

    proptest::proptest! {
        /// Any bytes: no panic, and only a well-formed header is STUN.
        #[test]
        fn any_bytes_classify_without_panic(d in proptest::collection::vec(0u8.., 0..1600)) {
            let c = classify(&d);
            if c != Kind::NotStun {
                proptest::prop_assert!(d.len() >= HEADER && d[4..8] == MAGIC_COOKIE);
            }
        }

        /// A real-shaped request with bytes overwritten: no panic, and a ufrag found is
        /// within the datagram.
        #[test]
        fn mutated_requests_classify_without_panic(
            user in "[a-zA-Z0-9+/]{1,40}:[a-zA-Z0-9+/]{1,40}",
            edits in proptest::collection::vec((0usize..200, 0u8..), 0..8),
        ) {
            let mut d = request(&[(0x0024, &[1, 2, 3, 4]), (USERNAME, user.as_bytes()), (0x0008, &[9; 20])]);
            for (at, b) in edits {
                let n = d.len();
                d[at % n] = b;
            }
            if let Kind::Request { local_ufrag } = classify(&d) {
                proptest::prop_assert!(local_ufrag.len() < d.len());
            }
        }
    }
}
