//! The state machine that drives one saga: attempts, retries, compensation, pivots,
//! cancellation, parking. Every transition is written (fenced) before the next attempt
//! starts.
//!
//! `state` holds the run and what it knows of its steps; `write` makes transitions durable;
//! `attempt` runs one attempt under its timeout; `forward` and `backward` decide what follows
//! an attempt of a step or of a compensation in a chain; `fan` and `fan_back` do the same for
//! a saga with concurrent steps, whose attempts run side by side as `branches`; `resume`
//! takes a claimed saga over; `wait` puts a saga to wait durably and wakes it.

mod attempt;
mod backward;
mod branches;
mod child;
mod fan;
mod fan_back;
mod fan_wait;
mod forward;
mod resume;
mod state;
mod wait;
mod write;

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument as _;

pub(crate) use self::state::{Position, Run};
use crate::audit::AuditHeader;
use crate::definition::{Saga, SagaState};
use crate::error::SagaError;
use crate::executor::active::ActiveGuard;
use crate::executor::codec::{check_record, decode, decode_config};
use crate::executor::inner::Inner;
use crate::executor::outcome::{Failure, Outcome};
use crate::metrics::TypeMetrics;
use crate::store::SagaRecord;

/// Runs a saga this runner has just claimed to its end (or until it cannot write).
pub(crate) async fn resume_claimed<S: Saga>(
    inner: &Inner,
    saga: &S,
    guard: ActiveGuard,
    record: SagaRecord,
) -> Result<Outcome<S>, SagaError> {
    check_record::<S>(&record)?;
    let decoded = decode::<S>(&record, inner.settings.max_context_bytes)?;
    let config = decode_config(&record)?;
    let id: Arc<str> = record.saga_id.as_str().into();
    tracing::info!(saga_id = %id, state = %record.state, step = record.step_index, "recovering saga");
    let header = Arc::new(AuditHeader {
        saga_type: record.saga_type,
        user_id: record.user_id,
        ip_address: record.ip_address,
    });
    let position = Position {
        ctx: decoded.ctx,
        steps: decoded.steps,
        state: record.state,
        step: record.step_index as usize,
        attempt: record.attempt,
        version: record.version,
        failure: record.error.map(|message| Failure {
            step: record.failed_step,
            message,
        }),
    };
    let mut run = Run::new(inner, saga, guard, id, header, config, position);
    // Boxed, both: the recovered saga's future then holds one run, not the union of both.
    let woken = wait::Woken {
        signal_wait: record.waiting_for.is_some(),
        cancel: record.cancel_requested,
    };
    Box::pin(run.resume_after_claim(record.recovery_count, woken)).await?;
    Box::pin(run.drive()).await
}

/// Keeps `saga_running_current` right even if the task is dropped mid-saga.
struct RunningGauge(TypeMetrics);

impl Drop for RunningGauge {
    fn drop(&mut self) {
        self.0.running_dec();
    }
}

impl<S: Saga> Run<'_, S> {
    /// Runs the saga until it completes, fails, needs a person, or cannot write.
    ///
    /// Not an `async fn`: one would keep a second copy of `self` beside the one the block
    /// moves, in every saga's future for as long as the saga runs.
    pub(crate) fn drive(mut self) -> impl Future<Output = Result<Outcome<S>, SagaError>> {
        let span = tracing::info_span!(
            "saga",
            saga_id = %self.id,
            saga_type = %self.header.saga_type,
            definition = S::DEFINITION.name(),
        );
        async move {
            self.metrics.running_inc();
            let _gauge = RunningGauge(self.metrics.clone());
            let started = Instant::now();
            tracing::info!(state = %self.state, step = self.step, attempt = self.attempt, "saga running");
            // Read once: the definition is static, and this loop turns once per step.
            let chain = S::DEFINITION.is_chain();
            loop {
                match self.state {
                    SagaState::Running if chain => self.forward().await?,
                    // Boxed: only sagas with concurrent steps hold the state of a fan-out.
                    SagaState::Running => Box::pin(self.fan()).await?,
                    // Boxed: compensation is the rare path, and its larger state would
                    // otherwise be reserved in every saga's future.
                    SagaState::Compensating if chain => {
                        Box::pin(self.backward()).await?;
                    }
                    SagaState::Compensating => Box::pin(self.fan_back()).await?,
                    _ => break,
                }
            }
            if self.state == SagaState::Waiting {
                tracing::info!("saga waiting: no runner holds it until it is due");
            } else {
                self.metrics.saga_finished(self.state, started.elapsed());
                tracing::info!(state = %self.state, "saga ended");
            }
            self.outcome()
        }
        .instrument(span)
    }
}
