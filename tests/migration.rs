//! A database written by the previous version (no `step_status` column) is migrated when a
//! store opens it, and the sagas in it are resumed, undone and read as that version left them:
//! their step statuses are derived from state, step index and attempt.

mod support;

use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::{CompensationStatus, RunStatus, Saga, StepStatus};
use support::stores::{TempDir, postgres_url, unique};
use support::{Script, Scripted};

const FIRST_MIGRATION_SQLITE: &str =
    include_str!("../migrations/sqlite/20261125000001_create_saga_tables.sql");
const FIRST_MIGRATION_POSTGRES: &str =
    include_str!("../migrations/postgres/20261125000001_create_saga_tables.sql");

/// Applies only the first migration, recorded as the previous version recorded it.
async fn previous_schema<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, sql: &'static str)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Connection: sqlx::migrate::Migrate,
{
    let mut migrator =
        sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            20_261_125_000_001,
            "create saga tables".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )]);
    migrator.dangerous_set_table_name("_saga_migrations");
    migrator.run(pool).await.unwrap();
}

/// The versions of the migration files shipped for `backend`, from their file names: each
/// must be embedded in the store and applied when it opens.
fn shipped_versions(backend: &str) -> Vec<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.split('_').next().unwrap().parse().unwrap()
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// Rows as the previous version wrote them: `(id, state, step_index, step, attempt,
/// failed_step, error, context)`.
fn legacy_rows() -> Vec<[&'static str; 8]> {
    vec![
        [
            "legacy-running",
            "running",
            "1",
            "b",
            "1",
            "",
            "",
            r#"{"input":{"id":1},"a":1,"b":null,"c":null}"#,
        ],
        [
            "legacy-compensating",
            "compensating",
            "1",
            "b",
            "1",
            "c",
            "c refused",
            r#"{"input":{"id":1},"a":1,"b":1,"c":null}"#,
        ],
        [
            "legacy-completed",
            "completed",
            "2",
            "c",
            "1",
            "",
            "",
            r#"{"input":{"id":1},"a":1,"b":1,"c":1}"#,
        ],
    ]
}

fn insert_sql(placeholder: impl Fn(usize) -> String, expired: &str, now: &str) -> String {
    let p: Vec<String> = (1..=10).map(placeholder).collect();
    format!(
        "INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, \
         step_index, current_step, attempt, context, config, error, failed_step, version, owner, \
         lease_expires_at, recovery_count, created_at, updated_at) VALUES ({}, 'scripted', \
         'scripted', {}, {}, {}, {}, {}, {}, {}, {}, {}, 3, 'gone', {expired}, 0, {now}, {now})",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
    )
}

fn fingerprint() -> &'static str {
    <Scripted as Saga>::DEFINITION.fingerprint()
}

fn config() -> String {
    serde_json::to_string(&SagaConfig::default()).unwrap()
}

/// Opens the migrated store, resumes the two active sagas, and checks what they did.
async fn resume_and_check(store: impl saga_runtime::store::IntoStore) {
    let script = Script::new();
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .unwrap();
    let executor = orchestrator.register(Scripted(script.clone()));
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 2);
    let mut names = script.names();
    names.sort_unstable();
    assert_eq!(names, ["b", "c", "undo_a", "undo_b"]);

    let running = orchestrator.load("legacy-running").await.unwrap().unwrap();
    assert_eq!(running.state, SagaState::Completed);
    assert!(
        running.steps.iter().all(|s| s.run == RunStatus::Completed),
        "{:?}",
        running.steps
    );
    assert_eq!(
        running.steps[1].attempt, 2,
        "the interrupted attempt counted"
    );

    let compensating = orchestrator
        .load("legacy-compensating")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(compensating.state, SagaState::Failed);
    let phases: Vec<&str> = compensating.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(phases, ["compensated", "compensated", "failed"]);
    assert_eq!(compensating.steps[1].compensation_attempt, 2);
    assert_eq!(
        compensating.steps[0].compensation,
        CompensationStatus::Compensated
    );

    let completed = executor.outcome("legacy-completed").await.unwrap().unwrap();
    assert!(completed.is_completed());
    assert_eq!(completed.context().c, Some(1));
    let row = orchestrator
        .load("legacy-completed")
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.steps.is_empty(),
        "a finished row is read, not rewritten"
    );
}

#[tokio::test]
async fn a_sqlite_file_of_the_previous_version_is_migrated_and_resumed() {
    let dir = TempDir::new("legacy");
    let path = dir.0.join("sagas.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    previous_schema(&pool, FIRST_MIGRATION_SQLITE).await;
    let sql = insert_sql(
        |_| "?".to_owned(),
        "'2000-01-01 00:00:00.000000'",
        "'2026-11-01 00:00:00.000000'",
    );
    for row in legacy_rows() {
        let text = |s: &'static str| (!s.is_empty()).then_some(s);
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(row[0])
            .bind(fingerprint())
            .bind(row[1])
            .bind(row[2].parse::<i64>().unwrap())
            .bind(row[3])
            .bind(row[4].parse::<i64>().unwrap())
            .bind(row[7])
            .bind(config())
            .bind(text(row[6]))
            .bind(text(row[5]))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _saga_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(applied, shipped_versions("sqlite"));
    resume_and_check(store).await;
}

#[tokio::test]
async fn a_postgres_schema_of_the_previous_version_is_migrated_and_resumed() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("saga_legacy_{}", unique());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    previous_schema(&pool, FIRST_MIGRATION_POSTGRES).await;
    let sql = insert_sql(|i| format!("${i}"), "now() - interval '1 day'", "now()");
    for row in legacy_rows() {
        let text = |s: &'static str| (!s.is_empty()).then_some(s);
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(row[0])
            .bind(fingerprint())
            .bind(row[1])
            .bind(row[2].parse::<i32>().unwrap())
            .bind(row[3])
            .bind(row[4].parse::<i32>().unwrap())
            .bind(row[7])
            .bind(config())
            .bind(text(row[6]))
            .bind(text(row[5]))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = PostgresStore::builder(url.clone())
        .schema(schema.clone())
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _saga_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(applied, shipped_versions("postgres"));
    // The primary key took the deployment guide's index name, and the duplicate index is gone.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() \
         AND tablename = 'saga_checkpoints' ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "ix_saga_checkpoints_created",
            "ix_saga_checkpoints_saga_id",
            "ix_saga_checkpoints_state",
            "ix_saga_checkpoints_updated_at",
            "ix_saga_checkpoints_wake_at"
        ]
    );
    resume_and_check(store).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
