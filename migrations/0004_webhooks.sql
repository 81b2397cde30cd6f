-- Webhooks: endpoints, an outbox of events written in the transaction that causes
-- them, one delivery row per (event, endpoint), and the live state the API's
-- reconciler last saw on the bus (so each transition is written, and sent, once).

-- owner_id NULL: a deployment-wide endpoint from the configuration (its secret stays
-- in the configuration; `secret` is empty then).
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    owner_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- Comma-separated event types.
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner_id);

-- `seq` orders a room's events (a process-wide increasing number: microseconds, made
-- unique); `body` is the JSON sent, exactly as signed.
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);

-- state: pending | delivered | failed. A replica sending a delivery holds its lease
-- (lease_until) so another replica does not send it too.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    last_attempt_at BIGINT,
    delivered_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, room_id, state, seq);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- What the reconciler last recorded of each room: live_since NULL = offline.
CREATE TABLE room_live_state (
    room_id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    live_since BIGINT,
    publisher_session TEXT,
    publisher_protocol TEXT,
    viewers_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX room_live_state_live_idx ON room_live_state (live_since);
