//! Stream keys: 160 random bits, URL-safe, stored as SHA-256 hashes.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Prefix that makes a stream key recognisable in a config file (and by secret scanners).
const KEY_PREFIX: &str = "sk_live_";

/// A freshly generated stream key: `secret` is shown to the creator once, `hash` is stored.
pub struct StreamKey {
    pub secret: String,
    pub hash: String,
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamKey")
            .field("secret", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

/// Random bytes encoded URL-safe; `bytes` of entropy.
///
/// ```
/// let s = skylark_auth::new_secret(32);
/// assert_eq!(s.len(), 43);
/// ```
pub fn new_secret(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// `n` bytes from the operating system's random number generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // The system RNG only fails if the OS has no entropy source at all.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("operating system random number generator failed");
    buf
}

/// Generates a stream key with 160 random bits.
///
/// ```
/// let k = skylark_auth::new_stream_key();
/// assert!(k.secret.starts_with("sk_live_"));
/// assert_eq!(skylark_auth::hash_stream_key(&k.secret), k.hash);
/// ```
pub fn new_stream_key() -> StreamKey {
    let secret = format!("{KEY_PREFIX}{}", new_secret(20));
    let hash = hash_stream_key(&secret);
    StreamKey { secret, hash }
}

/// Hex SHA-256 of a key. Keys carry 160 random bits, so a fast hash is enough
/// (no dictionary to guard against) and lookups stay one indexed query.
pub fn hash_stream_key(secret: &str) -> String {
    hex(digest(&SHA256, secret.as_bytes()).as_ref())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_url_safe_and_long() {
        let a = new_stream_key();
        let b = new_stream_key();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
        let body = a.secret.trim_start_matches(KEY_PREFIX);
        assert!(body.len() * 6 >= 128, "at least 128 bits of entropy");
        assert!(a
            .secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.secret));
    }
}
