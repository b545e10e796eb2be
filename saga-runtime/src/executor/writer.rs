//! Store writes and their retry: the one place that creates sagas and writes checkpoints.

use std::time::Duration;

use super::inner::Inner;
use crate::error::StoreError;
use crate::store::{Checkpoint, Created, NewSaga, Saved};

/// Creates a saga. A store whose writes can fail transiently is retried for up to
/// `store_retry` (boxed: the retry state stays out of the caller's future).
pub(crate) async fn create(inner: &Inner, new: NewSaga) -> Result<Created, StoreError> {
    if inner.transient_store {
        Box::pin(create_retrying(inner, new)).await
    } else {
        inner.store.create(new).await
    }
}

/// Writes a checkpoint, retried like [`create`]. Boxed when retried: the retry loop's state
/// (a copy of the checkpoint, a timer) would otherwise be part of every saga's future, even
/// while it waits in a step.
pub(crate) async fn save(inner: &Inner, checkpoint: Checkpoint) -> Result<Saved, StoreError> {
    if inner.transient_store {
        Box::pin(save_retrying(inner, checkpoint)).await
    } else {
        inner.store.save(checkpoint).await
    }
}

/// Paces the retries of a store write that failed transiently: 50 ms, doubling to 2 s,
/// for up to `store_retry` in all.
struct StoreRetry {
    delay: Duration,
    deadline: tokio::time::Instant,
    /// Whether a try has failed already (its write may have committed all the same).
    retried: bool,
}

impl StoreRetry {
    fn new(inner: &Inner) -> Self {
        StoreRetry {
            delay: Duration::from_millis(50),
            deadline: tokio::time::Instant::now() + inner.settings.store_retry,
            retried: false,
        }
    }

    /// Whether `error` is worth another try before the deadline.
    fn allows(&self, error: &StoreError) -> bool {
        error.is_transient() && tokio::time::Instant::now() + self.delay < self.deadline
    }

    /// Waits before the next try.
    async fn pause(&mut self, error: &StoreError, what: &'static str) {
        tracing::warn!(%error, retry_in_ms = self.delay.as_millis() as u64, "{what} failed; retrying");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        self.retried = true;
    }
}

/// Creates a saga, retrying transient store errors for up to `store_retry`. If an answer was
/// lost but the row was written, the retry finds it owned by this runner at version 1 and
/// takes it as created.
async fn create_retrying(inner: &Inner, mut new: NewSaga) -> Result<Created, StoreError> {
    let mut retry = StoreRetry::new(inner);
    loop {
        let copy = new.clone();
        match inner.store.create(new).await {
            Err(error) if retry.allows(&error) => {
                retry.pause(&error, "saga creation").await;
                new = copy;
            }
            Ok(Created::Existing(record))
                if retry.retried
                    && record.version == 1
                    && record.owner.as_deref() == Some(&*inner.runner_id) =>
            {
                return Ok(Created::New { version: 1 });
            }
            other => return other,
        }
    }
}

/// Writes a checkpoint, retrying transient store errors for up to `store_retry`. After a
/// lost answer, a retry refused by fencing may have been refused by this runner's own
/// committed write: the row then shows it, and the write counts as done.
async fn save_retrying(inner: &Inner, mut checkpoint: Checkpoint) -> Result<Saved, StoreError> {
    let expected = checkpoint.expected_version;
    let (state, step_index, attempt) =
        (checkpoint.state, checkpoint.step_index, checkpoint.attempt);
    let saga_id = checkpoint.saga_id.clone();
    let mut retry = StoreRetry::new(inner);
    loop {
        let copy = checkpoint.clone();
        match inner.store.save(checkpoint).await {
            Err(error) if retry.allows(&error) => {
                retry.pause(&error, "checkpoint write").await;
                checkpoint = copy;
            }
            Err(StoreError::Fenced { .. }) if retry.retried => {
                return match inner.store.load(&saga_id).await? {
                    Some(row)
                        if row.version == expected + 1
                            && row.owner.as_deref() == Some(&*inner.runner_id)
                            && row.state == state
                            && row.step_index == step_index
                            && row.attempt == attempt =>
                    {
                        Ok(Saved::Written {
                            version: row.version,
                        })
                    }
                    row => Err(StoreError::Fenced {
                        saga_id: saga_id.to_string(),
                        expected,
                        found: row.map(|row| row.version),
                    }),
                };
            }
            other => return other,
        }
    }
}
