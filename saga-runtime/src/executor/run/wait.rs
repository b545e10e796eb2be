//! Waiting durably (DECISIONS.md, "Sagas that wait"): a step's `delay`, its `#[signal]`, or a retry delay
//! longer than the lease writes the saga `waiting` with a `wake_at`, held by no runner, and
//! ends its task. Any runner claims it once it is due, signalled or cancelled, and wakes it
//! here.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::definition::{Saga, SagaState};
use crate::error::SagaError;
use crate::status::{RunStatus, StepStatus, WaitFor};
use crate::store::time::later;

use super::state::Run;
use super::write::Draft;

/// Why a saga waits, for its `saga_waiting` event.
#[derive(Clone, Copy)]
pub(super) enum Why {
    /// The step's `delay`.
    Delay,
    /// A retry whose delay is longer than the lease.
    Retry,
    /// The step's signal, until the step's timeout.
    Signal(&'static str),
    /// The step's child saga (told by the signal named here), until the step's timeout.
    Child(&'static str),
}

impl Why {
    /// What the step's status says it waits for.
    pub(super) fn wait_for(self) -> WaitFor {
        match self {
            Why::Delay => WaitFor::Delay,
            Why::Retry => WaitFor::Retry,
            Why::Signal(_) => WaitFor::Signal,
            Why::Child(_) => WaitFor::Child,
        }
    }
}

/// What a claimed waiting row says about why it was woken.
pub(super) struct Woken {
    /// It waited for a signal (rather than a delay): without one, its deadline passed.
    pub(super) signal_wait: bool,
    /// A cancellation is pending (it was woken to compensate).
    pub(super) cancel: Option<String>,
}

/// A signal taken for a step: held until the step ends, when the write that records it
/// consumes the signal.
pub(crate) struct Taken {
    pub(super) step: usize,
    pub(super) id: i64,
    pub(super) payload: Arc<str>,
}

impl<S: Saga> Run<'_, S> {
    /// The draft of a transition that puts the saga to wait until step `step`'s attempt
    /// `attempts + 1` may start, `delay` from now; `events` go before its `saga_waiting`.
    pub(super) fn wait_draft(
        &self,
        step: usize,
        attempts: u32,
        delay: Duration,
        why: Why,
        mut events: Vec<NewEvent>,
    ) -> Draft {
        let name = Self::steps().get(step).map_or("", |spec| spec.name);
        // A child step waits in its attempt (its body ran); the others before their next.
        let attempt = match why {
            Why::Child(_) => attempts,
            _ => attempts.saturating_add(1),
        };
        self.event(&mut events, || {
            let details = match why {
                Why::Delay => serde_json::json!({ "for": "delay", "delay_ms": delay.as_millis() }),
                Why::Retry => serde_json::json!({ "for": "retry", "delay_ms": delay.as_millis() }),
                Why::Signal(signal) => serde_json::json!({
                    "for": "signal", "signal": signal, "deadline_ms": delay.as_millis()
                }),
                Why::Child(_) => serde_json::json!({
                    "for": "child",
                    "child": crate::executor::lineage::child_id(&self.id, name),
                    "deadline_ms": delay.as_millis()
                }),
            };
            NewEvent::now(EventType::SagaWaiting)
                .step(name)
                .attempt(attempt)
                .details(details.to_string())
        });
        // For a signal or a child, the deadline, counted once from now: kept if the wait
        // goes on after a signal that does not decode (see `Run::wait_on`).
        let status = StepStatus::waiting_until(
            attempts,
            why.wait_for(),
            later(self.inner.store.clock(), delay),
        );
        let mut draft = Draft::new(SagaState::Waiting, step, attempts, events).status(step, status);
        draft.wake_after = Some(delay);
        if let Why::Signal(signal) | Why::Child(signal) = why {
            draft.waiting_for = Some(Arc::from(signal));
        }
        draft
    }

    /// Before attempt `attempts + 1` of step `step` starts: the wait it needs first (its
    /// delay, before a first attempt; its signal, until one has arrived), or `Err` with
    /// `events` given back when it can start now.
    pub(super) async fn must_wait(
        &mut self,
        step: usize,
        attempts: u32,
        events: Vec<NewEvent>,
    ) -> Result<Result<Draft, Vec<NewEvent>>, SagaError> {
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        if let Some(delay) = spec.delay
            && attempts == 0
            && self.status(step).run == RunStatus::NotStarted
        {
            return Ok(Ok(self.wait_draft(step, 0, delay, Why::Delay, events)));
        }
        if let Some(signal) = spec.signal
            && !self.take_signal(step, signal).await?
        {
            let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
            let draft =
                self.wait_draft(step, attempts, policy.timeout, Why::Signal(signal), events);
            return Ok(Ok(draft));
        }
        Ok(Err(events))
    }

    /// Takes the oldest pending signal of step `step` whose payload decodes; rejects (with
    /// `signal_rejected`) those that do not. Whether the step has its signal now.
    pub(super) async fn take_signal(
        &mut self,
        step: usize,
        name: &'static str,
    ) -> Result<bool, SagaError> {
        if self.taken(step).is_some() {
            return Ok(true);
        }
        loop {
            let Some(pending) = self.inner.store.next_signal(&self.id, name).await? else {
                return Ok(false);
            };
            match S::check_signal(step, &pending.payload) {
                Ok(()) => {
                    tracing::info!(signal = name, id = pending.id, "signal taken");
                    self.metrics.signal_taken();
                    self.taken.push(Taken {
                        step,
                        id: pending.id,
                        payload: pending.payload.into(),
                    });
                    return Ok(true);
                }
                Err(reason) => {
                    tracing::warn!(signal = name, id = pending.id, %reason, "signal rejected");
                    self.metrics.signal_rejected();
                    let event = NewEvent::now(EventType::SignalRejected)
                        .step(name)
                        .error(format!("its payload does not decode: {reason}"))
                        .details(serde_json::json!({ "signal_id": pending.id }).to_string());
                    self.inner
                        .store
                        .reject_signal(&self.id, pending.id, &self.header, event)
                        .await?;
                }
            }
        }
    }

    /// Writes `draft` (from [`Run::wait_draft`]) and lets go of the saga: the run ends here,
    /// `waiting`. `Ok(Some(reason))`: refused, nothing written, because a cancellation is
    /// pending; the caller acts on it as on any refused forward write.
    pub(super) async fn wait(&mut self, draft: Draft) -> Result<Option<String>, SagaError> {
        let (step, attempt, signals) = (draft.step, draft.attempt, draft.waiting_for.clone());
        if let Some(reason) = self.write_forward(draft).await? {
            return Ok(Some(reason));
        }
        tracing::info!(step, next_attempt = attempt + 1, "saga waiting");
        self.metrics.waiting();
        self.step = step;
        self.attempt = attempt;
        self.state = SagaState::Waiting;
        if let Some(signals) = signals {
            // Boxed: it may wake the saga, which may wait again.
            Box::pin(self.signalled_meanwhile(&signals)).await?;
        }
        Ok(None)
    }

    /// [`Run::wait`], and if a cancellation refused it, compensation from step `step`
    /// (`unknown`: an attempt of it may have had an effect) with `events` before it.
    pub(super) async fn wait_or_compensate(
        &mut self,
        draft: Draft,
        step: usize,
        unknown: bool,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        match self.wait(draft).await? {
            None => Ok(()),
            Some(reason) => self.cancelled(reason, step, unknown, events).await,
        }
    }

    /// Attempt `attempt` of step `step` waited past its deadline: records it (`message`,
    /// counted as `error_type`) in `events`.
    pub(super) fn deadline_passed(
        &mut self,
        step: usize,
        attempt: u32,
        message: &str,
        error_type: &'static str,
        events: &mut Vec<NewEvent>,
    ) {
        let name = Self::steps().get(step).map_or("", |spec| spec.name);
        self.event(events, || {
            NewEvent::now(EventType::StepTimedOut)
                .step(name)
                .attempt(attempt)
                .error(message.to_owned())
        });
        self.metrics.step_failed(step, error_type);
    }

    /// After the write that put the saga to wait for `signal`: a signal whose sender saw
    /// the saga still running (before that write) did not wake it, but it committed before
    /// the write did (the sender holds the saga's row until it commits), so it is visible
    /// now. Take the saga back and go on; if another runner was quicker, it goes on there.
    pub(super) async fn signalled_meanwhile(&mut self, signals: &str) -> Result<(), SagaError> {
        let mut any = false;
        for signal in signals.split(' ') {
            if self
                .inner
                .store
                .next_signal(&self.id, signal)
                .await?
                .is_some()
            {
                any = true;
                break;
            }
        }
        if !any {
            return Ok(());
        }
        let claim = crate::store::Claim::new(
            self.id.to_string(),
            self.inner.runner_id.clone(),
            self.version,
            self.inner.settings.lease,
        );
        match self.inner.store.claim(claim).await {
            Ok(record) => {
                tracing::info!(signals, "signalled while it was put to wait: going on");
                self.version = record.version;
                let woken = Woken {
                    signal_wait: true,
                    cancel: record.cancel_requested,
                };
                self.wake(woken).await
            }
            Err(crate::error::StoreError::Fenced { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// After a claim of a waiting saga that was due, signalled, cancelled or resumed by
    /// hand: starts the attempt it waited for, waits again (for the step's signal, after
    /// its delay), fails the attempt whose signal did not come in time, or compensates if
    /// a cancellation is pending.
    pub(super) async fn wake(&mut self, why: Woken) -> Result<(), SagaError> {
        if !S::DEFINITION.is_chain() {
            return self.wake_branches(why).await;
        }
        let step = self.step;
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let status = self.status(step);
        if status.run != RunStatus::Waiting {
            return Err(self.corrupt(format!(
                "the saga is waiting, but step `{}` is {status}",
                spec.name
            )));
        }
        if status
            .wait
            .map_or(spec.child, |what| what == WaitFor::Child)
        {
            return self.wake_child(spec, status.attempt, why).await;
        }
        let next = status.attempt.saturating_add(1);
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::SagaWoken)
                .step(spec.name)
                .attempt(next)
        });
        self.metrics.woken();
        let woken = events.clone();
        if let Some(signal) = spec.signal
            && !self.take_signal(step, signal).await?
        {
            if let Some(reason) = why.cancel {
                // Woken to compensate: its deadline has not passed.
                return self.cancelled(reason, step, true, events).await;
            }
            if why.signal_wait {
                if let Some(deadline) = status.deadline()
                    && let Ok(left) = deadline.duration_since(self.inner.store.clock())
                    && !left.is_zero()
                {
                    // Woken by a signal that did not decode (rejected above): the wait
                    // goes on, to the same deadline, and no attempt is spent.
                    return self
                        .wait_on(step, status, left, signal, events, woken)
                        .await;
                }
                return self.signal_missed(step, next, signal, events).await;
            }
            // Its delay has passed; now its signal.
            let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
            let draft = self.wait_draft(
                step,
                status.attempt,
                policy.timeout,
                Why::Signal(signal),
                events,
            );
            return self.wait_or_compensate(draft, step, true, woken).await;
        }
        self.event(&mut events, || {
            NewEvent::now(EventType::StepStarted)
                .step(spec.name)
                .attempt(next)
        });
        let draft = Draft::new(SagaState::Running, step, next, events)
            .status(step, StepStatus::running(next));
        if let Some(reason) = self.write_forward(draft).await? {
            // An earlier attempt that was retried may have had an effect.
            return self.cancelled(reason, step, true, woken).await;
        }
        tracing::info!(step = spec.name, attempt = next, "saga woken");
        self.state = SagaState::Running;
        self.attempt = next;
        Ok(())
    }

    /// The deadline of attempt `attempt`'s wait for `signal` passed without it: the attempt
    /// timed out, and had no effect (its body never ran). Another attempt waits again, with
    /// a new deadline; past the retry budget the step fails for good.
    async fn signal_missed(
        &mut self,
        step: usize,
        attempt: u32,
        signal: &'static str,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        let message = format!(
            "no signal `{signal}` within {}",
            humantime::format_duration(policy.timeout)
        );
        self.deadline_passed(step, attempt, &message, "signal_timeout", &mut events);
        // The attempt counts as started, so that it ends as failed (with no effect).
        if let Some(slot) = self.steps.get_mut(step) {
            *slot = StepStatus::running(attempt);
        }
        // The deadline is counted once: the step fails for good, whatever retries it has
        // (they are for its body, once the signal has come). Past a pivot a step cannot
        // fail: it waits again, with a new deadline.
        if !self.pivot_passed() {
            return self.give_up(step, message, false, events).await;
        }
        let woken: Vec<NewEvent> = events.clone();
        let draft = self.wait_draft(step, attempt, policy.timeout, Why::Signal(signal), events);
        self.wait_or_compensate(draft, step, false, woken).await
    }

    /// Puts the saga back to wait for step `step`'s `signal` until the deadline `status`
    /// holds, `left` from now: a wake by a signal that did not decode spends nothing.
    async fn wait_on(
        &mut self,
        step: usize,
        status: StepStatus,
        left: Duration,
        signal: &'static str,
        events: Vec<NewEvent>,
        woken: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let draft = self
            .wait_draft(step, status.attempt, left, Why::Signal(signal), events)
            .status(step, status);
        self.wait_or_compensate(draft, step, false, woken).await
    }
}
