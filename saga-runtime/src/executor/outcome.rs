//! What a run returns: [`Outcome`] and its [`Failure`].

use std::fmt;

use super::codec::{check_record, decode};
use crate::definition::{Saga, SagaState};
use crate::error::SagaError;
use crate::store::SagaRecord;

/// Why a saga failed: the error that caused compensation (or parking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub(crate) step: Option<String>,
    pub(crate) message: String,
}

impl Failure {
    /// A failure with `message` as it is stored (see [`NewEvent::error`]).
    pub(crate) fn new(step: Option<&str>, message: String) -> Self {
        Failure {
            step: step.map(str::to_owned),
            message: crate::text::clean_owned(message),
        }
    }

    /// The step that failed, if a step failed (not for a cancellation).
    #[must_use]
    pub fn step(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// What went wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step `{step}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How a saga ended (or stands): its id, state, typed context and the error that caused
/// compensation.
pub struct Outcome<S: Saga> {
    pub(crate) saga_id: String,
    pub(crate) state: SagaState,
    pub(crate) step_index: usize,
    pub(crate) context: S::Context,
    pub(crate) failure: Option<Failure>,
    pub(crate) existing: bool,
}

impl<S: Saga> fmt::Debug for Outcome<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("saga_id", &self.saga_id)
            .field("state", &self.state)
            .field("failure", &self.failure)
            .field("existing", &self.existing)
            .finish_non_exhaustive()
    }
}

impl<S: Saga> Outcome<S> {
    /// A stored saga as it stands, read without running anything.
    pub(crate) fn from_record(record: SagaRecord, existing: bool) -> Result<Self, SagaError> {
        if record.definition != S::DEFINITION.name() {
            return Err(SagaError::IdConflict {
                saga_id: record.saga_id,
                existing: record.definition,
            });
        }
        check_record::<S>(&record)?;
        // An outcome is read whatever its size: it is already in memory and changes nothing.
        let context = decode::<S>(&record, usize::MAX)?.ctx;
        Ok(Outcome {
            failure: record.error.map(|message| Failure {
                step: record.failed_step,
                message,
            }),
            saga_id: record.saga_id,
            state: record.state,
            step_index: record.step_index as usize,
            context,
            existing,
        })
    }

    /// The saga's id.
    #[must_use]
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Its state: `Completed`, `Failed`, `CompensationFailed` or `Parked` after a run; any
    /// state for an existing saga read as it stands.
    #[must_use]
    pub fn state(&self) -> SagaState {
        self.state
    }

    /// The typed state (the generated enum).
    #[must_use]
    pub fn typed_state(&self) -> Option<S::State> {
        S::state_of(self.state, self.step_index)
    }

    /// Whether every step completed.
    #[must_use]
    pub fn is_completed(&self) -> bool {
        self.state == SagaState::Completed
    }

    /// The typed context: the input and every completed step's output.
    #[must_use]
    pub fn context(&self) -> &S::Context {
        &self.context
    }

    /// Takes the context.
    #[must_use]
    pub fn into_context(self) -> S::Context {
        self.context
    }

    /// The error that caused compensation, parking or cancellation.
    #[must_use]
    pub fn error(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the saga existed before this call (idempotent start, or `recover` of a saga
    /// that had already ended).
    #[must_use]
    pub fn is_existing(&self) -> bool {
        self.existing
    }
}
