//! Undoing a completed saga: [`Executor::undo`] compensates its completed steps, newest
//! first, so that a parent's compensation can undo a completed child (DECISIONS.md, "Sagas that wait").

use super::codec::check_record;
use super::handle::Executor;
use super::outcome::Outcome;
use crate::definition::{Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::status::RunStatus;
use crate::store::Actor;

impl<S: Saga> Executor<S> {
    /// Undoes completed saga `saga_id`: compensates its completed steps, newest first (as
    /// after a failure), here and now; it ends `failed` with the error `undone: <reason>`,
    /// and the audit log says who asked (`saga_undone`). A compensation that gives up
    /// leaves it `compensation_failed`, as always.
    ///
    /// # Errors
    /// [`SagaError::Irreversible`] for a saga that passed its pivot;
    /// [`StoreError::InvalidState`] (as [`SagaError::Store`]) unless it is completed;
    /// [`StoreError::NotFound`]; as [`Executor::recover`].
    pub async fn undo(
        &self,
        saga_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<Outcome<S>, SagaError> {
        let store = &*self.orchestrator().inner.store;
        let record = store
            .load(saga_id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                saga_id: saga_id.to_owned(),
            })?;
        check_record::<S>(&record)?;
        if record.state == SagaState::Completed
            && let Some((spec, _)) = S::DEFINITION
                .steps()
                .iter()
                .zip(&record.steps)
                .find(|(spec, status)| spec.pivot && status.run == RunStatus::Completed)
        {
            return Err(SagaError::Irreversible {
                saga_id: record.saga_id,
                pivot: spec.name,
            });
        }
        store.request_undo(saga_id, reason, actor).await?;
        self.recover(saga_id).await
    }
}
