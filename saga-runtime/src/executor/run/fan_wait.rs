//! Branches that wait (DECISIONS.md, "One engine"): in a saga with concurrent steps, a step
//! may wait for its delay, its signal, its child or a long retry while the other branches
//! run. Each waiting step's status says what for and until when; the saga looks at it
//! again when its time comes (or, for a signal or a child, every [`POLL`] while other
//! branches run). When nothing runs and only waits are left, the saga waits durably as a
//! whole, `wake_at` the earliest of its branches' wakes, and lets go of its lease; a wake
//! looks at every waiting branch and resumes those that are due.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::SagaError;
use crate::executor::outcome::Failure;
use crate::outputs::StepOutput;
use crate::status::{RunStatus, StepStatus, WaitFor};
use crate::store::time::later;

use super::branches::{Fan, Stop, pumping};
use super::child::ChildNews;
use super::state::Run;
use super::wait::Woken;
use super::write::Draft;

/// How often a branch that waits for a signal or a child looks for it while other
/// branches of its saga run (once the saga waits as a whole, the signal wakes it).
pub(super) const POLL: Duration = Duration::from_secs(1);

/// How a ready step began.
pub(super) enum Begun {
    /// Its first attempt started.
    Runs(usize),
    /// It waits, for that long at most before it is looked at again.
    Waits(usize, Duration),
}

impl<'a, S: Saga> Run<'a, S> {
    /// The timeout of step `spec`: for a signal or a child, the deadline of its wait.
    pub(super) fn timeout(&self, spec: &StepSpec) -> Duration {
        Policy::for_step(spec, &self.config, &self.inner.settings.backoff).timeout
    }

    /// `draft`, also putting step `step` to wait for `what` after `attempts` attempts,
    /// `left` from now.
    pub(super) fn branch_waits(
        &self,
        mut draft: Draft,
        step: usize,
        attempts: u32,
        what: WaitFor,
        left: Duration,
    ) -> Draft {
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        self.event(&mut draft.events, || {
            let details = serde_json::json!({ "for": what.as_str(), "wait_ms": left.as_millis() });
            NewEvent::now(EventType::StepWaiting)
                .step(name)
                .attempt(attempts)
                .details(details.to_string())
        });
        let until = later(self.inner.store.clock(), left);
        draft.status(step, StepStatus::waiting_until(attempts, what, until))
    }

    /// Forgets the signals taken for `steps`, which will not run after all: they stay
    /// pending.
    pub(super) fn forget_taken(&mut self, steps: &[usize]) {
        self.taken.retain(|taken| !steps.contains(&taken.step));
    }

    /// Before an attempt of step `step` that a recovery restarts: the signal an earlier
    /// attempt took (it stays pending until the step ends), for its payload.
    pub(super) async fn retake_signal(&mut self, step: usize) -> Result<(), SagaError> {
        let Some(signal) = Self::steps().get(step).and_then(|spec| spec.signal) else {
            return Ok(());
        };
        if self.take_signal(step, signal).await? {
            return Ok(());
        }
        Err(self.corrupt(format!(
            "step {step} ran with its signal `{signal}`, which is no longer pending"
        )))
    }

    /// Waiting step `step` ends without effect, because the saga stops going forward: a
    /// step that waited before its first attempt goes back to not started; a step whose
    /// attempts may have had an effect (a child that may run, a retry) ends with an
    /// unknown outcome, so that its compensation runs.
    pub(super) fn end_wait(&mut self, step: usize) {
        let status = self.status(step);
        if status.run != RunStatus::Waiting {
            return;
        }
        if status.attempt == 0 {
            if let Some(slot) = self.steps.get_mut(step) {
                *slot = StepStatus::not_started();
            }
            self.forget_taken(&[step]);
        } else {
            self.end_step(step, true);
        }
    }

    /// Every waiting step ends without effect (see [`Run::end_wait`]).
    pub(super) fn end_waits(&mut self) {
        for step in 0..self.steps.len() {
            self.end_wait(step);
        }
    }

    /// Looks at waiting step `step`: it goes on if it is due (its delay over, its signal
    /// or its child's end here), fails if its deadline passed, and otherwise waits on.
    pub(super) async fn check(&mut self, fan: &mut Fan<'a>, step: usize) -> Result<(), SagaError> {
        let status = self.status(step);
        if status.run != RunStatus::Waiting {
            return Ok(());
        }
        if fan.stop.is_some() {
            self.end_wait(step);
            return Ok(());
        }
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        // A row of a build that did not record what a wait is for.
        let what = status.wait.unwrap_or(if spec.child && status.attempt > 0 {
            WaitFor::Child
        } else if spec.signal.is_some() && spec.delay.is_none() {
            WaitFor::Signal
        } else {
            WaitFor::Delay
        });
        let clock = self.inner.store.clock();
        let left = status
            .until()
            .and_then(|until| until.duration_since(clock).ok())
            .unwrap_or_default();
        match what {
            WaitFor::Delay | WaitFor::Retry if !left.is_zero() => {
                fan.push_wait(step, left);
                Ok(())
            }
            WaitFor::Delay | WaitFor::Retry => match spec.signal {
                // Its delay is over; now its signal.
                Some(signal) if !pumping(fan, self.take_signal(step, signal)).await? => {
                    let events = std::mem::take(&mut fan.carried);
                    self.wait_anew(fan, step, WaitFor::Signal, events).await
                }
                _ => self.fan_due(fan, step).await,
            },
            WaitFor::Signal => {
                let Some(signal) = spec.signal else {
                    return Err(self.corrupt(format!("step `{}` waits for no signal", spec.name)));
                };
                if pumping(fan, self.take_signal(step, signal)).await? {
                    return self.fan_due(fan, step).await;
                }
                if !left.is_zero() {
                    fan.push_wait(step, left.min(POLL));
                    return Ok(());
                }
                let timeout = self.timeout(spec);
                let message = format!(
                    "no signal `{signal}` within {}",
                    humantime::format_duration(timeout)
                );
                self.branch_late(fan, step, what, message).await
            }
            WaitFor::Child => match pumping(fan, self.child_news(step, spec)).await? {
                ChildNews::Completed(output) => self.fan_completed(fan, step, output).await,
                ChildNews::Failed(message) => {
                    let events = std::mem::take(&mut fan.carried);
                    self.branch_failed(fan, step, message, false, events).await
                }
                ChildNews::Running if !left.is_zero() => {
                    fan.push_wait(step, left.min(POLL));
                    Ok(())
                }
                ChildNews::Running => {
                    let message = self.child_late(spec);
                    self.branch_late(fan, step, what, message).await
                }
            },
        }
    }

    /// Step `step` waits for `what` (its signal or its child) with a new deadline, its full
    /// timeout from now, written with `events` before it; looked at again every [`POLL`].
    async fn wait_anew(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        what: WaitFor,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let timeout = Self::steps()
            .get(step)
            .map_or(Duration::ZERO, |spec| self.timeout(spec));
        let attempts = self.status(step).attempt;
        let draft = Draft::new(SagaState::Running, step, attempts, events);
        let draft = self.branch_waits(draft, step, attempts, what, timeout);
        pumping(fan, self.write(draft)).await?;
        fan.push_wait(step, timeout.min(POLL));
        Ok(())
    }

    /// The deadline of waiting step `step` (for `what`, a signal or a child) passed. It
    /// is counted once: the step fails for good (a signal's step never ran its body; a
    /// child's outcome is unknown, and the compensation cancels it). Past a pivot a step
    /// cannot fail: it waits again, with a new deadline.
    async fn branch_late(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        what: WaitFor,
        message: String,
    ) -> Result<(), SagaError> {
        let status = self.status(step);
        let (attempt, error_type) = match what {
            WaitFor::Child => (status.attempt, "child_timeout"),
            _ => (status.attempt.saturating_add(1), "signal_timeout"),
        };
        let mut events = std::mem::take(&mut fan.carried);
        self.deadline_passed(step, attempt, &message, error_type, &mut events);
        if self.pivot_passed() {
            return self.wait_anew(fan, step, what, events).await;
        }
        // The attempt counts as started, so that it ends: failed (a signal's body never
        // ran) or unknown (a child may have done its work).
        if let Some(slot) = self.steps.get_mut(step) {
            *slot = StepStatus::running(attempt);
        }
        let unknown = what == WaitFor::Child;
        self.branch_failed(fan, step, message, unknown, events)
            .await
    }

    /// Step `step` failed for good (`unknown`: its effect may have happened), with
    /// `events` before the write that records it: nothing new starts, and once the
    /// attempts under way have ended the saga compensates.
    async fn branch_failed(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        message: String,
        unknown: bool,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        tracing::info!(step = name, error = %message, "step failed for good");
        self.end_step(step, unknown);
        if self.failure.is_none() {
            self.failure = Some(Failure::new(Some(name), message.clone()));
        }
        self.halt(
            fan,
            Stop::Failed {
                step,
                message,
                unknown,
            },
        );
        let draft = Draft::new(SagaState::Running, self.step, self.attempt, events);
        pumping(fan, self.write(draft)).await?;
        Ok(())
    }

    /// The body of child step `step` returned `output`: its child starts, and the step
    /// waits for it (or, if the saga is stopping meanwhile, ends with an unknown outcome,
    /// so that the compensation cancels the child).
    pub(super) async fn child_begun(
        &mut self,
        fan: &mut Fan<'a>,
        step: usize,
        output: StepOutput,
    ) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let attempt = self.status(step).attempt;
        let event = match pumping(fan, self.launch_child(spec, attempt, output)).await? {
            Ok(event) => event,
            Err(failed) => return self.fan_failed(fan, step, failed).await,
        };
        let mut events = std::mem::take(&mut fan.carried);
        self.event(&mut events, || event);
        if fan.stop.is_some() {
            self.end_step(step, true);
            let draft = Draft::new(SagaState::Running, step, attempt, events);
            pumping(fan, self.write(draft)).await?;
            return Ok(());
        }
        self.wait_anew(fan, step, WaitFor::Child, events).await
    }

    /// The signals the saga's waiting steps wait for (their own, or their child's), their
    /// names separated by spaces.
    fn waiting_signals(&self) -> Result<Option<String>, SagaError> {
        let mut names: Vec<&'static str> = Vec::new();
        for (spec, status) in Self::steps().iter().zip(&self.steps) {
            if status.run != RunStatus::Waiting {
                continue;
            }
            match status.wait {
                Some(WaitFor::Signal) => names.extend(spec.signal),
                Some(WaitFor::Child) => names.push(self.child_signal(spec)?),
                _ => {}
            }
        }
        Ok((!names.is_empty()).then(|| names.join(" ")))
    }

    /// Nothing runs and only waits are left: the saga waits as a whole, durably, until the
    /// earliest wake of its waiting steps (or one of their signals), and lets go of its
    /// lease.
    pub(super) async fn sleep(&mut self, fan: &mut Fan<'a>) -> Result<(), SagaError> {
        let clock = self.inner.store.clock();
        let mut first: Option<(usize, Duration)> = None;
        let mut branches = Vec::new();
        for (step, (spec, status)) in Self::steps().iter().zip(&self.steps).enumerate() {
            if status.run != RunStatus::Waiting {
                continue;
            }
            let left = status
                .until()
                .and_then(|until| until.duration_since(clock).ok())
                .unwrap_or_default();
            if first.is_none_or(|(_, earliest)| left < earliest) {
                first = Some((step, left));
            }
            branches.push(serde_json::json!({
                "step": spec.name,
                "for": status.wait.map_or("delay", WaitFor::as_str),
                "wait_ms": left.as_millis(),
            }));
        }
        let Some((step, left)) = first else {
            return Err(self.corrupt("only waits are left, but no step waits".to_owned()));
        };
        let mut events = std::mem::take(&mut fan.carried);
        let name = Self::steps().get(step).map_or("", StepSpec::name);
        let attempt = self.status(step).attempt;
        self.event(&mut events, || {
            // No step: each branch's wait began with its own `step_waiting`.
            let details = serde_json::json!({ "for": "branches", "branches": branches });
            NewEvent::now(EventType::SagaWaiting).details(details.to_string())
        });
        let mut draft = Draft::new(SagaState::Waiting, step, attempt, events);
        draft.wake_after = Some(left);
        draft.waiting_for = self.waiting_signals()?.map(Arc::from);
        match pumping(fan, self.write_forward(draft)).await? {
            None => {
                tracing::info!(step = name, "saga waiting: every branch left waits");
                fan.branches.clear();
                self.metrics.waiting();
                self.step = step;
                self.attempt = attempt;
                self.state = SagaState::Waiting;
            }
            Some(reason) => self.halt(fan, Stop::Cancelled { reason }),
        }
        Ok(())
    }

    /// After the write that put the saga to wait: a signal whose sender saw the saga
    /// still running did not wake it; if one is here, the saga goes on.
    pub(super) async fn slept(&mut self) -> Result<(), SagaError> {
        match self.waiting_signals()? {
            Some(names) => Box::pin(self.signalled_meanwhile(&names)).await,
            None => Ok(()),
        }
    }

    /// A saga with concurrent steps claimed while it waits: due, signalled, cancelled or
    /// resumed by hand. With a cancellation pending, its waiting steps end without effect
    /// and it compensates; otherwise it runs again, and looks at every waiting step.
    pub(super) async fn wake_branches(&mut self, why: Woken) -> Result<(), SagaError> {
        let mut events = Vec::new();
        self.event(&mut events, || NewEvent::now(EventType::SagaWoken));
        self.metrics.woken();
        if let Some(reason) = why.cancel {
            self.end_waits();
            let step = self.step;
            return self.cancelled(reason, step, false, events).await;
        }
        tracing::info!("saga woken: looking at its waiting steps");
        self.carried = Some(Box::new(events));
        self.state = SagaState::Running;
        Ok(())
    }
}
