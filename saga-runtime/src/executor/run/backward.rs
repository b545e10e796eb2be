//! Going backward through a chain: compensating completed steps, newest first, one attempt
//! at a time (a graph compensates in `fan_back`); and the transitions into and out of
//! compensation that both share.

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::context::StepContext;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::SagaError;
use crate::executor::outcome::Failure;
use crate::status::{CompensationStatus, RunStatus};

use super::attempt::{AttemptError, run_attempt};
use super::state::Run;
use super::write::Draft;

impl<S: Saga> Run<'_, S> {
    /// Starts compensation: of the completed steps, newest first, and of those whose outcome
    /// is unknown when their compensation does not need their output (those whose
    /// compensation does are skipped, and said so). `failed` is the step the saga failed at,
    /// or the one it would have started next.
    pub(super) async fn compensate_from(
        &mut self,
        failed: usize,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        for (index, spec) in Self::steps().iter().enumerate() {
            let status = self.status(index);
            if status.run != RunStatus::Unknown || status.compensation != CompensationStatus::None {
                continue;
            }
            let Some(comp) = spec.compensation.as_ref().filter(|c| c.uses_own_output) else {
                continue;
            };
            self.event(&mut events, || {
                NewEvent::now(EventType::CompensationSkipped)
                    .step(spec.name)
                    .error(format!(
                        "the outcome of `{}` is unknown and its compensation `{}` needs its output",
                        spec.name, comp.name
                    ))
            });
            if let Some(status) = self.steps.get_mut(index) {
                status.compensation = CompensationStatus::Skipped;
            }
        }
        match self.next_compensable() {
            Some(index) => {
                let name = Self::steps().get(index).map_or("", StepSpec::name);
                tracing::info!(step = name, "compensating");
                self.event(&mut events, || {
                    NewEvent::now(EventType::CompensationStarted)
                        .step(name)
                        .attempt(1)
                });
                let compensating = self.compensating(index, 1);
                self.write(
                    Draft::new(SagaState::Compensating, index, 1, events)
                        .status(index, compensating),
                )
                .await?;
                self.state = SagaState::Compensating;
                self.step = index;
                self.attempt = 1;
            }
            None => {
                let attempt = self.attempt;
                self.compensated(failed, attempt, events, false).await?;
            }
        }
        Ok(())
    }

    /// After a claim of a completed saga someone asked to undo (`saga_undone`): compensates
    /// its completed steps, newest first, so that it ends `failed` with the error
    /// `undone: <reason>`; past a pivot it refuses, and the saga stays `completed`.
    pub(super) async fn begin_undo(&mut self) -> Result<(), SagaError> {
        let last = Self::steps().len().saturating_sub(1);
        let pivot = Self::steps()
            .iter()
            .zip(&self.steps)
            .find(|(spec, status)| spec.pivot && status.run == RunStatus::Completed)
            .map(|(spec, _)| spec.name);
        if let Some(pivot) = pivot {
            tracing::warn!(pivot, "undo refused: the saga passed its pivot");
            let mut events = Vec::new();
            self.event(&mut events, || {
                NewEvent::now(EventType::CancelIgnored).error(format!(
                    "undo refused: the saga passed its pivot `{pivot}`, whose effects cannot be undone"
                ))
            });
            self.failure = None;
            let attempt = self.status(last).attempt;
            self.write(Draft::new(SagaState::Completed, last, attempt, events))
                .await?;
            self.state = SagaState::Completed;
            return Ok(());
        }
        tracing::info!("undoing a completed saga");
        self.compensate_from(last, Vec::new()).await
    }

    /// One attempt of the current compensation.
    pub(super) async fn backward(&mut self) -> Result<(), SagaError> {
        let step = self.step;
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let Some(comp) = &spec.compensation else {
            return Err(self.corrupt(format!(
                "compensating step `{}`, which has no compensation",
                spec.name
            )));
        };
        let policy =
            Policy::for_compensation(spec, comp, &self.config, &self.inner.settings.backoff);
        let attempt = self.attempt;
        let step_context = StepContext::new(
            self.id.clone(),
            spec.name,
            true,
            attempt,
            Instant::now() + policy.timeout,
            self.user_id.clone(),
        );
        let span = tracing::info_span!(
            "saga.compensation",
            step = spec.name,
            compensation = comp.name,
            attempt
        );
        let result = if spec.child {
            run_attempt(
                Box::pin(super::child::settle_child(
                    self.inner,
                    self.id.clone(),
                    spec.name,
                    self.failure.as_ref().map(ToString::to_string),
                )),
                policy.timeout,
                step_context.deadline(),
            )
            .instrument(span)
            .await
        } else {
            run_attempt(
                self.saga.run_compensation(step, &self.ctx, &step_context),
                policy.timeout,
                step_context.deadline(),
            )
            .instrument(span)
            .await
        };
        let mut events = Vec::new();
        match result {
            Ok(()) => {
                tracing::info!(
                    step = spec.name,
                    compensation = comp.name,
                    "compensation executed"
                );
                self.metrics.compensation_executed();
                self.event(&mut events, || {
                    NewEvent::now(EventType::CompensationExecuted)
                        .step(spec.name)
                        .attempt(attempt)
                });
                if let Some(status) = self.steps.get_mut(step) {
                    status.compensation = CompensationStatus::Compensated;
                }
                if let Some(next) = self.next_compensable() {
                    let name = Self::steps().get(next).map_or("", StepSpec::name);
                    self.event(&mut events, || {
                        NewEvent::now(EventType::CompensationStarted)
                            .step(name)
                            .attempt(1)
                    });
                    let compensating = self.compensating(next, 1);
                    let mut draft = Draft::new(SagaState::Compensating, next, 1, events)
                        .status(next, compensating);
                    draft.progress = true;
                    self.write(draft).await?;
                    self.step = next;
                    self.attempt = 1;
                } else {
                    self.compensated(step, attempt, events, true).await?;
                }
            }
            Err(AttemptError { error, timed_out }) => {
                tracing::warn!(step = spec.name, attempt, timed_out, error = %error, "compensation attempt failed");
                self.event(&mut events, || {
                    NewEvent::now(EventType::CompensationFailed)
                        .step(spec.name)
                        .attempt(attempt)
                        .error(error.message())
                });
                if error.is_permanent() || attempt >= policy.max_attempts {
                    self.metrics.compensation_failed();
                    let message = format!(
                        "compensation `{}` gave up after {attempt} attempt(s): {}",
                        comp.name,
                        error.message()
                    );
                    self.compensation_gave_up(step, attempt, message, events)
                        .await?;
                } else {
                    let delay = error
                        .retry_after_delay()
                        .unwrap_or_else(|| policy.delay(attempt, &mut self.rng));
                    self.retry_compensation(spec.name, delay, events).await?;
                }
            }
        }
        Ok(())
    }

    /// Records the failed attempt of the current compensation, waits `delay`, and starts
    /// the next attempt.
    async fn retry_compensation(
        &mut self,
        name: &'static str,
        delay: std::time::Duration,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let (step, attempt) = (self.step, self.attempt);
        self.write(Draft::new(SagaState::Compensating, step, attempt, events))
            .await?;
        tokio::time::sleep(delay).await;
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::CompensationStarted)
                .step(name)
                .attempt(attempt + 1)
        });
        let compensating = self.compensating(step, attempt + 1);
        self.write(
            Draft::new(SagaState::Compensating, step, attempt + 1, events)
                .status(step, compensating),
        )
        .await?;
        self.attempt = attempt + 1;
        Ok(())
    }

    /// Ends the saga `failed`: every compensation that could run has run. `progress`: the
    /// write follows a compensation that completed.
    pub(super) async fn compensated(
        &mut self,
        step: usize,
        attempt: u32,
        mut events: Vec<NewEvent>,
        progress: bool,
    ) -> Result<(), SagaError> {
        let message = self.failure.as_ref().map(|f| f.message.clone());
        self.event(&mut events, || {
            let event = NewEvent::now(EventType::SagaFailed);
            match message {
                Some(message) => event.error(message),
                None => event,
            }
        });
        let mut draft = Draft::new(SagaState::Failed, step, attempt, events);
        draft.progress = progress;
        self.write(draft).await?;
        self.state = SagaState::Failed;
        Ok(())
    }

    /// Ends the saga `compensation_failed`: the compensation of step `step` gave up at
    /// attempt `attempt`, for `message`.
    pub(super) async fn compensation_gave_up(
        &mut self,
        step: usize,
        attempt: u32,
        message: String,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        self.event(&mut events, || {
            NewEvent::now(EventType::SagaCompensationFailed)
                .step(name)
                .error(message.clone())
        });
        self.failure = Some(Failure::new(Some(name), message));
        self.write(Draft::new(
            SagaState::CompensationFailed,
            step,
            attempt,
            events,
        ))
        .await?;
        self.state = SagaState::CompensationFailed;
        Ok(())
    }
}
