//! Runner-wide settings, their defaults and their checks.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::SagaError;

/// Runner-wide settings. See [`OrchestratorBuilder`](super::OrchestratorBuilder) for each
/// one's meaning; the defaults are here.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) recovery: bool,
    pub(crate) recovery_interval: Duration,
    pub(crate) recovery_batch: u32,
    /// The recovery loop claims nothing more while this many sagas execute here.
    pub(crate) max_in_flight: usize,
    pub(crate) max_recoveries: u32,
    pub(crate) max_context_bytes: usize,
    pub(crate) backoff: Backoff,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) stuck_after: Duration,
    /// How long past its `wake_at` a waiting saga may stay unclaimed before it counts as
    /// overdue.
    pub(crate) overdue_after: Duration,
    /// How long a checkpoint write keeps retrying transient store errors.
    pub(crate) store_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(30),
            recovery: true,
            recovery_interval: Duration::from_secs(5),
            recovery_batch: 100,
            max_in_flight: 10_000,
            max_recoveries: 5,
            max_context_bytes: 1 << 20,
            backoff: Backoff::default(),
            stats_interval: Some(Duration::from_secs(15)),
            stuck_after: Duration::from_hours(1),
            overdue_after: Duration::from_mins(1),
            store_retry: Duration::from_secs(15),
        }
    }
}

impl Settings {
    /// Refuses settings the runner cannot work with.
    pub(crate) fn validate(&self) -> Result<(), SagaError> {
        if self.lease.is_zero() {
            return Err(SagaError::config("lease", "must be greater than zero"));
        }
        if self.lease > Duration::from_hours(7 * 24) {
            return Err(SagaError::config("lease", "must be at most 7 days"));
        }
        if self.stats_interval.is_some_and(|i| i.is_zero()) {
            return Err(SagaError::config(
                "stats interval",
                "must be greater than zero (or None to turn it off)",
            ));
        }
        if self.recovery_interval.is_zero() {
            return Err(SagaError::config(
                "recovery interval",
                "must be greater than zero",
            ));
        }
        if self.recovery_batch == 0 {
            return Err(SagaError::config("recovery batch", "must be at least 1"));
        }
        if self.max_context_bytes == 0 {
            return Err(SagaError::config(
                "max context bytes",
                "must be greater than zero",
            ));
        }
        self.backoff
            .validate()
            .map_err(|reason| SagaError::config("backoff", reason))
    }
}
