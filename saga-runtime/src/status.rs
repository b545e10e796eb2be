//! [`StepStatus`]: what each step of a saga has done, recorded explicitly in every checkpoint
//! (the `step_status` column) rather than inferred from the context. A step whose output is
//! `()` or `None` serializes as JSON `null`, which says nothing about whether it ran; its
//! status does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a step itself has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// No attempt has started.
    #[default]
    NotStarted,
    /// Attempt [`StepStatus::attempt`] started and has not ended (or its runner stopped).
    Running,
    /// Attempt [`StepStatus::attempt`] failed; the next one starts after a delay.
    Retrying,
    /// The next attempt (after [`StepStatus::attempt`] started ones) waits, durably, for the
    /// step's `delay` or a long `retry_after`: the saga is `waiting` until its `wake_at`.
    Waiting,
    /// An attempt succeeded: the step's output is in the context.
    Completed,
    /// The step failed for good and had no effect.
    Failed,
    /// The step failed for good, but its last attempt timed out or was cut short: its effect
    /// may have happened.
    Unknown,
}

impl RunStatus {
    /// The stored name: `not_started`, `running`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::NotStarted => "not_started",
            RunStatus::Running => "running",
            RunStatus::Retrying => "retrying",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Unknown => "unknown",
        }
    }
}

/// What a waiting step waits for, before its next attempt (or, for a child step, for its
/// attempt to end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WaitFor {
    /// The step's `delay`, before its first attempt.
    Delay,
    /// A retry whose delay is longer than the lease.
    Retry,
    /// The step's `#[signal]`, until its deadline.
    Signal,
    /// The child saga the step started, until its deadline.
    Child,
}

impl WaitFor {
    /// The stored name: `delay`, `retry`, `signal` or `child`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Delay => "delay",
            WaitFor::Retry => "retry",
            WaitFor::Signal => "signal",
            WaitFor::Child => "child",
        }
    }

    /// Whether the wait ends when something arrives (a signal, a child's end), with
    /// [`StepStatus::until`] as its deadline, rather than when its time comes.
    #[must_use]
    pub fn has_deadline(self) -> bool {
        matches!(self, WaitFor::Signal | WaitFor::Child)
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the undoing of a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompensationStatus {
    /// Not undone (a step that did not complete, a saga that did not fail, or a step
    /// without a compensation).
    #[default]
    None,
    /// Compensation attempt [`StepStatus::compensation_attempt`] started and has not ended,
    /// or gave up (the saga is then `compensation_failed`).
    Compensating,
    /// The compensation completed.
    Compensated,
    /// The step's outcome is unknown and its compensation needs the step's output, so it
    /// could not run (`compensation_skipped` in the audit log).
    Skipped,
}

impl CompensationStatus {
    /// The stored name: `none`, `compensating`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CompensationStatus::None => "none",
            CompensationStatus::Compensating => "compensating",
            CompensationStatus::Compensated => "compensated",
            CompensationStatus::Skipped => "skipped",
        }
    }
}

/// The status of one step of a saga, by step index in
/// [`SagaRecord::steps`](crate::SagaRecord::steps): what the step did, and whether it was
/// undone.
///
/// Stored as one JSON object per step in the `step_status` column, for example
/// `{"run":"completed","attempt":2,"order":1,"compensation":"compensating","compensation_attempt":1}`;
/// fields at their defaults are left out, and unknown fields are ignored when read.
///
/// ```
/// use saga_runtime::{RunStatus, StepStatus};
///
/// let status = StepStatus::completed(2, 1);
/// assert_eq!(status.run, RunStatus::Completed);
/// assert_eq!(status.phase(), "completed");
/// assert!(status.has_output());
/// assert_eq!(status.to_string(), "completed (attempt 2)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StepStatus {
    /// What the step did.
    pub run: RunStatus,
    /// Attempts of the step started, interrupted ones included.
    #[serde(skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// When the step's run ended (completed, or unknown), counted from 1 across the saga's
    /// steps: compensations run newest first by this order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Whether the step was undone.
    #[serde(skip_serializing_if = "is_none")]
    pub compensation: CompensationStatus,
    /// Attempts of the compensation started, interrupted ones included.
    #[serde(skip_serializing_if = "is_zero")]
    pub compensation_attempt: u32,
    /// While the step waits: what for.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
    /// While the step waits: until when, in milliseconds since the UNIX epoch by the
    /// store's clock. For a delay, when it is over; for a signal or a child, the deadline
    /// of the wait, set once when the wait begins and kept when a signal that does not
    /// decode wakes the saga, so that the wait goes on to the same deadline.
    #[serde(alias = "deadline_ms", skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // the signature serde's `skip_serializing_if` asks for
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // as above
fn is_none(c: &CompensationStatus) -> bool {
    *c == CompensationStatus::None
}

impl StepStatus {
    /// A step that has not started.
    #[must_use]
    pub const fn not_started() -> Self {
        StepStatus {
            run: RunStatus::NotStarted,
            attempt: 0,
            order: None,
            compensation: CompensationStatus::None,
            compensation_attempt: 0,
            wait: None,
            until_ms: None,
        }
    }

    /// A step whose attempt `attempt` is in flight.
    #[must_use]
    pub const fn running(attempt: u32) -> Self {
        StepStatus {
            run: RunStatus::Running,
            attempt,
            ..StepStatus::not_started()
        }
    }

    /// A step whose next attempt waits durably, after `attempts` started ones.
    #[must_use]
    pub const fn waiting(attempts: u32) -> Self {
        StepStatus {
            run: RunStatus::Waiting,
            attempt: attempts,
            ..StepStatus::not_started()
        }
    }

    /// A step that waits for `what` after `attempts` started attempts, until `until` (the
    /// end of a delay, or the deadline of a wait for a signal or a child).
    #[must_use]
    pub fn waiting_until(attempts: u32, what: WaitFor, until: std::time::SystemTime) -> Self {
        let ms = until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        StepStatus {
            wait: Some(what),
            until_ms: Some(ms),
            ..StepStatus::waiting(attempts)
        }
    }

    /// Until when the step waits, if it waits: the end of its delay, or its deadline.
    #[must_use]
    pub fn until(&self) -> Option<std::time::SystemTime> {
        self.until_ms
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    }

    /// The deadline of the step's wait for its signal or its child, if it waits for one
    /// (a row written before waits recorded what they are for counts as such a wait).
    #[must_use]
    pub fn deadline(&self) -> Option<std::time::SystemTime> {
        match self.wait {
            None => self.until(),
            Some(what) if what.has_deadline() => self.until(),
            Some(_) => None,
        }
    }

    /// A step that completed at attempt `attempt`, as the `order`-th of its saga.
    #[must_use]
    pub const fn completed(attempt: u32, order: u32) -> Self {
        StepStatus {
            run: RunStatus::Completed,
            attempt,
            order: Some(order),
            ..StepStatus::not_started()
        }
    }

    /// The status in one word, as the design names it: `not_started`, `running`,
    /// `retrying`, `waiting`, `completed`, `failed`, `unknown`, `compensating`, `compensated` or
    /// `compensation_skipped`.
    #[must_use]
    pub fn phase(&self) -> &'static str {
        match self.compensation {
            CompensationStatus::Compensating => "compensating",
            CompensationStatus::Compensated => "compensated",
            CompensationStatus::Skipped => "compensation_skipped",
            CompensationStatus::None => self.run.as_str(),
        }
    }

    /// Whether the step completed, so that its output is in the context (also while and
    /// after it is undone).
    #[must_use]
    pub fn has_output(&self) -> bool {
        self.run == RunStatus::Completed
    }

    /// Whether the step's run ended (completed, failed or unknown).
    #[must_use]
    pub fn has_ended(&self) -> bool {
        matches!(
            self.run,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Unknown
        )
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phase())?;
        match (self.compensation, self.run) {
            (CompensationStatus::Compensating, _) => {
                write!(f, " (attempt {})", self.compensation_attempt)
            }
            (CompensationStatus::None, RunStatus::NotStarted) => Ok(()),
            (CompensationStatus::None, RunStatus::Waiting) => match self.wait {
                Some(WaitFor::Child) => write!(f, " for its child (attempt {})", self.attempt),
                Some(WaitFor::Retry) => {
                    write!(
                        f,
                        " to retry (for attempt {})",
                        self.attempt.saturating_add(1)
                    )
                }
                Some(what) => write!(
                    f,
                    " for its {what} (for attempt {})",
                    self.attempt.saturating_add(1)
                ),
                None => write!(f, " (for attempt {})", self.attempt.saturating_add(1)),
            },
            (CompensationStatus::None, _) => write!(f, " (attempt {})", self.attempt),
            _ => Ok(()),
        }
    }
}

/// The statuses as stored in the `step_status` column: a JSON array, one object per step.
#[cfg_attr(not(feature = "_sqlx"), allow(dead_code))] // only the SQL stores store text
pub(crate) fn encode(steps: &[StepStatus]) -> String {
    // Plain structs of enums and integers: serialization cannot fail.
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads the `step_status` column; `None` (a row written before statuses were recorded)
/// reads as no statuses, which the executor derives from the rest of the row.
///
/// # Errors
/// What serde said, for a value that is not such an array.
#[cfg_attr(not(feature = "_sqlx"), allow(dead_code))]
pub(crate) fn decode(column: Option<&str>) -> Result<Vec<StepStatus>, String> {
    match column {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("`step_status`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_compactly() {
        let steps = [
            StepStatus::completed(2, 1),
            StepStatus {
                compensation: CompensationStatus::Compensating,
                compensation_attempt: 3,
                ..StepStatus::completed(1, 2)
            },
            StepStatus::running(1),
            StepStatus::not_started(),
        ];
        let text = encode(&steps);
        assert_eq!(
            text,
            r#"[{"run":"completed","attempt":2,"order":1},{"run":"completed","attempt":1,"order":2,"compensation":"compensating","compensation_attempt":3},{"run":"running","attempt":1},{"run":"not_started"}]"#
        );
        assert_eq!(decode(Some(&text)), Ok(steps.to_vec()));
        assert_eq!(decode(None), Ok(Vec::new()));
    }

    #[test]
    fn rows_of_other_versions_decode() {
        // Missing fields take their defaults; unknown ones are ignored.
        let read = decode(Some(r#"[{"run":"completed","future_field":[1,2]},{}]"#)).unwrap();
        assert_eq!(read[0].run, RunStatus::Completed);
        assert_eq!(read[0].attempt, 0);
        assert_eq!(read[1], StepStatus::not_started());
        assert!(decode(Some(r#"[{"run":"exploded"}]"#)).is_err());
        assert!(decode(Some("{}")).is_err());
        assert!(decode(Some("")).is_err());
    }

    #[test]
    fn phases_and_display() {
        let mut status = StepStatus::completed(3, 1);
        assert_eq!(status.to_string(), "completed (attempt 3)");
        status.compensation = CompensationStatus::Compensated;
        assert_eq!(status.phase(), "compensated");
        assert!(status.has_output());
        assert_eq!(StepStatus::not_started().to_string(), "not_started");
        assert_eq!(StepStatus::running(2).to_string(), "running (attempt 2)");
    }
}
