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
}
