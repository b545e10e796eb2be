//! The rules of the operator actions, shared by every store: which states allow what, and
//! what the row becomes. The stores apply the result atomically.

use super::{Actor, SagaRecord};
use crate::audit::{AuditHeader, EventType, NewEvent};
use crate::definition::SagaState;
use crate::error::StoreError;
use crate::status::{CompensationStatus, RunStatus, StepStatus};
use crate::text::clean;

/// What a resumed row becomes.
pub(crate) struct Resumed {
    pub(crate) state: SagaState,
    /// Attempts started of the current step: 0 gives a fresh retry budget.
    pub(crate) attempt: u32,
    /// The step statuses, with the current step's budget reset to match `attempt`.
    pub(crate) steps: Vec<StepStatus>,
    pub(crate) event: NewEvent,
}

fn refuse(row: &SagaRecord, action: &'static str) -> StoreError {
    StoreError::InvalidState {
        saga_id: row.saga_id.clone(),
        state: row.state,
        action,
    }
}

/// `saga resume`: parked and `compensation_failed` sagas get a fresh budget for their
/// current step; stuck active ones keep theirs (the interrupted attempt counts); waiting
/// ones become due at once.
pub(crate) fn resume(row: &SagaRecord, reason: &str) -> Result<Resumed, StoreError> {
    let (state, attempt) = match row.state {
        SagaState::Parked => (row.parked_from.unwrap_or(SagaState::Running), 0),
        SagaState::CompensationFailed => (SagaState::Compensating, 0),
        // A waiting saga stays waiting, due now: the runner that claims it wakes it.
        SagaState::Running | SagaState::Compensating | SagaState::Waiting => {
            (row.state, row.attempt)
        }
        _ => return Err(refuse(row, "resume")),
    };
    let mut steps = row.steps.clone();
    if attempt == 0
        && state != SagaState::Waiting
        && let Some(step) = steps.get_mut(row.step_index as usize)
    {
        // A fresh budget for the step that stopped: it runs again from attempt 1, or its
        // compensation does.
        if state == SagaState::Compensating {
            step.compensation = CompensationStatus::Compensating;
            step.compensation_attempt = 0;
        } else {
            *step = StepStatus {
                run: RunStatus::Running,
                attempt: 0,
                order: None,
                ..*step
            };
        }
    }
    let event = NewEvent::now(EventType::OperatorResumed)
        .error(reason)
        .details(format!(r#"{{"from":"{}","to":"{}"}}"#, row.state, state));
    Ok(Resumed {
        state,
        attempt,
        steps,
        event,
    })
}

/// `saga fail`: any unfinished saga may be closed by hand.
/// Why a cancellation changed no row: the saga `existing` (if any) is not running or
/// waiting.
#[cfg_attr(not(feature = "_sqlx"), allow(dead_code))] // the SQL stores'
pub(crate) fn cancel_refused(existing: Option<SagaRecord>, saga_id: &str) -> StoreError {
    match existing {
        Some(record) => StoreError::InvalidState {
            saga_id: record.saga_id,
            state: record.state,
            action: "cancel",
        },
        None => StoreError::NotFound {
            saga_id: saga_id.to_owned(),
        },
    }
}

/// The audit header and `cancel_requested` event of a cancellation of `record`.
#[cfg_attr(not(feature = "_sqlx"), allow(dead_code))] // the SQL stores'
pub(crate) fn cancel_requested(
    record: &SagaRecord,
    actor: &Actor,
    reason: &str,
) -> (AuditHeader, NewEvent) {
    (
        header(record, actor),
        NewEvent::now(EventType::CancelRequested).error(reason),
    )
}

pub(crate) fn mark_failed(row: &SagaRecord, reason: &str) -> Result<NewEvent, StoreError> {
    if row.state.is_finished() {
        return Err(refuse(row, "mark it failed"));
    }
    Ok(NewEvent::now(EventType::OperatorFailed)
        .error(reason)
        .details(format!(r#"{{"from":"{}"}}"#, row.state)))
}

/// `saga undo`: a completed saga is compensated, newest step first, by the runner that
/// takes it next, and ends `failed` with the error `undone: <reason>`. (The runner refuses
/// one past its pivot, which only the definition knows.)
pub(crate) fn undo(row: &SagaRecord, reason: &str) -> Result<NewEvent, StoreError> {
    if row.state != SagaState::Completed {
        return Err(refuse(row, "undo it (only a completed saga can be undone)"));
    }
    Ok(NewEvent::now(EventType::SagaUndone)
        .error(reason)
        .details(r#"{"from":"completed"}"#))
}

/// The error an undone saga is left with.
pub(crate) fn undone_error(reason: &str) -> String {
    format!("undone: {}", clean(reason))
}

/// The audit header of an operator action: the saga's type, the operator as user.
pub(crate) fn header(row: &SagaRecord, actor: &Actor) -> AuditHeader {
    header_of(&row.saga_type, actor)
}

/// [`header`] for a saga of type `saga_type`.
pub(crate) fn header_of(saga_type: &str, actor: &Actor) -> AuditHeader {
    AuditHeader {
        saga_type: saga_type.to_owned(),
        user_id: Some(clean(&actor.user_id).into_owned()),
        ip_address: actor.ip_address.as_deref().map(|ip| clean(ip).into_owned()),
    }
}

/// The saga id of audit rows about the whole log (pruning).
pub(crate) const WHOLE_LOG: &str = "*";

/// The audit row of a prune, written with it.
pub(crate) fn pruned(
    before: std::time::SystemTime,
    report: super::PruneReport,
    actor: &Actor,
) -> (AuditHeader, NewEvent) {
    let header = AuditHeader {
        saga_type: WHOLE_LOG.to_owned(),
        user_id: Some(clean(&actor.user_id).into_owned()),
        ip_address: actor.ip_address.as_deref().map(|ip| clean(ip).into_owned()),
    };
    let event = NewEvent::now(EventType::OperatorPruned).details(format!(
        r#"{{"before":"{}","audit_rows":{},"sagas":{}}}"#,
        humantime::format_rfc3339_seconds(before),
        report.audit_rows,
        report.sagas
    ));
    (header, event)
}

/// The largest signal payload accepted, in bytes.
pub(crate) const MAX_SIGNAL_BYTES: usize = 1 << 20;

/// Refuses a signal no store should keep: a name or key that is not a label, a payload that
/// is not JSON or is larger than [`MAX_SIGNAL_BYTES`].
pub(crate) fn validate_signal(signal: &super::NewSignal) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        what: "signal",
        reason,
    };
    crate::text::check_label(&signal.saga_id).map_err(|r| invalid(format!("saga id {r}")))?;
    crate::text::check_label(&signal.name).map_err(|r| invalid(format!("name {r}")))?;
    if let Some(key) = &signal.key {
        crate::text::check_label(key).map_err(|r| invalid(format!("key {r}")))?;
    }
    if signal.payload.len() > MAX_SIGNAL_BYTES {
        return Err(invalid(format!(
            "payload is {} bytes; at most {MAX_SIGNAL_BYTES} are accepted",
            signal.payload.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&signal.payload)
        .map_err(|e| invalid(format!("payload is not JSON: {e}")))?;
    Ok(())
}

/// The checks every store makes before it stores a signal: the saga has not ended and
/// accepts the name.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn check_signal(record: &SagaRecord, name: &str) -> Result<(), StoreError> {
    check_signal_of(&record.saga_id, record.state, &record.signals, name)
}

/// [`check_signal`] for saga `saga_id`, in `state`, accepting `signals`.
pub(crate) fn check_signal_of(
    saga_id: &str,
    state: SagaState,
    signals: &[String],
    name: &str,
) -> Result<(), StoreError> {
    if state.is_finished() {
        return Err(StoreError::InvalidState {
            saga_id: saga_id.to_owned(),
            state,
            action: "signal it",
        });
    }
    if !signals.iter().any(|accepted| accepted == name) {
        return Err(StoreError::UnknownSignal {
            saga_id: saga_id.to_owned(),
            name: name.to_owned(),
            accepted: signals.to_vec(),
        });
    }
    Ok(())
}

/// Whether `error` is a store's refusal of a signal (no such saga, a name it does not
/// accept, a saga that ended, an invalid signal), which a checkpoint's
/// [`tell`](super::Checkpoint::tell) ignores.
pub(crate) fn is_refusal(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::NotFound { .. }
            | StoreError::UnknownSignal { .. }
            | StoreError::InvalidState { .. }
            | StoreError::Invalid { .. }
    )
}

/// The `signal_received` event of a stored signal.
pub(crate) fn received(id: i64, signal: &super::NewSignal) -> NewEvent {
    let details = serde_json::json!({ "signal_id": id, "key": signal.key }).to_string();
    NewEvent::now(EventType::SignalReceived)
        .step(crate::text::clean(&signal.name).into_owned())
        .details(details)
}
