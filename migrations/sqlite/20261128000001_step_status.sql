-- What each step has done, by step index: a JSON array of objects such as
-- {"run":"completed","attempt":1,"order":1}. NULL in rows written before this column
-- existed; the runtime derives their statuses from state, step_index and attempt, and the
-- next write of such a saga fills it.
ALTER TABLE saga_checkpoints ADD COLUMN step_status TEXT;
