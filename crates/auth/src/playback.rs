//! Signed playback tokens: what the HLS and FLV URLs of a private room carry, so any
//! player (hls.js, mpegts.js, Safari, ffplay) can watch with a plain URL and the
//! packager can check it without asking a database.
//!
//! A token is `pt2.{room}.{gen}.{exp}.{sig}`: the room it opens, the room's viewer
//! generation it was issued in (a revocation starts a new one), its expiry (Unix
//! seconds) and an HMAC-SHA256 over `pt2.{room}.{gen}.{exp}`, base64url. Every character is URL-safe,
//! so it goes into a query string and a playlist as is. The HMAC key is derived from
//! the deployment's token secret, so a playback token can never pass for a JWT or the
//! other way round.

use crate::token::now_s;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::time::Duration;

/// How long a playback token lives by default; players renew it through `/playback`.
pub const PLAYBACK_TOKEN_TTL: Duration = Duration::from_secs(3 * 3600);
/// Longest token accepted (a room id of at most 128 characters fits easily).
pub const MAX_PLAYBACK_TOKEN_LEN: usize = 256;

// Version 2 names the room's viewer generation (revocation).
const VERSION: &str = "pt2";
const KEY_LABEL: &[u8] = b"skylark playback token key v1";

/// Why a playback token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaybackTokenError {
    #[error("playback token expired")]
    Expired,
    #[error("playback token is for another room")]
    WrongRoom,
    #[error(
        "playback token revoked: the room's viewer tokens were revoked or its visibility changed"
    )]
    Revoked,
    #[error("playback token invalid")]
    Invalid,
}

/// Issues and checks playback tokens with a key derived from the deployment's secret.
#[derive(Clone)]
pub struct PlaybackTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for PlaybackTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackTokens(<secret>)")
    }
}

fn room_ok(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 128
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PlaybackTokens {
    /// `secret` is the deployment's playback secret (`SKYLARK_PLAYBACK_SECRET`, or the
    /// JWT key in all-in-one); a label derives the HMAC key from it, so a playback
    /// token never passes for anything signed with the same secret.
    ///
    /// ```
    /// use skylark_auth::PlaybackTokens;
    /// use std::time::Duration;
    /// let t = PlaybackTokens::new(b"a secret of at least thirty-two bytes!!");
    /// let token = t.issue("room_1", 0, Duration::from_secs(60));
    /// assert!(t.verify(&token, "room_1", 0).is_ok());
    /// assert!(t.verify(&token, "room_2", 0).is_err());
    /// assert!(t.verify(&token, "room_1", 1).is_err(), "revoked");
    /// ```
    pub fn new(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, KEY_LABEL);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A token for `room` in its viewer generation `generation`, valid for `ttl` from now.
    pub fn issue(&self, room: &str, generation: i64, ttl: Duration) -> String {
        self.issue_until(room, generation, now_s().saturating_add(ttl.as_secs()))
    }

    /// A token for `room` valid for `ttl`, but never longer than `credential` (the
    /// viewer token or access token `/playback` was called with): a short viewer link
    /// must not turn into hours of HLS. The credential must already be authorized
    /// (the room directory verified it): only its `exp` claim is read here, so the
    /// services that sign playback URLs never hold the key that mints credentials.
    pub fn issue_for(
        &self,
        room: &str,
        generation: i64,
        credential: &str,
        ttl: Duration,
    ) -> String {
        let mut exp = now_s().saturating_add(ttl.as_secs());
        if let Some(c) = authorized_credential_expiry(credential) {
            exp = exp.min(c);
        }
        self.issue_until(room, generation, exp)
    }

    /// A token for `room` in viewer generation `generation` that expires at `exp`
    /// (Unix seconds).
    pub fn issue_until(&self, room: &str, generation: i64, exp: u64) -> String {
        let signed = format!("{VERSION}.{room}.{generation}.{exp}");
        let sig = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Checks `token` for `room`, whose viewer generation is now `generation`; returns
    /// its expiry (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        room: &str,
        generation: i64,
    ) -> Result<u64, PlaybackTokenError> {
        self.verify_at(token, room, generation, now_s())
    }

    /// Checks `token` for `room` at time `now` (Unix seconds). The signature is checked
    /// first, so only a genuine token learns "wrong room" or "expired".
    pub fn verify_at(
        &self,
        token: &str,
        room: &str,
        generation: i64,
        now: u64,
    ) -> Result<u64, PlaybackTokenError> {
        if token.len() > MAX_PLAYBACK_TOKEN_LEN {
            return Err(PlaybackTokenError::Invalid);
        }
        let (signed, sig) = token.rsplit_once('.').ok_or(PlaybackTokenError::Invalid)?;
        let mut parts = signed.split('.');
        let (Some(VERSION), Some(token_room), Some(token_gen), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(PlaybackTokenError::Invalid);
        };
        let number_ok =
            |n: &str| !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit());
        if !room_ok(token_room) || !number_ok(exp) || !number_ok(token_gen) {
            return Err(PlaybackTokenError::Invalid);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| PlaybackTokenError::Invalid)?;
        hmac::verify(&self.key, signed.as_bytes(), &sig)
            .map_err(|_| PlaybackTokenError::Invalid)?;
        let exp: u64 = exp.parse().map_err(|_| PlaybackTokenError::Invalid)?;
        let token_gen: i64 = token_gen.parse().map_err(|_| PlaybackTokenError::Invalid)?;
        if token_room != room {
            return Err(PlaybackTokenError::WrongRoom);
        }
        if exp <= now {
            return Err(PlaybackTokenError::Expired);
        }
        if token_gen != generation {
            return Err(PlaybackTokenError::Revoked);
        }
        Ok(exp)
    }
}

/// The `exp` claim of a JWT whose signature was checked elsewhere; `None` for
/// anything that is not a JWT with one.
fn authorized_credential_expiry(credential: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: u64,
    }
    if credential.len() > 4096 {
        return None;
    }
    let payload = credential.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Exp>(&json).ok().map(|e| e.exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenIssuer;
    use crate::{Grant, Role};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_scoped_to_the_room() {
        let t = PlaybackTokens::new(SECRET);
        let token = t.issue("room_abc", 2, Duration::from_secs(60));
        assert!(token.starts_with("pt2.room_abc.2."), "{token}");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        let exp = t.verify(&token, "room_abc", 2).unwrap();
        assert!(exp > now_s() && exp <= now_s() + 60);
        assert_eq!(
            t.verify(&token, "room_other", 2),
            Err(PlaybackTokenError::WrongRoom)
        );
        assert_eq!(
            t.verify(&token, "room_abc", 3),
            Err(PlaybackTokenError::Revoked)
        );
    }

    #[test]
    fn expiry() {
        let t = PlaybackTokens::new(SECRET);
        let token = t.issue_until("room_a", 0, 1_000);
        assert_eq!(t.verify_at(&token, "room_a", 0, 999), Ok(1_000));
        assert_eq!(
            t.verify_at(&token, "room_a", 0, 1_000),
            Err(PlaybackTokenError::Expired)
        );
        assert_eq!(
            t.verify(&token, "room_a", 0),
            Err(PlaybackTokenError::Expired)
        );
    }

    #[test]
    fn tampering_other_keys_and_garbage_are_invalid() {
        let t = PlaybackTokens::new(SECRET);
        let token = t.issue_until("room_a", 0, 5_000);
        // Another room, generation or a later expiry with the old signature.
        let sig = token.rsplit('.').next().unwrap();
        for forged in [
            format!("pt2.room_b.0.5000.{sig}"),
            format!("pt2.room_a.0.9999999999.{sig}"),
            format!("pt2.room_a.1.5000.{sig}"),
            format!("pt1.room_a.0.5000.{sig}"),
            format!("pt1.room_a.5000.{sig}"),
            token.replace("5000", "05000"),
            format!("{token}x"),
            token[..token.len() - 2].to_string(),
        ] {
            assert_eq!(
                t.verify_at(&forged, "room_a", 0, 1),
                Err(PlaybackTokenError::Invalid),
                "{forged}"
            );
        }
        let other = PlaybackTokens::new(b"another secret another secret!!!");
        assert_eq!(
            t.verify_at(&other.issue_until("room_a", 0, 5_000), "room_a", 0, 1),
            Err(PlaybackTokenError::Invalid)
        );
        for junk in [
            "",
            "pt1",
            "pt1...",
            "pt1.room_a.5000",
            "pt2.room_a.0.5000",
            "pt2.room_a.-1.5000.abc",
            "pt1.room_a.x.abc",
            "pt1.room.a.5000.abc",
            "pt1.room_a.99999999999999999999999.abc",
            "pt1.room_a.5000.%%%",
            "pt1.\"\n#EXT.5000.abc",
            &"a".repeat(10_000),
        ] {
            assert_eq!(
                t.verify_at(junk, "room_a", 0, 1),
                Err(PlaybackTokenError::Invalid),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_jwt_is_not_a_playback_token() {
        let t = PlaybackTokens::new(SECRET);
        let jwt =
            TokenIssuer::new(SECRET).issue("u", Role::Creator, vec![], Duration::from_secs(60));
        assert_eq!(
            t.verify(&jwt, "room_a", 0),
            Err(PlaybackTokenError::Invalid)
        );
    }

    #[test]
    fn never_outlives_the_credential() {
        let t = PlaybackTokens::new(SECRET);
        let grant = Grant {
            room: "room_a".into(),
            publish: false,
            play: true,
            generation: 0,
        };
        // Signed with the JWT key, which the signer of playback URLs doesn't hold.
        let viewer = TokenIssuer::new(b"another secret, the API's JWT key, 32+ bytes").issue(
            "v",
            Role::Viewer,
            vec![grant],
            Duration::from_secs(120),
        );
        let exp = t
            .verify(
                &t.issue_for("room_a", 0, &viewer, PLAYBACK_TOKEN_TTL),
                "room_a",
                0,
            )
            .unwrap();
        assert!(exp <= now_s() + 120, "capped by the viewer token");
        let exp = t
            .verify(
                &t.issue_for("room_a", 0, "", Duration::from_secs(600)),
                "room_a",
                0,
            )
            .unwrap();
        assert!(exp > now_s() + 500, "no credential: the ttl");
    }
}
