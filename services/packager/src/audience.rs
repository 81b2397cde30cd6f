//! Who watches a room over HLS. HTTP has no session, so a player is named by the `sid`
//! its multivariant playlist put on every URI (a player that asks for a media playlist
//! directly is named by its address and user agent), and it counts while it keeps
//! reloading its media playlist — every part or target duration while it plays. FLV
//! viewers need none of this: each is an open stream (see `FlvFeed::viewers`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A player that has not reloaded its media playlist for this long has stopped (three
/// reloads missed at the longest target duration the packager makes).
pub const SESSION_IDLE: Duration = Duration::from_secs(10);
/// Sessions one room tracks at most: past it new players are not counted, so a flood
/// of made-up session ids costs bounded memory.
pub const MAX_SESSIONS: usize = 100_000;
/// The query parameter naming a player's session.
pub const SID: &str = "sid";

/// A room's HLS players, by session key, with when each last reloaded.
#[derive(Debug, Default)]
pub struct HlsAudience {
    seen: Mutex<HashMap<String, Instant>>,
}

impl HlsAudience {
    /// Player `key` reloaded its media playlist at `now`.
    pub fn touch(&self, key: &str, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = seen.get_mut(key) {
            *t = now;
            return;
        }
        // Full of players still reloading: the newcomer goes uncounted (forgetting
        // them would undercount).
        let idle = |t: &Instant| now.saturating_duration_since(*t) >= SESSION_IDLE;
        if crate::bounded::make_room(&mut seen, MAX_SESSIONS, idle) {
            seen.insert(key.to_owned(), now);
        }
    }

    /// Players still reloading at `now`; forgets the others.
    pub fn count(&self, now: Instant) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| now.saturating_duration_since(*t) < SESSION_IDLE);
        seen.len()
    }
}

/// A new player session id: 64 random bits, hex.
pub fn new_sid() -> String {
    // Without randomness every player would share one id and count once; rare enough.
    crate::random_hex(8)
}

/// Whether `sid` could be one [`new_sid`] made (anything else is not trusted as a key).
pub fn valid_sid(sid: &str) -> bool {
    (1..=32).contains(&sid.len()) && sid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The key of a player without a session id: its address and user agent.
pub fn anonymous_key(ip: std::net::IpAddr, user_agent: Option<&str>) -> String {
    let ua: String = user_agent.unwrap_or("").chars().take(200).collect();
    format!("{ip}|{ua}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_count_while_they_reload_and_expire_when_they_stop() {
        let a = HlsAudience::default();
        let t0 = Instant::now();
        a.touch("p1", t0);
        a.touch("p2", t0);
        a.touch("p1", t0 + Duration::from_secs(1));
        assert_eq!(a.count(t0 + Duration::from_secs(2)), 2);
        // p2 stopped; p1 keeps reloading.
        a.touch("p1", t0 + Duration::from_secs(9));
        assert_eq!(a.count(t0 + SESSION_IDLE + Duration::from_secs(1)), 1);
        assert_eq!(a.count(t0 + Duration::from_secs(30)), 0);
    }

    #[test]
    fn session_ids_are_hex_and_bounded() {
        let s = new_sid();
        assert_eq!(s.len(), 16);
        assert!(valid_sid(&s));
        assert_ne!(s, new_sid());
        assert!(!valid_sid(""));
        assert!(!valid_sid("zz"));
        assert!(!valid_sid(&"a".repeat(33)));
    }
}
