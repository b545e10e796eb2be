//! A shard's audit log: its events in the order written, in segments that never move.
//! Appending never copies the log, and the room held ahead of it is one segment at most.
//! (A `Vec` doubling its buffer held room for as many events again as it had, and both
//! buffers while it moved them: a third of the memory of an in-flight saga.)

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::{AuditHeader, AuditRecord, EventType, NewEvent};

/// An audit event as written; its header is shared by every event of the saga's run. Its
/// error message and details, which few events have, are boxed together: an event takes
/// 96 bytes rather than 136.
#[derive(Debug)]
pub(super) struct StoredEvent {
    pub(super) id: i64,
    saga_id: Arc<str>,
    pub(super) header: Arc<AuditHeader>,
    pub(super) timestamp: SystemTime,
    step_name: Option<Cow<'static, str>>,
    attempt: Option<u32>,
    pub(super) event_type: EventType,
    texts: Option<Box<Texts>>,
}

#[derive(Debug)]
struct Texts {
    error_message: Option<String>,
    details: Option<String>,
}

impl StoredEvent {
    pub(super) fn new(
        id: i64,
        saga_id: Arc<str>,
        header: Arc<AuditHeader>,
        event: NewEvent,
    ) -> Self {
        let texts = (event.error_message.is_some() || event.details.is_some()).then(|| {
            Box::new(Texts {
                error_message: event.error_message,
                details: event.details,
            })
        });
        StoredEvent {
            id,
            saga_id,
            header,
            timestamp: event.timestamp,
            step_name: event.step_name,
            attempt: event.attempt,
            event_type: event.event_type,
            texts,
        }
    }

    /// Whether `query` selects it (without making a record of it).
    pub(super) fn admitted_by(&self, query: &crate::audit::AuditQuery) -> bool {
        query.admits(
            &self.saga_id,
            self.event_type.as_str(),
            self.header.user_id.as_deref(),
            self.timestamp,
        )
    }

    /// Its place in the log's order: time, then id.
    pub(super) fn order(&self) -> (SystemTime, i64) {
        (self.timestamp, self.id)
    }

    pub(super) fn record(&self) -> AuditRecord {
        let texts = self.texts.as_deref();
        AuditRecord {
            id: self.id,
            saga_id: self.saga_id.to_string(),
            saga_type: self.header.saga_type.clone(),
            event_type: self.event_type.as_str().to_owned(),
            step_name: self.step_name.as_deref().map(str::to_owned),
            attempt: self.attempt,
            error_message: texts.and_then(|t| t.error_message.clone()),
            details: texts.and_then(|t| t.details.clone()),
            user_id: self.header.user_id.clone(),
            ip_address: self.header.ip_address.clone(),
            timestamp: self.timestamp,
        }
    }
}

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
    #[cfg(target_pointer_width = "64")]
    fn an_event_takes_96_bytes() {
        assert_eq!(std::mem::size_of::<StoredEvent>(), 96);
    }

    #[test]
    fn events_keep_their_order_across_segments_and_a_prune() {
        let header = Arc::new(AuditHeader {
            saga_type: "t".into(),
            user_id: None,
            ip_address: None,
        });
        let mut log = Log::default();
        for id in 1..=5000 {
            let event = match id % 3 {
                0 => NewEvent::now(EventType::StepFailed).error("é\0"),
                1 => NewEvent::now(EventType::StepStarted).step("a").attempt(1),
                _ => NewEvent::now(EventType::OperatorPruned).details("{}"),
            };
            log.push(StoredEvent::new(id, Arc::from("s"), header.clone(), event));
        }
        assert!(log.segments.len() > 5, "several segments");
        assert!(
            log.segments
                .iter()
                .all(|s| s.capacity() <= super::MAX_SEGMENT)
        );
        let ids: Vec<i64> = log.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=5000).collect::<Vec<_>>());
        let read: Vec<_> = log.iter().take(3).map(StoredEvent::record).collect();
        assert_eq!(
            (read[0].step_name.as_deref(), read[0].attempt),
            (Some("a"), Some(1))
        );
        assert_eq!(read[1].details.as_deref(), Some("{}"));
        assert_eq!(
            (read[2].error_message.as_deref(), read[2].details.as_deref()),
            (Some("é\u{fffd}"), None),
            "a NUL is kept as every store keeps it"
        );
        log.retain(|e| e.id > 4000 || e.id % 2 == 0);
        let kept: Vec<i64> = log.iter().map(|e| e.id).collect();
        let expected: Vec<i64> = (1..=5000).filter(|id| *id > 4000 || id % 2 == 0).collect();
        assert_eq!(kept, expected);
        log.retain(|_| false);
        assert!(log.segments.is_empty());
    }
}
