//! Stores: where checkpoints and audit rows live. Two traits, three implementations:
//! [`MemoryStore`] (in process), `SqliteStore` (a file; the default) and `PostgresStore`
//! (production, many runners on one database).
//!
//! [`RunnerStore`] is the protocol a runner needs to execute sagas: create, checkpoint,
//! claim, lease, append audit rows. [`SagaStore`] adds what people and tools ask of a store:
//! queries (list, audit log, counts) and operator actions (cancel, resume, mark failed,
//! prune). An orchestrator takes a `SagaStore`; a store of your own implements both, and
//! can be checked with the conformance suite of the `test-util` feature.
//!
//! Every write that moves a saga is *fenced*: it names the version it read, and the store
//! refuses it with [`StoreError::Fenced`] if the row has moved since. A runner that lost its
//! lease therefore cannot overwrite the progress of the runner that took the saga over.

#[cfg(feature = "_sqlx")]
mod batch;
mod memory;
#[cfg(feature = "_sqlx")]
#[allow(clippy::unreadable_literal)] // versions as their file names spell them
mod migrations {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}
mod open;
mod operator;
#[cfg(feature = "postgres")]
mod postgres;
mod protocol;
mod records;
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
pub use batch::{GroupCommit, GroupCommitStats};
pub use memory::MemoryStore;
pub use open::{open, redact};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use protocol::{
    Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, NewSaga, NewSignal, PendingSignal,
    Saved, Sent,
};
pub(crate) use records::Listed;
pub use records::{Actor, EventCount, PruneReport, SagaQuery, SagaRecord, StateCount};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};

pub use crate::definition::BoxFuture;
pub use crate::status::{CompensationStatus, RunStatus, StepStatus, WaitFor};

use crate::audit::{AuditHeader, AuditQuery, AuditRecord, NewEvent};
use crate::error::StoreError;

/// Whether a `waiting_for` value (the signals a waiting saga waits for, their names
/// separated by spaces: one per branch that waits for a signal or a child) names `signal`.
///
/// ```
/// assert!(saga_runtime::store::waits_for("review child:ship", "child:ship"));
/// assert!(!saga_runtime::store::waits_for("review child:ship", "ship"));
/// ```
#[must_use]
pub fn waits_for(waiting_for: &str, signal: &str) -> bool {
    waiting_for.split(' ').any(|name| name == signal)
}

/// The runner protocol: what a runner needs of a store to execute sagas.
///
/// Implementations must make each method atomic (one transaction) and must apply the
/// fencing rules documented on each method.
pub trait RunnerStore: Send + Sync + fmt::Debug + 'static {
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

    /// Claims up to `request.limit` sagas a runner should pick up, which `filter` accepts:
    /// running or compensating ones whose lease has expired (their `recovery_count` goes
    /// up), then waiting ones whose `wake_at` has come (it does not: a wake is no
    /// recovery). Rows the filter refuses are not changed. A claimed waiting saga stays
    /// `waiting` until its claimer writes; its lease keeps other runners off meanwhile. On
    /// PostgreSQL, concurrent claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`).
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

    /// The oldest signal `name` of saga `saga_id` that is neither consumed nor rejected.
    fn next_signal<'a>(
        &'a self,
        saga_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingSignal>, StoreError>>;

    /// Marks signal `id` rejected (its payload does not decode), so that it is never taken
    /// again, and appends `event` (`signal_rejected`) in the same transaction.
    fn reject_signal<'a>(
        &'a self,
        saga_id: &'a str,
        id: i64,
        header: &'a AuditHeader,
        event: NewEvent,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The time that waits and deadlines are measured against: the wall clock, unless the
    /// store keeps a clock of its own (the memory store's follows tokio's, so that a test
    /// under a paused clock crosses a deadline at once).
    fn clock(&self) -> SystemTime {
        SystemTime::now()
    }

    /// A channel whose value changes whenever a signal may have made a waiting saga due, so
    /// that runners claim it at once rather than at their next recovery pass. `None` (the
    /// default): runners only poll.
    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// A store people and tools can ask about sagas and act on: queries and operator actions,
/// on top of the [`RunnerStore`] protocol. What an [`Orchestrator`](crate::Orchestrator)
/// takes, and what [`open`] returns.
pub trait SagaStore: RunnerStore {
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
    /// compensates. Does not move the version: the owner keeps ownership. A waiting saga
    /// becomes due at once, so that a runner wakes it and compensates.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] unless the saga is running or waiting.
    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>>;

    /// Counts sagas by type and state; `stuck` counts active ones last written before
    /// `stuck_before`, `overdue` waiting ones due before `overdue_before`.
    fn stats(
        &self,
        stuck_before: SystemTime,
        overdue_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>>;

    /// Operator action: makes a parked, `compensation_failed`, stuck or waiting saga
    /// runnable by any runner at once (a waiting one wakes early) (no owner, expired lease, version moved so a zombie owner is fenced
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

    /// Operator action: closes an unfinished saga as `failed` with `reason` (the deployment guide's
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

    /// Operator action: undoes a completed saga. It becomes `compensating`, runnable by any
    /// runner at once, with the error `undone: <reason>` and a `saga_undone` row; the runner
    /// that takes it compensates its completed steps, newest first, and it ends `failed`
    /// (or, past a pivot, the runner refuses and it stays `completed`).
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] unless the saga is completed; [`StoreError::NotFound`].
    fn request_undo<'a>(
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

    /// Delivers a signal: stores it (kept until the saga's step takes it, however early it
    /// arrives), writes `signal_received`, and makes the saga due at once if it waits for
    /// it. A signal with the key of an earlier one is a [`Sent::Duplicate`], not stored.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::InvalidState`] for a saga that has ended;
    /// [`StoreError::UnknownSignal`] for a name its definition does not accept.
    fn send_signal(&self, signal: NewSignal) -> BoxFuture<'_, Result<Sent, StoreError>>;

    /// Counts audit events since `since`, by saga type and event type.
    fn event_counts(&self, since: SystemTime)
    -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>>;
}

// `dyn SagaStore` must stay usable.
const _: fn(&dyn SagaStore) = |_| {};

/// Anything an orchestrator can take as its store: a store, or one already shared as
/// `Arc<dyn SagaStore>` (what [`open`] returns).
pub trait IntoStore {
    /// The store, shared.
    fn into_store(self) -> Arc<dyn SagaStore>;
}

impl<S: SagaStore> IntoStore for S {
    fn into_store(self) -> Arc<dyn SagaStore> {
        Arc::new(self)
    }
}

impl IntoStore for Arc<dyn SagaStore> {
    fn into_store(self) -> Arc<dyn SagaStore> {
        self
    }
}
