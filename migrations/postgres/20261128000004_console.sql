-- The console's list of sagas, newest first, a page at a time: keyset paging on
-- (created_at, saga_id) reads this index backwards from where the last page ended, so a
-- page costs the same at a million rows as at a hundred.
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_created ON saga_checkpoints(created_at, saga_id);
