//! A store wrapper that reports the verdict of every write it passes on.
#![allow(dead_code)]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use saga_runtime::audit::{AuditHeader, AuditRecord, NewEvent};
use saga_runtime::prelude::*;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, NewSignal,
    PendingSignal, PruneReport, SagaQuery, SagaRecord, Saved, Sent, StateCount,
};
use saga_runtime::{RunnerStore, SagaStore, StoreError};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the database said to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Refused because another runner owns the saga (fenced), or nothing was changed.
    Rejected,
    Error,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Rejected => "rejected",
            Verdict::Error => "error",
        }
    }
}

/// Called with the write's method, its verdict and the time it was sent (ms since the
/// epoch: a write sent before an event is not counted as after it).
pub type Sink = Arc<dyn Fn(&'static str, Verdict, u128) + Send + Sync>;

pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A store that passes everything on to `inner` and reports each write to `sink`.
/// `release` reports nothing back, so it is reported as `release` with verdict `Ok`.
#[derive(Clone)]
pub struct Watched {
    pub inner: Arc<dyn SagaStore>,
    pub sink: Sink,
    /// How long each checkpoint write takes, on top of the inner store's time (a slow
    /// database, under tokio's clock).
    pub save_delay: Duration,
}

impl fmt::Debug for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Watched {
    fn verdict<T>(
        &self,
        method: &'static str,
        sent: u128,
        result: &Result<T, StoreError>,
        refused: impl Fn(&T) -> bool,
    ) {
        let verdict = match result {
            Ok(value) if refused(value) => Verdict::Rejected,
            Ok(_) => Verdict::Ok,
            Err(StoreError::Fenced { .. }) => Verdict::Rejected,
            Err(_) => Verdict::Error,
        };
        (self.sink)(method, verdict, sent);
    }
}

impl RunnerStore for Watched {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.create(saga).await;
            self.verdict("create", sent, &result, |c| {
                matches!(c, Created::Existing(_))
            });
            result
        })
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            if !self.save_delay.is_zero() {
                tokio::time::sleep(self.save_delay).await;
            }
            let result = self.inner.save(checkpoint).await;
            self.verdict("save", sent, &result, |_| false);
            result
        })
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        self.inner.load(saga_id)
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.claim(claim).await;
            self.verdict("claim", sent, &result, |_| false);
            result
        })
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.claim_expired(request, filter).await;
            self.verdict("claim_expired", sent, &result, Vec::is_empty);
            result
        })
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.renew(owner, saga_ids, lease).await;
            self.verdict("renew", sent, &result, |renewed| {
                renewed.len() < saga_ids.len()
            });
            result
        })
    }

    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // A release changes only rows the owner still holds: it reports nothing back,
            // so the test checks the rows instead.
            let result = self.inner.release(owner, saga_ids).await;
            (self.sink)("release", Verdict::Ok, unix_ms());
            result
        })
    }

    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.append_audit(saga_id, header, events).await;
            self.verdict("append_audit", sent, &result, |()| false);
            result
        })
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
        Box::pin(async move {
            let sent = unix_ms();
            let result = self.inner.reject_signal(saga_id, id, header, event).await;
            self.verdict("reject_signal", sent, &result, |()| false);
            result
        })
    }

    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.wakes()
    }

    fn clock(&self) -> std::time::SystemTime {
        self.inner.clock()
    }
}

impl SagaStore for Watched {
    fn send_signal(&self, signal: NewSignal) -> BoxFuture<'_, Result<Sent, StoreError>> {
        self.inner.send_signal(signal)
    }

    fn request_undo<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        self.inner.request_undo(saga_id, reason, actor)
    }

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
        self.inner.request_cancel(saga_id, reason, actor)
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
        self.inner.resume(saga_id, reason, actor)
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        self.inner.mark_failed(saga_id, reason, actor)
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        self.inner.prune(before, dry_run, actor)
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        self.inner.event_counts(since)
    }
}
