//! A saga as the memory store keeps it. What every saga of one kind has in common (its
//! type, definition, fingerprint, config, accepted signals, user and address) is kept once
//! per shard and shared by its rows; step names and the runner's id are shared too. A row
//! becomes a [`SagaRecord`] only when it is read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use crate::definition::SagaState;
use crate::status::StepStatus;
use crate::store::{NewSaga, SagaRecord};

/// What sagas of one kind share.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Kind {
    pub(super) saga_type: String,
    pub(super) definition: String,
    pub(super) fingerprint: String,
    pub(super) config: String,
    pub(super) signals: Vec<String>,
    pub(super) user_id: Option<String>,
    pub(super) ip_address: Option<String>,
}

/// A kind as a new saga or a written record names it, borrowed.
#[derive(Clone, Copy)]
struct KindOf<'a> {
    saga_type: &'a str,
    definition: &'a str,
    fingerprint: &'a str,
    config: &'a str,
    signals: &'a [&'a str],
    user_id: Option<&'a str>,
    ip_address: Option<&'a str>,
}

impl KindOf<'_> {
    fn hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (
            self.saga_type,
            self.definition,
            self.fingerprint,
            self.config,
        )
            .hash(&mut hasher);
        (self.signals, self.user_id, self.ip_address).hash(&mut hasher);
        hasher.finish()
    }

    fn is(&self, kind: &Kind) -> bool {
        self.saga_type == kind.saga_type
            && self.definition == kind.definition
            && self.fingerprint == kind.fingerprint
            && self.config == kind.config
            && self.signals.iter().eq(kind.signals.iter())
            && self.user_id == kind.user_id.as_deref()
            && self.ip_address == kind.ip_address.as_deref()
    }

    fn to_kind(self) -> Kind {
        Kind {
            saga_type: self.saga_type.to_owned(),
            definition: self.definition.to_owned(),
            fingerprint: self.fingerprint.to_owned(),
            config: self.config.to_owned(),
            signals: self.signals.iter().map(|&s| s.to_owned()).collect(),
            user_id: self.user_id.map(str::to_owned),
            ip_address: self.ip_address.map(str::to_owned),
        }
    }
}

/// A shard's kinds, each kept once.
#[derive(Debug, Default)]
pub(super) struct Kinds {
    by_hash: HashMap<u64, Vec<Arc<Kind>>>,
}

impl Kinds {
    fn intern(&mut self, of: KindOf<'_>) -> Arc<Kind> {
        let bucket = self.by_hash.entry(of.hash()).or_default();
        if let Some(kind) = bucket.iter().find(|kind| of.is(kind)) {
            return kind.clone();
        }
        let kind = Arc::new(of.to_kind());
        bucket.push(kind.clone());
        kind
    }

    /// The kind of new saga `saga`.
    pub(super) fn of_new(&mut self, saga: &NewSaga) -> Arc<Kind> {
        self.intern(KindOf {
            saga_type: &saga.header.saga_type,
            definition: saga.definition,
            fingerprint: saga.fingerprint,
            config: &saga.config,
            signals: saga.signals,
            user_id: saga.header.user_id.as_deref(),
            ip_address: saga.header.ip_address.as_deref(),
        })
    }

    /// The kind of record `record` (written by hand).
    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn of_record(&mut self, record: &SagaRecord) -> Arc<Kind> {
        let signals: Vec<&str> = record.signals.iter().map(String::as_str).collect();
        self.intern(KindOf {
            saga_type: &record.saga_type,
            definition: &record.definition,
            fingerprint: &record.fingerprint,
            config: &record.config,
            signals: &signals,
            user_id: record.user_id.as_deref(),
            ip_address: record.ip_address.as_deref(),
        })
    }

    /// Forgets the kinds that no row holds any more (after sagas were deleted).
    pub(super) fn sweep(&mut self) {
        self.by_hash.retain(|_, bucket| {
            bucket.retain(|kind| Arc::strong_count(kind) > 1);
            !bucket.is_empty()
        });
    }
}

/// A step name: the definition's own, or text read back from a record.
pub(super) type Name = Cow<'static, str>;

/// One saga: the fields of a [`SagaRecord`], with those its kind shares behind `kind`.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) kind: Arc<Kind>,
    pub(super) state: SagaState,
    pub(super) parked_from: Option<SagaState>,
    pub(super) step_index: u32,
    pub(super) attempt: u32,
    pub(super) recovery_count: u32,
    pub(super) version: i64,
    pub(super) current_step: Option<Name>,
    pub(super) waiting_for: Option<Name>,
    pub(super) steps: Vec<StepStatus>,
    pub(super) context: String,
    pub(super) error: Option<String>,
    pub(super) failed_step: Option<String>,
    pub(super) owner: Option<Arc<str>>,
    pub(super) cancel_requested: Option<String>,
    pub(super) lease_expires_at: Option<SystemTime>,
    pub(super) wake_at: Option<SystemTime>,
    pub(super) created_at: SystemTime,
    pub(super) updated_at: SystemTime,
}

impl Row {
    /// The row of `record`, written by hand.
    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn from_record(record: SagaRecord, kinds: &mut Kinds) -> Self {
        let kind = kinds.of_record(&record);
        let mut row = Row {
            kind,
            state: record.state,
            parked_from: None,
            step_index: 0,
            attempt: 0,
            recovery_count: 0,
            version: 0,
            current_step: None,
            waiting_for: None,
            steps: Vec::new(),
            context: String::new(),
            error: None,
            failed_step: None,
            owner: None,
            cancel_requested: None,
            lease_expires_at: None,
            wake_at: None,
            created_at: record.created_at,
            updated_at: record.updated_at,
        };
        row.set(record);
        row
    }

    /// Takes every field but the saga's id and kind from `record` (after an operator's
    /// change, which never changes those).
    pub(super) fn set(&mut self, record: SagaRecord) {
        self.state = record.state;
        self.parked_from = record.parked_from;
        self.step_index = record.step_index;
        self.attempt = record.attempt;
        self.recovery_count = record.recovery_count;
        self.version = record.version;
        self.current_step = name(self.current_step.take(), record.current_step);
        self.waiting_for = name(self.waiting_for.take(), record.waiting_for);
        self.steps = record.steps;
        self.context = record.context;
        self.error = record.error;
        self.failed_step = record.failed_step;
        if self.owner.as_deref() != record.owner.as_deref() {
            self.owner = record.owner.map(Arc::from);
        }
        self.cancel_requested = record.cancel_requested;
        self.lease_expires_at = record.lease_expires_at;
        self.wake_at = record.wake_at;
        self.created_at = record.created_at;
        self.updated_at = record.updated_at;
    }

    /// The record of saga `saga_id`, whose row this is.
    pub(super) fn record(&self, saga_id: &str) -> SagaRecord {
        let kind = &*self.kind;
        SagaRecord {
            saga_id: saga_id.to_owned(),
            saga_type: kind.saga_type.clone(),
            definition: kind.definition.clone(),
            fingerprint: kind.fingerprint.clone(),
            state: self.state,
            step_index: self.step_index,
            current_step: self.current_step.as_deref().map(str::to_owned),
            attempt: self.attempt,
            steps: self.steps.clone(),
            context: self.context.clone(),
            config: kind.config.clone(),
            error: self.error.clone(),
            failed_step: self.failed_step.clone(),
            version: self.version,
            owner: self.owner.as_deref().map(str::to_owned),
            lease_expires_at: self.lease_expires_at,
            wake_at: self.wake_at,
            waiting_for: self.waiting_for.as_deref().map(str::to_owned),
            signals: kind.signals.clone(),
            recovery_count: self.recovery_count,
            parked_from: self.parked_from,
            cancel_requested: self.cancel_requested.clone(),
            user_id: kind.user_id.clone(),
            ip_address: kind.ip_address.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// What a query or a claim filter reads of it.
    pub(super) fn listed<'a>(&'a self, saga_id: &'a str) -> crate::store::Listed<'a> {
        crate::store::Listed {
            saga_id,
            saga_type: &self.kind.saga_type,
            state: self.state,
            created_at: self.created_at,
            updated_at: self.updated_at,
            wake_at: self.wake_at,
        }
    }
}

/// `now` as a step name, keeping `was` (and its allocation, or the definition's own text)
/// when they are the same.
fn name(was: Option<Name>, now: Option<String>) -> Option<Name> {
    match (was, now) {
        (Some(was), Some(now)) if *was == *now => Some(was),
        (_, now) => now.map(Cow::Owned),
    }
}

/// `now` as a step name from the definition, keeping `was` when it is the same text.
pub(super) fn step_name(was: &mut Option<Name>, now: Option<&'static str>) {
    if was.as_deref() != now {
        *was = now.map(Cow::Borrowed);
    }
}

/// `now` as the signals a saga waits for, keeping `was` when it is the same text.
pub(super) fn waiting_for(was: &mut Option<Name>, now: Option<&str>) {
    if was.as_deref() != now {
        *was = now.map(|names| Cow::Owned(names.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::{Kinds, Row};
    use crate::definition::SagaState;
    use crate::status::StepStatus;
    use crate::store::SagaRecord;

    fn record(id: &str, config: &str) -> SagaRecord {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        SagaRecord {
            saga_id: id.to_owned(),
            saga_type: "order".to_owned(),
            definition: "order".to_owned(),
            fingerprint: "f".to_owned(),
            state: SagaState::Waiting,
            step_index: 1,
            current_step: Some("charge".to_owned()),
            attempt: 2,
            steps: vec![StepStatus::completed(1, 1), StepStatus::waiting(1)],
            context: "{\"n\":\"é\\u0000\"}".to_owned(),
            config: config.to_owned(),
            error: Some(String::new()),
            failed_step: None,
            version: 7,
            owner: None,
            lease_expires_at: None,
            wake_at: Some(at),
            waiting_for: Some("go".to_owned()),
            signals: vec!["go".to_owned(), "stop".to_owned()],
            recovery_count: 3,
            parked_from: None,
            cancel_requested: Some("ça suffit".to_owned()),
            user_id: Some("ada".to_owned()),
            ip_address: None,
            created_at: at,
            updated_at: at + Duration::from_secs(1),
        }
    }

    #[test]
    fn a_row_gives_back_the_record_it_was_made_of() {
        let mut kinds = Kinds::default();
        let original = record("s-1", "{}");
        let row = Row::from_record(original.clone(), &mut kinds);
        assert_eq!(row.record("s-1"), original);
        let mut owned = original.clone();
        owned.owner = Some("runner".to_owned());
        owned.current_step = None;
        owned.waiting_for = None;
        let mut row = row;
        row.set(owned.clone());
        assert_eq!(row.record("s-1"), owned);
    }

    #[test]
    fn sagas_of_one_kind_share_it_until_none_is_left() {
        let mut kinds = Kinds::default();
        let a = Row::from_record(record("a", "{}"), &mut kinds);
        let b = Row::from_record(record("b", "{}"), &mut kinds);
        let other = Row::from_record(record("c", "{\"retries\":1}"), &mut kinds);
        assert!(Arc::ptr_eq(&a.kind, &b.kind), "one kind, kept once");
        assert!(
            !Arc::ptr_eq(&a.kind, &other.kind),
            "another config, another kind"
        );
        drop((a, b));
        kinds.sweep();
        assert_eq!(kinds.by_hash.values().map(Vec::len).sum::<usize>(), 1);
        drop(other);
        kinds.sweep();
        assert!(kinds.by_hash.is_empty());
    }
}
