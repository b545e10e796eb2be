//! A step that starts a child saga and waits for it (DECISIONS.md, "Sagas that wait"): once its body has
//! returned `Child<C>`, the child is started (or, on a re-run, attached to), the parent
//! waits durably until the child ends or the step's deadline passes, and the child's
//! outcome becomes the step's output. Its compensation undoes (or cancels) the child.

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::child::{ChildStart, cannot_start};
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StepError};
use crate::executor::child::child_id;
use crate::outputs::StepOutput;
use crate::status::RunStatus;
use crate::store::SagaRecord;

use super::attempt::AttemptError;
use super::state::Run;
use super::wait::{Taken, Why, Woken};

impl<S: Saga> Run<'_, S> {
    /// The signal by which the child of step `spec` says it has ended (the definition
    /// lists it among the signals its saga accepts).
    fn child_signal(&self, spec: &StepSpec) -> Result<&'static str, SagaError> {
        S::DEFINITION
            .signals()
            .iter()
            .copied()
            .find(|name| name.strip_prefix("child:") == Some(spec.name))
            .ok_or_else(|| {
                self.corrupt(format!(
                    "step `{}` starts a child, but no signal tells it of its end",
                    spec.name
                ))
            })
    }

    /// The body of child step `spec` returned `output`, the child to start: starts it (or
    /// attaches to the one an earlier attempt started), then waits for it.
    pub(super) async fn start_child(
        &mut self,
        spec: &'static StepSpec,
        policy: &Policy,
        output: StepOutput,
    ) -> Result<(), SagaError> {
        let step = self.step;
        let Ok(start) = output.downcast::<ChildStart>() else {
            return Err(self.corrupt(format!("child step `{}` returned no child", spec.name)));
        };
        let ChildStart { definition, input } = *start;
        let id = child_id(&self.id, spec.name);
        let signal = self.child_signal(spec)?;
        let started = match (self.inner.registered(definition), self.inner.me.upgrade()) {
            (Some(registered), Some(inner)) => {
                let mut config = self.config.clone();
                config.saga_type = None;
                registered
                    .start_child(inner, id.as_str().into(), config, input)
                    .await
            }
            _ => {
                let message = format!(
                    "child saga `{id}` cannot start: saga `{definition}` is not registered with this orchestrator"
                );
                let failed = AttemptError {
                    error: cannot_start(message),
                    timed_out: false,
                };
                return Box::pin(self.step_failed(spec, policy, failed)).await;
            }
        };
        let created = match started {
            Ok(created) => created,
            Err(error) => {
                let transient = matches!(&error, SagaError::Store(e) if e.is_transient());
                let message = format!("child saga `{id}` cannot start: {error}");
                let error = if transient {
                    StepError::retryable(message).with_type("child")
                } else {
                    cannot_start(message)
                };
                let failed = AttemptError {
                    error,
                    timed_out: false,
                };
                return Box::pin(self.step_failed(spec, policy, failed)).await;
            }
        };
        tracing::info!(child = %id, created, "child saga started");
        let mut events = Vec::new();
        let attempt = self.attempt;
        self.event(&mut events, || {
            NewEvent::now(EventType::ChildStarted)
                .step(spec.name)
                .attempt(attempt)
                .details(
                    serde_json::json!({
                        "child": id, "definition": definition, "created": created
                    })
                    .to_string(),
                )
        });
        let draft = self.wait_draft(step, attempt, policy.timeout, Why::Child(signal), events);
        // If refused, its child may have started: the compensation cancels it.
        self.wait_or_compensate(draft, step, true, Vec::new()).await
    }

    /// A parent claimed while it waits for the child of step `spec` (attempt `attempt`):
    /// told that the child ended, due at its deadline, cancelled or resumed by hand.
    pub(super) async fn wake_child(
        &mut self,
        spec: &'static StepSpec,
        attempt: u32,
        why: Woken,
    ) -> Result<(), SagaError> {
        let step = self.step;
        let mut events = Vec::new();
        self.event(&mut events, || {
            NewEvent::now(EventType::SagaWoken)
                .step(spec.name)
                .attempt(attempt)
        });
        self.metrics.woken();
        self.attempt = attempt;
        let signal = self.child_signal(spec)?;
        let told = self.inner.store.next_signal(&self.id, signal).await?;
        let id = child_id(&self.id, spec.name);
        let child = self.inner.store.load(&id).await?;
        let ended = child.as_ref().is_none_or(|c| c.state.is_finished());
        if ended {
            if let Some(told) = told {
                // Consumed by the write that ends the step.
                self.signal = Some(Taken {
                    step,
                    id: told.id,
                    payload: told.payload.into(),
                });
            }
            return self.child_ended(spec, &id, child, events).await;
        }
        if let Some(reason) = why.cancel {
            return self.cancelled(reason, step, true, events).await;
        }
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        let attempts = match told {
            Some(told) => {
                // Told of an end that has not happened (sent by hand): not believed.
                let event = NewEvent::now(EventType::SignalRejected)
                    .step(signal)
                    .error(format!("child saga `{id}` has not ended"))
                    .details(serde_json::json!({ "signal_id": told.id }).to_string());
                self.inner
                    .store
                    .reject_signal(&self.id, told.id, &self.header, event)
                    .await?;
                attempt
            }
            None if why.signal_wait => {
                // Its deadline passed: that attempt timed out; another waits again.
                let message = format!(
                    "child saga `{id}` did not end within {}",
                    humantime::format_duration(policy.timeout)
                );
                self.deadline_passed(step, attempt, &message, "child_timeout", &mut events);
                if attempt >= policy.max_attempts && !self.pivot_passed() {
                    // Its outcome is unknown: the compensation cancels the child.
                    if let Some(slot) = self.steps.get_mut(step) {
                        slot.run = RunStatus::Running;
                    }
                    return self.give_up(step, message, true, events).await;
                }
                attempt.saturating_add(1)
            }
            // Resumed by hand: look again, with a new deadline.
            None => attempt,
        };
        let woken = events.clone();
        let draft = self.wait_draft(step, attempts, policy.timeout, Why::Child(signal), events);
        self.wait_or_compensate(draft, step, true, woken).await
    }

    /// The child of step `spec` ended (or is gone): its outcome is the step's.
    async fn child_ended(
        &mut self,
        spec: &'static StepSpec,
        id: &str,
        child: Option<SagaRecord>,
        events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let step = self.step;
        if let Some(slot) = self.steps.get_mut(step) {
            slot.run = RunStatus::Running;
        }
        self.state = SagaState::Running;
        let Some(child) = child else {
            let message = format!("child saga `{id}` no longer exists");
            return self.give_up(step, message, false, events).await;
        };
        if child.state != SagaState::Completed {
            let at = child
                .failed_step
                .as_ref()
                .map(|step| format!(" at step `{step}`"))
                .unwrap_or_default();
            let error = child.error.as_deref().unwrap_or("no error recorded");
            let message = format!("child saga `{id}` ended {}{at}: {error}", child.state);
            return self.give_up(step, message, false, events).await;
        }
        let completed = child
            .steps
            .iter()
            .map(|status| status.run == RunStatus::Completed)
            .collect();
        let output = match S::child_output(step, &child.saga_id, &child.context, completed) {
            Ok(output) => output,
            Err(reason) => {
                let message = format!(
                    "child saga `{id}` completed, but its context does not decode: {reason}"
                );
                return self.give_up(step, message, false, events).await;
            }
        };
        if !S::store_output(self.ctx_mut()?, step, output) {
            return Err(self.corrupt(format!(
                "child step `{}` has another output type than its definition's",
                spec.name
            )));
        }
        Box::pin(self.step_completed(spec, events)).await
    }

    /// One attempt of the compensation of child step `spec`: undoes its child (or cancels
    /// it, if it is still running) and runs it to its end here.
    pub(super) async fn settle_child(&self, spec: &StepSpec) -> Result<(), StepError> {
        let id = child_id(&self.id, spec.name);
        let reason = match &self.failure {
            Some(failure) => format!("its parent `{}` is compensating: {failure}", self.id),
            None => format!("its parent `{}` is compensating", self.id),
        };
        let record = self
            .inner
            .store
            .load(&id)
            .await
            .map_err(|e| StepError::retryable(e.to_string()))?;
        let Some(record) = record else {
            return Ok(());
        };
        let (Some(registered), Some(inner)) = (
            self.inner.registered(&record.definition),
            self.inner.me.upgrade(),
        ) else {
            return Err(StepError::retryable(format!(
                "child saga `{id}` is a `{}`, which is not registered with this orchestrator",
                record.definition
            )));
        };
        registered
            .settle_child(inner, id, reason)
            .await
            .map_err(|error| match error {
                SagaError::Irreversible { .. } => StepError::permanent(error.to_string()),
                // Its runner holds it (perhaps a dead one, until its lease runs out).
                SagaError::Leased { .. } => {
                    StepError::retry_after(self.inner.settings.lease, error.to_string())
                }
                other => StepError::retryable(other.to_string()),
            })
    }
}
