//! Finished recordings: rows written by the packager's `RecordingFinished` call (with
//! their `recording.ready` event, in one transaction), read and deleted through REST.

use crate::store::{now_ms, Store, StoreResult};
use crate::webhooks::outbox::{emit, room_json, NewEvent};
use crate::webhooks::EventType;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

/// A finished recording as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recording {
    pub id: String,
    pub room_id: String,
    #[serde(skip)]
    pub owner_id: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub duration_ms: i64,
    /// Bytes of every file of the recording.
    pub bytes: i64,
    /// Where the files are, relative to the recordings storage.
    #[serde(skip)]
    pub path: String,
}

fn recording_from(r: &AnyRow) -> StoreResult<Recording> {
    Ok(Recording {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        owner_id: r.try_get("owner_id")?,
        started_at_ms: r.try_get("started_at")?,
        ended_at_ms: r.try_get("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        bytes: r.try_get("bytes")?,
        path: r.try_get("path")?,
    })
}

const COLS: &str = "id, room_id, owner_id, started_at, ended_at, duration_ms, bytes, path";

/// Recording ids (`rec_…`) are short and URL-safe; anything else names none.
pub(crate) fn could_name_a_recording(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Stores a finished recording with its `recording.ready` event; `false` when its
    /// room is gone. Idempotent: a recording stored before is left as it is (the
    /// packager retries until it hears back).
    pub async fn finish_recording(&self, rec: &Recording) -> StoreResult<bool> {
        let Some(room) = self.room(&rec.room_id).await? else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let known = sqlx::query("SELECT id FROM recordings WHERE id = $1")
            .bind(&rec.id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_some() {
            return Ok(true);
        }
        sqlx::query(
            "INSERT INTO recordings (id, room_id, owner_id, started_at, ended_at, duration_ms, bytes, path, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&rec.id)
        .bind(&room.id)
        .bind(&room.owner_id)
        .bind(rec.started_at_ms)
        .bind(rec.ended_at_ms)
        .bind(rec.duration_ms)
        .bind(rec.bytes)
        .bind(&rec.path)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let event = NewEvent {
            kind: EventType::RecordingReady,
            room_id: &room.id,
            owner_id: &room.owner_id,
            room: room_json(&room),
            data: serde_json::json!({
                "recording_id": rec.id,
                "started_at_ms": rec.started_at_ms,
                "ended_at_ms": rec.ended_at_ms,
                "duration_ms": rec.duration_ms,
                "bytes": rec.bytes,
            }),
        };
        emit(&mut tx, event).await?;
        tx.commit().await?;
        crate::webhooks::delivery::wake();
        Ok(true)
    }

    pub async fn recording(&self, id: &str) -> StoreResult<Option<Recording>> {
        if !could_name_a_recording(id) {
            return Ok(None);
        }
        let sql = format!("SELECT {COLS} FROM recordings WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(recording_from).transpose()
    }

    /// A room's recordings, newest first, at most `limit`.
    pub async fn recordings_of(&self, room_id: &str, limit: i64) -> StoreResult<Vec<Recording>> {
        let sql = format!(
            "SELECT {COLS} FROM recordings WHERE room_id = $1 ORDER BY started_at DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recording_from).collect()
    }

    /// Deletes a recording's row; false if there was none.
    pub async fn delete_recording(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
