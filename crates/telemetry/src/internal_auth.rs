//! Authentication of internal gRPC calls: one shared secret per deployment. Every
//! internal client sends it as `authorization: Bearer <secret>`
//! ([`crate::GrpcClientInterceptor`]); every internal server checks it
//! ([`crate::GrpcServerLayer`]) and answers `UNAUTHENTICATED` otherwise.
//!
//! A bearer secret rather than mTLS: the services already trust one another as peers
//! (any of them may call any other), so a per-service identity would buy nothing yet,
//! and it needs no certificates to issue and rotate nor a second TLS stack next to the
//! aws-lc-rs one str0m brings.
//!
//! ```
//! use skylark_telemetry::InternalSecret;
//! let s = InternalSecret::new("correct-horse-battery-staple-0123456789").unwrap();
//! assert!(InternalSecret::new("short").is_err());
//! assert_eq!(format!("{s:?}"), "InternalSecret(<masked>)");
//! ```

use aws_lc_rs::digest::{digest, SHA256};
use http::HeaderMap;
use std::sync::OnceLock;
use tonic::metadata::{Ascii, MetadataValue};

/// Fewest bytes a secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// The shared secret of internal gRPC calls. Its `Debug` never shows it.
#[derive(Clone)]
pub struct InternalSecret {
    /// `Bearer <secret>`, marked sensitive (kept out of HTTP/2 header compression tables).
    bearer: MetadataValue<Ascii>,
    /// SHA-256 of the secret: received values are hashed and compared in constant time,
    /// which also hides the secret's length.
    digest: [u8; 32],
    /// SHA-256 of a second secret accepted but never sent, during a rotation.
    also_accepted: Option<[u8; 32]>,
}

/// A secret refused at start-up, or a second, different one installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InternalSecretError {
    #[error("the internal secret is {0} bytes; use at least {MIN_SECRET_LEN} random ones")]
    TooShort(usize),
    #[error(
        "the internal secret may hold only visible ASCII characters (no spaces): \
         use a random hex or base64 value"
    )]
    NotVisibleAscii,
    #[error("a different internal secret is already in use in this process")]
    AlreadyInstalled,
}

/// Why a call was refused; its [`Refusal::reason`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization` header.
    Missing,
    /// A header that is not the secret.
    Wrong,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Wrong => "wrong",
        }
    }

    /// What the caller is told (its logs show it): what to set, never the secret.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "internal gRPC call without credentials: give the calling service \
                 SKYLARK_INTERNAL_SECRET, the same value as this one's"
            }
            Refusal::Wrong => {
                "internal gRPC call with a wrong secret: every service of a deployment \
                 needs the same SKYLARK_INTERNAL_SECRET"
            }
        }
    }
}

static INSTALLED: OnceLock<InternalSecret> = OnceLock::new();

impl InternalSecret {
    /// A secret from configuration: at least [`MIN_SECRET_LEN`] bytes of visible ASCII
    /// (it travels in an HTTP/2 header).
    pub fn new(secret: &str) -> Result<Self, InternalSecretError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(InternalSecretError::TooShort(secret.len()));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InternalSecretError::NotVisibleAscii);
        }
        let mut bearer = MetadataValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| InternalSecretError::NotVisibleAscii)?;
        bearer.set_sensitive(true);
        Ok(Self {
            bearer,
            digest: sha256(secret.as_bytes()),
            also_accepted: None,
        })
    }

    /// Also accepts `other` from callers (this process still sends its own): a rotation
    /// rolls out the new secret as accepted everywhere, then as sent with the old one
    /// accepted, then alone, and no two neighbouring stages refuse each other.
    pub fn also_accepting(self, other: &str) -> Result<Self, InternalSecretError> {
        let other = Self::new(other)?;
        Ok(Self {
            also_accepted: Some(other.digest),
            ..self
        })
    }

    /// A random secret (256 bits).
    pub fn generate() -> Self {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        let mut bytes = [0u8; 32];
        // The system RNG only fails if the OS has no entropy source at all.
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("operating system random number generator failed");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self::new(&hex).expect("64 hex digits are a valid secret")
    }

    /// Makes `self` the secret this process's internal clients send and servers check.
    /// Call once at start-up, before any service starts; installing the same secret
    /// again is a no-op.
    pub fn install(self) -> Result<(), InternalSecretError> {
        let keys = (self.digest, self.also_accepted);
        let installed = INSTALLED.get_or_init(|| self);
        if (installed.digest, installed.also_accepted) == keys {
            Ok(())
        } else {
            Err(InternalSecretError::AlreadyInstalled)
        }
    }

    /// The installed secret. A process that installed none (a library embedding or
    /// in-process test) gets a random one, so its services still refuse outsiders and
    /// still reach one another.
    pub fn current() -> &'static InternalSecret {
        INSTALLED.get_or_init(InternalSecret::generate)
    }

    /// The `authorization` value internal clients send.
    pub(crate) fn bearer(&self) -> &MetadataValue<Ascii> {
        &self.bearer
    }

    /// Checks the `authorization` header of an incoming call.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(Refusal::Missing)?;
        let token = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(Refusal::Wrong)?;
        let got = sha256(token);
        let matches = |d: &[u8; 32]| aws_lc_rs::constant_time::verify_slices_are_equal(&got, d);
        match (
            matches(&self.digest),
            self.also_accepted.as_ref().map(matches),
        ) {
            (Ok(()), _) | (_, Some(Ok(()))) => Ok(()),
            _ => Err(Refusal::Wrong),
        }
    }
}

impl std::fmt::Debug for InternalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalSecret(<masked>)")
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_bearer_secret_passes() {
        let s = InternalSecret::new(SECRET).unwrap();
        assert_eq!(s.check(&headers(Some(&format!("Bearer {SECRET}")))), Ok(()));
        assert_eq!(s.check(&headers(None)), Err(Refusal::Missing));
        assert_eq!(s.check(&headers(Some(SECRET))), Err(Refusal::Wrong));
        let wrong = format!("Bearer {SECRET}x");
        assert_eq!(s.check(&headers(Some(&wrong))), Err(Refusal::Wrong));
        assert_eq!(s.check(&headers(Some("Bearer "))), Err(Refusal::Wrong));
        assert_eq!(
            s.bearer().to_str().unwrap(),
            format!("Bearer {SECRET}"),
            "clients send what servers check"
        );
        assert!(s.bearer().is_sensitive());
    }

    #[test]
    fn a_rotation_accepts_both_secrets_and_sends_the_own() {
        let next = "the-next-internal-secret-0123456789abcdef";
        let s = InternalSecret::new(SECRET)
            .unwrap()
            .also_accepting(next)
            .unwrap();
        for ok in [SECRET, next] {
            assert_eq!(s.check(&headers(Some(&format!("Bearer {ok}")))), Ok(()));
        }
        let wrong = format!("Bearer {SECRET}x");
        assert_eq!(s.check(&headers(Some(&wrong))), Err(Refusal::Wrong));
        assert_eq!(s.bearer().to_str().unwrap(), format!("Bearer {SECRET}"));
        assert!(InternalSecret::new(SECRET)
            .unwrap()
            .also_accepting("short")
            .is_err());
    }

    #[test]
    fn weak_or_unsendable_secrets_are_refused() {
        assert_eq!(
            InternalSecret::new("short").unwrap_err(),
            InternalSecretError::TooShort(5)
        );
        let spaced = format!("{SECRET} with spaces");
        assert_eq!(
            InternalSecret::new(&spaced).unwrap_err(),
            InternalSecretError::NotVisibleAscii
        );
        let a = InternalSecret::generate();
        let b = InternalSecret::generate();
        assert_ne!(a.digest, b.digest);
    }
}
