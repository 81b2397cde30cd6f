//! Session ids from a seed: the core draws no randomness of its own. An id is the
//! session's counter, unique on the node, followed by a keyed hash of it, so ids are
//! unguessable (they are capabilities for PATCH/DELETE) while the seed stays secret.

use std::fmt;
use str0m::crypto::Sha256Provider;

/// The secret session ids are derived from: random in the worker, fixed in tests.
#[derive(Clone, PartialEq, Eq)]
pub struct IdSeed([u8; 32]);

impl IdSeed {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Never prints the secret (configs get logged).
impl fmt::Debug for IdSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdSeed(..)")
    }
}

/// The id of session number `key`: 16 hex digits of `key`, then 16 of
/// SHA-256(seed ‖ key).
pub(super) fn session_id(sha256: &dyn Sha256Provider, seed: &IdSeed, key: u64) -> String {
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(&seed.0);
    input[32..].copy_from_slice(&key.to_le_bytes());
    let digest = sha256.sha256(&input);
    let mut suffix = [0u8; 8];
    suffix.copy_from_slice(&digest[..8]);
    format!("{key:016x}{:016x}", u64::from_le_bytes(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u8, key: u64) -> String {
        let crypto = skylark_dtls::crypto_provider();
        session_id(crypto.sha256_provider, &IdSeed::new([seed; 32]), key)
    }

    #[test]
    fn same_seed_same_ids_other_seed_other_ids() {
        assert_eq!(id(1, 5), id(1, 5));
        assert_ne!(id(1, 5), id(2, 5));
        assert_ne!(id(1, 5)[16..], id(1, 6)[16..]);
        assert_eq!(&id(1, 5)[..16], "0000000000000005");
        assert_eq!(id(1, 5).len(), 32);
    }

    #[test]
    fn debug_hides_the_seed() {
        assert_eq!(format!("{:?}", IdSeed::new([9; 32])), "IdSeed(..)");
    }
}
