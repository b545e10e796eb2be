//! The child's store, counted: every write the runner makes through it is numbered and
//! reported on standard output (`w N`), so that the parent knows, and prints, how many
//! writes had returned when its SIGKILL landed. With `--kill-at-write N` the child kills
//! itself the moment its Nth write returns, before its caller sees the result: a seed, a
//! trial and that number replay a kill at the same point of the run (the interleaving of
//! the child's tasks is still the scheduler's, so a replay is close, not exact).
//!
//! Writes are the calls that change a row: create, save, claim, claims of expired or due
//! sagas that claimed any, lease renewals and releases, audit rows, rejected signals, signals and the
//! operator actions. Reads are passed through uncounted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use saga_runtime::audit::{AuditHeader, NewEvent};
use saga_runtime::store::{
    Actor, BoxFuture, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga,
    NewSignal, PendingSignal, PruneReport, RunnerStore, Saved, Sent, StateCount,
};
use saga_runtime::{AuditQuery, AuditRecord, SagaQuery, SagaRecord, SagaStore, StoreError};

/// A store that numbers the writes made through it, and may die at one of them.
#[derive(Debug)]
pub(crate) struct CountedStore {
    inner: Arc<dyn SagaStore>,
    writes: AtomicU64,
    kill_at: Option<u64>,
}

impl CountedStore {
    pub(crate) fn new(inner: Arc<dyn SagaStore>, kill_at: Option<u64>) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            kill_at,
        }
    }

    /// Awaits a write, numbers it, reports it, and dies there if it is the chosen one.
    async fn write<T>(&self, write: BoxFuture<'_, Result<T, StoreError>>) -> Result<T, StoreError> {
        let result = write.await;
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.kill_at == Some(n) {
            // As a SIGKILL would: no destructor, no flush, no lease release, and the
            // caller never learns how its write went.
            std::process::abort();
        }
        println!("w {n}");
        result
    }
}

impl RunnerStore for CountedStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(self.write(self.inner.create(saga)))
    }

    fn can_fail_transiently(&self) -> bool {
        self.inner.can_fail_transiently()
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(self.write(self.inner.save(checkpoint)))
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        self.inner.load(saga_id)
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        Box::pin(self.write(self.inner.claim(claim)))
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            // A pass that claims nothing changes nothing: counting it would tie the
            // numbers to the clock (the recovery loop runs every 50 ms).
            let claimed = self.inner.claim_expired(request, filter).await;
            if matches!(&claimed, Ok(rows) if rows.is_empty()) {
                return claimed;
            }
            self.write(Box::pin(std::future::ready(claimed))).await
        })
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        Box::pin(self.write(self.inner.renew(owner, saga_ids, lease)))
    }

    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(self.inner.release(owner, saga_ids)))
    }

    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(self.inner.append_audit(saga_id, header, events)))
    }

    fn next_signal<'a>(
        &'a self,
        saga_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingSignal>, StoreError>> {
        self.inner.next_signal(saga_id, name)
    }

    fn reject_signal<'a>(
        &'a self,
        saga_id: &'a str,
        id: i64,
        header: &'a AuditHeader,
        event: NewEvent,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(self.inner.reject_signal(saga_id, id, header, event)))
    }

    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.wakes()
    }

    fn clock(&self) -> std::time::SystemTime {
        self.inner.clock()
    }
}

impl SagaStore for CountedStore {
    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        self.inner.audit_log(query)
    }

    fn list<'a>(
        &'a self,
        query: &'a SagaQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.list(query)
    }

    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(self.write(self.inner.request_cancel(saga_id, reason, actor)))
    }

    fn stats(
        &self,
        stuck_before: SystemTime,
        overdue_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>> {
        self.inner.stats(stuck_before, overdue_before)
    }

    fn resume<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(self.write(self.inner.resume(saga_id, reason, actor)))
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(self.write(self.inner.mark_failed(saga_id, reason, actor)))
    }

    fn request_undo<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(self.write(self.inner.request_undo(saga_id, reason, actor)))
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        Box::pin(self.write(self.inner.prune(before, dry_run, actor)))
    }

    fn send_signal(&self, signal: NewSignal) -> BoxFuture<'_, Result<Sent, StoreError>> {
        Box::pin(self.write(self.inner.send_signal(signal)))
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        self.inner.event_counts(since)
    }
}
