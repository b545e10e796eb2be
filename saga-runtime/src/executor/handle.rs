//! [`Executor`]: the typed handle that starts, enqueues, recovers and reads sagas of one type.

use std::fmt;
use std::sync::Arc;

use super::active::{ActiveGuard, Entered};
use super::codec::{check_record, check_resumable, encode_context};
use super::inner::{Inner, Resumable};
use super::orchestrator::Orchestrator;
use super::outcome::Outcome;
use super::run::{Position, Run, resume_claimed};
use super::writer;
use crate::audit::{AuditHeader, EventType, NewEvent};
use crate::config::SagaConfig;
use crate::definition::{BoxFuture, Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::status::StepStatus;
use crate::store::{Claim, Created, NewSaga, SagaRecord};

/// Whether the saga's first step waits before its first attempt (a delay, a signal).
fn first_waits<S: Saga>() -> bool {
    S::DEFINITION
        .steps()
        .first()
        .is_some_and(|step| step.delay().is_some() || step.signal().is_some())
}

/// A fresh saga id, what [`Executor::execute`] uses; for the `*_with_id` methods when a
/// caller has no id of its own to give. It is a random (version 4) UUID in its usual text
/// form, `8-4-4-4-12` lowercase hex digits: 122 bits from the operating system's generator
/// (the other 6 say "version 4, RFC 4122 variant"), so two ids collide with a chance of
/// about one in 2^61 after a billion sagas.
#[must_use]
pub fn new_saga_id() -> String {
    let mut b = crate::random::bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = crate::random::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Orchestrator {
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

    /// Runs a new saga with the given id, and waits at most `wait` for it to end: what a
    /// request handler wants, since a saga past its pivot retries until it succeeds and may
    /// not end soon. The saga runs in a task of its own, so it goes on (durably, owned by
    /// this runner) when the wait runs out; read it later with [`Executor::outcome`].
    ///
    /// ```
    /// # use saga_runtime::prelude::*;
    /// # use saga_runtime::Waited;
    /// # use std::time::Duration;
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Input;
    /// # pub struct Flow;
    /// # #[saga(name = "flow", input = Input)]
    /// # impl Flow { #[step] async fn a(&self) -> Result<(), StepError> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), SagaError> {
    /// # let flows = Orchestrator::builder(MemoryStore::new()).build()?.register(Flow);
    /// match flows
    ///     .execute_within("order-42", &SagaConfig::default(), Input, Duration::from_secs(2))
    ///     .await?
    /// {
    ///     Waited::Ended(outcome) => assert!(outcome.is_completed()), // 200 with the outcome
    ///     Waited::Running { saga_id } => println!("{saga_id} goes on"), // 202, poll it later
    ///     other => println!("{other:?}"), // `Waited` may grow
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Executor::execute_with_id`].
    pub async fn execute_within(
        &self,
        saga_id: impl Into<String>,
        config: &SagaConfig,
        input: S::Input,
        wait: std::time::Duration,
    ) -> Result<Waited<S>, SagaError> {
        let saga_id: String = saga_id.into();
        let (executor, config, id) = (self.clone(), config.clone(), saga_id.clone());
        let run = tokio::spawn(async move { executor.execute_with_id(id, &config, input).await });
        match tokio::time::timeout(wait, run).await {
            Ok(Ok(result)) => result.map(Waited::Ended),
            // A panic outside the steps (they catch their own) is a bug: let it through.
            Ok(Err(error)) => std::panic::resume_unwind(error.into_panic()),
            Err(_elapsed) => Ok(Waited::Running { saga_id }),
        }
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
        // Both halves boxed: while the saga runs, its future holds the run's state and
        // nothing of how it was created.
        let run = match Box::pin(self.start(saga_id.into(), config, input)).await? {
            Started::Run(run) => run,
            Started::Ended(outcome) => return Ok(outcome),
        };
        Box::pin(run.drive()).await
    }

    /// Creates the saga (or finds it), ready to run.
    pub(super) async fn start(
        &self,
        id: Arc<str>,
        config: &SagaConfig,
        input: S::Input,
    ) -> Result<Started<'_, S>, SagaError> {
        let inner = &self.orchestrator.inner;
        let guard = match inner.active.enter(&id) {
            Entered::Run(guard) => guard,
            Entered::Wait(done) => {
                let _ = done.await;
                return self.existing(&id).await.map(Started::Ended);
            }
        };
        let (new, ctx) = self.new_saga(&id, config, input, true)?;
        let header = new.header.clone();
        let steps = new.steps.clone();
        let version = match writer::create(inner, new).await? {
            Created::New { version } => version,
            Created::Existing(record) => {
                drop(guard);
                return Outcome::from_record(*record, true).map(Started::Ended);
            }
        };
        let position = Position {
            ctx,
            steps,
            state: SagaState::Running,
            step: 0,
            attempt: u32::from(!first_waits::<S>()),
            version,
            failure: None,
        };
        let run = Run::new(
            inner,
            &*self.saga,
            guard,
            id,
            header,
            config.clone(),
            position,
        );
        run.metrics().saga_started();
        Ok(Started::Run(run))
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
            return Err(SagaError::config("saga id", "cannot be empty"));
        }
        crate::text::check_label(id).map_err(|reason| SagaError::config("saga id", reason))?;
        config.validate()?;
        let inner = &self.orchestrator.inner;
        let ctx = S::new_context(input);
        let context = encode_context::<S>(id, &ctx, None, inner.settings.max_context_bytes)?;
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
        // A first step with a delay or a signal does not start yet: the run's first write
        // puts the saga to wait (or, for a signal that arrived before, starts it).
        let starts = owned && !first_waits::<S>();
        if starts && let Some(first) = steps.first_mut() {
            *first = StepStatus::running(1);
        }
        let mut events = Vec::new();
        if config.enable_audit_log {
            events.push(NewEvent::now(EventType::SagaStarted));
            if starts {
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
            signals: S::DEFINITION.signals(),
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

    /// Resumes one saga from its last checkpoint (`SagaOrchestrator.recover` of the Python orchestrator that docs/GUIDE.md ports):
    /// re-runs an interrupted step, continues an interrupted compensation. A saga that is
    /// not running or compensating is returned as it stands.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`SagaError::FingerprintMismatch`] or
    /// [`SagaError::Decode`] (the row is left untouched); [`SagaError::Leased`] while
    /// another runner's lease is live.
    pub async fn recover(&self, saga_id: &str) -> Result<Outcome<S>, SagaError> {
        let inner = &self.orchestrator.inner;
        let record = inner
            .store
            .load(saga_id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                saga_id: saga_id.to_owned(),
            })?;
        check_record::<S>(&record)?;
        if !record.state.is_active() {
            return Outcome::from_record(record, true);
        }
        self.take_over(record).await
    }

    /// Claims saga `record` (active, or waiting and due) and runs it to its end here.
    pub(super) async fn take_over(&self, record: SagaRecord) -> Result<Outcome<S>, SagaError> {
        let inner = &self.orchestrator.inner;
        // Refuse what cannot be resumed before the claim changes the row.
        check_resumable::<S>(&record, inner.settings.max_context_bytes)?;
        let mine = record.owner.as_deref() == Some(&*inner.runner_id);
        let live = record
            .lease_expires_at
            .is_some_and(|t| t > std::time::SystemTime::now());
        if live && !mine {
            return Err(SagaError::Leased {
                saga_id: record.saga_id,
                owner: record.owner,
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
                    owner: None,
                });
            }
            Err(error) => return Err(error.into()),
        };
        resume_claimed(inner, &*self.saga, guard, claimed).await
    }

    /// The saga's outcome as stored, without running anything (`None` if no such saga).
    ///
    /// # Errors
    /// A store error, or [`SagaError::Decode`] / [`SagaError::FingerprintMismatch`].
    pub async fn outcome(&self, saga_id: &str) -> Result<Option<Outcome<S>>, SagaError> {
        match self.orchestrator.inner.store.load(saga_id).await? {
            Some(record) => Outcome::from_record(record, true).map(Some),
            None => Ok(None),
        }
    }

    /// Waits until saga `saga_id` has ended, or needs a person (it is no longer running,
    /// compensating or waiting), reading its row every `poll`: for a saga that waits, or
    /// that another runner executes. Bound the wait with `tokio::time::timeout`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) (as [`SagaError::Store`]) if
    /// there is no such saga; as [`Executor::outcome`].
    pub async fn ended(
        &self,
        saga_id: &str,
        poll: std::time::Duration,
    ) -> Result<Outcome<S>, SagaError> {
        loop {
            let Some(record) = self.orchestrator.inner.store.load(saga_id).await? else {
                return Err(SagaError::Store(crate::StoreError::NotFound {
                    saga_id: saga_id.to_owned(),
                }));
            };
            if !record.state.is_live() {
                return Outcome::from_record(record, true);
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn existing(&self, saga_id: &str) -> Result<Outcome<S>, SagaError> {
        match self.orchestrator.inner.store.load(saga_id).await? {
            Some(record) => Outcome::from_record(record, true),
            None => Err(StoreError::NotFound {
                saga_id: saga_id.to_owned(),
            }
            .into()),
        }
    }
}

/// A saga ready to run, or one that had already ended.
#[allow(clippy::large_enum_variant)] // returned once and taken apart at once, never stored
pub(super) enum Started<'a, S: Saga> {
    Run(Run<'a, S>),
    Ended(Outcome<S>),
}

/// What [`Executor::execute_within`] saw (more cases may come: match with a `_` arm).
#[non_exhaustive]
pub enum Waited<S: Saga> {
    /// The saga ended within the wait (or existed already, as it stands).
    Ended(Outcome<S>),
    /// The saga was still running when the wait ran out; it goes on.
    Running {
        /// Its id, to read it later.
        saga_id: String,
    },
}

impl<S: Saga> fmt::Debug for Waited<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waited::Ended(outcome) => f.debug_tuple("Ended").field(outcome).finish(),
            Waited::Running { saga_id } => {
                f.debug_struct("Running").field("saga_id", saga_id).finish()
            }
        }
    }
}

struct Registered<S>(Arc<S>);

impl<S: Saga> Registered<S> {
    fn executor(&self, inner: Arc<Inner>) -> Executor<S> {
        Executor {
            saga: self.0.clone(),
            orchestrator: Orchestrator { inner },
        }
    }
}

impl<S: Saga> Resumable for Registered<S> {
    fn start_child(
        &self,
        inner: Arc<Inner>,
        id: Arc<str>,
        config: SagaConfig,
        input: Box<dyn std::any::Any + Send + Sync>,
    ) -> BoxFuture<'static, Result<bool, SagaError>> {
        Box::pin(self.executor(inner).start_child(id, config, input))
    }

    fn settle_child(
        &self,
        inner: Arc<Inner>,
        id: String,
        reason: String,
    ) -> BoxFuture<'static, Result<(), SagaError>> {
        let executor = self.executor(inner);
        Box::pin(async move { executor.settle_child(&id, &reason).await })
    }

    fn check(&self, record: &SagaRecord, max_context_bytes: usize) -> Result<(), SagaError> {
        check_resumable::<S>(record, max_context_bytes)
    }

    fn resume(
        &self,
        inner: Arc<Inner>,
        guard: ActiveGuard,
        record: SagaRecord,
    ) -> BoxFuture<'static, Result<SagaState, SagaError>> {
        let saga = self.0.clone();
        Box::pin(async move {
            resume_claimed(&inner, &*saga, guard, record)
                .await
                .map(|outcome| outcome.state)
        })
    }
}
