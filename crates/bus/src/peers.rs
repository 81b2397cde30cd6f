//! The addresses a p2p room's participants announce in their ICE candidates, as
//! signaling relays them: a TURN server relays a p2p room's credential only to these
//! (no open relay), and only those of the other side (a viewer's relays reach the
//! broadcaster's addresses, the broadcaster's its viewers'), so nobody reaches an
//! address by announcing it. One entry per connection and address, each expiring unless
//! the connection renews it, so a participant that goes away drops out by itself.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skylark_bus::BusError> {
//! use skylark_auth::P2pSide;
//! use skylark_bus::peers;
//! let bus = skylark_bus::connect(None).await?;
//! let ip = "203.0.113.7".parse().unwrap();
//! assert_eq!(peers::record(&bus, "r1", "c1", P2pSide::Broadcaster, &[ip]).await?, 1);
//! let announced = peers::ips(&bus, "r1").await?;
//! assert!(announced.announced_by(P2pSide::Broadcaster).contains(&ip));
//! assert!(announced.announced_by(P2pSide::Viewer).is_empty());
//! assert_eq!(peers::ips(&bus, "r2").await?, peers::RoomAddrs::default());
//! # Ok(()) }
//! ```

use skylark_auth::P2pSide;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::{keys, Bus, BusError};

/// How long an announced address lasts unless its connection records it again (every
/// [`PEER_RENEW_EVERY`] while it lives).
pub const PEER_TTL: Duration = Duration::from_secs(60);
/// How often a live connection records its addresses again.
pub const PEER_RENEW_EVERY: Duration = Duration::from_secs(20);
/// Entries (connection × address) one room holds; past it new ones are not recorded.
/// Checked before writing, so concurrent writers may overshoot by a few.
pub const MAX_PER_ROOM: usize = 256;
/// Addresses one connection records: a browser announces a few per interface and
/// server (host, server-reflexive, relayed).
pub const MAX_PER_CONNECTION: usize = 16;

fn entry(ip: IpAddr, conn: &str) -> String {
    format!("{ip} {conn}")
}

/// The addresses a room's participants announced, by side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomAddrs {
    pub broadcaster: HashSet<IpAddr>,
    pub viewers: HashSet<IpAddr>,
}

impl RoomAddrs {
    /// What `side`'s participants announced.
    pub fn announced_by(&self, side: P2pSide) -> &HashSet<IpAddr> {
        match side {
            P2pSide::Broadcaster => &self.broadcaster,
            P2pSide::Viewer => &self.viewers,
        }
    }
}

/// Records that connection `conn` on `side` of p2p room `room` announced `ips` (renews
/// them when already there), at most [`MAX_PER_CONNECTION`] of them; how many were
/// recorded (0 when the room holds [`MAX_PER_ROOM`] entries of other connections).
pub async fn record(
    bus: &impl Bus,
    room: &str,
    conn: &str,
    side: P2pSide,
    ips: &[IpAddr],
) -> Result<usize, BusError> {
    let key = keys::room_peer_ips(room);
    // The whole map, to count the others' entries: at most 272, read on a message with
    // an address new to its connection (a few per connection) and at each renewal, ~0.7
    // ms of Redis at the bound (docs/benchmarks.md, "p2p peer addresses"). A count
    // would take a bus operation of its own for less than that.
    let mine = |field: &str| field.rsplit_once(' ').is_some_and(|(_, c)| c == conn);
    let others = bus
        .map_entries(&key)
        .await?
        .iter()
        .filter(|(field, _)| !mine(field))
        .count();
    if others >= MAX_PER_ROOM {
        return Ok(0);
    }
    let ips = &ips[..ips.len().min(MAX_PER_CONNECTION)];
    for ip in ips {
        bus.map_set(&key, &entry(*ip, conn), side.tag(), PEER_TTL)
            .await?;
    }
    Ok(ips.len())
}

/// Forgets what `conn` announced (it left the room).
pub async fn forget(
    bus: &impl Bus,
    room: &str,
    conn: &str,
    ips: &[IpAddr],
) -> Result<(), BusError> {
    let key = keys::room_peer_ips(room);
    for ip in ips {
        bus.map_remove(&key, &entry(*ip, conn)).await?;
    }
    Ok(())
}

/// Every address the room's participants announced and still hold, by side.
pub async fn ips(bus: &impl Bus, room: &str) -> Result<RoomAddrs, BusError> {
    let mut out = RoomAddrs::default();
    for (field, value) in bus.map_entries(&keys::room_peer_ips(room)).await? {
        let Some(ip) = field.split_once(' ').and_then(|(ip, _)| ip.parse().ok()) else {
            continue;
        };
        match P2pSide::of_tag(&value) {
            Some(P2pSide::Broadcaster) => out.broadcaster.insert(ip),
            Some(P2pSide::Viewer) => out.viewers.insert(ip),
            None => continue,
        };
    }
    Ok(out)
}
