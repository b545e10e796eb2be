#!/usr/bin/env bash
# The query plans of the console's list page at a million sagas, on PostgreSQL: the first
# page, a deep page (keyset cursor), and the first page filtered by a common and a rare
# state. Run from the repository: bash bench/console_plan.sh (needs a local PostgreSQL).
set -euo pipefail
db=console_plan
url="postgres://postgres@127.0.0.1:5432/$db"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
cargo run --quiet -p saga-cli -- --database-url "$url" migrate
psql -h 127.0.0.1 -U postgres -d "$db" -q <<'SQL'
INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, step_index,
  current_step, attempt, step_status, context, config, version, recovery_count, created_at, updated_at)
SELECT 'saga-' || g,
  (ARRAY['orders','payments','backtest_workflow'])[1 + g % 3], 'd', 'f',
  CASE WHEN g % 1000 = 0 THEN 'parked' WHEN g % 7 = 0 THEN 'failed' ELSE 'completed' END,
  0, 'a', 1, '[]', '{}', '{}', 3, 0,
  now() - (1000000 - g) * interval '100 milliseconds',
  now() - (1000000 - g) * interval '100 milliseconds'
FROM generate_series(1, 1000000) AS g;
ANALYZE saga_checkpoints;
SQL
cols="saga_id, saga_type, state, current_step, attempt, error, created_at, updated_at"
explain() { psql -h 127.0.0.1 -U postgres -d "$db" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $1"; }
echo "== first page"
explain "SELECT $cols FROM saga_checkpoints WHERE true ORDER BY created_at DESC, saga_id DESC LIMIT 51"
echo "== a page half way down (keyset cursor)"
explain "SELECT $cols FROM saga_checkpoints WHERE true AND (created_at, saga_id) < ((SELECT created_at FROM saga_checkpoints WHERE saga_id = 'saga-500000'), 'saga-500000') ORDER BY created_at DESC, saga_id DESC LIMIT 51"
echo "== state = failed (one in seven)"
explain "SELECT $cols FROM saga_checkpoints WHERE true AND state = 'failed' ORDER BY created_at DESC, saga_id DESC LIMIT 51"
echo "== state = parked (one in a thousand)"
explain "SELECT $cols FROM saga_checkpoints WHERE true AND state = 'parked' ORDER BY created_at DESC, saga_id DESC LIMIT 51"
echo "== id prefix"
explain "SELECT $cols FROM saga_checkpoints WHERE true AND starts_with(saga_id, 'saga-99999') ORDER BY created_at DESC, saga_id DESC LIMIT 51"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db"
