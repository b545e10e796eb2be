//! [`MemoryStore`]: everything in process memory. The in-memory orchestrator of the deployment guide's "Migration from in-memory to database" (docs/GUIDE.md),
//! and the store for unit tests; it loses everything when the process ends.
//!
//! Sagas are spread over shards, each behind its own lock, so that thousands of concurrent
//! sagas do not queue on one mutex. Audit events are kept as written (shared headers, no
//! copies) and turned into [`AuditRecord`]s only when read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::time::later;
use super::{
    Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, NewSaga, RunnerStore, SagaRecord, Saved,
};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;

mod admin;
mod live;
mod log;
mod row;
mod signals;

use log::StoredEvent;
use row::Row;

const SHARDS: usize = 16;

/// A store in process memory, shared by clones.
///
/// ```
/// use saga_runtime::MemoryStore;
/// let store = MemoryStore::new();
/// let same = store.clone(); // both see the same sagas
/// # let _ = same;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shards: Vec<Mutex<Shard>>,
    next_audit_id: AtomicI64,
    /// Where the wake clock starts: wall time then, and tokio's clock then.
    epoch: (SystemTime, tokio::time::Instant),
    next_signal_id: AtomicI64,
    /// Bumped whenever a signal makes a saga due.
    wakes: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_audit_id: AtomicI64::new(0),
            epoch: (SystemTime::now(), tokio::time::Instant::now()),
            next_signal_id: AtomicI64::new(0),
            wakes: tokio::sync::watch::Sender::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Each saga by id; its row is boxed, so that the map's spare room holds pointers.
    sagas: HashMap<Arc<str>, Box<Row>>,
    /// What its sagas of each kind share.
    kinds: row::Kinds,
    audit: log::Log,
    /// Signals of this shard's sagas.
    signals: signals::Signals,
    /// Its live sagas, and its waiting ones by wake time: what a claim reads.
    live: live::Live,
    /// Audit ids this shard may give out: a block taken from the store's counter, so that
    /// writers in different shards do not contend for one counter on every event.
    audit_ids: std::ops::Range<i64>,
}

/// How many audit ids a shard takes at a time.
const AUDIT_ID_BLOCK: i64 = 256;

impl Shard {
    /// The next audit id: unique in the store, increasing within the shard (and so within
    /// each saga's events).
    fn audit_id(&mut self, counter: &AtomicI64) -> i64 {
        if let Some(id) = self.audit_ids.next() {
            return id;
        }
        let start = counter.fetch_add(AUDIT_ID_BLOCK, Ordering::Relaxed) + 1;
        self.audit_ids = start + 1..start + AUDIT_ID_BLOCK;
        start
    }

    /// Files saga `saga_id` again, after a write that may have changed its state or its
    /// `wake_at`.
    fn track(&mut self, saga_id: &str) {
        match self.sagas.get_key_value(saga_id) {
            Some((id, row)) => self.live.file(id, live::filing(Some(row))),
            None => self.live.forget(saga_id),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// FNV-1a: only spreads ids over shards, so it need not resist collisions.
    fn shard_of(saga_id: &str) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in saga_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % SHARDS as u64) as usize
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a lock cannot leave a half-written row: every mutation below
        // is a sequence of plain assignments. Keep serving after poisoning.
        self.inner.shards[index % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard(&self, saga_id: &str) -> MutexGuard<'_, Shard> {
        self.lock(Self::shard_of(saga_id))
    }

    /// The time that `wake_at` is measured against: wall time as tokio's clock advances it,
    /// so that a test under a paused clock crosses a day's delay at once.
    fn wake_clock(&self) -> SystemTime {
        let (wall, instant) = self.inner.epoch;
        later(wall, tokio::time::Instant::now().duration_since(instant))
    }

    fn push_events(
        &self,
        shard: &mut Shard,
        saga_id: &Arc<str>,
        header: &Arc<AuditHeader>,
        events: Vec<NewEvent>,
    ) {
        for event in events {
            let id = shard.audit_id(&self.inner.next_audit_id);
            shard
                .audit
                .push(StoredEvent::new(id, saga_id.clone(), header.clone(), event));
        }
    }

    /// Replaces a stored row by hand: for tests of hostile data (a corrupted context, an
    /// unknown fingerprint).
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn put_raw(&self, record: SagaRecord) {
        let mut shard = self.shard(&record.saga_id);
        let saga_id: Arc<str> = Arc::from(record.saga_id.as_str());
        let row = Row::from_record(record, &mut shard.kinds);
        shard.sagas.insert(saga_id.clone(), Box::new(row));
        shard.track(&saga_id);
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn row_mut<'s>(shard: &'s mut Shard, saga_id: &str) -> Result<&'s mut Row, StoreError> {
    shard
        .sagas
        .get_mut(saga_id)
        .map(|row| &mut **row)
        .ok_or_else(|| StoreError::NotFound {
            saga_id: saga_id.to_owned(),
        })
}

fn expired(record: &Row, now: SystemTime) -> bool {
    record.lease_expires_at.is_none_or(|t| t <= now)
}

/// A waiting saga whose time has come.
fn due(record: &Row, wake_clock: SystemTime) -> bool {
    record.state == SagaState::Waiting && record.wake_at.is_some_and(|t| t <= wake_clock)
}

impl RunnerStore for MemoryStore {
    fn can_fail_transiently(&self) -> bool {
        false
    }

    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        let mut shard = self.shard(&saga.saga_id);
        if let Some(existing) = shard.sagas.get(&*saga.saga_id) {
            return ready(Ok(Created::Existing(Box::new(
                existing.record(&saga.saga_id),
            ))));
        }
        let now = SystemTime::now();
        let row = Row {
            kind: shard.kinds.of_new(&saga),
            state: SagaState::Running,
            parked_from: None,
            step_index: 0,
            attempt: u32::from(saga.owner.is_some()),
            recovery_count: 0,
            version: 1,
            current_step: Some(saga.first_step.into()),
            waiting_for: None,
            steps: saga.steps,
            context: saga.context,
            error: None,
            failed_step: None,
            lease_expires_at: Some(if saga.owner.is_some() {
                later(now, saga.lease)
            } else {
                now
            }),
            owner: saga.owner,
            cancel_requested: None,
            wake_at: None,
            created_at: now,
            updated_at: now,
        };
        shard.sagas.insert(saga.saga_id.clone(), Box::new(row));
        shard.track(&saga.saga_id);
        self.push_events(&mut shard, &saga.saga_id, &saga.header, saga.events);
        ready(Ok(Created::New { version: 1 }))
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        // Read only for a wait: a clock read per step is a measurable share of a step here.
        let wake_clock = (checkpoint.state == SagaState::Waiting).then(|| self.wake_clock());
        let mut shard = self.shard(&checkpoint.saga_id);
        let now = SystemTime::now();
        // A saga put to wait for a signal that is already here is due at once.
        let signalled = checkpoint
            .waiting_for
            .as_deref()
            .is_some_and(|names| signals::pending(&shard.signals, &checkpoint.saga_id, names));
        let mut written = None;
        let result = (|| {
            let row = row_mut(&mut shard, &checkpoint.saga_id)?;
            if row.version != checkpoint.expected_version {
                return Err(StoreError::Fenced {
                    saga_id: checkpoint.saga_id.to_string(),
                    expected: checkpoint.expected_version,
                    found: Some(row.version),
                });
            }
            if checkpoint.unless_cancelled
                && let Some(reason) = &row.cancel_requested
            {
                return Ok(Saved::Cancelled {
                    reason: reason.clone(),
                });
            }
            row.state = checkpoint.state;
            row.step_index = checkpoint.step_index;
            row::step_name(&mut row.current_step, checkpoint.current_step);
            row.attempt = checkpoint.attempt;
            row.steps = checkpoint.steps;
            if let Some(context) = checkpoint.context {
                row.context = context;
            }
            row.error.clone_from(&checkpoint.error);
            row.failed_step.clone_from(&checkpoint.failed_step);
            row.version += 1;
            if checkpoint.state == SagaState::Waiting {
                // Nobody holds a waiting saga.
                row.owner = None;
                row.lease_expires_at = None;
                row.wake_at = wake_clock.and_then(|clock| {
                    if signalled {
                        Some(clock)
                    } else {
                        checkpoint.wake_after.map(|d| later(clock, d))
                    }
                });
                row::waiting_for(&mut row.waiting_for, checkpoint.waiting_for.as_deref());
            } else {
                if row.owner.as_deref() != Some(&*checkpoint.owner) {
                    row.owner = Some(checkpoint.owner.clone());
                }
                row.lease_expires_at = Some(later(now, checkpoint.lease));
                row.wake_at = None;
                row.waiting_for = None;
            }
            if checkpoint.progress {
                row.recovery_count = 0;
            }
            row.parked_from = checkpoint.parked_from;
            if checkpoint.clear_cancel {
                row.cancel_requested = None;
            }
            row.updated_at = now;
            written = Some(live::filing(Some(row)));
            Ok(Saved::Written {
                version: row.version,
            })
        })();
        // Filed from the row just written, without looking it up again.
        if let Some(filing) = written {
            shard.live.file(&checkpoint.saga_id, filing);
        }
        if matches!(result, Ok(Saved::Written { .. })) {
            for &id in &checkpoint.consume_signals {
                signals::consume(&mut shard, &checkpoint.saga_id, id);
            }
            self.push_events(
                &mut shard,
                &checkpoint.saga_id,
                &checkpoint.header,
                checkpoint.events,
            );
            if let Some(tell) = checkpoint.tell {
                // Told after the write, under no lock: nothing in between can crash apart
                // from this process, which takes the whole store with it.
                drop(shard);
                return Box::pin(async move {
                    match self.send(tell).await {
                        Err(error) if !crate::store::operator::is_refusal(&error) => Err(error),
                        _ => result,
                    }
                });
            }
        }
        ready(result)
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        ready(Ok(self
            .shard(saga_id)
            .sagas
            .get(saga_id)
            .map(|row| row.record(saga_id))))
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        let mut shard = self.shard(&claim.saga_id);
        let now = SystemTime::now();
        let result = row_mut(&mut shard, &claim.saga_id).and_then(|row| {
            if row.version != claim.expected_version {
                return Err(StoreError::Fenced {
                    saga_id: claim.saga_id.clone(),
                    expected: claim.expected_version,
                    found: Some(row.version),
                });
            }
            take(row, &claim.owner, claim.lease, now);
            Ok(row.record(&claim.saga_id))
        });
        if result.is_ok() {
            shard.track(&claim.saga_id);
        }
        ready(result)
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        let now = SystemTime::now();
        let wake_clock = self.wake_clock();
        let claimable = |row: &Row| {
            ((request.expired_leases && row.state.is_active()) || due(row, wake_clock))
                && expired(row, now)
                && request.definitions.contains(&row.kind.definition.as_str())
        };
        // Expired leases first (oldest first), then due wakes (earliest first). Only the
        // keys are gathered, and from each shard no more of each kind than a claim could
        // take (with room for rows the filter refuses); a row is read out once it is taken.
        let look = (request.limit as usize).saturating_mul(4);
        let mut candidates: Vec<_> = (0..SHARDS)
            .flat_map(|i| {
                let shard = self.lock(i);
                let row = |saga_id: &str| shard.sagas.get_key_value(saga_id);
                let leased = request
                    .expired_leases
                    .then(|| shard.live.leased())
                    .into_iter()
                    .flatten()
                    .filter_map(row)
                    .filter(|(_, row)| claimable(row))
                    .take(look);
                let due = shard
                    .live
                    .due(wake_clock)
                    .filter_map(row)
                    .filter(|(_, row)| claimable(row))
                    .take(look);
                leased
                    .chain(due)
                    .map(|(id, row)| {
                        (
                            row.state == SagaState::Waiting,
                            row.wake_at,
                            row.lease_expires_at,
                            id.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        candidates.sort_unstable();
        let mut claimed = Vec::new();
        for (_, _, _, saga_id) in candidates {
            if claimed.len() >= request.limit as usize {
                break;
            }
            let mut shard = self.shard(&saga_id);
            let Some(row) = shard.sagas.get_mut(&saga_id) else {
                continue;
            };
            // Another claimer may have been quicker since the scan.
            if !claimable(row) {
                continue;
            }
            let mut record = row.record(&saga_id);
            if !filter(&record) {
                continue;
            }
            let waking = row.state == SagaState::Waiting;
            take(row, &request.owner, request.lease, now);
            if waking {
                // A wake is no recovery.
                row.recovery_count = row.recovery_count.saturating_sub(1);
            }
            // The record as taken: what `take` changed.
            record.owner = Some(request.owner.to_string());
            record.lease_expires_at = row.lease_expires_at;
            record.version = row.version;
            record.recovery_count = row.recovery_count;
            record.updated_at = row.updated_at;
            claimed.push(record);
            shard.track(&saga_id);
        }
        ready(Ok(claimed))
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        let now = SystemTime::now();
        let mut renewed = Vec::new();
        for id in saga_ids {
            let mut shard = self.shard(id);
            if let Some(row) = shard.sagas.get_mut(&**id)
                && row.owner.as_deref() == Some(owner)
                && row.state.is_active()
            {
                row.lease_expires_at = Some(later(now, lease));
                renewed.push(id.clone());
            }
        }
        ready(Ok(renewed))
    }

    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let now = SystemTime::now();
        for id in saga_ids {
            let mut shard = self.shard(id);
            if let Some(row) = shard.sagas.get_mut(&**id)
                && row.owner.as_deref() == Some(owner)
            {
                row.lease_expires_at = Some(now);
            }
        }
        ready(Ok(()))
    }

    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut shard = self.shard(saga_id);
        self.push_events(
            &mut shard,
            &Arc::from(saga_id),
            &Arc::new(header.clone()),
            events,
        );
        ready(Ok(()))
    }

    fn next_signal<'a>(
        &'a self,
        saga_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::PendingSignal>, StoreError>> {
        self.next(saga_id, name)
    }

    fn reject_signal<'a>(
        &'a self,
        saga_id: &'a str,
        id: i64,
        header: &'a AuditHeader,
        event: NewEvent,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.reject(saga_id, id, header, event)
    }

    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.wake_receiver())
    }

    fn clock(&self) -> SystemTime {
        self.wake_clock()
    }
}

/// Makes `owner` the owner of `row` after a claim.
fn take(row: &mut Row, owner: &Arc<str>, lease: Duration, now: SystemTime) {
    row.owner = Some(owner.clone());
    row.lease_expires_at = Some(later(now, lease));
    row.version += 1;
    row.recovery_count = row.recovery_count.saturating_add(1);
    row.updated_at = now;
}
