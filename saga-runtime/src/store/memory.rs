//! [`MemoryStore`]: everything in process memory. The seed's "old" in-memory orchestrator,
//! and the store for unit tests; it loses everything when the process ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{
    Actor, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, PruneReport,
    SagaQuery, SagaRecord, SagaStore, Saved, StateCount, operator,
};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, EventType, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;

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
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sagas: HashMap<String, SagaRecord>,
    audit: Vec<AuditRecord>,
    next_audit_id: i64,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written row: every mutation
        // below is a sequence of plain assignments. Keep serving after poisoning.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces a stored row by hand: for tests of hostile data (a corrupted context, an
    /// unknown fingerprint).
    pub fn put_raw(&self, record: SagaRecord) {
        self.lock().sagas.insert(record.saga_id.clone(), record);
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Inner {
    fn push_events(&mut self, saga_id: &str, header: &AuditHeader, events: Vec<NewEvent>) {
        for event in events {
            self.next_audit_id += 1;
            self.audit.push(AuditRecord {
                id: self.next_audit_id,
                saga_id: saga_id.to_owned(),
                saga_type: header.saga_type.clone(),
                event_type: event.event_type.as_str().to_owned(),
                step_name: event.step_name.map(std::borrow::Cow::into_owned),
                attempt: event.attempt,
                error_message: event.error_message,
                details: event.details,
                user_id: header.user_id.clone(),
                ip_address: header.ip_address.clone(),
                timestamp: event.timestamp,
            });
        }
    }

    fn row_mut(&mut self, saga_id: &str) -> Result<&mut SagaRecord, StoreError> {
        self.sagas
            .get_mut(saga_id)
            .ok_or_else(|| StoreError::NotFound {
                saga_id: saga_id.to_owned(),
            })
    }
}

fn expired(record: &SagaRecord, now: SystemTime) -> bool {
    record.lease_expires_at.is_none_or(|t| t <= now)
}

impl SagaStore for MemoryStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        let mut inner = self.lock();
        if let Some(existing) = inner.sagas.get(&*saga.saga_id) {
            return ready(Ok(Created::Existing(Box::new(existing.clone()))));
        }
        let now = SystemTime::now();
        let record = SagaRecord {
            saga_id: saga.saga_id.to_string(),
            saga_type: saga.header.saga_type.clone(),
            definition: saga.definition.to_owned(),
            fingerprint: saga.fingerprint.to_owned(),
            state: SagaState::Running,
            step_index: 0,
            current_step: Some(saga.first_step.to_owned()),
            attempt: u32::from(saga.owner.is_some()),
            context: saga.context,
            config: saga.config,
            error: None,
            failed_step: None,
            version: 1,
            owner: saga.owner.as_deref().map(str::to_owned),
            lease_expires_at: Some(if saga.owner.is_some() {
                super::time::later(now, saga.lease)
            } else {
                now
            }),
            recovery_count: 0,
            parked_from: None,
            cancel_requested: None,
            user_id: saga.header.user_id.clone(),
            ip_address: saga.header.ip_address.clone(),
            created_at: now,
            updated_at: now,
        };
        inner.sagas.insert(record.saga_id.clone(), record);
        inner.push_events(&saga.saga_id, &saga.header, saga.events);
        ready(Ok(Created::New { version: 1 }))
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let result = (|| {
            let row = inner.row_mut(&checkpoint.saga_id)?;
            if row.version != checkpoint.expected_version {
                return Err(StoreError::Fenced {
                    saga_id: row.saga_id.clone(),
                    expected: checkpoint.expected_version,
                    found: row.version,
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
            row.current_step = checkpoint.current_step.map(str::to_owned);
            row.attempt = checkpoint.attempt;
            if let Some(context) = checkpoint.context {
                row.context = context;
            }
            row.error.clone_from(&checkpoint.error);
            row.failed_step.clone_from(&checkpoint.failed_step);
            row.version += 1;
            row.owner = Some(checkpoint.owner.to_string());
            row.lease_expires_at = Some(super::time::later(now, checkpoint.lease));
            if checkpoint.progress {
                row.recovery_count = 0;
            }
            row.parked_from = checkpoint.parked_from;
            if checkpoint.clear_cancel {
                row.cancel_requested = None;
            }
            row.updated_at = now;
            Ok(Saved::Written {
                version: row.version,
            })
        })();
        if matches!(result, Ok(Saved::Written { .. })) {
            inner.push_events(&checkpoint.saga_id, &checkpoint.header, checkpoint.events);
        }
        ready(result)
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        ready(Ok(self.lock().sagas.get(saga_id).cloned()))
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let result = inner.row_mut(&claim.saga_id).and_then(|row| {
            if row.version != claim.expected_version {
                return Err(StoreError::Fenced {
                    saga_id: row.saga_id.clone(),
                    expected: claim.expected_version,
                    found: row.version,
                });
            }
            take(row, &claim.owner, claim.lease, now);
            Ok(row.clone())
        });
        ready(result)
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let mut candidates: Vec<&mut SagaRecord> = inner
            .sagas
            .values_mut()
            .filter(|row| {
                row.state.is_active()
                    && expired(row, now)
                    && request.definitions.contains(&row.definition.as_str())
            })
            .collect();
        candidates.sort_by_key(|row| row.lease_expires_at);
        let mut claimed = Vec::new();
        for row in candidates {
            if claimed.len() >= request.limit as usize {
                break;
            }
            if filter(row) {
                take(row, &request.owner, request.lease, now);
                claimed.push(row.clone());
            }
        }
        ready(Ok(claimed))
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let mut renewed = Vec::new();
        for id in saga_ids {
            if let Some(row) = inner.sagas.get_mut(&**id)
                && row.owner.as_deref() == Some(owner)
                && row.state.is_active()
            {
                row.lease_expires_at = Some(super::time::later(now, lease));
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
        let mut inner = self.lock();
        let now = SystemTime::now();
        for id in saga_ids {
            if let Some(row) = inner.sagas.get_mut(&**id)
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
        self.lock().push_events(saga_id, header, events);
        ready(Ok(()))
    }

    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        let inner = self.lock();
        let mut rows: Vec<AuditRecord> = inner
            .audit
            .iter()
            .filter(|row| query.matches(row))
            .cloned()
            .collect();
        rows.sort_by_key(|row| (row.timestamp, row.id));
        if let Some(limit) = query.limit {
            rows.truncate(limit as usize);
        }
        ready(Ok(rows))
    }

    fn list<'a>(
        &'a self,
        query: &'a SagaQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        let inner = self.lock();
        let mut rows: Vec<SagaRecord> = inner
            .sagas
            .values()
            .filter(|row| query.matches(row))
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.saga_id.cmp(&b.saga_id))
        });
        if let Some(limit) = query.limit {
            rows.truncate(limit as usize);
        }
        ready(Ok(rows))
    }

    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        let mut inner = self.lock();
        let result = inner.row_mut(saga_id).and_then(|row| {
            if row.state != SagaState::Running {
                return Err(StoreError::InvalidState {
                    saga_id: row.saga_id.clone(),
                    state: row.state,
                    action: "cancel",
                });
            }
            row.cancel_requested = Some(reason.to_owned());
            Ok(row.clone())
        });
        if let Ok(row) = &result {
            let header = AuditHeader {
                saga_type: row.saga_type.clone(),
                user_id: Some(actor.user_id.clone()),
                ip_address: actor.ip_address.clone(),
            };
            let event = NewEvent::now(EventType::CancelRequested).error(reason);
            inner.push_events(saga_id, &header, vec![event]);
        }
        ready(result)
    }
    fn stats(
        &self,
        stuck_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>> {
        let inner = self.lock();
        let mut counts: Vec<StateCount> = Vec::new();
        for row in inner.sagas.values() {
            let stuck = u64::from(row.state.is_active() && row.updated_at < stuck_before);
            match counts
                .iter_mut()
                .find(|c| c.saga_type == row.saga_type && c.state == row.state)
            {
                Some(count) => {
                    count.count += 1;
                    count.stuck += stuck;
                }
                None => counts.push(StateCount {
                    saga_type: row.saga_type.clone(),
                    state: row.state,
                    count: 1,
                    stuck,
                }),
            }
        }
        counts.sort_by(|a, b| {
            (a.saga_type.as_str(), a.state.as_str()).cmp(&(b.saga_type.as_str(), b.state.as_str()))
        });
        ready(Ok(counts))
    }

    fn resume<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let result = inner.row_mut(saga_id).and_then(|row| {
            let change = operator::resume(row, reason)?;
            row.state = change.state;
            row.attempt = change.attempt;
            row.parked_from = None;
            row.recovery_count = 0;
            row.owner = None;
            row.lease_expires_at = Some(now);
            row.version += 1;
            row.updated_at = now;
            Ok((row.clone(), change.event))
        });
        ready(result.map(|(row, event)| {
            inner.push_events(saga_id, &operator::header(&row, actor), vec![event]);
            row
        }))
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        let mut inner = self.lock();
        let now = SystemTime::now();
        let result = inner.row_mut(saga_id).and_then(|row| {
            let event = operator::mark_failed(row, reason)?;
            row.state = SagaState::Failed;
            row.error = Some(reason.to_owned());
            row.parked_from = None;
            row.cancel_requested = None;
            row.owner = None;
            row.version += 1;
            row.updated_at = now;
            Ok((row.clone(), event))
        });
        ready(result.map(|(row, event)| {
            inner.push_events(saga_id, &operator::header(&row, actor), vec![event]);
            row
        }))
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        let mut inner = self.lock();
        let old_saga = |row: &SagaRecord| row.state.is_finished() && row.updated_at < before;
        let report = PruneReport {
            audit_rows: inner.audit.iter().filter(|a| a.timestamp < before).count() as u64,
            sagas: inner.sagas.values().filter(|r| old_saga(r)).count() as u64,
        };
        if !dry_run {
            inner.sagas.retain(|_, row| !old_saga(row));
            inner.audit.retain(|a| a.timestamp >= before);
            let (header, event) = operator::pruned(before, report, actor);
            inner.push_events(operator::WHOLE_LOG, &header, vec![event]);
        }
        ready(Ok(report))
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        let inner = self.lock();
        let mut counts: Vec<EventCount> = Vec::new();
        for row in inner.audit.iter().filter(|a| a.timestamp >= since) {
            match counts
                .iter_mut()
                .find(|c| c.saga_type == row.saga_type && c.event_type == row.event_type)
            {
                Some(count) => count.count += 1,
                None => counts.push(EventCount {
                    saga_type: row.saga_type.clone(),
                    event_type: row.event_type.clone(),
                    count: 1,
                }),
            }
        }
        counts.sort_by(|a, b| (&a.saga_type, &a.event_type).cmp(&(&b.saga_type, &b.event_type)));
        ready(Ok(counts))
    }
}

/// Makes `owner` the owner of `row` after a claim.
fn take(row: &mut SagaRecord, owner: &str, lease: Duration, now: SystemTime) {
    row.owner = Some(owner.to_owned());
    row.lease_expires_at = Some(super::time::later(now, lease));
    row.version += 1;
    row.recovery_count = row.recovery_count.saturating_add(1);
    row.updated_at = now;
}
