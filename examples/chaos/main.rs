//! The crash harness: proves that no saga is lost or half-undone when its runner is killed.
//!
//! ```text
//! cargo run --release --example chaos -- --store sqlite --trials 30
//! cargo run --release --example chaos -- --store postgres --trials 30 --seed 7
//! ```
//!
//! Each trial starts a child process (this program with `--child`) that runs a batch of
//! four-step sagas: half of them a chain, half a fan-out whose middle two steps run at once
//! (`fan.rs`). Their steps and compensations record what they do in a ledger table in
//! the saga database: `start` when a step's body begins, `do` when its effect is applied,
//! `undo` when a compensation applied its own, `cancel` when a step asked for its saga's
//! cancellation. Steps sleep, fail transiently, fail for good or cancel their saga, all at
//! seeded random. The parent kills the child with SIGKILL at a seeded random moment, starts
//! a fresh runner that recovers what the child left, and then checks, for every saga:
//!
//! - `lost`: the saga ends completed, failed or parked, with every applied effect undone
//!   if it failed and every effect applied if it completed;
//! - `orphan_compensations`: no compensation runs for a step that never started;
//! - `double_outcomes`: one terminal event, and no saga both completed and compensated;
//! - `duplicate_effects`: an effect is applied twice only when a crash interrupted the
//!   step (an earlier copy by the killed runner, whose completion was never checkpointed);
//! - `ran_after_cancel`: no step starts after its saga's cancellation was acknowledged.
//!
//! The last line is `trials=N lost=0 duplicate_effects=0 orphan_compensations=0
//! double_outcomes=0 recovered=M`; the exit status is non-zero on any violation.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

mod fan;

use fan::ChaosFan;
use saga_runtime::EventType;
use saga_runtime::prelude::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sabotage {
    SkipUndo,
    DoubleDo,
}

#[derive(Debug, Parser)]
#[command(about = "Kill runners at random and check that recovery loses nothing")]
struct Args {
    /// Where the sagas and the ledger live.
    #[arg(long, value_enum)]
    store: Backend,
    /// How many child processes to start and kill.
    #[arg(long, default_value_t = 30)]
    trials: u32,
    /// Seeds every random choice: the same seed replays the same plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sagas per trial.
    #[arg(long, default_value_t = 16)]
    sagas: u32,
    /// The latest moment of a kill after the child is ready, in milliseconds.
    #[arg(long, default_value_t = 250)]
    kill_within_ms: u64,
    /// PostgreSQL server (a schema is created for the run and dropped after it).
    #[arg(
        long,
        env = "SAGA_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Print every violation and a line per trial.
    #[arg(long)]
    verbose: bool,
    /// Keep the database afterwards (its location is printed).
    #[arg(long)]
    keep: bool,
    /// Break the recovering runner on purpose, to see the checks fail: `skip-undo` makes
    /// its compensations report success without undoing anything, `double-do` makes its
    /// steps apply their effect twice.
    #[arg(long, value_enum, hide = true)]
    sabotage: Option<Sabotage>,
    #[arg(long, hide = true)]
    child: bool,
    /// The SQLite file or the PostgreSQL schema (set by the parent for its child).
    #[arg(long, hide = true)]
    location: Option<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    trial: u32,
}

/// The message of every failure: NUL, control characters and non-ASCII text, which no text
/// column should refuse or stall on.
const HOSTILE_ERROR: &str = "flaky dependency: nul\0 bell\x07 esc\x1b[0m ünïcødé 🚀 東京";

/// The lease of both runners: short, so that recovery does not wait long.
const LEASE: Duration = Duration::from_millis(500);
const STEPS: [&str; 4] = ["reserve", "charge", "ship", "notify"];

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start tokio: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = if args.child {
        runtime.block_on(child(&args))
    } else {
        runtime.block_on(parent(&args))
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seeded choices
// ---------------------------------------------------------------------------------------

/// SplitMix64 over the seed and a few words: cheap, stable, well mixed.
fn mix(seed: u64, words: &[u64]) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for w in words {
        x = x.wrapping_add(*w).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

/// What a saga will do, decided by the seed.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// `notify` fails for good, so the three steps before it are compensated.
    fails: bool,
    /// `ship` asks for the saga's cancellation.
    cancels: bool,
}

fn plan(seed: u64, trial: u32, index: u32) -> Plan {
    let r = mix(seed, &[u64::from(trial), u64::from(index), 1]);
    Plan {
        fails: r % 100 < 25,
        cancels: (r >> 8) % 100 < 15,
    }
}

// ---------------------------------------------------------------------------------------
// The ledger and the saga
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Ledger {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, String),
}

impl Ledger {
    async fn open(store: Backend, location: &str, url: &str) -> Result<Self, String> {
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

    async fn create_table(&self) -> Result<(), String> {
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

    async fn record(&self, entry: &Entry<'_>) -> Result<(), sqlx::Error> {
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
    async fn rows(&self, trial: u32) -> Result<Vec<Row>, String> {
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

struct Entry<'a> {
    trial: u32,
    saga_id: &'a str,
    step: usize,
    kind: &'a str,
    runner: &'a str,
    attempt: u32,
}

#[derive(Debug)]
struct Row {
    id: i64,
    saga_id: String,
    step: usize,
    kind: String,
    runner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosInput {
    trial: u32,
    index: u32,
    /// Run by [`ChaosFan`], which cancels from its first step.
    #[serde(default)]
    fan: bool,
}

/// A unit struct: JSON `null`, like `()` and `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipped;

/// A saga whose steps only write to the ledger, sleep, and fail at seeded random. Their
/// outputs are the shapes that JSON renders as `null` or as nothing (`()`, `None`, a unit
/// struct) and an empty or large collection; each step takes the one before it, and
/// `undo_reserve` takes its own step's `()`, so a lost output shows up as a failed step or
/// compensation.
struct Chaos {
    ledger: Ledger,
    runner: String,
    seed: u64,
    orchestrator: OnceLock<Orchestrator>,
    sabotage: Option<Sabotage>,
}

#[saga(name = "chaos_order", input = ChaosInput)]
impl Chaos {
    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_reserve",
        compensate_retries = 20
    )]
    async fn reserve(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.forward(input, ctx, 0).await
    }

    async fn undo_reserve(
        &self,
        input: &ChaosInput,
        reserve: &(),
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        let () = *reserve;
        self.backward(input, ctx, 0).await
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_charge",
        compensate_retries = 20
    )]
    async fn charge(
        &self,
        input: &ChaosInput,
        reserve: &(),
        ctx: &StepContext,
    ) -> Result<Option<String>, StepError> {
        let () = *reserve;
        self.forward(input, ctx, 1).await.map(|()| None)
    }

    async fn undo_charge(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 1).await
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_ship",
        compensate_retries = 20
    )]
    // The DSL hands every step a reference to the output it binds.
    #[allow(clippy::ref_option)]
    async fn ship(
        &self,
        input: &ChaosInput,
        charge: &Option<String>,
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        if charge.is_some() {
            return Err(StepError::permanent(
                "charge holds an output it never returned",
            ));
        }
        self.forward(input, ctx, 2).await.map(|()| Shipped)
    }

    async fn undo_ship(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 2).await
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_notify",
        compensate_retries = 20
    )]
    async fn notify(
        &self,
        input: &ChaosInput,
        ship: &Shipped,
        ctx: &StepContext,
    ) -> Result<Vec<String>, StepError> {
        let Shipped = *ship;
        self.forward(input, ctx, 3).await?;
        // Every other saga keeps a large output, the rest an empty one.
        Ok(if input.index.is_multiple_of(2) {
            Vec::new()
        } else {
            vec!["ünïcødé \0 🚀".repeat(2_000); 4]
        })
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 3).await
    }
}

impl Chaos {
    fn entry<'a>(
        &'a self,
        input: &ChaosInput,
        ctx: &'a StepContext,
        step: usize,
        kind: &'a str,
    ) -> Entry<'a> {
        Entry {
            trial: input.trial,
            saga_id: ctx.saga_id(),
            step,
            kind,
            runner: &self.runner,
            attempt: ctx.attempt(),
        }
    }

    fn roll(&self, input: &ChaosInput, step: usize, attempt: u32, salt: u64) -> u64 {
        mix(
            self.seed,
            &[
                u64::from(input.trial),
                u64::from(input.index),
                step as u64,
                u64::from(attempt),
                salt,
            ],
        )
    }

    async fn note(&self, entry: &Entry<'_>) -> Result<(), StepError> {
        self.ledger
            .record(entry)
            .await
            .map_err(|e| StepError::retryable(format!("ledger: {e}")))
    }

    async fn forward(
        &self,
        input: &ChaosInput,
        ctx: &StepContext,
        step: usize,
    ) -> Result<(), StepError> {
        let attempt = ctx.attempt();
        self.note(&self.entry(input, ctx, step, "start")).await?;
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 2) % 12,
        ))
        .await;
        // A transient failure on some first and second attempts: the step is retried.
        if attempt <= 2 && self.roll(input, step, attempt, 3) % 100 < 15 {
            return Err(StepError::retryable(HOSTILE_ERROR));
        }
        let plan = plan(self.seed, input.trial, input.index);
        if step == 3 && plan.fails {
            return Err(StepError::permanent(format!(
                "card declined: {HOSTILE_ERROR}"
            )));
        }
        self.note(&self.entry(input, ctx, step, "do")).await?;
        if self.sabotage == Some(Sabotage::DoubleDo) {
            self.note(&self.entry(input, ctx, step, "do")).await?;
        }
        let cancel_step = if input.fan { 0 } else { 2 };
        if step == cancel_step
            && plan.cancels
            && let Some(orchestrator) = self.orchestrator.get()
        {
            orchestrator
                .cancel(ctx.saga_id(), "customer cancelled", &Actor::new("chaos"))
                .await
                .map_err(|e| StepError::retryable(format!("cancel: {e}")))?;
            self.note(&self.entry(input, ctx, step, "cancel")).await?;
        }
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 4) % 6,
        ))
        .await;
        Ok(())
    }

    async fn backward(
        &self,
        input: &ChaosInput,
        ctx: &StepContext,
        step: usize,
    ) -> Result<(), StepError> {
        let attempt = ctx.attempt();
        self.note(&self.entry(input, ctx, step, "undo_start"))
            .await?;
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 5) % 8,
        ))
        .await;
        if attempt <= 2 && self.roll(input, step, attempt, 6) % 100 < 10 {
            return Err(StepError::retryable(format!("refund: {HOSTILE_ERROR}")));
        }
        if self.sabotage == Some(Sabotage::SkipUndo) {
            return Ok(());
        }
        self.note(&self.entry(input, ctx, step, "undo")).await
    }
}

// ---------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------

async fn open_store(
    store: Backend,
    location: &str,
    url: &str,
) -> Result<Arc<dyn SagaStore>, String> {
    match store {
        Backend::Sqlite => Ok(Arc::new(
            SqliteStore::open(location)
                .await
                .map_err(|e| e.to_string())?,
        )),
        Backend::Postgres => Ok(Arc::new(
            PostgresStore::builder(url)
                .schema(location)
                .pool_size(8)
                .connect()
                .await
                .map_err(|e| e.to_string())?,
        )),
    }
}

/// Whether saga `index` of a trial is a fan-out (two of every four).
fn is_fan(index: u32) -> bool {
    index % 4 >= 2
}

fn saga_id(trial: u32, index: u32) -> String {
    format!("t{trial}-s{index}")
}

// ---------------------------------------------------------------------------------------
// The child: runs a trial's sagas until it is killed
// ---------------------------------------------------------------------------------------

async fn child(args: &Args) -> Result<bool, String> {
    let location = args.location.as_deref().ok_or("--child needs --location")?;
    let store = open_store(args.store, location, &args.database_url).await?;
    let ledger = Ledger::open(args.store, location, &args.database_url).await?;
    let runner = format!("child-{}", args.trial);
    let orchestrator = Orchestrator::builder(store)
        .runner_id(runner.clone())
        .lease(LEASE)
        .recovery_interval(Duration::from_millis(50))
        .build()
        .map_err(|e| e.to_string())?;
    let chaos = |ledger| {
        let chaos = Chaos {
            ledger,
            runner: runner.clone(),
            seed: args.seed,
            orchestrator: OnceLock::new(),
            sabotage: None,
        };
        let _ = chaos.orchestrator.set(orchestrator.clone());
        chaos
    };
    let chain = orchestrator.register(chaos(ledger.clone()));
    let fan = orchestrator.register(ChaosFan(chaos(ledger)));
    println!("ready");
    let config = SagaConfig::new("chaos");
    let mut tasks = Vec::new();
    for index in 0..args.sagas {
        let id = saga_id(args.trial, index);
        let input = ChaosInput {
            trial: args.trial,
            index,
            fan: is_fan(index),
        };
        // Half through the durable queue (the recovery loop picks them up), half at once.
        let queued = index % 2 == 0;
        if queued {
            let acked = if input.fan {
                fan.enqueue(id.clone(), &config, input).await
            } else {
                chain.enqueue(id.clone(), &config, input).await
            };
            if acked.map_err(|e| e.to_string())? {
                println!("ack {id}");
            }
        } else if input.fan {
            let (fan, config) = (fan.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                fan.execute_with_id(id, &config, input).await.map(drop)
            }));
        } else {
            let (chain, config) = (chain.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                chain.execute_with_id(id, &config, input).await.map(drop)
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    // Let the recovery loop finish the queued ones; the parent kills us at some point.
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// The parent: kills, recovers, checks
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    lost: u64,
    duplicate_effects: u64,
    orphan_compensations: u64,
    double_outcomes: u64,
    ran_after_cancel: u64,
    recovered: u64,
    /// Effects applied twice because a crash interrupted their step (allowed).
    reapplied: u64,
    completed: u64,
    failed: u64,
    parked: u64,
    cancelled: u64,
    sagas: u64,
}

impl Tally {
    fn violations(&self) -> u64 {
        self.lost
            + self.duplicate_effects
            + self.orphan_compensations
            + self.double_outcomes
            + self.ran_after_cancel
    }
}

async fn parent(args: &Args) -> Result<bool, String> {
    let run = mix(args.seed, &[u64::from(std::process::id()), now_nanos()]) % 1_000_000;
    let (location, dir) = match args.store {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("saga-chaos-{run}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            (dir.join("chaos.db").display().to_string(), Some(dir))
        }
        Backend::Postgres => (format!("saga_chaos_{run}"), None),
    };
    let store = open_store(args.store, &location, &args.database_url).await?;
    let ledger = Ledger::open(args.store, &location, &args.database_url).await?;
    ledger.create_table().await?;
    let result = trials(args, &location, &store, &ledger).await;
    if args.keep {
        eprintln!("chaos: kept {location}");
    } else {
        cleanup(args, &location, dir, &ledger).await;
    }
    let tally = result?;
    println!(
        "sagas={} completed={} failed={} parked={} cancelled={} reapplied_after_crash={} ran_after_cancel={}",
        tally.sagas,
        tally.completed,
        tally.failed,
        tally.parked,
        tally.cancelled,
        tally.reapplied,
        tally.ran_after_cancel
    );
    println!(
        "trials={} lost={} duplicate_effects={} orphan_compensations={} double_outcomes={} recovered={}",
        args.trials,
        tally.lost,
        tally.duplicate_effects,
        tally.orphan_compensations,
        tally.double_outcomes,
        tally.recovered
    );
    Ok(tally.violations() == 0)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn cleanup(args: &Args, location: &str, dir: Option<PathBuf>, ledger: &Ledger) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let (Backend::Postgres, Ledger::Postgres(pool, _)) = (args.store, ledger) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{location}\" CASCADE");
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await {
            eprintln!("chaos: could not drop schema {location}: {error}");
        }
    }
}

async fn trials(
    args: &Args,
    location: &str,
    store: &Arc<dyn SagaStore>,
    ledger: &Ledger,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let started = Instant::now();
    for trial in 0..args.trials {
        let before = tally.violations();
        let recovered = one_trial(args, location, store, ledger, trial, &mut tally).await?;
        if args.verbose || tally.violations() > before {
            eprintln!(
                "trial {trial}: recovered {recovered}, violations so far {}",
                tally.violations()
            );
        } else if (trial + 1) % 10 == 0 {
            eprintln!(
                "chaos: {} trials in {:.1}s, {} violations",
                trial + 1,
                started.elapsed().as_secs_f64(),
                tally.violations()
            );
        }
    }
    Ok(tally)
}

async fn one_trial(
    args: &Args,
    location: &str,
    store: &Arc<dyn SagaStore>,
    ledger: &Ledger,
    trial: u32,
    tally: &mut Tally,
) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let store_name = match args.store {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut child = tokio::process::Command::new(exe)
        .args(["--child", "--store", store_name, "--location", location])
        .args([
            "--trial",
            &trial.to_string(),
            "--seed",
            &args.seed.to_string(),
        ])
        .args(["--sagas", &args.sagas.to_string()])
        .args(["--database-url", &args.database_url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("the child has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // Wait until it is connected, so that the kill lands among sagas, not at start-up.
    loop {
        match lines.next_line().await.map_err(|e| e.to_string())? {
            Some(line) if line == "ready" => break,
            Some(_) => {}
            None => return Err(format!("trial {trial}: the child died before it was ready")),
        }
    }
    let kill_after = mix(args.seed, &[u64::from(trial), 0xdead]) % args.kill_within_ms.max(1);
    let mut acked = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(kill_after);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(id) = line.strip_prefix("ack ") {
                        acked.insert(id.to_owned());
                    }
                }
                _ => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // SIGKILL: no destructor, no flush, no lease release.
    child.start_kill().map_err(|e| format!("kill: {e}"))?;
    let _ = child.wait().await;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = line.strip_prefix("ack ") {
            acked.insert(id.to_owned());
        }
    }

    // What the child left unfinished.
    let ids: Vec<String> = (0..args.sagas).map(|i| saga_id(trial, i)).collect();
    let mut unfinished = 0;
    for id in &ids {
        if let Some(record) = store.load(id).await.map_err(|e| e.to_string())?
            && record.state.is_active()
        {
            unfinished += 1;
        }
    }
    tally.recovered += unfinished;

    // A fresh runner recovers them once the dead runner's leases run out.
    let recovery = Orchestrator::builder(store.clone())
        .runner_id(format!("recovery-{trial}"))
        .lease(LEASE)
        .recovery(false)
        .build()
        .map_err(|e| e.to_string())?;
    let chaos = || {
        let chaos = Chaos {
            ledger: ledger.clone(),
            runner: format!("recovery-{trial}"),
            seed: args.seed,
            orchestrator: OnceLock::new(),
            sabotage: args.sabotage,
        };
        let _ = chaos.orchestrator.set(recovery.clone());
        chaos
    };
    recovery.register(chaos());
    recovery.register(ChaosFan(chaos()));
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut active = 0;
        for id in &ids {
            if let Some(record) = store.load(id).await.map_err(|e| e.to_string())?
                && record.state.is_active()
            {
                active += 1;
            }
        }
        if active == 0 || Instant::now() > give_up {
            break;
        }
        recovery
            .recover_expired()
            .await
            .map_err(|e| format!("recovery: {e}"))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recovery.shutdown(Duration::from_secs(1)).await;

    check(args, store, ledger, trial, &ids, &acked, tally).await?;
    Ok(unfinished)
}

/// Checks every saga of a trial against the ledger and the audit log.
async fn check(
    args: &Args,
    store: &Arc<dyn SagaStore>,
    ledger: &Ledger,
    trial: u32,
    ids: &[String],
    acked: &HashSet<String>,
    tally: &mut Tally,
) -> Result<(), String> {
    let killed = format!("child-{trial}");
    let mut by_saga: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    let rows = ledger.rows(trial).await?;
    for row in &rows {
        by_saga.entry(row.saga_id.as_str()).or_default().push(row);
    }
    let violation = |kind: &str, id: &str, what: String, counter: &mut u64| {
        *counter += 1;
        if args.verbose || *counter <= 5 {
            eprintln!("VIOLATION {kind} {id}: {what}");
        }
    };
    for id in ids {
        let rows = by_saga.get(id.as_str()).map_or(&[][..], Vec::as_slice);
        let Some(record) = store.load(id).await.map_err(|e| e.to_string())? else {
            if acked.contains(id) || !rows.is_empty() {
                violation("lost", id, "its row is gone".into(), &mut tally.lost);
            }
            continue;
        };
        tally.sagas += 1;
        let events = store
            .audit_log(&AuditQuery::new().saga_id(id.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let count = |event: EventType, step: Option<&str>| {
            events
                .iter()
                .filter(|e| e.event() == Some(event))
                .filter(|e| step.is_none() || e.step_name.as_deref() == step)
                .count()
        };
        let has = |step: usize, kind: &str| rows.iter().any(|r| r.step == step && r.kind == kind);

        // Every saga ends, and ends whole.
        match record.state {
            SagaState::Completed => {
                tally.completed += 1;
                if let Some(step) = (0..STEPS.len()).find(|s| !has(*s, "do")) {
                    violation(
                        "lost",
                        id,
                        format!("completed without the effect of step {step}"),
                        &mut tally.lost,
                    );
                }
                if rows.iter().any(|r| r.kind == "undo")
                    || count(EventType::CompensationExecuted, None) > 0
                {
                    violation(
                        "double_outcome",
                        id,
                        "completed and compensated".into(),
                        &mut tally.double_outcomes,
                    );
                }
            }
            SagaState::Failed => {
                tally.failed += 1;
                for step in 0..STEPS.len() {
                    if has(step, "do") && !has(step, "undo") {
                        violation(
                            "lost",
                            id,
                            format!("failed with step {step} applied and never undone"),
                            &mut tally.lost,
                        );
                    }
                }
            }
            SagaState::Parked => tally.parked += 1,
            state => violation(
                "lost",
                id,
                format!("left in state {state}"),
                &mut tally.lost,
            ),
        }
        let terminal = count(EventType::SagaCompleted, None)
            + count(EventType::SagaFailed, None)
            + count(EventType::SagaCompensationFailed, None)
            + count(EventType::SagaParked, None);
        if terminal > 1 {
            violation(
                "double_outcome",
                id,
                format!("{terminal} terminal events"),
                &mut tally.double_outcomes,
            );
        }

        // Compensations only for steps that started.
        for step in 0..STEPS.len() {
            if (has(step, "undo_start") || has(step, "undo")) && !has(step, "start") {
                violation(
                    "orphan_compensation",
                    id,
                    format!("step {step} undone but never started"),
                    &mut tally.orphan_compensations,
                );
            }
        }

        // An effect repeats only when a crash interrupted its step.
        for (step, name) in STEPS.iter().enumerate() {
            for kind in ["do", "undo"] {
                let copies: Vec<&&Row> = rows
                    .iter()
                    .filter(|r| r.step == step && r.kind == kind)
                    .collect();
                if copies.len() < 2 {
                    continue;
                }
                let runners: HashSet<&str> = copies.iter().map(|r| r.runner.as_str()).collect();
                let earlier_by_killed = copies[..copies.len() - 1]
                    .iter()
                    .all(|r| r.runner == killed);
                if runners.len() == copies.len() && earlier_by_killed {
                    tally.reapplied += 1;
                } else {
                    violation(
                        "duplicate_effect",
                        id,
                        format!("{kind} of step {step} applied {} times", copies.len()),
                        &mut tally.duplicate_effects,
                    );
                }
            }
            let completions = count(EventType::StepCompleted, Some(name));
            let undone = count(EventType::CompensationExecuted, Some(name));
            if completions > 1 || undone > 1 {
                violation(
                    "duplicate_effect",
                    id,
                    format!("{name} completed {completions} and undone {undone} times"),
                    &mut tally.duplicate_effects,
                );
            }
        }

        // Nothing starts after a cancellation was acknowledged.
        if let Some(cancel) = rows.iter().find(|r| r.kind == "cancel") {
            tally.cancelled += 1;
            if let Some(late) = rows.iter().find(|r| r.kind == "start" && r.id > cancel.id) {
                violation(
                    "ran_after_cancel",
                    id,
                    format!("step {} started after the cancellation", late.step),
                    &mut tally.ran_after_cancel,
                );
            }
            if record.state == SagaState::Completed {
                violation(
                    "ran_after_cancel",
                    id,
                    "completed after its cancellation".into(),
                    &mut tally.ran_after_cancel,
                );
            }
        }
    }
    Ok(())
}
