//! [`SagaConfig`]: the per-execution settings the seed's users know.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SagaError;

/// Settings of one saga execution, with the seed's field names.
///
/// Defaults: no `saga_type` (the definition's name is used), no user id or IP address,
/// metrics and audit log on, `default_timeout` 30 s, `default_max_retries` 3. A step's own
/// `timeout` and `retries` take precedence over the defaults.
///
/// ```
/// use saga_runtime::SagaConfig;
/// use std::time::Duration;
///
/// let config = SagaConfig::new("backtest_workflow")
///     .user_id("user_123")
///     .ip_address("192.168.1.1")
///     .enable_metrics(true)
///     .enable_audit_log(true)
///     .default_timeout(Duration::from_secs(30))
///     .default_max_retries(3);
/// assert_eq!(config.saga_type.as_deref(), Some("backtest_workflow"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SagaConfig {
    /// The `saga_type` label of metrics and the `saga_type` column; `None` uses the
    /// definition's name. Keep the set of values small: each is a time series.
    pub saga_type: Option<String>,
    /// Who started the saga; written to every audit row.
    pub user_id: Option<String>,
    /// Where the request came from; written to every audit row.
    pub ip_address: Option<String>,
    /// Record Prometheus metrics for this saga.
    pub enable_metrics: bool,
    /// Write audit rows for this saga (checkpoints are written either way).
    pub enable_audit_log: bool,
    /// Timeout of an attempt of a step that sets none.
    #[serde(with = "duration_ms")]
    pub default_timeout: Duration,
    /// Retries of a step that sets none.
    pub default_max_retries: u32,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            saga_type: None,
            user_id: None,
            ip_address: None,
            enable_metrics: true,
            enable_audit_log: true,
            default_timeout: Duration::from_secs(30),
            default_max_retries: 3,
        }
    }
}

impl SagaConfig {
    /// A config with `saga_type` set and the other fields at their defaults.
    #[must_use]
    pub fn new(saga_type: impl Into<String>) -> Self {
        SagaConfig {
            saga_type: Some(saga_type.into()),
            ..SagaConfig::default()
        }
    }

    /// Sets `saga_type`.
    #[must_use]
    pub fn saga_type(mut self, saga_type: impl Into<String>) -> Self {
        self.saga_type = Some(saga_type.into());
        self
    }

    /// Sets `user_id`.
    #[must_use]
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets `ip_address`.
    #[must_use]
    pub fn ip_address(mut self, ip_address: impl Into<String>) -> Self {
        self.ip_address = Some(ip_address.into());
        self
    }

    /// Sets `enable_metrics`.
    #[must_use]
    pub fn enable_metrics(mut self, enable: bool) -> Self {
        self.enable_metrics = enable;
        self
    }

    /// Sets `enable_audit_log`.
    #[must_use]
    pub fn enable_audit_log(mut self, enable: bool) -> Self {
        self.enable_audit_log = enable;
        self
    }

    /// Sets `default_timeout`.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets `default_max_retries`.
    #[must_use]
    pub fn default_max_retries(mut self, retries: u32) -> Self {
        self.default_max_retries = retries;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`SagaError::Config`] for a zero `default_timeout` or an empty `saga_type`.
    pub fn validate(&self) -> Result<(), SagaError> {
        if self.default_timeout.is_zero() {
            return Err(SagaError::Config(
                "`default_timeout` must be greater than zero".into(),
            ));
        }
        if self
            .saga_type
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(SagaError::Config("`saga_type` cannot be empty".into()));
        }
        Ok(())
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
