//! The ledger: what steps and compensations did, written by them into the saga database.

use std::time::Duration;

use super::Backend;

#[derive(Debug, Clone)]
pub(crate) enum Ledger {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, String),
}

impl Ledger {
    pub(crate) async fn open(store: Backend, location: &str, url: &str) -> Result<Self, String> {
        match store {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(location)
                    .busy_timeout(Duration::from_secs(20));
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("ledger: {e}"))?;
                Ok(Ledger::Sqlite(pool))
            }
            Backend::Postgres => {
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(4)
                    .connect(url)
                    .await
                    .map_err(|e| format!("ledger: {e}"))?;
                Ok(Ledger::Postgres(pool, location.to_owned()))
            }
        }
    }

    pub(crate) async fn create_table(&self) -> Result<(), String> {
        match self {
            Ledger::Sqlite(pool) => sqlx::query(
                "CREATE TABLE IF NOT EXISTS chaos_ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 trial INTEGER NOT NULL, saga_id TEXT NOT NULL, step INTEGER NOT NULL, \
                 kind TEXT NOT NULL, runner TEXT NOT NULL, attempt INTEGER NOT NULL)",
            )
            .execute(pool)
            .await
            .map(drop),
            Ledger::Postgres(pool, schema) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS \"{schema}\".chaos_ledger (id BIGSERIAL PRIMARY KEY, \
                     trial INTEGER NOT NULL, saga_id TEXT NOT NULL, step INTEGER NOT NULL, \
                     kind TEXT NOT NULL, runner TEXT NOT NULL, attempt INTEGER NOT NULL)"
            )))
            .execute(pool)
            .await
            .map(drop),
        }
        .map_err(|e| format!("ledger: {e}"))
    }

    pub(crate) async fn record(&self, entry: &Entry<'_>) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO {table} (trial, saga_id, step, kind, runner, attempt) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        match self {
            Ledger::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(sql.replace("{table}", "chaos_ledger")))
                    .bind(i64::from(entry.trial))
                    .bind(entry.saga_id)
                    .bind(entry.step as i64)
                    .bind(entry.kind)
                    .bind(entry.runner)
                    .bind(i64::from(entry.attempt))
                    .execute(pool)
                    .await?;
            }
            Ledger::Postgres(pool, schema) => {
                let table = format!("\"{schema}\".chaos_ledger");
                sqlx::query(sqlx::AssertSqlSafe(sql.replace("{table}", &table)))
                    .bind(entry.trial as i32)
                    .bind(entry.saga_id)
                    .bind(entry.step as i32)
                    .bind(entry.kind)
                    .bind(entry.runner)
                    .bind(entry.attempt as i32)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every row of a trial, in insertion order: `(id, saga_id, step, kind, runner)`.
    /// Waits until no database session named `name` is left (PostgreSQL; a SQLite
    /// writer's work ends with its process). A killed client's statement goes on
    /// running, and commits, on the server: until its session has ended, the store may
    /// still change under the dead runner's name. (The parent once counted no unfinished
    /// saga, ended its recovery, and then found a saga the dead child had been creating,
    /// committed a moment after the kill and running under the dead child's lease.)
    pub(crate) async fn await_sessions_end(&self, name: &str) -> Result<(), String> {
        let Ledger::Postgres(pool, _) = self else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        loop {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(name)
            .fetch_one(pool)
            .await
            .map_err(|e| format!("ledger: {e}"))?;
            if left == 0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{left} sessions of {name} still open after 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) async fn rows(&self, trial: u32) -> Result<Vec<Row>, String> {
        let sql =
            "SELECT id, saga_id, step, kind, runner FROM {table} WHERE trial = $1 ORDER BY id";
        let rows: Vec<(i64, String, i64, String, String)> = match self {
            Ledger::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace("{table}", "chaos_ledger")))
                    .bind(i64::from(trial))
                    .fetch_all(pool)
                    .await
            }
            Ledger::Postgres(pool, schema) => {
                let table = format!("\"{schema}\".chaos_ledger");
                let sql = sql
                    .replace("{table}", &table)
                    .replace("step,", "CAST(step AS BIGINT),");
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(trial as i32)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(|e| format!("ledger: {e}"))?;
        Ok(rows
            .into_iter()
            .map(|(id, saga_id, step, kind, runner)| Row {
                id,
                saga_id,
                step: step as usize,
                kind,
                runner,
            })
            .collect())
    }
}

impl Ledger {
    /// The signals stored for saga `saga_id`: `(consumed, rejected)` for each.
    pub(crate) async fn signals(&self, saga_id: &str) -> Result<Vec<(bool, bool)>, String> {
        let sql = "SELECT consumed_at IS NOT NULL, rejected_at IS NOT NULL FROM {table} \
                   WHERE saga_id = $1 ORDER BY id";
        match self {
            Ledger::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace("{table}", "saga_signals")))
                    .bind(saga_id)
                    .fetch_all(pool)
                    .await
            }
            Ledger::Postgres(pool, schema) => {
                let table = format!("\"{schema}\".saga_signals");
                sqlx::query_as(sqlx::AssertSqlSafe(sql.replace("{table}", &table)))
                    .bind(saga_id)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(|e| format!("signals: {e}"))
    }
}

pub(crate) struct Entry<'a> {
    pub(crate) trial: u32,
    pub(crate) saga_id: &'a str,
    pub(crate) step: usize,
    pub(crate) kind: &'a str,
    pub(crate) runner: &'a str,
    pub(crate) attempt: u32,
}

#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) saga_id: String,
    pub(crate) step: usize,
    pub(crate) kind: String,
    pub(crate) runner: String,
}
