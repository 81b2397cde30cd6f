//! Identifiers: random, URL-safe, and a readable slug for rooms.

/// A random id with a type prefix, e.g. `usr_…`, `room_…` (72 random bits).
pub fn new_id(prefix: &str) -> String {
    let raw = skylark_auth::new_secret(9).replace(['-', '_'], "x");
    format!("{prefix}_{raw}")
}

/// `My First Stream!` → `my-first-stream-ab12cd` (the suffix keeps slugs unique).
pub fn slug(title: &str, room_id: &str) -> String {
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
    let suffix: String = room_id
        .rsplit('_')
        .next()
        .unwrap_or(room_id)
        .chars()
        .take(6)
        .collect::<String>()
        .to_lowercase();
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
        let s = slug("My First  Stream! ünïcode", "room_AbCdEfGh");
        assert_eq!(s, "my-first-stream-n-code-abcdef");
        assert_eq!(slug("!!!", "room_xyz123"), "room-xyz123");
        assert!(new_id("usr").starts_with("usr_"));
    }
}
