//! [`Orchestrator`] and its builder: a store, a runner id, settings, metrics and the
//! background loops.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::active::Active;
use super::background;
use super::inner::Inner;
use super::settings::Settings;
use crate::audit::{AuditQuery, AuditRecord};
use crate::backoff::{Backoff, random_seed};
use crate::error::SagaError;
use crate::metrics::SagaMetrics;
use crate::store::{Actor, IntoStore, SagaRecord, SagaStore};

/// Runs sagas durably: checkpoints every transition in its store, keeps leases on the sagas
/// it executes, and (by default) recovers sagas whose runner died. Clones share everything.
///
/// ```
/// use saga_runtime::prelude::*;
///
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Input { n: u32 }
/// pub struct Hello;
///
/// #[saga(name = "hello", input = Input)]
/// impl Hello {
///     #[step]
///     async fn greet(&self, input: &Input) -> Result<String, StepError> {
///         Ok(format!("hello #{}", input.n))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), SagaError> {
/// let orchestrator = Orchestrator::builder(MemoryStore::new()).build()?;
/// let hello = orchestrator.register(Hello);
/// let outcome = hello.execute(&SagaConfig::default(), Input { n: 1 }).await?;
/// assert!(outcome.is_completed());
/// assert_eq!(outcome.context().greet.as_deref(), Some("hello #1"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub(crate) inner: Arc<Inner>,
}

/// Builds an [`Orchestrator`].
#[derive(Debug)]
#[must_use = "call `build` to get an orchestrator"]
pub struct OrchestratorBuilder {
    store: Arc<dyn SagaStore>,
    runner_id: Option<String>,
    settings: Settings,
    metrics: SagaMetrics,
    seed: Option<u64>,
}

impl Orchestrator {
    /// Starts building an orchestrator over `store`.
    pub fn builder(store: impl IntoStore) -> OrchestratorBuilder {
        OrchestratorBuilder {
            store: store.into_store(),
            runner_id: None,
            settings: Settings::default(),
            metrics: SagaMetrics::disabled(),
            seed: None,
        }
    }

    /// This runner's id, written as the owner of the sagas it executes.
    #[must_use]
    pub fn runner_id(&self) -> &str {
        &self.inner.runner_id
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &dyn SagaStore {
        &*self.inner.store
    }

    /// Reads one saga's row.
    ///
    /// # Errors
    /// A store error.
    pub async fn load(&self, saga_id: &str) -> Result<Option<SagaRecord>, SagaError> {
        Ok(self.inner.store.load(saga_id).await?)
    }

    /// Reads the audit log.
    ///
    /// # Errors
    /// A store error.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, SagaError> {
        Ok(self.inner.store.audit_log(query).await?)
    }

    /// Asks a running saga to stop: its runner compensates it at the next step boundary.
    /// Past a pivot the request is recorded and ignored.
    ///
    /// # Errors
    /// [`StoreError::NotFound`](crate::StoreError::NotFound), or
    /// [`StoreError::InvalidState`](crate::StoreError::InvalidState) unless the saga is
    /// running (both as [`SagaError::Store`]).
    pub async fn cancel(
        &self,
        saga_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), SagaError> {
        self.inner
            .store
            .request_cancel(saga_id, reason, actor)
            .await?;
        Ok(())
    }

    /// Claims sagas whose lease expired and runs them to their end, once; returns how
    /// many it recovered. The background loop does this every recovery interval.
    ///
    /// # Errors
    /// A store error from the claim; failures of single sagas are logged.
    pub async fn recover_expired(&self) -> Result<usize, SagaError> {
        background::claim_due(&self.inner, background::Pass::RecoverAndWait).await
    }

    /// Stops the background loops, waits up to `grace` for sagas executing here to end,
    /// then releases the leases of those still running so that other runners take them
    /// over at once (their next write here is fenced off).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.active.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ids = self.inner.active.ids();
        if !ids.is_empty()
            && let Err(error) = self.inner.store.release(&self.inner.runner_id, &ids).await
        {
            tracing::warn!(%error, "could not release leases at shutdown");
        }
    }
}

impl OrchestratorBuilder {
    /// The runner id written as owner. Default: host name, process id and a random part.
    pub fn runner_id(mut self, runner_id: impl Into<String>) -> Self {
        self.runner_id = Some(runner_id.into());
        self
    }

    /// How long a lease lasts without renewal. Default 30 s. Another runner may take a saga
    /// over this long after its owner stopped.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// Whether to run the background recovery loop. Default on.
    pub fn recovery(mut self, enabled: bool) -> Self {
        self.settings.recovery = enabled;
        self
    }

    /// How often the recovery loop looks for expired leases. Default 5 s.
    pub fn recovery_interval(mut self, interval: Duration) -> Self {
        self.settings.recovery_interval = interval;
        self
    }

    /// How many sagas one recovery pass claims at most. Default 100.
    pub fn recovery_batch(mut self, batch: u32) -> Self {
        self.settings.recovery_batch = batch;
        self
    }

    /// How many sagas may execute here before the recovery loop stops claiming more (the
    /// sagas this runner started count too): a million timers falling due at once are then
    /// worked through this many at a time, and the rest stay in the database for this
    /// runner's next passes, or for other runners. Default 10,000.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.settings.max_in_flight = max.max(1);
        self
    }

    /// Recoveries without progress after which a saga is parked. Default 5.
    pub fn max_recoveries(mut self, max: u32) -> Self {
        self.settings.max_recoveries = max;
        self
    }

    /// The largest serialized context accepted, in bytes. Default 1 MiB.
    pub fn max_context_bytes(mut self, max: usize) -> Self {
        self.settings.max_context_bytes = max;
        self
    }

    /// Backoff defaults for steps that set none.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Seeds the backoff jitter, so that delays are reproducible (tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How often this runner refreshes `saga_state_current` and `saga_stuck_current` from
    /// the store (one grouped count query), when metrics are on. Default 15 s; `None` stops it.
    pub fn stats_interval(mut self, interval: Option<Duration>) -> Self {
        self.settings.stats_interval = interval;
        self
    }

    /// How long an active saga may go unwritten before it counts as stuck (the deployment guide's
    /// stuck-saga query uses one hour). Default 1 h.
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.settings.stuck_after = after;
        self
    }

    /// How long past its `wake_at` a waiting saga may stay unclaimed before it counts as
    /// overdue (`saga_wait_overdue_current`, `saga stuck`). Default 1 min; runners claim
    /// due sagas every recovery interval (5 s by default).
    pub fn overdue_after(mut self, after: Duration) -> Self {
        self.settings.overdue_after = after;
        self
    }

    /// How long a checkpoint write keeps retrying when the database is briefly unreachable
    /// (a restart, a busy SQLite file), with backoff from 50 ms to 2 s. Default 15 s, half
    /// the default lease; past it the saga stops here and another runner recovers it.
    pub fn store_retry(mut self, retry: Duration) -> Self {
        self.settings.store_retry = retry;
        self
    }

    /// Records metrics through `metrics` (see [`SagaMetrics`]). Default: none, and `build`
    /// says so once in the log, since `SagaConfig::enable_metrics` is on by default.
    pub fn metrics(mut self, metrics: SagaMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks the settings and starts the background loops.
    ///
    /// # Errors
    /// [`SagaError::Config`] for a zero lease, recovery interval or batch, a zero context
    /// limit, a bad backoff, or when called outside a tokio runtime.
    pub fn build(self) -> Result<Orchestrator, SagaError> {
        self.settings.validate()?;
        if !self.metrics.is_enabled() {
            tracing::info!(
                "metrics are not recorded: no registry was given (OrchestratorBuilder::metrics); \
                 `SagaConfig::enable_metrics` only turns them off per saga"
            );
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SagaError::config(
                "runtime",
                "an orchestrator must be built inside a tokio runtime",
            ));
        }
        let runner_id = self.runner_id.unwrap_or_else(default_runner_id);
        if runner_id.trim().is_empty() {
            return Err(SagaError::config("runner id", "cannot be empty"));
        }
        crate::text::check_label(&runner_id)
            .map_err(|reason| SagaError::config("runner id", reason))?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            transient_store: self.store.can_fail_transiently(),
            store: self.store,
            runner_id: runner_id.into(),
            settings: self.settings,
            metrics: self.metrics,
            seed: self.seed.unwrap_or_else(random_seed),
            active: Arc::new(Active::new()),
            sagas: RwLock::new(HashMap::new()),
            shutdown,
        });
        background::spawn(&inner);
        Ok(Orchestrator { inner })
    }
}

fn default_runner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        random_seed() & 0xffff_ffff
    )
}
