//! A saga's timeline as SVG, drawn from its audit log: one bar per step attempt on a time
//! axis (failed and timed-out attempts marked), compensations in a second colour, waits
//! hatched, one row per step so that steps that ran together sit on separate rows.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::html::{esc, span};
use saga_runtime::audit::{AuditRecord, EventType};

/// One bar: a step attempt, a compensation attempt or a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bar {
    pub(super) step: String,
    /// `attempt`, `compensation` or `wait`.
    pub(super) kind: &'static str,
    pub(super) attempt: u32,
    pub(super) start: SystemTime,
    pub(super) end: SystemTime,
    /// `completed`, `failed`, `timed_out`, `compensated`, `woken`, `interrupted` or `open`.
    pub(super) outcome: &'static str,
}

/// The bars of an audit log (oldest event first); bars still open end at `until`.
pub(super) fn bars(events: &[AuditRecord], until: SystemTime) -> Vec<Bar> {
    let mut done: Vec<Bar> = Vec::new();
    let mut open: Vec<Bar> = Vec::new();
    let close = |open: &mut Vec<Bar>,
                 done: &mut Vec<Bar>,
                 step: &str,
                 kind: &str,
                 at: SystemTime,
                 outcome: &'static str| {
        if let Some(i) = open.iter().position(|b| b.step == step && b.kind == kind) {
            let mut bar = open.remove(i);
            bar.end = at;
            bar.outcome = outcome;
            done.push(bar);
        }
    };
    for event in events {
        let Some(kind) = event.event() else { continue };
        let step = event.step_name.clone().unwrap_or_default();
        let at = event.timestamp;
        let start = |kind: &'static str| Bar {
            step: step.clone(),
            kind,
            attempt: event.attempt.unwrap_or(0),
            start: at,
            end: at,
            outcome: "open",
        };
        // A branch's wait ends when its step goes on (or ends, for a child's wait).
        if matches!(
            kind,
            EventType::StepStarted
                | EventType::StepCompleted
                | EventType::StepFailed
                | EventType::StepTimedOut
        ) {
            close(&mut open, &mut done, &step, "wait", at, "woken");
        }
        match kind {
            EventType::StepStarted => open.push(start("attempt")),
            EventType::StepCompleted => {
                close(&mut open, &mut done, &step, "attempt", at, "completed");
            }
            EventType::StepFailed => close(&mut open, &mut done, &step, "attempt", at, "failed"),
            EventType::StepTimedOut => {
                close(&mut open, &mut done, &step, "attempt", at, "timed_out");
            }
            EventType::CompensationStarted => open.push(start("compensation")),
            EventType::CompensationExecuted => {
                close(
                    &mut open,
                    &mut done,
                    &step,
                    "compensation",
                    at,
                    "compensated",
                );
            }
            EventType::CompensationFailed => {
                close(&mut open, &mut done, &step, "compensation", at, "failed");
                // A retry is logged without its own start: the next attempt begins now.
                let mut next = start("compensation");
                next.attempt = next.attempt.saturating_add(1);
                open.push(next);
            }
            // A saga with concurrent steps waits as a whole with no step named: its
            // branches' waits began with their own `step_waiting`.
            EventType::SagaWaiting | EventType::StepWaiting if !step.is_empty() => {
                open.push(start("wait"));
            }
            EventType::SagaWoken => close(&mut open, &mut done, &step, "wait", at, "woken"),
            EventType::SagaRecovered => {
                // Whatever was under way when its runner stopped.
                for mut bar in open.drain(..) {
                    bar.end = at;
                    bar.outcome = "interrupted";
                    done.push(bar);
                }
            }
            _ => {}
        }
    }
    for mut bar in open {
        bar.end = until.max(bar.start);
        done.push(bar);
    }
    done.sort_by_key(|b| b.start);
    done
}

const WIDTH: f64 = 960.0;
const LABELS: f64 = 150.0;
const ROW: f64 = 24.0;
const TOP: f64 = 24.0;

/// The SVG of `bars`, rows in the order of `steps` (then any other step seen).
pub(super) fn svg(bars: &[Bar], steps: &[String]) -> String {
    if bars.is_empty() {
        return "<p class=\"note\">No step has started yet.</p>".to_owned();
    }
    let mut rows: Vec<&str> = steps.iter().map(String::as_str).collect();
    for bar in bars {
        if !rows.contains(&bar.step.as_str()) {
            rows.push(&bar.step);
        }
    }
    rows.retain(|row| bars.iter().any(|b| b.step == *row));
    let t0 = bars
        .iter()
        .map(|b| b.start)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(t0);
    let total = t1
        .duration_since(t0)
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let scale = (WIDTH - LABELS - 12.0) / total.as_secs_f64();
    let x = |t: SystemTime| LABELS + t.duration_since(t0).unwrap_or_default().as_secs_f64() * scale;
    let height = TOP + ROW * rows.len() as f64 + 6.0;
    let mut out = format!(
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"timeline\"><defs><pattern id=\"hatch\" width=\"6\" height=\"6\" \
         patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" \
         height=\"6\" fill=\"#eceff4\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" \
         stroke=\"#a3aab8\" stroke-width=\"2\"/></pattern></defs>"
    );
    for tick in 0..=4 {
        let at = total.mul_f64(f64::from(tick) / 4.0);
        let tx = LABELS + at.as_secs_f64() * scale;
        let anchor = if tick == 4 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{height}\" stroke=\"#e3e6eb\"/>\
             <text x=\"{tx:.1}\" y=\"12\" text-anchor=\"{anchor}\">+{}</text>",
            TOP - 6.0,
            span(at)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + 15.0,
            esc(row)
        );
        for bar in bars.iter().filter(|b| b.step == *row) {
            let (fill, inset) = match (bar.kind, bar.outcome) {
                ("wait", _) => ("url(#hatch)", 3.0),
                ("compensation", "failed") => ("#c084fc", 5.0),
                ("compensation", _) => ("#7c3aed", 5.0),
                (_, "failed") => ("#dc2626", 3.0),
                (_, "timed_out") => ("#f59e0b", 3.0),
                (_, "interrupted") => ("#9ca3af", 3.0),
                _ => ("#2563eb", 3.0),
            };
            let left = x(bar.start);
            let width = (x(bar.end) - left).max(2.0);
            let took = bar.end.duration_since(bar.start).unwrap_or_default();
            let _ = write!(
                out,
                "<rect class=\"bar {kind} {outcome}\" data-step=\"{step}\" data-kind=\"{kind}\" \
                 data-attempt=\"{attempt}\" data-outcome=\"{outcome}\" x=\"{left:.1}\" \
                 y=\"{top:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" rx=\"2\" fill=\"{fill}\">\
                 <title>{step} {kind} {attempt}: {outcome}, {took}</title></rect>",
                kind = bar.kind,
                outcome = bar.outcome,
                step = esc(&bar.step),
                attempt = bar.attempt,
                top = y + inset,
                h = ROW - 2.0 * inset - 4.0,
                took = span(took),
            );
            if matches!(bar.outcome, "failed" | "timed_out") {
                let mark = if bar.outcome == "failed" { "✕" } else { "!" };
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{mark}</text>",
                    left + width + 2.0,
                    y + 15.0
                );
            }
        }
    }
    out.push_str("</svg>");
    out.push_str(
        "<p class=\"note\">Blue: a step attempt (red: failed ✕, amber: timed out !, grey: \
         interrupted by a crash). Purple: a compensation. Hatched: waiting, held by no runner.</p>",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: EventType, step: &str, attempt: u32, ms: u64) -> AuditRecord {
        let mut record = AuditRecord::new(
            id,
            "s",
            "t",
            kind.as_str(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        );
        record.step_name = Some(step.into()).filter(|s: &String| !s.is_empty());
        record.attempt = Some(attempt);
        record
    }

    #[test]
    fn attempts_retries_waits_and_compensations_are_bars() {
        use EventType as E;
        let log = [
            event(1, E::SagaStarted, "", 0, 0),
            event(2, E::StepStarted, "a", 1, 0),
            event(3, E::StepFailed, "a", 1, 10),
            event(4, E::StepStarted, "a", 2, 20),
            event(5, E::StepCompleted, "a", 2, 30),
            event(6, E::SagaWaiting, "b", 1, 30),
            event(7, E::SagaWoken, "b", 1, 90),
            event(8, E::StepStarted, "b", 1, 90),
            event(9, E::StepTimedOut, "b", 1, 100),
            event(10, E::CompensationStarted, "a", 1, 100),
            event(11, E::CompensationExecuted, "a", 1, 120),
            event(12, E::SagaFailed, "", 0, 120),
        ];
        let bars = bars(&log, SystemTime::UNIX_EPOCH);
        let seen: Vec<(&str, &str, u32, &str)> = bars
            .iter()
            .map(|b| (b.step.as_str(), b.kind, b.attempt, b.outcome))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "attempt", 1, "failed"),
                ("a", "attempt", 2, "completed"),
                ("b", "wait", 1, "woken"),
                ("b", "attempt", 1, "timed_out"),
                ("a", "compensation", 1, "compensated"),
            ]
        );
        let svg = svg(&bars, &["a".into(), "b".into()]);
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 5);
    }

    #[test]
    fn what_is_under_way_ends_now_or_at_a_crash() {
        use EventType as E;
        let log = [
            event(1, E::StepStarted, "a", 1, 0),
            event(2, E::SagaRecovered, "", 1, 50),
            event(3, E::StepStarted, "a", 2, 60),
        ];
        let until = SystemTime::UNIX_EPOCH + Duration::from_millis(80);
        let bars = bars(&log, until);
        assert_eq!(bars[0].outcome, "interrupted");
        assert_eq!(bars[1].outcome, "open");
        assert_eq!(bars[1].end, until);
    }

    #[test]
    fn hostile_step_names_are_escaped() {
        use EventType as E;
        let log = [
            event(1, E::StepStarted, "<script>\"x\"", 1, 0),
            event(2, E::StepCompleted, "<script>\"x\"", 1, 5),
        ];
        let svg = svg(&bars(&log, SystemTime::UNIX_EPOCH), &[]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&quot;x&quot;"));
    }
}
