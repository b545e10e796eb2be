//! `--history N`: the tables already hold N finished sagas before the run, as a production
//! database holds months of them. One real saga is run as a template; its checkpoint row and
//! its audit rows are then copied N − 1 times by the database itself (one `INSERT .. SELECT`
//! per table over a generated series), with creation times spread over the 30 days before
//! now, oldest first, so that the tables are laid out as they would have grown.
//! PostgreSQL is then vacuumed and analysed, as autovacuum would have done by then.

use std::sync::Arc;
use std::time::Instant;

use saga_runtime::SagaStore;
use saga_runtime::prelude::*;

use super::{Load3, LoadInput};

/// The database a store writes to.
pub(crate) enum Db<'a> {
    Sqlite(&'a sqlx::SqlitePool),
    Postgres(&'a sqlx::PgPool),
}

/// Id of the template; the copies are `history-1` ..
const TEMPLATE: &str = "history-0";

/// Seconds over which the history is spread.
const SPAN_SECONDS: u64 = 30 * 24 * 3600;

/// Fills the store with `count` finished sagas (the template included).
pub(crate) async fn prefill(
    count: usize,
    store: Arc<dyn SagaStore>,
    db: Db<'_>,
) -> Result<(), String> {
    if count == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = orchestrator
        .register(Load3)
        .execute_with_id(
            TEMPLATE,
            &SagaConfig::new("loadtest"),
            LoadInput {
                n: 0,
                fail: false,
                sleep_ms: 0,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    if !outcome.is_completed() {
        return Err(format!("the history template ended {}", outcome.state()));
    }
    let copies = count - 1;
    match db {
        Db::Postgres(pool) => postgres(pool, copies).await?,
        Db::Sqlite(pool) => sqlite(pool, copies).await?,
    }
    eprintln!(
        "history: {count} finished sagas written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const CHECKPOINT_COLUMNS: &str = "saga_type, definition, fingerprint, state, step_index, \
    current_step, attempt, step_status, context, config, error, failed_step, version, owner, \
    lease_expires_at, recovery_count, parked_from, cancel_requested, user_id, ip_address";

const AUDIT_COLUMNS: &str =
    "saga_type, event_type, step_name, attempt, error_message, details, user_id, ip_address";

async fn postgres(pool: &sqlx::PgPool, copies: usize) -> Result<(), String> {
    let statements = [
        format!(
            "INSERT INTO saga_checkpoints (saga_id, {CHECKPOINT_COLUMNS}, created_at, updated_at) \
             SELECT 'history-' || g, {CHECKPOINT_COLUMNS}, \
               created_at - ({copies} + 1 - g) * interval '{step} microseconds', \
               updated_at - ({copies} + 1 - g) * interval '{step} microseconds' \
             FROM saga_checkpoints, generate_series(1, {copies}) AS g \
             WHERE saga_id = '{TEMPLATE}'",
            step = micro_step(copies),
        ),
        format!(
            "INSERT INTO saga_audit_logs (saga_id, {AUDIT_COLUMNS}, timestamp) \
             SELECT 'history-' || g, {AUDIT_COLUMNS}, \
               timestamp - ({copies} + 1 - g) * interval '{step} microseconds' \
             FROM generate_series(1, {copies}) AS g, \
               (SELECT * FROM saga_audit_logs WHERE saga_id = '{TEMPLATE}' ORDER BY id) AS t \
             ORDER BY g, t.id",
            step = micro_step(copies),
        ),
        "VACUUM ANALYZE saga_checkpoints".to_owned(),
        "VACUUM ANALYZE saga_audit_logs".to_owned(),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map_err(|e| format!("history: {e}"))?;
    }
    Ok(())
}

async fn sqlite(pool: &sqlx::SqlitePool, copies: usize) -> Result<(), String> {
    let series = format!(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {copies})"
    );
    // SQLite's timestamps are text; a copy is `k` seconds older than the next one.
    let earlier = |column: &str| {
        format!(
            "strftime('%Y-%m-%d %H:%M:%S', {column}, '-' || (({copies} + 1 - n) * {step}) || ' seconds') || '.000000'",
            step = (SPAN_SECONDS / copies.max(1) as u64).max(1),
        )
    };
    let statements = [
        format!(
            "{series} INSERT INTO saga_checkpoints (saga_id, {CHECKPOINT_COLUMNS}, created_at, updated_at) \
             SELECT 'history-' || n, {CHECKPOINT_COLUMNS}, {}, {} \
             FROM saga_checkpoints, g WHERE saga_id = '{TEMPLATE}'",
            earlier("created_at"),
            earlier("updated_at"),
        ),
        format!(
            "{series} INSERT INTO saga_audit_logs (saga_id, {AUDIT_COLUMNS}, timestamp) \
             SELECT 'history-' || n, {AUDIT_COLUMNS}, {} \
             FROM g, (SELECT * FROM saga_audit_logs WHERE saga_id = '{TEMPLATE}') AS t \
             ORDER BY n, t.id",
            earlier("timestamp"),
        ),
        "PRAGMA wal_checkpoint(TRUNCATE)".to_owned(),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map_err(|e| format!("history: {e}"))?;
    }
    Ok(())
}

/// Microseconds between two copies, so that all of them fit in the span.
fn micro_step(copies: usize) -> u64 {
    (SPAN_SECONDS * 1_000_000 / copies.max(1) as u64).max(1)
}
