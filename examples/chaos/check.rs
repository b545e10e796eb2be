//! The checks of a trial: every saga against the ledger and the audit log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use saga_runtime::prelude::*;
use saga_runtime::{EventType, SagaRecord};

use super::ledger::{Ledger, Row};
use super::{Args, STEPS, is_family, is_wait};

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) lost: u64,
    pub(crate) duplicate_effects: u64,
    pub(crate) orphan_compensations: u64,
    pub(crate) double_outcomes: u64,
    pub(crate) ran_after_cancel: u64,
    /// A waiting saga's signal stored more than once, or not taken exactly once by a step
    /// that completed.
    pub(crate) signal_errors: u64,
    /// A parent's child started more than once, or its end told more than once.
    pub(crate) child_errors: u64,
    /// Parents whose child step completed (its child completed).
    pub(crate) children: u64,
    /// Of those, the ones whose parent went on over 3 s after the child completed (found
    /// at its deadline, not told).
    pub(crate) children_told_late: u64,
    pub(crate) recovered: u64,
    /// Sagas the killed runner left waiting (a delay or a signal), woken by the recovery.
    pub(crate) woken: u64,
    /// Waiting sagas woken over 3 s after their signal arrived while they waited (at their
    /// 5 s deadline rather than by the signal): slow, not wrong, so not a violation.
    pub(crate) late_wakes: u64,
    /// Effects applied twice because a crash interrupted their step (allowed).
    pub(crate) reapplied: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) parked: u64,
    pub(crate) cancelled: u64,
    pub(crate) sagas: u64,
}

impl Tally {
    pub(crate) fn violations(&self) -> u64 {
        self.lost
            + self.duplicate_effects
            + self.orphan_compensations
            + self.double_outcomes
            + self.ran_after_cancel
            + self.signal_errors
            + self.child_errors
    }
}

/// Checks every saga of a trial against the ledger and the audit log.
pub(crate) async fn check(
    args: &Args,
    store: &Arc<dyn SagaStore>,
    ledger: &Ledger,
    trial: u32,
    ids: &[String],
    acked: &HashSet<String>,
    tally: &mut Tally,
) -> Result<(), String> {
    let killed = format!("child-{trial}");
    let mut by_saga: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    let rows = ledger.rows(trial).await?;
    for row in &rows {
        by_saga.entry(row.saga_id.as_str()).or_default().push(row);
    }
    // Every violation, in full: a rare one must not go unread (one was, at --sagas 24).
    let violation = |kind: &str, id: &str, what: String, counter: &mut u64| {
        *counter += 1;
        eprintln!(
            "VIOLATION {kind} {id} (trial {trial}, seed {}): {what}",
            args.seed
        );
    };
    for id in ids {
        let before = tally.violations();
        let rows = by_saga.get(id.as_str()).map_or(&[][..], Vec::as_slice);
        let Some(record) = store.load(id).await.map_err(|e| e.to_string())? else {
            if acked.contains(id) || !rows.is_empty() {
                violation("lost", id, "its row is gone".into(), &mut tally.lost);
            }
            continue;
        };
        tally.sagas += 1;
        let events = store
            .audit_log(&AuditQuery::new().saga_id(id.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let count = |event: EventType, step: Option<&str>| {
            events
                .iter()
                .filter(|e| e.event() == Some(event))
                .filter(|e| step.is_none() || e.step_name.as_deref() == step)
                .count()
        };
        let has = |step: usize, kind: &str| rows.iter().any(|r| r.step == step && r.kind == kind);

        // Every saga ends, and ends whole.
        match record.state {
            SagaState::Completed => {
                tally.completed += 1;
                if let Some(step) = (0..STEPS.len()).find(|s| !has(*s, "do")) {
                    violation(
                        "lost",
                        id,
                        format!("completed without the effect of step {step}"),
                        &mut tally.lost,
                    );
                }
                if rows.iter().any(|r| r.kind == "undo")
                    || count(EventType::CompensationExecuted, None) > 0
                {
                    violation(
                        "double_outcome",
                        id,
                        "completed and compensated".into(),
                        &mut tally.double_outcomes,
                    );
                }
            }
            SagaState::Failed => {
                tally.failed += 1;
                for step in 0..STEPS.len() {
                    if has(step, "do") && !has(step, "undo") {
                        violation(
                            "lost",
                            id,
                            format!("failed with step {step} applied and never undone"),
                            &mut tally.lost,
                        );
                    }
                }
            }
            SagaState::Parked => tally.parked += 1,
            state => violation(
                "lost",
                id,
                format!("left in state {state}"),
                &mut tally.lost,
            ),
        }
        let terminal = count(EventType::SagaCompleted, None)
            + count(EventType::SagaFailed, None)
            + count(EventType::SagaCompensationFailed, None)
            + count(EventType::SagaParked, None);
        if terminal > 1 {
            violation(
                "double_outcome",
                id,
                format!("{terminal} terminal events"),
                &mut tally.double_outcomes,
            );
        }

        // Compensations only for steps that started.
        for step in 0..STEPS.len() {
            if (has(step, "undo_start") || has(step, "undo")) && !has(step, "start") {
                violation(
                    "orphan_compensation",
                    id,
                    format!("step {step} undone but never started"),
                    &mut tally.orphan_compensations,
                );
            }
        }

        // An effect repeats only when a crash interrupted its step.
        for (step, name) in STEPS.iter().enumerate() {
            for kind in ["do", "undo"] {
                let copies: Vec<&&Row> = rows
                    .iter()
                    .filter(|r| r.step == step && r.kind == kind)
                    .collect();
                if copies.len() < 2 {
                    continue;
                }
                let runners: HashSet<&str> = copies.iter().map(|r| r.runner.as_str()).collect();
                let earlier_by_killed = copies[..copies.len() - 1]
                    .iter()
                    .all(|r| r.runner == killed);
                if runners.len() == copies.len() && earlier_by_killed {
                    tally.reapplied += 1;
                } else {
                    violation(
                        "duplicate_effect",
                        id,
                        format!("{kind} of step {step} applied {} times", copies.len()),
                        &mut tally.duplicate_effects,
                    );
                }
            }
            let completions = count(EventType::StepCompleted, Some(name));
            let undone = count(EventType::CompensationExecuted, Some(name));
            if completions > 1 || undone > 1 {
                violation(
                    "duplicate_effect",
                    id,
                    format!("{name} completed {completions} and undone {undone} times"),
                    &mut tally.duplicate_effects,
                );
            }
        }

        // A waiting saga's signal: stored once (one key), taken once exactly when `ship`
        // completed (with its step's end), never rejected.
        let index = id.rsplit('s').next().and_then(|n| n.parse::<u32>().ok());
        if index.is_some_and(is_wait) {
            let signals = ledger.signals(id).await?;
            let consumed = signals.iter().filter(|(consumed, _)| *consumed).count();
            let rejected = signals.iter().filter(|(_, rejected)| *rejected).count();
            let shipped = count(EventType::StepCompleted, Some("ship")) == 1;
            if woken_late(&events) {
                tally.late_wakes += 1;
                if args.verbose {
                    eprintln!("late wake {id}");
                }
            }
            let sent = signals.len();
            if sent > 1 || rejected > 0 || consumed != usize::from(shipped) {
                violation(
                    "signal",
                    id,
                    format!(
                        "{sent} stored, {consumed} consumed, {rejected} rejected; ship completed: {shipped}"
                    ),
                    &mut tally.signal_errors,
                );
            }
        }

        if index.is_some_and(is_family) {
            check_child(store, ledger, id, &events, tally, &violation, args.verbose).await?;
        }
        if tally.violations() > before {
            dump(store, &record, &events, rows).await;
        }

        // Nothing starts after a cancellation was acknowledged.
        if let Some(cancel) = rows.iter().find(|r| r.kind == "cancel") {
            tally.cancelled += 1;
            if let Some(late) = rows.iter().find(|r| r.kind == "start" && r.id > cancel.id) {
                violation(
                    "ran_after_cancel",
                    id,
                    format!("step {} started after the cancellation", late.step),
                    &mut tally.ran_after_cancel,
                );
            }
            if record.state == SagaState::Completed {
                violation(
                    "ran_after_cancel",
                    id,
                    "completed after its cancellation".into(),
                    &mut tally.ran_after_cancel,
                );
            }
        }
    }
    Ok(())
}

/// Everything known of a saga that broke a check: its row (and its child's), its audit
/// log and its ledger, so that one run's output is enough to find the cause.
async fn dump(
    store: &Arc<dyn SagaStore>,
    record: &SagaRecord,
    events: &[saga_runtime::AuditRecord],
    rows: &[&Row],
) {
    let row = |r: &SagaRecord| {
        format!(
            "{} {} v{} step {} attempt {} owner {:?} wake_at {:?} waiting_for {:?} cancel {:?} recoveries {} error {:?} steps {:?}",
            r.saga_id,
            r.state,
            r.version,
            r.step_index,
            r.attempt,
            r.owner,
            r.wake_at,
            r.waiting_for,
            r.cancel_requested,
            r.recovery_count,
            r.error,
            r.steps
        )
    };
    eprintln!("  row: {}", row(record));
    let child = format!("{}/ship", record.saga_id);
    if let Ok(Some(child)) = store.load(&child).await {
        eprintln!("  child row: {}", row(&child));
        if let Ok(log) = store
            .audit_log(&AuditQuery::new().saga_id(child.saga_id))
            .await
        {
            for e in &log {
                print_event("child event", e);
            }
        }
    }
    for e in events {
        print_event("event", e);
    }
    for r in rows {
        eprintln!(
            "  ledger {} step {} {} by {}",
            r.id, r.step, r.kind, r.runner
        );
    }
}

fn print_event(what: &str, e: &saga_runtime::AuditRecord) {
    let at = e
        .timestamp
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    eprintln!(
        "  {what} {} {} step {:?} attempt {:?} by {:?} at {at} us: {:?} {:?}",
        e.id, e.event_type, e.step_name, e.attempt, e.user_id, e.error_message, e.details
    );
}

/// A parent's child saga: started once, its end told at most once.
async fn check_child(
    store: &Arc<dyn SagaStore>,
    ledger: &Ledger,
    id: &str,
    events: &[saga_runtime::AuditRecord],
    tally: &mut Tally,
    violation: &impl Fn(&str, &str, String, &mut u64),
    verbose: bool,
) -> Result<(), String> {
    let child = format!("{id}/ship");
    let started = store
        .audit_log(
            &AuditQuery::new()
                .saga_id(child.clone())
                .event_type(EventType::SagaStarted.as_str()),
        )
        .await
        .map_err(|e| e.to_string())?
        .len();
    let created = events
        .iter()
        .filter(|e| e.event() == Some(EventType::ChildStarted))
        .filter(|e| {
            e.details
                .as_deref()
                .is_some_and(|d| d.contains("\"created\":true"))
        })
        .count();
    // Its end is told once per end (completed, then failed if its parent undid it); the
    // write that ended the step (completed, or failed with its child) consumed one.
    let signals = ledger.signals(id).await?;
    let consumed = signals.iter().filter(|(consumed, _)| *consumed).count();
    let shipped = events
        .iter()
        .filter(|e| e.event() == Some(EventType::StepCompleted))
        .any(|e| e.step_name.as_deref() == Some("ship"));
    if started > 1 || created > 1 || consumed > 1 {
        violation(
            "child",
            id,
            format!(
                "child started {started} times, created {created} times; {consumed} end signals consumed, ship completed: {shipped}"
            ),
            &mut tally.child_errors,
        );
    }
    if shipped {
        tally.children += 1;
        // Late: the parent went on over 3 s after its child completed (at its deadline,
        // rather than told by the child).
        let ended = store
            .audit_log(
                &AuditQuery::new()
                    .saga_id(child)
                    .event_type(EventType::SagaCompleted.as_str()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let went_on = events
            .iter()
            .find(|e| {
                e.event() == Some(EventType::StepCompleted)
                    && e.step_name.as_deref() == Some("ship")
            })
            .map(|e| e.timestamp);
        if let (Some(ended), Some(went_on)) = (ended.first(), went_on)
            && went_on
                .duration_since(ended.timestamp)
                .is_ok_and(|gap| gap > std::time::Duration::from_secs(3))
        {
            tally.children_told_late += 1;
            if verbose {
                eprintln!("late child {id}");
            }
        }
    }
    Ok(())
}

/// Whether a saga waiting for its signal was woken over 3 s after the signal arrived.
fn woken_late(events: &[saga_runtime::AuditRecord]) -> bool {
    let at = |event: EventType| {
        events
            .iter()
            .position(|e| e.event() == Some(event) && e.step_name.as_deref() != Some("charge"))
    };
    let (Some(received), Some(waiting)) =
        (at(EventType::SignalReceived), at(EventType::SagaWaiting))
    else {
        return false;
    };
    // The wake that follows both the signal and the wait for it.
    let since = received.max(waiting);
    let Some(woken) = events[since..]
        .iter()
        .find(|e| e.event() == Some(EventType::SagaWoken))
    else {
        return false;
    };
    let arrived = events[received].timestamp.max(events[waiting].timestamp);
    woken
        .timestamp
        .duration_since(arrived)
        .is_ok_and(|gap| gap > std::time::Duration::from_secs(3))
}
