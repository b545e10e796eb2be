-- Sagas that wait (state 'waiting'): when one is due, and any runner may claim it. NULL for
-- every other state. A partial index, so that only waiting rows are in it: checkpoints of
-- running sagas never touch it, and the claim of due sagas reads it in `wake_at` order
-- (`FOR UPDATE SKIP LOCKED`, so runners share the work).
ALTER TABLE saga_checkpoints ADD COLUMN IF NOT EXISTS wake_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_wake_at ON saga_checkpoints(wake_at)
  WHERE state = 'waiting';
