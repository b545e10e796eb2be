//! The runner protocol's messages: what a runner asks a store to write, and what the store
//! answers.

use std::sync::Arc;
use std::time::Duration;

use super::records::SagaRecord;
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::SagaState;
use crate::status::StepStatus;

/// A saga to create. Made by the runtime; a store reads its fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The names of the signals its definition accepts (its `#[signal]` parameters).
    pub signals: &'static [&'static str],
    /// Audit events to write with it.
    pub events: Vec<NewEvent>,
}

impl NewSaga {
    /// A saga `saga_id` of the definition `definition` (name and fingerprint), with type
    /// label, user and IP address in `header`; every other field empty (no steps, `{}` as
    /// context and config, no owner, no lease, no events) for the caller to fill in.
    #[must_use]
    pub fn new(
        saga_id: impl Into<Arc<str>>,
        definition: &'static str,
        fingerprint: &'static str,
        header: Arc<AuditHeader>,
    ) -> Self {
        NewSaga {
            saga_id: saga_id.into(),
            definition,
            fingerprint,
            first_step: "",
            steps: Vec::new(),
            context: "{}".to_owned(),
            config: "{}".to_owned(),
            header,
            owner: None,
            lease: Duration::ZERO,
            signals: &[],
            events: Vec::new(),
        }
    }
}

/// What [`RunnerStore::create`](super::RunnerStore::create) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The saga is new, at this version.
    New {
        /// Its version.
        version: i64,
    },
    /// A saga with this id existed; nothing was written.
    Existing(Box<SagaRecord>),
}

/// A transition to write. Made by the runtime; a store reads its fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// For [`SagaState::Waiting`]: how long from now until the saga is due (`wake_at`).
    /// A waiting saga has no owner and no lease: the store clears both.
    pub wake_after: Option<Duration>,
    /// For [`SagaState::Waiting`]: the signals it waits for, if any, their names separated
    /// by spaces (one per waiting branch; see [`waits_for`](super::waits_for)); sending one
    /// of them makes it due at once.
    pub waiting_for: Option<Arc<str>>,
    /// Signals the write consumes (their steps ended): they are never taken again.
    pub consume_signals: Box<[i64]>,
    /// A signal to deliver in the same transaction, if the write is made: a child saga's
    /// end, told to its parent, so that no crash between the two leaves the parent
    /// waiting. Delivered as [`SagaStore::send_signal`](super::SagaStore::send_signal)
    /// delivers, with its audit row and wake-up, except that a refusal (no such saga, a
    /// name it does not accept, a saga that has ended, a duplicate key) is no error: the
    /// write is made and nothing is delivered.
    pub tell: Option<NewSignal>,
    /// Type label, user and IP address for the audit rows.
    pub header: Arc<AuditHeader>,
    /// Audit events, written in the same transaction.
    pub events: Vec<NewEvent>,
}

impl Checkpoint {
    /// A write by `owner`, holding `expected_version`, that moves saga `saga_id` to `state`
    /// at step 0; every other field empty (no statuses, the context kept, no error, no
    /// events, no lease) for the caller to fill in.
    #[must_use]
    pub fn new(
        saga_id: impl Into<Arc<str>>,
        owner: impl Into<Arc<str>>,
        expected_version: i64,
        state: SagaState,
        header: Arc<AuditHeader>,
    ) -> Self {
        Checkpoint {
            saga_id: saga_id.into(),
            owner: owner.into(),
            expected_version,
            state,
            step_index: 0,
            current_step: None,
            attempt: 0,
            steps: Vec::new(),
            context: None,
            error: None,
            failed_step: None,
            progress: false,
            parked_from: None,
            unless_cancelled: false,
            clear_cancel: false,
            lease: Duration::ZERO,
            wake_after: None,
            waiting_for: None,
            consume_signals: Box::default(),
            tell: None,
            header,
            events: Vec::new(),
        }
    }
}

/// What [`RunnerStore::save`](super::RunnerStore::save) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

impl Claim {
    /// `owner` claims saga `saga_id`, which it read at `expected_version`, for `lease`.
    #[must_use]
    pub fn new(
        saga_id: impl Into<String>,
        owner: impl Into<Arc<str>>,
        expected_version: i64,
        lease: Duration,
    ) -> Self {
        Claim {
            saga_id: saga_id.into(),
            owner: owner.into(),
            expected_version,
            lease,
        }
    }
}

/// A claim of sagas whose lease ran out (the recovery loop).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimExpired {
    /// The claiming runner.
    pub owner: Arc<str>,
    /// Lease length.
    pub lease: Duration,
    /// Only sagas of these definitions (those the runner can run).
    pub definitions: Vec<&'static str>,
    /// At most this many.
    pub limit: u32,
    /// Whether sagas whose runner's lease ran out are claimed too (the recovery pass), or
    /// only waiting sagas that are due (a pass on a wake-up: a signal, a cancellation).
    /// Default `true`.
    pub expired_leases: bool,
}

impl ClaimExpired {
    /// Only waiting sagas that are due, not expired leases: what a wake-up calls for.
    #[must_use]
    pub fn due_only(mut self) -> Self {
        self.expired_leases = false;
        self
    }

    /// `owner` claims, for `lease`, up to `limit` expired sagas of `definitions`.
    #[must_use]
    pub fn new(
        owner: impl Into<Arc<str>>,
        lease: Duration,
        definitions: Vec<&'static str>,
        limit: u32,
    ) -> Self {
        ClaimExpired {
            owner: owner.into(),
            lease,
            definitions,
            limit,
            expired_leases: true,
        }
    }
}

/// Decides, before a claim, whether a runner can resume a row (fingerprint, decodable
/// context). Rows it refuses are left untouched.
pub type ClaimFilter<'a> = &'a (dyn Fn(&SagaRecord) -> bool + Send + Sync);

/// A signal to deliver to a saga (see `#[signal]`). Made by the runtime or the CLI; a store
/// reads its fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewSignal {
    /// The saga.
    pub saga_id: String,
    /// The signal's name: a `#[signal]` parameter of one of the saga's steps.
    pub name: String,
    /// The payload, as JSON.
    pub payload: String,
    /// A key that makes sending idempotent: a second signal with the same saga, name and
    /// key is a duplicate, and is not stored.
    pub key: Option<String>,
    /// Who sends it (the audit row's user and address).
    pub sender: super::Actor,
}

impl NewSignal {
    /// Signal `name` with `payload` (JSON) for saga `saga_id`, from `sender`, without a key.
    #[must_use]
    pub fn new(
        saga_id: impl Into<String>,
        name: impl Into<String>,
        payload: impl Into<String>,
        sender: super::Actor,
    ) -> Self {
        NewSignal {
            saga_id: saga_id.into(),
            name: name.into(),
            payload: payload.into(),
            key: None,
            sender,
        }
    }

    /// The same signal, de-duplicated by `key`.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// What [`SagaStore::send_signal`](super::SagaStore::send_signal) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Stored, under this id; if the saga was waiting for it, it is due now.
    Delivered {
        /// The signal's id.
        id: i64,
    },
    /// A signal with the same key was sent before; nothing was stored.
    Duplicate {
        /// The earlier signal's id.
        id: i64,
    },
}

/// A signal that has arrived and has not been consumed or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingSignal {
    /// Its id: signals of one name are taken in id order.
    pub id: i64,
    /// The payload, as JSON.
    pub payload: String,
}
