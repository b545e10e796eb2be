//! `--shape wait`: sagas of three steps whose second waits for a signal. Each saga runs its
//! first step and is left waiting, held by no runner; the load generator then signals it,
//! and the runner wakes it (the store's wake-up: `NOTIFY` on PostgreSQL, in-process on
//! SQLite and in memory), claims it and runs the rest. A saga's time runs from its start
//! to its end as stored, signal and wake-up included; nothing sleeps in between.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use saga_runtime::prelude::*;
use tokio::sync::oneshot;

use super::{Args, LoadInput, Report, body, drive, fails};

/// The waiting saga; its last step tells the load generator that it ran.
pub struct Wait3 {
    last_ran: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Wait3 {
    fn tell(&self, saga_id: &str) {
        let waiter = self
            .last_ran
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(saga_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    fn expect(&self, saga_id: &str) -> oneshot::Receiver<()> {
        let (tell, told) = oneshot::channel();
        self.last_ran
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(saga_id.to_owned(), tell);
        told
    }
}

#[saga(name = "wait3", input = LoadInput)]
impl Wait3 {
    #[step(timeout = 10, retries = 1, compensate = "u1")]
    async fn s1(&self, input: &LoadInput) -> Result<u64, StepError> {
        body(input, 1, false).await
    }

    async fn u1(&self, input: &LoadInput) -> Result<(), StepError> {
        let _ = input;
        Ok(())
    }

    /// Waits up to a minute for the signal `go`.
    #[step(timeout = 60, retries = 1, compensate = "u2")]
    async fn s2(&self, input: &LoadInput, #[signal] go: u64) -> Result<u64, StepError> {
        let _ = go;
        body(input, 2, false).await
    }

    async fn u2(&self, input: &LoadInput) -> Result<(), StepError> {
        let _ = input;
        Ok(())
    }

    #[step(timeout = 10, retries = 1)]
    async fn s3(&self, input: &LoadInput, ctx: &StepContext) -> Result<u64, StepError> {
        let result = body(input, 3, true).await;
        self.tell(ctx.saga_id());
        result
    }
}

/// How often a saga's row is read once its last step has run, until its end is stored.
const POLL: Duration = Duration::from_micros(200);

/// Runs `--sagas` waiting sagas, `--concurrency` at once, through `orchestrator` (whose
/// runner must wake sagas: recovery on).
pub(crate) async fn run(
    args: &Args,
    orchestrator: &Orchestrator,
    config: SagaConfig,
) -> Result<Report, String> {
    if args.steps != 3 {
        return Err(format!(
            "--shape wait has 3 steps (the second waits for a signal), not {}",
            args.steps
        ));
    }
    let executor = orchestrator.register(Wait3 {
        last_ran: Mutex::new(HashMap::new()),
    });
    let (fail_rate, sleep_ms) = (args.fail_rate, args.step_ms);
    drive(args, move |i| {
        let (executor, config) = (executor.clone(), config.clone());
        async move {
            let id = format!("load-{i}");
            let input = LoadInput {
                n: i as u64,
                fail: fails(fail_rate, i),
                sleep_ms,
            };
            let told = executor.saga().expect(&id);
            let outcome = executor
                .execute_with_id(id.clone(), &config, input)
                .await
                .map_err(|e| format!("saga {i}: {e}"))?;
            if outcome.state() != SagaState::Waiting {
                return Err(format!(
                    "saga {i} is {} after its start, not waiting",
                    outcome.state()
                ));
            }
            executor
                .signal(&id, Wait3Signal::Go(i as u64))
                .await
                .map_err(|e| format!("saga {i}: signal: {e}"))?;
            tokio::time::timeout(Duration::from_secs(60), told)
                .await
                .map_err(|_| format!("saga {i}: not woken within 60 s of its signal"))?
                .map_err(|_| format!("saga {i}: its last step never ran"))?;
            let ended = tokio::time::timeout(Duration::from_secs(60), executor.ended(&id, POLL))
                .await
                .map_err(|_| format!("saga {i}: no end stored within 60 s"))?
                .map_err(|e| format!("saga {i}: {e}"))?;
            match ended.state() {
                SagaState::Completed => Ok(true),
                SagaState::Failed => Ok(false),
                other => Err(format!("saga {i} ended {other}")),
            }
        }
    })
    .await
}
