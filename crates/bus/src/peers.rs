//! The addresses a p2p room's participants announce in their ICE candidates, as
//! signaling relays them: a TURN server relays a p2p room's credential only to these
//! (no open relay). One entry per connection and address, each expiring unless the
//! connection renews it, so a participant that goes away drops out by itself.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skylark_bus::BusError> {
//! use skylark_bus::peers;
//! let bus = skylark_bus::connect(None).await?;
//! let ip = "203.0.113.7".parse().unwrap();
//! assert_eq!(peers::record(&bus, "r1", "c1", &[ip]).await?, 1);
//! assert!(peers::ips(&bus, "r1").await?.contains(&ip));
//! assert!(peers::ips(&bus, "r2").await?.is_empty());
//! # Ok(()) }
//! ```

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

/// Records that connection `conn` of p2p room `room` announced `ips` (renews them when
/// already there), at most [`MAX_PER_CONNECTION`] of them; how many were recorded (0
/// when the room holds [`MAX_PER_ROOM`] entries of other connections).
pub async fn record(
    bus: &impl Bus,
    room: &str,
    conn: &str,
    ips: &[IpAddr],
) -> Result<usize, BusError> {
    let key = keys::room_peer_ips(room);
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
        bus.map_set(&key, &entry(*ip, conn), "", PEER_TTL).await?;
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

/// Every address the room's participants announced and still hold.
pub async fn ips(bus: &impl Bus, room: &str) -> Result<HashSet<IpAddr>, BusError> {
    Ok(bus
        .map_entries(&keys::room_peer_ips(room))
        .await?
        .into_iter()
        .filter_map(|(field, _)| field.split_once(' ')?.0.parse().ok())
        .collect())
}
