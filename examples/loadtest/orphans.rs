//! Recovery at scale: a runner starts sagas and dies in the middle of their second step;
//! a fresh runner's recovery loop claims them all once their leases run out and finishes
//! them. Prints how long that took.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saga_runtime::prelude::*;
use serde_json::json;

use super::{Args, Load3, LoadInput};

/// While set, second steps block (the runner "dies" with them in flight).
pub(crate) static HANG: AtomicBool = AtomicBool::new(false);
/// How many second steps are blocked.
pub(crate) static HUNG: AtomicUsize = AtomicUsize::new(0);

pub(crate) async fn run(args: &Args) -> Result<(), String> {
    let n = args.sagas;
    let super::baseline::Opened { store, cleanup, .. } = super::baseline::open(args).await?;
    let result = orphan_and_recover(args, n, store.clone()).await;
    cleanup.run().await;
    let elapsed = result?.as_secs_f64();
    super::results::record(
        "recovery",
        "recovery ",
        args,
        vec![
            ("store", json!(format!("{:?}", args.store).to_lowercase())),
            ("orphans", json!(n)),
            ("elapsed_s", json!(elapsed)),
            ("sagas_per_s", json!(n as f64 / elapsed.max(f64::EPSILON))),
        ],
    )
}

async fn orphan_and_recover(
    args: &Args,
    n: usize,
    store: Arc<dyn SagaStore>,
) -> Result<Duration, String> {
    let lease = Duration::from_secs(1);
    // Runner A: starts every saga, which then blocks in its second step.
    HANG.store(true, Ordering::SeqCst);
    let a = Orchestrator::builder(store.clone())
        .runner_id("doomed-runner")
        .lease(lease)
        .recovery(false)
        .build()
        .map_err(|e| e.to_string())?;
    let executor = a.register(Load3);
    let config = SagaConfig::new("loadtest").enable_audit_log(args.audit);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (executor, config) = (executor.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let input = LoadInput {
                n: i as u64,
                fail: false,
                sleep_ms: 0,
            };
            let _ = executor
                .execute_with_id(format!("orphan-{i}"), &config, input)
                .await;
        }));
    }
    let waiting = Instant::now();
    while HUNG.load(Ordering::SeqCst) < n {
        if waiting.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "only {} of {n} sagas reached their second step",
                HUNG.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Runner A dies: its tasks stop mid-step and its leases are no longer renewed.
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(executor);
    drop(a);
    HANG.store(false, Ordering::SeqCst);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;

    // Runner B: a fresh process's runner, whose recovery loop finds the orphans.
    let started = Instant::now();
    let b = Orchestrator::builder(store.clone())
        .runner_id("fresh-runner")
        .recovery_interval(Duration::from_millis(100))
        .recovery_batch(1_000)
        .build()
        .map_err(|e| e.to_string())?;
    let _executor = b.register(Load3);
    loop {
        let counts = store
            .stats(
                std::time::SystemTime::UNIX_EPOCH,
                std::time::SystemTime::UNIX_EPOCH,
            )
            .await
            .map_err(|e| e.to_string())?;
        let done: u64 = counts
            .iter()
            .filter(|c| c.state.is_finished())
            .map(|c| c.count)
            .sum();
        if done as usize >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {done} of {n} orphans finished in 10 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    b.shutdown(Duration::from_secs(5)).await;
    // A crash costs the interrupted attempt; the steps allow one retry, so all complete.
    let completed: u64 = store
        .stats(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::SystemTime::UNIX_EPOCH,
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|c| c.state == SagaState::Completed)
        .map(|c| c.count)
        .sum();
    if completed as usize != n {
        return Err(format!("{completed} of {n} recovered sagas completed"));
    }
    Ok(elapsed)
}
