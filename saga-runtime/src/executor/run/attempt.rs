//! One attempt of a step or compensation: under its timeout, with a panic caught.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::error::StepError;

/// A failed attempt.
pub(super) struct AttemptError {
    pub(super) error: StepError,
    pub(super) timed_out: bool,
}

/// Runs one attempt until `deadline`, which its context also gives the step (`timeout`
/// after the attempt began); a panic in user code is a permanent failure.
pub(super) async fn run_attempt<F, T>(
    attempt: F,
    timeout: Duration,
    deadline: tokio::time::Instant,
) -> Result<T, AttemptError>
where
    F: Future<Output = Result<T, StepError>> + Unpin,
{
    match tokio::time::timeout_at(deadline, CatchUnwind(attempt)).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(AttemptError {
            error,
            timed_out: false,
        }),
        Ok(Err(panic)) => Err(AttemptError {
            error: StepError::permanent(format!("panicked: {panic}")).with_type("panic"),
            timed_out: false,
        }),
        Err(_elapsed) => Err(AttemptError {
            error: StepError::timeout(timeout),
            timed_out: true,
        }),
    }
}

/// Turns a panic while polling the inner future into an error value.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                Poll::Ready(Err(message))
            }
        }
    }
}
