//! The state machine that drives one saga: attempts, retries, compensation, pivots,
//! cancellation, parking. Every transition is written (fenced) before the next attempt starts.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use super::active::ActiveGuard;
use super::codec::encode_context;
use super::{Inner, save_retrying};
use crate::audit::{AuditHeader, EventType, NewEvent};
use crate::backoff::{Policy, Rng};
use crate::config::SagaConfig;
use crate::context::StepContext;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StepError, StoreError};
use crate::executor::{Failure, Outcome};
use crate::metrics::TypeMetrics;
use crate::status::{CompensationStatus, RunStatus, StepStatus};
use crate::store::{Checkpoint, Saved};

/// One saga being executed by this runner.
pub(crate) struct Run<'a, S: Saga> {
    pub(crate) inner: &'a Inner,
    pub(crate) saga: &'a S,
    pub(crate) guard: ActiveGuard,
    pub(crate) id: Arc<str>,
    pub(crate) header: Arc<AuditHeader>,
    pub(crate) config: SagaConfig,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) metrics: TypeMetrics,
    pub(crate) ctx: S::Context,
    /// The context changed since the last written checkpoint.
    pub(crate) ctx_dirty: bool,
    /// What each step has done: the last written checkpoint's statuses, plus changes
    /// decided since that the next write carries.
    pub(crate) steps: Vec<StepStatus>,
    pub(crate) state: SagaState,
    pub(crate) step: usize,
    pub(crate) attempt: u32,
    pub(crate) version: i64,
    pub(crate) failure: Option<Failure>,
    pub(crate) rng: Rng,
}

/// A transition to write.
struct Draft {
    state: SagaState,
    step: usize,
    attempt: u32,
    /// Step statuses that change with it.
    changes: Changes,
    context: Option<String>,
    events: Vec<NewEvent>,
    progress: bool,
    parked_from: Option<SagaState>,
    unless_cancelled: bool,
    /// Clear a pending cancellation request: it was acted on, or cannot be.
    clear_cancel: bool,
}

impl Draft {
    fn new(state: SagaState, step: usize, attempt: u32, events: Vec<NewEvent>) -> Self {
        Draft {
            state,
            step,
            attempt,
            changes: Changes::default(),
            context: None,
            events,
            progress: false,
            parked_from: None,
            unless_cancelled: false,
            clear_cancel: state != SagaState::Running,
        }
    }

    /// The same draft, also setting step `index`'s status.
    fn status(mut self, index: usize, status: StepStatus) -> Self {
        self.changes.set(index, status);
        self
    }
}

/// The step statuses a transition changes: at most two (a step that completed and the
/// next that starts), kept inline so that a write allocates nothing for them.
#[derive(Clone, Copy, Default)]
struct Changes([Option<(usize, StepStatus)>; 2]);

impl Changes {
    fn set(&mut self, index: usize, status: StepStatus) {
        let slot = self
            .0
            .iter_mut()
            .find(|slot| slot.is_none_or(|(changed, _)| changed == index));
        match slot {
            Some(slot) => *slot = Some((index, status)),
            // Unreachable with two slots and at most two changes per transition; keep the
            // newest rather than lose it.
            None => self.0[1] = Some((index, status)),
        }
    }

    /// The new status of step `index`, if this changes it.
    fn get(&self, index: usize) -> Option<StepStatus> {
        self.0
            .iter()
            .flatten()
            .find(|(changed, _)| *changed == index)
            .map(|(_, status)| *status)
    }

    fn apply(&self, steps: &mut [StepStatus]) {
        for (index, status) in self.0.iter().flatten() {
            if let Some(slot) = steps.get_mut(*index) {
                *slot = *status;
            }
        }
    }
}

/// A failed attempt.
struct AttemptError {
    error: StepError,
    timed_out: bool,
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
    pub(crate) async fn drive(mut self) -> Result<Outcome<S>, SagaError> {
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
            loop {
                match self.state {
                    SagaState::Running => self.forward().await?,
                    SagaState::Compensating => self.backward().await?,
                    _ => break,
                }
            }
            self.metrics.saga_finished(self.state, started.elapsed());
            tracing::info!(state = %self.state, "saga ended");
            Ok(self.outcome())
        }
        .instrument(span)
        .await
    }

    fn outcome(self) -> Outcome<S> {
        Outcome {
            saga_id: self.id.to_string(),
            state: self.state,
            step_index: self.step,
            context: self.ctx,
            failure: self.failure,
            existing: false,
        }
    }

    fn steps() -> &'static [StepSpec] {
        S::DEFINITION.steps()
    }

    fn event(&self, events: &mut Vec<NewEvent>, make: impl FnOnce() -> NewEvent) {
        if self.config.enable_audit_log {
            events.push(make());
        }
    }

    /// Whether a pivot step has completed: from then on the saga only goes forward.
    fn pivot_passed(&self) -> bool {
        self.pivot_passed_with(&Changes::default())
    }

    /// Whether a pivot step has completed once `changes` are written.
    fn pivot_passed_with(&self, changes: &Changes) -> bool {
        Self::steps().iter().enumerate().any(|(index, spec)| {
            let status = changes.get(index).unwrap_or_else(|| self.status(index));
            spec.pivot && status.run == RunStatus::Completed
        })
    }

    /// The completed step, not yet undone, that completed last among those that have a
    /// compensation.
    fn next_compensable(&self) -> Option<usize> {
        Self::steps()
            .iter()
            .zip(&self.steps)
            .enumerate()
            .filter(|(_, (spec, status))| {
                spec.compensation.is_some()
                    && status.run == RunStatus::Completed
                    && status.compensation == CompensationStatus::None
            })
            .max_by_key(|(_, (_, status))| status.order)
            .map(|(index, _)| index)
    }

    /// The status of step `index`.
    fn status(&self, index: usize) -> StepStatus {
        self.steps.get(index).copied().unwrap_or_default()
    }

    /// Step `index`'s status once compensation attempt `attempt` has started.
    fn compensating(&self, index: usize, attempt: u32) -> StepStatus {
        StepStatus {
            compensation: CompensationStatus::Compensating,
            compensation_attempt: attempt,
            ..self.status(index)
        }
    }

    /// The order the next step to end takes.
    fn next_order(&self) -> u32 {
        self.steps
            .iter()
            .filter_map(|s| s.order)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    /// Records that step `index`, which had attempts under way, ended for good: with an
    /// unknown outcome (its effect may have happened) or failed (it had none). Carried by the
    /// next write.
    fn end_step(&mut self, index: usize, unknown: bool) {
        let order = self.next_order();
        if let Some(status) = self.steps.get_mut(index)
            && matches!(status.run, RunStatus::Running | RunStatus::Retrying)
        {
            if unknown {
                status.run = RunStatus::Unknown;
                status.order = Some(order);
            } else {
                status.run = RunStatus::Failed;
            }
        }
    }

    fn corrupt(&self, reason: String) -> SagaError {
        SagaError::Store(StoreError::Corrupt {
            saga_id: self.id.to_string(),
            reason,
        })
    }

    /// The context as JSON, within the size limit.
    pub(crate) fn encode(&self) -> Result<String, SagaError> {
        encode_context::<S>(&self.id, &self.ctx, self.inner.settings.max_context_bytes)
    }

    /// Writes a transition. `Ok(Some(reason))`: refused because a cancellation is pending
    /// (only with `unless_cancelled`); nothing was written.
    async fn write(&mut self, mut draft: Draft) -> Result<Option<String>, SagaError> {
        if draft.context.is_none() && self.ctx_dirty {
            draft.context = Some(self.encode()?);
        }
        let wrote_context = draft.context.is_some();
        let mut steps = self.steps.clone();
        draft.changes.apply(&mut steps);
        let (error, failed_step) = match &self.failure {
            Some(f) => (Some(f.message.clone()), f.step.clone()),
            None => (None, None),
        };
        let checkpoint = Checkpoint {
            saga_id: self.id.clone(),
            owner: self.inner.runner_id.clone(),
            expected_version: self.version,
            state: draft.state,
            step_index: u32::try_from(draft.step).unwrap_or(u32::MAX),
            current_step: Self::steps().get(draft.step).map(StepSpec::name),
            attempt: draft.attempt,
            steps,
            context: draft.context,
            error,
            failed_step,
            progress: draft.progress,
            parked_from: draft.parked_from,
            unless_cancelled: draft.unless_cancelled,
            clear_cancel: draft.clear_cancel,
            lease: self.inner.settings.lease,
            header: self.header.clone(),
            events: draft.events,
        };
        let outcome = if self.inner.transient_store {
            // Boxed: the retry loop's state (a copy of the checkpoint, a timer) would
            // otherwise be part of every saga's future, even while it waits in a step.
            Box::pin(save_retrying(self.inner, checkpoint)).await
        } else {
            self.inner.store.save(checkpoint).await
        };
        match outcome {
            Ok(Saved::Written { version }) => {
                self.version = version;
                draft.changes.apply(&mut self.steps);
                if wrote_context {
                    self.ctx_dirty = false;
                }
                self.guard.touch();
                Ok(None)
            }
            Ok(Saved::Cancelled { reason }) => Ok(Some(reason)),
            Err(StoreError::Fenced { .. }) => {
                tracing::warn!("fenced off: another runner owns the saga now");
                Err(SagaError::LostOwnership {
                    saga_id: self.id.to_string(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Writes a transition that starts a forward attempt. A pending cancellation is acted
    /// on (`Some(reason)`, nothing written) unless a pivot has passed, in which case it is
    /// recorded as ignored and the same transition is written with it.
    async fn write_forward(&mut self, draft: Draft) -> Result<Option<String>, SagaError> {
        let pivot_passed = self.pivot_passed_with(&draft.changes);
        let again = pivot_passed.then(|| Draft {
            state: draft.state,
            step: draft.step,
            attempt: draft.attempt,
            changes: draft.changes,
            context: draft.context.clone(),
            events: draft.events.clone(),
            progress: draft.progress,
            parked_from: draft.parked_from,
            unless_cancelled: false,
            clear_cancel: true,
        });
        let draft = Draft {
            unless_cancelled: true,
            ..draft
        };
        let Some(reason) = self.write(draft).await? else {
            return Ok(None);
        };
        let Some(mut again) = again else {
            return Ok(Some(reason));
        };
        // Past the pivot the saga cannot compensate: acknowledge, and go on in the same write.
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::CancelIgnored)
                .error(format!("cancellation after the pivot is ignored: {reason}"))
        });
        events.append(&mut again.events);
        again.events = events;
        self.write(again).await?;
        Ok(None)
    }

    /// One attempt of the current step.
    async fn forward(&mut self) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(self.step) else {
            return Err(self.corrupt(format!("no step at index {}", self.step)));
        };
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
        let began = self.metrics.is_enabled().then(Instant::now);
        let span = tracing::info_span!("saga.step", step = spec.name, attempt);
        let result = run_attempt(
            self.saga.run_step(self.step, &mut self.ctx, &step_context),
            policy.timeout,
        )
        .instrument(span)
        .await;
        if let Some(began) = began {
            self.metrics.step_attempt(self.step, began.elapsed());
        }
        match result {
            // Boxed: while a step runs, only the attempt's state is held, not the (larger)
            // state of the transitions that follow it.
            Ok(()) => Box::pin(self.step_completed(spec)).await,
            Err(failed) => Box::pin(self.step_failed(spec, &policy, failed)).await,
        }
    }

    async fn step_completed(&mut self, spec: &'static StepSpec) -> Result<(), SagaError> {
        tracing::info!(step = spec.name, attempt = self.attempt, "step completed");
        let step = self.step;
        let context = match self.encode() {
            Ok(context) => context,
            Err(error) => {
                // The step ran but its output cannot be checkpointed: treat its outcome as
                // unknown, as after a timeout.
                S::clear_output(&mut self.ctx, step);
                let failed = AttemptError {
                    error: StepError::permanent(error.to_string()).with_type("checkpoint"),
                    timed_out: true,
                };
                let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
                return Box::pin(self.step_failed(spec, &policy, failed)).await;
            }
        };
        self.ctx_dirty = true;
        let mut events = Vec::new();
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
        match self.write_forward(draft).await? {
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

    async fn step_failed(
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
                .give_up(spec, error.message().to_owned(), timed_out, events)
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

    /// The current step failed for good: compensate, or park if that is impossible.
    pub(crate) async fn give_up(
        &mut self,
        spec: &'static StepSpec,
        message: String,
        unknown: bool,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        self.end_step(self.step, unknown);
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
        self.compensate_from(self.step, unknown, events).await
    }

    /// A cancellation was observed before step `next` started.
    async fn cancelled(
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
        let unknown = unknown
            && matches!(
                self.status(next).run,
                RunStatus::Running | RunStatus::Retrying
            );
        self.end_step(next, unknown);
        self.compensate_from(next, unknown, events).await
    }

    /// Starts compensation below step `failed` (and of `failed` itself when its outcome is
    /// unknown and its compensation does not need its output).
    async fn compensate_from(
        &mut self,
        failed: usize,
        unknown: bool,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let mut start = None;
        if unknown
            && let Some(spec) = Self::steps().get(failed)
            && let Some(comp) = &spec.compensation
        {
            if comp.uses_own_output {
                self.event(&mut events, || {
                    NewEvent::now(EventType::CompensationSkipped)
                        .step(spec.name)
                        .error(format!(
                            "the outcome of `{}` is unknown and its compensation `{}` needs its output",
                            spec.name, comp.name
                        ))
                });
                if let Some(status) = self.steps.get_mut(failed) {
                    status.compensation = CompensationStatus::Skipped;
                }
            } else {
                start = Some(failed);
            }
        }
        let start = start.or_else(|| self.next_compensable());
        match start {
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
                let message = self.failure.as_ref().map(|f| f.message.clone());
                self.event(&mut events, || {
                    let event = NewEvent::now(EventType::SagaFailed);
                    match message {
                        Some(message) => event.error(message),
                        None => event,
                    }
                });
                let attempt = self.attempt;
                self.write(Draft::new(SagaState::Failed, failed, attempt, events))
                    .await?;
                self.state = SagaState::Failed;
            }
        }
        Ok(())
    }

    /// Stops the saga for a person to look at.
    pub(crate) async fn park(
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

    /// One attempt of the current compensation.
    async fn backward(&mut self) -> Result<(), SagaError> {
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
        let result = run_attempt(
            self.saga.run_compensation(step, &self.ctx, &step_context),
            policy.timeout,
        )
        .instrument(span)
        .await;
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
                    let message = self.failure.as_ref().map(|f| f.message.clone());
                    self.event(&mut events, || {
                        let event = NewEvent::now(EventType::SagaFailed);
                        match message {
                            Some(message) => event.error(message),
                            None => event,
                        }
                    });
                    let mut draft = Draft::new(SagaState::Failed, step, attempt, events);
                    draft.progress = true;
                    self.write(draft).await?;
                    self.state = SagaState::Failed;
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
                    self.event(&mut events, || {
                        NewEvent::now(EventType::SagaCompensationFailed)
                            .step(spec.name)
                            .error(message.clone())
                    });
                    self.failure = Some(Failure::new(Some(spec.name), message));
                    self.write(Draft::new(
                        SagaState::CompensationFailed,
                        step,
                        attempt,
                        events,
                    ))
                    .await?;
                    self.state = SagaState::CompensationFailed;
                } else {
                    let delay = error
                        .retry_after_delay()
                        .unwrap_or_else(|| policy.delay(attempt, &mut self.rng));
                    self.write(Draft::new(SagaState::Compensating, step, attempt, events))
                        .await?;
                    tokio::time::sleep(delay).await;
                    let mut events = Vec::new();
                    self.event(&mut events, || {
                        NewEvent::now(EventType::CompensationStarted)
                            .step(spec.name)
                            .attempt(attempt + 1)
                    });
                    let compensating = self.compensating(step, attempt + 1);
                    self.write(
                        Draft::new(SagaState::Compensating, step, attempt + 1, events)
                            .status(step, compensating),
                    )
                    .await?;
                    self.attempt = attempt + 1;
                }
            }
        }
        Ok(())
    }

    /// After a claim: counts the interrupted attempt and continues.
    pub(crate) async fn resume_after_claim(
        &mut self,
        recovery_count: u32,
    ) -> Result<(), SagaError> {
        let mut events = Vec::new();
        let current = self.status(self.step);
        let interrupted = if self.state == SagaState::Compensating {
            current.compensation_attempt
        } else {
            current.attempt
        };
        self.attempt = interrupted;
        // An enqueued saga that nobody has started yet (created at version 1, claimed once)
        // is picked up, not recovered.
        let first_pickup = interrupted == 0 && self.version == 2;
        if first_pickup {
            self.metrics.saga_started();
        } else {
            self.metrics.recovered();
            self.event(&mut events, || {
                NewEvent::now(EventType::SagaRecovered)
                    .attempt(interrupted)
                    .details(format!("{{\"recovery_count\":{recovery_count}}}"))
            });
        }
        if recovery_count > self.inner.settings.max_recoveries {
            let reason = format!(
                "recovered {recovery_count} times without progress (limit {})",
                self.inner.settings.max_recoveries
            );
            return self.park(reason, events).await;
        }
        let step = self.step;
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let next = interrupted.saturating_add(1);
        match self.state {
            SagaState::Running => {
                let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
                if next > policy.max_attempts && !self.pivot_passed() {
                    let message = format!(
                        "attempt {interrupted} was interrupted (the runner stopped) and the retry budget of {} attempt(s) is spent",
                        policy.max_attempts
                    );
                    self.event(&mut events, || {
                        NewEvent::now(EventType::StepFailed)
                            .step(spec.name)
                            .attempt(interrupted)
                            .error(message.clone())
                    });
                    return self.give_up(spec, message, true, events).await;
                }
                self.event(&mut events, || {
                    NewEvent::now(EventType::StepStarted)
                        .step(spec.name)
                        .attempt(next)
                });
                let recovered_events = events.clone();
                let draft = Draft::new(SagaState::Running, step, next, events)
                    .status(step, StepStatus::running(next));
                if let Some(reason) = self.write_forward(draft).await? {
                    let mut events = recovered_events;
                    events.retain(|e| e.event_type == EventType::SagaRecovered);
                    return self.cancelled(reason, step, true, events).await;
                }
                self.attempt = next;
            }
            SagaState::Compensating => {
                let Some(comp) = &spec.compensation else {
                    return Err(self.corrupt(format!(
                        "compensating step `{}`, which has no compensation",
                        spec.name
                    )));
                };
                let policy = Policy::for_compensation(
                    spec,
                    comp,
                    &self.config,
                    &self.inner.settings.backoff,
                );
                if next > policy.max_attempts {
                    self.metrics.compensation_failed();
                    let message = format!(
                        "compensation `{}` was interrupted at attempt {interrupted} and its retry budget is spent",
                        comp.name
                    );
                    self.event(&mut events, || {
                        NewEvent::now(EventType::SagaCompensationFailed)
                            .step(spec.name)
                            .error(message.clone())
                    });
                    self.failure = Some(Failure::new(Some(spec.name), message));
                    self.write(Draft::new(
                        SagaState::CompensationFailed,
                        step,
                        interrupted,
                        events,
                    ))
                    .await?;
                    self.state = SagaState::CompensationFailed;
                    return Ok(());
                }
                self.event(&mut events, || {
                    NewEvent::now(EventType::CompensationStarted)
                        .step(spec.name)
                        .attempt(next)
                });
                let compensating = self.compensating(step, next);
                self.write(
                    Draft::new(SagaState::Compensating, step, next, events)
                        .status(step, compensating),
                )
                .await?;
                self.attempt = next;
            }
            _ => {}
        }
        Ok(())
    }
}

/// `{"key":"value",..}` with escaped strings.
fn json_object(pairs: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Runs one attempt under its timeout; a panic in user code is a permanent failure.
async fn run_attempt<F>(attempt: F, timeout: Duration) -> Result<(), AttemptError>
where
    F: Future<Output = Result<(), StepError>> + Unpin,
{
    match tokio::time::timeout(timeout, CatchUnwind(attempt)).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(AttemptError {
            error,
            timed_out: false,
        }),
        Ok(Err(panic)) => Err(AttemptError {
            error: StepError::permanent(format!("panicked: {panic}")).with_type("panic"),
            timed_out: false,
        }),
        Err(_elapsed) => Err(AttemptError {
            error: StepError::timeout(timeout),
            timed_out: true,
        }),
    }
}

/// Turns a panic while polling the inner future into an error value.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                Poll::Ready(Err(message))
            }
        }
    }
}
