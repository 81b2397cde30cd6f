-- Recordings in progress are listed too: `recording` from the packager's
-- RecordingStarted call (ended_at = started_at, duration_ms and bytes 0 until then)
-- until RecordingFinished makes the row `ready`. Rows before this were all finished.
ALTER TABLE recordings ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
