//! Credentials: JWT access tokens with explicit grants, signed playback tokens for
//! HLS/FLV URLs, argon2id passwords, stream keys, TURN REST credentials.
//!
//! Stream keys and passwords are secrets: only their hashes leave this crate, and
//! nothing here logs them.

pub(crate) mod keys;
mod password;
mod playback;
mod token;
mod turn;
mod webhook;

pub use keys::{hash_stream_key, new_secret, new_stream_key, random_bytes, StreamKey};
pub use password::{hash_password, verify_password};
pub use playback::{
    PlaybackTokenError, PlaybackTokens, MAX_PLAYBACK_TOKEN_LEN, PLAYBACK_TOKEN_TTL,
};
pub use token::{Claims, Grant, Role, TokenError, TokenIssuer};
pub use turn::{
    P2pSide, TurnCredential, TurnCredentialError, TurnScope, TurnScopeTooLong, TurnSecret,
    MAX_TURN_USERNAME,
};
pub use webhook::{new_webhook_secret, webhook_signature};
