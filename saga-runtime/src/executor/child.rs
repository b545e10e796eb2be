//! Child sagas, the orchestrator's side (DECISIONS.md, "Sagas that wait"): starting a registered saga by
//! definition name for a parent's step, telling the parent when it ends, and settling it
//! (cancelled or undone) for the parent's compensation.

use std::any::Any;
use std::sync::Arc;

use super::handle::{Executor, Started};
use super::lineage::PARENT;
use crate::config::SagaConfig;
use crate::definition::{Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::store::Actor;

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
