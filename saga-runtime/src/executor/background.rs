//! The background loops of a runner: lease renewal, the state counts behind the metrics,
//! recovery of sagas whose owner stopped (and of waiting sagas that are due), and claims
//! of sagas a signal woke. Each holds only a weak reference, so they end
//! with the orchestrator.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::active::Entered;
use super::inner::Inner;
use crate::error::SagaError;
use crate::store::{ClaimExpired, SagaRecord};

/// Renew at most this many leases per statement.
const RENEW_CHUNK: usize = 500;

pub(crate) fn spawn(inner: &Arc<Inner>) {
    let renew_every = (inner.settings.lease / 3).max(Duration::from_millis(10));
    periodic(inner, renew_every, move |inner| async move {
        renew(&inner, renew_every).await;
    });

    if let (true, Some(every)) = (inner.metrics.is_enabled(), inner.settings.stats_interval) {
        periodic(inner, every, |inner| async move {
            let now = std::time::SystemTime::now();
            let before = |d| now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH);
            let (stuck_before, overdue_before) = (
                before(inner.settings.stuck_after),
                before(inner.settings.overdue_after),
            );
            match inner.store.stats(stuck_before, overdue_before).await {
                Ok(counts) => inner.metrics.set_state_counts(&counts),
                Err(error) => tracing::warn!(%error, "could not count sagas for metrics"),
            }
        });
    }

    if inner.settings.recovery
        && let Some(wakes) = inner.store.wakes()
    {
        on_wake(inner, wakes);
    }

    if inner.settings.recovery {
        periodic(
            inner,
            inner.settings.recovery_interval,
            |inner| async move {
                if let Err(error) = claim_due(&inner, Pass::Recovery).await {
                    tracing::warn!(%error, "recovery pass failed");
                }
            },
        );
    }
}

/// Runs `job` every `every` until the orchestrator shuts down or is dropped (the task holds
/// it weakly, so it never keeps an orchestrator alive).
fn periodic<F, Fut>(inner: &Arc<Inner>, every: Duration, job: F)
where
    F: Fn(Arc<Inner>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut stop = inner.shutdown.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            job(inner).await;
        }
    });
}

/// Claims due sagas whenever the store says a signal made one due, rather than at the next
/// recovery pass; several signals in a row give one pass.
fn on_wake(inner: &Arc<Inner>, mut wakes: tokio::sync::watch::Receiver<u64>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut stop = inner.shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = wakes.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            if let Err(error) = claim_due(&inner, Pass::Woken).await {
                tracing::warn!(%error, "claiming signalled sagas failed");
            }
        }
    });
}

/// Extends the leases of sagas executing here that have not been written for a while.
async fn renew(inner: &Inner, quiet: Duration) {
    let quiet_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX);
    let ids = inner.active.quiet_since(quiet_ms);
    for chunk in ids.chunks(RENEW_CHUNK) {
        match inner
            .store
            .renew(&inner.runner_id, chunk, inner.settings.lease)
            .await
        {
            Ok(renewed) => {
                inner.active.touch_all(&renewed);
                if renewed.len() < chunk.len() {
                    for id in chunk.iter().filter(|id| !renewed.contains(id)) {
                        tracing::warn!(saga_id = %id, "lease not renewed: the saga has a new owner or ended");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "lease renewal failed"),
        }
    }
}

/// What a pass claims, and whether it waits for what it claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The recovery loop's: expired leases and due waits, left running.
    Recovery,
    /// [`Orchestrator::recover_expired`](super::Orchestrator::recover_expired)'s: the same,
    /// waiting for the sagas it claimed to end.
    RecoverAndWait,
    /// A wake-up's (a signal, a cancellation): due waits only. An expired lease is the
    /// recovery loop's to find, and looking for it on every signal costs a query each.
    Woken,
}

/// One pass of kind `pass`: claims the sagas this runner can run and spawns them.
pub(crate) async fn claim_due(inner: &Arc<Inner>, pass: Pass) -> Result<usize, SagaError> {
    let wait = pass == Pass::RecoverAndWait;
    let mut total = 0;
    loop {
        let sagas = inner
            .sagas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if sagas.is_empty() {
            return Ok(total);
        }
        let definitions: Vec<&'static str> = sagas.keys().copied().collect();
        let active = inner.active.clone();
        let filter = |record: &SagaRecord| -> bool {
            if active.contains(&record.saga_id) {
                return false;
            }
            match sagas.get(record.definition.as_str()) {
                Some(saga) => match saga.check(record, inner.settings.max_context_bytes) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::error!(saga_id = %record.saga_id, %error, "cannot recover saga; left as it is");
                        false
                    }
                },
                None => false,
            }
        };
        // Claim no more than there is room for: the rest waits in the database.
        let room = inner
            .settings
            .max_in_flight
            .saturating_sub(inner.active.len());
        let batch = inner
            .settings
            .recovery_batch
            .min(u32::try_from(room).unwrap_or(u32::MAX));
        if batch == 0 {
            return Ok(total);
        }
        let claimed = inner
            .store
            .claim_expired(
                {
                    let claim = ClaimExpired::new(
                        inner.runner_id.clone(),
                        inner.settings.lease,
                        definitions,
                        batch,
                    );
                    if pass == Pass::Woken {
                        claim.due_only()
                    } else {
                        claim
                    }
                },
                &filter,
            )
            .await?;
        let count = claimed.len();
        total += count;
        let mut handles = Vec::with_capacity(if wait { count } else { 0 });
        for record in claimed {
            let Some(saga) = sagas.get(record.definition.as_str()).cloned() else {
                continue;
            };
            let id: Arc<str> = record.saga_id.as_str().into();
            let Entered::Run(guard) = inner.active.enter(&id) else {
                continue;
            };
            let task = saga.resume(inner.clone(), guard, record);
            let handle = tokio::spawn(async move {
                match task.await {
                    Ok(state) => tracing::info!(saga_id = %id, %state, "recovered saga ended"),
                    Err(error) => tracing::warn!(saga_id = %id, %error, "recovered saga stopped"),
                }
            });
            if wait {
                handles.push(handle);
            }
        }
        for handle in handles {
            let _ = handle.await;
        }
        if count < batch as usize {
            return Ok(total);
        }
    }
}
