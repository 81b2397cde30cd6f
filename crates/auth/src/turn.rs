//! TURN credentials by the TURN REST scheme (draft-uberti-behave-turn-rest), as coturn
//! checks them with `use-auth-secret` + `static-auth-secret`: the username is
//! `expiry:id` (expiry in Unix seconds), the password base64(HMAC-SHA1(secret,
//! username)). Any TURN server holding the same secret accepts them until the expiry,
//! with no state shared with whoever minted them. SHA-1 because that is the scheme
//! coturn speaks; the secret, not the hash, is what an attacker lacks.
//!
//! Skylark's ids carry a [`TurnScope`] (`sfu:<session>`, `p2p:<room>:<conn>:<side>`):
//! what the embedded server may relay the credential to. coturn reads only the expiry.

use aws_lc_rs::hmac;
use base64::Engine;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::Duration;

/// A short-lived TURN username and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `expiry:id`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// When it stops working, Unix seconds.
    pub expires_at: u64,
}

impl TurnCredential {
    /// The RFC 9725 §4.6 `Link` header value that hands it to a WHIP/WHEP client with
    /// the TURN server `url` (`turn:host:3478?transport=udp`, `turns:…`).
    ///
    /// ```
    /// let c = skylark_auth::TurnSecret::new(b"s").mint("room", 1_700_000_000, std::time::Duration::from_secs(60));
    /// let link = c.link("turn:t.example:3478?transport=udp");
    /// assert!(link.starts_with("<turn:t.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000060:room\""));
    /// ```
    pub fn link(&self, url: &str) -> String {
        format!(
            "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
            self.username, self.credential
        )
    }
}

/// Why a TURN username and password were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TurnCredentialError {
    #[error("TURN username is not `expiry:id`")]
    Malformed,
    #[error("TURN credential expired: ask the server for a new one")]
    Expired,
    #[error("TURN password does not match the username")]
    Mismatch,
}

/// STUN's limit on a USERNAME (RFC 8489 §14.3), bytes.
pub const MAX_TURN_USERNAME: usize = 513;
/// Encoded room id in a p2p scope, bytes: with the longest expiry and connection id the
/// username stays within [`MAX_TURN_USERNAME`].
const MAX_ROOM: usize = 384;
/// Encoded session or connection id, bytes.
const MAX_ID: usize = 96;

/// A scope's id is too long to fit a STUN USERNAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TURN scope too long for a STUN username (room ids up to {MAX_ROOM} bytes, session ids up to {MAX_ID}, encoded)")]
pub struct TurnScopeTooLong;

/// Whom a credential may be relayed to, carried in its username's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnScope {
    /// `sfu:<session>`: a session with an SFU node (WHIP, WHEP, WebSocket in sfu rooms):
    /// the SFU nodes only.
    Sfu { session: String },
    /// `p2p:<room>:<conn>:<b|v>`: a participant of a p2p room: the addresses the other
    /// side of its room announced (a viewer: the broadcaster's; the broadcaster: its
    /// viewers'), so no participant reaches an address it announced itself.
    P2p {
        room: String,
        conn: String,
        side: P2pSide,
    },
    /// Any other id (older signaling, an operator's own tooling).
    Unscoped { id: String },
}

impl TurnScope {
    pub fn sfu(session: &str) -> Result<Self, TurnScopeTooLong> {
        fits(session, MAX_ID)?;
        Ok(Self::Sfu {
            session: session.to_owned(),
        })
    }

    pub fn p2p(room: &str, conn: &str, side: P2pSide) -> Result<Self, TurnScopeTooLong> {
        fits(room, MAX_ROOM)?;
        fits(conn, MAX_ID)?;
        Ok(Self::P2p {
            room: room.to_owned(),
            conn: conn.to_owned(),
            side,
        })
    }

    /// The scope of a TURN REST username (`expiry:id`) and its expiry. An id claiming a
    /// scope (`sfu:`, `p2p:`) that does not parse is malformed, not unscoped.
    pub fn of_username(username: &str) -> Result<(u64, Self), TurnCredentialError> {
        let (expiry, id) = username
            .split_once(':')
            .ok_or(TurnCredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TurnCredentialError::Malformed)?;
        let bad = TurnCredentialError::Malformed;
        let scope = if let Some(session) = id.strip_prefix("sfu:") {
            Self::Sfu {
                session: decode(session).ok_or(bad)?,
            }
        } else if let Some(rest) = id.strip_prefix("p2p:") {
            let (room, rest) = rest.split_once(':').ok_or(bad)?;
            let (conn, side) = rest.split_once(':').ok_or(bad)?;
            Self::P2p {
                room: decode(room).ok_or(bad)?,
                conn: decode(conn).ok_or(bad)?,
                side: P2pSide::of_tag(side).ok_or(bad)?,
            }
        } else {
            Self::Unscoped { id: id.to_owned() }
        };
        Ok((expiry, scope))
    }
}

/// `sfu:<session>`, `p2p:<room>:<conn>:<b|v>` (ids percent-encoded), or the bare id.
impl std::fmt::Display for TurnScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sfu { session } => write!(f, "sfu:{}", encode(session)),
            Self::P2p { room, conn, side } => {
                write!(f, "p2p:{}:{}:{}", encode(room), encode(conn), side.tag())
            }
            Self::Unscoped { id } => f.write_str(id),
        }
    }
}

/// The side of a p2p room a participant is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum P2pSide {
    Broadcaster,
    Viewer,
}

impl P2pSide {
    /// Its tag in a username: `b`, `v`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Broadcaster => "b",
            Self::Viewer => "v",
        }
    }

    pub fn of_tag(tag: &str) -> Option<Self> {
        match tag {
            "b" => Some(Self::Broadcaster),
            "v" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// The side whose addresses this side's relays reach.
    pub fn other(self) -> Self {
        match self {
            Self::Broadcaster => Self::Viewer,
            Self::Viewer => Self::Broadcaster,
        }
    }
}

fn fits(s: &str, max: usize) -> Result<(), TurnScopeTooLong> {
    if s.is_empty() || encode(s).len() > max {
        return Err(TurnScopeTooLong);
    }
    Ok(())
}

/// All but RFC 3986's unreserved bytes, so `:` separates components.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// The inverse of [`encode`]; `None` for anything it would not have produced (`%41`,
/// `%2f`, a bare `%`), so one scope has one username.
fn decode(s: &str) -> Option<String> {
    let d = percent_decode_str(s).decode_utf8().ok()?;
    (!d.is_empty() && encode(&d) == s).then(|| d.into_owned())
}

/// The shared secret that mints and checks TURN credentials.
#[derive(Clone)]
pub struct TurnSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(<hidden>)")
    }
}

impl TurnSecret {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
        }
    }

    /// A credential for `id` (a session, a room: whatever the server logs it by) valid
    /// from `now` (Unix seconds) for `ttl`.
    pub fn mint(&self, id: &str, now: u64, ttl: Duration) -> TurnCredential {
        let expires_at = now.saturating_add(ttl.as_secs());
        let username = format!("{expires_at}:{id}");
        let credential = self.password(&username);
        TurnCredential {
            username,
            credential,
            expires_at,
        }
    }

    /// The password of `username`.
    pub fn password(&self, username: &str) -> String {
        let tag = hmac::sign(&self.key, username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// Whether `password` is `username`'s and it has not expired at `now`.
    pub fn check(
        &self,
        username: &str,
        password: &str,
        now: u64,
    ) -> Result<(), TurnCredentialError> {
        let (expiry, _) = TurnScope::of_username(username)?;
        if expiry <= now {
            return Err(TurnCredentialError::Expired);
        }
        let tag = base64::engine::general_purpose::STANDARD
            .decode(password)
            .map_err(|_| TurnCredentialError::Mismatch)?;
        hmac::verify(&self.key, username.as_bytes(), &tag)
            .map_err(|_| TurnCredentialError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_coturns() {
        // python3: base64(hmac.new(b'north-wind-secret', b'1700000000:room-1', sha1).digest())
        let s = TurnSecret::new(b"north-wind-secret");
        assert_eq!(
            s.password("1700000000:room-1"),
            "YU7rnO5pj6psAZqCzldXNSwgE2E="
        );
        let c = s.mint("room-1", 1_699_999_400, Duration::from_secs(600));
        assert_eq!(c.username, "1700000000:room-1");
        assert_eq!(c.credential, "YU7rnO5pj6psAZqCzldXNSwgE2E=");
        assert_eq!(c.expires_at, 1_700_000_000);
    }

    #[test]
    fn check_refuses_expired_forged_and_malformed() {
        let s = TurnSecret::new(b"k");
        let c = s.mint("a", 1000, Duration::from_secs(60));
        assert_eq!(s.check(&c.username, &c.credential, 1059), Ok(()));
        assert_eq!(
            s.check(&c.username, &c.credential, 1060),
            Err(TurnCredentialError::Expired)
        );
        let other = TurnSecret::new(b"other").mint("a", 1000, Duration::from_secs(60));
        assert_eq!(
            s.check(&other.username, &other.credential, 1000),
            Err(TurnCredentialError::Mismatch)
        );
        assert_eq!(
            s.check("9999:b", &c.credential, 1000),
            Err(TurnCredentialError::Mismatch),
            "a password is bound to its username"
        );
        assert_eq!(s.check("a", "x", 0), Err(TurnCredentialError::Malformed));
        assert_eq!(s.check("x:a", "x", 0), Err(TurnCredentialError::Malformed));
        assert_eq!(
            s.check(&c.username, "not base64!", 0),
            Err(TurnCredentialError::Mismatch)
        );
    }

    #[test]
    fn scopes_round_trip_through_the_username() {
        let s = TurnSecret::new(b"k");
        for scope in [
            TurnScope::sfu("3f2a9c").unwrap(),
            TurnScope::p2p("room_AbC-12", "c00ff", P2pSide::Viewer).unwrap(),
            TurnScope::p2p("room_AbC-12", "c00fe", P2pSide::Broadcaster).unwrap(),
            // Whatever a room id holds, `:` and `%` included, comes back as it was.
            TurnScope::p2p("a:b%c d/é", "c:1", P2pSide::Viewer).unwrap(),
            TurnScope::Unscoped {
                id: "legacy-id".into(),
            },
            TurnScope::Unscoped { id: "a:b".into() },
        ] {
            let c = s.mint(&scope.to_string(), 1000, Duration::from_secs(60));
            assert_eq!(s.check(&c.username, &c.credential, 1000), Ok(()));
            assert_eq!(TurnScope::of_username(&c.username), Ok((1060, scope)));
        }
        assert_eq!(
            TurnScope::p2p("room_1", "c1", P2pSide::Broadcaster)
                .unwrap()
                .to_string(),
            "p2p:room_1:c1:b"
        );
    }

    #[test]
    fn malformed_scopes_are_refused_not_unscoped() {
        for u in [
            "1:p2p:room-only",
            "1:p2p::c1",
            "1:p2p:r:",
            "1:sfu:",
            "1:sfu:a:b",
            "1:sfu:%zz",
            "1:sfu:%41",
            "1:sfu:%3a",
            "1:sfu:%+A",
            "1:sfu:a%",
            "1:p2p:r%3:c:v",
            "1:p2p:r:c",
            "1:p2p:r:c:x",
            "1:p2p:r:c:v:v",
            "x:sfu:a",
        ] {
            assert_eq!(
                TurnScope::of_username(u),
                Err(TurnCredentialError::Malformed),
                "{u}"
            );
        }
    }

    #[test]
    fn the_longest_scopes_fit_a_stun_username() {
        let room = "%".repeat(MAX_ROOM / 3);
        let conn = ":".repeat(MAX_ID / 3);
        let scope = TurnScope::p2p(&room, &conn, P2pSide::Broadcaster).unwrap();
        let c = TurnSecret::new(b"k").mint(&scope.to_string(), u64::MAX - 1, Duration::ZERO);
        assert!(
            c.username.len() <= MAX_TURN_USERNAME,
            "{}",
            c.username.len()
        );
        assert_eq!(
            TurnScope::p2p(&format!("{room}x"), "c", P2pSide::Viewer),
            Err(TurnScopeTooLong)
        );
        assert_eq!(TurnScope::sfu(&format!("{conn}x")), Err(TurnScopeTooLong));
        assert_eq!(TurnScope::sfu(""), Err(TurnScopeTooLong));
    }
}
