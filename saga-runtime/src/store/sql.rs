//! What the SQL stores share: migrations, and turning raw column values into records
//! without trusting them (an unknown state or a negative count is an error, not a panic).

use std::borrow::Cow;
use std::time::SystemTime;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::batch::Reply;
use super::{Checkpoint, SagaRecord, Saved, StateCount};
use crate::audit::AuditRecord;
use crate::definition::SagaState;
use crate::error::StoreError;

/// Our migration bookkeeping table, apart from an application's own `_sqlx_migrations`.
pub(crate) const MIGRATIONS_TABLE: &str = "_saga_migrations";

/// A migrator over embedded `(version, description, sql)` files.
pub(crate) fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The migrations of `files` not among `applied` (the versions `_saga_migrations` records
/// as applied; none if the table does not exist yet).
pub(crate) fn pending(
    files: &[(i64, &'static str, &'static str)],
    applied: Result<Vec<i64>, sqlx::Error>,
) -> Result<Vec<(i64, &'static str)>, StoreError> {
    let applied = match applied.map_err(database_error) {
        Ok(applied) => applied,
        Err(StoreError::NotMigrated(_)) => Vec::new(),
        Err(error) => return Err(error),
    };
    Ok(files
        .iter()
        .filter(|(version, _, _)| !applied.contains(version))
        .map(|&(version, description, _)| (version, description))
        .collect())
}

/// Maps "no such table" to [`StoreError::NotMigrated`].
pub(crate) fn database_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        let message = db.message();
        if message.contains("no such table")
            || (message.contains("relation") && message.contains("does not exist"))
        {
            return StoreError::NotMigrated(message.to_owned());
        }
    }
    StoreError::Database(error)
}

/// A `saga_checkpoints` row as read, before validation.
pub(crate) struct RawRecord {
    pub(crate) saga_id: String,
    pub(crate) saga_type: String,
    pub(crate) definition: String,
    pub(crate) fingerprint: String,
    pub(crate) state: String,
    pub(crate) step_index: i64,
    pub(crate) current_step: Option<String>,
    pub(crate) attempt: i64,
    pub(crate) step_status: Option<String>,
    pub(crate) context: String,
    pub(crate) config: String,
    pub(crate) error: Option<String>,
    pub(crate) failed_step: Option<String>,
    pub(crate) version: i64,
    pub(crate) owner: Option<String>,
    pub(crate) lease_expires_at: Option<SystemTime>,
    pub(crate) wake_at: Option<SystemTime>,
    pub(crate) waiting_for: Option<String>,
    /// The accepted signal names as a JSON array, `None` for none.
    pub(crate) signals: Option<String>,
    pub(crate) recovery_count: i64,
    pub(crate) parked_from: Option<String>,
    pub(crate) cancel_requested: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

fn corrupt(saga_id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        saga_id: saga_id.to_owned(),
        reason,
    }
}

fn count(saga_id: &str, column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(saga_id, format!("`{column}` is {value}")))
}

fn state(saga_id: &str, column: &str, value: &str) -> Result<SagaState, StoreError> {
    value
        .parse()
        .map_err(|e| corrupt(saga_id, format!("`{column}`: {e}")))
}

impl RawRecord {
    pub(crate) fn validate(self) -> Result<SagaRecord, StoreError> {
        let id = self.saga_id.as_str();
        let signals = match &self.signals {
            Some(text) => {
                serde_json::from_str(text).map_err(|e| corrupt(id, format!("`signals`: {e}")))?
            }
            None => Vec::new(),
        };
        Ok(SagaRecord {
            state: state(id, "state", &self.state)?,
            step_index: count(id, "step_index", self.step_index)?,
            attempt: count(id, "attempt", self.attempt)?,
            steps: crate::status::decode(self.step_status.as_deref())
                .map_err(|reason| corrupt(id, reason))?,
            recovery_count: count(id, "recovery_count", self.recovery_count)?,
            parked_from: match &self.parked_from {
                Some(value) => Some(state(id, "parked_from", value)?),
                None => None,
            },
            saga_id: self.saga_id,
            saga_type: self.saga_type,
            definition: self.definition,
            fingerprint: self.fingerprint,
            current_step: self.current_step,
            context: self.context,
            config: self.config,
            error: self.error,
            failed_step: self.failed_step,
            version: self.version,
            owner: self.owner,
            lease_expires_at: self.lease_expires_at,
            wake_at: self.wake_at,
            waiting_for: self.waiting_for,
            signals,
            cancel_requested: self.cancel_requested,
            user_id: self.user_id,
            ip_address: self.ip_address,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `saga_audit_logs` row as read.
pub(crate) struct RawAudit {
    pub(crate) id: i64,
    pub(crate) saga_id: String,
    pub(crate) saga_type: String,
    pub(crate) event_type: String,
    pub(crate) step_name: Option<String>,
    pub(crate) attempt: Option<i64>,
    pub(crate) error_message: Option<String>,
    pub(crate) details: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) timestamp: SystemTime,
}

impl RawAudit {
    pub(crate) fn validate(self) -> Result<AuditRecord, StoreError> {
        let attempt = match self.attempt {
            Some(value) => Some(count(&self.saga_id, "attempt", value)?),
            None => None,
        };
        Ok(AuditRecord {
            id: self.id,
            saga_id: self.saga_id,
            saga_type: self.saga_type,
            event_type: self.event_type,
            step_name: self.step_name,
            attempt,
            error_message: self.error_message,
            details: self.details,
            user_id: self.user_id,
            ip_address: self.ip_address,
            timestamp: self.timestamp,
        })
    }
}

/// The `IN (..)` list of the states the recovery loop claims.
pub(crate) const ACTIVE_STATES: &str = "('running', 'compensating')";

/// `(saga_type, state, count, stuck, overdue)` rows into counts; rows with an unknown state
/// are skipped (and logged): statistics must not fail on one bad row.
pub(crate) fn state_counts(rows: Vec<(String, String, i64, i64, i64)>) -> Vec<StateCount> {
    rows.into_iter()
        .filter_map(
            |(saga_type, state, count, stuck, overdue)| match state.parse() {
                Ok(state) => Some(StateCount {
                    saga_type,
                    state,
                    count: u64::try_from(count).unwrap_or(0),
                    stuck: u64::try_from(stuck).unwrap_or(0),
                    overdue: u64::try_from(overdue).unwrap_or(0),
                }),
                Err(error) => {
                    tracing::warn!(%error, %saga_type, "skipping sagas in an unknown state");
                    None
                }
            },
        )
        .collect()
}

/// Why a fenced checkpoint touched no row: a pending cancellation (when the write asked to
/// be refused then), another version, or no row at all. `found` is the row's version and
/// cancellation request.
pub(crate) fn classify_miss(
    cp: &Checkpoint,
    found: Option<&(i64, Option<String>)>,
) -> Result<Reply, StoreError> {
    match found {
        Some((version, Some(reason))) if *version == cp.expected_version && cp.unless_cancelled => {
            Ok(Reply::Saved(Saved::Cancelled {
                reason: reason.clone(),
            }))
        }
        Some((version, _)) => Err(StoreError::Fenced {
            saga_id: cp.saga_id.to_string(),
            expected: cp.expected_version,
            found: Some(*version),
        }),
        None => Err(StoreError::NotFound {
            saga_id: cp.saga_id.to_string(),
        }),
    }
}

/// What an operator action changes in a row, besides owner, lease, version and time: a
/// `SET` clause whose `{1}`, `{2}`, .. are bind parameters, in order, and the audit event.
pub(crate) struct OperatorChange {
    pub(crate) set: String,
    pub(crate) binds: Vec<Option<String>>,
    pub(crate) event: crate::audit::NewEvent,
}

impl OperatorChange {
    /// The `SET` clause with the backend's placeholder for each bind parameter, and its
    /// expression of the current time for `{now}`.
    pub(crate) fn set_clause(&self, placeholder: impl Fn(usize) -> String, now: &str) -> String {
        let mut set = self.set.replace("{now}", now);
        for i in 1..=self.binds.len() {
            set = set.replace(&format!("{{{i}}}"), &placeholder(i));
        }
        set
    }

    /// `saga resume`.
    pub(crate) fn resume(row: &SagaRecord, reason: &str) -> Result<Self, StoreError> {
        let resumed = super::operator::resume(row, reason)?;
        // A row written before statuses were recorded keeps none: the executor derives them.
        let steps = (!resumed.steps.is_empty()).then(|| crate::status::encode(&resumed.steps));
        Ok(OperatorChange {
            // A waiting saga wakes now (`{now}`: the backend's current time) and looks
            // again for what it waits for: a signal wait starts over with a new deadline.
            set: format!(
                "state = {{1}}, step_status = COALESCE({{2}}, step_status), attempt = {}, \
                 parked_from = NULL, recovery_count = 0, \
                 wake_at = CASE WHEN state = 'waiting' THEN {{now}} ELSE wake_at END, \
                 waiting_for = CASE WHEN state = 'waiting' THEN NULL ELSE waiting_for END",
                resumed.attempt
            ),
            binds: vec![Some(resumed.state.as_str().to_owned()), steps],
            event: resumed.event,
        })
    }

    /// `saga undo`: compensating, runnable at once, with the error `undone: <reason>`.
    pub(crate) fn undo(row: &SagaRecord, reason: &str) -> Result<Self, StoreError> {
        let event = super::operator::undo(row, reason)?;
        Ok(OperatorChange {
            set: "state = 'compensating', error = {1}, failed_step = NULL, attempt = 0, \
                  recovery_count = 0, cancel_requested = NULL"
                .to_owned(),
            binds: vec![Some(super::operator::undone_error(reason))],
            event,
        })
    }

    /// `saga fail`.
    pub(crate) fn mark_failed(row: &SagaRecord, reason: &str) -> Result<Self, StoreError> {
        let event = super::operator::mark_failed(row, reason)?;
        Ok(OperatorChange {
            set: "state = 'failed', error = {1}, parked_from = NULL, cancel_requested = NULL, \
                  wake_at = NULL"
                .to_owned(),
            binds: vec![Some(crate::text::clean(reason).into_owned())],
            event,
        })
    }
}

/// The `signals` column of a new saga: its accepted names as a JSON array, `None` for none.
pub(crate) fn signal_names(names: &[&str]) -> Option<String> {
    // A list of strings: serialization cannot fail.
    (!names.is_empty()).then(|| serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned()))
}
