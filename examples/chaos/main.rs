//! The crash harness: proves that no saga is lost or half-undone when its runner is killed.
//!
//! ```text
//! cargo run --release --example chaos -- --store sqlite --trials 30
//! cargo run --release --example chaos -- --store postgres --trials 30 --seed 7
//! ```
//!
//! Each trial starts a child process (this program with `--child`) that runs a batch of
//! four-step sagas: a third of them a fan-out whose middle two steps run at once
//! (`fan.rs`), a third a chain that waits durably before its second step and for a signal
//! at its third (`wait.rs`; the child signals them at random moments, the parent again
//! after the kill, under one key), a sixth a plain chain, and a sixth a parent whose middle
//! two steps are a child saga that it starts and waits for (`family.rs`). Their steps and
//! compensations record what they do in a ledger table in the saga database (a child saga
//! under its parent's id): `start` when a step's body begins, `do` when its effect is
//! applied, `undo` when a compensation applied its own, `cancel` when a step asked for its
//! saga's cancellation. Steps sleep, fail transiently, fail for good or cancel their saga,
//! all at seeded random. The parent kills the child with SIGKILL at a seeded random moment,
//! starts a fresh runner that recovers what the child left, and then checks, for every
//! saga:
//!
//! - `lost`: the saga ends completed, failed or parked, with every applied effect undone
//!   if it failed and every effect applied if it completed;
//! - `orphan_compensations`: no compensation runs for a step that never started;
//! - `double_outcomes`: one terminal event, and no saga both completed and compensated;
//! - `duplicate_effects`: an effect is applied twice only when a crash interrupted the
//!   step (an earlier copy by the killed runner, whose completion was never checkpointed);
//! - `ran_after_cancel`: no step starts after its saga's cancellation was acknowledged;
//! - `signal_errors`: a waiting saga's signal is stored once, and taken (consumed) once
//!   exactly when its step ran to completion;
//! - `child_errors`: a parent's child saga was started once (one `saga_started`, at most
//!   one `child_started` that created it), and told its parent of its end at most once.
//!
//! The last line is `trials=N lost=0 duplicate_effects=0 orphan_compensations=0
//! double_outcomes=0 signal_errors=0 child_errors=0 recovered=M woken=W late_wakes=S
//! children=C children_told_late=L` (`woken`: sagas the killed runner left waiting;
//! `late_wakes`: waiting sagas woken over 3 s after their signal came; `children`:
//! parents whose child completed; `children_told_late`: of those, the ones whose parent
//! went on over 3 s after its child completed, at its deadline rather than told); the exit
//! status is non-zero on any violation.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

mod branches;
mod check;
mod family;
mod fan;
mod ledger;
mod saga;
mod wait;
mod writes;

use branches::ChaosBranches;
use check::{Tally, check};
use family::{ChaosKid, ChaosParent};
use fan::ChaosFan;
use ledger::Ledger;
use saga::{Chaos, ChaosInput};
use saga_runtime::prelude::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use wait::{ChaosWait, send_go};

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
    /// Run trials from this number on (with `--trials 1`, replays one trial of a seed).
    #[arg(long, default_value_t = 0)]
    first_trial: u32,
    /// Kill the child when its Nth store write returns, rather than at a seeded moment:
    /// with `--seed` and `--first-trial`, replays the kill point a violation's line gives.
    #[arg(long)]
    kill_at_write: Option<u64>,
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

/// Whether saga `index` of a trial is a fan-out (two of every six).
fn is_fan(index: u32) -> bool {
    matches!(index % 6, 2 | 3)
}

/// Whether saga `index` of a trial waits (two of every six: a chain, and a saga whose
/// branches wait).
pub(crate) fn is_wait(index: u32) -> bool {
    matches!(index % 6, 4 | 5)
}

/// Whether saga `index` of a trial is one whose branches wait (one of every six).
fn is_branches(index: u32) -> bool {
    index % 6 == 5
}

/// Whether saga `index` of a trial is a parent with a child saga (one of every six).
pub(crate) fn is_family(index: u32) -> bool {
    index % 6 == 1
}

fn saga_id(trial: u32, index: u32) -> String {
    format!("t{trial}-s{index}")
}

// ---------------------------------------------------------------------------------------
// The child: runs a trial's sagas until it is killed
// ---------------------------------------------------------------------------------------

async fn child(args: &Args) -> Result<bool, String> {
    let location = args.location.as_deref().ok_or("--child needs --location")?;
    let store: Arc<dyn SagaStore> = Arc::new(writes::CountedStore::new(
        open_store(args.store, location, &args.database_url).await?,
        args.kill_at_write,
    ));
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
    let fan = orchestrator.register(ChaosFan(chaos(ledger.clone())));
    let waits = orchestrator.register(ChaosWait(chaos(ledger.clone())));
    let branches = orchestrator.register(ChaosBranches(chaos(ledger.clone())));
    let parents = orchestrator.register(ChaosParent(chaos(ledger.clone())));
    orchestrator.register(ChaosKid(chaos(ledger)));
    println!("ready");
    // The waiting sagas' signals, at seeded random moments: some before the saga reaches
    // the step that takes them, some while it waits.
    for index in (0..args.sagas).filter(|i| is_wait(*i)) {
        let (store, id) = (orchestrator.clone(), saga_id(args.trial, index));
        let after = mix(
            args.seed,
            &[u64::from(args.trial), u64::from(index), 0x5167],
        ) % 150;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            if let Err(error) = send_go(store.store(), &id, index, 200).await {
                eprintln!("chaos child: {error}");
            }
        });
    }
    let config = SagaConfig::new("chaos");
    let mut tasks = Vec::new();
    for index in 0..args.sagas {
        let id = saga_id(args.trial, index);
        let input = ChaosInput {
            trial: args.trial,
            index,
            // A saga whose branches wait is cancelled from `reserve`, as a fan-out is.
            fan: is_fan(index) || is_branches(index),
        };
        // Half through the durable queue (the recovery loop picks them up), half at once.
        let queued = index % 2 == 0;
        if queued {
            let acked = if is_branches(index) {
                branches.enqueue(id.clone(), &config, input).await
            } else if input.fan {
                fan.enqueue(id.clone(), &config, input).await
            } else if is_wait(index) {
                waits.enqueue(id.clone(), &config, input).await
            } else if is_family(index) {
                parents.enqueue(id.clone(), &config, input).await
            } else {
                chain.enqueue(id.clone(), &config, input).await
            };
            if acked.map_err(|e| e.to_string())? {
                println!("ack {id}");
            }
        } else if is_branches(index) {
            let (branches, config) = (branches.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                branches.execute_with_id(id, &config, input).await.map(drop)
            }));
        } else if is_wait(index) {
            let (waits, config) = (waits.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                waits.execute_with_id(id, &config, input).await.map(drop)
            }));
        } else if is_family(index) {
            let (parents, config) = (parents.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                parents.execute_with_id(id, &config, input).await.map(drop)
            }));
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
        "trials={} lost={} duplicate_effects={} orphan_compensations={} double_outcomes={} signal_errors={} child_errors={} recovered={} woken={} late_wakes={} children={} children_told_late={}",
        args.trials,
        tally.lost,
        tally.duplicate_effects,
        tally.orphan_compensations,
        tally.double_outcomes,
        tally.signal_errors,
        tally.child_errors,
        tally.recovered,
        tally.woken,
        tally.late_wakes,
        tally.children,
        tally.children_told_late
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
    for (done, trial) in
        (args.first_trial..args.first_trial.saturating_add(args.trials)).enumerate()
    {
        let before = tally.violations();
        let began = Instant::now();
        let (recovered, kill) = one_trial(args, location, store, ledger, trial, &mut tally).await?;
        if tally.violations() > before {
            // Everything needed to run this trial again, in full.
            eprintln!(
                "trial {trial}: {} violations; killed {kill}; replay: chaos --store {} --seed {} --sagas {} --first-trial {trial} --trials 1 --kill-at-write {} --verbose --keep",
                tally.violations() - before,
                store_name(args.store),
                args.seed,
                args.sagas,
                kill.writes.max(1),
            );
        }
        if args.verbose || tally.violations() > before {
            eprintln!(
                "trial {trial}: recovered {recovered} in {:.1}s, killed {kill}, violations so far {}",
                began.elapsed().as_secs_f64(),
                tally.violations()
            );
        } else if (done + 1) % 10 == 0 {
            eprintln!(
                "chaos: {} trials in {:.1}s, {} violations",
                done + 1,
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
) -> Result<(u64, Kill), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--child",
            "--store",
            store_name(args.store),
            "--location",
            location,
        ])
        .args([
            "--trial",
            &trial.to_string(),
            "--seed",
            &args.seed.to_string(),
        ])
        .args(["--sagas", &args.sagas.to_string()])
        .args(["--database-url", &session_url(&args.database_url, trial)])
        .args(
            args.kill_at_write
                .map(|n| vec!["--kill-at-write".to_owned(), n.to_string()])
                .unwrap_or_default(),
        )
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
    // A seeded moment, or (replaying) the child's own death at its chosen write, which
    // it reaches well within a minute unless the trial has fewer writes.
    let kill_after = match args.kill_at_write {
        None => mix(args.seed, &[u64::from(trial), 0xdead]) % args.kill_within_ms.max(1),
        Some(_) => 60_000,
    };
    let mut seen = Seen::default();
    let ready = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(kill_after);
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => seen.read(&line),
                _ => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // SIGKILL: no destructor, no flush, no lease release.
    child.start_kill().map_err(|e| format!("kill: {e}"))?;
    let _ = child.wait().await;
    let kill = Kill {
        ms: ready.elapsed().as_millis() as u64,
        writes: seen.writes,
    };
    while let Ok(Some(line)) = lines.next_line().await {
        seen.read(&line);
    }
    let acked = seen.acked;
    // A statement the child had sent still runs, and commits, on the server after the
    // child is dead: what it left is known only once its sessions have ended.
    ledger.await_sessions_end(&child_name(trial)).await?;

    // What the child left unfinished.
    let ids: Vec<String> = (0..args.sagas).map(|i| saga_id(trial, i)).collect();
    let mut unfinished = 0;
    for id in &ids {
        if let Some(record) = store.load(id).await.map_err(|e| e.to_string())? {
            if record.state.is_active() {
                unfinished += 1;
            } else if record.state == SagaState::Waiting {
                tally.woken += 1;
            }
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
    recovery.register(ChaosWait(chaos()));
    recovery.register(ChaosBranches(chaos()));
    recovery.register(ChaosParent(chaos()));
    recovery.register(ChaosKid(chaos()));
    // Each waiting saga's signal again: a duplicate if the child's was stored.
    for index in (0..args.sagas).filter(|i| is_wait(*i)) {
        send_go(recovery.store(), &saga_id(trial, index), index, 1).await?;
    }
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut active = 0;
        for id in &ids {
            if let Some(record) = store.load(id).await.map_err(|e| e.to_string())?
                && record.state.is_live()
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
    Ok((unfinished, kill))
}

/// The name the child's database sessions go by, so that the parent can tell when the
/// last of them has ended.
fn child_name(trial: u32) -> String {
    format!("chaos-child-{}-{trial}", std::process::id())
}

/// The database URL for the child of `trial`: the same server, its sessions named.
fn session_url(url: &str, trial: u32) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={}", child_name(trial))
}

fn store_name(store: Backend) -> &'static str {
    match store {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// What the parent read of its child's output: the sagas whose start was acknowledged, and
/// the number of the last store write the child reported.
#[derive(Debug, Default)]
struct Seen {
    acked: HashSet<String>,
    writes: u64,
}

impl Seen {
    fn read(&mut self, line: &str) {
        if let Some(id) = line.strip_prefix("ack ") {
            self.acked.insert(id.to_owned());
        } else if let Some(n) = line.strip_prefix("w ").and_then(|n| n.parse::<u64>().ok()) {
            self.writes = self.writes.max(n);
        }
    }
}

/// Where a kill landed: after how many of the child's store writes had returned (as it
/// reported them before it died), and how long after it was ready.
#[derive(Debug, Clone, Copy)]
struct Kill {
    ms: u64,
    writes: u64,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "after write {} ({} ms after ready)",
            self.writes, self.ms
        )
    }
}
