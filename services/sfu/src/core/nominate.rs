//! Nominating the path a peer's DTLS comes on, when the peer has not done it yet.
//!
//! The SFU is an ice-lite agent, and str0m sends only on a path the peer nominated
//! (USE-CANDIDATE). Browsers send their DTLS ClientHello as soon as a check of theirs
//! works but nominate with a later check: Chromium, facing an ice-lite peer, with its
//! next check of the path, ~48 ms later. Until then str0m held our answer to the hello,
//! and that wait was most of every join's DTLS time. The hello tells which path the
//! peer chose, so the core nominates that path in its name: a copy of the peer's last
//! check from there (its USERNAME, PRIORITY and ICE-CONTROLLING) with USE-CANDIDATE
//! added, signed with our ICE password as the peer's checks are. str0m's response to
//! that copy is not sent. A later nomination of the peer's own counts as usual (str0m
//! sends on the highest-priority nominated path).

use super::datagram::Route;
use super::peer::{PathState, Peer, PeerCheck};
use std::net::SocketAddr;
use std::time::Instant;
use str0m::crypto::CryptoProvider;
use str0m::ice::{StunMessage, TransId};
use str0m::net::Receive;
use str0m::Input;

/// RFC 8489 §14.3: USERNAME is under 513 bytes.
const MAX_USERNAME: usize = 513;
/// Room for a Binding request with the attributes we copy.
const CHECK_BUF: usize = 1024;

/// A STUN message `p` sent from `source`, accepted by its `Rtc` (integrity checked).
pub(super) fn note_check(p: &mut Peer, source: Route, contents: &[u8]) {
    let path = &mut p.path;
    if path.nominated {
        return;
    }
    let Ok(msg) = StunMessage::parse(contents) else {
        return;
    };
    if !msg.is_binding_request() {
        return;
    }
    if msg.use_candidate() {
        path.nominated = true;
        path.check = None;
        return;
    }
    // Only a controlling peer nominates; its checks carry ICE-CONTROLLING.
    let (Some(username), Some(prio), Some(tie_breaker)) =
        (msg.username(), msg.prio(), msg.ice_controlling())
    else {
        return;
    };
    if username.len() > MAX_USERNAME {
        return;
    }
    path.check = Some(PeerCheck {
        source,
        username: username.to_string(),
        prio,
        tie_breaker,
    });
}

/// DTLS from `source` (arriving at our `local` candidate) while the peer has nominated
/// no path: nominates the one it came on, if the peer's last check came from there too
/// (same address, same protocol). Called before the DTLS datagram goes in, so str0m's
/// answer to it can leave at once.
pub(super) fn nominate_dtls_path(
    p: &mut Peer,
    crypto: &CryptoProvider,
    local: SocketAddr,
    source: Route,
    now: Instant,
) {
    let path = &mut p.path;
    if path.nominated {
        return;
    }
    let Some(check) = path.check.take_if(|c| c.source == source) else {
        return;
    };
    path.nominated = true;
    let msg = StunMessage::binding_request(
        &check.username,
        TransId::new(),
        true,
        check.tie_breaker,
        check.prio,
        true,
    );
    let mut buf = vec![0; CHECK_BUF];
    let hmac = |key: &[u8], data: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(key, data);
    let Ok(n) = msg.to_bytes(Some(path.ice_pass.as_bytes()), &mut buf, hmac) else {
        return;
    };
    buf.truncate(n);
    path.own_check = buf.get(8..20).and_then(|t| t.try_into().ok());
    let Ok(contents) = buf.as_slice().try_into() else {
        return;
    };
    let (proto, source) = source;
    let input = Input::Receive(
        now,
        Receive {
            proto,
            source,
            destination: local,
            contents,
        },
    );
    tracing::debug!(session = %p.session, %source, ?proto, "DTLS before a nomination: nominating its path");
    if let Err(e) = p.rtc.handle_input(input) {
        tracing::debug!(session = %p.session, error = %e, "nominating check refused; closing session");
        p.rtc.disconnect();
    }
}

/// Whether `d` is str0m's response to the core's own check (not for the peer); the
/// check is answered once, so it is forgotten then.
pub(super) fn is_own_response(path: &mut PathState, d: &[u8]) -> bool {
    let Some(tid) = path.own_check else {
        return false;
    };
    // A Binding success response (0x0101) with the check's transaction id.
    let own = d.len() >= 20 && d[..2] == [0x01, 0x01] && d[8..20] == tid;
    if own {
        path.own_check = None;
    }
    own
}

/// RFC 7983: DTLS records start with a byte in 20..=63.
pub(super) fn is_dtls(d: &[u8]) -> bool {
    d.first().is_some_and(|b| (20..=63).contains(b))
}
