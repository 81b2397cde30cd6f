//! What one client address, and one room, may start: media sessions (WHIP, WHEP,
//! WebSocket `offer`s), open WebSocket connections, and messages on one connection. A
//! client past a limit gets `429` with `Retry-After` (HTTP) or an `error` with code
//! `rate_limited` and a close (WebSocket); other clients and rooms are not slowed.
//!
//! Clients on the loopback interface are the operator's own tools (the load generator,
//! a reverse proxy on the same host: set `SKYLARK_TRUSTED_PROXIES=127.0.0.1` to limit
//! its clients by their forwarded address) and are not limited.

use crate::error::SignalError;
use axum::http::StatusCode;
use skylark_telemetry::limits::{Limiter, RateLimit};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Media sessions one client address starts: a page reload or a rejoin storm fits; a
/// script opening sessions in a loop does not.
pub const SESSIONS_PER_IP: RateLimit = RateLimit {
    burst: 30,
    per_minute: 120,
};
/// Media sessions one room starts, from everyone: a popular room's opening rush
/// (200/s) fits; a botnet can't make its origin negotiate without end.
pub const SESSIONS_PER_ROOM: RateLimit = RateLimit {
    burst: 1000,
    per_minute: 12_000,
};
/// WebSocket connections one client address holds open at once.
pub const WS_PER_IP: u32 = 64;
/// Messages a WebSocket client sends: signaling needs a handful a second.
pub const WS_MESSAGES: RateLimit = RateLimit {
    burst: 50,
    per_minute: 1200,
};

/// The limits of one signaling process.
pub struct Limits {
    sessions_per_ip: Limiter<IpAddr>,
    sessions_per_room: Limiter<String>,
    ws_open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(SESSIONS_PER_IP, SESSIONS_PER_ROOM)
    }
}

/// An open WebSocket counted against its address until dropped.
pub struct WsSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

fn limited(what: &str, retry_after_s: u64) -> SignalError {
    metrics::counter!("skylark_signaling_rate_limited_total", "limit" => what.to_string())
        .increment(1);
    SignalError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what}: retry in {retry_after_s} s"),
    )
    .retry_after(retry_after_s)
}

impl Limits {
    pub fn new(sessions_per_ip: RateLimit, sessions_per_room: RateLimit) -> Self {
        Self {
            sessions_per_ip: Limiter::new(sessions_per_ip),
            sessions_per_room: Limiter::new(sessions_per_room),
            ws_open: Arc::default(),
        }
    }

    /// A media session `ip` wants to start in `room`.
    pub fn session(&self, ip: IpAddr, room: &str) -> Result<(), SignalError> {
        if ip.is_loopback() {
            return Ok(());
        }
        self.sessions_per_ip
            .check(&ip)
            .map_err(|s| limited("sessions from this address", s))?;
        if room.is_empty() {
            // `POST /whip` with the room named by the key: its room is known later.
            return Ok(());
        }
        // Room ids are at most 128 bytes (longer ones are refused after this).
        let room: String = room.chars().take(128).collect();
        self.sessions_per_room
            .check(&room)
            .map_err(|s| limited("sessions starting in this room", s))
    }

    /// A WebSocket connection from `ip`, if it may open one more.
    pub fn ws_connection(&self, ip: IpAddr) -> Result<Option<WsSlot>, SignalError> {
        if ip.is_loopback() {
            return Ok(None);
        }
        let mut open = self.ws_open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= WS_PER_IP {
            return Err(limited("WebSocket connections from this address", 10));
        }
        *n += 1;
        Ok(Some(WsSlot {
            ip,
            open: self.ws_open.clone(),
        }))
    }

    /// A budget for the messages of one WebSocket connection from `ip` (`None`: no
    /// limit, loopback).
    pub fn ws_messages(ip: IpAddr) -> Option<Limiter<()>> {
        (!ip.is_loopback()).then(|| Limiter::new(WS_MESSAGES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_address_then_per_room() {
        // Refilled a token a minute: the test can't outrun the refill however slow it is.
        let slow = |burst| RateLimit {
            burst,
            per_minute: 1,
        };
        let l = Limits::new(slow(30), slow(1000));
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..30 {
            assert!(l.session(a, "room_a").is_ok());
        }
        let e = l.session(a, "room_b").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after_s.is_some_and(|s| s >= 1));
        assert!(l.session("198.51.100.2".parse().unwrap(), "room_a").is_ok());
        assert!(l.session("127.0.0.1".parse().unwrap(), "room_a").is_ok());
        // A room's budget is shared by every address.
        let mut refused = false;
        for i in 0..1010u32 {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            refused |= l.session(ip, "room_c").is_err();
        }
        assert!(refused, "a room's opening rush past its burst is slowed");
    }

    #[test]
    fn websocket_connections_per_address_are_counted_until_closed() {
        let l = Limits::default();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let slots: Vec<_> = (0..WS_PER_IP)
            .map(|_| l.ws_connection(a).unwrap())
            .collect();
        assert!(l.ws_connection(a).is_err());
        assert!(l.ws_connection("198.51.100.9".parse().unwrap()).is_ok());
        drop(slots);
        assert!(
            l.ws_connection(a).is_ok(),
            "closed connections free their slots"
        );
        assert!(l.ws_connection("::1".parse().unwrap()).unwrap().is_none());
    }
}
