//! Turns the bus's truth about live rooms into webhook events: every second it
//! compares `placement::live_rooms` (and each live room's publisher record) with
//! `room_live_state`, and writes each transition with its events in one transaction.
//! Each write is conditional on the state it saw, so of two replicas only one emits a
//! transition; and a restarted API catches up from the bus, losing nothing.

use super::outbox::{emit, room_json, LiveRow, NewEvent};
use super::EventType;
use crate::store::{now_ms, Store, StoreResult};
use serde_json::{json, Value};
use skylark_bus::placement::{self, Publisher};
use skylark_bus::AnyBus;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(1);
/// How often a live room's `room.viewers` is sent.
pub(crate) const VIEWERS_EVERY_MS: i64 = 30_000;

pub(crate) async fn run(store: Store, bus: AnyBus, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match round(&store, &bus).await {
            Ok(true) => super::delivery::wake(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "webhook reconciler: round skipped"),
        }
    }
}

/// One comparison of bus and table; `true` when it wrote events.
async fn round(store: &Store, bus: &AnyBus) -> anyhow::Result<bool> {
    // A bus error is not "every room went offline": skip the round instead.
    let live = placement::live_rooms(bus).await?;
    let recorded: HashMap<String, LiveRow> = store
        .recorded_live()
        .await?
        .into_iter()
        .map(|r| (r.room_id.clone(), r))
        .collect();
    let mut wrote = false;
    for room in &live {
        let publisher = placement::publisher(bus, room).await?;
        wrote |= match recorded.get(room) {
            None => went_live(store, room, publisher.as_ref()).await?,
            Some(row) => {
                let mut w = false;
                if let Some(p) = &publisher {
                    if row.publisher_session.as_deref() != Some(p.session.as_str()) {
                        w |= publisher_changed(store, row, p).await?;
                    }
                }
                if now_ms() - row.viewers_at >= VIEWERS_EVERY_MS {
                    let p = placement::room(bus, room).await?;
                    w |= viewers(store, row, &p).await?;
                }
                w
            }
        };
    }
    for row in recorded.values() {
        if !live.contains(&row.room_id) {
            // Read again: a room that just went live elsewhere is not offline.
            if placement::origin(bus, &row.room_id).await?.is_none() {
                wrote |= went_offline(store, row).await?;
            }
        }
    }
    Ok(wrote)
}

/// Who a room's events go to and the `room` object they carry. A deleted room keeps
/// its id and the owner recorded when it went live.
struct Subject {
    room_id: String,
    owner: String,
    room: Value,
}

impl Subject {
    /// `None`: no such room, and no recorded owner (not a room of this API).
    async fn of(
        store: &Store,
        room_id: &str,
        recorded_owner: Option<&str>,
    ) -> StoreResult<Option<Self>> {
        let (room, owner) = match store.room(room_id).await? {
            Some(r) => (room_json(&r), Some(r.owner_id)),
            None => (json!({ "id": room_id }), recorded_owner.map(str::to_owned)),
        };
        Ok(owner.map(|owner| Self {
            room_id: room_id.to_owned(),
            owner,
            room,
        }))
    }

    async fn of_row(store: &Store, row: &LiveRow) -> StoreResult<Self> {
        Ok(Self::of(store, &row.room_id, Some(&row.owner_id))
            .await?
            .unwrap_or_else(|| Self {
                room_id: row.room_id.clone(),
                owner: row.owner_id.clone(),
                room: json!({ "id": row.room_id }),
            }))
    }

    fn event(&self, kind: EventType, data: Value) -> NewEvent<'_> {
        NewEvent {
            kind,
            room_id: &self.room_id,
            owner_id: &self.owner,
            room: self.room.clone(),
            data,
        }
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// One transition: `update`, conditional on the state this replica saw (after
/// `prepare`, if any), and — only if it changed the row, so one replica wins —
/// `events`, all in one transaction. `true` when it won.
async fn transition(
    store: &Store,
    prepare: Option<AnyQuery<'_>>,
    update: AnyQuery<'_>,
    events: Vec<NewEvent<'_>>,
) -> StoreResult<bool> {
    let mut tx = store.begin().await?;
    if let Some(q) = prepare {
        q.execute(&mut *tx).await?;
    }
    let won = update.execute(&mut *tx).await?.rows_affected() == 1;
    if won {
        for ev in events {
            emit(&mut tx, ev).await?;
        }
    }
    tx.commit().await?;
    Ok(won)
}

fn publisher_data(session: &str, protocol: Option<&str>) -> Value {
    json!({ "session_id": session, "protocol": protocol })
}

async fn went_live(
    store: &Store,
    room_id: &str,
    publisher: Option<&Publisher>,
) -> StoreResult<bool> {
    let Some(subject) = Subject::of(store, room_id, None).await? else {
        return Ok(false); // not a room of this API (deleted before it went live)
    };
    let now = now_ms();
    let prepare = sqlx::query(
        "INSERT INTO room_live_state (room_id, owner_id, live_since, viewers_at, updated_at) \
         VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (room_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(&subject.owner)
    .bind(now);
    let update = sqlx::query(
        "UPDATE room_live_state SET owner_id = $1, live_since = $2, publisher_session = $3, \
         publisher_protocol = $4, viewers_at = $2, updated_at = $2 \
         WHERE room_id = $5 AND live_since IS NULL",
    )
    .bind(&subject.owner)
    .bind(now)
    .bind(publisher.map(|p| p.session.clone()))
    .bind(publisher.map(|p| p.protocol.clone()))
    .bind(room_id);
    let since = json!({ "live_since": skylark_media::hls::format_pdt(now) });
    let mut events = vec![subject.event(EventType::RoomLive, since)];
    if let Some(p) = publisher {
        let data = publisher_data(&p.session, Some(&p.protocol));
        events.push(subject.event(EventType::PublisherConnected, data));
    }
    let won = transition(store, Some(prepare), update, events).await?;
    if won {
        tracing::info!(room_id, "webhooks: room live");
    }
    Ok(won)
}

async fn publisher_changed(store: &Store, row: &LiveRow, p: &Publisher) -> StoreResult<bool> {
    let subject = Subject::of_row(store, row).await?;
    let old = row.publisher_session.clone().unwrap_or_default();
    let update = sqlx::query(
        "UPDATE room_live_state SET publisher_session = $1, publisher_protocol = $2, updated_at = $3 \
         WHERE room_id = $4 AND live_since = $5 AND COALESCE(publisher_session, '') = $6",
    )
    .bind(&p.session)
    .bind(&p.protocol)
    .bind(now_ms())
    .bind(&row.room_id)
    .bind(row.live_since)
    .bind(&old);
    let mut events = Vec::new();
    if !old.is_empty() {
        let data = publisher_data(&old, row.publisher_protocol.as_deref());
        events.push(subject.event(EventType::PublisherDisconnected, data));
    }
    let data = publisher_data(&p.session, Some(&p.protocol));
    events.push(subject.event(EventType::PublisherConnected, data));
    transition(store, None, update, events).await
}

async fn went_offline(store: &Store, row: &LiveRow) -> StoreResult<bool> {
    let subject = Subject::of_row(store, row).await?;
    let now = now_ms();
    let update = sqlx::query(
        "UPDATE room_live_state SET live_since = NULL, publisher_session = NULL, \
         publisher_protocol = NULL, updated_at = $1 WHERE room_id = $2 AND live_since = $3",
    )
    .bind(now)
    .bind(&row.room_id)
    .bind(row.live_since);
    let mut events = Vec::new();
    if let Some(s) = &row.publisher_session {
        let data = publisher_data(s, row.publisher_protocol.as_deref());
        events.push(subject.event(EventType::PublisherDisconnected, data));
    }
    let data = json!({
        "live_since": skylark_media::hls::format_pdt(row.live_since),
        "duration_s": (now - row.live_since).max(0) / 1000,
    });
    events.push(subject.event(EventType::RoomOffline, data));
    let won = transition(store, None, update, events).await?;
    if won {
        tracing::info!(room_id = %row.room_id, "webhooks: room offline");
    }
    Ok(won)
}

async fn viewers(store: &Store, row: &LiveRow, p: &placement::RoomPlacement) -> StoreResult<bool> {
    let subject = Subject::of_row(store, row).await?;
    let update = sqlx::query(
        "UPDATE room_live_state SET viewers_at = $1 WHERE room_id = $2 AND viewers_at = $3 \
         AND live_since IS NOT NULL",
    )
    .bind(now_ms())
    .bind(&row.room_id)
    .bind(row.viewers_at);
    let c = p.viewer_counts();
    let data = json!({
        "viewers": p.viewers(),
        "by_transport": { "webrtc": c.webrtc, "hls": c.hls, "flv": c.flv },
    });
    let events = vec![subject.event(EventType::RoomViewers, data)];
    transition(store, None, update, events).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Mode, Room, User, Visibility};

    /// Two replicas that saw the same state each try the transitions: one writes each,
    /// with its events, in the transaction of its state change; the other writes nothing.
    #[tokio::test]
    async fn a_transition_two_replicas_saw_is_written_once_with_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let user = User {
            id: "u1".into(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            created_at_ms: now_ms(),
            password_hash: "$argon2id$x".into(),
        };
        store.create_user(&user).await.unwrap();
        let room = Room {
            id: "r1".into(),
            owner_id: "u1".into(),
            title: "t".into(),
            slug: "t".into(),
            visibility: Visibility::Public,
            mode: Mode::Sfu,
            created_at_ms: now_ms(),
            updated_at_ms: now_ms(),
            viewer_generation: 0,
            record: false,
        };
        store.create_room(&room, "k1", "h1").await.unwrap();
        store
            .sync_config_endpoints(&["https://ops.example.com/hooks".into()])
            .await
            .unwrap();
        let p = Publisher {
            session: "s1".into(),
            protocol: "rtmp".into(),
            key_id: None,
        };
        // Both saw the room not live.
        assert!(went_live(&store, "r1", Some(&p)).await.unwrap());
        assert!(!went_live(&store, "r1", Some(&p)).await.unwrap());
        // Both saw it live, then gone from the bus.
        let row = store.recorded_live().await.unwrap().pop().unwrap();
        assert!(went_offline(&store, &row).await.unwrap());
        assert!(!went_offline(&store, &row).await.unwrap());

        let types: Vec<String> = sqlx::query_scalar("SELECT type FROM webhook_events ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            types,
            [
                "room.live",
                "publisher.connected",
                "publisher.disconnected",
                "room.offline"
            ]
        );
        let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(deliveries, 4, "one per event for the one endpoint");
    }
}
