//! Recordings: a row written by the packager's `RecordingStarted` call (status
//! `recording`), made `ready` by its `RecordingFinished` call (with the
//! `recording.ready` event, in one transaction); read and deleted through REST.

use crate::store::{now_ms, Store, StoreResult};
use crate::webhooks::outbox::{emit, room_json, NewEvent};
use crate::webhooks::EventType;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

/// Whether a recording is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    /// The stream is live: its `EVENT` playlist grows; there is no MP4 download yet.
    Recording,
    /// Finished: a VOD playlist and an MP4 download.
    Ready,
}

impl RecordingStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Ready => "ready",
        }
    }
}

/// A recording as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recording {
    pub id: String,
    pub room_id: String,
    #[serde(skip)]
    pub owner_id: String,
    pub status: RecordingStatus,
    pub started_at_ms: i64,
    /// `null` while recording.
    pub ended_at_ms: Option<i64>,
    /// While recording: the time since it started.
    pub duration_ms: i64,
    /// Bytes of the recording's media: while recording, what the packager has written
    /// so far (reported every few seconds).
    pub bytes: i64,
    /// Where the files are, relative to the recordings storage.
    #[serde(skip)]
    pub path: String,
}

fn recording_from(r: &AnyRow) -> StoreResult<Recording> {
    let status: String = r.try_get("status")?;
    let started_at_ms: i64 = r.try_get("started_at")?;
    let (status, ended_at_ms, duration_ms) = if status == "recording" {
        let so_far = (now_ms() - started_at_ms).max(0);
        (RecordingStatus::Recording, None, so_far)
    } else {
        let ended: i64 = r.try_get("ended_at")?;
        (
            RecordingStatus::Ready,
            Some(ended),
            r.try_get("duration_ms")?,
        )
    };
    Ok(Recording {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        owner_id: r.try_get("owner_id")?,
        status,
        started_at_ms,
        ended_at_ms,
        duration_ms,
        bytes: r.try_get("bytes")?,
        path: r.try_get("path")?,
    })
}

const COLS: &str = "id, room_id, owner_id, status, started_at, ended_at, duration_ms, bytes, path";

/// What the packager says of a recording that has started.
#[derive(Debug, Clone)]
pub struct StartedRecording {
    pub id: String,
    pub room_id: String,
    pub started_at_ms: i64,
    pub path: String,
    /// Bytes written so far.
    pub bytes: i64,
}

/// Recording ids (`rec_…`) are short and URL-safe; anything else names none.
pub(crate) fn could_name_a_recording(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Lists a recording in progress (`recording`), or updates the bytes written so far
    /// of one listed; `false` when its room is gone. Idempotent: a finished recording is
    /// left as it is, and so is a larger count (the packager retries until it hears
    /// back, reports progress again, and a packager taking the room over announces the
    /// same recording again).
    pub async fn start_recording(&self, rec: &StartedRecording) -> StoreResult<bool> {
        let Some(room) = self.room(&rec.room_id).await? else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let known = sqlx::query("SELECT id FROM recordings WHERE id = $1")
            .bind(&rec.id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_some() {
            sqlx::query(
                "UPDATE recordings SET bytes = $2 WHERE id = $1 AND status = 'recording' AND bytes < $2",
            )
            .bind(&rec.id)
            .bind(rec.bytes)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        insert(
            &mut tx,
            &room,
            &Recording {
                id: rec.id.clone(),
                room_id: room.id.clone(),
                owner_id: room.owner_id.clone(),
                status: RecordingStatus::Recording,
                started_at_ms: rec.started_at_ms,
                ended_at_ms: None,
                duration_ms: 0,
                bytes: rec.bytes,
                path: rec.path.clone(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a finished recording with its `recording.ready` event (a row in progress
    /// becomes `ready`); `false` when its room is gone. Idempotent: a recording finished
    /// before is left as it is (the packager retries until it hears back).
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
            // Only the call that moves it from `recording` fires the event.
            let done = sqlx::query(
                "UPDATE recordings SET status = 'ready', started_at = $2, ended_at = $3, \
                 duration_ms = $4, bytes = $5 WHERE id = $1 AND status = 'recording'",
            )
            .bind(&rec.id)
            .bind(rec.started_at_ms)
            .bind(rec.ended_at_ms.unwrap_or(rec.started_at_ms))
            .bind(rec.duration_ms)
            .bind(rec.bytes)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(true);
            }
        } else {
            let ready = Recording {
                status: RecordingStatus::Ready,
                ..rec.clone()
            };
            insert(&mut tx, &room, &ready).await?;
        }
        let event = NewEvent {
            kind: EventType::RecordingReady,
            room_id: &room.id,
            owner_id: &room.owner_id,
            room: room_json(&room),
            data: serde_json::json!({
                "recording_id": rec.id,
                "started_at_ms": rec.started_at_ms,
                "ended_at_ms": rec.ended_at_ms.unwrap_or(rec.started_at_ms),
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

/// Inserts `rec` as a row of `room` (its owner at the time).
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    room: &crate::store::Room,
    rec: &Recording,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO recordings (id, room_id, owner_id, status, started_at, ended_at, duration_ms, bytes, path, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&rec.id)
    .bind(&room.id)
    .bind(&room.owner_id)
    .bind(rec.status.as_str())
    .bind(rec.started_at_ms)
    .bind(rec.ended_at_ms.unwrap_or(rec.started_at_ms))
    .bind(rec.duration_ms)
    .bind(rec.bytes)
    .bind(&rec.path)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
