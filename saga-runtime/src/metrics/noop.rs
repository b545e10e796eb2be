//! The metrics API when the `metrics` feature is off: records nothing.

use std::time::Duration;

use crate::definition::{Definition, SagaState};

/// Saga metrics. The `metrics` feature is off, so this records nothing.
#[derive(Debug, Clone, Default)]
pub struct SagaMetrics;

impl SagaMetrics {
    /// Metrics that record nothing.
    #[must_use]
    pub fn disabled() -> Self {
        SagaMetrics
    }

    /// Whether anything is recorded: never, without the `metrics` feature.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        false
    }

    #[allow(clippy::unused_self)] // same API as the Prometheus version
    pub(crate) fn set_state_counts(&self, _counts: &[crate::store::StateCount]) {}

    #[allow(clippy::unused_self)] // same API as the Prometheus version
    pub(crate) fn for_type(
        &self,
        _saga_type: &str,
        _definition: &'static Definition,
    ) -> TypeMetrics {
        TypeMetrics
    }
}

/// Metric handles of one saga type (nothing here).
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeMetrics;

#[allow(clippy::unused_self)] // same API as the Prometheus version
impl TypeMetrics {
    pub(crate) fn disabled() -> Self {
        TypeMetrics
    }

    pub(crate) fn is_enabled(&self) -> bool {
        false
    }
    pub(crate) fn saga_started(&self) {}
    pub(crate) fn running_inc(&self) {}
    pub(crate) fn running_dec(&self) {}
    pub(crate) fn saga_finished(&self, _state: SagaState, _elapsed: Duration) {}
    pub(crate) fn step_attempt(&self, _step: usize, _elapsed: Duration) {}
    pub(crate) fn step_failed(&self, _step: usize, _error_type: &str) {}
    pub(crate) fn step_retried(&self, _step: usize) {}
    pub(crate) fn compensation_executed(&self) {}
    pub(crate) fn compensation_failed(&self) {}
    pub(crate) fn recovered(&self) {}
    pub(crate) fn waiting(&self) {}
    pub(crate) fn woken(&self) {}
    pub(crate) fn signal_taken(&self) {}
    pub(crate) fn signal_rejected(&self) {}
    pub(crate) fn parked(&self) {}
}
