//! What the commands print: aligned tables for people, JSON for scripts.

/// `println!`, except that a reader that went away (`saga show ID | head`) ends the process
/// quietly instead of panicking, and any other failure to write is a one-line error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output::stdout_failed(&error);
        }
    }};
}

/// Ends the process after a failed write to stdout.
pub(crate) fn stdout_failed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the output: {error}");
    std::process::exit(1)
}

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use saga_runtime::store::{EventCount, StateCount};
use saga_runtime::{AuditRecord, RunStatus, SagaRecord, SagaState};
use serde_json::{Value, json};

/// Each step's name and status, when the row records statuses.
fn named_steps(saga: &SagaRecord) -> Vec<(String, &saga_runtime::StepStatus)> {
    let names = saga.step_names();
    saga.steps
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
            (name, status)
        })
        .collect()
}

/// The step an operator looks at first, with its attempt: the one that failed, if one did,
/// else the one running or being undone.
fn focus(saga: &SagaRecord) -> (String, String) {
    match &saga.failed_step {
        Some(failed) if saga.current_step.as_ref() != Some(failed) => {
            let attempt = named_steps(saga)
                .into_iter()
                .find(|(name, _)| name == failed)
                .map_or_else(|| "-".to_owned(), |(_, status)| status.attempt.to_string());
            (failed.clone(), attempt)
        }
        _ => (
            saga.current_step.clone().unwrap_or_default(),
            saga.attempt.to_string(),
        ),
    }
}

/// `2026-11-26 01:02:03.123 UTC`.
pub(crate) fn time(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_millis(t).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

/// `3m ago`, `2h ago`, `in 25s`.
fn age(t: SystemTime) -> String {
    let now = SystemTime::now();
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", short(d)),
        Err(e) => format!("in {}", short(e.duration())),
    }
}

/// A duration rounded to its largest unit: `250ms`, `12s`, `4m`, `3h`, `2d`.
pub(crate) fn short(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// The time between two events: `+85µs`, `+12ms`, `+1.204s`.
fn delta(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("+{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("+{}ms", d.as_millis())
    } else {
        format!("+{:.3}s", d.as_secs_f64())
    }
}

fn clip(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        out!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn saga_json(saga: &SagaRecord) -> Value {
    json!({
        "saga_id": saga.saga_id,
        "saga_type": saga.saga_type,
        "definition": saga.definition,
        "state": saga.state,
        "current_step": saga.current_step,
        "attempt": saga.attempt,
        "error": saga.error,
        "failed_step": saga.failed_step,
        "owner": saga.owner,
        "lease_expires_at": saga.lease_expires_at.map(time),
        "wake_at": saga.wake_at.map(time),
        "recovery_count": saga.recovery_count,
        "parked_from": saga.parked_from,
        "cancel_requested": saga.cancel_requested,
        "user_id": saga.user_id,
        "ip_address": saga.ip_address,
        "version": saga.version,
        "steps": named_steps(saga)
            .into_iter()
            .map(|(name, status)| json!({
                "step": name,
                "phase": status.phase(),
                "run": status.run.as_str(),
                "attempt": status.attempt,
                "order": status.order,
                "compensation": status.compensation.as_str(),
                "compensation_attempt": status.compensation_attempt,
                "waiting_for": status.wait.map(saga_runtime::WaitFor::as_str),
                "until": status.until().map(time),
            }))
            .collect::<Vec<Value>>(),
        "created_at": time(saga.created_at),
        "updated_at": time(saga.updated_at),
    })
}

pub(crate) fn list(sagas: &[SagaRecord], as_json: bool) {
    if as_json {
        let rows: Vec<Value> = sagas.iter().map(saga_json).collect();
        out!("{}", Value::Array(rows));
        return;
    }
    if sagas.is_empty() {
        out!("no sagas");
        return;
    }
    let rows: Vec<Vec<String>> = sagas
        .iter()
        .map(|s| {
            let (step, attempt) = focus(s);
            vec![
                s.saga_id.clone(),
                s.saga_type.clone(),
                s.state.to_string(),
                step,
                attempt,
                age(s.updated_at),
                clip(s.error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    table(
        &[
            "SAGA ID", "TYPE", "STATE", "STEP", "ATTEMPT", "UPDATED", "ERROR",
        ],
        &rows,
    );
}

pub(crate) fn show(saga: &SagaRecord, events: &[AuditRecord], as_json: bool) {
    let context: Value = serde_json::from_str(&saga.context).unwrap_or(Value::Null);
    if as_json {
        show_json(saga, events, context);
        return;
    }
    show_header(saga);
    show_steps(saga, events);
    out!("context");
    let pretty = serde_json::to_string_pretty(&context).unwrap_or_else(|_| saga.context.clone());
    for line in pretty.lines() {
        out!("  {line}");
    }
    show_timeline(events);
}

/// `saga show --json`: the row, its context and its audit log.
fn show_json(saga: &SagaRecord, events: &[AuditRecord], context: Value) {
    let mut value = saga_json(saga);
    value["context"] = context;
    value["events"] = events
        .iter()
        .map(|e| {
            json!({
                "event_type": e.event_type,
                "step_name": e.step_name,
                "attempt": e.attempt,
                "error_message": e.error_message,
                "details": e.details,
                "user_id": e.user_id,
                "ip_address": e.ip_address,
                "timestamp": time(e.timestamp),
            })
        })
        .collect();
    out!("{value}");
}

/// `saga show`'s first lines: one field of the row each.
fn show_header(saga: &SagaRecord) {
    let field = |name: &str, value: String| out!("{name:<10} {value}");
    field("saga", saga.saga_id.clone());
    field(
        "type",
        format!(
            "{} (definition `{}`, fingerprint {})",
            saga.saga_type, saga.definition, saga.fingerprint
        ),
    );
    let mut state = saga.state.to_string();
    if let Some(from) = saga.parked_from {
        state = format!("{state} (parked while {from})");
    }
    field("state", state);
    field(
        "step",
        format!(
            "{} (attempt {})",
            saga.current_step.as_deref().unwrap_or("-"),
            saga.attempt
        ),
    );
    if let Some(error) = &saga.error {
        match &saga.failed_step {
            Some(step) => field("error", format!("step `{step}`: {error}")),
            None => field("error", error.clone()),
        }
    }
    if let Some(reason) = &saga.cancel_requested {
        field("cancel", format!("requested: {reason}"));
    }
    let lease = saga
        .lease_expires_at
        .filter(|_| saga.state.is_active())
        .map(|t| format!(", lease until {} ({})", time(t), age(t)))
        .unwrap_or_default();
    field(
        "owner",
        format!("{}{lease}", saga.owner.as_deref().unwrap_or("none")),
    );
    if let (SagaState::Waiting, Some(t)) = (saga.state, saga.wake_at) {
        field("wakes", format!("{} ({})", time(t), age(t)));
    }
    if saga.recovery_count > 0 {
        field(
            "recovered",
            format!("{} time(s) since its last progress", saga.recovery_count),
        );
    }
    field(
        "user",
        format!(
            "{} from {}",
            saga.user_id.as_deref().unwrap_or("-"),
            saga.ip_address.as_deref().unwrap_or("-")
        ),
    );
    field(
        "created",
        format!("{} ({})", time(saga.created_at), age(saga.created_at)),
    );
    field(
        "updated",
        format!("{} ({})", time(saga.updated_at), age(saga.updated_at)),
    );
}

/// `saga show`'s step table: each step's status, when it ran and beside which steps.
fn show_steps(saga: &SagaRecord, events: &[AuditRecord]) {
    let field = |name: &str, value: String| out!("{name:<10} {value}");
    let steps = named_steps(saga);
    if steps.is_empty() {
        field(
            "steps",
            "not recorded (written before step statuses existed)".into(),
        );
    } else {
        out!("steps");
        let names: Vec<String> = steps.iter().map(|(name, _)| name.clone()).collect();
        let mut spans = crate::spans::step_spans(events, &names);
        // A step started in the same write as a sibling that then failed for good may never
        // have begun: its status says so, and it did not run.
        for (span, (_, status)) in spans.iter_mut().zip(&steps) {
            if status.run == RunStatus::NotStarted {
                *span = None;
            }
        }
        let with = crate::spans::ran_with(&spans, &names);
        let since = |t: SystemTime| {
            t.duration_since(saga.created_at)
                .map_or_else(|_| "+0µs".to_owned(), delta)
        };
        let rows: Vec<Vec<String>> = steps
            .iter()
            .zip(spans.iter().zip(&with))
            .map(|((name, status), (span, with))| {
                let ran = span.map_or_else(String::new, |span| {
                    let end = span.end.map_or_else(|| "…".to_owned(), since);
                    format!("{} → {end}", since(span.start))
                });
                // A waiting step says until when: the end of its delay, or its deadline.
                let status = match status.until().filter(|_| status.run == RunStatus::Waiting) {
                    Some(until) => format!("{status}, until {}", time(until)),
                    None => status.to_string(),
                };
                vec![format!("  {name}"), status, ran, with.join(", ")]
            })
            .collect();
        table(&["  STEP", "STATUS", "RAN", "WITH"], &rows);
    }
}

/// `saga show`'s audit log, each event with the time since the one before.
fn show_timeline(events: &[AuditRecord]) {
    out!("timeline ({} events)", events.len());
    let mut previous: Option<SystemTime> = None;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let since = previous
                .and_then(|p| e.timestamp.duration_since(p).ok())
                .map_or_else(|| time(e.timestamp), delta);
            previous = Some(e.timestamp);
            vec![
                format!("  {since}"),
                e.event_type.clone(),
                e.step_name.clone().unwrap_or_default(),
                e.attempt.map(|a| format!("#{a}")).unwrap_or_default(),
                e.user_id.clone().unwrap_or_default(),
                clip(e.error_message.as_deref().unwrap_or(""), 70),
            ]
        })
        .collect();
    table(&["  WHEN", "EVENT", "STEP", "TRY", "BY", "MESSAGE"], &rows);
}

/// `saga stuck`: sagas without progress, then overdue waits (in JSON, one array of both;
/// their `state` tells them apart).
pub(crate) fn stuck(
    sagas: &[SagaRecord],
    older_than: Duration,
    overdue: &[SagaRecord],
    overdue_after: Duration,
    as_json: bool,
) {
    if as_json {
        let rows: Vec<Value> = sagas.iter().chain(overdue).map(saga_json).collect();
        out!("{}", Value::Array(rows));
        return;
    }
    print_stuck(sagas, older_than);
    print_overdue(overdue, overdue_after);
}

fn print_stuck(sagas: &[SagaRecord], older_than: Duration) {
    let threshold = humantime::format_duration(older_than);
    if sagas.is_empty() {
        out!("no saga has been running or compensating without progress for {threshold}");
        return;
    }
    for saga in sagas {
        out!(
            "Stuck saga: {}, updated_at: {} ({}), {} at step `{}` attempt {}, owner {}",
            saga.saga_id,
            time(saga.updated_at),
            age(saga.updated_at),
            saga.state,
            saga.current_step.as_deref().unwrap_or("?"),
            saga.attempt,
            saga.owner.as_deref().unwrap_or("none"),
        );
    }
    out!(
        "{} saga(s) without progress for {threshold}. Make one runnable again with `saga resume ID`, \
         or close it with `saga fail ID --reason ..` after compensating by hand.",
        sagas.len()
    );
}

fn print_overdue(sagas: &[SagaRecord], after: Duration) {
    let threshold = humantime::format_duration(after);
    if sagas.is_empty() {
        out!("no waiting saga is overdue by more than {threshold}");
        return;
    }
    for saga in sagas {
        let due = saga
            .wake_at
            .map_or_else(|| "-".to_owned(), |t| format!("{} ({})", time(t), age(t)));
        out!(
            "Overdue wait: {}, due {due}, before step `{}`",
            saga.saga_id,
            saga.current_step.as_deref().unwrap_or("?"),
        );
    }
    out!(
        "{} waiting saga(s) overdue by more than {threshold}: no runner with their definition \
         registered is claiming them (is one running, with recovery on?).",
        sagas.len()
    );
}

pub(crate) fn stats(counts: &[StateCount], events: &[EventCount], window: Duration, as_json: bool) {
    let mut by_type: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut stuck: BTreeMap<&str, u64> = BTreeMap::new();
    for count in counts {
        *by_type
            .entry(&count.saga_type)
            .or_default()
            .entry(count.state.as_str())
            .or_default() += count.count;
        *stuck.entry(&count.saga_type).or_default() += count.stuck;
    }
    let mut recent: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.saga_type != "*") {
        *recent
            .entry(&event.saga_type)
            .or_default()
            .entry(&event.event_type)
            .or_default() += event.count;
    }
    let hours = (window.as_secs_f64() / 3600.0).max(f64::EPSILON);
    let rates = |events: &BTreeMap<&str, u64>| {
        let get = |name: &str| events.get(name).copied().unwrap_or(0);
        let failed = get("saga_failed") + get("saga_compensation_failed");
        let finished = get("saga_completed") + failed;
        let failure_rate = if finished == 0 {
            0.0
        } else {
            failed as f64 / finished as f64
        };
        json!({
            "started": get("saga_started"),
            "completed": get("saga_completed"),
            "failed": get("saga_failed"),
            "compensation_failed": get("saga_compensation_failed"),
            "failure_rate": failure_rate,
            "compensations": get("compensation_executed"),
            "compensations_per_hour": get("compensation_executed") as f64 / hours,
            "step_failures": get("step_failed") + get("step_timed_out"),
        })
    };
    if as_json {
        let types: Vec<Value> = by_type
            .keys()
            .chain(recent.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|saga_type| {
                json!({
                    "saga_type": saga_type,
                    "states": by_type.get(saga_type).cloned().unwrap_or_default(),
                    "stuck": stuck.get(saga_type).copied().unwrap_or(0),
                    "window": rates(recent.get(saga_type).unwrap_or(&BTreeMap::new())),
                })
            })
            .collect();
        out!(
            "{}",
            json!({ "window_seconds": window.as_secs(), "types": types })
        );
        return;
    }
    if by_type.is_empty() {
        out!("no sagas");
    } else {
        let mut header = vec!["TYPE"];
        let names: Vec<&str> = SagaState::ALL.iter().map(|s| s.as_str()).collect();
        header.extend(names.iter().copied());
        header.push("stuck");
        let rows: Vec<Vec<String>> = by_type
            .iter()
            .map(|(saga_type, states)| {
                let mut row = vec![(*saga_type).to_owned()];
                row.extend(
                    names
                        .iter()
                        .map(|n| states.get(n).copied().unwrap_or(0).to_string()),
                );
                row.push(stuck.get(saga_type).copied().unwrap_or(0).to_string());
                row
            })
            .collect();
        table(&header, &rows);
    }
    out!("\nlast {}:", short(window));
    if recent.is_empty() {
        out!("  no events");
    }
    for (saga_type, events) in &recent {
        let r = rates(events);
        out!(
            "  {saga_type}: started {}, completed {}, failed {}, compensation_failed {}; failure rate {:.1}%; {} compensations ({:.2}/h); {} failed step attempts",
            r["started"],
            r["completed"],
            r["failed"],
            r["compensation_failed"],
            r["failure_rate"].as_f64().unwrap_or(0.0) * 100.0,
            r["compensations"],
            r["compensations_per_hour"].as_f64().unwrap_or(0.0),
            r["step_failures"],
        );
    }
}
