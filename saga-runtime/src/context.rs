//! [`StepContext`]: what a step may know about its own execution.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The execution context of one attempt of a step or compensation. Take it as a parameter
/// of type `&StepContext` (any name).
///
/// ```
/// use saga_runtime::prelude::*;
///
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Input;
/// pub struct Payments;
///
/// #[saga(name = "payments", input = Input)]
/// impl Payments {
///     #[step]
///     async fn charge(&self, ctx: &StepContext) -> Result<String, StepError> {
///         // The same key on every attempt and after a crash: pass it to the payment
///         // provider so a repeated attempt does not charge twice.
///         Ok(ctx.idempotency_key())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct StepContext {
    saga_id: Arc<str>,
    step: &'static str,
    compensation: bool,
    attempt: u32,
    deadline: Instant,
    user_id: Option<Arc<str>>,
    /// The payload of the signal the step waited for (JSON), for its `#[signal]` parameter.
    signal: Option<Arc<str>>,
}

impl StepContext {
    pub(crate) fn new(
        saga_id: Arc<str>,
        step: &'static str,
        compensation: bool,
        attempt: u32,
        deadline: Instant,
        user_id: Option<Arc<str>>,
    ) -> Self {
        StepContext {
            saga_id,
            step,
            compensation,
            attempt,
            deadline,
            user_id,
            signal: None,
        }
    }

    /// The same context, carrying the payload of the step's signal.
    pub(crate) fn with_signal(mut self, payload: Arc<str>) -> Self {
        self.signal = Some(payload);
        self
    }

    /// The payload of the step's signal (JSON), read by the generated dispatch.
    pub(crate) fn signal_payload(&self) -> Option<&str> {
        self.signal.as_deref()
    }

    /// The saga's id.
    #[must_use]
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The step's name (for a compensation: the name of the step it undoes).
    #[must_use]
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// Whether this is a compensation rather than the step itself.
    #[must_use]
    pub fn is_compensation(&self) -> bool {
        self.compensation
    }

    /// The attempt number, from 1. Attempts interrupted by a crash count.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same for every attempt of this step of this saga, including
    /// attempts after a crash: `"{saga_id}:{step}"`, or `"{saga_id}:{step}:compensate"` for
    /// a compensation. Delivery is at least once; give this key to the services a step calls
    /// so that they apply its effect once.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        if self.compensation {
            format!("{}:{}:compensate", self.saga_id, self.step)
        } else {
            format!("{}:{}", self.saga_id, self.step)
        }
    }

    /// When this attempt times out.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left before the deadline.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The `user_id` of the saga's config.
    #[must_use]
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}
