//! Load generator: thousands of concurrent sagas against any store, with throughput and
//! latency percentiles, and (with `--baseline`) the same work done without the library.
//!
//! ```text
//! cargo run --release --example loadtest -- --store memory   --sagas 100000 --concurrency 10000 --steps 3
//! cargo run --release --example loadtest -- --store sqlite   --sagas 10000  --concurrency 1000  --steps 3 --baseline
//! cargo run --release --example loadtest -- --store postgres --sagas 10000  --concurrency 1000  --steps 3 --baseline
//! ```
//!
//! PostgreSQL: `--url` or `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each run works in a schema of its own and drops it. SQLite: a file in a temporary folder.
//! The run exits non-zero unless every saga reached a terminal state and the database's
//! counts agree with what the run saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use saga_runtime::prelude::*;
use saga_runtime::store::StateCount;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// Load generator for sagas.
#[derive(Debug, Parser)]
#[allow(clippy::struct_excessive_bools)] // command-line flags
struct Args {
    /// Which store.
    #[arg(long, value_enum, default_value = "memory")]
    store: Backend,
    /// How many sagas in all.
    #[arg(long, default_value_t = 10_000)]
    sagas: usize,
    /// How many run at once.
    #[arg(long, default_value_t = 1_000)]
    concurrency: usize,
    /// Steps per saga: 1, 3, 4, 5 or 10 (a fan-out: 3, 4, 5 or 10).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// `chain`: each step waits for the one before; `fanout`: every step but the last
    /// starts at once (`concurrent`), and the last (the join) waits for them all; `wait`:
    /// a chain of three whose second step waits for a signal that the load generator sends.
    #[arg(long, value_enum, default_value = "chain")]
    shape: Shape,
    /// Fraction of sagas whose last step fails for good (and compensates), 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Also run the same work without the library (hand-written SQL, one transaction per
    /// step; for the memory store, a bare chain of async functions with a timeout).
    #[arg(long)]
    baseline: bool,
    /// Skip the library run (with --baseline: only the baseline).
    #[arg(long)]
    baseline_only: bool,
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    url: String,
    /// Finished sagas already in the tables before the run (SQLite, PostgreSQL): a
    /// production database holds months of them.
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Also append each result to this file, as one JSON object per line
    /// (`scripts/benchmarks` renders BENCHMARKS.md's tables from such files).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A label for this run in the JSON output (for example a round or a sitting).
    #[arg(long, default_value = "")]
    label: String,
    /// Group commit: transactions in flight at once (default: the store's, 1 for SQLite
    /// and 2 for PostgreSQL).
    #[arg(long)]
    writers: Option<usize>,
    /// Group commit: most writes per transaction (1 turns batching off).
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Group commit: how long a writer waits for more writes, in microseconds.
    #[arg(long, default_value_t = 0)]
    max_wait_us: u64,
    /// Each step sleeps this long: holds up to --concurrency sagas in flight at once, to
    /// measure memory per in-flight saga.
    #[arg(long, default_value_t = 0)]
    step_ms: u64,
    /// Instead of the load run: a runner starts --sagas sagas (3 steps) and dies in their
    /// second step; a fresh runner's recovery loop finishes them. Prints the time taken.
    #[arg(long)]
    orphans: bool,
    /// Write the audit log too (as the deployment guide's production config does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    audit: bool,
    /// Fail (exit non-zero) if the live heap per in-flight saga exceeds this many KiB
    /// (with --step-ms): CI's guard against a saga's future or row growing unnoticed.
    #[arg(long)]
    max_heap_kib: Option<f64>,
}

/// How a saga's steps depend on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    Chain,
    #[value(alias = "fan")]
    Fanout,
    /// Three steps; the second waits for a signal, which the load generator sends.
    Wait,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadInput {
    pub n: u64,
    pub fail: bool,
    /// How long each step sleeps (to hold many sagas in flight at once).
    pub sleep_ms: u64,
}

/// The step body shared by the library run and the baseline: a little work, and a
/// permanent failure in the last step of a failing saga.
async fn body(input: &LoadInput, step: usize, last: bool) -> Result<u64, StepError> {
    if step == 2 && orphans::HANG.load(std::sync::atomic::Ordering::SeqCst) {
        orphans::HUNG.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    if input.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    }
    if last && input.fail {
        return Err(StepError::permanent("injected failure").with_type("injected"));
    }
    Ok(input.n.wrapping_mul(31).wrapping_add(step as u64))
}

macro_rules! load_saga {
    ($ty:ident, $name:literal, $( ($step:ident, $undo:ident, $i:literal, $last:literal $(, $concurrent:ident)?) ),+ ) => {
        pub struct $ty;

        #[saga(name = $name, input = LoadInput)]
        impl $ty {
            $(
                #[step($($concurrent,)? timeout = 10, retries = 1, compensate = $undo)]
                async fn $step(&self, input: &LoadInput) -> Result<u64, StepError> {
                    body(input, $i, $last).await
                }

                async fn $undo(&self, input: &LoadInput) -> Result<(), StepError> {
                    let _ = input;
                    Ok(())
                }
            )+
        }
    };
}

load_saga!(Load1, "load1", (s1, u1, 1, true));
load_saga!(
    Load3,
    "load3",
    (s1, u1, 1, false),
    (s2, u2, 2, false),
    (s3, u3, 3, true)
);
load_saga!(
    Load4,
    "load4",
    (s1, u1, 1, false),
    (s2, u2, 2, false),
    (s3, u3, 3, false),
    (s4, u4, 4, true)
);
load_saga!(
    Load5,
    "load5",
    (s1, u1, 1, false),
    (s2, u2, 2, false),
    (s3, u3, 3, false),
    (s4, u4, 4, false),
    (s5, u5, 5, true)
);
load_saga!(
    Load10,
    "load10",
    (s1, u1, 1, false),
    (s2, u2, 2, false),
    (s3, u3, 3, false),
    (s4, u4, 4, false),
    (s5, u5, 5, false),
    (s6, u6, 6, false),
    (s7, u7, 7, false),
    (s8, u8, 8, false),
    (s9, u9, 9, false),
    (s10, u10, 10, true)
);

load_saga!(
    Fan3,
    "fan3",
    (s1, u1, 1, false, concurrent),
    (s2, u2, 2, false, concurrent),
    (s3, u3, 3, true)
);
load_saga!(
    Fan4,
    "fan4",
    (s1, u1, 1, false, concurrent),
    (s2, u2, 2, false, concurrent),
    (s3, u3, 3, false, concurrent),
    (s4, u4, 4, true)
);
load_saga!(
    Fan5,
    "fan5",
    (s1, u1, 1, false, concurrent),
    (s2, u2, 2, false, concurrent),
    (s3, u3, 3, false, concurrent),
    (s4, u4, 4, false, concurrent),
    (s5, u5, 5, true)
);
load_saga!(
    Fan10,
    "fan10",
    (s1, u1, 1, false, concurrent),
    (s2, u2, 2, false, concurrent),
    (s3, u3, 3, false, concurrent),
    (s4, u4, 4, false, concurrent),
    (s5, u5, 5, false, concurrent),
    (s6, u6, 6, false, concurrent),
    (s7, u7, 7, false, concurrent),
    (s8, u8, 8, false, concurrent),
    (s9, u9, 9, false, concurrent),
    (s10, u10, 10, true)
);

/// What one run measured.
struct Report {
    /// Resident memory before the run, and at its peak while sagas were in flight.
    rss_before_mb: f64,
    inflight_peak_mb: f64,
    /// Live heap bytes before the run, and at their peak while sagas were in flight.
    heap_before: isize,
    inflight_heap_peak: isize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    completed: usize,
    failed: usize,
    /// Group commit over the run: transactions, writes, time in transactions.
    commits: Option<(u64, u64, Duration)>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// A memory figure of this process from /proc, in MiB (`VmHWM`: peak, `VmRSS`: now).
fn memory_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn max_rss_mb() -> f64 {
    memory_mb("VmHWM:")
}

fn progress(total: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} sagas ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Runs `sagas` jobs with `concurrency` workers; `job(i)` returns whether saga `i` completed.
async fn drive<F, Fut>(args: &Args, job: F) -> Result<Report, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool, String>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(args.sagas);
    let rss_before_mb = memory_mb("VmRSS:");
    if args.step_ms > 0 {
        alloc::enable();
    }
    let heap_before = alloc::live_bytes();
    let heap_peak = Arc::new(std::sync::atomic::AtomicIsize::new(isize::MIN));
    let peak = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Samples resident memory while (nearly) every worker has a saga in flight.
    let sampler = {
        let (peak, in_flight) = (peak.clone(), in_flight.clone());
        let heap_peak = heap_peak.clone();
        let in_flight = in_flight.clone();
        let full = (args.concurrency.min(args.sagas) * 99 / 100).max(1);
        tokio::spawn(async move {
            loop {
                if in_flight.load(Ordering::Relaxed) >= full {
                    let now = (memory_mb("VmRSS:") * 1024.0) as u64;
                    peak.fetch_max(now, Ordering::Relaxed);
                    heap_peak.fetch_max(alloc::live_bytes(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.max(1) {
        let (job, next, done, bar, total) = (
            job.clone(),
            next.clone(),
            done.clone(),
            bar.clone(),
            args.sagas,
        );
        let in_flight = in_flight.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut completed, mut failed) = (0, 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let begun = Instant::now();
                in_flight.fetch_add(1, Ordering::Relaxed);
                let ended = job(i).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                if ended? {
                    completed += 1;
                } else {
                    failed += 1;
                }
                latencies.push(begun.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
            Ok::<_, String>((latencies, completed, failed))
        }));
    }
    let mut report = Report {
        rss_before_mb,
        inflight_peak_mb: 0.0,
        heap_before,
        inflight_heap_peak: isize::MIN,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(args.sagas),
        completed: 0,
        failed: 0,
        commits: None,
    };
    for worker in workers {
        let (latencies, completed, failed) = worker.await.map_err(|e| e.to_string())??;
        report.latencies.extend(latencies);
        report.completed += completed;
        report.failed += failed;
    }
    report.elapsed = started.elapsed();
    sampler.abort();
    report.inflight_peak_mb = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    report.inflight_heap_peak = heap_peak.load(Ordering::Relaxed);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.latencies.sort_unstable();
    Ok(report)
}

/// Whether saga `i` fails. Deterministic: the same sagas fail in the library run and in
/// the baseline.
fn fails(fail_rate: f64, i: usize) -> bool {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
    (x as f64 / (1u64 << 53) as f64) < fail_rate
}

/// Runs the library: every saga through an orchestrator on the chosen store.
async fn library(args: &Args, store: Arc<dyn SagaStore>) -> Result<Report, String> {
    // Waiting sagas are woken by the runner's recovery loop.
    let orchestrator = Orchestrator::builder(store.clone())
        .recovery(args.shape == Shape::Wait)
        .build()
        .map_err(|e| e.to_string())?;
    let config = SagaConfig::new("loadtest").enable_audit_log(args.audit);
    macro_rules! run_with {
        ($ty:ident) => {{
            let executor = orchestrator.register($ty);
            let fail_rate = args.fail_rate;
            let sleep_ms = args.step_ms;
            drive(args, move |i| {
                let executor = executor.clone();
                let config = config.clone();
                let fail = fails(fail_rate, i);
                async move {
                    let outcome = executor
                        .execute_with_id(
                            format!("load-{i}"),
                            &config,
                            LoadInput {
                                n: i as u64,
                                fail,
                                sleep_ms,
                            },
                        )
                        .await
                        .map_err(|e| format!("saga {i}: {e}"))?;
                    match outcome.state() {
                        SagaState::Completed => Ok(true),
                        SagaState::Failed => Ok(false),
                        other => Err(format!("saga {i} ended {other}")),
                    }
                }
            })
            .await
        }};
    }
    let report = match (args.shape, args.steps) {
        (Shape::Chain, 1) => run_with!(Load1),
        (Shape::Chain, 3) => run_with!(Load3),
        (Shape::Chain, 4) => run_with!(Load4),
        (Shape::Chain, 5) => run_with!(Load5),
        (Shape::Chain, 10) => run_with!(Load10),
        (Shape::Fanout, 3) => run_with!(Fan3),
        (Shape::Fanout, 4) => run_with!(Fan4),
        (Shape::Fanout, 5) => run_with!(Fan5),
        (Shape::Fanout, 10) => run_with!(Fan10),
        (Shape::Wait, _) => wait::run(args, &orchestrator, config).await,
        (shape, other) => {
            return Err(format!(
                "--steps {other} is not available with --shape {shape:?} (chain: 1, 3, 4, 5, 10; fanout: 3, 4, 5, 10)"
            ));
        }
    };
    // Stops the recovery loop (the wait shape's) before the tables are counted and dropped.
    orchestrator.shutdown(Duration::from_secs(1)).await;
    let report = report?;
    // The database must agree with what the run saw.
    let counts: Vec<StateCount> = store
        .stats(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::SystemTime::UNIX_EPOCH,
        )
        .await
        .map_err(|e| e.to_string())?;
    let count = |state: SagaState| -> usize {
        counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count as usize)
            .sum()
    };
    let (completed, failed, total) = (
        count(SagaState::Completed),
        count(SagaState::Failed),
        counts.iter().map(|c| c.count as usize).sum::<usize>(),
    );
    let history = if args.store == Backend::Memory {
        0
    } else {
        args.history
    };
    if completed != report.completed + history
        || failed != report.failed
        || total != args.sagas + history
    {
        return Err(format!(
            "the store disagrees: it has {completed} completed, {failed} failed and {total} sagas in all; the run saw {} and {} of {} (after {history} of history)",
            report.completed, report.failed, args.sagas
        ));
    }
    Ok(report)
}

mod alloc;
mod baseline;
mod history;
mod orphans;
mod results;
mod wait;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Now, as SQLite's timestamp text.
fn saga_time() -> String {
    let text = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err("--fail-rate must be between 0 and 1".into());
    }
    if ![1, 3, 4, 5, 10].contains(&args.steps) {
        return Err(format!(
            "--steps must be 1, 3, 4, 5 or 10, not {}",
            args.steps
        ));
    }
    if args.orphans {
        return orphans::run(args).await;
    }
    if args.shape != Shape::Chain && (args.baseline || args.baseline_only || args.history > 0) {
        return Err(format!(
            "--shape {:?} runs the library only, without --baseline or --history",
            args.shape
        )
        .to_lowercase());
    }
    let mut library_rate = None;
    if !args.baseline_only {
        let opened = baseline::open(args).await?;
        let before = opened.stats.as_ref().map(|stats| stats());
        let report = library(args, opened.store).await;
        let after = opened.stats.as_ref().map(|stats| stats());
        opened.cleanup.run().await;
        let mut report = report?;
        if let (Some(before), Some(after)) = (before, after) {
            report.commits = Some((
                after.batches - before.batches,
                after.writes - before.writes,
                after.busy.saturating_sub(before.busy),
            ));
        }
        library_rate = Some(results::emit("library", args, &report)?);
    }
    if args.baseline || args.baseline_only {
        let report = baseline::run(args).await?;
        let rate = results::emit("baseline", args, &report)?;
        if let Some(library) = library_rate {
            println!(
                "ratio library/baseline steps_per_s={:.2}",
                library / rate.max(f64::EPSILON)
            );
        }
    }
    Ok(())
}
