//! Going forward through a graph (DECISIONS.md, "Parallel steps"): every step whose dependencies completed
//! starts at once, each attempt under its own timeout and retry policy. The attempts report
//! back to this one task, which writes every transition in turn, so that a saga's
//! checkpoints stay one fenced sequence (group-committed with other sagas as usual).
//!
//! When a step fails for good, or a cancellation is seen, nothing new starts; attempts
//! under way finish and are recorded; then the saga compensates (`fan_back`), or parks.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::context::StepContext;
use crate::definition::{Saga, SagaState};
use crate::error::{SagaError, StepError};
use crate::executor::outcome::Failure;
use crate::outputs::StepOutput;
use crate::status::{RunStatus, StepStatus, WaitFor};

use super::attempt::{AttemptError, run_attempt};
use super::branches::{Event, Fan, Kind, Stop, pumping};
use super::fan_wait::{Begun, POLL};
use super::state::Run;
use super::write::Draft;

impl<'a, S: Saga> Run<'a, S> {
    /// Runs the saga's steps, as many at once as the graph allows, until every step has
    /// completed or the saga stops going forward.
    pub(super) async fn fan(&mut self) -> Result<(), SagaError> {
        let count = Self::steps().len();
        let mut fan = Fan::new(count);
        if let Some(carried) = self.carried.take() {
            fan.carried = *carried;
        }
        // Attempts already recorded as started: a new saga's first step, or the steps a
        // recovery restarted.
        for step in 0..count {
            if self.status(step).run == RunStatus::Running {
                self.retake_signal(step).await?;
                self.launch(&mut fan, step);
            }
        }
        // Steps that wait: those that are due go on, the others wait on.
        for step in 0..count {
            if self.status(step).run == RunStatus::Waiting && fan.stop.is_none() {
                self.check(&mut fan, step).await?;
            }
        }
        while self.state == SagaState::Running {
            if fan.stop.is_none() {
                self.start_ready(&mut fan).await?;
            }
            if fan.only_waits() {
                self.sleep(&mut fan).await?;
                continue;
            }
            match fan.next().await {
                Some(Event::Attempted {
                    step,
                    result,
                    elapsed,
                }) => {
                    if let Some(elapsed) = elapsed {
                        self.metrics.step_attempt(step, elapsed);
                    }
                    let child = Self::steps().get(step).is_some_and(|spec| spec.child);
                    match result {
                        Ok(output) if child => self.child_begun(&mut fan, step, output).await?,
                        Ok(output) => self.fan_completed(&mut fan, step, output).await?,
                        Err(failed) => self.fan_failed(&mut fan, step, failed).await?,
                    }
                }
                Some(Event::Due { step }) => self.fan_due(&mut fan, step).await?,
                Some(Event::Check { step }) => self.check(&mut fan, step).await?,
                Some(Event::Undone { step, .. } | Event::UndoDue { step }) => {
                    return Err(self.corrupt(format!(
                        "the compensation of step {step} reported while the saga went forward"
                    )));
                }
                None if fan.stop.is_some() => break,
                None => {
                    return Err(self.corrupt(
                        "no step can start and none is running, but the saga has not completed"
                            .to_owned(),
                    ));
                }
            }
        }
        // No attempt shares the context any more: move the outputs into it.
        let Fan {
            outputs,
            stop,
            carried,
            ..
        } = fan;
        let Some(mut outputs) = Arc::into_inner(outputs) else {
            return Err(self.corrupt("step outputs are still shared".to_owned()));
        };
        let ctx = self.ctx_mut()?;
        let mismatched = outputs
            .drain()
            .find_map(|(step, output)| (!S::store_output(ctx, step, output)).then_some(step));
        if let Some(step) = mismatched {
            return Err(self.corrupt(format!(
                "step {step} returned an output of another type than its definition's"
            )));
        }
        if self.state == SagaState::Waiting {
            return self.slept().await;
        }
        if self.state != SagaState::Running {
            // Every step completed (a cancellation seen meanwhile came too late).
            return Ok(());
        }
        match stop {
            None => Ok(()),
            Some(Stop::Failed {
                step,
                message,
                unknown,
            }) => self.give_up(step, message, unknown, carried).await,
            Some(Stop::Cancelled { reason }) => {
                let latest = self.step;
                self.cancelled(reason, latest, false, carried).await
            }
            Some(Stop::GaveUp { step, .. }) => Err(self.corrupt(format!(
                "the compensation of step {step} gave up while the saga went forward"
            ))),
        }
    }

    /// Starts every step whose dependencies have completed, in one write.
    async fn start_ready(&mut self, fan: &mut Fan<'a>) -> Result<(), SagaError> {
        let ready = self.ready(fan, None);
        if ready.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut fan.carried);
        let (draft, begun) = self
            .starting(fan, &ready, Draft::new(SagaState::Running, 0, 1, events))
            .await?;
        match pumping(fan, self.write_forward(draft)).await? {
            None => self.launch_all(fan, begun),
            Some(reason) => {
                self.forget_taken(&ready);
                self.halt(fan, Stop::Cancelled { reason });
            }
        }
        Ok(())
    }

    /// The steps not started whose dependencies have completed, counting `completing` as
    /// completed.
    fn ready(&self, fan: &Fan<'a>, completing: Option<usize>) -> Vec<usize> {
        let done =
            |dep: usize| completing == Some(dep) || self.status(dep).run == RunStatus::Completed;
        Self::steps()
            .iter()
            .enumerate()
            .filter(|&(step, spec)| {
                self.status(step).run == RunStatus::NotStarted
                    && !fan.is_busy(step)
                    && spec.depends_on().iter().all(|&dep| done(dep))
            })
            .map(|(step, _)| step)
            .collect()
    }

    /// `draft`, also beginning each of `ready` (at least one): its first attempt starts,
    /// or it waits first (for its delay, or for its signal when none has come).
    async fn starting(
        &mut self,
        fan: &mut Fan<'a>,
        ready: &[usize],
        mut draft: Draft,
    ) -> Result<(Draft, Vec<Begun>), SagaError> {
        let mut begun = Vec::with_capacity(ready.len());
        for &step in ready {
            let Some(spec) = Self::steps().get(step) else {
                continue;
            };
            let wait = match (spec.delay, spec.signal) {
                (Some(delay), _) => Some((WaitFor::Delay, delay)),
                (None, Some(signal)) if !pumping(fan, self.take_signal(step, signal)).await? => {
                    Some((WaitFor::Signal, self.timeout(spec)))
                }
                _ => None,
            };
            match wait {
                Some((what, left)) => {
                    draft = self.branch_waits(draft, step, 0, what, left);
                    begun.push(Begun::Waits(step, left));
                }
                None => {
                    self.event(&mut draft.events, || {
                        NewEvent::now(EventType::StepStarted)
                            .step(spec.name)
                            .attempt(1)
                    });
                    draft = draft.status(step, StepStatus::running(1));
                    draft.step = step;
                    draft.attempt = 1;
                    begun.push(Begun::Runs(step));
                }
            }
        }
        Ok((draft, begun))
    }

    /// After the write that began them: runs the first attempts, and the waits, of `begun`.
    fn launch_all(&mut self, fan: &mut Fan<'a>, begun: Vec<Begun>) {
        for begun in begun {
            match begun {
                Begun::Runs(step) => {
                    self.step = step;
                    self.attempt = 1;
                    self.launch(fan, step);
                }
                Begun::Waits(step, left) => fan.push_wait(step, left.min(POLL)),
            }
        }
    }

    /// Starts the attempt of `step` that its status records.
    fn launch(&self, fan: &mut Fan<'a>, step: usize) {
        let Some(spec) = Self::steps().get(step) else {
            return;
        };
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        let attempt = self.status(step).attempt;
        let saga: &'a S = self.saga;
        let ctx = Arc::clone(&self.ctx);
        let outputs = Arc::clone(&fan.outputs);
        let id = self.id.clone();
        let user_id = self.user_id.clone();
        let signal = self.taken(step).cloned();
        let timed = self.metrics.is_enabled();
        let span = tracing::info_span!("saga.step", step = spec.name, attempt);
        let future = async move {
            let step_context = StepContext::new(
                id,
                spec.name,
                false,
                attempt,
                Instant::now() + policy.timeout,
                user_id,
            );
            let step_context = match signal {
                Some(payload) => step_context.with_signal(payload),
                None => step_context,
            };
            let began = timed.then(Instant::now);
            let result = run_attempt(
                saga.run_step(step, &ctx, Some(&outputs), &step_context),
                policy.timeout,
                step_context.deadline(),
            )
            .await;
            Event::Attempted {
                step,
                result,
                elapsed: began.map(|began| began.elapsed()),
            }
        }
        .instrument(span);
        fan.push_attempt(step, future);
    }

    /// Stops starting steps: pending retries are dropped, and their steps end as their last
    /// attempt left them; so are attempts not yet begun (never polled), a first attempt
    /// going back to not started.
    pub(super) fn halt(&mut self, fan: &mut Fan<'a>, stop: Stop) {
        if fan.stop.is_none() {
            fan.stop = Some(stop);
        }
        let dropped: Vec<(usize, Kind)> = fan
            .branches
            .iter()
            .filter(|branch| branch.kind != Kind::Attempt || !branch.polled)
            .map(|branch| (branch.step, branch.kind))
            .collect();
        fan.branches
            .retain(|branch| branch.kind == Kind::Attempt && branch.polled);
        for (step, kind) in dropped {
            let status = self.status(step);
            let unknown = fan.timed_out.get(step).copied().unwrap_or(true);
            match kind {
                Kind::Attempt if status.attempt <= 1 => {
                    if let Some(slot) = self.steps.get_mut(step) {
                        *slot = StepStatus::not_started();
                    }
                    self.forget_taken(&[step]);
                }
                Kind::Wait => self.end_wait(step),
                _ => self.end_step(step, unknown),
            }
        }
    }

    pub(super) async fn fan_completed(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        output: StepOutput,
    ) -> Result<(), SagaError> {
        let name = Self::steps().get(step).map_or("", |spec| spec.name());
        let attempt = self.status(step).attempt;
        tracing::info!(step = name, attempt, "step completed");
        if !fan.outputs.set(step, output) {
            return Err(self.corrupt(format!("step `{name}` completed twice")));
        }
        let context = match self.encode(Some(&fan.outputs)) {
            Ok(context) => context,
            Err(error) => {
                // The step ran, but its output cannot be checkpointed: its outcome is
                // unknown, as after a timeout, and (its slot spent) it is not retried.
                fan.outputs.withdraw(step);
                let failed = AttemptError {
                    error: StepError::permanent(error.to_string()).with_type("checkpoint"),
                    timed_out: true,
                };
                return self.fan_failed(fan, step, failed).await;
            }
        };
        let mut events = std::mem::take(&mut fan.carried);
        self.event(&mut events, || {
            NewEvent::now(EventType::StepCompleted)
                .step(name)
                .attempt(attempt)
        });
        let done = StepStatus::completed(attempt, self.next_order());
        let all_done = (0..Self::steps().len())
            .all(|other| other == step || self.status(other).run == RunStatus::Completed);
        if all_done {
            self.event(&mut events, || NewEvent::now(EventType::SagaCompleted));
        }
        let state = if all_done {
            SagaState::Completed
        } else {
            SagaState::Running
        };
        let mut draft = Draft::new(state, self.step, self.attempt, events).status(step, done);
        draft.context = Some(context);
        draft.progress = true;
        // What the completion makes ready starts in the same write.
        let ready = if all_done || fan.stop.is_some() {
            Vec::new()
        } else {
            self.ready(fan, Some(step))
        };
        if ready.is_empty() {
            pumping(fan, self.write(draft)).await?;
            self.state = state;
            return Ok(());
        }
        let (draft, begun) = self.starting(fan, &ready, draft).await?;
        match pumping(fan, self.write_forward(draft)).await? {
            None => self.launch_all(fan, begun),
            Some(reason) => {
                self.forget_taken(&ready);
                // A cancellation is pending and nothing was written: the completion is
                // written alone, then the saga stops starting steps.
                let mut events = Vec::new();
                self.event(&mut events, || {
                    NewEvent::now(EventType::StepCompleted)
                        .step(name)
                        .attempt(attempt)
                });
                let mut draft =
                    Draft::new(state, self.step, self.attempt, events).status(step, done);
                draft.context = Some(self.encode(Some(&fan.outputs))?);
                draft.progress = true;
                pumping(fan, self.write(draft)).await?;
                self.halt(fan, Stop::Cancelled { reason });
            }
        }
        Ok(())
    }

    pub(super) async fn fan_failed(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        failed: AttemptError,
    ) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let AttemptError { error, timed_out } = failed;
        let attempt = self.status(step).attempt;
        tracing::info!(step = spec.name, attempt, timed_out, error = %error, "step attempt failed");
        if let Some(slot) = fan.timed_out.get_mut(step) {
            *slot = timed_out;
        }
        self.metrics.step_failed(step, error.error_type());
        let mut events = std::mem::take(&mut fan.carried);
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
                .details(super::forward::json_object(&[(
                    "error_type",
                    error.error_type(),
                )]))
        });
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        let exhausted = attempt >= policy.max_attempts;
        let for_good = error.is_permanent()
            || (exhausted && !self.pivot_passed())
            || error.error_type() == "checkpoint";
        if fan.stop.is_some() || for_good {
            // Recorded now; the other attempts under way finish before anything else.
            self.end_step(step, timed_out);
            if for_good {
                let message = error.message().to_owned();
                if self.failure.is_none() {
                    // Written with the step's end, so that a recovery knows why it stopped.
                    self.failure = Some(Failure::new(Some(spec.name), message.clone()));
                }
                self.halt(
                    fan,
                    Stop::Failed {
                        step,
                        message,
                        unknown: timed_out,
                    },
                );
            }
            let draft = Draft::new(SagaState::Running, self.step, self.attempt, events);
            pumping(fan, self.write(draft)).await?;
            return Ok(());
        }
        let delay = error
            .retry_after_delay()
            .unwrap_or_else(|| policy.delay(attempt, &mut self.rng));
        self.metrics.step_retried(step);
        tracing::info!(
            step = spec.name,
            next_attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            "retrying step"
        );
        let failure_events = events.clone();
        self.event(&mut events, || {
            NewEvent::now(EventType::StepRetrying)
                .step(spec.name)
                .attempt(attempt + 1)
                .details(format!("{{\"delay_ms\":{}}}", delay.as_millis()))
        });
        // Longer than a lease: the branch waits durably rather than hold the saga meanwhile.
        let durable = delay > self.inner.settings.lease;
        let draft = Draft::new(SagaState::Running, self.step, self.attempt, events);
        let draft = if durable {
            self.branch_waits(draft, step, attempt, WaitFor::Retry, delay)
        } else {
            let retrying = StepStatus {
                run: RunStatus::Retrying,
                ..self.status(step)
            };
            draft.status(step, retrying)
        };
        if let Some(reason) = pumping(fan, self.write_forward(draft)).await? {
            // Nothing was written: the failure is written with the cancellation.
            self.end_step(step, timed_out);
            fan.carried = failure_events;
            self.halt(fan, Stop::Cancelled { reason });
            return Ok(());
        }
        if durable {
            fan.push_wait(step, delay);
        } else {
            fan.push_delay(step, delay, Event::Due { step });
        }
        Ok(())
    }

    /// The retry delay of `step` is over: its next attempt starts.
    pub(super) async fn fan_due(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
    ) -> Result<(), SagaError> {
        if fan.stop.is_some() {
            // The delay ended during the write that stopped the saga: no retry.
            if self.status(step).run == RunStatus::Waiting {
                self.end_wait(step);
            } else {
                let unknown = fan.timed_out.get(step).copied().unwrap_or(true);
                self.end_step(step, unknown);
            }
            return Ok(());
        }
        let name = Self::steps().get(step).map_or("", |spec| spec.name());
        let attempt = self.status(step).attempt + 1;
        let mut events = std::mem::take(&mut fan.carried);
        self.event(&mut events, || {
            NewEvent::now(EventType::StepStarted)
                .step(name)
                .attempt(attempt)
        });
        let draft = Draft::new(SagaState::Running, step, attempt, events)
            .status(step, StepStatus::running(attempt));
        match pumping(fan, self.write_forward(draft)).await? {
            None => {
                self.step = step;
                self.attempt = attempt;
                self.launch(fan, step);
            }
            Some(reason) => {
                if self.status(step).run == RunStatus::Waiting {
                    self.end_wait(step);
                } else {
                    let unknown = fan.timed_out.get(step).copied().unwrap_or(true);
                    self.end_step(step, unknown);
                }
                self.halt(fan, Stop::Cancelled { reason });
            }
        }
        Ok(())
    }
}
