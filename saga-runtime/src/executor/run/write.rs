//! Writing a transition: a [`Draft`] of the new state, the step statuses it changes, its
//! audit events, and the fenced write that makes it durable before anything else happens.

use crate::audit::{EventType, NewEvent};
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StoreError};
use crate::executor::writer;
use crate::status::{RunStatus, StepStatus};
use crate::store::{Checkpoint, Saved};

use super::state::Run;

/// A transition to write.
pub(super) struct Draft {
    pub(super) state: SagaState,
    pub(super) step: usize,
    pub(super) attempt: u32,
    /// Step statuses that change with it.
    changes: Changes,
    pub(super) context: Option<String>,
    pub(super) events: Vec<NewEvent>,
    pub(super) progress: bool,
    pub(super) parked_from: Option<SagaState>,
    pub(super) unless_cancelled: bool,
    /// Clear a pending cancellation request: it was acted on, or cannot be.
    pub(super) clear_cancel: bool,
    /// For a `waiting` saga: how long until it is due.
    pub(super) wake_after: Option<std::time::Duration>,
    /// For a saga waiting for signals: their names, separated by spaces.
    pub(super) waiting_for: Option<std::sync::Arc<str>>,
}

impl Draft {
    pub(super) fn new(state: SagaState, step: usize, attempt: u32, events: Vec<NewEvent>) -> Self {
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
            clear_cancel: !matches!(state, SagaState::Running | SagaState::Waiting),
            wake_after: None,
            waiting_for: None,
        }
    }

    /// The same draft, also setting step `index`'s status.
    pub(super) fn status(mut self, index: usize, status: StepStatus) -> Self {
        self.changes.set(index, status);
        self
    }
}

/// The step statuses a transition changes: usually one or two (a step that completed and
/// the next that starts), kept inline so that such a write allocates nothing for them; a
/// fan-out that starts several steps at once spills into `more`.
#[derive(Clone, Default)]
struct Changes {
    inline: [Option<(usize, StepStatus)>; 2],
    more: Vec<(usize, StepStatus)>,
}

impl Changes {
    fn set(&mut self, index: usize, status: StepStatus) {
        let entry = Some((index, status));
        if let Some(slot) = self
            .inline
            .iter_mut()
            .find(|slot| slot.is_some_and(|(changed, _)| changed == index))
        {
            *slot = entry;
        } else if let Some(changed) = self.more.iter_mut().find(|(changed, _)| *changed == index) {
            changed.1 = status;
        } else if let Some(slot) = self.inline.iter_mut().find(|slot| slot.is_none()) {
            *slot = entry;
        } else {
            self.more.push((index, status));
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(usize, StepStatus)> {
        self.inline.iter().flatten().chain(&self.more)
    }

    /// The new status of step `index`, if this changes it.
    fn get(&self, index: usize) -> Option<StepStatus> {
        self.iter()
            .find(|(changed, _)| *changed == index)
            .map(|(_, status)| *status)
    }

    fn apply(&self, steps: &mut [StepStatus]) {
        for (index, status) in self.iter() {
            if let Some(slot) = steps.get_mut(*index) {
                *slot = *status;
            }
        }
    }
}

impl<S: Saga> Run<'_, S> {
    /// Whether a pivot step has completed once `changes` are written.
    fn pivot_passed_with(&self, changes: &Changes) -> bool {
        Self::steps().iter().enumerate().any(|(index, spec)| {
            let status = changes.get(index).unwrap_or_else(|| self.status(index));
            spec.pivot && status.run == RunStatus::Completed
        })
    }

    /// Writes a transition. `Ok(Some(reason))`: refused because a cancellation is pending
    /// (only with `unless_cancelled`); nothing was written.
    pub(super) async fn write(&mut self, mut draft: Draft) -> Result<Option<String>, SagaError> {
        if draft.context.is_none() && self.ctx_dirty {
            draft.context = Some(self.encode(None)?);
        }
        let wrote_context = draft.context.is_some();
        let mut steps = self.steps.clone();
        draft.changes.apply(&mut steps);
        // The steps whose signals were taken and that have ended: this write consumes them.
        let consume_signals: Box<[i64]> = self
            .taken
            .iter()
            .filter(|taken| steps.get(taken.step).is_some_and(StepStatus::has_ended))
            .map(|taken| taken.id)
            .collect();
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
            wake_after: draft.wake_after,
            waiting_for: draft.waiting_for,
            consume_signals,
            // A child's end tells its parent, in the same transaction.
            tell: if draft.state.is_finished() && self.id.contains('/') {
                crate::executor::lineage::tell(&self.id, draft.state)
            } else {
                None
            },
            header: self.header.clone(),
            events: draft.events,
        };
        let outcome = writer::save(self.inner, checkpoint).await;
        match outcome {
            Ok(Saved::Written { version }) => {
                self.version = version;
                draft.changes.apply(&mut self.steps);
                if wrote_context {
                    self.ctx_dirty = false;
                }
                self.guard.touch();
                let steps = &self.steps;
                self.taken
                    .retain(|taken| !steps.get(taken.step).is_some_and(StepStatus::has_ended));
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
    pub(super) async fn write_forward(
        &mut self,
        draft: Draft,
    ) -> Result<Option<String>, SagaError> {
        let pivot_passed = self.pivot_passed_with(&draft.changes);
        let again = pivot_passed.then(|| Draft {
            state: draft.state,
            step: draft.step,
            attempt: draft.attempt,
            changes: draft.changes.clone(),
            context: draft.context.clone(),
            events: draft.events.clone(),
            progress: draft.progress,
            parked_from: draft.parked_from,
            unless_cancelled: false,
            clear_cancel: true,
            wake_after: draft.wake_after,
            waiting_for: draft.waiting_for.clone(),
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
}
