//! Benchmarks of sagas that wait (issue 17's targets), printing figures:
//!
//! ```text
//! cargo run --release --example waitbench -- --store postgres memory --sagas 1000000
//! cargo run --release --example waitbench -- --store sqlite memory --sagas 1000000
//! cargo run --release --example waitbench -- --store postgres timers --sagas 1000000
//! cargo run --release --example waitbench -- --store postgres signals --waiting 1000
//! ```
//!
//! - `memory`: a runner's resident memory (`VmRSS`) idle, then with `--executed` sagas that
//!   it ran itself to their wait, then with `--sagas` waiting sagas in the database (one run
//!   to its wait as a template, copied by the database), each after `--settle` seconds of
//!   its background loops (recovery passes every second, state counts every second).
//! - `timers`: `--sagas` waiting sagas all due at once; one runner (recovery pass every
//!   20 ms, batches of 1,000, at most 10,000 in flight) wakes them and runs their one step;
//!   sagas per second from its start until the last is completed.
//! - `signals`: `--waiting` sagas wait for a signal; `--samples` times, one is signalled and
//!   the time from `Executor::signal` being called to its step's body starting is measured
//!   (the runner learns of it by `LISTEN`/`NOTIFY` on PostgreSQL; its recovery loop runs
//!   only every 5 s).
//!
//! PostgreSQL runs in a schema of its own, dropped afterwards; SQLite in a temporary file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use saga_runtime::SagaStore;
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of sagas that wait")]
struct Args {
    #[arg(long, value_enum)]
    store: Backend,
    #[arg(
        long,
        env = "SAGA_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Resident memory of a runner idle and with sagas waiting.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        sagas: usize,
        #[arg(long, default_value_t = 10_000)]
        executed: usize,
        #[arg(long, default_value_t = 5)]
        settle: u64,
    },
    /// Sagas per second when every timer falls due at once.
    Timers {
        #[arg(long, default_value_t = 1_000_000)]
        sagas: usize,
    },
    /// (Run by `memory`.) A runner over an existing database: prints its resident memory
    /// after `settle` seconds.
    #[command(hide = true)]
    Runner {
        #[arg(long)]
        place: String,
        #[arg(long)]
        settle: u64,
    },
    /// From sending a signal to its step starting.
    Signals {
        #[arg(long, default_value_t = 1_000)]
        waiting: usize,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub n: u64,
}

/// One step, a day after the saga starts.
pub struct Held;

#[saga(name = "waitbench_held", input = Hold)]
impl Held {
    #[step(delay = "1d", timeout = 30)]
    async fn go(&self, input: &Hold) -> Result<u64, StepError> {
        Ok(input.n)
    }
}

/// One step that waits for a signal `ping`; its body notes when it starts.
pub struct Pinged {
    started: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>,
}

#[saga(name = "waitbench_pinged", input = Hold)]
impl Pinged {
    #[step(timeout = "1h")]
    async fn go(&self, #[signal] ping: u64, ctx: &StepContext) -> Result<u64, StepError> {
        let at = Instant::now();
        let waiter = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ctx.saga_id());
        if let Some(waiter) = waiter {
            let _ = waiter.send(at);
        }
        Ok(ping)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Bench::Runner { place, settle } = &args.bench {
        return runner(args.store, &args.database_url, place, *settle).await;
    }
    let db = Db::open(args.store, &args.database_url).await?;
    let result = match args.bench {
        Bench::Memory {
            sagas,
            executed,
            settle,
        } => memory(&db, sagas, executed, settle).await,
        Bench::Timers { sagas } => timers(&db, sagas).await,
        Bench::Runner { .. } => unreachable!("handled before the database is created"),
        Bench::Signals { waiting, samples } => signals(&db, waiting, samples).await,
    };
    db.close().await;
    result
}

/// The store under test, and a raw pool on the same database for the copies and counts.
struct Db {
    store: Arc<dyn SagaStore>,
    raw: Raw,
    /// PostgreSQL: the schema and the server URL; SQLite: the temporary folder.
    place: String,
    url: String,
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn open(backend: Backend, url: &str) -> Result<Db, Box<dyn std::error::Error>> {
        let tag = std::process::id();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("saga-waitbench-{tag}"));
                std::fs::create_dir_all(&dir)?;
                let store = SqliteStore::open(dir.join("wait.db")).await?;
                Ok(Db {
                    raw: Raw::Sqlite(store.pool().clone()),
                    store: Arc::new(store),
                    place: dir.display().to_string(),
                    url: url.to_owned(),
                })
            }
            Backend::Postgres => {
                let schema = format!("waitbench_{tag}");
                let store = PostgresStore::builder(url)
                    .schema(schema.clone())
                    .pool_size(8)
                    .connect()
                    .await?;
                Ok(Db {
                    raw: Raw::Postgres(store.pool().clone()),
                    store: Arc::new(store),
                    place: schema,
                    url: url.to_owned(),
                })
            }
        }
    }

    async fn execute(&self, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
        match &self.raw {
            Raw::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
            }
            Raw::Postgres(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
            }
        }
        Ok(())
    }

    async fn count(&self, sql: &str) -> Result<i64, Box<dyn std::error::Error>> {
        Ok(match &self.raw {
            Raw::Sqlite(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await?
            }
            Raw::Postgres(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Copies saga `template` (a waiting row) `copies` times, as `prefix1` ..; with `due`,
    /// every copy's `wake_at` is now.
    async fn copy(
        &self,
        template: &str,
        prefix: &str,
        copies: usize,
        due: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let columns = "saga_type, definition, fingerprint, state, step_index, current_step, \
            attempt, step_status, context, config, error, failed_step, version, owner, \
            lease_expires_at, wake_at, waiting_for, signals, recovery_count, parked_from, \
            cancel_requested, user_id, ip_address, created_at, updated_at";
        let started = Instant::now();
        match &self.raw {
            Raw::Postgres(_) => {
                let wake = if due { "now()" } else { "wake_at" };
                self.execute(&format!(
                    "INSERT INTO saga_checkpoints (saga_id, {columns}) \
                     SELECT '{prefix}' || g, {} \
                     FROM saga_checkpoints, generate_series(1, {copies}) AS g \
                     WHERE saga_id = '{template}'",
                    columns.replace("wake_at,", &format!("{wake},"))
                ))
                .await?;
                self.execute("VACUUM ANALYZE saga_checkpoints").await?;
            }
            Raw::Sqlite(_) => {
                let wake = if due {
                    "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
                } else {
                    "wake_at"
                };
                self.execute(&format!(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {copies}) \
                     INSERT INTO saga_checkpoints (saga_id, {columns}) \
                     SELECT '{prefix}' || n, {} FROM saga_checkpoints, g WHERE saga_id = '{template}'",
                    columns.replace("wake_at,", &format!("{wake},"))
                ))
                .await?;
                self.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
            }
        }
        println!(
            "  {copies} copies of `{template}` written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn close(self) {
        match self.raw {
            Raw::Sqlite(pool) => {
                pool.close().await;
                let _ = std::fs::remove_dir_all(&self.place);
            }
            Raw::Postgres(pool) => {
                pool.close().await;
                if let Ok(admin) = sqlx::PgPool::connect(&self.url).await {
                    let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.place);
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                    admin.close().await;
                }
            }
        }
    }
}

/// This process's resident memory, in MiB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A runner as an application runs one (recovery every second, metrics counted every 15 s)
/// over the database at `place`; prints `rss_mb=..` after `settle` seconds.
async fn runner(
    backend: Backend,
    url: &str,
    place: &str,
    settle: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn SagaStore> = match backend {
        Backend::Sqlite => Arc::new(SqliteStore::open(format!("{place}/wait.db")).await?),
        Backend::Postgres => Arc::new(
            PostgresStore::builder(url)
                .schema(place)
                .pool_size(8)
                .connect()
                .await?,
        ),
    };
    let orchestrator = Orchestrator::builder(store)
        .recovery_interval(Duration::from_secs(1))
        .metrics(saga_runtime::SagaMetrics::register(
            &prometheus::Registry::new(),
        )?)
        .build()?;
    orchestrator.register(Held);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    println!("rss_mb={:.1}", rss_mb());
    orchestrator.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Starts `runner` in a process of its own over `db`; its resident memory in MiB.
fn runner_rss(db: &Db, backend: Backend, settle: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let store = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--store", store, "--database-url", &db.url, "runner"])
        .args(["--place", &db.place, "--settle", &settle.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("rss_mb=").and_then(|v| v.parse().ok()))
        .ok_or_else(|| format!("the runner printed no figure: {text}").into())
}

async fn memory(
    db: &Db,
    sagas: usize,
    executed: usize,
    settle: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let backend = match db.raw {
        Raw::Sqlite(_) => Backend::Sqlite,
        Raw::Postgres(_) => Backend::Postgres,
    };
    let idle = runner_rss(db, backend, settle)?;
    println!("a runner over the empty database: {idle:.1} MiB");

    // The real path: sagas run to their wait by a runner, whose memory is read after.
    let orchestrator = Orchestrator::builder(db.store.clone())
        .recovery(false)
        .build()?;
    let held = orchestrator.register(Held);
    let config = SagaConfig::new("waitbench");
    let before = rss_mb();
    let started = Instant::now();
    for n in 0..executed as u64 {
        let outcome = held
            .execute_with_id(format!("run-{n}"), &config, Hold { n })
            .await?;
        assert_eq!(outcome.state(), SagaState::Waiting);
    }
    println!(
        "  {executed} sagas run to their wait in {:.1} s; this process {before:.1} -> {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss_mb()
    );
    orchestrator.shutdown(Duration::from_secs(1)).await;

    db.copy("run-0", "copy-", sagas.saturating_sub(executed), false)
        .await?;
    let waiting = db
        .count("SELECT count(*) FROM saga_checkpoints WHERE state = 'waiting'")
        .await?;
    let with_all = runner_rss(db, backend, settle)?;
    println!("a runner with {waiting} sagas waiting: {with_all:.1} MiB");
    println!(
        "memory: a runner idle {idle:.1} MiB, with {waiting} sagas waiting {with_all:.1} MiB ({:+.1} %)",
        (with_all / idle - 1.0) * 100.0
    );
    Ok(())
}

async fn timers(db: &Db, sagas: usize) -> Result<(), Box<dyn std::error::Error>> {
    // The template, run to its wait by a runner that then stops.
    {
        let orchestrator = Orchestrator::builder(db.store.clone())
            .recovery(false)
            .build()?;
        let held = orchestrator.register(Held);
        held.execute_with_id("timer-0", &SagaConfig::new("waitbench"), Hold { n: 0 })
            .await?;
    }
    db.copy("timer-0", "timer-", sagas.saturating_sub(1), true)
        .await?;
    db.execute("UPDATE saga_checkpoints SET wake_at = (SELECT wake_at FROM saga_checkpoints WHERE saga_id = 'timer-1') WHERE saga_id = 'timer-0'")
        .await?;
    let due = db
        .count("SELECT count(*) FROM saga_checkpoints WHERE state = 'waiting'")
        .await?;
    println!("  {due} sagas waiting, all due");
    let started = Instant::now();
    let orchestrator = Orchestrator::builder(db.store.clone())
        .recovery_interval(Duration::from_millis(20))
        .recovery_batch(1_000)
        .max_in_flight(10_000)
        .stats_interval(None)
        .build()?;
    orchestrator.register(Held);
    let mut last = (Instant::now(), 0_i64);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done = db
            .count("SELECT count(*) FROM saga_checkpoints WHERE state = 'completed'")
            .await?;
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        println!(
            "  [{:>5.1}s] {done} completed ({rate:.0}/s)",
            started.elapsed().as_secs_f64()
        );
        last = (Instant::now(), done);
        if done >= due {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "timers: {due} due at once, all completed in {elapsed:.1} s: {:.0} sagas/s",
        due as f64 / elapsed
    );
    orchestrator.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

async fn signals(
    db: &Db,
    waiting: usize,
    samples: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let orchestrator = Orchestrator::builder(db.store.clone()).build()?;
    let executor = orchestrator.register(Pinged {
        started: Mutex::new(HashMap::new()),
    });
    let pinged = executor.saga();
    let config = SagaConfig::new("waitbench");
    for n in 0..waiting as u64 {
        let outcome = executor
            .execute_with_id(format!("ping-{n}"), &config, Hold { n })
            .await?;
        assert_eq!(outcome.state(), SagaState::Waiting);
    }
    // Let the listener connect and the first recovery pass go by.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples.min(waiting) {
        let id = format!("ping-{n}");
        let (tell, told) = tokio::sync::oneshot::channel();
        pinged
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), tell);
        let sent = Instant::now();
        executor.signal(&id, PingedSignal::Ping(n as u64)).await?;
        let began = tokio::time::timeout(Duration::from_secs(30), told).await??;
        latencies.push(began.duration_since(sent));
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "signals: {waiting} waiting, {} signalled one at a time: send to step start p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
    orchestrator.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
