//! The same work without the library: the bare chain of step bodies (memory), or the same
//! rows written by hand-written SQL, one transaction per step (SQLite, PostgreSQL).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use saga_runtime::SagaStore;
use saga_runtime::store::{GroupCommit, GroupCommitStats, MemoryStore, PostgresStore, SqliteStore};

use super::history::{self, Db};
use super::{Args, Backend, LoadInput, Report, body, drive, fails};

/// Removes what a run created.
pub(crate) enum Cleanup {
    Nothing,
    Dir(std::path::PathBuf),
    Schema(String, String),
}

impl Cleanup {
    pub(crate) async fn run(self) {
        match self {
            Cleanup::Nothing => {}
            Cleanup::Dir(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
            Cleanup::Schema(url, schema) => {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            }
        }
    }
}

fn tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}_{nanos}", std::process::id())
}

fn group_commit(args: &Args) -> GroupCommit {
    let writers = args.writers.unwrap_or(if args.store == Backend::Postgres {
        2
    } else {
        1
    });
    GroupCommit::default()
        .writers(writers)
        .max_batch(args.max_batch)
        .max_wait(Duration::from_micros(args.max_wait_us))
}

/// A fresh store, and how to read its group-commit figures.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn SagaStore>,
    pub(crate) cleanup: Cleanup,
    pub(crate) stats: Option<Box<dyn Fn() -> GroupCommitStats + Send + Sync>>,
}

/// A fresh, migrated store of the chosen kind, holding `--history` finished sagas.
pub(crate) async fn open(args: &Args) -> Result<Opened, String> {
    match args.store {
        Backend::Memory => Ok(Opened {
            store: Arc::new(MemoryStore::new()),
            cleanup: Cleanup::Nothing,
            stats: None,
        }),
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("saga-loadtest-{}", tag()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let store = SqliteStore::builder(format!("sqlite://{}", dir.join("load.db").display()))
                .group_commit(group_commit(args))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let pool = store.pool().clone();
            let store = Arc::new(store);
            history::prefill(args.history, store.clone(), Db::Sqlite(&pool)).await?;
            Ok(Opened {
                stats: Some(Box::new({
                    let store = store.clone();
                    move || store.group_commit_stats()
                })),
                store,
                cleanup: Cleanup::Dir(dir),
            })
        }
        Backend::Postgres => {
            let schema = format!("saga_load_{}", tag());
            let connections = u32::try_from(args.concurrency.clamp(2, 40)).unwrap_or(40);
            let store = PostgresStore::builder(args.url.clone())
                .schema(schema.clone())
                .pool_size(connections.min(20))
                .max_overflow(connections.saturating_sub(20))
                .group_commit(group_commit(args))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let pool = store.pool().clone();
            let store = Arc::new(store);
            let cleanup = Cleanup::Schema(args.url.clone(), schema);
            if let Err(error) =
                history::prefill(args.history, store.clone(), Db::Postgres(&pool)).await
            {
                cleanup.run().await;
                return Err(error);
            }
            Ok(Opened {
                stats: Some(Box::new({
                    let store = store.clone();
                    move || store.group_commit_stats()
                })),
                store,
                cleanup,
            })
        }
    }
}

enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// One transaction: a checkpoint update (or insert) and its audit rows.
async fn write(
    pool: &Pool,
    first: bool,
    id: &str,
    step: usize,
    state: &str,
    context: &str,
    events: &[&str],
) -> Result<(), String> {
    let now = super::saga_time();
    match pool {
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            if first {
                sqlx::query(
                    "INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, step_index, \
                     current_step, attempt, context, config, version, owner, lease_expires_at, created_at, updated_at) \
                     VALUES (?, 'loadtest', 'baseline', '-', ?, ?, 's1', 1, ?, '{}', 1, 'me', ?, ?, ?)",
                )
                .bind(id).bind(state).bind(step as i64).bind(context).bind(&now).bind(&now).bind(&now)
                .execute(&mut *tx).await.map_err(|e| e.to_string())?;
            } else {
                sqlx::query(
                    "UPDATE saga_checkpoints SET state = ?, step_index = ?, context = ?, version = version + 1, \
                     updated_at = ? WHERE saga_id = ?",
                )
                .bind(state).bind(step as i64).bind(context).bind(&now).bind(id)
                .execute(&mut *tx).await.map_err(|e| e.to_string())?;
            }
            let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO saga_audit_logs (saga_id, saga_type, event_type, step_name, timestamp) ",
            );
            query.push_values(events, |mut row, event| {
                row.push_bind(id)
                    .push_bind("loadtest")
                    .push_bind(*event)
                    .push_bind("s")
                    .push_bind(now.clone());
            });
            query
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        }
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            if first {
                sqlx::query(
                    "INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, step_index, \
                     current_step, attempt, context, config, version, owner, lease_expires_at) \
                     VALUES ($1, 'loadtest', 'baseline', '-', $2, $3, 's1', 1, $4::jsonb, '{}', 1, 'me', now())",
                )
                .bind(id).bind(state).bind(step as i32).bind(context)
                .execute(&mut *tx).await.map_err(|e| e.to_string())?;
            } else {
                sqlx::query(
                    "UPDATE saga_checkpoints SET state = $1, step_index = $2, context = $3::jsonb, \
                     version = version + 1, updated_at = now() WHERE saga_id = $4",
                )
                .bind(state)
                .bind(step as i32)
                .bind(context)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            }
            let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO saga_audit_logs (saga_id, saga_type, event_type, step_name) ",
            );
            query.push_values(events, |mut row, event| {
                row.push_bind(id)
                    .push_bind("loadtest")
                    .push_bind(*event)
                    .push_bind("s");
            });
            query
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        }
    }
}

/// The baseline run, on a fresh database.
pub(crate) async fn run(args: &Args) -> Result<Report, String> {
    let Opened { store, cleanup, .. } = open(args).await?;
    let pool = match args.store {
        Backend::Memory => None,
        _ => Some(Arc::new(raw_pool(args, &cleanup).await?)),
    };
    drop(store);
    let steps = args.steps;
    let fail_rate = args.fail_rate;
    let sleep_ms = args.step_ms;
    let report = drive(args, move |i| {
        let pool = pool.clone();
        async move {
            let input = LoadInput {
                n: i as u64,
                fail: fails(fail_rate, i),
                sleep_ms,
            };
            let id = format!("base-{i}");
            let mut context = String::from("{\"input\":1");
            if let Some(pool) = &pool {
                write(
                    pool,
                    true,
                    &id,
                    0,
                    "running",
                    "{}",
                    &["saga_started", "step_started"],
                )
                .await?;
            }
            for step in 1..=steps {
                let result = tokio::time::timeout(
                    Duration::from_secs(10),
                    body(&input, step, step == steps),
                )
                .await;
                match result {
                    Ok(Ok(value)) => {
                        let _ = write!(context, ",\"s{step}\":{value}");
                        if let Some(pool) = &pool {
                            let (state, events): (&str, &[&str]) = if step == steps {
                                ("completed", &["step_completed", "saga_completed"])
                            } else {
                                ("running", &["step_completed", "step_started"])
                            };
                            write(
                                pool,
                                false,
                                &id,
                                step,
                                state,
                                &format!("{context}}}"),
                                events,
                            )
                            .await?;
                        }
                    }
                    _ => {
                        // Compensate the completed steps, newest first, one transaction each.
                        if let Some(pool) = &pool {
                            write(
                                pool,
                                false,
                                &id,
                                step,
                                "compensating",
                                &format!("{context}}}"),
                                &["step_failed", "compensation_started"],
                            )
                            .await?;
                            for undo in (1..step).rev() {
                                let (state, events): (&str, &[&str]) = if undo == 1 {
                                    ("failed", &["compensation_executed", "saga_failed"])
                                } else {
                                    (
                                        "compensating",
                                        &["compensation_executed", "compensation_started"],
                                    )
                                };
                                write(
                                    pool,
                                    false,
                                    &id,
                                    undo,
                                    state,
                                    &format!("{context}}}"),
                                    events,
                                )
                                .await?;
                            }
                        }
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
    })
    .await;
    cleanup.run().await;
    report
}

async fn raw_pool(args: &Args, cleanup: &Cleanup) -> Result<Pool, String> {
    match cleanup {
        Cleanup::Dir(dir) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.join("load.db"))
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Pool::Sqlite(pool))
        }
        Cleanup::Schema(url, schema) => {
            let options: sqlx::postgres::PgConnectOptions =
                url.parse().map_err(|e: sqlx::Error| e.to_string())?;
            let options = options.options([("search_path", schema.as_str())]);
            let connections = u32::try_from(args.concurrency.clamp(2, 40)).unwrap_or(40);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Pool::Postgres(pool))
        }
        Cleanup::Nothing => Err("no database for the baseline".into()),
    }
}
