//! TURN credentials by the TURN REST scheme (draft-uberti-behave-turn-rest), as coturn
//! checks them with `use-auth-secret` + `static-auth-secret`: the username is
//! `expiry:id` (expiry in Unix seconds), the password base64(HMAC-SHA1(secret,
//! username)). Any TURN server holding the same secret accepts them until the expiry,
//! with no state shared with whoever minted them. SHA-1 because that is the scheme
//! coturn speaks; the secret, not the hash, is what an attacker lacks.

use aws_lc_rs::hmac;
use base64::Engine;
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
        let (expiry, _) = username
            .split_once(':')
            .ok_or(TurnCredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TurnCredentialError::Malformed)?;
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
}
