-- The primary key's index takes the seed's name, ix_saga_checkpoints_saga_id, instead of a
-- second B-tree on the same column. Every checkpoint write inserts into each index of
-- saga_checkpoints (`updated_at` changes, so no update is HOT); the duplicate cost about a
-- tenth of write throughput. The seed's `CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_saga_id`
-- finds the name taken and does nothing. Renaming the constraint renames its index; nothing
-- is rebuilt.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_constraint
             WHERE conname = 'saga_checkpoints_pkey'
               AND conrelid = 'saga_checkpoints'::regclass) THEN
    DROP INDEX IF EXISTS ix_saga_checkpoints_saga_id;
    ALTER TABLE saga_checkpoints RENAME CONSTRAINT saga_checkpoints_pkey
      TO ix_saga_checkpoints_saga_id;
  END IF;
END $$;
