//! Identifiers: random, URL-safe, and a readable slug for rooms.

/// A random id with a type prefix, e.g. `usr_…`, `room_…` (72 random bits).
pub fn new_id(prefix: &str) -> String {
    let raw = skylark_auth::new_secret(9).replace(['-', '_'], "x");
    format!("{prefix}_{raw}")
}

/// A slug's random part: 13 characters of `[a-z0-9]` (~67 bits). An unlisted room is
/// found by its slug as by its id, so the slug must be as unguessable.
pub fn slug_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // 256 % 36 = 4: the first four symbols are a little likelier, ~0.05 bit lost a place.
    skylark_auth::random_bytes(13)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `My First Stream!` → `my-first-stream-{suffix}` (the suffix keeps slugs unique and
/// unguessable: see [`slug_suffix`]).
pub fn slug(title: &str, suffix: &str) -> String {
    let mut s = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
        if s.len() >= 40 {
            break;
        }
    }
    let s = s.trim_end_matches('-');
    if s.is_empty() {
        format!("room-{suffix}")
    } else {
        format!("{s}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_safe() {
        let s = slug("My First  Stream! ünïcode", "abc123");
        assert_eq!(s, "my-first-stream-n-code-abc123");
        assert_eq!(slug("!!!", "xyz123"), "room-xyz123");
        let a = slug_suffix();
        assert_eq!(a.len(), 13);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(a, slug_suffix(), "random");
        assert!(new_id("usr").starts_with("usr_"));
    }
}
