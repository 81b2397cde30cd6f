-- Recordings: a room setting (0/1: a BIGINT reads back the same on SQLite and
-- PostgreSQL), and one row per finished recording, written by the packager's
-- RecordingFinished call with its `recording.ready` event.
ALTER TABLE rooms ADD COLUMN record BIGINT NOT NULL DEFAULT 0;

-- `path`: where the files are, relative to the recordings storage (`{room}/{id}`).
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    path TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX recordings_room_idx ON recordings (room_id, started_at);
