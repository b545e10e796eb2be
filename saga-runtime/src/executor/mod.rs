//! The runtime: an [`Orchestrator`] owns a store, leases and background recovery; an
//! [`Executor`] runs sagas of one type through it.

mod active;
mod background;
mod codec;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use self::active::{Active, Entered};
use self::codec::{check_record, decode, decode_config, encode_context};
use self::run::Run;
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, EventType, NewEvent};
use crate::backoff::{Backoff, Rng, random_seed};
use crate::config::SagaConfig;
use crate::definition::{BoxFuture, Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::metrics::SagaMetrics;
use crate::status::StepStatus;
use crate::store::{Actor, Checkpoint, Claim, Created, NewSaga, SagaRecord, SagaStore, Saved};

/// Runner-wide settings. See [`OrchestratorBuilder`] for each default.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) recovery: bool,
    pub(crate) recovery_interval: Duration,
    pub(crate) recovery_batch: u32,
    pub(crate) max_recoveries: u32,
    pub(crate) max_context_bytes: usize,
    pub(crate) backoff: Backoff,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) stuck_after: Duration,
    /// How long a checkpoint write keeps retrying transient store errors.
    pub(crate) store_retry: Duration,
}

/// The shared state behind an [`Orchestrator`].
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
    inner: Arc<Inner>,
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
    pub fn builder(store: impl SagaStore) -> OrchestratorBuilder {
        OrchestratorBuilder {
            store: Arc::new(store),
            runner_id: None,
            settings: Settings {
                lease: Duration::from_secs(30),
                recovery: true,
                recovery_interval: Duration::from_secs(5),
                recovery_batch: 100,
                max_recoveries: 5,
                max_context_bytes: 1 << 20,
                backoff: Backoff::default(),
                stats_interval: Some(Duration::from_secs(15)),
                stuck_after: Duration::from_hours(1),
                store_retry: Duration::from_secs(15),
            },
            metrics: SagaMetrics::disabled(),
            seed: None,
        }
    }

    /// Registers a saga implementation: returns its executor, and lets this runner recover
    /// sagas of that definition. Registering a definition again replaces the earlier one.
    pub fn register<S: Saga>(&self, saga: S) -> Executor<S> {
        let saga = Arc::new(saga);
        // Series start at zero before the first saga, so that `rate` and `increase` see
        // the first increment (a counter born at 1 shows no increase).
        let _ = self
            .inner
            .metrics
            .for_type(S::DEFINITION.name(), S::DEFINITION);
        let resumable: Arc<dyn Resumable> = Arc::new(Registered(saga.clone()));
        self.inner
            .sagas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(S::DEFINITION.name(), resumable);
        Executor {
            saga,
            orchestrator: self.clone(),
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
    /// [`SagaError::NotFound`], or [`SagaError::InvalidState`] unless the saga is running.
    pub async fn cancel(
        &self,
        saga_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), SagaError> {
        match self
            .inner
            .store
            .request_cancel(saga_id, reason, actor)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { saga_id }) => Err(SagaError::NotFound { saga_id }),
            Err(StoreError::InvalidState {
                saga_id,
                state,
                action,
            }) => Err(SagaError::InvalidState {
                saga_id,
                state,
                action,
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// Claims sagas whose lease expired and runs them to their end, once; returns how
    /// many it recovered. The background loop does this every recovery interval.
    ///
    /// # Errors
    /// A store error from the claim; failures of single sagas are logged.
    pub async fn recover_expired(&self) -> Result<usize, SagaError> {
        background::recover_once(&self.inner, true).await
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

    /// How long an active saga may go unwritten before it counts as stuck (the seed's
    /// stuck-saga query uses one hour). Default 1 h.
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.settings.stuck_after = after;
        self
    }

    /// How long a checkpoint write keeps retrying when the database is briefly unreachable
    /// (a restart, a busy SQLite file), with backoff from 50 ms to 2 s. Default 15 s, half
    /// the default lease; past it the saga stops here and another runner recovers it.
    pub fn store_retry(mut self, retry: Duration) -> Self {
        self.settings.store_retry = retry;
        self
    }

    /// Records metrics through `metrics` (see [`SagaMetrics`]). Default: none.
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
        let s = &self.settings;
        if s.lease.is_zero() {
            return Err(SagaError::Config("lease must be greater than zero".into()));
        }
        if s.lease > Duration::from_hours(7 * 24) {
            return Err(SagaError::Config("lease must be at most 7 days".into()));
        }
        if s.stats_interval.is_some_and(|i| i.is_zero()) {
            return Err(SagaError::Config(
                "stats interval must be greater than zero (or None to turn it off)".into(),
            ));
        }
        if s.recovery_interval.is_zero() {
            return Err(SagaError::Config(
                "recovery interval must be greater than zero".into(),
            ));
        }
        if s.recovery_batch == 0 {
            return Err(SagaError::Config(
                "recovery batch must be at least 1".into(),
            ));
        }
        if s.max_context_bytes == 0 {
            return Err(SagaError::Config(
                "max context bytes must be greater than zero".into(),
            ));
        }
        s.backoff.validate().map_err(SagaError::Config)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SagaError::Config(
                "an orchestrator must be built inside a tokio runtime".into(),
            ));
        }
        let runner_id = self.runner_id.unwrap_or_else(default_runner_id);
        if runner_id.trim().is_empty() {
            return Err(SagaError::Config("runner id cannot be empty".into()));
        }
        crate::text::check_label("runner id", &runner_id).map_err(SagaError::Config)?;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
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

/// A fresh saga id: 128 random bits as a UUID-shaped string.
fn new_saga_id() -> String {
    let mut rng = Rng::new(random_seed());
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Runs sagas of type `S`. Cheap to clone.
pub struct Executor<S: Saga> {
    saga: Arc<S>,
    orchestrator: Orchestrator,
}

impl<S: Saga> Clone for Executor<S> {
    fn clone(&self) -> Self {
        Executor {
            saga: self.saga.clone(),
            orchestrator: self.orchestrator.clone(),
        }
    }
}

impl<S: Saga> fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("saga", &S::DEFINITION.name())
            .field("orchestrator", &self.orchestrator)
            .finish()
    }
}

impl<S: Saga> Executor<S> {
    /// The orchestrator this executor runs on.
    #[must_use]
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// The saga implementation.
    #[must_use]
    pub fn saga(&self) -> &S {
        &self.saga
    }

    /// Runs a new saga with a fresh id until it ends.
    ///
    /// # Errors
    /// A [`SagaError`] when the runtime itself fails (store, config, context too large). A
    /// step's failure is not an error: it is in the returned [`Outcome`].
    pub async fn execute(
        &self,
        config: &SagaConfig,
        input: S::Input,
    ) -> Result<Outcome<S>, SagaError> {
        self.execute_with_id(new_saga_id(), config, input).await
    }

    /// Runs a new saga with the given id until it ends. If a saga with this id exists, it is
    /// not run again: its outcome is returned (after waiting for it if it is executing in
    /// this process; as it stands otherwise), with [`Outcome::is_existing`] set.
    ///
    /// # Errors
    /// As [`Executor::execute`]; [`SagaError::IdConflict`] if the id belongs to a saga of
    /// another definition.
    pub async fn execute_with_id(
        &self,
        saga_id: impl Into<String>,
        config: &SagaConfig,
        input: S::Input,
    ) -> Result<Outcome<S>, SagaError> {
        let saga_id: String = saga_id.into();
        let id: Arc<str> = saga_id.into();
        let inner = &self.orchestrator.inner;
        let guard = match inner.active.enter(&id) {
            Entered::Run(guard) => guard,
            Entered::Wait(done) => {
                let _ = done.await;
                return self.existing(&id).await;
            }
        };
        let (new, ctx) = self.new_saga(&id, config, input, true)?;
        let header = new.header.clone();
        let steps = new.steps.clone();
        let created = if inner.transient_store {
            // Boxed, like checkpoint writes: the retry state stays out of the saga's future.
            Box::pin(create_retrying(inner, new)).await?
        } else {
            inner.store.create(new).await?
        };
        let version = match created {
            Created::New { version } => version,
            Created::Existing(record) => {
                drop(guard);
                return Self::outcome_of(*record, true);
            }
        };
        let metrics = if config.enable_metrics {
            inner.metrics.for_type(&header.saga_type, S::DEFINITION)
        } else {
            crate::metrics::TypeMetrics::disabled()
        };
        metrics.saga_started();
        let run = Run {
            inner,
            saga: &*self.saga,
            guard,
            user_id: config.user_id.as_deref().map(Arc::from),
            rng: Rng::for_saga(inner.seed, &id),
            id,
            header,
            config: config.clone(),
            metrics,
            ctx,
            ctx_dirty: false,
            steps,
            state: SagaState::Running,
            step: 0,
            attempt: 1,
            version,
            failure: None,
        };
        // Boxed: the run outlives the (larger) state of creating the saga.
        Box::pin(run.drive()).await
    }

    /// The row of a new saga: owned by this runner (it runs it now) or by nobody (any
    /// runner's recovery loop picks it up).
    fn new_saga(
        &self,
        id: &Arc<str>,
        config: &SagaConfig,
        input: S::Input,
        owned: bool,
    ) -> Result<(NewSaga, S::Context), SagaError> {
        if id.is_empty() {
            return Err(SagaError::Config("saga id cannot be empty".into()));
        }
        crate::text::check_label("saga id", id).map_err(SagaError::Config)?;
        config.validate()?;
        let inner = &self.orchestrator.inner;
        let ctx = S::new_context(input);
        let context = encode_context::<S>(id, &ctx, inner.settings.max_context_bytes)?;
        let config_json = serde_json::to_string(config).map_err(|e| SagaError::Encode {
            saga_id: id.to_string(),
            reason: e.to_string(),
        })?;
        let saga_type = config
            .saga_type
            .clone()
            .unwrap_or_else(|| S::DEFINITION.name().to_owned());
        let first_step = S::DEFINITION.steps().first().map_or("", |s| s.name());
        let mut steps = vec![StepStatus::not_started(); S::DEFINITION.steps().len()];
        if owned && let Some(first) = steps.first_mut() {
            *first = StepStatus::running(1);
        }
        let mut events = Vec::new();
        if config.enable_audit_log {
            events.push(NewEvent::now(EventType::SagaStarted));
            if owned {
                events.push(
                    NewEvent::now(EventType::StepStarted)
                        .step(first_step)
                        .attempt(1),
                );
            }
        }
        let new = NewSaga {
            saga_id: id.clone(),
            definition: S::DEFINITION.name(),
            fingerprint: S::DEFINITION.fingerprint(),
            first_step,
            steps,
            context,
            config: config_json,
            header: Arc::new(AuditHeader {
                saga_type,
                user_id: config.user_id.clone(),
                ip_address: config.ip_address.clone(),
            }),
            owner: owned.then(|| inner.runner_id.clone()),
            lease: inner.settings.lease,
            events,
        };
        Ok((new, ctx))
    }

    /// Stores a new saga without running it: the recovery loop of any runner that has this
    /// saga registered picks it up (a durable work queue), or call [`Executor::recover`].
    /// Returns `false` if the id was taken (nothing is written then).
    ///
    /// # Errors
    /// A store error, a bad config, or a context above the size limit.
    pub async fn enqueue(
        &self,
        saga_id: impl Into<String>,
        config: &SagaConfig,
        input: S::Input,
    ) -> Result<bool, SagaError> {
        let id: Arc<str> = saga_id.into().into();
        let (new, _) = self.new_saga(&id, config, input, false)?;
        Ok(matches!(
            self.orchestrator.inner.store.create(new).await?,
            Created::New { .. }
        ))
    }

    /// Stores a new saga through `conn`, inside the caller's own transaction: the saga exists
    /// if and only if the caller's writes commit. After the commit, a runner's recovery loop
    /// runs it, or call [`Executor::recover`] to run it at once. Returns `false` if the id was
    /// taken.
    ///
    /// ```no_run
    /// # use saga_runtime::prelude::*;
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Input;
    /// # pub struct Flow;
    /// # #[saga(name = "flow", input = Input)]
    /// # impl Flow { #[step] async fn a(&self) -> Result<(), StepError> { Ok(()) } }
    /// # async fn demo(pool: sqlx::PgPool, flows: saga_runtime::Executor<Flow>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (42)").execute(&mut *tx).await?;
    /// flows.start_in_transaction(&mut tx, "order-42", &SagaConfig::default(), Input).await?;
    /// tx.commit().await?;
    /// let outcome = flows.recover("order-42").await?; // or let the recovery loop run it
    /// # let _ = outcome; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A database error, a bad config, or a context above the size limit.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn start_in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        saga_id: impl Into<String>,
        config: &SagaConfig,
        input: S::Input,
    ) -> Result<bool, SagaError> {
        let id: Arc<str> = saga_id.into().into();
        let (new, _) = self.new_saga(&id, config, input, false)?;
        let created = crate::store::PostgresStore::create_in(conn, new).await?;
        Ok(matches!(created, Created::New { .. }))
    }

    /// Resumes one saga from its last checkpoint (the seed's `SagaOrchestrator.recover`):
    /// re-runs an interrupted step, continues an interrupted compensation. A saga that is
    /// not running or compensating is returned as it stands.
    ///
    /// # Errors
    /// [`SagaError::NotFound`]; [`SagaError::FingerprintMismatch`] or
    /// [`SagaError::Decode`] (the row is left untouched); [`SagaError::Leased`] while
    /// another runner's lease is live.
    pub async fn recover(&self, saga_id: &str) -> Result<Outcome<S>, SagaError> {
        let inner = &self.orchestrator.inner;
        let record = inner
            .store
            .load(saga_id)
            .await?
            .ok_or_else(|| SagaError::NotFound {
                saga_id: saga_id.to_owned(),
            })?;
        check_record::<S>(&record)?;
        if !record.state.is_active() {
            return Self::outcome_of(record, true);
        }
        // Refuse what cannot be resumed before the claim changes the row.
        decode::<S>(&record, inner.settings.max_context_bytes)?;
        decode_config(&record)?;
        let mine = record.owner.as_deref() == Some(&*inner.runner_id);
        let live = record
            .lease_expires_at
            .is_some_and(|t| t > std::time::SystemTime::now());
        if live && !mine {
            return Err(SagaError::Leased {
                saga_id: record.saga_id,
                owner: record.owner.unwrap_or_default(),
            });
        }
        let id: Arc<str> = record.saga_id.as_str().into();
        let guard = match inner.active.enter(&id) {
            Entered::Run(guard) => guard,
            Entered::Wait(done) => {
                let _ = done.await;
                return self.existing(&id).await;
            }
        };
        let claimed = inner
            .store
            .claim(Claim {
                saga_id: record.saga_id.clone(),
                owner: inner.runner_id.clone(),
                expected_version: record.version,
                lease: inner.settings.lease,
            })
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(StoreError::Fenced { .. }) => {
                return Err(SagaError::Leased {
                    saga_id: record.saga_id,
                    owner: "another runner (it claimed the saga first)".into(),
                });
            }
            Err(error) => return Err(error.into()),
        };
        resume(inner, &*self.saga, guard, claimed).await
    }

    /// The saga's outcome as stored, without running anything (`None` if no such saga).
    ///
    /// # Errors
    /// A store error, or [`SagaError::Decode`] / [`SagaError::FingerprintMismatch`].
    pub async fn outcome(&self, saga_id: &str) -> Result<Option<Outcome<S>>, SagaError> {
        match self.orchestrator.inner.store.load(saga_id).await? {
            Some(record) => Self::outcome_of(record, true).map(Some),
            None => Ok(None),
        }
    }

    async fn existing(&self, saga_id: &str) -> Result<Outcome<S>, SagaError> {
        match self.orchestrator.inner.store.load(saga_id).await? {
            Some(record) => Self::outcome_of(record, true),
            None => Err(SagaError::NotFound {
                saga_id: saga_id.to_owned(),
            }),
        }
    }

    fn outcome_of(record: SagaRecord, existing: bool) -> Result<Outcome<S>, SagaError> {
        if record.definition != S::DEFINITION.name() {
            return Err(SagaError::IdConflict {
                saga_id: record.saga_id,
                existing: record.definition,
            });
        }
        check_record::<S>(&record)?;
        // An outcome is read whatever its size: it is already in memory and changes nothing.
        let context = decode::<S>(&record, usize::MAX)?.ctx;
        Ok(Outcome {
            failure: record.error.map(|message| Failure {
                step: record.failed_step,
                message,
            }),
            saga_id: record.saga_id,
            state: record.state,
            step_index: record.step_index as usize,
            context,
            existing,
        })
    }
}

/// Paces the retries of a store write that failed transiently: 50 ms, doubling to 2 s,
/// for up to `store_retry` in all.
pub(crate) struct StoreRetry {
    delay: Duration,
    deadline: tokio::time::Instant,
    /// Whether a try has failed already (its write may have committed all the same).
    pub(crate) retried: bool,
}

impl StoreRetry {
    pub(crate) fn new(inner: &Inner) -> Self {
        StoreRetry {
            delay: Duration::from_millis(50),
            deadline: tokio::time::Instant::now() + inner.settings.store_retry,
            retried: false,
        }
    }

    /// Whether `error` is worth another try before the deadline.
    pub(crate) fn allows(&self, error: &StoreError) -> bool {
        error.is_transient() && tokio::time::Instant::now() + self.delay < self.deadline
    }

    /// Waits before the next try.
    pub(crate) async fn pause(&mut self, error: &StoreError, what: &'static str) {
        tracing::warn!(%error, retry_in_ms = self.delay.as_millis() as u64, "{what} failed; retrying");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        self.retried = true;
    }
}

/// Creates a saga, retrying transient store errors for up to `store_retry`. If an answer was
/// lost but the row was written, the retry finds it owned by this runner at version 1 and
/// takes it as created.
async fn create_retrying(inner: &Inner, mut new: NewSaga) -> Result<Created, StoreError> {
    let mut retry = StoreRetry::new(inner);
    loop {
        let copy = new.clone();
        match inner.store.create(new).await {
            Err(error) if retry.allows(&error) => {
                retry.pause(&error, "saga creation").await;
                new = copy;
            }
            Ok(Created::Existing(record))
                if retry.retried
                    && record.version == 1
                    && record.owner.as_deref() == Some(&*inner.runner_id) =>
            {
                return Ok(Created::New { version: 1 });
            }
            other => return other,
        }
    }
}

/// Writes a checkpoint, retrying transient store errors for up to `store_retry`. After a
/// lost answer, a retry refused by fencing may have been refused by this runner's own
/// committed write: the row then shows it, and the write counts as done.
pub(crate) async fn save_retrying(
    inner: &Inner,
    mut checkpoint: Checkpoint,
) -> Result<Saved, StoreError> {
    let expected = checkpoint.expected_version;
    let (state, step_index, attempt) =
        (checkpoint.state, checkpoint.step_index, checkpoint.attempt);
    let saga_id = checkpoint.saga_id.clone();
    let mut retry = StoreRetry::new(inner);
    loop {
        let copy = checkpoint.clone();
        match inner.store.save(checkpoint).await {
            Err(error) if retry.allows(&error) => {
                retry.pause(&error, "checkpoint write").await;
                checkpoint = copy;
            }
            Err(StoreError::Fenced { .. }) if retry.retried => {
                return match inner.store.load(&saga_id).await? {
                    Some(row)
                        if row.version == expected + 1
                            && row.owner.as_deref() == Some(&*inner.runner_id)
                            && row.state == state
                            && row.step_index == step_index
                            && row.attempt == attempt =>
                    {
                        Ok(Saved::Written {
                            version: row.version,
                        })
                    }
                    row => Err(StoreError::Fenced {
                        saga_id: saga_id.to_string(),
                        expected,
                        found: row.map_or(-1, |row| row.version),
                    }),
                };
            }
            other => return other,
        }
    }
}

/// Continues a claimed saga.
async fn resume<S: Saga>(
    inner: &Inner,
    saga: &S,
    guard: active::ActiveGuard,
    record: SagaRecord,
) -> Result<Outcome<S>, SagaError> {
    check_record::<S>(&record)?;
    let decoded = decode::<S>(&record, inner.settings.max_context_bytes)?;
    let config = decode_config(&record)?;
    let metrics = if config.enable_metrics {
        inner.metrics.for_type(&record.saga_type, S::DEFINITION)
    } else {
        crate::metrics::TypeMetrics::disabled()
    };
    let id: Arc<str> = record.saga_id.as_str().into();
    tracing::info!(saga_id = %id, state = %record.state, step = record.step_index, "recovering saga");
    let mut run = Run {
        inner,
        saga,
        guard,
        user_id: record.user_id.as_deref().map(Arc::from),
        rng: Rng::for_saga(inner.seed ^ record.version as u64, &id),
        header: Arc::new(AuditHeader {
            saga_type: record.saga_type.clone(),
            user_id: record.user_id.clone(),
            ip_address: record.ip_address.clone(),
        }),
        id,
        config,
        metrics,
        ctx: decoded.ctx,
        ctx_dirty: false,
        steps: decoded.steps,
        state: record.state,
        step: record.step_index as usize,
        attempt: record.attempt,
        version: record.version,
        failure: record.error.map(|message| Failure {
            step: record.failed_step,
            message,
        }),
    };
    run.resume_after_claim(record.recovery_count).await?;
    run.drive().await
}

/// A registered saga, type-erased for the recovery loop.
pub(crate) trait Resumable: Send + Sync {
    fn check(&self, record: &SagaRecord, max_context_bytes: usize) -> Result<(), SagaError>;
    fn resume(
        &self,
        orchestrator: Arc<Inner>,
        guard: active::ActiveGuard,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaState, SagaError>>;
}

struct Registered<S>(Arc<S>);

impl<S: Saga> Resumable for Registered<S> {
    fn check(&self, record: &SagaRecord, max_context_bytes: usize) -> Result<(), SagaError> {
        check_record::<S>(record)?;
        decode::<S>(record, max_context_bytes)?;
        decode_config(record)?;
        Ok(())
    }

    fn resume(
        &self,
        inner: Arc<Inner>,
        guard: active::ActiveGuard,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaState, SagaError>> {
        let saga = self.0.clone();
        Box::pin(async move {
            resume(&inner, &*saga, guard, record)
                .await
                .map(|outcome| outcome.state)
        })
    }
}

/// Why a saga failed: the error that caused compensation (or parking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    step: Option<String>,
    message: String,
}

impl Failure {
    /// A failure with `message` as it is stored (see [`NewEvent::error`]).
    pub(crate) fn new(step: Option<&str>, message: String) -> Self {
        Failure {
            step: step.map(str::to_owned),
            message: crate::text::clean_owned(message),
        }
    }

    /// The step that failed, if a step failed (not for a cancellation).
    #[must_use]
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// What went wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step `{step}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How a saga ended (or stands): its id, state, typed context and the error that caused
/// compensation.
pub struct Outcome<S: Saga> {
    saga_id: String,
    state: SagaState,
    step_index: usize,
    context: S::Context,
    failure: Option<Failure>,
    existing: bool,
}

impl<S: Saga> fmt::Debug for Outcome<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("saga_id", &self.saga_id)
            .field("state", &self.state)
            .field("failure", &self.failure)
            .field("existing", &self.existing)
            .finish_non_exhaustive()
    }
}

impl<S: Saga> Outcome<S> {
    /// The saga's id.
    #[must_use]
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Its state: `Completed`, `Failed`, `CompensationFailed` or `Parked` after a run; any
    /// state for an existing saga read as it stands.
    #[must_use]
    pub fn state(&self) -> SagaState {
        self.state
    }

    /// The typed state (the generated enum).
    #[must_use]
    pub fn typed_state(&self) -> Option<S::State> {
        S::state_of(self.state, self.step_index)
    }

    /// Whether every step completed.
    #[must_use]
    pub fn is_completed(&self) -> bool {
        self.state == SagaState::Completed
    }

    /// The typed context: the input and every completed step's output.
    #[must_use]
    pub fn context(&self) -> &S::Context {
        &self.context
    }

    /// Takes the context.
    #[must_use]
    pub fn into_context(self) -> S::Context {
        self.context
    }

    /// The error that caused compensation, parking or cancellation.
    #[must_use]
    pub fn error(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the saga existed before this call (idempotent start, or `recover` of a saga
    /// that had already ended).
    #[must_use]
    pub fn is_existing(&self) -> bool {
        self.existing
    }
}
