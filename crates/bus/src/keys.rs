//! Names of the shared keys, leases, maps and channels. Private: services read and
//! write them through the typed [`placement`](crate::placement) and
//! [`events`](crate::events) modules, never by spelling a key.

/// Lease held by a room's origin while the room is live: an SFU node id, or
/// `p2p:{connection}` for a peer-to-peer broadcaster.
pub(crate) fn room_origin(room: &str) -> String {
    format!("room:{room}:origin")
}

/// Map room id → origin holder, one field per live room (expiring with the origin's
/// lease): the set of live rooms, without scanning every room's lease.
pub(crate) fn live_rooms() -> &'static str {
    "rooms:live"
}

/// Channel of rooms going live, for packagers (which package any room).
pub(crate) fn went_live_channel() -> &'static str {
    "rooms:went-live"
}

/// The room's latest publisher session (id and ingest protocol), as signaling placed it.
pub(crate) fn room_publisher(room: &str) -> String {
    format!("room:{room}:publisher")
}

/// Lease held by the packager writing a room's HLS.
pub(crate) fn room_packager(room: &str) -> String {
    format!("room:{room}:packager")
}

/// Map node id → viewers that node serves in the room (one field per node).
pub(crate) fn room_viewers(room: &str) -> String {
    format!("room:{room}:viewers")
}

/// Map node id → relay link (which node it pulls the room from, and its depth).
pub(crate) fn room_relays(room: &str) -> String {
    format!("room:{room}:relays")
}

/// Per-room event channel (live/offline, viewer counts, p2p relay, end of publish).
pub(crate) fn room_channel(room: &str) -> String {
    format!("room:{room}:events")
}

/// A WHIP/WHEP session resource: which node holds it, so any signaling pod can
/// serve its PATCH and DELETE.
pub(crate) fn session(id: &str) -> String {
    format!("session:{id}")
}

/// Map `{ip} {connection}` → `b`|`v` (the side): the addresses a p2p room's participants announced in
/// their ICE candidates (one entry per connection and address, each expiring).
pub(crate) fn room_peer_ips(room: &str) -> String {
    format!("room:{room}:peer_ips")
}
