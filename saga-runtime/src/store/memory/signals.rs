//! The memory store's signals: kept per saga in its shard, taken oldest first. Every lookup
//! reads one saga's signals, never the shard's: a store that has carried millions of
//! signals finds the next one as fast as an empty one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{MemoryStore, ready, row_mut};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::store::operator::{self, check_signal_of, received};
use crate::store::{NewSignal, PendingSignal, Sent};

/// The signals of one shard's sagas, by saga, each saga's in id order.
pub(super) type Signals = HashMap<String, Vec<StoredSignal>>;

/// One signal as stored.
#[derive(Debug)]
pub(super) struct StoredSignal {
    id: i64,
    name: String,
    payload: String,
    key: Option<String>,
    /// Consumed (its step ended) or rejected (its payload did not decode).
    done: bool,
}

/// The signals sent to saga `saga_id`, oldest first.
fn of<'s>(signals: &'s Signals, saga_id: &str) -> &'s [StoredSignal] {
    signals.get(saga_id).map_or(&[], Vec::as_slice)
}

/// Whether a signal `name` for saga `saga_id` is neither consumed nor rejected.
/// Whether a signal named in `waiting_for` (see [`waits_for`](crate::store::waits_for)) is
/// pending for saga `saga_id`.
pub(super) fn pending(signals: &Signals, saga_id: &str, waiting_for: &str) -> bool {
    of(signals, saga_id)
        .iter()
        .any(|s| !s.done && crate::store::waits_for(waiting_for, &s.name))
}

/// Marks signal `id` of saga `saga_id` consumed.
pub(super) fn consume(shard: &mut super::Shard, saga_id: &str, id: i64) {
    let signal = shard
        .signals
        .get_mut(saga_id)
        .and_then(|signals| signals.iter_mut().find(|s| s.id == id));
    if let Some(signal) = signal {
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
        let earlier = signal.key.as_ref().and_then(|key| {
            of(&shard.signals, &signal.saga_id)
                .iter()
                .find(|s| s.name == signal.name && s.key.as_ref() == Some(key))
                .map(|s| s.id)
        });
        let result = (|| {
            let row = row_mut(&mut shard, &signal.saga_id)?;
            check_signal_of(&signal.saga_id, row.state, &row.kind.signals, &signal.name)?;
            // A duplicate is refused before it can wake anything, as the SQL stores do.
            if let Some(id) = earlier {
                return Ok(Err(Sent::Duplicate { id }));
            }
            let woken = row.state == SagaState::Waiting
                && row
                    .waiting_for
                    .as_deref()
                    .is_some_and(|w| crate::store::waits_for(w, &signal.name));
            if woken {
                row.wake_at = Some(wake_clock);
            }
            Ok(Ok((
                operator::header_of(&row.kind.saga_type, &signal.sender),
                woken,
            )))
        })();
        let (header, woken) = match result {
            Ok(Ok(delivered)) => delivered,
            Ok(Err(duplicate)) => return ready(Ok(duplicate)),
            Err(error) => return ready(Err(error)),
        };
        if woken {
            shard.track(&signal.saga_id);
        }
        let id = self.inner.next_signal_id.fetch_add(1, Ordering::Relaxed) + 1;
        let event = received(id, &signal);
        let stored = StoredSignal {
            id,
            name: signal.name,
            payload: signal.payload,
            key: signal.key,
            done: false,
        };
        shard
            .signals
            .entry(signal.saga_id.clone())
            .or_default()
            .push(stored);
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
        let next = of(&shard.signals, saga_id)
            .iter()
            .find(|s| !s.done && s.name == name)
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
        consume(&mut shard, saga_id, id);
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
