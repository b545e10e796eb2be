//! [`SagaConfig`]: the per-execution settings the Python orchestrator's users know (docs/GUIDE.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SagaError;

/// Settings of one saga execution, with the Python orchestrator's field names (docs/GUIDE.md).
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
// Stored with every saga: a row written by an older version lacks the fields added since
// (they take their defaults), and one written by a newer version has fields this one
// ignores.
#[serde(default)]
#[non_exhaustive]
pub struct SagaConfig {
    /// The `saga_type` label of metrics and the `saga_type` column; `None` uses the
    /// definition's name. Keep the set of values small: each is a time series.
    pub saga_type: Option<String>,
    /// Who started the saga; written to every audit row.
    pub user_id: Option<String>,
    /// Where the request came from; written to every audit row.
    pub ip_address: Option<String>,
    /// Record Prometheus metrics for this saga, when the orchestrator has a registry
    /// (`OrchestratorBuilder::metrics`); without one nothing is recorded, and the
    /// orchestrator says so in the log when it is built.
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
    /// [`SagaError::Config`] for a zero `default_timeout`, an empty `saga_type`, or a
    /// `saga_type`, `user_id` or `ip_address` that holds a NUL byte or is longer than
    /// 1 KiB (the stores keep them in indexed text columns as given).
    pub fn validate(&self) -> Result<(), SagaError> {
        for (what, value) in [
            ("`saga_type`", &self.saga_type),
            ("`user_id`", &self.user_id),
            ("`ip_address`", &self.ip_address),
        ] {
            if let Some(value) = value {
                crate::text::check_label(value)
                    .map_err(|reason| SagaError::config(what, reason))?;
            }
        }
        if self.default_timeout.is_zero() {
            return Err(SagaError::config(
                "`default_timeout`",
                "must be greater than zero",
            ));
        }
        if self
            .saga_type
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(SagaError::config("`saga_type`", "cannot be empty"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_other_versions_decode() {
        let config = SagaConfig::new("orders")
            .user_id("u-1")
            .ip_address("10.0.0.1");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            json,
            r#"{"saga_type":"orders","user_id":"u-1","ip_address":"10.0.0.1","enable_metrics":true,"enable_audit_log":true,"default_timeout":30000,"default_max_retries":3}"#,
            "the stored form: change it only with a migration in mind"
        );
        // Written before a field existed: each missing field takes its default.
        let mut older: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in ["enable_audit_log", "default_max_retries", "ip_address"] {
            older.as_object_mut().unwrap().remove(field);
        }
        let read: SagaConfig = serde_json::from_value(older).unwrap();
        assert_eq!(read.saga_type.as_deref(), Some("orders"));
        assert!(read.enable_audit_log);
        assert_eq!(read.default_max_retries, 3);
        assert_eq!(read.ip_address, None);
        // Written by a newer version: unknown fields are ignored.
        let mut newer: serde_json::Value = serde_json::from_str(&json).unwrap();
        newer["priority"] = serde_json::json!({"level": 7});
        let read: SagaConfig = serde_json::from_value(newer).unwrap();
        assert_eq!(read, config);
        assert_eq!(
            serde_json::from_str::<SagaConfig>("{}").unwrap(),
            SagaConfig::default()
        );
    }

    #[test]
    fn labels_with_nul_or_too_long_are_refused() {
        assert!(SagaConfig::new("ok ünïcødé 'quoted'").validate().is_ok());
        let err = SagaConfig::new("a\0b").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `saga_type`: cannot contain a NUL byte"
        );
        assert!(
            SagaConfig::default()
                .user_id("x".repeat(2000))
                .validate()
                .is_err()
        );
        assert!(
            SagaConfig::default()
                .ip_address("::1\0")
                .validate()
                .is_err()
        );
    }
}
