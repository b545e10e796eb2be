//! Parallel steps (DECISIONS.md, "Parallel steps"): a fan-out runs its branches at once, each under its own
//! policy; a failure or a cancellation starts nothing new, lets running attempts finish and
//! compensates newest completion first; a crash resumes every branch. Semantics under the
//! paused clock on the memory store; crashes and recovery on every store.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::{MemoryStore, RunStatus, StepStatus};
use support::stores::{Backend, Harness};
use support::travel::{Trip, trip};
use support::{Action, Attempt, Input, Script, audit_trail};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// When each step's attempts started, as `name@seconds`.
fn starts(log: &[Attempt]) -> Vec<String> {
    log.iter()
        .map(|a| format!("{}@{}", a.name, a.at.as_millis()))
        .collect()
}

#[test]
fn the_graph_is_in_the_definition() {
    let deps: Vec<&[usize]> = Trip::DEFINITION
        .steps()
        .iter()
        .map(saga_runtime::definition::StepSpec::depends_on)
        .collect();
    assert_eq!(
        deps,
        [&[][..], &[], &[], &[0, 1, 2], &[0, 1, 2, 3], &[0, 1, 2, 3]]
    );
    assert!(!Trip::DEFINITION.is_chain());
}

#[tokio::test(start_paused = true)]
async fn three_concurrent_ten_second_steps_take_ten_seconds() {
    let script = Script::new();
    for step in ["flight", "hotel", "car"] {
        script.on(step, [Action::Hang(secs(10))]);
    }
    let (orchestrator, trip) = trip(MemoryStore::new(), "runner", &script);
    let began = tokio::time::Instant::now();
    let outcome = trip
        .execute_with_id("t-overlap", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(began.elapsed(), secs(10), "the three overlapped");
    assert_eq!(
        starts(&script.log()),
        [
            "flight@0",
            "hotel@0",
            "car@0",
            "charge@10000",
            "confirm@10000",
            "notify@10000"
        ]
    );
    let trail = audit_trail(&orchestrator, "t-overlap").await;
    assert_eq!(
        trail[..4],
        [
            "saga_started",
            "step_started:flight:1",
            "step_started:hotel:1",
            "step_started:car:1"
        ]
    );
    assert_eq!(trail.last().map(String::as_str), Some("saga_completed"));
    let context = outcome.context();
    assert_eq!(
        (context.flight, context.hotel, context.car, context.notify),
        (Some(1), Some(1), Some(1), Some(1))
    );
    let record = orchestrator.load("t-overlap").await.unwrap().unwrap();
    assert!(record.steps.iter().all(|s| s.run == RunStatus::Completed));
}

#[tokio::test(start_paused = true)]
async fn branches_run_while_their_saga_waits_for_a_write() {
    // Every checkpoint write takes 50 ms. `flight` starts with the saga; the write that
    // starts `hotel` and `car` is in flight when `flight` is first polled, which it is at
    // once rather than after that write.
    let script = Script::new();
    for step in ["flight", "hotel", "car"] {
        script.on(step, [Action::Hang(ms(100))]);
    }
    let slow = support::watched::Watched {
        inner: Arc::new(MemoryStore::new()),
        sink: Arc::new(|_, _, _| {}),
        save_delay: ms(50),
    };
    let (_, trip) = trip(slow, "runner", &script);
    let outcome = trip
        .execute_with_id("t-pump", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    assert_eq!(
        starts(&script.log())[..3],
        ["flight@0", "hotel@50", "car@50"]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_of_one_branch_do_not_hold_up_the_others() {
    let script = Script::new();
    script.on("flight", [Action::Fail, Action::Fail]);
    script.on("hotel", [Action::Hang(secs(1))]);
    let (_, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-retry", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    let log = starts(&script.log());
    assert_eq!(log[..3], ["flight@0", "hotel@0", "car@0"]);
    assert!(log.contains(&"flight@100".to_owned()), "{log:?}");
    assert!(log.contains(&"flight@300".to_owned()), "{log:?}");
    assert!(log.contains(&"charge@1000".to_owned()), "{log:?}");
    assert_eq!(outcome.context().flight, Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_branch_that_fails_for_good_lets_its_siblings_finish_then_compensates_them() {
    let script = Script::new();
    script.on("flight", [Action::Hang(secs(5))]);
    // Fails for good at its third attempt, 300 ms in, while its siblings run.
    script.on("hotel", [Action::Fail, Action::Fail, Action::Fail]);
    script.on("car", [Action::Hang(secs(2))]);
    let (orchestrator, trip) = trip(MemoryStore::new(), "runner", &script);
    let began = tokio::time::Instant::now();
    let outcome = trip
        .execute_with_id("t-fail", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(outcome.error().unwrap().step(), Some("hotel"));
    assert_eq!(began.elapsed(), secs(5), "the running siblings finished");
    assert_eq!(
        script.names(),
        [
            "flight",
            "hotel",
            "car",
            "hotel",
            "hotel",
            "cancel_flight",
            "cancel_car"
        ],
        "nothing new started; completed siblings undone; the failed step not"
    );
    let trail = audit_trail(&orchestrator, "t-fail").await;
    let failed_at = trail
        .iter()
        .position(|e| e == "step_failed:hotel:3")
        .expect("the third failure is recorded");
    let after_failure: Vec<&str> = trail[failed_at..].iter().map(String::as_str).collect();
    assert_eq!(
        after_failure,
        [
            "step_failed:hotel:3",
            "step_completed:car:1",
            "step_completed:flight:1",
            // Neither depended on the other: both compensations run at once.
            "compensation_started:flight:1",
            "compensation_started:car:1",
            "compensation_executed:flight:1",
            "compensation_executed:car:1",
            "saga_failed",
        ]
    );
    let record = orchestrator.load("t-fail").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(
        phases,
        [
            "compensated",
            "failed",
            "compensated",
            "not_started",
            "not_started",
            "not_started"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn compensations_of_independent_steps_run_at_once() {
    // `hotel` fails for good 300 ms in; `flight` and `car` completed, and neither depended
    // on the other, so their one-second compensations overlap.
    let script = Script::new();
    script.on("hotel", [Action::Fail, Action::Fail, Action::Fail]);
    script.on("cancel_flight", [Action::Hang(secs(1))]);
    script.on("cancel_car", [Action::Hang(secs(1))]);
    let (_, trip) = trip(MemoryStore::new(), "runner", &script);
    let began = tokio::time::Instant::now();
    let outcome = trip
        .execute_with_id("t-undo-at-once", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(
        began.elapsed(),
        ms(1300),
        "300 ms forward, then one second back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_gives_up_lets_the_others_under_way_finish() {
    let script = Script::new();
    script.on("hotel", [Action::Fail, Action::Fail, Action::Fail]);
    script.on("cancel_flight", [Action::Permanent]);
    script.on("cancel_car", [Action::Hang(secs(1))]);
    let (orchestrator, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-undo-gives-up", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::CompensationFailed);
    assert_eq!(outcome.error().unwrap().step(), Some("flight"));
    let record = orchestrator.load("t-undo-gives-up").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(
        phases[..3],
        ["compensating", "failed", "compensated"],
        "the compensation under way finished and was recorded"
    );
    let trail = audit_trail(&orchestrator, "t-undo-gives-up").await;
    assert_eq!(
        trail.last().map(String::as_str),
        Some("saga_compensation_failed:flight")
    );
}

#[tokio::test(start_paused = true)]
async fn a_sibling_that_has_not_begun_when_a_branch_fails_never_begins() {
    // `hotel` fails for good on its first poll; `car`, started in the same write but not
    // yet polled, never runs its body and goes back to not started.
    let script = Script::new();
    script.on("flight", [Action::Hang(secs(1))]);
    script.on("hotel", [Action::Permanent]);
    let (orchestrator, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-unbegun", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["flight", "hotel", "cancel_flight"]);
    let record = orchestrator.load("t-unbegun").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(phases[..3], ["compensated", "failed", "not_started"]);
}

#[tokio::test(start_paused = true)]
async fn a_branch_that_times_out_for_good_is_compensated_when_it_can_be() {
    // `hotel`'s compensation needs its output, so an unknown outcome skips it;
    // `car`'s does not, so an unknown outcome is compensated.
    let script = Script::new();
    script.on("hotel", [Action::Hang(secs(60)); 3]);
    script.on("car", [Action::Hang(secs(60)); 3]);
    let (orchestrator, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-timeout", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    let undone: Vec<&str> = script
        .names()
        .into_iter()
        .filter(|n| n.starts_with("cancel"))
        .collect();
    assert_eq!(undone, ["cancel_car", "cancel_flight"]);
    let record = orchestrator.load("t-timeout").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(
        phases[..3],
        ["compensated", "compensation_skipped", "compensated"]
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_during_a_fan_out_starts_nothing_new_and_undoes_every_branch() {
    let script = Script::new();
    script.on("flight", [Action::Cancel]);
    script.on("hotel", [Action::Hang(secs(3))]);
    script.on("car", [Action::Hang(secs(1))]);
    let (_, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-cancel", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert!(
        outcome.error().unwrap().message().starts_with("cancelled"),
        "{:?}",
        outcome.error()
    );
    let names = script.names();
    assert_eq!(
        names[..3],
        ["flight", "hotel", "car"],
        "charge never started"
    );
    let mut undone = names[3..].to_vec();
    assert_eq!(undone[0], "cancel_hotel", "the newest completion first");
    undone.sort_unstable();
    assert_eq!(undone, ["cancel_car", "cancel_flight", "cancel_hotel"]);
}

#[tokio::test(start_paused = true)]
async fn after_the_fan_in_pivot_a_failure_parks_and_nothing_is_undone() {
    let script = Script::new();
    script.on("notify", [Action::Permanent]);
    script.on("confirm", [Action::Hang(secs(2))]);
    let (_, trip) = trip(MemoryStore::new(), "runner", &script);
    let outcome = trip
        .execute_with_id("t-park", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Parked);
    assert_eq!(outcome.error().unwrap().step(), Some("notify"));
    assert!(
        !script.names().iter().any(|n| n.starts_with("cancel")),
        "{:?}",
        script.names()
    );
    assert_eq!(
        outcome.context().confirm,
        Some(1),
        "the sibling running at the failure finished and was recorded"
    );
}

/// Starts saga `id` until an attempt reaches [`Action::Crash`], then drops its task, as a
/// killed process would leave it.
async fn crash(script: &Arc<Script>, trip: saga_runtime::Executor<Trip>, id: &'static str) {
    let task = tokio::spawn(async move {
        let _ = trip
            .execute_with_id(id, &SagaConfig::default(), Input { id: 1 })
            .await;
    });
    tokio::time::timeout(secs(20), script.crashed())
        .await
        .expect("the saga reached its crash");
    // Let the siblings finish and be recorded before the "process" dies.
    tokio::time::sleep(ms(300)).await;
    task.abort();
    let _ = task.await;
}

async fn a_crash_in_a_fan_out_resumes_only_the_interrupted_branch(h: &Harness) {
    let first = Script::new();
    first.on("hotel", [Action::Crash]);
    let (_a, trip_a) = trip(h.reopen(), "runner-a", &first);
    crash(&first, trip_a, "t-crash").await;
    let record = h.store.load("t-crash").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(phases[..3], ["completed", "running", "completed"]);

    let second = Script::new();
    let (orchestrator, trip_b) = trip(h.reopen(), "runner-a", &second);
    let outcome = trip_b.recover("t-crash").await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        second.names(),
        ["hotel", "charge", "confirm", "notify"],
        "only the interrupted branch ran again"
    );
    assert_eq!(outcome.context().hotel, Some(2), "its second attempt");
    assert_eq!(
        outcome.context().flight,
        Some(1),
        "kept from before the crash"
    );
    let trail = audit_trail(&orchestrator, "t-crash").await;
    assert!(trail.contains(&"saga_recovered:1".to_owned()), "{trail:?}");
    assert!(
        trail.contains(&"step_started:hotel:2".to_owned()),
        "{trail:?}"
    );
}

async fn a_crash_after_a_failed_branch_still_compensates_every_completed_one(h: &Harness) {
    let first = Script::new();
    first.on("flight", [Action::Crash]);
    first.on("hotel", [Action::Hang(ms(50))]);
    first.on("car", [Action::RetryAfter(secs(10))]);
    let (_a, trip_a) = trip(h.reopen(), "runner-a", &first);
    crash(&first, trip_a, "t-crash-fail").await;
    let record = h.store.load("t-crash-fail").await.unwrap().unwrap();
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(phases[..3], ["running", "completed", "retrying"]);

    // `car` has a retry pending and `flight` was interrupted when the runner died; the
    // restarted runner resumes both, then `car` fails for good: `hotel` is undone, and
    // `flight` (which completed on its second attempt) too, newest first.
    let second = Script::new();
    second.on("car", [Action::Permanent]);
    let (_, trip_b) = trip(h.reopen(), "runner-a", &second);
    let outcome = trip_b.recover("t-crash-fail").await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed, "{outcome:?}");
    assert_eq!(outcome.error().unwrap().step(), Some("car"));
    let names = second.names();
    assert_eq!(names[..2], ["flight", "car"], "{names:?}");
    assert_eq!(names[2..], ["cancel_flight", "cancel_hotel"], "{names:?}");
}

async fn a_crash_while_compensating_a_fan_out_resumes_the_interrupted_compensation(h: &Harness) {
    // `hotel` fails for good after its siblings completed (its retries take 300 ms); the
    // runner dies during `cancel_flight`, while `cancel_car`, which ran beside it, is done.
    let first = Script::new();
    first.on("hotel", [Action::Fail, Action::Fail, Action::Fail]);
    first.on("flight", [Action::Hang(ms(20))]);
    first.on("cancel_flight", [Action::Crash]);
    let (_a, trip_a) = trip(h.reopen(), "runner-a", &first);
    crash(&first, trip_a, "t-crash-undo").await;
    let record = h.store.load("t-crash-undo").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Compensating);
    let phases: Vec<&str> = record.steps.iter().map(StepStatus::phase).collect();
    assert_eq!(phases[..3], ["compensating", "failed", "compensated"]);

    let second = Script::new();
    let (_, trip_b) = trip(h.reopen(), "runner-a", &second);
    let outcome = trip_b.recover("t-crash-undo").await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed, "{outcome:?}");
    assert_eq!(
        second.names(),
        ["cancel_flight"],
        "only the interrupted compensation"
    );
    let record = h.store.load("t-crash-undo").await.unwrap().unwrap();
    assert_eq!(record.steps[0].compensation_attempt, 2);
    assert_eq!(record.steps[0].phase(), "compensated");
}

conformance!(
    a_crash_in_a_fan_out_resumes_only_the_interrupted_branch,
    a_crash_after_a_failed_branch_still_compensates_every_completed_one,
    a_crash_while_compensating_a_fan_out_resumes_the_interrupted_compensation,
);
