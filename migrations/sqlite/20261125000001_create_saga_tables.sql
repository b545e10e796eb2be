-- Saga checkpoints and audit log (SQLite). Timestamps are UTC text,
-- 'YYYY-MM-DD HH:MM:SS.ffffff', so that they sort as text and compare with
-- datetime('now', '-1 hour').

CREATE TABLE IF NOT EXISTS saga_checkpoints (
    saga_id          TEXT    NOT NULL PRIMARY KEY,
    saga_type        TEXT    NOT NULL,
    definition       TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    step_index       INTEGER NOT NULL DEFAULT 0,
    current_step     TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    context          TEXT    NOT NULL,
    config           TEXT    NOT NULL,
    error            TEXT,
    failed_step      TEXT,
    version          INTEGER NOT NULL,
    owner            TEXT,
    lease_expires_at TEXT,
    recovery_count   INTEGER NOT NULL DEFAULT 0,
    parked_from      TEXT,
    cancel_requested TEXT,
    user_id          TEXT,
    ip_address       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);

-- The seed's indexes, by name.
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_saga_id ON saga_checkpoints(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_state ON saga_checkpoints(state);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_updated_at ON saga_checkpoints(updated_at);
-- The recovery loop finds active sagas through ix_saga_checkpoints_state: they are few next
-- to the finished ones, and an index on the lease would be rewritten at every step.

CREATE TABLE IF NOT EXISTS saga_audit_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id       TEXT    NOT NULL,
    saga_type     TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    step_name     TEXT,
    attempt       INTEGER,
    error_message TEXT,
    details       TEXT,
    user_id       TEXT,
    ip_address    TEXT,
    timestamp     TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_saga_id ON saga_audit_logs(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_timestamp ON saga_audit_logs(timestamp);
CREATE INDEX IF NOT EXISTS ix_saga_audit_saga_timestamp ON saga_audit_logs(saga_id, timestamp);
