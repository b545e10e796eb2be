//! What stores return to readers: sagas, filters over them, counts, and who acts.

use std::time::SystemTime;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::definition::SagaState;
use crate::status::StepStatus;

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
    /// For a `waiting` saga: when it is due, and any runner may claim it and go on.
    pub wake_at: Option<SystemTime>,
    /// For a `waiting` saga: the signals it waits for, if any, their names separated by
    /// spaces (see [`waits_for`](super::waits_for)).
    pub waiting_for: Option<String>,
    /// The names of the signals its definition accepts.
    pub signals: Vec<String>,
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
    /// Only last written before this time (the deployment guide's stuck-saga query, docs/GUIDE.md).
    pub updated_before: Option<SystemTime>,
    /// Only waiting sagas due before this time (overdue waits).
    pub due_before: Option<SystemTime>,
    /// Only created before this time.
    pub created_before: Option<SystemTime>,
    /// Only those whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only those after this one in the listing's order (newest first, then by id,
    /// descending): the next page of a keyset paging.
    pub after: Option<(SystemTime, String)>,
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

    /// Only waiting sagas due before `time`: with a time a little in the past, the waits
    /// no runner has woken although they are due (`saga stuck`).
    #[must_use]
    pub fn due_before(mut self, time: SystemTime) -> Self {
        self.due_before = Some(time);
        self
    }

    /// Only created before `time`.
    #[must_use]
    pub fn created_before(mut self, time: SystemTime) -> Self {
        self.created_before = Some(time);
        self
    }

    /// Only those whose id starts with `prefix`.
    #[must_use]
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = Some(prefix.into());
        self
    }

    /// Only those after the saga created at `created_at` with id `saga_id` in the order of
    /// the listing (newest first, then by id, descending): pass the last row of a page to
    /// get the next one. Stays fast however deep the page (no `OFFSET`).
    #[must_use]
    pub fn after(mut self, created_at: SystemTime, saga_id: impl Into<String>) -> Self {
        self.after = Some((created_at, saga_id.into()));
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
        self.admits(&Listed {
            saga_id: &record.saga_id,
            saga_type: &record.saga_type,
            state: record.state,
            created_at: record.created_at,
            updated_at: record.updated_at,
            wake_at: record.wake_at,
        })
    }

    /// [`SagaQuery::matches`] over the fields it reads, wherever the saga is kept.
    pub(crate) fn admits(&self, saga: &Listed<'_>) -> bool {
        self.state.is_none_or(|s| s == saga.state)
            && self.saga_type.as_ref().is_none_or(|t| *t == saga.saga_type)
            && self.created_since.is_none_or(|t| saga.created_at >= t)
            && self.updated_before.is_none_or(|t| saga.updated_at < t)
            && self.due_before.is_none_or(|t| {
                saga.state == SagaState::Waiting && saga.wake_at.is_some_and(|w| w < t)
            })
            && self.created_before.is_none_or(|t| saga.created_at < t)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|prefix| saga.saga_id.starts_with(prefix.as_str()))
            && self.after.as_ref().is_none_or(|(at, id)| {
                saga.created_at < *at || (saga.created_at == *at && saga.saga_id < id.as_str())
            })
    }
}

/// What a [`SagaQuery`] reads of a saga.
pub(crate) struct Listed<'a> {
    pub(crate) saga_id: &'a str,
    pub(crate) saga_type: &'a str,
    pub(crate) state: SagaState,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
    pub(crate) wake_at: Option<SystemTime>,
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
    /// Of those, how many are `waiting` and were due before the `overdue_before` time, yet
    /// no runner has claimed them.
    pub overdue: u64,
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

/// What [`SagaStore::prune`](super::SagaStore::prune) removed (or would remove, on a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Audit rows older than the cut-off.
    pub audit_rows: u64,
    /// Finished (`completed` or `failed`) sagas last written before the cut-off.
    pub sagas: u64,
}

/// Who asks for an operator action, for the audit row. Made with [`Actor::new`] (new
/// fields may come).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

    /// Sets where the action comes from.
    #[must_use]
    pub fn ip_address(mut self, address: impl Into<String>) -> Self {
        self.ip_address = Some(address.into());
        self
    }
}

impl SagaRecord {
    /// The step names of the saga, from its context as `#[saga]` writes it: one key per step,
    /// in order, after `input`. Empty if the context is not such an object.
    #[must_use]
    pub fn step_names(&self) -> Vec<String> {
        struct Keys(Vec<String>);

        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct KeysVisitor;
                impl<'de> Visitor<'de> for KeysVisitor {
                    type Value = Keys;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a saga context")
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some(key) = map.next_key::<String>()? {
                            map.next_value::<IgnoredAny>()?;
                            if key != "input" {
                                keys.push(key);
                            }
                        }
                        Ok(Keys(keys))
                    }
                }
                deserializer.deserialize_map(KeysVisitor)
            }
        }

        serde_json::from_str::<Keys>(&self.context).map_or_else(|_| Vec::new(), |keys| keys.0)
    }
}
