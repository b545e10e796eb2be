//! Rows to typed sagas and back: the context, the config and the step statuses. Every check
//! that can refuse a row happens here, before anything is claimed or written.

use crate::config::SagaConfig;
use crate::definition::{Definition, Saga, SagaState};
use crate::error::{SagaError, StoreError};
use crate::outputs::Outputs;
use crate::status::{CompensationStatus, RunStatus, StepStatus};
use crate::store::SagaRecord;

/// A row's typed context and its step statuses.
pub(crate) struct Decoded<C> {
    pub(crate) ctx: C,
    pub(crate) steps: Vec<StepStatus>,
}

/// Refuses rows of another definition or shape before anything is changed.
pub(crate) fn check_record<S: Saga>(record: &SagaRecord) -> Result<(), SagaError> {
    let def = S::DEFINITION;
    if record.definition != def.name() || record.fingerprint != def.fingerprint() {
        return Err(SagaError::FingerprintMismatch {
            saga_id: record.saga_id.clone(),
            stored_definition: record.definition.clone(),
            stored_fingerprint: record.fingerprint.clone(),
            definition: def.name(),
            fingerprint: def.fingerprint(),
        });
    }
    if record.state.is_live() && record.step_index as usize >= def.steps().len() {
        return Err(corrupt(
            record,
            format!(
                "step index {} is out of range for `{}` ({} steps)",
                record.step_index,
                def.name(),
                def.steps().len()
            ),
        ));
    }
    if !record.steps.is_empty() && record.steps.len() != def.steps().len() {
        return Err(corrupt(
            record,
            format!(
                "`step_status` has {} entries for `{}`'s {} steps",
                record.steps.len(),
                def.name(),
                def.steps().len()
            ),
        ));
    }
    Ok(())
}

fn corrupt(record: &SagaRecord, reason: String) -> SagaError {
    SagaError::Store(StoreError::Corrupt {
        saga_id: record.saga_id.clone(),
        reason,
    })
}

/// Serializes a context, with the outputs in `pending` not moved into it yet, within `limit`
/// bytes.
pub(crate) fn encode_context<S: Saga>(
    saga_id: &str,
    context: &S::Context,
    pending: Option<&Outputs>,
    limit: usize,
) -> Result<String, SagaError> {
    let json = S::encode_context(context, pending).map_err(|reason| SagaError::Encode {
        saga_id: saga_id.to_owned(),
        reason,
    })?;
    if json.len() > limit {
        return Err(SagaError::ContextTooLarge {
            saga_id: saga_id.to_owned(),
            size: json.len(),
            limit,
        });
    }
    Ok(json)
}

/// Decodes a stored context and the step statuses, refusing a context above `limit` bytes
/// (a row written by hand or by a runner with a higher limit) before serde reads it. The
/// output of every completed step is in the returned context, also when it was stored as
/// JSON `null` (`()`, `None`, a unit struct).
pub(crate) fn decode<S: Saga>(
    record: &SagaRecord,
    limit: usize,
) -> Result<Decoded<S::Context>, SagaError> {
    if record.context.len() > limit {
        return Err(SagaError::ContextTooLarge {
            saga_id: record.saga_id.clone(),
            size: record.context.len(),
            limit,
        });
    }
    let decode_error = |reason: String| SagaError::Decode {
        saga_id: record.saga_id.clone(),
        definition: S::DEFINITION.name(),
        reason,
    };
    let steps = if record.steps.is_empty() {
        // Written before statuses were recorded: what the context shows helps derive them.
        let plain = S::decode_context(&record.context, &[]).map_err(decode_error)?;
        legacy_statuses(S::DEFINITION, record, |step| S::has_output(&plain, step))
    } else {
        record.steps.clone()
    };
    let completed: Vec<bool> = steps.iter().map(StepStatus::has_output).collect();
    let ctx = S::decode_context(&record.context, &completed).map_err(decode_error)?;
    Ok(Decoded { ctx, steps })
}

/// Everything that must decode before a runner claims `record` to resume it: a row that
/// fails is left exactly as it is.
pub(crate) fn check_resumable<S: Saga>(record: &SagaRecord, limit: usize) -> Result<(), SagaError> {
    check_record::<S>(record)?;
    decode::<S>(record, limit)?;
    decode_config(record)?;
    Ok(())
}

/// Decodes the stored config. Fields added by later versions are ignored, and fields this
/// version has but the row lacks take their defaults.
pub(crate) fn decode_config(record: &SagaRecord) -> Result<SagaConfig, SagaError> {
    serde_json::from_str(&record.config)
        .map_err(|e| corrupt(record, format!("config does not decode: {e}")))
}

/// The step statuses of a row written before they were recorded, from its state, step index
/// and attempt, which is what that version's executor went by: a running saga at step `k`
/// had completed every step before `k`; one compensating step `k` had completed every step
/// up to `k` and undone those after it. Above the step of a compensating or finished saga,
/// an output in the context is the only trace left of what ran (an output that serialized
/// as `null` left none), which only matters for display: no runner acts on those steps again.
pub(crate) fn legacy_statuses(
    def: &Definition,
    record: &SagaRecord,
    has_output: impl Fn(usize) -> bool,
) -> Vec<StepStatus> {
    let count = def.steps().len();
    let current = (record.step_index as usize).min(count.saturating_sub(1));
    let order = |index: usize| u32::try_from(index + 1).unwrap_or(u32::MAX);
    let done = |index: usize| StepStatus::completed(1, order(index));
    let after = |index: usize| -> StepStatus {
        let spec = &def.steps()[index];
        if has_output(index) {
            let mut status = done(index);
            if spec.compensation().is_some() {
                status.compensation = CompensationStatus::Compensated;
            }
            status
        } else if record.failed_step.as_deref() == Some(spec.name()) {
            StepStatus {
                run: RunStatus::Failed,
                attempt: 1,
                ..StepStatus::not_started()
            }
        } else {
            StepStatus::not_started()
        }
    };
    let backward = matches!(
        record.state,
        SagaState::Compensating | SagaState::CompensationFailed
    ) || (record.state == SagaState::Parked
        && record.parked_from == Some(SagaState::Compensating));
    (0..count)
        .map(|index| match record.state {
            SagaState::Completed => done(index),
            SagaState::Failed => after(index),
            _ if index < current => done(index),
            _ if index > current => {
                if backward {
                    after(index)
                } else {
                    StepStatus::not_started()
                }
            }
            _ if backward => StepStatus {
                run: if has_output(index) {
                    RunStatus::Completed
                } else {
                    RunStatus::Unknown
                },
                attempt: 1,
                order: Some(order(index)),
                compensation: CompensationStatus::Compensating,
                compensation_attempt: record.attempt,
                wait: None,
                until_ms: None,
            },
            _ if record.attempt == 0 => StepStatus::not_started(),
            _ => StepStatus::running(record.attempt),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::definition::{BackoffSpec, CompensationSpec, StepSpec};

    const fn step(name: &'static str, compensated: bool) -> StepSpec {
        StepSpec {
            name,
            timeout: None,
            retries: None,
            backoff: BackoffSpec {
                initial: None,
                multiplier: None,
                max: None,
                jitter: None,
            },
            pivot: false,
            concurrent: false,
            depends_on: &[],
            delay: None,
            signal: None,
            child: false,
            compensation: if compensated {
                Some(CompensationSpec {
                    name: "undo",
                    uses_own_output: false,
                    timeout: None,
                    retries: None,
                })
            } else {
                None
            },
        }
    }

    static DEF: Definition = Definition {
        name: "legacy",
        fingerprint: "0",
        steps: &[
            step("a", true),
            step("b", false),
            step("c", true),
            step("d", true),
        ],
        signals: &[],
    };

    fn row(state: SagaState, step_index: u32, attempt: u32) -> SagaRecord {
        SagaRecord {
            saga_id: "x".into(),
            saga_type: "legacy".into(),
            definition: "legacy".into(),
            fingerprint: "0".into(),
            state,
            step_index,
            current_step: None,
            attempt,
            steps: Vec::new(),
            context: String::new(),
            config: String::new(),
            error: None,
            failed_step: Some("d".into()),
            version: 1,
            owner: None,
            lease_expires_at: None,
            wake_at: None,
            waiting_for: None,
            signals: Vec::new(),
            recovery_count: 0,
            parked_from: None,
            cancel_requested: None,
            user_id: None,
            ip_address: None,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn phases(record: &SagaRecord, outputs: [bool; 4]) -> Vec<String> {
        legacy_statuses(&DEF, record, |i| outputs[i])
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn legacy_rows_read_as_their_version_ran_them() {
        // Running at `c`, attempt 2: `a` and `b` completed, whatever their outputs say.
        assert_eq!(
            phases(&row(SagaState::Running, 2, 2), [false, false, false, false]),
            [
                "completed (attempt 1)",
                "completed (attempt 1)",
                "running (attempt 2)",
                "not_started"
            ]
        );
        // Enqueued, never picked up.
        assert_eq!(
            phases(&row(SagaState::Running, 0, 0), [false; 4]),
            ["not_started"; 4]
        );
        // Compensating `c` after `d` failed: `c` completed and is being undone (attempt 3).
        assert_eq!(
            phases(
                &row(SagaState::Compensating, 2, 3),
                [true, false, true, false]
            ),
            [
                "completed (attempt 1)",
                "completed (attempt 1)",
                "compensating (attempt 3)",
                "failed (attempt 1)"
            ]
        );
        // A compensation that gave up on `a`, whose own step's outcome was unknown.
        let gave_up = legacy_statuses(&DEF, &row(SagaState::CompensationFailed, 0, 2), |_| false);
        assert_eq!(gave_up[0].run, RunStatus::Unknown);
        assert_eq!(gave_up[0].compensation, CompensationStatus::Compensating);
        // Finished sagas: what the context shows.
        assert_eq!(
            phases(&row(SagaState::Completed, 3, 1), [false; 4]),
            ["completed (attempt 1)"; 4]
        );
        assert_eq!(
            phases(&row(SagaState::Failed, 0, 1), [true, true, false, false]),
            [
                "compensated",
                "completed (attempt 1)",
                "not_started",
                "failed (attempt 1)"
            ]
        );
        // A step index past the end (a corrupt row) does not panic.
        assert_eq!(
            legacy_statuses(&DEF, &row(SagaState::Running, 99, 1), |_| false).len(),
            4
        );
    }
}
