//! The SQL in `migrations/<backend>/`, applied as a DBA would apply it
//! (`sqlx migrate run --source migrations/<backend>`: sqlx's migrator reading the directory,
//! with its own `_sqlx_migrations` table), gives the schema a store's own opening gives:
//! the same tables, columns and indexes.

mod support;

use saga_runtime::prelude::*;
use sqlx::migrate::Migrator;
use support::stores::{TempDir, postgres_url, unique};

fn directory(backend: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

/// The schema of a SQLite database, bookkeeping tables (`_saga_migrations`,
/// `_sqlx_migrations`) left out: one line per table and index, with its SQL.
async fn sqlite_schema(pool: &sqlx::SqlitePool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master \
         WHERE name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         ORDER BY type, name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_sqlite_migrations_directory_gives_the_stores_schema() {
    let dir = TempDir::new("schema");
    let opened = SqliteStore::open(dir.0.join("store.db")).await.unwrap();
    let by_hand = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.0.join("by-hand.db"))
            .create_if_missing(true),
    )
    .await
    .unwrap();
    Migrator::new(directory("sqlite"))
        .await
        .unwrap()
        .run(&by_hand)
        .await
        .unwrap();
    let expected = sqlite_schema(opened.pool()).await;
    assert!(
        expected.iter().any(|l| l.contains("saga_checkpoints")),
        "{expected:?}"
    );
    assert_eq!(sqlite_schema(&by_hand).await, expected);
}

/// The schema of the connection's current schema, bookkeeping tables left out: every
/// column with its type, nullability and default, and every index's definition.
async fn postgres_schema(pool: &sqlx::PgPool) -> Vec<String> {
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable \
         || ' ' || COALESCE(column_default, '') FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%' \
         ORDER BY table_name, column_name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT replace(indexdef, current_schema() || '.', '') FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename NOT LIKE '\\_%' ORDER BY indexname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    lines.extend(indexes);
    lines
}

#[tokio::test]
async fn the_postgres_migrations_directory_gives_the_stores_schema() {
    let Some(url) = postgres_url() else { return };
    let (opened_schema, by_hand_schema) = (
        format!("saga_opened_{}", unique()),
        format!("saga_by_hand_{}", unique()),
    );
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{by_hand_schema}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    let opened = PostgresStore::builder(url.clone())
        .schema(opened_schema.clone())
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let by_hand = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", by_hand_schema.as_str())]))
        .await
        .unwrap();
    Migrator::new(directory("postgres"))
        .await
        .unwrap()
        .run(&by_hand)
        .await
        .unwrap();
    let expected = postgres_schema(opened.pool()).await;
    let got = postgres_schema(&by_hand).await;
    for schema in [&opened_schema, &by_hand_schema] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&admin)
        .await
        .unwrap();
    }
    assert!(
        expected.iter().any(|l| l.contains("saga_checkpoints")),
        "{expected:?}"
    );
    assert_eq!(got, expected);
}
