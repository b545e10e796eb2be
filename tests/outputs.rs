//! Conformance, on every store: a step that completed is known to have completed, whatever
//! its output (`()`, a unit struct, `None`, an empty collection, a large hostile string), after
//! any round trip through the store and after a crash and recovery; and hostile text in step
//! errors is stored in the one documented way.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::{CompensationStatus, RunStatus, StepStatus};
use support::shapes::{SHAPE_STEPS, shape_outputs, shaped};
use support::stores::{Backend, Harness};
use support::{Action, HOSTILE_LEN, Input, Script, audit_trail};

/// Starts saga `id` of the kind `start` picks as runner `runner-a` until an attempt reaches
/// [`Action::Crash`], then drops its task, as a killed process would leave it.
async fn crash<F, Fut>(script: &Arc<Script>, start: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let task = tokio::spawn(start());
    tokio::time::timeout(Duration::from_secs(20), script.crashed())
        .await
        .expect("the saga reached its crash");
    task.abort();
    let _ = task.await;
}

fn completed(steps: &[StepStatus]) -> Vec<bool> {
    steps
        .iter()
        .map(|s| s.run == RunStatus::Completed)
        .collect()
}

async fn odd_outputs_stay_completed_after_a_round_trip(h: &Harness) {
    let script = Script::new();
    let (_, shapes, _) = shaped(h.reopen(), "runner-a", &script);
    let outcome = shapes
        .execute_with_id("shapes-ok", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    assert_eq!(shape_outputs(outcome.context()), [true; 5]);
    assert_eq!(
        outcome.context().big.as_deref(),
        Some(support::shapes::big_output().as_str())
    );

    let stored = shapes.outcome("shapes-ok").await.unwrap().unwrap();
    assert_eq!(stored.state(), SagaState::Completed);
    assert_eq!(
        shape_outputs(stored.context()),
        [true; 5],
        "read back from the store"
    );
    let again = shapes
        .execute_with_id("shapes-ok", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(again.is_existing());
    assert_eq!(shape_outputs(again.context()), [true; 5]);
    assert_eq!(script.names(), SHAPE_STEPS, "nothing ran twice");

    let record = h.store.load("shapes-ok").await.unwrap().unwrap();
    assert_eq!(completed(&record.steps), [true; 5]);
}

async fn completed_unit_steps_are_compensated_after_a_crash(h: &Harness) {
    let first = Script::new();
    first.on("big", [Action::Crash]);
    let (_a, shapes, _) = shaped(h.reopen(), "runner-a", &first);
    crash(&first, move || async move {
        let _ = shapes
            .execute_with_id("shapes-undo", &SagaConfig::default(), Input { id: 1 })
            .await;
    })
    .await;
    assert_eq!(first.names(), SHAPE_STEPS);

    // The same runner id after a restart takes its saga back at once.
    let second = Script::new();
    second.on("big", [Action::Permanent]);
    let (orchestrator, shapes, _) = shaped(h.reopen(), "runner-a", &second);
    let outcome = shapes.recover("shapes-undo").await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(
        second.names(),
        ["big", "undo_nothing", "undo_marker", "undo_unit"],
        "every completed step with a compensation is undone, newest first"
    );
    assert_eq!(outcome.error().unwrap().step(), Some("big"));
    let trail = audit_trail(&orchestrator, "shapes-undo").await;
    assert_eq!(
        trail[trail.len() - 7..],
        [
            "compensation_started:nothing:1",
            "compensation_executed:nothing:1",
            "compensation_started:marker:1",
            "compensation_executed:marker:1",
            "compensation_started:unit:1",
            "compensation_executed:unit:1",
            "saga_failed",
        ]
    );
    let record = h.store.load("shapes-undo").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(
        phases,
        [
            "compensated",
            "compensated",
            "compensated",
            "completed",
            "failed"
        ],
        "`empty` has no compensation; `big` failed for good"
    );
    assert_eq!(
        record.steps[0].compensation,
        CompensationStatus::Compensated
    );
    assert_eq!(
        record.steps[4].attempt, 2,
        "the interrupted attempt and the one that failed"
    );
}

async fn a_later_step_gets_its_unit_input_after_recovery(h: &Harness) {
    let first = Script::new();
    first.on("marker", [Action::Crash]);
    let (_a, shapes, _) = shaped(h.reopen(), "runner-a", &first);
    crash(&first, move || async move {
        let _ = shapes
            .execute_with_id("shapes-resume", &SagaConfig::default(), Input { id: 1 })
            .await;
    })
    .await;

    let second = Script::new();
    let (_, shapes, _) = shaped(h.reopen(), "runner-a", &second);
    let outcome = shapes.recover("shapes-resume").await.unwrap();
    assert_eq!(
        outcome.state(),
        SagaState::Completed,
        "{:?}",
        outcome.error()
    );
    assert_eq!(second.names(), ["marker", "nothing", "empty", "big"]);
    assert_eq!(second.log()[0].attempt, 2, "the interrupted attempt counts");
    assert_eq!(shape_outputs(outcome.context()), [true; 5]);
}

async fn a_completed_unit_pivot_holds_after_recovery(h: &Harness) {
    let first = Script::new();
    first.on("c", [Action::Crash]);
    let (_a, _, pivot) = shaped(h.reopen(), "runner-a", &first);
    crash(&first, move || async move {
        let _ = pivot
            .execute_with_id("pivot-unit", &SagaConfig::default(), Input { id: 1 })
            .await;
    })
    .await;
    assert_eq!(first.names(), ["a", "b", "c"]);

    // `c` fails again after the crash; the pivot completed, so `c` goes on forward until it
    // succeeds, and `a` is never undone.
    let second = Script::new();
    second.on("c", [Action::Fail]);
    let (_, _, pivot) = shaped(h.reopen(), "runner-a", &second);
    let outcome = pivot.recover("pivot-unit").await.unwrap();
    assert_eq!(
        outcome.state(),
        SagaState::Completed,
        "{:?}",
        outcome.error()
    );
    assert_eq!(second.names(), ["c", "c"]);
    let record = h.store.load("pivot-unit").await.unwrap().unwrap();
    assert_eq!(completed(&record.steps), [true; 3]);
}

async fn hostile_step_errors_are_stored_as_documented(h: &Harness) {
    let script = Script::new();
    script.on("unit", [Action::Nasty(false)]);
    script.on("marker", [Action::Nasty(true)]);
    let (orchestrator, shapes, _) = shaped(h.reopen(), "runner-a", &script);
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        shapes.execute_with_id("nasty", &SagaConfig::default(), Input { id: 1 }),
    )
    .await
    .expect("the saga does not stall on its error text")
    .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["unit", "unit", "marker", "undo_unit"]);

    let record = h.store.load("nasty").await.unwrap().unwrap();
    let stored = record.error.expect("the failure is stored");
    assert_documented(&stored);
    let failure = outcome.error().unwrap();
    assert_eq!(
        failure.message(),
        stored,
        "the outcome says what the row says"
    );
    let rows = orchestrator
        .audit_log(&AuditQuery::new().saga_id("nasty").event_type("step_failed"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_documented(row.error_message.as_deref().unwrap());
    }
}

async fn a_saga_cancelled_before_it_started_undoes_nothing(h: &Harness) {
    let script = Script::new();
    let (orchestrator, _, pivot) = shaped(h.reopen(), "runner-a", &script);
    assert!(
        pivot
            .enqueue("early", &SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap()
    );
    orchestrator
        .cancel("early", "changed my mind", &Actor::new("ops"))
        .await
        .unwrap();
    let outcome = pivot.recover("early").await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert!(
        script.names().is_empty(),
        "`a` never started, so `undo_a` has nothing to undo: {:?}",
        script.names()
    );
    let record = h.store.load("early").await.unwrap().unwrap();
    assert!(
        record.steps.iter().all(|s| s.phase() == "not_started"),
        "{:?}",
        record.steps
    );
}

/// The documented treatment of free text (DECISIONS.md, "Text in columns"): NUL becomes
/// U+FFFD, other characters are kept, and text above 8 KiB is cut at a character boundary
/// with a note of its full length.
fn assert_documented(text: &str) {
    assert!(!text.contains('\0'), "no NUL reaches a column");
    let step = text.split(' ').next().unwrap_or_default();
    let original = support::hostile(step);
    assert!(original.len() >= HOSTILE_LEN);
    let suffix = format!("… [cut: {} bytes in all]", original.len());
    let kept = text.strip_suffix(&suffix).unwrap_or_else(|| {
        panic!(
            "says it was cut: {}",
            &text[text.len().saturating_sub(80)..]
        )
    });
    assert!(
        kept.len() <= 8 * 1024 && kept.len() > 8 * 1024 - 4,
        "cut at 8 KiB: {}",
        kept.len()
    );
    assert!(
        original.replace('\0', "\u{FFFD}").starts_with(kept),
        "everything but NUL is kept as it was"
    );
}

conformance!(
    odd_outputs_stay_completed_after_a_round_trip,
    completed_unit_steps_are_compensated_after_a_crash,
    a_later_step_gets_its_unit_input_after_recovery,
    a_completed_unit_pivot_holds_after_recovery,
    hostile_step_errors_are_stored_as_documented,
    a_saga_cancelled_before_it_started_undoes_nothing,
);
