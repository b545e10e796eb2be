//! The deployment guide's SQL, verbatim where it is SQL, against freshly migrated SQLite and PostgreSQL
//! databases filled by real saga runs: its tables, its six indexes, its stuck-saga query,
//! its audit queries, and its "mark as failed" fix.

mod support;

use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::store::{PostgresStore, SqliteStore};
use support::stores::{TempDir, postgres_url, unique};
use support::{Action, Input, Script, Scripted};

/// The deployment guide's "Database Indexing" block, verbatim.
const SEED_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_saga_id ON saga_checkpoints(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_state ON saga_checkpoints(state);
CREATE INDEX IF NOT EXISTS ix_saga_checkpoints_updated_at ON saga_checkpoints(updated_at);

CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_saga_id ON saga_audit_logs(saga_id);
CREATE INDEX IF NOT EXISTS ix_saga_audit_logs_timestamp ON saga_audit_logs(timestamp);
CREATE INDEX IF NOT EXISTS ix_saga_audit_saga_timestamp ON saga_audit_logs(saga_id, timestamp);
";

const INDEX_NAMES: [&str; 6] = [
    "ix_saga_checkpoints_saga_id",
    "ix_saga_checkpoints_state",
    "ix_saga_checkpoints_updated_at",
    "ix_saga_audit_logs_saga_id",
    "ix_saga_audit_logs_timestamp",
    "ix_saga_audit_saga_timestamp",
];

/// Runs a success, a compensation and a saga left running, as user `user_123`.
async fn fill(store: impl saga_runtime::store::IntoStore) -> Orchestrator {
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .unwrap();
    let saga = orchestrator.register(Scripted(script.clone()));
    let config = SagaConfig::new("backtest_workflow")
        .user_id("user_123")
        .ip_address("192.168.1.1");
    let failed = saga
        .execute_with_id("saga_failed_one", &config, Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(failed.state(), SagaState::Failed);
    let ok = saga
        .execute_with_id("saga_abc123", &config, Input { id: 2 })
        .await
        .unwrap();
    assert!(ok.is_completed());
    assert!(
        saga.enqueue("saga_stuck", &config, Input { id: 3 })
            .await
            .unwrap()
    );
    orchestrator
}

#[tokio::test]
async fn seed_sql_on_sqlite() {
    let dir = TempDir::new("seed");
    let store = SqliteStore::open(dir.0.join("seed.db")).await.unwrap();
    let pool = store.pool().clone();
    fill(store).await;

    // The tables exist (the deployment guide's verification step).
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'saga_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["saga_audit_logs", "saga_checkpoints", "saga_signals"]
    );
    sqlx::raw_sql(SEED_INDEXES).execute(&pool).await.unwrap();
    for index in INDEX_NAMES {
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?",
        )
        .bind(index)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(found, 1, "{index}");
    }

    // Stuck sagas: running, not updated for an hour.
    sqlx::query("UPDATE saga_checkpoints SET updated_at = datetime('now', '-2 hours') WHERE saga_id = 'saga_stuck'")
        .execute(&pool)
        .await
        .unwrap();
    let stuck: Vec<(String, String)> = sqlx::query_as(
        "SELECT saga_id, updated_at FROM saga_checkpoints WHERE state = 'running' AND updated_at < datetime('now', '-1 hour')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        stuck.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["saga_stuck"]
    );

    // All events of one saga, in order.
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM saga_audit_logs WHERE saga_id = 'saga_abc123' ORDER BY timestamp",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.first().map(String::as_str), Some("saga_started"));
    assert_eq!(events.last().map(String::as_str), Some("saga_completed"));
    // Failed sagas in the last 24 hours.
    let failures: Vec<String> = sqlx::query_scalar(
        "SELECT saga_id FROM saga_audit_logs WHERE event_type = 'saga_failed' AND timestamp >= datetime('now', '-1 day')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(failures, ["saga_failed_one"]);
    // Compensations by user.
    let compensations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_audit_logs WHERE event_type LIKE 'compensation_%' AND user_id = 'user_123'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(compensations, 4);

    // "Option 2: mark as failed", as plain SQL.
    sqlx::query("UPDATE saga_checkpoints SET state = 'failed', error = 'Timeout - manually compensated' WHERE saga_id = 'saga_stuck'")
        .execute(&pool)
        .await
        .unwrap();
    let store = SqliteStore::from_pool(pool.clone());
    let record = store.load("saga_stuck").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Failed);
    assert_eq!(
        record.error.as_deref(),
        Some("Timeout - manually compensated")
    );
}

#[tokio::test]
async fn seed_sql_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("saga_seed_{}", unique());
    let store = PostgresStore::builder(url.clone())
        .schema(schema.clone())
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    let pool = store.pool().clone();
    fill(store).await;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name LIKE 'saga_%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["saga_audit_logs", "saga_checkpoints", "saga_signals"]
    );
    sqlx::raw_sql(SEED_INDEXES).execute(&pool).await.unwrap();
    for index in INDEX_NAMES {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1")
            .bind(index)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(found, 1, "{index}");
    }
    // One B-tree for the key: the primary key's index is the deployment guide's
    // ix_saga_checkpoints_saga_id, and no second index on saga_id alone is written to.
    let key_indexes: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisprimary FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'saga_checkpoints'::regclass AND i.indnatts = 1 \
           AND i.indkey[0] = (SELECT attnum FROM pg_attribute \
             WHERE attrelid = 'saga_checkpoints'::regclass AND attname = 'saga_id')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        key_indexes,
        [("ix_saga_checkpoints_saga_id".to_owned(), true)]
    );
    sqlx::query("UPDATE saga_checkpoints SET updated_at = now() - interval '2 hours' WHERE saga_id = 'saga_stuck'")
        .execute(&pool)
        .await
        .unwrap();
    let stuck: Vec<String> = sqlx::query_scalar(
        "SELECT saga_id FROM saga_checkpoints WHERE state = 'running' AND updated_at < now() - interval '1 hour'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stuck, ["saga_stuck"]);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM saga_audit_logs WHERE saga_id = 'saga_abc123' ORDER BY timestamp",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.last().map(String::as_str), Some("saga_completed"));
    let failures: Vec<String> = sqlx::query_scalar(
        "SELECT saga_id FROM saga_audit_logs WHERE event_type = 'saga_failed' AND timestamp >= now() - interval '1 day'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(failures, ["saga_failed_one"]);
    let compensations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_audit_logs WHERE event_type LIKE 'compensation_%' AND user_id = 'user_123'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(compensations, 4);
    sqlx::query("UPDATE saga_checkpoints SET state = 'failed', error = 'Timeout - manually compensated' WHERE saga_id = 'saga_stuck'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        PostgresStore::from_pool(pool.clone())
            .load("saga_stuck")
            .await
            .unwrap()
            .unwrap()
            .state,
        SagaState::Failed
    );
    pool.close().await;
    drop_schema(&url, &schema).await;
}

async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn our_migration_bookkeeping_leaves_the_applications_alone() {
    let dir = TempDir::new("coexist");
    let url = format!("sqlite://{}", dir.0.join("app.db").display());
    // The application's own sqlx migrations, in the default `_sqlx_migrations` table.
    let app = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    let mut migrator =
        sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            1,
            "orders".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str("CREATE TABLE orders (id INTEGER PRIMARY KEY)"),
            false,
        )]);
    migrator.set_ignore_missing(false);
    migrator.run(&app).await.unwrap();
    // Ours, twice (the second run is a no-op), then the application's again.
    SqliteStore::connect(&url).await.unwrap();
    SqliteStore::connect(&url).await.unwrap();
    migrator.run(&app).await.unwrap();
    let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM _saga_migrations")
        .fetch_one(&app)
        .await
        .unwrap();
    let theirs: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!((ours, theirs), (4, 1), "our four migrations, their one");
}

#[tokio::test]
async fn a_saga_started_in_a_transaction_exists_only_if_it_commits() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("saga_tx_{}", unique());
    let store = PostgresStore::builder(url.clone())
        .schema(schema.clone())
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE orders (id BIGINT PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let script = Script::new();
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .unwrap();
    let saga = orchestrator.register(Scripted(script.clone()));

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        saga.start_in_transaction(&mut tx, "order-1", &SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert!(
        orchestrator.load("order-1").await.unwrap().is_none(),
        "rolled back with the order"
    );

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO orders (id) VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        saga.start_in_transaction(&mut tx, "order-2", &SagaConfig::default(), Input { id: 2 })
            .await
            .unwrap()
    );
    assert!(
        orchestrator.load("order-2").await.unwrap().is_none(),
        "invisible before the commit"
    );
    tx.commit().await.unwrap();
    let pending = orchestrator.load("order-2").await.unwrap().unwrap();
    assert_eq!(
        (pending.state, pending.attempt, pending.owner),
        (SagaState::Running, 0, None)
    );
    assert!(script.names().is_empty(), "nothing ran yet");
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    assert_eq!(script.names(), ["a", "b", "c"]);
    let trail = support::audit_trail(&orchestrator, "order-2").await;
    assert_eq!(
        trail[..3],
        ["saga_started", "step_started:a:1", "step_completed:a:1"]
    );
    assert!(
        !trail.iter().any(|e| e.starts_with("saga_recovered")),
        "picked up, not recovered"
    );
    pool.close().await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn the_recovery_loop_runs_enqueued_sagas_on_its_own() {
    let script = Script::new();
    let orchestrator = Orchestrator::builder(MemoryStore::new())
        .recovery_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let saga = orchestrator.register(Scripted(script.clone()));
    assert!(
        saga.enqueue("queued", &SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap()
    );
    assert!(
        !saga
            .enqueue("queued", &SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap(),
        "id taken"
    );
    for _ in 0..200 {
        if orchestrator.load("queued").await.unwrap().unwrap().state == SagaState::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        orchestrator.load("queued").await.unwrap().unwrap().state,
        SagaState::Completed
    );
    assert_eq!(script.names(), ["a", "b", "c"]);
}
