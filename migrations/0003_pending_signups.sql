-- Signups waiting for their email to be confirmed: the account is created from this
-- row when the mailed link is followed. One row per address (a newer signup replaces
-- it); only the SHA-256 of the link's token is stored.
CREATE TABLE pending_signups (
    email TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_signups_expires_idx ON pending_signups (expires_at);
