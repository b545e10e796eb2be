//! [`SagaState`]: where a saga stands in its lifecycle, as stored in the `state` column.

use std::fmt;
use std::str::FromStr;

/// The state of a saga, as stored in the `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaState {
    /// Steps are running forward.
    Running,
    /// Waiting, durably, for a step's delay to pass (or a retry's): no runner holds it
    /// until its `wake_at`, when one claims it and goes on.
    Waiting,
    /// A step failed for good; completed steps are being undone, newest first.
    Compensating,
    /// Every step completed.
    Completed,
    /// A step failed for good and every completed step was compensated.
    Failed,
    /// A compensation gave up. Needs a person: `saga resume` or `saga fail`.
    CompensationFailed,
    /// Parked (dead letter): recovered too often without progress, or stuck past its pivot.
    /// Needs a person: `saga resume` or `saga fail`.
    Parked,
}

impl SagaState {
    /// Every state, in lifecycle order.
    pub const ALL: [SagaState; 7] = [
        SagaState::Running,
        SagaState::Waiting,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Failed,
        SagaState::CompensationFailed,
        SagaState::Parked,
    ];

    /// The name stored in the database: `running`, `compensation_failed`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Waiting => "waiting",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Failed => "failed",
            SagaState::CompensationFailed => "compensation_failed",
            SagaState::Parked => "parked",
        }
    }

    /// Whether a runner is executing it (`running` or `compensating`): what holds a lease,
    /// and what the deployment guide's stuck-saga query looks at (docs/GUIDE.md).
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, SagaState::Running | SagaState::Compensating)
    }

    /// Whether it has not ended and needs no person: executing (`running`,
    /// `compensating`) or `waiting`. What can be cancelled.
    #[must_use]
    pub fn is_live(self) -> bool {
        self.is_active() || self == SagaState::Waiting
    }

    /// Whether it ended for good (`completed` or `failed`).
    #[must_use]
    pub fn is_finished(self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Failed)
    }

    /// Whether it waits for a person (`compensation_failed` or `parked`).
    #[must_use]
    pub fn needs_attention(self) -> bool {
        matches!(self, SagaState::CompensationFailed | SagaState::Parked)
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown saga state `{0}`; expected one of running, waiting, compensating, completed, failed, compensation_failed, parked"
)]
pub struct UnknownState(pub String);

impl FromStr for SagaState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in SagaState::ALL {
            assert_eq!(state.as_str().parse::<SagaState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).ok(),
                Some(format!("\"{}\"", state.as_str()))
            );
        }
        assert!("RUNNING".parse::<SagaState>().is_err());
    }
}
