//! Property test over random failure schedules (proptest), on the in-memory store under a
//! paused clock:
//! - the saga completes if and only if every step eventually succeeded;
//! - compensations run exactly for the completed steps, newest first, each at most once;
//! - nothing runs after a cancellation is observed;
//!
//! and a second property over steps whose outputs are `()`, a unit struct, `None`, an empty
//! collection and a large hostile string, with hostile error messages and crashes (the
//! runner's task dropped mid-attempt, then a restarted runner recovering the saga):
//! - a completed step keeps its output through the store, whatever its shape;
//! - the same completion and compensation invariants as above, with the unknown-outcome
//!   rule for a step whose last allowed attempt was cut short.
//!
//! and a third over records written into the memory store by hand, with empty, NUL,
//! control, non-ASCII and long text in every field a row keeps or shares with its kind:
//! - each is read back (loaded and listed) exactly as written, and writing one saga of a
//!   kind never changes another of the same kind.

mod support;

use proptest::prelude::*;
use saga_runtime::prelude::*;
use support::{Action, Input, Script, scripted};

const STEPS: [&str; 3] = ["a", "b", "c"];

/// `default` cases, or `SAGA_PROPTEST_CASES` for a deeper run.
fn cases(default: u32) -> u32 {
    std::env::var("SAGA_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
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
    #![proptest_config(ProptestConfig { cases: cases(512), .. ProptestConfig::default() })]

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

// ---------------------------------------------------------------------------------------
// Odd outputs, hostile errors and crashes
// ---------------------------------------------------------------------------------------

use support::shapes::{SHAPE_STEPS, shape_outputs, shaped};

/// The compensations of [`SHAPE_STEPS`], by step index (`empty` has none).
const SHAPE_UNDO: [Option<&str>; 5] = [
    Some("undo_unit"),
    Some("undo_marker"),
    Some("undo_nothing"),
    None,
    Some("undo_big"),
];
/// Whether each compensation takes its own step's output (so an unknown outcome skips it).
const UNDO_NEEDS_OUTPUT: [bool; 5] = [true, false, true, false, false];

fn shape_step_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::Ok),
        2 => Just(Action::Fail),
        1 => Just(Action::Nasty(false)),
        1 => Just(Action::Nasty(true)),
        1 => Just(Action::Permanent),
        2 => Just(Action::Crash),
    ]
}

fn shape_undo_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::Ok),
        2 => Just(Action::Fail),
        1 => Just(Action::Nasty(false)),
        1 => Just(Action::Permanent),
        2 => Just(Action::Crash),
    ]
}

#[derive(Debug, Clone)]
struct ShapeSchedule {
    steps: [Vec<Action>; 5],
    undos: [Vec<Action>; 5],
}

fn shape_schedule() -> impl Strategy<Value = ShapeSchedule> {
    let steps = std::array::from_fn(|_| prop::collection::vec(shape_step_action(), 0..4));
    let undos = std::array::from_fn(|_| prop::collection::vec(shape_undo_action(), 0..4));
    (steps, undos).prop_map(|(steps, undos)| ShapeSchedule { steps, undos })
}

struct ShapeRun {
    state: SagaState,
    /// Outputs the returned outcome holds, and those read back from the store.
    outputs: [bool; 5],
    stored_outputs: [bool; 5],
    crashes: usize,
    attempts: Vec<support::Attempt>,
    succeeded: Vec<&'static str>,
    /// Actions of each attempt, as consumed, by name.
    consumed: Vec<(&'static str, Action)>,
}

/// Runs the schedule; at each crash the runner's task is dropped and a new runner with the
/// same id (a restarted process) recovers the saga from the memory store.
fn run_shapes(schedule: &ShapeSchedule) -> ShapeRun {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let script = Script::new();
        for (name, actions) in SHAPE_STEPS.iter().zip(&schedule.steps) {
            script.on(name, actions.iter().copied());
        }
        for (name, actions) in SHAPE_UNDO.iter().zip(&schedule.undos) {
            if let Some(name) = name {
                script.on(name, actions.iter().copied());
            }
        }
        let store = MemoryStore::new();
        let mut crashes = 0;
        let outcome = loop {
            let (_, shapes, _) = shaped(store.clone(), "runner", &script);
            let task = tokio::spawn(async move {
                if crashes == 0 {
                    shapes
                        .execute_with_id("p", &SagaConfig::default(), Input { id: 1 })
                        .await
                } else {
                    shapes.recover("p").await
                }
            });
            let abort = task.abort_handle();
            tokio::select! {
                done = task => break done.unwrap().unwrap(),
                () = script.crashed() => {
                    abort.abort();
                    crashes += 1;
                }
            }
        };
        let (_, shapes, _) = shaped(store.clone(), "reader", &script);
        let stored = shapes.outcome("p").await.unwrap().unwrap();
        assert_eq!(stored.state(), outcome.state());
        let consumed = consumed_actions(schedule, &script.names());
        ShapeRun {
            state: outcome.state(),
            outputs: shape_outputs(outcome.context()),
            stored_outputs: shape_outputs(stored.context()),
            crashes,
            attempts: script.log(),
            succeeded: script.succeeded(),
            consumed,
        }
    })
}

/// The action each attempt took: the schedule's, in order, then `Ok`.
fn consumed_actions(
    schedule: &ShapeSchedule,
    names: &[&'static str],
) -> Vec<(&'static str, Action)> {
    let mut next: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    names
        .iter()
        .map(|name| {
            let list = SHAPE_STEPS
                .iter()
                .position(|s| s == name)
                .map(|i| &schedule.steps[i])
                .or_else(|| {
                    SHAPE_UNDO
                        .iter()
                        .position(|u| *u == Some(*name))
                        .map(|i| &schedule.undos[i])
                });
            let at = next.entry(name).or_default();
            let action = list.and_then(|l| l.get(*at)).copied().unwrap_or(Action::Ok);
            *at += 1;
            (*name, action)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), .. ProptestConfig::default() })]

    #[test]
    fn odd_outputs_hostile_errors_and_crashes_keep_the_invariants(schedule in shape_schedule()) {
        let run = run_shapes(&schedule);
        let step_of = |name: &str| SHAPE_STEPS.iter().position(|s| *s == name);
        let undo_of = |name: &str| SHAPE_UNDO.iter().position(|u| *u == Some(name));
        let completed: Vec<usize> = run.succeeded.iter().filter_map(|n| step_of(n)).collect();

        // What the run returned is what the store holds, output for output.
        prop_assert_eq!(run.outputs, run.stored_outputs, "state {:?}", run.state);
        // Every step that completed has its output, whatever its shape.
        for &i in &completed {
            prop_assert!(run.stored_outputs[i], "step {} completed but its output is gone", SHAPE_STEPS[i]);
        }

        // Completes if and only if every step completed, each once, within 3 attempts.
        prop_assert_eq!(run.state == SagaState::Completed, completed.len() == SHAPE_STEPS.len(),
            "state {:?}, attempts {:?}", run.state, run.consumed);
        for (i, step) in SHAPE_STEPS.iter().enumerate() {
            prop_assert!(completed.iter().filter(|&&c| c == i).count() <= 1);
            prop_assert!(run.attempts.iter().filter(|a| a.name == *step).count() <= 3,
                "{} ran more than 3 attempts: {:?}", step, run.consumed);
        }

        // A step whose last allowed attempt crashed has an unknown outcome: it may be undone
        // if its compensation does not need its output.
        let unknown: Vec<usize> = (0..SHAPE_STEPS.len())
            .filter(|&i| {
                let tries: Vec<&Action> = run.consumed.iter()
                    .filter(|(n, _)| *n == SHAPE_STEPS[i]).map(|(_, a)| a).collect();
                tries.len() == 3 && *tries[2] == Action::Crash && !UNDO_NEEDS_OUTPUT[i]
            })
            .collect();
        let tried: Vec<usize> = run.attempts.iter().filter_map(|a| undo_of(a.name)).collect();
        let undone: Vec<usize> = run.succeeded.iter().filter_map(|n| undo_of(n)).collect();
        for i in &tried {
            prop_assert!(completed.contains(i) || unknown.contains(i),
                "compensated step {} never completed: {:?}", SHAPE_STEPS[*i], run.consumed);
        }
        prop_assert!(tried.windows(2).all(|w| w[0] >= w[1]), "not newest first: {:?}", run.consumed);
        for i in 0..SHAPE_STEPS.len() {
            prop_assert!(undone.iter().filter(|&&u| u == i).count() <= 1);
        }
        let mut expected: Vec<usize> = completed.iter().copied()
            .filter(|&i| SHAPE_UNDO[i].is_some()).collect();
        expected.reverse();
        let known_undone: Vec<usize> = undone.iter().copied().filter(|i| !unknown.contains(i)).collect();
        match run.state {
            SagaState::Completed => prop_assert!(tried.is_empty()),
            // Every completed step with a compensation was undone, newest first.
            SagaState::Failed => prop_assert_eq!(&known_undone, &expected, "attempts {:?}", run.consumed),
            SagaState::CompensationFailed => {
                prop_assert!(known_undone.len() < expected.len());
                prop_assert_eq!(&known_undone[..], &expected[..known_undone.len()]);
            }
            // Recovered more than `max_recoveries` (5) times without progress: parked.
            SagaState::Parked => prop_assert!(run.crashes > 5, "parked after {} crashes", run.crashes),
            other => prop_assert!(false, "unexpected end state {:?} after {} crashes", other, run.crashes),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The memory store keeps a row of its own (what sagas of a kind share is kept once): a
// record written into it must come back as written, whatever its text.
// ---------------------------------------------------------------------------------------

/// Text that users and databases reach: empty, NUL, control characters, non-ASCII, long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\0".to_owned()),
        Just("é\u{1F600}\u{7}\n ".to_owned()),
        "[a-z\\x00-\\x1f\\u{80}-\\u{10FFFF}]{0,16}",
        (1usize..4).prop_map(|n| "ü\0".repeat(n * 3000)),
    ]
}

fn state() -> impl Strategy<Value = SagaState> {
    prop_oneof![
        Just(SagaState::Running),
        Just(SagaState::Waiting),
        Just(SagaState::Compensating),
        Just(SagaState::Completed),
        Just(SagaState::Failed),
        Just(SagaState::Parked),
    ]
}

/// What a record written by hand holds, field by field (the same kind for `kin`).
#[derive(Debug, Clone)]
struct Written {
    config: String,
    fingerprint: String,
    signals: Vec<String>,
    user_id: Option<String>,
    current_step: Option<String>,
    waiting_for: Option<String>,
    context: String,
    error: Option<String>,
    owner: Option<String>,
    cancel: Option<String>,
    state: SagaState,
    version: i64,
}

fn written() -> impl Strategy<Value = Written> {
    (
        (text(), text(), prop::collection::vec(text(), 0..3)),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        (text(), prop::option::of(text()), prop::option::of(text())),
        (prop::option::of(text()), state(), any::<i64>()),
    )
        .prop_map(
            |(
                (config, fingerprint, signals),
                (user_id, current_step, waiting_for),
                (context, error, owner),
                (cancel, state, version),
            )| Written {
                config,
                fingerprint,
                signals,
                user_id,
                current_step,
                waiting_for,
                context,
                error,
                owner,
                cancel,
                state,
                version,
            },
        )
}

fn write_into(record: &mut saga_runtime::SagaRecord, w: &Written) {
    record.config.clone_from(&w.config);
    record.fingerprint.clone_from(&w.fingerprint);
    record.signals.clone_from(&w.signals);
    record.user_id.clone_from(&w.user_id);
    record.current_step.clone_from(&w.current_step);
    record.waiting_for.clone_from(&w.waiting_for);
    record.context.clone_from(&w.context);
    record.error.clone_from(&w.error);
    record.owner.clone_from(&w.owner);
    record.cancel_requested.clone_from(&w.cancel);
    record.state = w.state;
    record.version = w.version;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), .. ProptestConfig::default() })]

    #[test]
    fn the_memory_store_gives_back_each_record_as_written(a in written(), b in written()) {
        use saga_runtime::store::{NewSaga, RunnerStore, SagaQuery, SagaStore};
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let store = saga_runtime::MemoryStore::new();
            let header = std::sync::Arc::new(saga_runtime::audit::AuditHeader {
                saga_type: "kind".into(),
                user_id: None,
                ip_address: None,
            });
            // Two sagas of one kind, then one of another: the first two share it, and
            // writing the second must not change the first.
            let mut records = Vec::new();
            for (id, w) in [("one", &a), ("two", &a), ("three", &b)] {
                store
                    .create(NewSaga::new(id, "kind", "f", header.clone()))
                    .await
                    .expect("create");
                let mut record = store.load(id).await.expect("load").expect("the saga");
                write_into(&mut record, w);
                store.put_raw(record.clone());
                records.push(record);
            }
            for record in &records {
                let read = store.load(&record.saga_id).await.expect("load");
                prop_assert_eq!(read.as_ref(), Some(record));
            }
            let mut listed = store.list(&SagaQuery::new()).await.expect("list");
            listed.sort_by(|x, y| x.saga_id.cmp(&y.saga_id));
            let mut expected = records.clone();
            expected.sort_by(|x, y| x.saga_id.cmp(&y.saga_id));
            prop_assert_eq!(listed, expected);
            Ok(())
        })?;
    }
}
