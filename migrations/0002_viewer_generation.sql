-- Viewer tokens carry the room's viewer generation; bumping it (rotation, or a change
-- of visibility) makes every token issued before worthless.
ALTER TABLE rooms ADD COLUMN viewer_generation BIGINT NOT NULL DEFAULT 0;
