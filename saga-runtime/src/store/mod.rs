//! Stores: where checkpoints and audit rows live. One trait, three implementations:
//! [`MemoryStore`] (in process), `SqliteStore` (a file; the default) and `PostgresStore`
//! (production, many runners on one database).
//!
//! Every write that moves a saga is *fenced*: it names the version it read, and the store
//! refuses it with [`StoreError::Fenced`] if the row has moved since. A runner that lost its
//! lease therefore cannot overwrite the progress of the runner that took the saga over.

#[cfg(feature = "_sqlx")]
mod batch;
mod memory;
mod operator;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "_sqlx")]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
pub(crate) mod time;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[cfg(feature = "_sqlx")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use batch::GroupCommit;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};

pub use crate::status::{CompensationStatus, RunStatus, StepStatus};

use crate::audit::{AuditHeader, AuditQuery, AuditRecord, NewEvent};
pub use crate::definition::BoxFuture;
use crate::definition::SagaState;
use crate::error::StoreError;

/// A stored saga: one row of `saga_checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaRecord {
    /// The saga's id (primary key).
    pub saga_id: String,
    /// Its type label (`SagaConfig::saga_type`).
    pub saga_type: String,
    /// The `#[saga(name)]` of its definition: which code can resume it.
    pub definition: String,
    /// The definition's fingerprint when the saga started.
    pub fingerprint: String,
    /// Where it stands.
    pub state: SagaState,
    /// Running: the step next or in flight. Compensating: the step being undone.
    pub step_index: u32,
    /// That step's name.
    pub current_step: Option<String>,
    /// Attempts started of that step (or compensation), interrupted ones included; 0 for a
    /// saga enqueued and not yet picked up.
    pub attempt: u32,
    /// What each step has done, by step index (the `step_status` column). Empty for a row
    /// written before statuses were recorded; the executor derives them from the rest of
    /// the row then (see `docs/DECISIONS.md`).
    pub steps: Vec<StepStatus>,
    /// The typed context as JSON.
    pub context: String,
    /// The saga's config as JSON (for recovery).
    pub config: String,
    /// The error that caused compensation, or why it stopped.
    pub error: Option<String>,
    /// The step whose failure caused compensation.
    pub failed_step: Option<String>,
    /// Fencing version: every write checks it and increments it.
    pub version: i64,
    /// The runner that owns it.
    pub owner: Option<String>,
    /// When the owner's lease ends; after that any runner may claim it.
    pub lease_expires_at: Option<SystemTime>,
    /// Claims since the last progress; past the limit the saga is parked.
    pub recovery_count: u32,
    /// For a parked saga: the state it was parked in.
    pub parked_from: Option<SagaState>,
    /// A pending cancellation request and its reason.
    pub cancel_requested: Option<String>,
    /// The config's user id.
    pub user_id: Option<String>,
    /// The config's IP address.
    pub ip_address: Option<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was last written.
    pub updated_at: SystemTime,
}

/// A saga to create.
#[derive(Debug, Clone)]
pub struct NewSaga {
    /// Its id.
    pub saga_id: Arc<str>,
    /// Its definition's name.
    pub definition: &'static str,
    /// Its definition's fingerprint.
    pub fingerprint: &'static str,
    /// The first step's name.
    pub first_step: &'static str,
    /// The status of each step: the first `running` at attempt 1 when a runner starts the
    /// saga at once, every one `not_started` otherwise.
    pub steps: Vec<StepStatus>,
    /// The initial context (JSON).
    pub context: String,
    /// The config (JSON).
    pub config: String,
    /// Type label, user and IP address.
    pub header: Arc<AuditHeader>,
    /// The creating runner, which runs it at once; `None` leaves it for any runner's
    /// recovery loop (the lease starts expired).
    pub owner: Option<Arc<str>>,
    /// Lease length.
    pub lease: Duration,
    /// Audit events to write with it.
    pub events: Vec<NewEvent>,
}

/// What [`SagaStore::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The saga is new, at this version.
    New {
        /// Its version.
        version: i64,
    },
    /// A saga with this id existed; nothing was written.
    Existing(Box<SagaRecord>),
}

/// A transition to write.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The saga.
    pub saga_id: Arc<str>,
    /// The writer.
    pub owner: Arc<str>,
    /// The version the writer holds; the write fails unless the row is at it.
    pub expected_version: i64,
    /// New state.
    pub state: SagaState,
    /// New step index.
    pub step_index: u32,
    /// That step's name.
    pub current_step: Option<&'static str>,
    /// Attempts started of that step.
    pub attempt: u32,
    /// The status of every step, as of this transition.
    pub steps: Vec<StepStatus>,
    /// New context; `None` keeps the stored one.
    pub context: Option<String>,
    /// The error that caused compensation.
    pub error: Option<String>,
    /// The step whose failure caused compensation.
    pub failed_step: Option<String>,
    /// A step or compensation completed: reset `recovery_count`.
    pub progress: bool,
    /// For [`SagaState::Parked`]: the state it was parked in.
    pub parked_from: Option<SagaState>,
    /// Refuse the write, returning [`Saved::Cancelled`], if a cancellation is pending. Set
    /// on writes that start a forward step, so nothing starts after a cancellation is seen.
    pub unless_cancelled: bool,
    /// Clear a pending cancellation request (it was acted on or ignored).
    pub clear_cancel: bool,
    /// Lease length from now.
    pub lease: Duration,
    /// Type label, user and IP address for the audit rows.
    pub header: Arc<AuditHeader>,
    /// Audit events, written in the same transaction.
    pub events: Vec<NewEvent>,
}

/// What [`SagaStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written; the row is now at this version.
    Written {
        /// The new version.
        version: i64,
    },
    /// Not written: [`Checkpoint::unless_cancelled`] was set and a cancellation is pending.
    Cancelled {
        /// The reason given with the request.
        reason: String,
    },
}

/// A claim of one saga by id (for `recover`).
#[derive(Debug, Clone)]
pub struct Claim {
    /// The saga.
    pub saga_id: String,
    /// The claiming runner.
    pub owner: Arc<str>,
    /// The version the claimer read.
    pub expected_version: i64,
    /// Lease length.
    pub lease: Duration,
}

/// A claim of sagas whose lease ran out (the recovery loop).
#[derive(Debug, Clone)]
pub struct ClaimExpired {
    /// The claiming runner.
    pub owner: Arc<str>,
    /// Lease length.
    pub lease: Duration,
    /// Only sagas of these definitions (those the runner can run).
    pub definitions: Vec<&'static str>,
    /// At most this many.
    pub limit: u32,
}

/// Decides, before a claim, whether a runner can resume a row (fingerprint, decodable
/// context). Rows it refuses are left untouched.
pub type ClaimFilter<'a> = &'a (dyn Fn(&SagaRecord) -> bool + Send + Sync);

/// A filter over sagas, for listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaQuery {
    /// Only in this state.
    pub state: Option<SagaState>,
    /// Only of this type.
    pub saga_type: Option<String>,
    /// Only created at or after this time.
    pub created_since: Option<SystemTime>,
    /// Only last written before this time (the seed's stuck-saga query).
    pub updated_before: Option<SystemTime>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

impl SagaQuery {
    /// Every saga.
    #[must_use]
    pub fn new() -> Self {
        SagaQuery::default()
    }

    /// Only in `state`.
    #[must_use]
    pub fn state(mut self, state: SagaState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only of `saga_type`.
    #[must_use]
    pub fn saga_type(mut self, saga_type: impl Into<String>) -> Self {
        self.saga_type = Some(saga_type.into());
        self
    }

    /// Only created at or after `time`.
    #[must_use]
    pub fn created_since(mut self, time: SystemTime) -> Self {
        self.created_since = Some(time);
        self
    }

    /// Only last written before `time`.
    #[must_use]
    pub fn updated_before(mut self, time: SystemTime) -> Self {
        self.updated_before = Some(time);
        self
    }

    /// At most `limit` rows.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `record` passes the filter.
    #[must_use]
    pub fn matches(&self, record: &SagaRecord) -> bool {
        self.state.is_none_or(|s| s == record.state)
            && self
                .saga_type
                .as_ref()
                .is_none_or(|t| *t == record.saga_type)
            && self.created_since.is_none_or(|t| record.created_at >= t)
            && self.updated_before.is_none_or(|t| record.updated_at < t)
    }
}

/// How many sagas of one type are in one state (for `saga_state_current` and `saga stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateCount {
    /// The type label.
    pub saga_type: String,
    /// The state.
    pub state: SagaState,
    /// How many.
    pub count: u64,
    /// Of those, how many are active but were not written since the `stuck_before` time.
    pub stuck: u64,
}

/// How many audit events of one type one saga type wrote in a window (for `saga stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCount {
    /// The type label.
    pub saga_type: String,
    /// The event type, as stored.
    pub event_type: String,
    /// How many.
    pub count: u64,
}

/// What [`SagaStore::prune`] removed (or would remove, on a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Audit rows older than the cut-off.
    pub audit_rows: u64,
    /// Finished (`completed` or `failed`) sagas last written before the cut-off.
    pub sagas: u64,
}

/// Who asks for an operator action, for the audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The person or service (written as `user_id`).
    pub user_id: String,
    /// From where, if known.
    pub ip_address: Option<String>,
}

impl Actor {
    /// An actor without an address.
    #[must_use]
    pub fn new(user_id: impl Into<String>) -> Self {
        Actor {
            user_id: user_id.into(),
            ip_address: None,
        }
    }
}

/// Where checkpoints and audit rows live.
///
/// Implementations must make each method atomic (one transaction) and must apply the
/// fencing rules documented on each method.
pub trait SagaStore: Send + Sync + fmt::Debug + 'static {
    /// Creates a saga, or returns the existing one with that id (idempotent start).
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>>;

    /// Whether writes can fail with a transient error worth retrying
    /// ([`StoreError::is_transient`]). The runtime then keeps a copy of each checkpoint
    /// until it is written.
    fn can_fail_transiently(&self) -> bool {
        true
    }

    /// Writes a transition and its audit events if the row is at
    /// `checkpoint.expected_version`; renews the writer's lease.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the version moved; [`StoreError::NotFound`].
    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>>;

    /// Reads one saga.
    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>>;

    /// Takes ownership of one saga if it is still at `claim.expected_version`: sets owner
    /// and lease, increments the version and `recovery_count`.
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>>;

    /// Claims up to `request.limit` running or compensating sagas whose lease has expired
    /// and which `filter` accepts; rows the filter refuses are not changed. On PostgreSQL,
    /// concurrent claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`).
    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// Extends the leases of `saga_ids` that `owner` still owns; returns those renewed.
    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>>;

    /// Ends `owner`'s leases on `saga_ids` now, so other runners can claim them at once.
    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Appends audit events that go with no transition.
    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Reads audit rows, oldest first.
    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>>;

    /// Lists sagas, newest first.
    fn list<'a>(
        &'a self,
        query: &'a SagaQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// Records a cancellation request. The owner sees it at its next step boundary and
    /// compensates. Does not move the version: the owner keeps ownership.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] unless the saga is running.
    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>>;

    /// Counts sagas by type and state; `stuck` counts active ones last written before
    /// `stuck_before`.
    fn stats(&self, stuck_before: SystemTime)
    -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>>;

    /// Operator action: makes a parked, `compensation_failed` or stuck saga runnable by any
    /// runner at once (no owner, expired lease, version moved so a zombie owner is fenced
    /// off). A parked or `compensation_failed` saga gets a fresh retry budget for its
    /// current step; a `compensation_failed` one resumes compensating.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] for a finished saga; [`StoreError::NotFound`].
    fn resume<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>>;

    /// Operator action: closes an unfinished saga as `failed` with `reason` (the seed's
    /// "mark as failed and compensate by hand"); its owner is fenced off.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] for a finished saga; [`StoreError::NotFound`].
    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>>;

    /// Retention: deletes audit rows older than `before`, and finished sagas last written
    /// before it, and records who did it (an `operator_pruned` row with saga id `*`). With
    /// `dry_run`, only counts.
    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>>;

    /// Counts audit events since `since`, by saga type and event type.
    fn event_counts(&self, since: SystemTime)
    -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>>;
}

// `dyn SagaStore` must stay usable.
const _: fn(&dyn SagaStore) = |_| {};

/// A shared store is a store: `Arc<dyn SagaStore>` can be handed to an orchestrator.
impl<S: SagaStore + ?Sized> SagaStore for Arc<S> {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        (**self).create(saga)
    }

    fn can_fail_transiently(&self) -> bool {
        (**self).can_fail_transiently()
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        (**self).save(checkpoint)
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        (**self).load(saga_id)
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        (**self).claim(claim)
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        (**self).claim_expired(request, filter)
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        (**self).renew(owner, saga_ids, lease)
    }

    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).release(owner, saga_ids)
    }

    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).append_audit(saga_id, header, events)
    }

    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        (**self).audit_log(query)
    }

    fn list<'a>(
        &'a self,
        query: &'a SagaQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        (**self).list(query)
    }

    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        (**self).request_cancel(saga_id, reason, actor)
    }

    fn stats(
        &self,
        stuck_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>> {
        (**self).stats(stuck_before)
    }

    fn resume<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        (**self).resume(saga_id, reason, actor)
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        (**self).mark_failed(saga_id, reason, actor)
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        (**self).prune(before, dry_run, actor)
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        (**self).event_counts(since)
    }
}

/// Opens the store a URL names: `sqlite://path.db` (or `sqlite::memory:`), `postgres://..`
/// (or `postgresql://..`), or `memory:`. SQL stores are migrated. This is how the examples
/// and the CLI follow `DATABASE_URL`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::StoreError> {
/// let store = saga_runtime::store::open("memory:").await?;
/// assert!(store.load("nothing").await?.is_none());
/// assert!(saga_runtime::store::open("mysql://x").await.is_err());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`StoreError::Invalid`] for another scheme (or one whose feature is off); connection
/// and migration errors.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(clippy::unused_async) // async for the SQL stores
)]
pub async fn open(url: &str) -> Result<Arc<dyn SagaStore>, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url).await?)),
        _ => Err(StoreError::Invalid {
            what: "database URL",
            reason: format!(
                "`{}`: expected sqlite://FILE, postgres://.. or memory: (with the matching feature enabled)",
                redact(url)
            ),
        }),
    }
}

/// A database URL as it can be shown in logs and messages: its password replaced by `***`.
/// (The store errors already do this.)
///
/// ```
/// assert_eq!(
///     saga_runtime::store::redact("postgres://app:s3cret@db:5432/sagas"),
///     "postgres://app:***@db:5432/sagas"
/// );
/// ```
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
