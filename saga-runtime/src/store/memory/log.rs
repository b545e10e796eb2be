//! A shard's audit log: its events in the order written, in segments that never move.
//! Appending never copies the log, and the room held ahead of it is one segment at most.
//! (A `Vec` doubling its buffer held room for as many events again as it had, and both
//! buffers while it moved them: a third of the memory of an in-flight saga.)

use super::StoredEvent;

/// The largest segment, in events.
const MAX_SEGMENT: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Log {
    segments: Vec<Vec<StoredEvent>>,
}

impl Log {
    pub(super) fn push(&mut self, event: StoredEvent) {
        match self.segments.last_mut() {
            Some(last) if last.len() < last.capacity() => last.push(event),
            _ => {
                // Small segments first, so that a store with few events holds little.
                let room = (16usize << self.segments.len().min(6)).min(MAX_SEGMENT);
                let mut segment = Vec::with_capacity(room);
                segment.push(event);
                self.segments.push(segment);
            }
        }
    }

    /// Every event, in the order written.
    pub(super) fn iter(&self) -> impl Iterator<Item = &StoredEvent> {
        self.segments.iter().flatten()
    }

    /// Keeps the events `keep` accepts, in order; segments left empty are dropped.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&StoredEvent) -> bool) {
        for segment in &mut self.segments {
            segment.retain(&mut keep);
        }
        self.segments.retain(|segment| !segment.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Log, StoredEvent};
    use crate::audit::{AuditHeader, EventType, NewEvent};

    #[test]
    fn events_keep_their_order_across_segments_and_a_prune() {
        let header = Arc::new(AuditHeader {
            saga_type: "t".into(),
            user_id: None,
            ip_address: None,
        });
        let mut log = Log::default();
        for id in 1..=5000 {
            log.push(StoredEvent {
                id,
                saga_id: Arc::from("s"),
                header: header.clone(),
                event: NewEvent::now(EventType::StepStarted),
            });
        }
        assert!(log.segments.len() > 5, "several segments");
        assert!(
            log.segments
                .iter()
                .all(|s| s.capacity() <= super::MAX_SEGMENT)
        );
        let ids: Vec<i64> = log.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=5000).collect::<Vec<_>>());
        log.retain(|e| e.id > 4000 || e.id % 2 == 0);
        let kept: Vec<i64> = log.iter().map(|e| e.id).collect();
        let expected: Vec<i64> = (1..=5000).filter(|id| *id > 4000 || id % 2 == 0).collect();
        assert_eq!(kept, expected);
        log.retain(|_| false);
        assert!(log.segments.is_empty());
    }
}
