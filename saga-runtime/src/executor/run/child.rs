//! A step that starts a child saga and waits for it (DECISIONS.md, "Sagas that wait"): once
//! its body has returned `Child<C>`, the child is started (or, on a re-run, attached to),
//! the parent waits durably until the child ends or the step's deadline passes (counted
//! once: past it the step fails for good, its outcome unknown), and the child's outcome
//! becomes the step's output. Its compensation undoes (or cancels) the child.
//!
//! What is said here holds in a chain and in a graph alike: starting the child
//! ([`Run::launch_child`]), what became of it ([`Run::child_news`]) and undoing it
//! ([`settle_child`]); the chain's transitions around them are at the end.

use std::sync::Arc;

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::child::{ChildStart, cannot_start};
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StepError};
use crate::executor::inner::Inner;
use crate::executor::lineage::child_id;
use crate::outputs::StepOutput;
use crate::status::RunStatus;

use super::attempt::AttemptError;
use super::state::Run;
use super::wait::{Taken, Why, Woken};

/// What became of the child of a step that waits for it.
pub(super) enum ChildNews {
    /// It completed: the step's output.
    Completed(StepOutput),
    /// It ended otherwise, or is gone: why the step failed (for good, with no effect left
    /// to undo: the child compensated itself).
    Failed(String),
    /// It has not ended.
    Running,
}

impl<S: Saga> Run<'_, S> {
    /// The signal by which the child of step `spec` says it has ended (the definition
    /// lists it among the signals its saga accepts).
    pub(super) fn child_signal(&self, spec: &StepSpec) -> Result<&'static str, SagaError> {
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
    /// attaches to the one an earlier attempt started). `Ok(Ok(event))`: it runs, and
    /// `event` (`child_started`, at attempt `attempt`) says so; `Ok(Err(failed))`: it
    /// could not start, and the attempt failed so.
    pub(super) async fn launch_child(
        &self,
        spec: &'static StepSpec,
        attempt: u32,
        output: StepOutput,
    ) -> Result<Result<NewEvent, AttemptError>, SagaError> {
        let Ok(start) = output.downcast::<ChildStart>() else {
            return Err(self.corrupt(format!("child step `{}` returned no child", spec.name)));
        };
        let ChildStart { definition, input } = *start;
        let id = child_id(&self.id, spec.name);
        let (Some(registered), Some(inner)) =
            (self.inner.registered(definition), self.inner.me.upgrade())
        else {
            let message = format!(
                "child saga `{id}` cannot start: saga `{definition}` is not registered with this orchestrator"
            );
            return Ok(Err(AttemptError {
                error: cannot_start(message),
                timed_out: false,
            }));
        };
        let mut config = self.config.clone();
        config.saga_type = None;
        let started = registered
            .start_child(inner, id.as_str().into(), config, input)
            .await;
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
                return Ok(Err(AttemptError {
                    error,
                    timed_out: false,
                }));
            }
        };
        tracing::info!(child = %id, created, "child saga started");
        let details =
            serde_json::json!({ "child": id, "definition": definition, "created": created });
        Ok(Ok(NewEvent::now(EventType::ChildStarted)
            .step(spec.name)
            .attempt(attempt)
            .details(details.to_string())))
    }

    /// What became of the child of step `step` (`spec`), which waits for it. A child that
    /// ended has told so with a signal, taken here (the write that ends the step consumes
    /// it); a signal that says so of a child that has not ended (sent by hand) is not
    /// believed, and is rejected.
    pub(super) async fn child_news(
        &mut self,
        step: usize,
        spec: &'static StepSpec,
    ) -> Result<ChildNews, SagaError> {
        let signal = self.child_signal(spec)?;
        let told = self.inner.store.next_signal(&self.id, signal).await?;
        let id = child_id(&self.id, spec.name);
        let child = self.inner.store.load(&id).await?;
        if child.as_ref().is_some_and(|c| !c.state.is_finished()) {
            if let Some(told) = told {
                let event = NewEvent::now(EventType::SignalRejected)
                    .step(signal)
                    .error(format!("child saga `{id}` has not ended"))
                    .details(serde_json::json!({ "signal_id": told.id }).to_string());
                self.inner
                    .store
                    .reject_signal(&self.id, told.id, &self.header, event)
                    .await?;
            }
            return Ok(ChildNews::Running);
        }
        if let Some(told) = told
            && self.taken(step).is_none()
        {
            self.taken.push(Taken {
                step,
                id: told.id,
                payload: told.payload.into(),
            });
        }
        let Some(child) = child else {
            return Ok(ChildNews::Failed(format!(
                "child saga `{id}` no longer exists"
            )));
        };
        if child.state != SagaState::Completed {
            let at = child
                .failed_step
                .as_ref()
                .map(|step| format!(" at step `{step}`"))
                .unwrap_or_default();
            let error = child.error.as_deref().unwrap_or("no error recorded");
            return Ok(ChildNews::Failed(format!(
                "child saga `{id}` ended {}{at}: {error}",
                child.state
            )));
        }
        let completed = child
            .steps
            .iter()
            .map(|status| status.run == RunStatus::Completed)
            .collect();
        Ok(
            match S::child_output(step, &child.saga_id, &child.context, completed) {
                Ok(output) => ChildNews::Completed(output),
                Err(reason) => ChildNews::Failed(format!(
                    "child saga `{id}` completed, but its context does not decode: {reason}"
                )),
            },
        )
    }

    /// The message of a child wait whose deadline passed.
    pub(super) fn child_late(&self, spec: &StepSpec) -> String {
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        format!(
            "child saga `{}` did not end within {}",
            child_id(&self.id, spec.name),
            humantime::format_duration(policy.timeout)
        )
    }

    /// In a chain: the body of child step `spec` returned `output`, the child to start:
    /// starts it, then waits for it.
    pub(super) async fn start_child(
        &mut self,
        spec: &'static StepSpec,
        policy: &Policy,
        output: StepOutput,
    ) -> Result<(), SagaError> {
        let (step, attempt) = (self.step, self.attempt);
        let event = match self.launch_child(spec, attempt, output).await? {
            Ok(event) => event,
            Err(failed) => return Box::pin(self.step_failed(spec, policy, failed)).await,
        };
        let mut events = Vec::new();
        self.event(&mut events, || event);
        let signal = self.child_signal(spec)?;
        let draft = self.wait_draft(step, attempt, policy.timeout, Why::Child(signal), events);
        // If refused, its child may have started: the compensation cancels it.
        self.wait_or_compensate(draft, step, true, Vec::new()).await
    }

    /// In a chain: a parent claimed while it waits for the child of step `spec` (attempt
    /// `attempt`): told that the child ended, due at its deadline, cancelled or resumed by
    /// hand.
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
        let news = self.child_news(step, spec).await?;
        if !matches!(news, ChildNews::Running) {
            if let Some(slot) = self.steps.get_mut(step) {
                slot.run = RunStatus::Running;
            }
            self.state = SagaState::Running;
        }
        match news {
            ChildNews::Completed(output) => {
                if !S::store_output(self.ctx_mut()?, step, output) {
                    return Err(self.corrupt(format!(
                        "child step `{}` has another output type than its definition's",
                        spec.name
                    )));
                }
                return Box::pin(self.step_completed(spec, events)).await;
            }
            ChildNews::Failed(message) => return self.give_up(step, message, false, events).await,
            ChildNews::Running => {}
        }
        if let Some(reason) = why.cancel {
            return self.cancelled(reason, step, true, events).await;
        }
        let status = self.status(step);
        let signal = self.child_signal(spec)?;
        let clock = self.inner.store.clock();
        match status.deadline().and_then(|d| d.duration_since(clock).ok()) {
            Some(left) if !left.is_zero() => {
                // Woken before its deadline (a signal not believed, or by hand): the wait
                // goes on, to the same deadline.
                let woken = events.clone();
                let draft = self
                    .wait_draft(step, attempt, left, Why::Child(signal), events)
                    .status(step, status);
                self.wait_or_compensate(draft, step, true, woken).await
            }
            _ if self.pivot_passed() => {
                // Past a pivot the step cannot fail: it waits again, with a new deadline.
                let message = self.child_late(spec);
                self.deadline_passed(step, attempt, &message, "child_timeout", &mut events);
                let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
                let woken = events.clone();
                let draft =
                    self.wait_draft(step, attempt, policy.timeout, Why::Child(signal), events);
                self.wait_or_compensate(draft, step, true, woken).await
            }
            _ => {
                // The deadline is counted once: the step fails for good, its outcome
                // unknown, and the compensation cancels the child.
                let message = self.child_late(spec);
                self.deadline_passed(step, attempt, &message, "child_timeout", &mut events);
                if let Some(slot) = self.steps.get_mut(step) {
                    slot.run = RunStatus::Running;
                }
                self.state = SagaState::Running;
                self.give_up(step, message, true, events).await
            }
        }
    }
}

/// One attempt of the compensation of the child step of saga `parent` named `step`:
/// undoes its child (or cancels it, if it is still running) and runs it to its end here.
/// `failure`: why the parent compensates.
pub(super) async fn settle_child(
    inner: &Inner,
    parent: Arc<str>,
    step: &'static str,
    failure: Option<String>,
) -> Result<(), StepError> {
    let id = child_id(&parent, step);
    let reason = match failure {
        Some(failure) => format!("its parent `{parent}` is compensating: {failure}"),
        None => format!("its parent `{parent}` is compensating"),
    };
    let record = inner
        .store
        .load(&id)
        .await
        .map_err(|e| StepError::retryable(e.to_string()))?;
    let Some(record) = record else {
        return Ok(());
    };
    let (Some(registered), Some(me)) = (inner.registered(&record.definition), inner.me.upgrade())
    else {
        return Err(StepError::retryable(format!(
            "child saga `{id}` is a `{}`, which is not registered with this orchestrator",
            record.definition
        )));
    };
    registered
        .settle_child(me, id, reason)
        .await
        .map_err(|error| match error {
            SagaError::Irreversible { .. } => StepError::permanent(error.to_string()),
            // Its runner holds it (perhaps a dead one, until its lease runs out).
            SagaError::Leased { .. } => {
                StepError::retry_after(inner.settings.lease, error.to_string())
            }
            other => StepError::retryable(other.to_string()),
        })
}
