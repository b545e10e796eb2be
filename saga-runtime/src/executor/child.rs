//! Child sagas, the orchestrator's side (DECISIONS.md, "Sagas that wait"): starting a registered saga by
//! definition name for a parent's step, telling the parent when it ends, and settling it
//! (cancelled or undone) for the parent's compensation.

use std::any::Any;
use std::sync::Arc;

use super::handle::{Executor, Started};
use crate::config::SagaConfig;
use crate::definition::{Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::store::{Actor, NewSignal};

/// Who a parent's actions on its child are recorded as.
pub(crate) const PARENT: &str = "parent saga";

/// The id of the child that step `step` of saga `parent` starts: a re-run of the step
/// attaches to the same child.
pub(crate) fn child_id(parent: &str, step: &str) -> String {
    format!("{parent}/{step}")
}

/// The parent and step of a saga whose id says it is a child (`<parent>/<step>`).
pub(crate) fn parent_of(saga_id: &str) -> Option<(&str, &str)> {
    let (parent, step) = saga_id.rsplit_once('/')?;
    (!parent.is_empty() && !step.is_empty()).then_some((parent, step))
}

impl<S: Saga> Executor<S> {
    /// Creates child `id` with `input` (which must be `S::Input`) and runs it in a task of
    /// its own. `Ok(true)`: created; `Ok(false)`: it already existed, as a saga of this
    /// type (the parent attaches to it).
    pub(super) async fn start_child(
        self,
        id: Arc<str>,
        config: SagaConfig,
        input: Box<dyn Any + Send + Sync>,
    ) -> Result<bool, SagaError> {
        let store = &self.orchestrator().inner.store;
        if let Some(record) = store.load(&id).await? {
            if record.definition != S::DEFINITION.name() {
                return Err(SagaError::IdConflict {
                    saga_id: record.saga_id,
                    existing: record.definition,
                });
            }
            return Ok(false);
        }
        let Ok(input) = input.downcast::<S::Input>() else {
            return Err(SagaError::config(
                "child saga input",
                format!("is not the input of `{}`", S::DEFINITION.name()),
            ));
        };
        let (created, told) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let run = match Box::pin(self.start(id, &config, *input)).await {
                Ok(Started::Run(run)) => {
                    let _ = created.send(Ok(true));
                    run
                }
                Ok(Started::Ended(_)) => {
                    let _ = created.send(Ok(false));
                    return;
                }
                Err(error) => {
                    let _ = created.send(Err(error));
                    return;
                }
            };
            if let Err(error) = Box::pin(run.drive()).await {
                tracing::warn!(%error, "child saga stopped; recovery takes it over");
            }
        });
        told.await.unwrap_or_else(|_| {
            Err(SagaError::config(
                "child saga",
                "its task ended before it was created",
            ))
        })
    }

    /// Brings child `id` to an end that undoes it, for its parent's compensation: a
    /// completed child is undone, a live one cancelled and run to its end here. `Ok` once
    /// it has ended `failed` (or never existed).
    pub(super) async fn settle_child(&self, id: &str, reason: &str) -> Result<(), SagaError> {
        let store = &self.orchestrator().inner.store;
        let Some(record) = store.load(id).await? else {
            return Ok(());
        };
        let actor = Actor::new(PARENT);
        let state = match record.state {
            SagaState::Failed => return Ok(()),
            SagaState::Completed => self.undo(id, reason, &actor).await?.state(),
            SagaState::Running | SagaState::Waiting => {
                match store.request_cancel(id, reason, &actor).await {
                    // It ended meanwhile: look again, next attempt.
                    Ok(_) | Err(StoreError::InvalidState { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
                // A waiting child is due now: wake it here.
                match store.load(id).await? {
                    Some(record) if record.state.is_live() => self.take_over(record).await?.state(),
                    Some(record) => record.state,
                    None => return Ok(()),
                }
            }
            _ => self.recover(id).await?.state(),
        };
        if state == SagaState::Failed {
            return Ok(());
        }
        Err(SagaError::config(
            "child saga",
            format!("`{id}` is {state}, not undone"),
        ))
    }
}

/// The signal by which child `saga_id`, ending in `state`, tells its parent: delivered by
/// the store with the child's last write ([`Checkpoint::tell`](crate::store::Checkpoint)),
/// so that no crash between the two leaves the parent waiting. `None` unless the id says
/// it is a child (`<parent>/<step>`); a saga whose id merely holds a `/` tells nobody (the
/// store finds no such parent, or no such signal, and ignores it).
pub(crate) fn tell(saga_id: &str, state: SagaState) -> Option<NewSignal> {
    let (parent, step) = parent_of(saga_id)?;
    let payload = serde_json::json!({ "child": saga_id, "state": state.as_str() }).to_string();
    let mut signal = NewSignal::new(parent, format!("child:{step}"), payload, Actor::new(PARENT));
    signal.key = Some(format!("{saga_id} {}", state.as_str()));
    Some(signal)
}
