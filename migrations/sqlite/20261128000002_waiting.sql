-- Sagas that wait (state 'waiting'): when one is due, and any runner may claim it
-- (`wake_at`, NULL for every other state), and the signal it waits for, if any
-- (`waiting_for`). A partial index, so that only waiting rows are in it: checkpoints of
-- running sagas never touch it, and the claim of due sagas reads it in `wake_at` order.
ALTER TABLE saga_checkpoints ADD COLUMN wake_at TEXT;
ALTER TABLE saga_checkpoints ADD COLUMN waiting_for TEXT;
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_wake_at ON saga_checkpoints(wake_at)
  WHERE state = 'waiting';
-- The names of the signals a saga's definition accepts, as a JSON array (NULL: none), so
-- that a signal for another name is refused by whoever sends it, the CLI included.
ALTER TABLE saga_checkpoints ADD COLUMN signals TEXT;

-- Signals, kept from their arrival (however early) until the step that waits for them
-- ends (`consumed_at`), or set aside because their payload does not decode
-- (`rejected_at`). A key makes sending idempotent per saga and name.
CREATE TABLE IF NOT EXISTS saga_signals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    dedup_key   TEXT,
    sent_by     TEXT,
    sent_at     TEXT NOT NULL,
    consumed_at TEXT,
    rejected_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_saga_signals_key ON saga_signals(saga_id, name, dedup_key)
  WHERE dedup_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_saga_signals_pending ON saga_signals(saga_id, name, id)
  WHERE consumed_at IS NULL AND rejected_at IS NULL;
