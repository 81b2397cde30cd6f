//! Where a room's media lives, typed: one function per question, so every service
//! asks the same way and gets the same answer.
//!
//! - **origin**: the SFU node holding the room's publisher, or a p2p broadcaster
//!   (a lease, renewed while live — a room is live exactly while it has one);
//! - **relays**: the edge nodes pulling the room, each with the node it pulls from
//!   (one expiring entry per edge, so a dead edge drops out by itself);
//! - **publisher**: the latest publisher session signaling placed, with its ingest
//!   protocol (what `publisher.*` webhooks report);
//! - **packager**: the packager writing its HLS (a lease);
//! - **viewers**: one count per serving node (origin, edges, packagers), summed.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skylark_bus::BusError> {
//! use skylark_bus::placement::{self, Origin, LEASE_TTL};
//! let bus = skylark_bus::connect(None).await?;
//! let origin = Origin::Sfu { node: "sfu-a".into() };
//! assert!(placement::claim_origin(&bus, "r1", &origin, LEASE_TTL).await?);
//! placement::set_viewers(&bus, "r1", "sfu-a", 3).await?;
//! placement::set_viewers(&bus, "r1", "sfu-b", 4).await?;
//! let room = placement::room(&bus, "r1").await?;
//! assert_eq!(room.origin, Some(origin));
//! assert_eq!(room.viewers(), 7);
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{keys, Bus, BusError, NodeInfo, NodeKind};

/// How long an origin, relay, packager or viewer-count claim lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often holders renew their claims (a third of [`LEASE_TTL`]).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long a WHIP/WHEP session record outlives its last use.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an ended session's tombstone lasts (see [`SessionRecord::ended`]).
pub const ENDED_SESSION_TTL: Duration = Duration::from_secs(60);

const P2P_PREFIX: &str = "p2p:";

/// Who holds a live room's publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An SFU node (by registry id).
    Sfu { node: String },
    /// A p2p broadcaster (by signaling connection id); media never touches an SFU.
    P2p { broadcaster: String },
}

impl Origin {
    fn holder(&self) -> String {
        match self {
            Self::Sfu { node } => node.clone(),
            Self::P2p { broadcaster } => format!("{P2P_PREFIX}{broadcaster}"),
        }
    }

    fn from_holder(holder: String) -> Self {
        match holder.strip_prefix(P2P_PREFIX) {
            Some(b) => Self::P2p {
                broadcaster: b.to_owned(),
            },
            None => Self::Sfu { node: holder },
        }
    }

    /// The SFU node id, for SFU origins.
    pub fn sfu_node(&self) -> Option<&str> {
        match self {
            Self::Sfu { node } => Some(node),
            Self::P2p { .. } => None,
        }
    }

    /// The broadcaster's connection id, for p2p origins.
    pub fn broadcaster(&self) -> Option<&str> {
        match self {
            Self::P2p { broadcaster } => Some(broadcaster),
            Self::Sfu { .. } => None,
        }
    }
}

/// An edge relaying a room: `node` pulls it from `parent` (the origin or another
/// edge); `depth` counts hops from the origin (1 = pulls from the origin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    pub node: String,
    pub parent: String,
    pub depth: u32,
}

/// Everything placement knows about one room, read at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPlacement {
    pub origin: Option<Origin>,
    pub relays: Vec<Relay>,
    pub packager: Option<String>,
    /// Viewers per serving node id, sorted by node.
    pub viewers_by_node: Vec<(String, u64)>,
}

impl RoomPlacement {
    /// Live means someone holds the room's publisher (an SFU or a p2p broadcaster).
    pub fn is_live(&self) -> bool {
        self.origin.is_some()
    }

    /// The room's viewers: the sum over every node serving it.
    pub fn viewers(&self) -> u64 {
        self.viewers_by_node.iter().map(|(_, n)| n).sum()
    }

    /// The room's viewers by how they watch.
    pub fn viewer_counts(&self) -> ViewerCounts {
        let mut c = ViewerCounts::default();
        for (entry, n) in &self.viewers_by_node {
            match entry.split_once(':').map(|(t, _)| t) {
                Some(HLS) => c.hls += n,
                Some(FLV) => c.flv += n,
                _ => c.webrtc += n,
            }
        }
        c
    }
}

/// A room's viewers by transport: WebRTC sessions on SFU nodes, HLS players and FLV
/// streams on packagers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerCounts {
    pub webrtc: u64,
    pub hls: u64,
    pub flv: u64,
}

impl ViewerCounts {
    pub fn total(&self) -> u64 {
        self.webrtc + self.hls + self.flv
    }
}

const HLS: &str = "hls";
const FLV: &str = "flv";

/// The viewer-count entry (see [`set_viewers`]) of a packager's HLS players.
pub fn hls_entry(packager: &str) -> String {
    format!("{HLS}:{packager}")
}

/// The viewer-count entry of a packager's FLV streams.
pub fn flv_entry(packager: &str) -> String {
    format!("{FLV}:{packager}")
}

/// The room's origin, if it is live.
pub async fn origin(bus: &impl Bus, room: &str) -> Result<Option<Origin>, BusError> {
    Ok(bus
        .lease_holder(&keys::room_origin(room))
        .await?
        .map(Origin::from_holder))
}

/// The registry entry of the room's origin SFU; `None` when the room is not live,
/// is p2p, or its origin node has left the registry.
pub async fn origin_node(bus: &impl Bus, room: &str) -> Result<Option<NodeInfo>, BusError> {
    let Some(Origin::Sfu { node }) = origin(bus, room).await? else {
        return Ok(None);
    };
    Ok(bus
        .nodes(NodeKind::Sfu)
        .await?
        .into_iter()
        .find(|n| n.id == node))
}

/// Claims the room's origin for `ttl`; `false` when someone else holds it. Claiming
/// again as the same holder renews.
pub async fn claim_origin(
    bus: &impl Bus,
    room: &str,
    origin: &Origin,
    ttl: Duration,
) -> Result<bool, BusError> {
    let claimed = bus
        .acquire_lease(&keys::room_origin(room), &origin.holder(), ttl)
        .await?;
    if claimed {
        bus.map_set(keys::live_rooms(), room, &origin.holder(), ttl)
            .await?;
    }
    Ok(claimed)
}

/// Keeps the origin claim alive; takes it back if it lapsed (a bus outage) and
/// nobody else took it. `false`: another origin holds the room now.
pub async fn renew_origin(
    bus: &impl Bus,
    room: &str,
    origin: &Origin,
    ttl: Duration,
) -> Result<bool, BusError> {
    let key = keys::room_origin(room);
    let holder = origin.holder();
    let held =
        bus.renew_lease(&key, &holder, ttl).await? || bus.acquire_lease(&key, &holder, ttl).await?;
    if held {
        bus.map_set(keys::live_rooms(), room, &holder, ttl).await?;
    }
    Ok(held)
}

/// Gives up the origin claim, if `origin` still holds it.
pub async fn release_origin(bus: &impl Bus, room: &str, origin: &Origin) -> Result<(), BusError> {
    let key = keys::room_origin(room);
    bus.release_lease(&key, &origin.holder()).await?;
    // Off the live list unless another origin holds the room now.
    if bus.lease_holder(&key).await?.is_none() {
        bus.map_remove(keys::live_rooms(), room).await?;
    }
    Ok(())
}

/// Every live room (one with an origin), sorted: what a "live now" list is built from,
/// without looking at rooms that are not live.
pub async fn live_rooms(bus: &impl Bus) -> Result<Vec<String>, BusError> {
    let mut rooms: Vec<String> = bus
        .map_entries(keys::live_rooms())
        .await?
        .into_iter()
        .map(|(room, _)| room)
        .collect();
    rooms.sort();
    Ok(rooms)
}

/// The publisher session signaling last placed in a room: while the room is live (has
/// an origin), its current publisher. A new session id means the publisher changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    /// Unique per publish (a WHIP/WebSocket session id, an RTMP connection id, a p2p
    /// broadcaster's connection id).
    pub session: String,
    /// How it publishes: `whip`, `rtmp`, `ws` or `p2p`.
    pub protocol: String,
    /// The credential generation it was granted with (p2p broadcasters): a new
    /// connection with the same one may take the room over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Records `publisher` as the room's latest, once signaling has placed it (kept for
/// [`SESSION_TTL`]; the next publish replaces it).
pub async fn set_publisher(
    bus: &impl Bus,
    room: &str,
    publisher: &Publisher,
) -> Result<(), BusError> {
    let value = serde_json::to_string(publisher).map_err(|source| BusError::Encode {
        what: "publisher",
        source,
    })?;
    bus.set(&keys::room_publisher(room), &value, Some(SESSION_TTL))
        .await
}

/// The room's latest publisher, if one was recorded.
pub async fn publisher(bus: &impl Bus, room: &str) -> Result<Option<Publisher>, BusError> {
    Ok(bus
        .get(&keys::room_publisher(room))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// The edges relaying the room, sorted by node id.
pub async fn relays(bus: &impl Bus, room: &str) -> Result<Vec<Relay>, BusError> {
    Ok(bus
        .map_entries(&keys::room_relays(room))
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
        .collect())
}

/// Records (or renews, for `ttl`) that `relay.node` pulls the room.
pub async fn set_relay(
    bus: &impl Bus,
    room: &str,
    relay: &Relay,
    ttl: Duration,
) -> Result<(), BusError> {
    let value = serde_json::to_string(relay).map_err(|source| BusError::Encode {
        what: "relay",
        source,
    })?;
    bus.map_set(&keys::room_relays(room), &relay.node, &value, ttl)
        .await
}

/// Records that `node` stopped relaying the room.
pub async fn remove_relay(bus: &impl Bus, room: &str, node: &str) -> Result<(), BusError> {
    bus.map_remove(&keys::room_relays(room), node).await
}

/// The packager holding the room, if any.
pub async fn packager(bus: &impl Bus, room: &str) -> Result<Option<String>, BusError> {
    bus.lease_holder(&keys::room_packager(room)).await
}

/// The registry entry of the packager holding the room.
pub async fn packager_node(bus: &impl Bus, room: &str) -> Result<Option<NodeInfo>, BusError> {
    let Some(holder) = packager(bus, room).await? else {
        return Ok(None);
    };
    Ok(bus
        .nodes(NodeKind::Packager)
        .await?
        .into_iter()
        .find(|n| n.id == holder))
}

/// Claims (or renews) the room for packager `me`; `false` when another holds it.
pub async fn claim_packager(
    bus: &impl Bus,
    room: &str,
    me: &str,
    ttl: Duration,
) -> Result<bool, BusError> {
    bus.acquire_lease(&keys::room_packager(room), me, ttl).await
}

/// Keeps packager `me`'s claim alive; `false`: it lapsed or another took it.
pub async fn renew_packager(
    bus: &impl Bus,
    room: &str,
    me: &str,
    ttl: Duration,
) -> Result<bool, BusError> {
    bus.renew_lease(&keys::room_packager(room), me, ttl).await
}

/// Gives up packager `me`'s claim on the room.
pub async fn release_packager(bus: &impl Bus, room: &str, me: &str) -> Result<(), BusError> {
    bus.release_lease(&keys::room_packager(room), me).await
}

/// Records how many viewers `node` serves in the room (0 removes its entry); a
/// packager records its HLS and FLV viewers under [`hls_entry`] and [`flv_entry`]. The
/// entry lives [`LEASE_TTL`]: the node re-sets it every [`RENEW_EVERY`], so a node
/// that dies stops counting by itself.
pub async fn set_viewers(
    bus: &impl Bus,
    room: &str,
    node: &str,
    count: u64,
) -> Result<(), BusError> {
    let key = keys::room_viewers(room);
    if count == 0 {
        bus.map_remove(&key, node).await
    } else {
        bus.map_set(&key, node, &count.to_string(), LEASE_TTL).await
    }
}

/// The room's viewers, summed over every node serving it.
pub async fn viewers(bus: &impl Bus, room: &str) -> Result<u64, BusError> {
    Ok(viewers_by_node(bus, room)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

async fn viewers_by_node(bus: &impl Bus, room: &str) -> Result<Vec<(String, u64)>, BusError> {
    Ok(bus
        .map_entries(&keys::room_viewers(room))
        .await?
        .into_iter()
        .filter_map(|(node, v)| Some((node, v.parse().ok()?)))
        .collect())
}

/// Everything about the room at once.
pub async fn room(bus: &impl Bus, room: &str) -> Result<RoomPlacement, BusError> {
    Ok(RoomPlacement {
        origin: origin(bus, room).await?,
        relays: relays(bus, room).await?,
        packager: packager(bus, room).await?,
        viewers_by_node: viewers_by_node(bus, room).await?,
    })
}

/// Which node holds a WHIP/WHEP session, so any signaling pod can serve its PATCH
/// and DELETE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// gRPC URL of the SFU node holding the session.
    pub sfu_url: String,
    pub room: String,
    /// `whip` or `whep`.
    pub kind: String,
    /// The session has ended: the record is a tombstone for [`ENDED_SESSION_TTL`], so a
    /// client's late `DELETE` still succeeds (DELETE is idempotent) while nothing else
    /// reaches the session.
    #[serde(default)]
    pub ended: bool,
}

/// Records session `id`.
pub async fn record_session(
    bus: &impl Bus,
    id: &str,
    record: &SessionRecord,
) -> Result<(), BusError> {
    let value = serde_json::to_string(record).map_err(|source| BusError::Encode {
        what: "session record",
        source,
    })?;
    bus.set(&keys::session(id), &value, Some(SESSION_TTL)).await
}

/// Session `id`'s record, if it exists.
pub async fn session(bus: &impl Bus, id: &str) -> Result<Option<SessionRecord>, BusError> {
    Ok(bus
        .get(&keys::session(id))
        .await?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// Marks session `id` ended: its record shrinks to a tombstone that expires after
/// [`ENDED_SESSION_TTL`] instead of the live session's day.
pub async fn end_session(bus: &impl Bus, id: &str) -> Result<(), BusError> {
    let Some(mut rec) = session(bus, id).await? else {
        return Ok(());
    };
    if rec.ended {
        return Ok(());
    }
    rec.ended = true;
    let value = serde_json::to_string(&rec).map_err(|source| BusError::Encode {
        what: "session record",
        source,
    })?;
    bus.set(&keys::session(id), &value, Some(ENDED_SESSION_TTL))
        .await
}
