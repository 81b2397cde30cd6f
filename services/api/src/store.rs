//! Persistence of users, rooms and stream-key hashes, on SQLite or PostgreSQL.
//!
//! One `AnyPool` and one portable SQL dialect (`$n` placeholders, TEXT ids, BIGINT
//! epoch-ms times) serve both databases, so every query here runs on both.

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use utoipa::ToSchema;

use crate::webhooks::outbox::{emit, room_json, NewEvent};
use crate::webhooks::EventType;

/// Migrations compiled into the binary, so `skylark migrate` needs no files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../migrations/0001_init.sql")),
    (
        2,
        "viewer_generation",
        include_str!("../../../migrations/0002_viewer_generation.sql"),
    ),
    (
        3,
        "pending_signups",
        include_str!("../../../migrations/0003_pending_signups.sql"),
    ),
    (
        4,
        "webhooks",
        include_str!("../../../migrations/0004_webhooks.sql"),
    ),
    (
        5,
        "recordings",
        include_str!("../../../migrations/0005_recordings.sql"),
    ),
    (
        6,
        "recording_status",
        include_str!("../../../migrations/0006_recording_status.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Room ids (`room_…`) and slugs are short and URL-safe; anything else, from a URL or a
/// peer, names no room and is not worth a query (PostgreSQL even fails on a NUL).
fn could_name_a_room(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Who may see a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Listed on the front page.
    Public,
    /// Anyone with the link.
    Unlisted,
    /// The owner, and viewers holding a viewer token.
    Private,
}

/// How media flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Through the SFU (scales, feeds HLS).
    Sfu,
    /// Peer to peer: the server only relays signaling.
    P2p,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Unlisted => "unlisted",
            Self::Private => "private",
        }
    }
    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "public" => Ok(Self::Public),
            "unlisted" => Ok(Self::Unlisted),
            "private" => Ok(Self::Private),
            o => Err(StoreError::Other(format!(
                "unknown visibility {o:?} in database"
            ))),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sfu => "sfu",
            Self::P2p => "p2p",
        }
    }
    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "sfu" => Ok(Self::Sfu),
            "p2p" => Ok(Self::P2p),
            o => Err(StoreError::Other(format!("unknown mode {o:?} in database"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub created_at_ms: i64,
    #[serde(skip)]
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Room {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub slug: String,
    pub visibility: Visibility,
    pub mode: Mode,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Viewer tokens name the generation they were issued in; only the current one plays.
    pub viewer_generation: i64,
    /// While live, the packager records the room; the recording is a VOD once it ends.
    pub record: bool,
}

/// The row of the key a room currently accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeyRow {
    pub id: String,
    pub room_id: String,
}

/// A signup waiting for its email to be confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignup {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    /// Hex SHA-256 of the mailed token.
    pub token_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Fields a PATCH may change.
#[derive(Debug, Default, Clone)]
pub struct RoomPatch {
    pub title: Option<String>,
    pub visibility: Option<Visibility>,
    pub mode: Option<Mode>,
    pub record: Option<bool>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Database handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
}

fn user_from(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        created_at_ms: row.try_get("created_at")?,
        password_hash: row.try_get("password_hash")?,
    })
}

fn room_from(row: &AnyRow) -> StoreResult<Room> {
    Ok(Room {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        title: row.try_get("title")?,
        slug: row.try_get("slug")?,
        visibility: Visibility::parse(&row.try_get::<String, _>("visibility")?)?,
        mode: Mode::parse(&row.try_get::<String, _>("mode")?)?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        viewer_generation: row.try_get("viewer_generation")?,
        record: row.try_get::<i64, _>("record")? != 0,
    })
}

const ROOM_COLS: &str =
    "id, owner_id, title, slug, visibility, mode, created_at, updated_at, viewer_generation, record";

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). SQLite files are created.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let is_sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; more connections only add lock waits.
            .max_connections(if is_sqlite { 1 } else { 10 })
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "{e}; check DATABASE_URL (postgres://user@host/db or sqlite://path)"
                ))
            })?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; safe to run concurrently (the migrator locks).
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        Ok(())
    }

    /// A round trip to the database, for `/readyz`.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs a statement built by the caller; for test set-up (schemas), never user input.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, display_name, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.display_name)
        .bind(user.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        // No stored email has a NUL (PostgreSQL text can't hold one, and fails the query).
        if email.contains('\0') {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, email, password_hash, display_name, created_at FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "SELECT id, email, password_hash, display_name, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Stores a pending signup, replacing any older one of the same email (whose link
    /// stops working), and clears expired ones.
    pub async fn put_pending_signup(&self, p: &PendingSignup) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM pending_signups WHERE expires_at <= $1")
            .bind(p.created_at_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pending_signups (email, token_hash, password_hash, display_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (email) DO UPDATE SET token_hash = excluded.token_hash, \
             password_hash = excluded.password_hash, display_name = excluded.display_name, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(&p.email)
        .bind(&p.token_hash)
        .bind(&p.password_hash)
        .bind(&p.display_name)
        .bind(p.created_at_ms)
        .bind(p.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes and returns the pending signup with this token hash, expired or not (the
    /// caller checks `expires_at_ms`): one statement, so a token is taken at most once.
    pub async fn take_pending_signup(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<PendingSignup>> {
        let row = sqlx::query(
            "DELETE FROM pending_signups WHERE token_hash = $1 \
             RETURNING email, token_hash, password_hash, display_name, created_at, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PendingSignup {
                email: r.try_get("email")?,
                token_hash: r.try_get("token_hash")?,
                password_hash: r.try_get("password_hash")?,
                display_name: r.try_get("display_name")?,
                created_at_ms: r.try_get("created_at")?,
                expires_at_ms: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Pending signups stored, for tests.
    pub async fn pending_signup_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM pending_signups")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Creates a room and its first stream key (hash) in one transaction.
    pub async fn create_room(&self, room: &Room, key_id: &str, key_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rooms (id, owner_id, title, slug, visibility, mode, created_at, updated_at, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&room.id)
        .bind(&room.owner_id)
        .bind(&room.title)
        .bind(&room.slug)
        .bind(room.visibility.as_str())
        .bind(room.mode.as_str())
        .bind(room.created_at_ms)
        .bind(room.updated_at_ms)
        .bind(i64::from(room.record))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO stream_keys (id, room_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_id)
        .bind(&room.id)
        .bind(key_hash)
        .bind(room.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A room by id or slug.
    pub async fn room(&self, id_or_slug: &str) -> StoreResult<Option<Room>> {
        if !could_name_a_room(id_or_slug) {
            return Ok(None);
        }
        let sql = format!("SELECT {ROOM_COLS} FROM rooms WHERE id = $1 OR slug = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_or_slug)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(room_from).transpose()
    }

    pub async fn rooms_of(&self, owner_id: &str) -> StoreResult<Vec<Room>> {
        let sql =
            format!("SELECT {ROOM_COLS} FROM rooms WHERE owner_id = $1 ORDER BY created_at DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(room_from).collect()
    }

    /// Public rooms, newest first, at most `limit`.
    pub async fn public_rooms(&self, limit: i64) -> StoreResult<Vec<Room>> {
        let sql = format!(
            "SELECT {ROOM_COLS} FROM rooms WHERE visibility = 'public' ORDER BY created_at DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(room_from).collect()
    }

    /// The public rooms among `ids` (the live ones, from the bus), any order.
    pub async fn public_rooms_among(&self, ids: &[String]) -> StoreResult<Vec<Room>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {ROOM_COLS} FROM rooms WHERE visibility = 'public' AND id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(room_from(&row)?);
            }
        }
        Ok(out)
    }

    /// Applies a patch; returns the updated room, `None` if it does not exist.
    pub async fn update_room(&self, id: &str, patch: &RoomPatch) -> StoreResult<Option<Room>> {
        let Some(mut room) = self.room(id).await? else {
            return Ok(None);
        };
        if let Some(t) = &patch.title {
            room.title = t.clone();
        }
        if let Some(v) = patch.visibility {
            // Tokens issued for one visibility say nothing about another.
            if v != room.visibility {
                room.viewer_generation += 1;
            }
            room.visibility = v;
        }
        if let Some(m) = patch.mode {
            room.mode = m;
        }
        if let Some(r) = patch.record {
            room.record = r;
        }
        room.updated_at_ms = now_ms();
        sqlx::query(
            "UPDATE rooms SET title = $1, visibility = $2, mode = $3, updated_at = $4, \
             viewer_generation = $5, record = $6 WHERE id = $7",
        )
        .bind(&room.title)
        .bind(room.visibility.as_str())
        .bind(room.mode.as_str())
        .bind(room.updated_at_ms)
        .bind(room.viewer_generation)
        .bind(i64::from(room.record))
        .bind(&room.id)
        .execute(&self.pool)
        .await?;
        Ok(Some(room))
    }

    /// How many rooms `owner_id` holds.
    pub async fn room_count_of(&self, owner_id: &str) -> StoreResult<i64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM rooms WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n)
    }

    /// Starts a new viewer generation: every viewer token issued before stops working.
    /// Returns the room as it is now, `None` if it does not exist.
    pub async fn revoke_viewer_tokens(&self, id: &str) -> StoreResult<Option<Room>> {
        let done = sqlx::query(
            "UPDATE rooms SET viewer_generation = viewer_generation + 1, updated_at = $1 \
             WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.room(id).await
    }

    /// Deletes a room and its keys; false if it did not exist.
    pub async fn delete_room(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Explicit, so SQLite files made without foreign-key enforcement stay clean too.
        sqlx::query("DELETE FROM stream_keys WHERE room_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM rooms WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every live key of the room and stores a new one, atomically, with the
    /// `stream_key.rotated` webhook event.
    pub async fn rotate_stream_key(
        &self,
        room: &Room,
        key_id: &str,
        key_hash: &str,
    ) -> StoreResult<()> {
        let room_id = room.id.as_str();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE stream_keys SET revoked_at = $1 WHERE room_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO stream_keys (id, room_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_id)
        .bind(room_id)
        .bind(key_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent {
            kind: EventType::StreamKeyRotated,
            room_id,
            owner_id: &room.owner_id,
            room: room_json(room),
            data: serde_json::json!({ "key_id": key_id }),
        };
        emit(&mut tx, event).await?;
        tx.commit().await?;
        crate::webhooks::delivery::wake();
        Ok(())
    }

    /// The unrevoked key with this hash, if any.
    pub async fn active_key(&self, key_hash: &str) -> StoreResult<Option<StreamKeyRow>> {
        let row = sqlx::query(
            "SELECT id, room_id FROM stream_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StreamKeyRow {
                id: r.try_get("id")?,
                room_id: r.try_get("room_id")?,
            })
        })
        .transpose()
    }

    /// Whether key `key_id` of room `room_id` exists and is not revoked.
    pub async fn key_is_active(&self, room_id: &str, key_id: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT id FROM stream_keys WHERE id = $1 AND room_id = $2 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Counts of rows, for tests that check a failed request changed nothing.
    pub async fn counts(&self) -> StoreResult<(i64, i64, i64)> {
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let rooms: i64 = sqlx::query("SELECT COUNT(*) AS n FROM rooms")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let keys: i64 = sqlx::query("SELECT COUNT(*) AS n FROM stream_keys")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((users, rooms, keys))
    }
}
