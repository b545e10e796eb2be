-- Saga checkpoints and audit log (PostgreSQL). Every row is keyed by saga_id, so a
-- distributed PostgreSQL (Citus) can shard both tables on it.

CREATE TABLE IF NOT EXISTS saga_checkpoints (
    saga_id          TEXT        NOT NULL PRIMARY KEY,
    saga_type        TEXT        NOT NULL,
    definition       TEXT        NOT NULL,
    fingerprint      TEXT        NOT NULL,
    state            TEXT        NOT NULL,
    step_index       INTEGER     NOT NULL DEFAULT 0,
    current_step     TEXT,
    attempt          INTEGER     NOT NULL DEFAULT 0,
    context          JSONB       NOT NULL,
    config           JSONB       NOT NULL,
    error            TEXT,
    failed_step      TEXT,
    version          BIGINT      NOT NULL,
    owner            TEXT,
    lease_expires_at TIMESTAMPTZ,
    recovery_count   INTEGER     NOT NULL DEFAULT 0,
    parked_from      TEXT,
    cancel_requested TEXT,
    user_id          TEXT,
    ip_address       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The seed's indexes, by name.
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_saga_id ON saga_checkpoints(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_state ON saga_checkpoints(state);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_updated_at ON saga_checkpoints(updated_at);
-- The recovery loop looks for active sagas whose lease ran out.
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_lease ON saga_checkpoints(state, lease_expires_at);

CREATE TABLE IF NOT EXISTS saga_audit_logs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY,
    saga_id       TEXT        NOT NULL,
    saga_type     TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    step_name     TEXT,
    attempt       INTEGER,
    error_message TEXT,
    details       TEXT,
    user_id       TEXT,
    ip_address    TEXT,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, id)
);

CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_saga_id ON saga_audit_logs(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_timestamp ON saga_audit_logs(timestamp);
CREATE INDEX IF NOT EXISTS ix_saga_audit_saga_timestamp ON saga_audit_logs(saga_id, timestamp);
-- "Failed sagas in the last 24 hours", "compensations by user".
CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_event_type ON saga_audit_logs(event_type, timestamp);
