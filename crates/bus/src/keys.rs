//! Names of the shared keys, leases and channels: one place, so every service agrees.

/// Lease held by the SFU node that is a room's origin while the room is live.
pub fn room_origin(room: &str) -> String {
    format!("room:{room}:origin")
}

/// Lease held by the packager writing a room's HLS.
pub fn room_packager(room: &str) -> String {
    format!("room:{room}:packager")
}

/// Current viewer count of a room (a decimal string).
pub fn room_viewers(room: &str) -> String {
    format!("room:{room}:viewers")
}

/// Per-room event channel (live/offline, viewer counts, p2p relay, end of publish).
pub fn room_channel(room: &str) -> String {
    format!("room:{room}:events")
}

/// Event `type` asking the room's publisher session to end (key rotated, room deleted).
pub const EVENT_END_PUBLISH: &str = "end_publish";

/// A WHIP/WHEP session resource: which node holds it, so any signaling pod can
/// serve its PATCH and DELETE.
pub fn session(id: &str) -> String {
    format!("session:{id}")
}
