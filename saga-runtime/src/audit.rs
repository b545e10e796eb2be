//! The audit log: one row per event, in the `saga_audit_logs` table.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// What happened. Stored as the `event_type` column (`saga_started`, `step_failed`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// The saga was created and its first step is about to start.
    SagaStarted,
    /// An attempt of a step is about to run.
    StepStarted,
    /// A step completed; its output is in the context.
    StepCompleted,
    /// An attempt of a step failed.
    StepFailed,
    /// An attempt of a step ran out of time (its effect may have happened).
    StepTimedOut,
    /// Another attempt of the step will run after a delay.
    StepRetrying,
    /// A compensation attempt is about to run.
    CompensationStarted,
    /// A compensation completed (counted by `saga_compensation_executed_total`).
    CompensationExecuted,
    /// A compensation attempt failed.
    CompensationFailed,
    /// A compensation could not run: its step's outcome is unknown and it needs that output.
    CompensationSkipped,
    /// Every step completed.
    SagaCompleted,
    /// Compensation finished: the saga failed and was undone.
    SagaFailed,
    /// A compensation gave up: the saga needs a person.
    SagaCompensationFailed,
    /// A runner observed a cancellation request and began to compensate.
    SagaCancelled,
    /// A cancellation request came after the pivot and was ignored.
    CancelIgnored,
    /// A runner took over the saga after its previous owner stopped.
    SagaRecovered,
    /// The saga was parked (dead letter) and needs a person.
    SagaParked,
    /// The saga waits, durably and held by no runner, until its `wake_at` (a step's
    /// `delay`, or a long `retry_after`).
    SagaWaiting,
    /// A runner claimed a waiting saga that was due (or cancelled) and goes on.
    SagaWoken,
    /// A step of a saga with concurrent steps (a branch) waits, for its delay, its
    /// signal, its child or a long retry, while its other branches may run; `details`
    /// says what for and for how long (`{"for":"signal","wait_ms":120000}`).
    StepWaiting,
    /// A signal was delivered to the saga (and stored until its step takes it).
    SignalReceived,
    /// A signal's payload did not decode into its type: it was set aside, and the step
    /// keeps waiting.
    SignalRejected,
    /// Someone asked for a completed saga to be undone: compensated, newest step first.
    SagaUndone,
    /// A step started a child saga (or attached to the one an earlier attempt started) and
    /// waits for it.
    ChildStarted,
    /// Someone asked for the saga to be cancelled.
    CancelRequested,
    /// An operator made a parked, stuck or failed-compensation saga runnable again.
    OperatorResumed,
    /// An operator marked the saga failed by hand.
    OperatorFailed,
    /// An operator pruned old rows (saga id `*`: the row is about the whole log).
    OperatorPruned,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 28] = [
        EventType::SagaStarted,
        EventType::StepStarted,
        EventType::StepCompleted,
        EventType::StepFailed,
        EventType::StepTimedOut,
        EventType::StepRetrying,
        EventType::CompensationStarted,
        EventType::CompensationExecuted,
        EventType::CompensationFailed,
        EventType::CompensationSkipped,
        EventType::SagaCompleted,
        EventType::SagaFailed,
        EventType::SagaCompensationFailed,
        EventType::SagaCancelled,
        EventType::CancelIgnored,
        EventType::SagaRecovered,
        EventType::SagaParked,
        EventType::SagaWaiting,
        EventType::SagaWoken,
        EventType::StepWaiting,
        EventType::SignalReceived,
        EventType::SignalRejected,
        EventType::SagaUndone,
        EventType::ChildStarted,
        EventType::CancelRequested,
        EventType::OperatorResumed,
        EventType::OperatorFailed,
        EventType::OperatorPruned,
    ];

    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SagaStarted => "saga_started",
            EventType::StepStarted => "step_started",
            EventType::StepCompleted => "step_completed",
            EventType::StepFailed => "step_failed",
            EventType::StepTimedOut => "step_timed_out",
            EventType::StepRetrying => "step_retrying",
            EventType::CompensationStarted => "compensation_started",
            EventType::CompensationExecuted => "compensation_executed",
            EventType::CompensationFailed => "compensation_failed",
            EventType::CompensationSkipped => "compensation_skipped",
            EventType::SagaCompleted => "saga_completed",
            EventType::SagaFailed => "saga_failed",
            EventType::SagaCompensationFailed => "saga_compensation_failed",
            EventType::SagaCancelled => "saga_cancelled",
            EventType::CancelIgnored => "cancel_ignored",
            EventType::SagaRecovered => "saga_recovered",
            EventType::SagaParked => "saga_parked",
            EventType::SagaWaiting => "saga_waiting",
            EventType::SagaWoken => "saga_woken",
            EventType::StepWaiting => "step_waiting",
            EventType::SignalReceived => "signal_received",
            EventType::SignalRejected => "signal_rejected",
            EventType::SagaUndone => "saga_undone",
            EventType::ChildStarted => "child_started",
            EventType::CancelRequested => "cancel_requested",
            EventType::OperatorResumed => "operator_resumed",
            EventType::OperatorFailed => "operator_failed",
            EventType::OperatorPruned => "operator_pruned",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown event type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Who and where: the columns every audit row of one saga shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditHeader {
    /// The saga's type label.
    pub saga_type: String,
    /// The config's `user_id` (for operator actions: the operator).
    pub user_id: Option<String>,
    /// The config's `ip_address`.
    pub ip_address: Option<String>,
}

/// An event to write; the saga id and the header come with it. Made with [`NewEvent::now`]
/// and its setters (new fields may come).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// The step concerned, if any.
    pub step_name: Option<Cow<'static, str>>,
    /// The attempt number, for attempt events.
    pub attempt: Option<u32>,
    /// The error or reason, if any.
    pub error_message: Option<String>,
    /// Extra facts as a JSON object (retry delay, operator reason).
    pub details: Option<String>,
    /// When it happened.
    pub timestamp: SystemTime,
}

impl NewEvent {
    /// An event happening now.
    #[must_use]
    pub fn now(event_type: EventType) -> Self {
        NewEvent {
            event_type,
            step_name: None,
            attempt: None,
            error_message: None,
            details: None,
            timestamp: SystemTime::now(),
        }
    }

    /// Sets the step.
    #[must_use]
    pub fn step(mut self, step: impl Into<Cow<'static, str>>) -> Self {
        self.step_name = Some(step.into());
        self
    }

    /// Sets the attempt.
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the error message, as every store keeps free text: a NUL byte becomes U+FFFD,
    /// and a message above 8 KiB is cut at a character boundary and ends with
    /// `… [cut: N bytes in all]`.
    #[must_use]
    pub fn error(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(crate::text::clean_owned(message.into()));
        self
    }

    /// Sets the details (a JSON object).
    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Sets when it happened (for an event recorded after the fact).
    #[must_use]
    pub fn at(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }
}

/// A row of `saga_audit_logs`. A store of one's own makes it with [`AuditRecord::new`] and
/// sets the optional fields (new fields may come).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Row id: increases with insertion order.
    pub id: i64,
    /// The saga.
    pub saga_id: String,
    /// Its type label.
    pub saga_type: String,
    /// What happened (see [`EventType`]; kept as text so unknown rows still read).
    pub event_type: String,
    /// The step concerned.
    pub step_name: Option<String>,
    /// The attempt number.
    pub attempt: Option<u32>,
    /// The error or reason.
    pub error_message: Option<String>,
    /// Extra facts (JSON).
    pub details: Option<String>,
    /// Who.
    pub user_id: Option<String>,
    /// From where.
    pub ip_address: Option<String>,
    /// When.
    pub timestamp: SystemTime,
}

impl AuditRecord {
    /// A row with its required columns, every optional one empty.
    #[must_use]
    pub fn new(
        id: i64,
        saga_id: impl Into<String>,
        saga_type: impl Into<String>,
        event_type: impl Into<String>,
        timestamp: SystemTime,
    ) -> Self {
        AuditRecord {
            id,
            saga_id: saga_id.into(),
            saga_type: saga_type.into(),
            event_type: event_type.into(),
            step_name: None,
            attempt: None,
            error_message: None,
            details: None,
            user_id: None,
            ip_address: None,
            timestamp,
        }
    }

    /// The typed event, if the stored name is known.
    #[must_use]
    pub fn event(&self) -> Option<EventType> {
        self.event_type.parse().ok()
    }
}

/// A filter over the audit log. The three queries of docs/GUIDE.md, "Audit log queries":
///
/// ```
/// use saga_runtime::AuditQuery;
/// use std::time::{Duration, SystemTime};
///
/// // All events of one saga, in order.
/// let one_saga = AuditQuery::new().saga_id("saga_abc123");
/// // Failed sagas in the last 24 hours.
/// let failures = AuditQuery::new()
///     .event_type("saga_failed")
///     .since(SystemTime::now() - Duration::from_secs(24 * 3600));
/// // Compensations by user.
/// let compensations = AuditQuery::new().event_type_prefix("compensation_").user_id("user_123");
/// # let _ = (one_saga, failures, compensations);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this saga.
    pub saga_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only event types starting with this (`compensation_`).
    pub event_type_prefix: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events before this time.
    pub until: Option<SystemTime>,
    /// At most this many rows (the oldest first).
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// Every event.
    #[must_use]
    pub fn new() -> Self {
        AuditQuery::default()
    }

    /// Only the events of `saga_id`.
    #[must_use]
    pub fn saga_id(mut self, saga_id: impl Into<String>) -> Self {
        self.saga_id = Some(saga_id.into());
        self
    }

    /// Only events of this type.
    #[must_use]
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Only event types starting with `prefix`.
    #[must_use]
    pub fn event_type_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.event_type_prefix = Some(prefix.into());
        self
    }

    /// Only events of this user.
    #[must_use]
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Only events at or after `time`.
    #[must_use]
    pub fn since(mut self, time: SystemTime) -> Self {
        self.since = Some(time);
        self
    }

    /// Only events before `time`.
    #[must_use]
    pub fn until(mut self, time: SystemTime) -> Self {
        self.until = Some(time);
        self
    }

    /// At most `limit` rows.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `record` passes the filter (used by the memory store).
    #[must_use]
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.admits(
            &record.saga_id,
            &record.event_type,
            record.user_id.as_deref(),
            record.timestamp,
        )
    }

    /// [`AuditQuery::matches`] over the fields it reads, wherever the event is kept.
    pub(crate) fn admits(
        &self,
        saga_id: &str,
        event_type: &str,
        user_id: Option<&str>,
        timestamp: SystemTime,
    ) -> bool {
        self.saga_id.as_ref().is_none_or(|id| id == saga_id)
            && self.event_type.as_ref().is_none_or(|t| t == event_type)
            && self
                .event_type_prefix
                .as_ref()
                .is_none_or(|p| event_type.starts_with(p.as_str()))
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| user_id == Some(u.as_str()))
            && self.since.is_none_or(|t| timestamp >= t)
            && self.until.is_none_or(|t| timestamp < t)
    }
}
