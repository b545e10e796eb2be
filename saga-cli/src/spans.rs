//! When each step ran, read from the audit log: from its first `step_started` to the last
//! event that ended one of its attempts, and which other steps ran at the same time. This is
//! what `saga show` prints beside each step's status, so that the steps of a fan-out that
//! overlapped are visible at a glance.

use std::time::SystemTime;

use saga_runtime::AuditRecord;

/// When one step ran: `end` is `None` while an attempt is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: SystemTime,
    pub(crate) end: Option<SystemTime>,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        let before = |end: Option<SystemTime>, start: SystemTime| end.is_some_and(|e| e <= start);
        !before(self.end, other.start) && !before(other.end, self.start)
    }
}

/// The span of each step in `names`, from `events` (oldest first).
pub(crate) fn step_spans(events: &[AuditRecord], names: &[String]) -> Vec<Option<Span>> {
    names
        .iter()
        .map(|name| {
            let mut span: Option<Span> = None;
            for event in events
                .iter()
                .filter(|e| e.step_name.as_deref() == Some(name.as_str()))
            {
                match event.event_type.as_str() {
                    "step_started" => {
                        let start = span.map_or(event.timestamp, |s| s.start);
                        span = Some(Span { start, end: None });
                    }
                    "step_completed" | "step_failed" | "step_timed_out" => {
                        if let Some(span) = &mut span {
                            span.end = Some(event.timestamp);
                        }
                    }
                    _ => {}
                }
            }
            span
        })
        .collect()
}

/// For each step, the names of the other steps whose spans overlap its own.
pub(crate) fn ran_with(spans: &[Option<Span>], names: &[String]) -> Vec<Vec<String>> {
    spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            let Some(span) = span else {
                return Vec::new();
            };
            spans
                .iter()
                .enumerate()
                .filter(|&(j, other)| j != i && other.is_some_and(|o| o.overlaps(span)))
                .filter_map(|(j, _)| names.get(j).cloned())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn span(start: u64, end: Option<u64>) -> Span {
        Span {
            start: at(start),
            end: end.map(at),
        }
    }

    #[test]
    fn overlapping_steps_are_listed_together() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        // a and b overlap; c starts exactly when they end; d runs on; e never started.
        let spans = [
            Some(span(0, Some(100))),
            Some(span(10, Some(90))),
            Some(span(100, Some(150))),
            Some(span(120, None)),
            None,
        ];
        let with = ran_with(&spans, &names);
        assert_eq!(with[0], ["b"]);
        assert_eq!(with[1], ["a"]);
        assert_eq!(with[2], ["d"]);
        assert_eq!(with[3], ["c"]);
        assert!(with[4].is_empty());
    }
}
