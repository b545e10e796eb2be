//! Errors: [`StepError`] from user steps, [`SagaError`] from the runtime, [`StoreError`] from
//! the stores.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::state::SagaState;

/// A `Result` whose error defaults to [`SagaError`].
pub type Result<T, E = SagaError> = std::result::Result<T, E>;

/// How the executor treats a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Retry with backoff while the step's retry budget lasts (the default).
    Retryable,
    /// Do not retry: compensate now.
    Permanent,
    /// Retry after this delay instead of the backoff delay (still within the budget).
    RetryAfter(Duration),
}

/// The error of a step or compensation attempt.
///
/// Any `std::error::Error` converts into a retryable `StepError` with `?`; use
/// [`StepError::permanent`] (or [`ResultExt::permanent`]) for errors that retrying cannot fix.
/// `StepError` itself does not implement `std::error::Error`, so that blanket conversion can
/// exist (as with `anyhow::Error`).
///
/// ```
/// use saga_runtime::{ResultExt, StepError};
/// use std::time::Duration;
///
/// fn parse(amount: &str) -> Result<i64, StepError> {
///     // A malformed amount will not get better by retrying.
///     amount.parse::<i64>().permanent()
/// }
/// assert!(parse("x").unwrap_err().is_permanent());
///
/// let throttled = StepError::retry_after(Duration::from_secs(2), "rate limited").with_type("throttled");
/// assert_eq!(throttled.retry_after_delay(), Some(Duration::from_secs(2)));
/// assert_eq!(throttled.error_type(), "throttled");
/// ```
pub struct StepError {
    class: ErrorClass,
    message: String,
    error_type: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StepError {
    /// A retryable error with a message.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::with_class(ErrorClass::Retryable, message.to_string(), "retryable")
    }

    /// A permanent error: no retry, the saga compensates now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::with_class(ErrorClass::Permanent, message.to_string(), "permanent")
    }

    /// A retryable error that asks for a given delay before the next attempt.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        Self::with_class(
            ErrorClass::RetryAfter(delay),
            message.to_string(),
            "retry_after",
        )
    }

    /// A retryable error wrapping `error`; its type name becomes the metric's `error_type`.
    pub fn new<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(inner) = cause {
            let text = inner.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = inner.source();
        }
        StepError {
            class: ErrorClass::Retryable,
            message,
            error_type: Cow::Borrowed(short_type_name::<E>()),
            source: Some(Box::new(error)),
        }
    }

    fn with_class(class: ErrorClass, message: String, error_type: &'static str) -> Self {
        StepError {
            class,
            message,
            error_type: Cow::Borrowed(error_type),
            source: None,
        }
    }

    /// The same error, made permanent.
    #[must_use]
    pub fn into_permanent(mut self) -> Self {
        self.class = ErrorClass::Permanent;
        self
    }

    /// The same error, asking for `delay` before the next attempt.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.class = ErrorClass::RetryAfter(delay);
        self
    }

    /// Sets the `error_type` label of `saga_step_failed_total`. Keep the set of values small
    /// and fixed (a code, not a message): each value is a time series.
    #[must_use]
    pub fn with_type(mut self, error_type: &'static str) -> Self {
        self.error_type = Cow::Borrowed(error_type);
        self
    }

    /// How the executor treats this error.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Whether another attempt may be made.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !self.is_permanent()
    }

    /// Whether retrying is pointless.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        self.class == ErrorClass::Permanent
    }

    /// The delay the error asked for, if any.
    #[must_use]
    pub fn retry_after_delay(&self) -> Option<Duration> {
        match self.class {
            ErrorClass::RetryAfter(delay) => Some(delay),
            _ => None,
        }
    }

    /// The message, with the messages of its causes.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `error_type` label for metrics.
    #[must_use]
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The wrapped error, if the `StepError` was made from one.
    #[must_use]
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The error the runtime records when an attempt runs out of time.
    pub(crate) fn timeout(limit: Duration) -> Self {
        Self::with_class(
            ErrorClass::Retryable,
            format!(
                "attempt timed out after {}",
                humantime::format_duration(limit)
            ),
            "timeout",
        )
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("class", &self.class)
            .field("error_type", &self.error_type)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl<E> From<E> for StepError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        StepError::new(error)
    }
}

/// The type's path without generic arguments: bounded, so safe as a metric label.
fn short_type_name<E>() -> &'static str {
    let name = std::any::type_name::<E>();
    name.split('<').next().unwrap_or(name)
}

/// Classifies errors on the way out of a step.
pub trait ResultExt<T> {
    /// Marks the error permanent: no retry, compensate now.
    ///
    /// # Errors
    /// The original error, converted and made permanent.
    fn permanent(self) -> std::result::Result<T, StepError>;

    /// Asks for `delay` before the next attempt.
    ///
    /// # Errors
    /// The original error, converted, with the delay attached.
    fn retry_after(self, delay: Duration) -> std::result::Result<T, StepError>;

    /// Sets the error's `error_type` metric label.
    ///
    /// # Errors
    /// The original error, converted, with the label attached.
    fn error_type(self, error_type: &'static str) -> std::result::Result<T, StepError>;
}

impl<T, E: Into<StepError>> ResultExt<T> for std::result::Result<T, E> {
    fn permanent(self) -> std::result::Result<T, StepError> {
        self.map_err(|e| e.into().into_permanent())
    }

    fn retry_after(self, delay: Duration) -> std::result::Result<T, StepError> {
        self.map_err(|e| e.into().with_retry_after(delay))
    }

    fn error_type(self, error_type: &'static str) -> std::result::Result<T, StepError> {
        self.map_err(|e| e.into().with_type(error_type))
    }
}

/// An error of the saga runtime (as opposed to a step's own failure, which is part of a
/// saga's [`Outcome`](crate::Outcome)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The store failed, or refused: among others [`StoreError::NotFound`] (no saga has
    /// the id) and [`StoreError::InvalidState`] (the action is not allowed in the saga's
    /// state).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored saga was written by a definition of another shape.
    #[error(
        "saga `{saga_id}` was checkpointed by definition `{stored_definition}` (fingerprint {stored_fingerprint}), which does not match `{definition}` (fingerprint {fingerprint}); deploy the matching code or close the saga by hand"
    )]
    FingerprintMismatch {
        /// The saga.
        saga_id: String,
        /// The definition named in the row.
        stored_definition: String,
        /// The fingerprint in the row.
        stored_fingerprint: String,
        /// The definition asked to resume it.
        definition: &'static str,
        /// Its fingerprint.
        fingerprint: &'static str,
    },
    /// The stored context does not decode as the definition's context type.
    #[error(
        "saga `{saga_id}`: its stored context does not decode as `{definition}`'s context: {reason}"
    )]
    Decode {
        /// The saga.
        saga_id: String,
        /// The definition that tried.
        definition: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The context did not serialize.
    #[error("saga `{saga_id}`: its context does not serialize: {reason}")]
    Encode {
        /// The saga.
        saga_id: String,
        /// What serde said.
        reason: String,
    },
    /// The serialized context is larger than the configured limit.
    #[error("saga `{saga_id}`: its context is {size} bytes, above the limit of {limit} bytes")]
    ContextTooLarge {
        /// The saga.
        saga_id: String,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The saga passed its pivot, so its effects cannot be undone.
    #[error("saga `{saga_id}` passed its pivot `{pivot}`, whose effects cannot be undone")]
    Irreversible {
        /// The saga.
        saga_id: String,
        /// The pivot step it passed.
        pivot: &'static str,
    },
    /// Another live runner holds the saga's lease.
    #[error("saga `{saga_id}` {}", leased_by(owner.as_deref()))]
    Leased {
        /// The saga.
        saga_id: String,
        /// The runner that holds it, if known (`None`: another runner claimed it first).
        owner: Option<String>,
    },
    /// Another runner took the saga over (this runner's lease had expired); its writes are
    /// fenced off and it stopped.
    #[error("lost ownership of saga `{saga_id}`: another runner took it over")]
    LostOwnership {
        /// The saga.
        saga_id: String,
    },
    /// The id is taken by a saga of another definition.
    #[error("saga id `{saga_id}` is taken by a saga of definition `{existing}`")]
    IdConflict {
        /// The id.
        saga_id: String,
        /// The definition of the existing saga.
        existing: String,
    },
    /// A setting or a config value is invalid; nothing was run or written.
    #[error("invalid {setting}: {reason}")]
    Config {
        /// Which setting: `lease`, `` `saga_type` ``, `saga id`, ...
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl SagaError {
    pub(crate) fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        SagaError::Config {
            setting,
            reason: reason.into(),
        }
    }
}

fn leased_by(owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("is owned by runner `{owner}` whose lease has not expired"),
        None => "was claimed by another runner first".to_owned(),
    }
}

/// An error of a [`SagaStore`](crate::store::SagaStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database returned an error. The message is the database's own (with its SQLSTATE
    /// on PostgreSQL); match the variant for the [`sqlx::Error`] itself.
    #[cfg(feature = "_sqlx")]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    #[error("{}", database_message(.0))]
    Database(sqlx::Error),
    /// Applying the migrations failed (the message says why; match the variant for the
    /// [`sqlx::migrate::MigrateError`] itself).
    #[cfg(feature = "_sqlx")]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The write was fenced off: the row's version moved (another runner or an operator
    /// changed the saga), so this writer no longer owns it.
    #[error("write to saga `{saga_id}` was fenced off: expected version {expected}, {}", found_version(*found))]
    Fenced {
        /// The saga.
        saga_id: String,
        /// The version the writer held.
        expected: i64,
        /// The version in the row (`None` if the row is gone).
        found: Option<i64>,
    },
    /// No saga has this id.
    #[error("saga `{saga_id}` not found")]
    NotFound {
        /// The id.
        saga_id: String,
    },
    /// A row does not decode (unknown state, bad number); it was left as it is.
    #[error("saga `{saga_id}`: stored row is invalid: {reason}")]
    Corrupt {
        /// The saga.
        saga_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The database has no saga tables, or an older schema.
    #[error(
        "database is not migrated: {0}; run `saga migrate` or open the store with migrations on"
    )]
    NotMigrated(String),
    /// The action is not allowed in the saga's state.
    #[error("saga `{saga_id}` is {state}; cannot {action}")]
    InvalidState {
        /// The saga.
        saga_id: String,
        /// Its state.
        state: SagaState,
        /// What was attempted.
        action: &'static str,
    },
    /// A signal the saga's definition does not accept.
    #[error("saga `{saga_id}` accepts no signal `{name}`; {}", accepted_names(.accepted))]
    UnknownSignal {
        /// The saga.
        saga_id: String,
        /// The name given.
        name: String,
        /// The names it accepts.
        accepted: Vec<String>,
    },
    /// A value given to the store is invalid (a URL, a setting).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn found_version(found: Option<i64>) -> String {
    match found {
        Some(version) => format!("found {version}"),
        None => "but the row is gone".to_owned(),
    }
}

#[cfg(feature = "_sqlx")]
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

/// What a database error says, without the server's source location that sqlx appends to
/// PostgreSQL errors (`.. at line 948` of the server's C code).
#[cfg(feature = "_sqlx")]
fn database_message(error: &sqlx::Error) -> String {
    #[cfg(feature = "postgres")]
    if let sqlx::Error::Database(db) = error
        && let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
    {
        return format!(
            "error returned from database: {} (SQLSTATE {})",
            pg.message(),
            pg.code()
        );
    }
    error.to_string()
}

impl StoreError {
    /// Whether trying again may succeed: a lost or refused connection, a server restarting,
    /// a busy or locked SQLite file, a serialization failure or deadlock.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            #[cfg(feature = "_sqlx")]
            StoreError::Database(error) => transient_sqlx(error),
            _ => false,
        }
    }
}

#[cfg(feature = "_sqlx")]
fn transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => transient_database(db.as_ref()),
        _ => false,
    }
}

/// Each backend by its own codes: a PostgreSQL SQLSTATE is not a SQLite result code.
#[cfg(feature = "_sqlx")]
fn transient_database(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return transient_sqlstate(pg.code());
    }
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        return sqlx::error::DatabaseError::code(sqlite)
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(transient_sqlite_code);
    }
    let _ = db;
    false
}

/// PostgreSQL SQLSTATEs worth another try: connection exceptions (class 08), serialization
/// failures and deadlocks (40001, 40P01), too many connections (53300), and a server shutting
/// down, crashed or starting (57P01, 57P02, 57P03). Everything else (a constraint, a bad value
/// such as 22021, a privilege such as 42501) fails at once.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn transient_sqlstate(code: &str) -> bool {
    code.len() == 5
        && (code.starts_with("08")
            || matches!(
                code,
                "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
            ))
}

/// SQLite result codes worth another try: BUSY (5) and LOCKED (6), with their extended
/// codes (`SQLITE_BUSY_SNAPSHOT` is 517: its primary code is its low byte).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn transient_sqlite_code(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
}

fn accepted_names(names: &[String]) -> String {
    if names.is_empty() {
        "it accepts none".to_owned()
    } else {
        format!("it accepts {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_per_backend() {
        // PostgreSQL, by SQLSTATE.
        for code in [
            "08000", "08003", "08006", "08001", "08004", "08P01", "40001", "40P01", "53300",
            "57P01", "57P02", "57P03",
        ] {
            assert!(transient_sqlstate(code), "{code} is transient");
        }
        for code in [
            "22021", // invalid byte sequence (a NUL in text): low byte 5 in SQLite's reading
            "42501", // insufficient privilege
            "23505", // unique violation
            "42P01", // undefined table
            "22P02", // invalid text representation
            "53100", // disk full: waiting seconds does not help
            "57014", // query cancelled
            "25006", // read-only transaction
            "40002", // integrity constraint violation (class 40, not a serialization failure)
            "0800", "",
        ] {
            assert!(!transient_sqlstate(code), "{code} is not transient");
        }
        // SQLite, by primary result code.
        for code in [5, 6, 261, 517, 262] {
            assert!(transient_sqlite_code(code), "{code} is transient");
        }
        for code in [1, 8, 10, 11, 13, 14, 19, 2067, 1555, 21] {
            assert!(!transient_sqlite_code(code), "{code} is not transient");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn conversion_keeps_the_chain_and_the_type() {
        let err: StepError = Outer(std::io::Error::other("disk full")).into();
        assert_eq!(err.message(), "outer: disk full");
        assert!(err.error_type().ends_with("Outer"));
        assert!(err.is_retryable());
        assert!(err.source().is_some());
    }
}
