//! The memory store's answers to queries and operator actions.

use std::cmp::Reverse;
use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

use super::{MemoryStore, Row, SHARDS, Shard, StoredEvent, ready, row_mut};
use crate::audit::{AuditQuery, AuditRecord, EventType, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::store::{
    Actor, EventCount, PruneReport, SagaQuery, SagaRecord, SagaStore, StateCount, operator,
};

impl SagaStore for MemoryStore {
    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        let shards: Vec<usize> = match &query.saga_id {
            Some(id) => vec![Self::shard_of(id)],
            None => (0..SHARDS).collect(),
        };
        // Events are filtered as stored, and only each shard's first `limit` of them (oldest
        // first) become records.
        let limit = query.limit.map_or(usize::MAX, |limit| limit as usize);
        let mut rows: Vec<AuditRecord> = Vec::new();
        for index in shards {
            let shard = self.lock(index);
            let mut found: Vec<&StoredEvent> = shard
                .audit
                .iter()
                .filter(|event| event.admitted_by(query))
                .collect();
            keep_first(&mut found, limit, |event| event.order());
            rows.extend(found.into_iter().map(StoredEvent::record));
        }
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
        // Newest first. Each shard offers only its own newest matches, as keys; a record is
        // made of the page alone, so that a page of a store of millions copies a page.
        let limit = query.limit.map_or(usize::MAX, |limit| limit as usize);
        let mut keys: Vec<(SystemTime, Arc<str>)> = (0..SHARDS)
            .flat_map(|index| {
                let shard = self.lock(index);
                let mut found: Vec<(SystemTime, &Arc<str>)> = shard
                    .sagas
                    .iter()
                    .filter(|(id, row)| query.admits(&row.listed(id)))
                    .map(|(id, row)| (row.created_at, id))
                    .collect();
                keep_first(&mut found, limit, |&key| Reverse(key));
                found
                    .into_iter()
                    .map(|(at, id)| (at, id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.truncate(limit);
        let rows = keys
            .iter()
            .filter_map(|(_, id)| {
                let shard = self.shard(id);
                // Read again: it may have changed, or gone, since its key was taken.
                let row = shard.sagas.get(&**id)?;
                query.admits(&row.listed(id)).then(|| row.record(id))
            })
            .collect();
        ready(Ok(rows))
    }

    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        let wake_clock = self.wake_clock();
        let mut shard = self.shard(saga_id);
        let result = row_mut(&mut shard, saga_id).and_then(|row| {
            if !matches!(row.state, SagaState::Running | SagaState::Waiting) {
                return Err(StoreError::InvalidState {
                    saga_id: saga_id.to_owned(),
                    state: row.state,
                    action: "cancel",
                });
            }
            row.cancel_requested = Some(crate::text::clean(reason).into_owned());
            if row.state == SagaState::Waiting {
                // Due now: a runner wakes it and compensates.
                row.wake_at = Some(wake_clock);
            }
            Ok(row.record(saga_id))
        });
        if let Ok(row) = &result {
            shard.track(saga_id);
            let header = Arc::new(operator::header(row, actor));
            let event = NewEvent::now(EventType::CancelRequested).error(reason);
            self.push_events(&mut shard, &Arc::from(saga_id), &header, vec![event]);
        }
        ready(result)
    }

    fn stats(
        &self,
        stuck_before: SystemTime,
        overdue_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>> {
        // `overdue_before` is wall time; wakes are measured on the wake clock.
        let grace = SystemTime::now()
            .duration_since(overdue_before)
            .unwrap_or_default();
        let overdue_before = self
            .wake_clock()
            .checked_sub(grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut counts: Vec<StateCount> = Vec::new();
        for index in 0..SHARDS {
            let shard = self.lock(index);
            for row in shard.sagas.values() {
                let stuck = u64::from(row.state.is_active() && row.updated_at < stuck_before);
                let overdue = u64::from(
                    row.state == SagaState::Waiting
                        && row.wake_at.is_some_and(|t| t < overdue_before),
                );
                match counts
                    .iter_mut()
                    .find(|c| c.saga_type == row.kind.saga_type && c.state == row.state)
                {
                    Some(count) => {
                        count.count += 1;
                        count.stuck += stuck;
                        count.overdue += overdue;
                    }
                    None => counts.push(StateCount {
                        saga_type: row.kind.saga_type.clone(),
                        state: row.state,
                        count: 1,
                        stuck,
                        overdue,
                    }),
                }
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
        let wake_clock = self.wake_clock();
        ready(self.operator_action(saga_id, actor, |row| {
            let change = operator::resume(row, reason)?;
            if change.state == SagaState::Waiting {
                // Due now, and a signal wait starts over with a new deadline.
                row.wake_at = Some(wake_clock);
                row.waiting_for = None;
            }
            row.state = change.state;
            row.attempt = change.attempt;
            row.steps = change.steps;
            row.parked_from = None;
            row.recovery_count = 0;
            Ok(change.event)
        }))
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        ready(self.operator_action(saga_id, actor, |row| {
            let event = operator::mark_failed(row, reason)?;
            row.state = SagaState::Failed;
            row.error = Some(crate::text::clean(reason).into_owned());
            row.parked_from = None;
            row.cancel_requested = None;
            row.wake_at = None;
            Ok(event)
        }))
    }

    fn request_undo<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        ready(self.operator_action(saga_id, actor, |row| {
            let event = operator::undo(row, reason)?;
            row.state = SagaState::Compensating;
            row.error = Some(operator::undone_error(reason));
            row.failed_step = None;
            row.attempt = 0;
            row.recovery_count = 0;
            row.cancel_requested = None;
            Ok(event)
        }))
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        let old_saga = |row: &Row| row.state.is_finished() && row.updated_at < before;
        let mut guards: Vec<MutexGuard<'_, Shard>> = (0..SHARDS).map(|i| self.lock(i)).collect();
        let report = PruneReport {
            audit_rows: guards
                .iter()
                .map(|s| s.audit.iter().filter(|a| a.timestamp < before).count() as u64)
                .sum(),
            sagas: guards
                .iter()
                .map(|s| s.sagas.values().filter(|r| old_saga(r)).count() as u64)
                .sum(),
        };
        if !dry_run {
            for shard in &mut guards {
                shard.sagas.retain(|_, row| !old_saga(row));
                // The signals of the sagas deleted go with them.
                let Shard { sagas, signals, .. } = &mut **shard;
                signals.retain(|saga_id, _| sagas.contains_key(saga_id.as_str()));
                shard.kinds.sweep();
                shard.audit.retain(|a| a.timestamp >= before);
            }
            let (header, event) = operator::pruned(before, report, actor);
            let index = Self::shard_of(operator::WHOLE_LOG);
            self.push_events(
                &mut guards[index],
                &Arc::from(operator::WHOLE_LOG),
                &Arc::new(header),
                vec![event],
            );
        }
        ready(Ok(report))
    }

    fn send_signal(
        &self,
        signal: crate::store::NewSignal,
    ) -> BoxFuture<'_, Result<crate::store::Sent, StoreError>> {
        self.send(signal)
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        let mut counts: Vec<EventCount> = Vec::new();
        for index in 0..SHARDS {
            let shard = self.lock(index);
            for stored in shard.audit.iter().filter(|a| a.timestamp >= since) {
                let event_type = stored.event_type.as_str();
                match counts
                    .iter_mut()
                    .find(|c| c.saga_type == stored.header.saga_type && c.event_type == event_type)
                {
                    Some(count) => count.count += 1,
                    None => counts.push(EventCount {
                        saga_type: stored.header.saga_type.clone(),
                        event_type: event_type.to_owned(),
                        count: 1,
                    }),
                }
            }
        }
        counts.sort_by(|a, b| (&a.saga_type, &a.event_type).cmp(&(&b.saga_type, &b.event_type)));
        ready(Ok(counts))
    }
}

impl MemoryStore {
    /// An operator action on one row, as the SQL stores apply it: `change` decides and
    /// edits the row; then the row belongs to nobody, its lease ends now (any runner may
    /// take it), its version moves (its owner is fenced off), and the action's audit row is
    /// written with the operator as user.
    fn operator_action(
        &self,
        saga_id: &str,
        actor: &Actor,
        change: impl FnOnce(&mut SagaRecord) -> Result<NewEvent, StoreError>,
    ) -> Result<SagaRecord, StoreError> {
        let mut shard = self.shard(saga_id);
        let now = SystemTime::now();
        let row = row_mut(&mut shard, saga_id)?;
        let mut record = row.record(saga_id);
        let event = change(&mut record)?;
        record.owner = None;
        record.lease_expires_at = Some(now);
        record.version += 1;
        record.updated_at = now;
        row.set(record.clone());
        let row = record;
        shard.track(saga_id);
        let header = Arc::new(operator::header(&row, actor));
        self.push_events(&mut shard, &Arc::from(saga_id), &header, vec![event]);
        Ok(row)
    }
}

/// Keeps in `items` the first `limit` by `key`, in no particular order: a page's share of
/// one shard, before any of it is copied.
fn keep_first<T, K: Ord>(items: &mut Vec<T>, limit: usize, key: impl FnMut(&T) -> K) {
    if items.len() > limit {
        items.select_nth_unstable_by_key(limit, key);
        items.truncate(limit);
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::keep_first;

    #[test]
    fn keep_first_keeps_the_first_by_key() {
        let keys = vec![5, 1, 9, 3, 9, 7, 2];
        let mut least = keys.clone();
        keep_first(&mut least, 3, |&k| k);
        least.sort_unstable();
        assert_eq!(least, [1, 2, 3]);
        let mut greatest = keys.clone();
        keep_first(&mut greatest, 3, |&k| Reverse(k));
        greatest.sort_unstable();
        assert_eq!(greatest, [7, 9, 9]);
        let mut none = keys.clone();
        keep_first(&mut none, 0, |&k| k);
        assert!(none.is_empty());
        let mut all = keys.clone();
        keep_first(&mut all, usize::MAX, |&k| k);
        assert_eq!(all, keys);
    }
}
