//! Webhook signing secrets and the `Skylark-Signature` header, Stripe style:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The timestamp is
//! signed too, so a receiver can refuse old (replayed) requests.

use aws_lc_rs::hmac;

/// Prefix that makes a webhook secret recognisable (and findable by secret scanners).
const SECRET_PREFIX: &str = "whsec_";

/// A new endpoint signing secret: `whsec_` and 192 random bits.
///
/// ```
/// assert!(skylark_auth::new_webhook_secret().starts_with("whsec_"));
/// ```
pub fn new_webhook_secret() -> String {
    format!("{SECRET_PREFIX}{}", crate::new_secret(24))
}

/// The `Skylark-Signature` value of `body` sent at `t` (Unix seconds), signed with the
/// endpoint's `secret` (its whole text, `whsec_` included, as the receiver holds it).
///
/// ```
/// let sig = skylark_auth::webhook_signature("whsec_x", 1700000000, b"{}");
/// assert!(sig.starts_with("t=1700000000,v1="));
/// assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn webhook_signature(secret: &str, t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", crate::keys::hex(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test",b"1.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            webhook_signature("whsec_test", 1, b"{}"),
            "t=1,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
    }
}
