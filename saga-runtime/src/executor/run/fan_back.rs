//! Going backward through a graph (DECISIONS.md, "Parallel steps"): a step's compensation starts once the
//! compensations of every step that depended on it (directly or not) have ended, so
//! compensations of steps where neither depended on the other run at once. Each attempt
//! runs under its compensation's own timeout and retry policy; every transition is written
//! by the saga's task, in turn, as going forward.
//!
//! When a compensation gives up, nothing new starts, the compensations under way finish and
//! are recorded, and the saga ends `compensation_failed`.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::context::StepContext;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::SagaError;
use crate::status::{CompensationStatus, RunStatus};

use super::attempt::{AttemptError, run_attempt};
use super::branches::{Event, Fan, Kind, Stop, pumping};
use super::state::Run;
use super::write::Draft;

impl<'a, S: Saga> Run<'a, S> {
    /// Runs the saga's compensations, as many at once as the graph allows, until all have
    /// ended or one gave up.
    pub(super) async fn fan_back(&mut self) -> Result<(), SagaError> {
        let mut fan = Fan::new(Self::steps().len());
        // Compensations already recorded as started (by the transition into compensation,
        // or by a recovery).
        for step in 0..Self::steps().len() {
            if self.status(step).compensation == CompensationStatus::Compensating {
                self.launch_undo(&mut fan, step);
            }
        }
        loop {
            if fan.stop.is_none() {
                self.start_undos(&mut fan).await?;
            }
            match fan.next().await {
                Some(Event::Undone { step, result }) => match result {
                    Ok(()) => self.undone(&mut fan, step).await?,
                    Err(failed) => self.undo_failed(&mut fan, step, failed).await?,
                },
                Some(Event::UndoDue { step }) => self.undo_due(&mut fan, step).await?,
                Some(
                    Event::Attempted { step, .. } | Event::Due { step } | Event::Check { step },
                ) => {
                    return Err(
                        self.corrupt(format!("step {step} reported while the saga compensated"))
                    );
                }
                None => break,
            }
        }
        match fan.stop {
            Some(Stop::GaveUp { step, message }) => {
                let attempt = self.status(step).compensation_attempt;
                self.compensation_gave_up(step, attempt, message, Vec::new())
                    .await
            }
            _ if self.next_compensable().is_some() => Err(self.corrupt(
                "a compensation is left that none of the running ones waits for".to_owned(),
            )),
            _ => {
                let (step, attempt) = (self.step, self.attempt);
                self.compensated(step, attempt, Vec::new(), true).await
            }
        }
    }

    /// The steps to undo whose compensation may start now: none of the steps to undo, or
    /// being undone, depends on them.
    fn undo_ready(&self, fan: &Fan<'a>) -> Vec<usize> {
        let pending: Vec<usize> = (0..Self::steps().len())
            .filter(|&step| self.to_undo(step) || self.is_undoing(step))
            .collect();
        pending
            .iter()
            .copied()
            .filter(|&step| {
                self.to_undo(step)
                    && !fan.is_busy(step)
                    && !pending
                        .iter()
                        .any(|&other| other != step && Self::reaches(other, step))
            })
            .collect()
    }

    /// Whether step `step` is still to be undone: it has a compensation, it completed (or
    /// its outcome is unknown and its compensation needs no output), and it was not undone.
    fn to_undo(&self, step: usize) -> bool {
        let Some(comp) = Self::steps()
            .get(step)
            .and_then(|s| s.compensation.as_ref())
        else {
            return false;
        };
        let status = self.status(step);
        let ended = match status.run {
            RunStatus::Completed => true,
            RunStatus::Unknown => !comp.uses_own_output,
            _ => false,
        };
        ended && status.compensation == CompensationStatus::None
    }

    fn is_undoing(&self, step: usize) -> bool {
        self.status(step).compensation == CompensationStatus::Compensating
    }

    /// Whether step `from` depends on step `to`, directly or through other steps.
    fn reaches(from: usize, to: usize) -> bool {
        let mut stack = vec![from];
        let mut seen = vec![false; Self::steps().len()];
        while let Some(step) = stack.pop() {
            let Some(spec) = Self::steps().get(step) else {
                continue;
            };
            for &dep in spec.depends_on() {
                if dep == to {
                    return true;
                }
                if let Some(flag) = seen.get_mut(dep)
                    && !*flag
                {
                    *flag = true;
                    stack.push(dep);
                }
            }
        }
        false
    }

    /// Starts every compensation that may start, in one write.
    async fn start_undos(&mut self, fan: &mut Fan<'a>) -> Result<(), SagaError> {
        let ready = self.undo_ready(fan);
        let Some(&latest) = ready.last() else {
            return Ok(());
        };
        let mut events = Vec::new();
        let mut draft_steps = Vec::new();
        for &step in &ready {
            let name = Self::steps().get(step).map_or("", StepSpec::name);
            self.event(&mut events, || {
                NewEvent::now(EventType::CompensationStarted)
                    .step(name)
                    .attempt(1)
            });
            draft_steps.push((step, self.compensating(step, 1)));
        }
        let mut draft = Draft::new(SagaState::Compensating, latest, 1, events);
        for (step, status) in draft_steps {
            draft = draft.status(step, status);
        }
        pumping(fan, self.write(draft)).await?;
        self.step = latest;
        self.attempt = 1;
        for step in ready {
            self.launch_undo(fan, step);
        }
        Ok(())
    }

    /// Starts the compensation attempt of `step` that its status records.
    fn launch_undo(&self, fan: &mut Fan<'a>, step: usize) {
        let Some(spec) = Self::steps().get(step) else {
            return;
        };
        let Some(comp) = &spec.compensation else {
            return;
        };
        let policy =
            Policy::for_compensation(spec, comp, &self.config, &self.inner.settings.backoff);
        let attempt = self.status(step).compensation_attempt;
        let saga: &'a S = self.saga;
        let ctx = Arc::clone(&self.ctx);
        let id = self.id.clone();
        let user_id = self.user_id.clone();
        let inner = self.inner;
        let failure = spec
            .child
            .then(|| self.failure.as_ref().map(ToString::to_string));
        let span = tracing::info_span!(
            "saga.compensation",
            step = spec.name,
            compensation = comp.name,
            attempt
        );
        let future = async move {
            let step_context = StepContext::new(
                id.clone(),
                spec.name,
                true,
                attempt,
                Instant::now() + policy.timeout,
                user_id,
            );
            let result = match failure {
                // A child step's compensation is the undoing of its child.
                Some(failure) => {
                    let settle = super::child::settle_child(inner, id, spec.name, failure);
                    run_attempt(Box::pin(settle), policy.timeout, step_context.deadline()).await
                }
                None => {
                    run_attempt(
                        saga.run_compensation(step, &ctx, &step_context),
                        policy.timeout,
                        step_context.deadline(),
                    )
                    .await
                }
            };
            Event::Undone { step, result }
        }
        .instrument(span);
        fan.push_attempt(step, future);
    }

    async fn undone(&mut self, fan: &mut Fan<'a>, step: usize) -> Result<(), SagaError> {
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        let attempt = self.status(step).compensation_attempt;
        tracing::info!(step = name, "compensation executed");
        self.metrics.compensation_executed();
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::CompensationExecuted)
                .step(name)
                .attempt(attempt)
        });
        let mut status = self.status(step);
        status.compensation = CompensationStatus::Compensated;
        let mut draft = Draft::new(SagaState::Compensating, self.step, self.attempt, events)
            .status(step, status);
        draft.progress = true;
        pumping(fan, self.write(draft)).await?;
        Ok(())
    }

    async fn undo_failed(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        failed: AttemptError,
    ) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let Some(comp) = &spec.compensation else {
            return Err(self.corrupt(format!(
                "compensating step `{}`, which has no compensation",
                spec.name
            )));
        };
        let AttemptError { error, timed_out } = failed;
        let attempt = self.status(step).compensation_attempt;
        tracing::warn!(step = spec.name, attempt, timed_out, error = %error, "compensation attempt failed");
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::CompensationFailed)
                .step(spec.name)
                .attempt(attempt)
                .error(error.message())
        });
        let policy =
            Policy::for_compensation(spec, comp, &self.config, &self.inner.settings.backoff);
        if fan.stop.is_some() || error.is_permanent() || attempt >= policy.max_attempts {
            // Gives up (or the saga already stops): the status stays `compensating`, as a
            // compensation that gave up leaves it for a person.
            if fan.stop.is_none() {
                self.metrics.compensation_failed();
                let message = format!(
                    "compensation `{}` gave up after {attempt} attempt(s): {}",
                    comp.name,
                    error.message()
                );
                fan.stop = Some(Stop::GaveUp { step, message });
                fan.branches.retain(|branch| branch.kind == Kind::Attempt);
            }
            let draft = Draft::new(SagaState::Compensating, self.step, self.attempt, events);
            pumping(fan, self.write(draft)).await?;
            return Ok(());
        }
        let delay = error
            .retry_after_delay()
            .unwrap_or_else(|| policy.delay(attempt, &mut self.rng));
        let draft = Draft::new(SagaState::Compensating, self.step, self.attempt, events);
        pumping(fan, self.write(draft)).await?;
        fan.push_delay(step, delay, Event::UndoDue { step });
        Ok(())
    }

    /// The delay before the next attempt of `step`'s compensation is over.
    async fn undo_due(&mut self, fan: &mut Fan<'a>, step: usize) -> Result<(), SagaError> {
        if fan.stop.is_some() {
            return Ok(());
        }
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        let attempt = self.status(step).compensation_attempt + 1;
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::CompensationStarted)
                .step(name)
                .attempt(attempt)
        });
        let compensating = self.compensating(step, attempt);
        let draft =
            Draft::new(SagaState::Compensating, step, attempt, events).status(step, compensating);
        pumping(fan, self.write(draft)).await?;
        self.step = step;
        self.attempt = attempt;
        self.launch_undo(fan, step);
        Ok(())
    }
}
