//! Sending signals: typed through a saga's generated signal enum on its [`Executor`], or
//! untyped (JSON, by name) through the [`Orchestrator`], as the CLI and web handlers do.

use super::handle::Executor;
use super::orchestrator::Orchestrator;
use crate::definition::{Saga, SignalOf};
use crate::error::SagaError;
use crate::store::{Actor, NewSignal, Sent};

impl<S: Saga> Executor<S> {
    /// Sends `signal` to saga `saga_id`: stored until the step that waits for it takes it
    /// (however early it arrives), and wakes the saga at once if it is waiting for it.
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # use saga_runtime::store::Sent;
    /// #[derive(Debug, Clone, Serialize, Deserialize)]
    /// pub struct Expense { pub cents: u64 }
    /// #[derive(Debug, Clone, Serialize, Deserialize)]
    /// pub struct Approval { pub by: String }
    ///
    /// pub struct Claim;
    ///
    /// #[saga(name = "claim", input = Expense)]
    /// impl Claim {
    ///     #[step(timeout = "2d")]
    ///     async fn approve(&self, #[signal] approval: Approval) -> Result<String, StepError> {
    ///         Ok(approval.by)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), SagaError> {
    /// let claims = Orchestrator::builder(MemoryStore::new()).build()?.register(Claim);
    /// let outcome = claims
    ///     .execute_with_id("claim-1", &SagaConfig::default(), Expense { cents: 4200 })
    ///     .await?;
    /// assert_eq!(outcome.state(), SagaState::Waiting); // held by no runner meanwhile
    /// let sent = claims
    ///     .signal("claim-1", ClaimSignal::Approval(Approval { by: "ada".into() }))
    ///     .await?;
    /// assert!(matches!(sent, Sent::Delivered { .. }));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SagaError::Store`] with [`StoreError::NotFound`](crate::StoreError::NotFound), or
    /// [`StoreError::InvalidState`](crate::StoreError::InvalidState) for a saga that has
    /// ended; [`SagaError::Encode`] if the payload does not serialize.
    pub async fn signal(&self, saga_id: &str, signal: S::Signal) -> Result<Sent, SagaError> {
        self.send(saga_id, &signal, None).await
    }

    /// As [`Executor::signal`], de-duplicated by `key`: a second signal with the same name
    /// and key for the same saga is not stored ([`Sent::Duplicate`]), so that a webhook
    /// delivered twice counts once.
    ///
    /// # Errors
    /// As [`Executor::signal`].
    pub async fn signal_with_key(
        &self,
        saga_id: &str,
        signal: S::Signal,
        key: &str,
    ) -> Result<Sent, SagaError> {
        self.send(saga_id, &signal, Some(key)).await
    }

    async fn send(
        &self,
        saga_id: &str,
        signal: &S::Signal,
        key: Option<&str>,
    ) -> Result<Sent, SagaError> {
        let payload = signal.to_json().map_err(|reason| SagaError::Encode {
            saga_id: saga_id.to_owned(),
            reason: format!("signal `{}`: {reason}", signal.name()),
        })?;
        let mut new = NewSignal::new(saga_id, signal.name(), payload, Actor::new("runtime"));
        new.key = key.map(str::to_owned);
        self.orchestrator().send_signal(new).await
    }
}

impl Orchestrator {
    /// Sends a signal given by name with a JSON payload (what the CLI and a web handler
    /// have). The saga's definition must accept the name; a payload that does not decode
    /// into the signal's type is rejected by the runner that takes it (`signal_rejected`),
    /// and the step keeps waiting.
    ///
    /// # Errors
    /// As [`Executor::signal`], and
    /// [`StoreError::UnknownSignal`](crate::StoreError::UnknownSignal) for a name the saga
    /// does not accept, or [`StoreError::Invalid`](crate::StoreError::Invalid) for a payload
    /// that is not JSON (or over 1 MiB), or a name or key that holds NUL or is over 1 KiB.
    pub async fn send_signal(&self, signal: NewSignal) -> Result<Sent, SagaError> {
        Ok(self.inner.store.send_signal(signal).await?)
    }
}
