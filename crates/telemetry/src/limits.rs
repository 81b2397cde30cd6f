//! Abuse limits the front doors share: token buckets keyed by client address, room or
//! account, and who the client is — the connection's peer, or, behind a configured
//! trusted proxy (`SKYLARK_TRUSTED_PROXIES`), the address that proxy saw
//! (`X-Forwarded-For`). A client can't pick its own address by sending that header.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

/// Token buckets, one per key (client address, room, account).
pub struct Limiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

/// Past this many tracked keys, full buckets are forgotten (bounded memory).
const MAX_TRACKED: usize = 100_000;

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; `Err(seconds)` says when to retry.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let burst = f64::from(self.limit.burst.max(1));
        let rate = f64::from(self.limit.per_minute.max(1)) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_TRACKED {
                // Every bucket in use: a flood of distinct keys. Forget them all rather
                // than grow without bound.
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil() as u64)
        }
    }
}

/// Address ranges of the proxies in front of Skylark (an ingress controller, a load
/// balancer) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "SKYLARK_TRUSTED_PROXIES: {0:?} is not an address or CIDR range (e.g. 10.0.0.0/8,fd00::/8)"
)]
pub struct BadProxyRange(pub String);

impl TrustedProxies {
    /// Comma-separated addresses and CIDR ranges; empty: trust no one.
    pub fn parse(s: &str) -> Result<Self, BadProxyRange> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || BadProxyRange(part.to_string());
            let (addr, bits) = match part.split_once('/') {
                Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
                None => (part, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = bits.unwrap_or(max);
            if bits > max {
                return Err(bad());
            }
            out.push((addr, bits));
        }
        Ok(Self(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, bits)| in_range(ip, canonical(*net), *bits))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries further
    /// left were written by the client and prove nothing).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(xff) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in xff.rsplit(',').take(16) {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();

/// Sets this process's trusted proxies (once, at start-up); later calls are ignored.
pub fn install_trusted_proxies(proxies: TrustedProxies) {
    let _ = TRUSTED.set(proxies);
}

/// The client's address, as [`TrustedProxies::client_ip`] of this process tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let proxies = TRUSTED.get_or_init(TrustedProxies::default);
        Ok(ClientIp(proxies.client_ip(peer, xff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refuse_per_key() {
        let l = Limiter::new(RateLimit {
            burst: 2,
            per_minute: 1,
        });
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(l.check(&a).is_ok());
        assert!(l.check(&a).is_ok());
        let retry = l.check(&a).unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(l.check(&b).is_ok(), "other clients unaffected");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7, fd00::/8").unwrap();
        // A direct client can't claim another address.
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // Behind the ingress: the address the ingress saw.
        assert_eq!(
            t.client_ip(ip("10.1.2.3"), Some("198.51.100.7")),
            ip("198.51.100.7")
        );
        // A client-written entry left of the real one is ignored; trusted hops skipped.
        assert_eq!(
            t.client_ip(ip("10.1.2.3"), Some("1.2.3.4, 198.51.100.7, 192.168.1.7")),
            ip("198.51.100.7")
        );
        // Junk stops the walk at the last good hop.
        assert_eq!(
            t.client_ip(ip("10.1.2.3"), Some("nonsense")),
            ip("10.1.2.3")
        );
        assert_eq!(t.client_ip(ip("10.1.2.3"), None), ip("10.1.2.3"));
        // IPv4-mapped peers and IPv6 ranges.
        assert!(t.contains(ip("::ffff:10.9.9.9")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("fe80::1")));
        assert!(!TrustedProxies::default().contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TrustedProxies::parse(" ").unwrap(),
            TrustedProxies::default()
        );
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("8.8.8.8")));
    }
}
