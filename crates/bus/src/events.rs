//! What happens in a room, as one typed enum on the room's channel: published and
//! parsed here only, so every service (and every WebSocket client, which receives
//! these objects as they are) sees the same shape.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), skylark_bus::BusError> {
//! use skylark_bus::events::{self, RoomEvent};
//! let bus = skylark_bus::connect(None).await?;
//! let mut sub = events::subscribe(&bus, "r1").await?;
//! events::publish(&bus, "r1", &RoomEvent::ViewerLeft { viewer: "c1".into() }).await?;
//! assert_eq!(sub.recv().await, Some(RoomEvent::ViewerLeft { viewer: "c1".into() }));
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

use crate::{keys, Bus, BusError, Subscription};

/// One event on a room's channel. Serialized with a `type` tag; the `State`
/// variant is what WebSocket clients receive as `{"type":"room",…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RoomEvent {
    /// The room's live state and total viewer count (summed over its nodes).
    #[serde(rename = "room")]
    State {
        room: String,
        live: bool,
        viewers: u64,
        /// The p2p broadcaster's connection id, in p2p rooms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broadcaster: Option<String>,
    },
    /// p2p: a viewer arrived; the broadcaster makes it an offer.
    #[serde(rename = "viewer-joined")]
    ViewerJoined { viewer: String },
    /// p2p: a viewer left; the broadcaster closes its connection.
    #[serde(rename = "viewer-left")]
    ViewerLeft { viewer: String },
    /// p2p: a signaling message (`offer`, `answer`, `candidate`) for connection `to`.
    #[serde(rename = "relay")]
    Relay { to: String, msg: serde_json::Value },
    /// Whoever holds the room's publisher must cut it (key rotated, room deleted).
    #[serde(rename = "end_publish")]
    EndPublish { room: String, reason: String },
    /// The publisher `session` (a p2p broadcaster's connection id, or an SFU session
    /// id) must stop: a new publish with the same credential took the room over (a
    /// reconnect); the SFU sends it for the sessions it replaced.
    #[serde(rename = "publish_taken_over")]
    PublishTakenOver { session: String },
}

/// Publishes `event` on `room`'s channel; returns how many subscribers got it.
pub async fn publish(bus: &impl Bus, room: &str, event: &RoomEvent) -> Result<usize, BusError> {
    bus.publish(&keys::room_channel(room), &encode(event)?)
        .await
}

fn encode(event: &RoomEvent) -> Result<String, BusError> {
    serde_json::to_string(event).map_err(|source| BusError::Encode {
        what: "room event",
        source,
    })
}

/// Announces that `room` went live (its origin recorded) on the channel every packager
/// listens to: a packager takes the room at once instead of at its next look at the
/// SFUs' rooms. The event is a [`RoomEvent::State`] with `live` set.
pub async fn publish_went_live(bus: &impl Bus, room: &str) -> Result<usize, BusError> {
    let event = RoomEvent::State {
        room: room.to_owned(),
        live: true,
        viewers: 0,
        broadcaster: None,
    };
    bus.publish(keys::went_live_channel(), &encode(&event)?)
        .await
}

/// Subscribes to rooms going live ([`publish_went_live`]). A message lost while the
/// subscription is down (a Redis reconnect) is not replayed: look for live rooms
/// another way too.
pub async fn subscribe_went_live(bus: &impl Bus) -> Result<RoomEvents, BusError> {
    Ok(RoomEvents(bus.subscribe(keys::went_live_channel()).await?))
}

/// Subscribes to `room`'s events.
pub async fn subscribe(bus: &impl Bus, room: &str) -> Result<RoomEvents, BusError> {
    Ok(RoomEvents(bus.subscribe(&keys::room_channel(room)).await?))
}

/// A room's event stream; drop it to unsubscribe.
pub struct RoomEvents(Subscription);

impl RoomEvents {
    /// The next event; `None` when the subscription ended (resubscribe). Messages
    /// that are not a [`RoomEvent`] (a newer peer during an upgrade) are skipped.
    pub async fn recv(&mut self) -> Option<RoomEvent> {
        loop {
            let raw = self.0.recv().await?;
            match serde_json::from_str(&raw) {
                Ok(event) => return Some(event),
                Err(error) => tracing::debug!(%error, "skipping an unreadable room event"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shapes_are_what_clients_read() {
        let state = RoomEvent::State {
            room: "r".into(),
            live: true,
            viewers: 3,
            broadcaster: None,
        };
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            json!({"type": "room", "room": "r", "live": true, "viewers": 3})
        );
        let end = RoomEvent::EndPublish {
            room: "r".into(),
            reason: "stream_key_rotated".into(),
        };
        assert_eq!(
            serde_json::to_value(&end).unwrap(),
            json!({"type": "end_publish", "room": "r", "reason": "stream_key_rotated"})
        );
        let joined: RoomEvent =
            serde_json::from_value(json!({"type": "viewer-joined", "viewer": "c1"})).unwrap();
        assert_eq!(
            joined,
            RoomEvent::ViewerJoined {
                viewer: "c1".into()
            }
        );
    }
}
