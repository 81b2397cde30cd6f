//! What the API knows of live media: read from the bus, where signaling and the SFUs
//! record it. The API never blocks on it: with the bus down, rooms read as offline.

use serde_json::json;
use skylark_bus::{keys, AnyBus, Bus};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStatus {
    pub live: bool,
    pub viewers: u64,
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
        let live = match self.bus.lease_holder(&keys::room_origin(room_id)).await {
            Ok(holder) => holder.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "bus unavailable: reporting room offline");
                return RoomStatus::default();
            }
        };
        let viewers = if live {
            self.bus
                .get(&keys::room_viewers(room_id))
                .await
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        RoomStatus { live, viewers }
    }

    /// Tells whoever holds the room's publisher to cut it (key rotated, room deleted).
    pub async fn end_publish(&self, room_id: &str, reason: &str) {
        let event = json!({"type": keys::EVENT_END_PUBLISH, "room": room_id, "reason": reason});
        if let Err(e) = self
            .bus
            .publish(&keys::room_channel(room_id), &event.to_string())
            .await
        {
            tracing::warn!(error = %e, room_id, "could not announce the end of a publish");
        }
    }
}
