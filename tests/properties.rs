//! Property test over random failure schedules (proptest), on the in-memory store under a
//! paused clock:
//! - the saga completes if and only if every step eventually succeeded;
//! - compensations run exactly for the completed steps, newest first, each at most once;
//! - nothing runs after a cancellation is observed.

mod support;

use proptest::prelude::*;
use saga_runtime::prelude::*;
use support::{Action, Input, Script, scripted};

const STEPS: [&str; 3] = ["a", "b", "c"];
const UNDO: [&str; 3] = ["undo_a", "undo_b", "undo_c"];

fn step_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Ok),
        3 => Just(Action::Fail),
        1 => Just(Action::Permanent),
        1 => Just(Action::Cancel),
    ]
}

fn undo_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => Just(Action::Ok),
        2 => Just(Action::Fail),
        1 => Just(Action::Permanent),
    ]
}

#[derive(Debug, Clone)]
struct Schedule {
    steps: [Vec<Action>; 3],
    undos: [Vec<Action>; 3],
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let steps = [
        prop::collection::vec(step_action(), 0..4),
        prop::collection::vec(step_action(), 0..4),
        prop::collection::vec(step_action(), 0..4),
    ];
    let undos = [
        prop::collection::vec(undo_action(), 0..4),
        prop::collection::vec(undo_action(), 0..4),
        prop::collection::vec(undo_action(), 0..4),
    ];
    (steps, undos).prop_map(|(steps, undos)| Schedule { steps, undos })
}

fn index(name: &str) -> Option<usize> {
    STEPS.iter().position(|s| *s == name)
}

fn undo_index(name: &str) -> Option<usize> {
    UNDO.iter().position(|s| *s == name)
}

fn run(schedule: &Schedule) -> (SagaState, Vec<&'static str>, Vec<&'static str>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let script = Script::new();
        for (name, actions) in STEPS.iter().zip(&schedule.steps) {
            script.on(name, actions.iter().copied());
        }
        for (name, actions) in UNDO.iter().zip(&schedule.undos) {
            script.on(name, actions.iter().copied());
        }
        let (_, saga, _) = scripted(MemoryStore::new(), &script);
        let outcome = saga
            .execute(&SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap();
        (outcome.state(), script.names(), script.succeeded())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn saga_invariants_hold_for_any_failure_schedule(schedule in schedule()) {
        let (state, attempts, succeeded) = run(&schedule);
        let completed: Vec<usize> = succeeded.iter().filter_map(|n| index(n)).collect();

        // Completes if and only if every step eventually succeeded.
        prop_assert_eq!(state == SagaState::Completed, completed.len() == STEPS.len(),
            "state {:?}, attempts {:?}", state, attempts);

        // Each step succeeds at most once and within its budget of 3 attempts.
        for (i, step) in STEPS.iter().enumerate() {
            prop_assert!(completed.iter().filter(|&&c| c == i).count() <= 1);
            prop_assert!(attempts.iter().filter(|a| *a == step).count() <= 3);
        }

        // Compensations: only of completed steps, newest first, each succeeding at most once.
        let undone: Vec<usize> = succeeded.iter().filter_map(|n| undo_index(n)).collect();
        let tried: Vec<usize> = attempts.iter().filter_map(|n| undo_index(n)).collect();
        for i in &tried {
            prop_assert!(completed.contains(i), "compensated step {} never completed: {:?}", i, attempts);
        }
        prop_assert!(tried.windows(2).all(|w| w[0] >= w[1]), "not newest first: {:?}", attempts);
        for i in 0..STEPS.len() {
            prop_assert!(undone.iter().filter(|&&u| u == i).count() <= 1);
        }
        let mut expected: Vec<usize> = completed.clone();
        expected.reverse();
        match state {
            SagaState::Completed => prop_assert!(tried.is_empty()),
            // Every completed step was undone, newest first.
            SagaState::Failed => prop_assert_eq!(&undone, &expected, "attempts {:?}", attempts),
            // Compensation stopped at the one that gave up: a newest-first prefix.
            SagaState::CompensationFailed => {
                prop_assert!(undone.len() < expected.len());
                prop_assert_eq!(&undone[..], &expected[..undone.len()]);
            }
            other => prop_assert!(false, "unexpected end state {:?}", other),
        }

        // Nothing runs forward after a cancellation was observed: a step whose successful
        // attempt asked for cancellation is the last forward step.
        let forward: Vec<usize> = attempts.iter().filter_map(|n| index(n)).collect();
        let mut consumed = [0usize; 3];
        let mut cancelled_at = None;
        for &i in &forward {
            let action = schedule.steps[i].get(consumed[i]).copied().unwrap_or(Action::Ok);
            consumed[i] += 1;
            if let Some(at) = cancelled_at {
                prop_assert!(false, "step {} ran after cancellation at step {}: {:?}", i, at, attempts);
            }
            if action == Action::Cancel {
                cancelled_at = Some(i);
            }
        }
        if let Some(at) = cancelled_at
            && at + 1 < STEPS.len()
        {
            prop_assert_ne!(state, SagaState::Completed);
        }
    }
}
