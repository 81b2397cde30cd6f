//! The webhook tables: endpoints, the event outbox, deliveries, and the live state the
//! reconciler records. Portable SQL, like [`crate::store`].

use super::{join_events, split_events, EventType};
use crate::store::{now_ms, Room, Store, StoreResult};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::sync::atomic::{AtomicI64, Ordering};
use utoipa::ToSchema;

/// `state` of a delivery.
pub(crate) const PENDING: &str = "pending";
pub(crate) const DELIVERED: &str = "delivered";
pub(crate) const FAILED: &str = "failed";

/// An endpoint as stored.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub id: String,
    pub owner_id: Option<String>,
    pub url: String,
    pub events: Vec<EventType>,
    pub secret: String,
    pub created_at_ms: i64,
}

fn endpoint_from(r: &AnyRow) -> StoreResult<Endpoint> {
    Ok(Endpoint {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        url: r.try_get("url")?,
        events: split_events(&r.try_get::<String, _>("events")?),
        secret: r.try_get("secret")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

/// An endpoint's deliveries at a glance.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeliveryStatus {
    /// Deliveries not yet delivered nor given up.
    pub pending: i64,
    /// HTTP status of the latest attempt (null: none yet, or no answer).
    pub last_status: Option<i64>,
    /// Why the latest attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the latest attempt was made (Unix ms).
    pub last_attempt_at_ms: Option<i64>,
    /// When the next retry is due (Unix ms), if one is pending.
    pub next_retry_at_ms: Option<i64>,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub room_id: String,
    /// `pending`, `delivered`, or `failed` (retried for 24 h without success).
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_retry_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub url: String,
    /// Empty for deployment-wide endpoints (signed with the configured secret).
    pub secret: String,
    pub body: String,
    pub attempts: i64,
    pub created_at_ms: i64,
}

/// The last live state the reconciler recorded of a room.
#[derive(Debug, Clone)]
pub(crate) struct LiveRow {
    pub room_id: String,
    pub owner_id: String,
    pub live_since: i64,
    pub publisher_session: Option<String>,
    pub publisher_protocol: Option<String>,
    pub viewers_at: i64,
}

/// An event to write: the room it concerns (its owner's endpoints receive it), and its
/// type-specific `data`.
pub(crate) struct NewEvent<'a> {
    pub kind: EventType,
    pub room_id: &'a str,
    pub owner_id: &'a str,
    /// The `room` object of the body: at least `id`.
    pub room: Value,
    pub data: Value,
}

/// The `room` object of an event's body.
pub(crate) fn room_json(room: &Room) -> Value {
    json!({
        "id": room.id, "slug": room.slug, "title": room.title,
        "owner_id": room.owner_id, "visibility": room.visibility, "mode": room.mode,
    })
}

/// An increasing number per process (microseconds, bumped when two fall in the same
/// one): orders a room's events, which one replica writes at a time.
fn next_seq() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms().saturating_mul(1000)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::from(d.subsec_micros() % 1000));
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let seq = now.max(prev + 1);
        match LAST.compare_exchange(prev, seq, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return seq,
            Err(p) => prev = p,
        }
    }
}

/// Writes `ev` to the outbox with a delivery for each endpoint that wants it (the
/// owner's, and the deployment-wide ones), on `conn`: the caller's transaction, so the
/// event exists exactly when the change does. Nothing is written when nobody listens.
pub(crate) async fn emit(conn: &mut AnyConnection, ev: NewEvent<'_>) -> StoreResult<()> {
    let rows = sqlx::query(
        "SELECT id, owner_id, url, events, secret, created_at FROM webhook_endpoints \
         WHERE owner_id = $1 OR owner_id IS NULL",
    )
    .bind(ev.owner_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut targets = Vec::new();
    for r in &rows {
        let ep = endpoint_from(r)?;
        if ep.events.contains(&ev.kind) {
            targets.push(ep.id);
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let id = crate::ids::new_id("evt");
    let body = json!({
        "id": id,
        "type": ev.kind.as_str(),
        "created_at": skylark_media::hls::format_pdt(now),
        "room": ev.room,
        "data": ev.data,
    })
    .to_string();
    let seq = next_seq();
    sqlx::query(
        "INSERT INTO webhook_events (id, type, room_id, seq, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(ev.kind.as_str())
    .bind(ev.room_id)
    .bind(seq)
    .bind(&body)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for endpoint in targets {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, room_id, seq, state, \
             attempts, next_attempt_at, lease_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 0, $7)",
        )
        .bind(crate::ids::new_id("dlv"))
        .bind(&id)
        .bind(&endpoint)
        .bind(ev.room_id)
        .bind(seq)
        .bind(PENDING)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    metrics::counter!("skylark_webhook_events_total", "type" => ev.kind.as_str()).increment(1);
    Ok(())
}

const ENDPOINT_COLS: &str = "id, owner_id, url, events, secret, created_at";

impl Store {
    pub(crate) async fn create_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&ep.id)
        .bind(&ep.owner_id)
        .bind(&ep.url)
        .bind(join_events(&ep.events))
        .bind(&ep.secret)
        .bind(ep.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn endpoints_of(&self, owner: &str) -> StoreResult<Vec<Endpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE owner_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(endpoint_from).collect()
    }

    pub(crate) async fn endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>> {
        if id.contains('\0') || id.len() > 128 {
            return Ok(None);
        }
        let sql = format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(endpoint_from).transpose()
    }

    pub(crate) async fn endpoint_count_of(&self, owner: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE owner_id = $1")
                .bind(owner)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    /// Deletes an endpoint and its deliveries (explicitly: SQLite may not enforce
    /// foreign keys); events nobody else awaits are left to [`Store::prune_webhooks`].
    pub(crate) async fn delete_endpoint(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes the deployment-wide endpoints those of `urls` (every event type), removing
    /// any no longer configured.
    pub(crate) async fn sync_config_endpoints(&self, urls: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = urls
            .iter()
            .map(|u| format!("whk_config_{}", &skylark_auth::hash_stream_key(u)[..16]))
            .collect();
        let existing = sqlx::query("SELECT id FROM webhook_endpoints WHERE owner_id IS NULL")
            .fetch_all(&mut *tx)
            .await?;
        for r in &existing {
            let id: String = r.try_get("id")?;
            if !ids.contains(&id) {
                sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for (id, url) in ids.iter().zip(urls) {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret, created_at) \
                 VALUES ($1, NULL, $2, $3, '', $4) \
                 ON CONFLICT (id) DO UPDATE SET events = excluded.events",
            )
            .bind(id)
            .bind(url)
            .bind(join_events(&EventType::ALL))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn delivery_status(&self, endpoint: &str) -> StoreResult<DeliveryStatus> {
        let pending: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1 AND state = $2",
        )
        .bind(endpoint)
        .bind(PENDING)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let last = sqlx::query(
            "SELECT last_status, last_error, last_attempt_at FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND last_attempt_at IS NOT NULL \
             ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .bind(endpoint)
        .fetch_optional(&self.pool)
        .await?;
        let next: Option<i64> = sqlx::query(
            "SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND state = $2 AND attempts > 0",
        )
        .bind(endpoint)
        .bind(PENDING)
        .fetch_one(&self.pool)
        .await?
        .try_get("t")?;
        let mut s = DeliveryStatus {
            pending,
            next_retry_at_ms: next,
            ..Default::default()
        };
        if let Some(r) = last {
            s.last_status = r.try_get("last_status")?;
            s.last_error = r.try_get("last_error")?;
            s.last_attempt_at_ms = r.try_get("last_attempt_at")?;
        }
        Ok(s)
    }

    /// The endpoint's latest deliveries, newest first.
    pub(crate) async fn deliveries(
        &self,
        endpoint: &str,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT d.event_id, e.type, d.room_id, d.state, d.attempts, d.last_status, \
             d.last_error, d.next_attempt_at, d.delivered_at, d.created_at \
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
             WHERE d.endpoint_id = $1 ORDER BY d.seq DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let kind: String = r.try_get("type")?;
            let Some(kind) = EventType::parse(&kind) else {
                continue;
            };
            let state: String = r.try_get("state")?;
            out.push(Delivery {
                event_id: r.try_get("event_id")?,
                kind,
                room_id: r.try_get("room_id")?,
                attempts: r.try_get("attempts")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                next_retry_at_ms: (state == PENDING)
                    .then(|| r.try_get("next_attempt_at"))
                    .transpose()?,
                delivered_at_ms: r.try_get("delivered_at")?,
                created_at_ms: r.try_get("created_at")?,
                state,
            });
        }
        Ok(out)
    }

    /// Claims up to `limit` due deliveries until `lease_until`: each the oldest pending
    /// one of its room for its endpoint (so a room's events go out in order), and not
    /// leased by another replica. A claim is one conditional UPDATE: two replicas never
    /// both win it.
    pub(crate) async fn claim_due(&self, lease_until: i64, limit: i64) -> StoreResult<Vec<Due>> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.type, p.url, p.secret, e.body, d.attempts, d.created_at \
             FROM webhook_deliveries d \
             JOIN webhook_events e ON e.id = d.event_id \
             JOIN webhook_endpoints p ON p.id = d.endpoint_id \
             WHERE d.state = $1 AND d.next_attempt_at <= $2 AND d.lease_until < $2 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o WHERE o.endpoint_id = d.endpoint_id \
               AND o.room_id = d.room_id AND o.state = $1 AND o.seq < d.seq) \
             ORDER BY d.seq LIMIT $3",
        )
        .bind(PENDING)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let won = sqlx::query(
                "UPDATE webhook_deliveries SET lease_until = $1 \
                 WHERE id = $2 AND state = $3 AND lease_until < $4",
            )
            .bind(lease_until)
            .bind(&id)
            .bind(PENDING)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if won {
                out.push(Due {
                    id,
                    event_id: r.try_get("event_id")?,
                    kind: r.try_get("type")?,
                    url: r.try_get("url")?,
                    secret: r.try_get("secret")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                    created_at_ms: r.try_get("created_at")?,
                });
            }
        }
        Ok(out)
    }

    /// Records an attempt: `next` None = delivered (2xx); Some(Some(t)) = retry at t;
    /// Some(None) = give up (failed).
    pub(crate) async fn record_attempt(
        &self,
        id: &str,
        status: Option<i64>,
        error: Option<&str>,
        next: Option<Option<i64>>,
    ) -> StoreResult<()> {
        let now = now_ms();
        let (state, next_at, delivered_at) = match next {
            None => (DELIVERED, now, Some(now)),
            Some(Some(t)) => (PENDING, t, None),
            Some(None) => (FAILED, now, None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
             next_attempt_at = $2, lease_until = 0, last_status = $3, last_error = $4, \
             last_attempt_at = $5, delivered_at = $6 WHERE id = $7",
        )
        .bind(state)
        .bind(next_at)
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(delivered_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn pending_deliveries(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE state = $1")
                .bind(PENDING)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    /// Drops events older than `before` (ms) with no pending delivery left.
    pub(crate) async fn prune_webhooks(&self, before: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let old = "SELECT e.id FROM webhook_events e WHERE e.created_at < $1 AND NOT EXISTS \
                   (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = $2)";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_deliveries WHERE event_id IN ({old})"
        )))
        .bind(before)
        .bind(PENDING)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_events WHERE id IN ({old})"
        )))
        .bind(before)
        .bind(PENDING)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Rooms the reconciler last recorded live.
    pub(crate) async fn recorded_live(&self) -> StoreResult<Vec<LiveRow>> {
        let rows = sqlx::query(
            "SELECT room_id, owner_id, live_since, publisher_session, publisher_protocol, viewers_at \
             FROM room_live_state WHERE live_since IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveRow {
                    room_id: r.try_get("room_id")?,
                    owner_id: r.try_get("owner_id")?,
                    live_since: r.try_get("live_since")?,
                    publisher_session: r.try_get("publisher_session")?,
                    publisher_protocol: r.try_get("publisher_protocol")?,
                    viewers_at: r.try_get("viewers_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.pool.begin().await?)
    }
}
