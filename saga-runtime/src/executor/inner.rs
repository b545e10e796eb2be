//! The state an orchestrator shares with its executors, runs and background loops.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::active::{Active, ActiveGuard};
use super::settings::Settings;
use crate::definition::{BoxFuture, SagaState};
use crate::error::SagaError;
use crate::metrics::SagaMetrics;
use crate::store::{SagaRecord, SagaStore};

/// The shared state behind an [`Orchestrator`](super::Orchestrator).
pub(crate) struct Inner {
    /// Itself, for what must outlive a borrow of it (a child saga's task).
    pub(crate) me: std::sync::Weak<Inner>,
    pub(crate) store: Arc<dyn SagaStore>,
    /// Whether the store's writes can fail transiently (worth keeping a copy to retry).
    pub(crate) transient_store: bool,
    pub(crate) runner_id: Arc<str>,
    pub(crate) settings: Settings,
    pub(crate) metrics: SagaMetrics,
    pub(crate) seed: u64,
    pub(crate) active: Arc<Active>,
    pub(crate) sagas: RwLock<HashMap<&'static str, Arc<dyn Resumable>>>,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Inner {
    /// The registered saga of definition `name`.
    pub(crate) fn registered(&self, name: &str) -> Option<Arc<dyn Resumable>> {
        self.sagas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("runner_id", &self.runner_id)
            .field("store", &self.store)
            .field("settings", &self.settings)
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

/// A registered saga, type-erased for the recovery loop.
pub(crate) trait Resumable: Send + Sync {
    fn check(&self, record: &SagaRecord, max_context_bytes: usize) -> Result<(), SagaError>;
    fn resume(
        &self,
        orchestrator: Arc<Inner>,
        guard: ActiveGuard,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaState, SagaError>>;

    /// Creates child saga `id` with `input` and runs it in a task of its own; `Ok(false)`
    /// if it existed already (see `Executor::start_child`).
    fn start_child(
        &self,
        inner: Arc<Inner>,
        id: Arc<str>,
        config: crate::config::SagaConfig,
        input: Box<dyn std::any::Any + Send + Sync>,
    ) -> BoxFuture<'static, Result<bool, SagaError>>;

    /// Undoes or cancels child saga `id` and runs it to its end (`Executor::settle_child`).
    fn settle_child(
        &self,
        inner: Arc<Inner>,
        id: String,
        reason: String,
    ) -> BoxFuture<'static, Result<(), SagaError>>;
}
