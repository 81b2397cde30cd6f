//! Short-lived HS256 JWTs with explicit claims: who, in what role, for which rooms.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "skylark";

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A signed-in creator: manages own rooms, may publish to them.
    Creator,
    /// A viewer of the rooms named in the grants (private rooms).
    Viewer,
}

/// A permission on one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub room: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub play: bool,
    /// The room's viewer generation the grant was issued in: once the owner revokes
    /// viewer tokens (or changes the room's visibility), older grants stop playing.
    #[serde(default, rename = "gen")]
    pub generation: i64,
}

/// The claims Skylark puts in every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: user id for creators, a random viewer id for viewer tokens.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

impl Claims {
    /// Whether these claims allow playing `room`, whose viewer generation is now
    /// `generation`.
    pub fn can_play(&self, room: &str, generation: i64) -> bool {
        self.grants
            .iter()
            .any(|g| g.room == room && g.play && g.generation == generation)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired: sign in again or ask for a new token")]
    Expired,
    #[error(
        "token invalid: send `Authorization: Bearer <token>` with a token issued by this server"
    )]
    Invalid,
}

/// Issues and verifies tokens with one shared secret (HS256).
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer(<secret>)")
    }
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    /// ```
    /// use skylark_auth::{Role, TokenIssuer};
    /// use std::time::Duration;
    /// let issuer = TokenIssuer::new(b"a secret of at least thirty-two bytes!!");
    /// let token = issuer.issue("user-1", Role::Creator, vec![], Duration::from_secs(60));
    /// assert_eq!(issuer.verify(&token).unwrap().sub, "user-1");
    /// ```
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, sub: &str, role: Role, grants: Vec<Grant>, ttl: Duration) -> String {
        let iat = now_s();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            grants,
            iss: ISSUER.to_string(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Issues a token that expired `ago` in the past (for tests of expiry handling).
    #[doc(hidden)]
    pub fn issue_expired(&self, sub: &str, role: Role, ago: Duration) -> String {
        let exp = now_s().saturating_sub(ago.as_secs().max(1));
        let claims = Claims {
            sub: sub.to_string(),
            role,
            grants: vec![],
            iss: ISSUER.to_string(),
            iat: exp.saturating_sub(60),
            exp,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn round_trip_with_grants() {
        let i = issuer();
        let g = vec![Grant {
            room: "r1".into(),
            publish: false,
            play: true,
            generation: 3,
        }];
        let t = i.issue("v1", Role::Viewer, g.clone(), Duration::from_secs(30));
        let c = i.verify(&t).unwrap();
        assert_eq!(c.role, Role::Viewer);
        assert_eq!(c.grants, g);
        assert!(c.can_play("r1", 3));
        assert!(!c.can_play("r2", 3));
        assert!(!c.can_play("r1", 4), "a revoked generation");
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_refused() {
        let i = issuer();
        let t = i.issue_expired("u", Role::Creator, Duration::from_secs(5));
        assert_eq!(i.verify(&t), Err(TokenError::Expired));
        let other = TokenIssuer::new(b"another secret another secret!!!");
        let t = other.issue("u", Role::Creator, vec![], Duration::from_secs(30));
        assert_eq!(i.verify(&t), Err(TokenError::Invalid));
        assert_eq!(i.verify("garbage"), Err(TokenError::Invalid));
        assert_eq!(i.verify(""), Err(TokenError::Invalid));
    }
}
