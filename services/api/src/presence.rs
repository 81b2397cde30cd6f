//! What the API knows of live media: read from the bus, where signaling and the SFUs
//! record it. The API never blocks on it: with the bus down, rooms read as offline.

use skylark_bus::events::{self, RoomEvent};
use skylark_bus::placement::ViewerCounts;
use skylark_bus::{placement, AnyBus};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStatus {
    pub live: bool,
    /// Every viewer, however they watch.
    pub viewers: u64,
    pub by_transport: ViewerCounts,
}

#[derive(Clone)]
pub struct Presence {
    bus: AnyBus,
}

impl Presence {
    pub fn new(bus: AnyBus) -> Self {
        Self { bus }
    }

    /// The bus this reads from.
    pub fn bus(&self) -> &AnyBus {
        &self.bus
    }

    pub async fn status(&self, room_id: &str) -> RoomStatus {
        match placement::room(&self.bus, room_id).await {
            Ok(p) if p.is_live() => RoomStatus {
                live: true,
                viewers: p.viewers(),
                by_transport: p.viewer_counts(),
            },
            Ok(_) => RoomStatus::default(),
            Err(e) => {
                tracing::warn!(error = %e, "bus unavailable: reporting room offline");
                RoomStatus::default()
            }
        }
    }

    /// Tells whoever holds the room's publisher to cut it (key rotated, room deleted).
    pub async fn end_publish(&self, room_id: &str, reason: &str) {
        let event = RoomEvent::EndPublish {
            room: room_id.to_owned(),
            reason: reason.to_owned(),
        };
        if let Err(e) = events::publish(&self.bus, room_id, &event).await {
            tracing::warn!(error = %e, room_id, "could not announce the end of a publish");
        }
    }
}
