//! The memory store's signals: kept per shard beside their sagas, taken oldest first.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{MemoryStore, ready, row_mut};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::store::operator::{self, check_signal, received};
use crate::store::{NewSignal, PendingSignal, Sent};

/// One signal as stored.
#[derive(Debug)]
pub(super) struct StoredSignal {
    id: i64,
    saga_id: String,
    name: String,
    payload: String,
    key: Option<String>,
    /// Consumed (its step ended) or rejected (its payload did not decode).
    done: bool,
}

impl StoredSignal {
    /// The saga it was sent to.
    pub(super) fn saga_id(&self) -> &str {
        &self.saga_id
    }
}

/// Whether a signal `name` for saga `saga_id` is neither consumed nor rejected.
pub(super) fn pending(signals: &[StoredSignal], saga_id: &str, name: &str) -> bool {
    signals
        .iter()
        .any(|s| !s.done && s.saga_id == saga_id && s.name == name)
}

/// Marks signal `id` consumed.
pub(super) fn consume(shard: &mut super::Shard, id: i64) {
    if let Some(signal) = shard.signals.iter_mut().find(|s| s.id == id) {
        signal.done = true;
    }
}

impl MemoryStore {
    pub(super) fn send(&self, signal: NewSignal) -> BoxFuture<'_, Result<Sent, StoreError>> {
        if let Err(error) = operator::validate_signal(&signal) {
            return ready(Err(error));
        }
        let wake_clock = self.wake_clock();
        let mut shard = self.shard(&signal.saga_id);
        let result = (|| {
            let row = row_mut(&mut shard, &signal.saga_id)?;
            check_signal(row, &signal.name)?;
            let header = operator::header(row, &signal.sender);
            let woken = row.state == SagaState::Waiting
                && row.waiting_for.as_deref() == Some(signal.name.as_str());
            if woken {
                row.wake_at = Some(wake_clock);
            }
            Ok((header, woken))
        })();
        let (header, woken) = match result {
            Ok(found) => found,
            Err(error) => return ready(Err(error)),
        };
        if let Some(key) = &signal.key
            && let Some(earlier) = shard.signals.iter().find(|s| {
                s.saga_id == signal.saga_id && s.name == signal.name && s.key.as_ref() == Some(key)
            })
        {
            return ready(Ok(Sent::Duplicate { id: earlier.id }));
        }
        let id = self.inner.next_signal_id.fetch_add(1, Ordering::Relaxed) + 1;
        let event = received(id, &signal);
        shard.signals.push(StoredSignal {
            id,
            saga_id: signal.saga_id.clone(),
            name: signal.name,
            payload: signal.payload,
            key: signal.key,
            done: false,
        });
        self.push_events(
            &mut shard,
            &Arc::from(signal.saga_id.as_str()),
            &Arc::new(header),
            vec![event],
        );
        drop(shard);
        if woken {
            self.inner.wakes.send_modify(|n| *n = n.wrapping_add(1));
        }
        ready(Ok(Sent::Delivered { id }))
    }

    pub(super) fn next(
        &self,
        saga_id: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<PendingSignal>, StoreError>> {
        let shard = self.shard(saga_id);
        let next = shard
            .signals
            .iter()
            .find(|s| !s.done && s.saga_id == saga_id && s.name == name)
            .map(|s| PendingSignal {
                id: s.id,
                payload: s.payload.clone(),
            });
        ready(Ok(next))
    }

    pub(super) fn reject(
        &self,
        saga_id: &str,
        id: i64,
        header: &AuditHeader,
        event: NewEvent,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut shard = self.shard(saga_id);
        consume(&mut shard, id);
        self.push_events(
            &mut shard,
            &Arc::from(saga_id),
            &Arc::new(header.clone()),
            vec![event],
        );
        ready(Ok(()))
    }

    pub(super) fn wake_receiver(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wakes.subscribe()
    }
}
