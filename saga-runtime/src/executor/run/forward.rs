//! Going forward: one attempt of the current step, and what follows it (the next step,
//! a retry, or giving up: compensation or parking).

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::context::StepContext;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StepError};
use crate::executor::outcome::Failure;
use crate::status::{RunStatus, StepStatus};

use super::attempt::{AttemptError, run_attempt};
use super::state::Run;
use super::wait::Why;
use super::write::Draft;

impl<S: Saga> Run<'_, S> {
    /// One attempt of the current step.
    pub(super) async fn forward(&mut self) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(self.step) else {
            return Err(self.corrupt(format!("no step at index {}", self.step)));
        };
        if spec.signal.is_some() || self.status(self.step).run == RunStatus::NotStarted {
            // A new saga whose first step waits first (a delay, a signal), or an attempt
            // whose signal has not been taken (it was interrupted before it began).
            let attempts = self.status(self.step).attempt.saturating_sub(1);
            // Boxed, as the transitions after an attempt are: a wait's (and a refused
            // wait's compensation's) state would otherwise be reserved in every saga's
            // future for as long as its steps run.
            if let Ok(draft) = Box::pin(self.must_wait(self.step, attempts, Vec::new())).await? {
                return Box::pin(self.wait_or_compensate(draft, self.step, false, Vec::new()))
                    .await;
            }
        }
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        let attempt = self.attempt;
        let step_context = StepContext::new(
            self.id.clone(),
            spec.name,
            false,
            attempt,
            Instant::now() + policy.timeout,
            self.user_id.clone(),
        );
        let step_context = match self.taken(self.step) {
            Some(payload) => step_context.with_signal(payload.clone()),
            None => step_context,
        };
        let began = self.metrics.is_enabled().then(Instant::now);
        let span = tracing::info_span!("saga.step", step = spec.name, attempt);
        let result = run_attempt(
            self.saga
                .run_step(self.step, &self.ctx, None, &step_context),
            policy.timeout,
            step_context.deadline(),
        )
        .instrument(span)
        .await;
        if let Some(began) = began {
            self.metrics.step_attempt(self.step, began.elapsed());
        }
        match result {
            // Boxed: while a step runs, only the attempt's state is held, not the (larger)
            // state of the transitions that follow it.
            Ok(output) if spec.child => Box::pin(self.start_child(spec, &policy, output)).await,
            Ok(output) => {
                let step = self.step;
                if !S::store_output(self.ctx_mut()?, step, output) {
                    return Err(self.corrupt(format!(
                        "step `{}` returned an output of another type than its definition's",
                        spec.name
                    )));
                }
                Box::pin(self.step_completed(spec, Vec::new())).await
            }
            Err(failed) => Box::pin(self.step_failed(spec, &policy, failed)).await,
        }
    }

    /// The current attempt of step `spec` completed (its output is in the context): write
    /// that, with `events` before it, and go on.
    pub(super) async fn step_completed(
        &mut self,
        spec: &'static StepSpec,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        tracing::info!(step = spec.name, attempt = self.attempt, "step completed");
        let step = self.step;
        let context = match self.encode(None) {
            Ok(context) => context,
            Err(error) => {
                // The step ran but its output cannot be checkpointed: treat its outcome as
                // unknown, as after a timeout.
                S::clear_output(self.ctx_mut()?, step);
                let failed = AttemptError {
                    error: StepError::permanent(error.to_string()).with_type("checkpoint"),
                    timed_out: true,
                };
                let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
                return Box::pin(self.step_failed(spec, &policy, failed)).await;
            }
        };
        self.ctx_dirty = true;
        let attempt = self.attempt;
        self.event(&mut events, || {
            NewEvent::now(EventType::StepCompleted)
                .step(spec.name)
                .attempt(attempt)
        });
        let done = StepStatus::completed(attempt, self.next_order());
        let next = step + 1;
        if next >= Self::steps().len() {
            self.event(&mut events, || NewEvent::now(EventType::SagaCompleted));
            let mut draft =
                Draft::new(SagaState::Completed, step, attempt, events).status(step, done);
            draft.context = Some(context);
            draft.progress = true;
            self.write(draft).await?;
            self.state = SagaState::Completed;
            return Ok(());
        }
        let refused = match self.must_wait(next, 0, events).await? {
            Ok(draft) => {
                let mut draft = draft.status(step, done);
                draft.context = Some(context);
                draft.progress = true;
                self.wait(draft).await?
            }
            Err(mut events) => {
                let next_name = Self::steps().get(next).map_or("", StepSpec::name);
                self.event(&mut events, || {
                    NewEvent::now(EventType::StepStarted)
                        .step(next_name)
                        .attempt(1)
                });
                let mut draft = Draft::new(SagaState::Running, next, 1, events)
                    .status(step, done)
                    .status(next, StepStatus::running(1));
                draft.context = Some(context);
                draft.progress = true;
                self.write_forward(draft).await?
            }
        };
        match refused {
            None if self.state == SagaState::Waiting => Ok(()),
            None => {
                self.step = next;
                self.attempt = 1;
                Ok(())
            }
            Some(reason) => {
                // The step's completion is written with the compensation that follows.
                if let Some(status) = self.steps.get_mut(step) {
                    *status = done;
                }
                let mut events = Vec::new();
                self.event(&mut events, || {
                    NewEvent::now(EventType::StepCompleted)
                        .step(spec.name)
                        .attempt(attempt)
                });
                self.cancelled(reason, next, false, events).await
            }
        }
    }

    pub(super) async fn step_failed(
        &mut self,
        spec: &'static StepSpec,
        policy: &Policy,
        failed: AttemptError,
    ) -> Result<(), SagaError> {
        let AttemptError { error, timed_out } = failed;
        let attempt = self.attempt;
        tracing::info!(step = spec.name, attempt, timed_out, error = %error, "step attempt failed");
        self.metrics.step_failed(self.step, error.error_type());
        let mut events = Vec::new();
        self.event(&mut events, || {
            let kind = if timed_out {
                EventType::StepTimedOut
            } else {
                EventType::StepFailed
            };
            NewEvent::now(kind)
                .step(spec.name)
                .attempt(attempt)
                .error(error.message())
                .details(json_object(&[("error_type", error.error_type())]))
        });
        let pivot_passed = self.pivot_passed();
        let exhausted = attempt >= policy.max_attempts;
        if error.is_permanent() || (exhausted && !pivot_passed) {
            return self
                .give_up(self.step, error.message().to_owned(), timed_out, events)
                .await;
        }

        let delay = error
            .retry_after_delay()
            .unwrap_or_else(|| policy.delay(attempt, &mut self.rng));
        self.metrics.step_retried(self.step);
        tracing::info!(
            step = spec.name,
            next_attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            "retrying step"
        );
        self.event(&mut events, || {
            NewEvent::now(EventType::StepRetrying)
                .step(spec.name)
                .attempt(attempt + 1)
                .details(format!("{{\"delay_ms\":{}}}", delay.as_millis()))
        });
        if delay > self.inner.settings.lease {
            // Longer than a lease: wait durably rather than hold the saga meanwhile.
            let failure_events = events.clone();
            let draft = self.wait_draft(self.step, attempt, delay, Why::Retry, events);
            return self
                .wait_or_compensate(draft, self.step, timed_out, failure_events)
                .await;
        }
        let failure_events = events.clone();
        let retrying = StepStatus {
            run: RunStatus::Retrying,
            ..self.status(self.step)
        };
        let draft =
            Draft::new(SagaState::Running, self.step, attempt, events).status(self.step, retrying);
        if let Some(reason) = self.write_forward(draft).await? {
            return self
                .cancelled(reason, self.step, timed_out, failure_events)
                .await;
        }
        tokio::time::sleep(delay).await;
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::StepStarted)
                .step(spec.name)
                .attempt(attempt + 1)
        });
        let draft = Draft::new(SagaState::Running, self.step, attempt + 1, events)
            .status(self.step, StepStatus::running(attempt + 1));
        if let Some(reason) = self.write_forward(draft).await? {
            return self
                .cancelled(reason, self.step, timed_out, Vec::new())
                .await;
        }
        self.attempt = attempt + 1;
        Ok(())
    }

    /// Step `index` failed for good: compensate, or park if that is impossible.
    pub(super) async fn give_up(
        &mut self,
        index: usize,
        message: String,
        unknown: bool,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(index) else {
            return Err(self.corrupt(format!("no step at index {index}")));
        };
        self.end_step(index, unknown);
        // The failure names the step; its message does not repeat it.
        let park_reason = if self.pivot_passed() {
            Some(format!(
                "failed for good after the pivot; the saga cannot compensate: {message}"
            ))
        } else if unknown && spec.pivot {
            Some(format!(
                "the pivot's outcome is unknown (its last attempt did not finish), so the saga can neither compensate nor go on: {message}"
            ))
        } else {
            None
        };
        if let Some(reason) = park_reason {
            self.failure = Some(Failure::new(Some(spec.name), reason.clone()));
            return self.park(reason, events).await;
        }
        self.failure = Some(Failure::new(Some(spec.name), message));
        self.compensate_from(index, events).await
    }

    /// A cancellation was observed before step `next` started.
    pub(super) async fn cancelled(
        &mut self,
        reason: String,
        next: usize,
        unknown: bool,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        tracing::info!(%reason, "cancellation observed");
        self.event(&mut events, || {
            NewEvent::now(EventType::SagaCancelled).error(reason.clone())
        });
        self.failure = Some(Failure::new(None, format!("cancelled: {reason}")));
        // Only a step that had an attempt under way can have an unknown outcome.
        let status = self.status(next);
        let unknown = unknown
            && (matches!(status.run, RunStatus::Running | RunStatus::Retrying)
                || (status.run == RunStatus::Waiting && status.attempt > 0));
        self.end_step(next, unknown);
        self.compensate_from(next, events).await
    }

    /// Stops the saga for a person to look at.
    pub(super) async fn park(
        &mut self,
        reason: String,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        tracing::warn!(%reason, "saga parked");
        let step = self.failure.as_ref().and_then(|f| f.step.clone());
        self.event(&mut events, || {
            let event = NewEvent::now(EventType::SagaParked).error(reason.clone());
            match step {
                Some(step) => event.step(step),
                None => event,
            }
        });
        if self.failure.is_none() {
            self.failure = Some(Failure::new(None, reason));
        }
        let mut draft = Draft::new(SagaState::Parked, self.step, self.attempt, events);
        draft.parked_from = Some(self.state);
        self.write(draft).await?;
        self.metrics.parked();
        self.state = SagaState::Parked;
        Ok(())
    }
}

/// `{"key":"value",..}` with escaped strings.
pub(super) fn json_object(pairs: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect();
    serde_json::Value::Object(map).to_string()
}
