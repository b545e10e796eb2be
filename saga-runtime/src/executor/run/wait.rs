//! Waiting durably (DESIGN.md §7.3): a step's `delay`, or a retry delay longer than the
//! lease, writes the saga `waiting` with a `wake_at`, held by no runner, and ends its task.
//! Any runner claims it once it is due (or cancelled) and wakes it here.

use std::time::Duration;

use crate::audit::{EventType, NewEvent};
use crate::definition::{Saga, SagaState};
use crate::error::SagaError;
use crate::status::{RunStatus, StepStatus};

use super::state::Run;
use super::write::Draft;

/// Why a saga waits, for its `saga_waiting` event.
#[derive(Clone, Copy)]
pub(super) enum Why {
    /// The step's `delay`.
    Delay,
    /// A retry whose delay is longer than the lease.
    Retry,
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
        self.event(&mut events, || {
            let why = match why {
                Why::Delay => "delay",
                Why::Retry => "retry",
            };
            NewEvent::now(EventType::SagaWaiting)
                .step(name)
                .attempt(attempts.saturating_add(1))
                .details(format!(
                    r#"{{"for":"{why}","delay_ms":{}}}"#,
                    delay.as_millis()
                ))
        });
        let mut draft = Draft::new(SagaState::Waiting, step, attempts, events)
            .status(step, StepStatus::waiting(attempts));
        draft.wake_after = Some(delay);
        draft
    }

    /// Writes `draft` (from [`Run::wait_draft`]) and lets go of the saga: the run ends here,
    /// `waiting`. `Ok(Some(reason))`: refused, nothing written, because a cancellation is
    /// pending; the caller acts on it as on any refused forward write.
    pub(super) async fn wait(&mut self, draft: Draft) -> Result<Option<String>, SagaError> {
        let (step, attempt) = (draft.step, draft.attempt);
        if let Some(reason) = self.write_forward(draft).await? {
            return Ok(Some(reason));
        }
        tracing::info!(step, next_attempt = attempt + 1, "saga waiting");
        self.metrics.waiting();
        self.step = step;
        self.attempt = attempt;
        self.state = SagaState::Waiting;
        Ok(None)
    }

    /// After a claim of a waiting saga that was due, cancelled or resumed by hand: starts
    /// the attempt it waited for, or compensates if a cancellation is pending.
    pub(super) async fn wake(&mut self) -> Result<(), SagaError> {
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
        let next = status.attempt.saturating_add(1);
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::SagaWoken)
                .step(spec.name)
                .attempt(next)
        });
        let woken = events.clone();
        self.event(&mut events, || {
            NewEvent::now(EventType::StepStarted)
                .step(spec.name)
                .attempt(next)
        });
        self.metrics.woken();
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
}
