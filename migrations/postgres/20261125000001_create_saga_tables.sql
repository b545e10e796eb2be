-- Saga checkpoints and audit log (PostgreSQL). Every row is keyed by saga_id, so a
-- distributed PostgreSQL (Citus) can shard both tables on it.
--
-- context and config hold JSON as text: they are rewritten at every step, and text is
-- cheaper to write than jsonb; query them with context::jsonb.

CREATE TABLE IF NOT EXISTS saga_checkpoints (
    saga_id          TEXT        NOT NULL PRIMARY KEY,
    saga_type        TEXT        NOT NULL,
    definition       TEXT        NOT NULL,
    fingerprint      TEXT        NOT NULL,
    state            TEXT        NOT NULL,
    step_index       INTEGER     NOT NULL DEFAULT 0,
    current_step     TEXT,
    attempt          INTEGER     NOT NULL DEFAULT 0,
    context          TEXT        NOT NULL,
    config           TEXT        NOT NULL,
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
-- The recovery loop finds active sagas through ix_saga_checkpoints_state: they are few next
-- to the finished ones, and an index on the lease would be rewritten at every step.

-- Append-only, with no primary key: `id` (an identity) orders and identifies rows, and the
-- seed's (saga_id, timestamp) index serves lookups. A primary key costs about 10% of write
-- throughput; add `PRIMARY KEY (saga_id, id)` if logical replication needs one.
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
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_saga_id ON saga_audit_logs(saga_id);
-- The log is append-only and its timestamps grow with it: a BRIN index serves time ranges
-- at a fraction of a B-tree's cost per insert.
CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_timestamp ON saga_audit_logs USING brin (timestamp);
CREATE INDEX IF NOT EXISTS ix_saga_audit_saga_timestamp ON saga_audit_logs(saga_id, timestamp);
