//! Property test over step graphs crossed with failure schedules (proptest), on the
//! in-memory store under a paused clock. Twenty-two graph shapes (every way to group five
//! steps, chains inside a group through `after`, a pivot after a fan-in, everything at once,
//! branches that wait out delays while others run; a definition is fixed at compile time,
//! so the test picks among them), each step's attempts
//! given a random outcome and a random duration, so that branches end in every order.
//! Invariants:
//! - a step starts only after every step it depends on has completed;
//! - the saga completes if and only if every step eventually succeeded;
//! - after a step fails for good, nothing starts (attempts already running may end);
//! - on failure, exactly the completed steps are compensated, each once, and a step's
//!   compensation always comes before those of the steps it depended on (directly or not);
//!   past a completed pivot nothing is compensated and the saga parks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use saga_runtime::prelude::*;
use saga_runtime::{Executor, MemoryStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    pub id: u64,
}

/// What one attempt does, after sleeping its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Permanent,
}

#[derive(Debug, Clone, Copy)]
struct Act {
    outcome: Outcome,
    delay_ms: u64,
}

/// What the steps did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Start(usize, u32),
    End(usize, u32, Outcome),
    Undo(usize),
}

#[derive(Default)]
struct Recorder {
    acts: Mutex<Vec<Vec<Act>>>,
    log: Mutex<Vec<Entry>>,
}

impl Recorder {
    fn push(&self, entry: Entry) {
        self.log.lock().unwrap().push(entry);
    }

    async fn step(&self, index: usize, ctx: &StepContext) -> Result<u32, StepError> {
        let attempt = ctx.attempt();
        self.push(Entry::Start(index, attempt));
        let act = {
            let mut acts = self.acts.lock().unwrap();
            let queue = &mut acts[index];
            if queue.is_empty() {
                Act {
                    outcome: Outcome::Ok,
                    delay_ms: 0,
                }
            } else {
                queue.remove(0)
            }
        };
        tokio::time::sleep(Duration::from_millis(act.delay_ms)).await;
        self.push(Entry::End(index, attempt, act.outcome));
        match act.outcome {
            Outcome::Ok => Ok(attempt),
            Outcome::Fail => Err(StepError::retryable("flaky")),
            Outcome::Permanent => Err(StepError::permanent("refused")),
        }
    }

    fn undo(&self, index: usize) {
        self.push(Entry::Undo(index));
    }
}

/// A five-step saga whose steps take the given `#[step]` keys.
macro_rules! graph_saga {
    ($ty:ident, $name:literal, [$($a:tt)*], [$($b:tt)*], [$($c:tt)*], [$($d:tt)*], [$($e:tt)*]) => {
        pub struct $ty(Arc<Recorder>);

        // A pivot has no compensation: its `undo_` method is then unused.
        #[allow(dead_code)]
        #[saga(name = $name, input = Input)]
        impl $ty {
            #[step(backoff_initial = "10ms", jitter = 0, $($a)*)]
            async fn a(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.step(0, ctx).await
            }
            #[step(backoff_initial = "10ms", jitter = 0, $($b)*)]
            async fn b(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.step(1, ctx).await
            }
            #[step(backoff_initial = "10ms", jitter = 0, $($c)*)]
            async fn c(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.step(2, ctx).await
            }
            #[step(backoff_initial = "10ms", jitter = 0, $($d)*)]
            async fn d(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.step(3, ctx).await
            }
            #[step(backoff_initial = "10ms", jitter = 0, $($e)*)]
            async fn e(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.step(4, ctx).await
            }
            async fn undo_a(&self) -> Result<(), StepError> {
                self.0.undo(0);
                Ok(())
            }
            async fn undo_b(&self) -> Result<(), StepError> {
                self.0.undo(1);
                Ok(())
            }
            async fn undo_c(&self) -> Result<(), StepError> {
                self.0.undo(2);
                Ok(())
            }
            async fn undo_d(&self) -> Result<(), StepError> {
                self.0.undo(3);
                Ok(())
            }
            async fn undo_e(&self) -> Result<(), StepError> {
                self.0.undo(4);
                Ok(())
            }
        }
    };
}

// A fan-out of three, a barrier, then a pair.
graph_saga!(
    FanOut,
    "fan_out",
    [retries = 2, compensate = "undo_a"],
    [retries = 2, concurrent, compensate = "undo_b"],
    [retries = 2, concurrent, compensate = "undo_c"],
    [retries = 2, compensate = "undo_d"],
    [retries = 2, concurrent, compensate = "undo_e"]
);
// Chains inside one group: a -> b -> d beside c; e waits for all.
graph_saga!(
    Chains,
    "chains",
    [retries = 2, concurrent, compensate = "undo_a"],
    [retries = 2, concurrent, after = "a", compensate = "undo_b"],
    [retries = 2, concurrent, compensate = "undo_c"],
    [retries = 2, concurrent, after = "b", compensate = "undo_d"],
    [retries = 2, compensate = "undo_e"]
);
// A pivot after a fan-in, then a pair after it (which retries until it succeeds).
graph_saga!(
    Pivoted,
    "pivoted",
    [retries = 2, compensate = "undo_a"],
    [retries = 2, concurrent, compensate = "undo_b"],
    [retries = 2, pivot],
    [compensate = "undo_d"],
    [concurrent, compensate = "undo_e"]
);
// Everything at once.
graph_saga!(
    Flat,
    "flat",
    [retries = 2, concurrent, compensate = "undo_a"],
    [retries = 2, concurrent, compensate = "undo_b"],
    [retries = 2, concurrent, compensate = "undo_c"],
    [retries = 2, concurrent, compensate = "undo_d"],
    [retries = 2, concurrent, compensate = "undo_e"]
);

// Branches that wait: b and c wait out delays beside a's group running, d waits within a
// chain of its group; the saga waits as a whole whenever only waits are left.
graph_saga!(
    Delayed,
    "delayed",
    [retries = 2, concurrent, compensate = "undo_a"],
    [
        retries = 2,
        concurrent,
        delay = "15ms",
        compensate = "undo_b"
    ],
    [
        retries = 2,
        concurrent,
        delay = "40ms",
        compensate = "undo_c"
    ],
    [
        retries = 2,
        concurrent,
        after = "a",
        delay = "5ms",
        compensate = "undo_d"
    ],
    [retries = 2, compensate = "undo_e"]
);
// A delayed pivot after a fan-in with a delayed branch.
graph_saga!(
    DelayedPivot,
    "delayed_pivot",
    [retries = 2, compensate = "undo_a"],
    [
        retries = 2,
        concurrent,
        delay = "20ms",
        compensate = "undo_b"
    ],
    [retries = 2, pivot, delay = "10ms"],
    [compensate = "undo_d"],
    [concurrent, delay = "30ms", compensate = "undo_e"]
);

/// Five-step sagas where `a` starts a group and each of `b` to `e` takes the keys given for
/// it (`concurrent` or `concurrent = false`).
macro_rules! groups {
    ($($ty:ident $name:literal [$($b:tt)*] [$($c:tt)*] [$($d:tt)*] [$($e:tt)*];)*) => {
        $(
            graph_saga!(
                $ty,
                $name,
                [retries = 2, compensate = "undo_a"],
                [retries = 2, compensate = "undo_b", $($b)*],
                [retries = 2, compensate = "undo_c", $($c)*],
                [retries = 2, compensate = "undo_d", $($d)*],
                [retries = 2, compensate = "undo_e", $($e)*]
            );
        )*
    };
}

// Every way to group five steps: `concurrent` or not on each of b, c, d and e.
groups! {
    Groups0 "groups0" [concurrent = false] [concurrent = false] [concurrent = false] [concurrent = false];
    Groups1 "groups1" [concurrent] [concurrent = false] [concurrent = false] [concurrent = false];
    Groups2 "groups2" [concurrent = false] [concurrent] [concurrent = false] [concurrent = false];
    Groups3 "groups3" [concurrent] [concurrent] [concurrent = false] [concurrent = false];
    Groups4 "groups4" [concurrent = false] [concurrent = false] [concurrent] [concurrent = false];
    Groups5 "groups5" [concurrent] [concurrent = false] [concurrent] [concurrent = false];
    Groups6 "groups6" [concurrent = false] [concurrent] [concurrent] [concurrent = false];
    Groups7 "groups7" [concurrent] [concurrent] [concurrent] [concurrent = false];
    Groups8 "groups8" [concurrent = false] [concurrent = false] [concurrent = false] [concurrent];
    Groups9 "groups9" [concurrent] [concurrent = false] [concurrent = false] [concurrent];
    Groups10 "groups10" [concurrent = false] [concurrent] [concurrent = false] [concurrent];
    Groups11 "groups11" [concurrent] [concurrent] [concurrent = false] [concurrent];
    Groups12 "groups12" [concurrent = false] [concurrent = false] [concurrent] [concurrent];
    Groups13 "groups13" [concurrent] [concurrent = false] [concurrent] [concurrent];
    Groups14 "groups14" [concurrent = false] [concurrent] [concurrent] [concurrent];
    Groups15 "groups15" [concurrent] [concurrent] [concurrent] [concurrent];
}

/// How many shapes [`run`] knows.
const SHAPES: usize = 22;

fn act() -> impl Strategy<Value = Act> {
    let outcome = prop_oneof![
        6 => Just(Outcome::Ok),
        3 => Just(Outcome::Fail),
        1 => Just(Outcome::Permanent),
    ];
    (
        outcome,
        prop_oneof![Just(0u64), Just(5), Just(10), Just(25)],
    )
        .prop_map(|(outcome, delay_ms)| Act { outcome, delay_ms })
}

fn schedule() -> impl Strategy<Value = Vec<Vec<Act>>> {
    prop::collection::vec(prop::collection::vec(act(), 0..4), 5)
}

/// Runs one saga of the chosen shape; returns its end state, the log, each step's
/// dependencies and the pivot's index.
fn run(
    shape: usize,
    schedule: &[Vec<Act>],
) -> (SagaState, Vec<Entry>, Vec<Vec<usize>>, Option<usize>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let recorder = Arc::new(Recorder::default());
        *recorder.acts.lock().unwrap() = schedule.to_vec();
        let orchestrator = Orchestrator::builder(MemoryStore::new())
            .jitter_seed(7)
            .recovery(false)
            .build()
            .unwrap();
        let config = SagaConfig::default();
        let input = Input { id: 1 };
        macro_rules! shapes {
            ($($index:literal => $ty:ident),+) => {
                match shape {
                    $($index => execute(&orchestrator, orchestrator.register($ty(recorder.clone())), &config, input).await,)+
                    _ => None,
                }
            };
        }
        let ended = shapes!(
            0 => FanOut,
            1 => Chains,
            2 => Pivoted,
            3 => Flat,
            4 => Groups0,
            5 => Groups1,
            6 => Groups2,
            7 => Groups3,
            8 => Groups4,
            9 => Groups5,
            10 => Groups6,
            11 => Groups7,
            12 => Groups8,
            13 => Groups9,
            14 => Groups10,
            15 => Groups11,
            16 => Groups12,
            17 => Groups13,
            18 => Groups14,
            19 => Groups15,
            20 => Delayed,
            21 => DelayedPivot
        );
        let log = recorder.log.lock().unwrap().clone();
        let Some((state, deps, pivot)) = ended else {
            panic!("the saga returned an error: {log:?}");
        };
        (state, log, deps, pivot)
    })
}

/// Whether step `from` depends on step `to`, directly or through other steps.
fn reaches(deps: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut stack = vec![from];
    while let Some(step) = stack.pop() {
        for &dep in &deps[step] {
            if dep == to {
                return true;
            }
            stack.push(dep);
        }
    }
    false
}

/// Runs one saga to its end, waking it whenever it waits as a whole; its end state, each
/// step's dependencies and the pivot.
async fn execute<S: Saga<Input = Input>>(
    orchestrator: &Orchestrator,
    executor: Executor<S>,
    config: &SagaConfig,
    input: Input,
) -> Option<(SagaState, Vec<Vec<usize>>, Option<usize>)> {
    let mut outcome = executor.execute(config, input).await.ok()?;
    for _ in 0..1000 {
        if outcome.state() != SagaState::Waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        orchestrator.recover_expired().await.ok()?;
        outcome = executor.outcome(outcome.saga_id()).await.ok()??;
    }
    let steps = S::DEFINITION.steps();
    let deps = steps.iter().map(|s| s.depends_on().to_vec()).collect();
    let pivot = steps
        .iter()
        .position(saga_runtime::definition::StepSpec::is_pivot);
    Some((outcome.state(), deps, pivot))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("SAGA_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        .. ProptestConfig::default()
    })]

    #[test]
    fn graph_invariants_hold_for_any_failure_schedule(shape in 0usize..SHAPES, schedule in schedule()) {
        let (state, log, deps, pivot) = run(shape, &schedule);
        let mut completed: Vec<usize> = Vec::new();
        let mut failed_for_good: Option<usize> = None;
        let mut undone: Vec<usize> = Vec::new();
        for (position, entry) in log.iter().enumerate() {
            let pivot_passed = pivot.is_some_and(|p| completed.contains(&p));
            match *entry {
                Entry::Start(step, attempt) => {
                    prop_assert!(failed_for_good.is_none(),
                        "step {} attempt {} started after a failure for good: {:?}", step, attempt, log);
                    for dep in &deps[step] {
                        prop_assert!(completed.contains(dep),
                            "step {} started before its dependency {} completed: {:?}", step, dep, log);
                    }
                    prop_assert!(!completed.contains(&step), "step {} ran again: {:?}", step, log);
                }
                Entry::End(step, attempt, outcome) => match outcome {
                    Outcome::Ok => completed.push(step),
                    Outcome::Permanent => { failed_for_good.get_or_insert(position); }
                    Outcome::Fail if attempt >= 3 && !pivot_passed => { failed_for_good.get_or_insert(position); }
                    Outcome::Fail => {}
                },
                Entry::Undo(step) => undone.push(step),
            }
        }
        let all = completed.len() == 5;
        prop_assert_eq!(state == SagaState::Completed, all, "state {:?}: {:?}", state, log);
        let pivot_done = pivot.is_some_and(|p| completed.contains(&p));
        match state {
            SagaState::Completed => prop_assert!(undone.is_empty()),
            SagaState::Parked => {
                prop_assert!(pivot_done, "parked before the pivot: {:?}", log);
                prop_assert!(undone.is_empty(), "undid past the pivot: {:?}", log);
            }
            SagaState::Failed => {
                prop_assert!(!pivot_done);
                // Exactly the completed steps are undone, each once.
                let (mut got, mut want) = (undone.clone(), completed.clone());
                got.sort_unstable();
                want.sort_unstable();
                prop_assert_eq!(&got, &want, "not every completed step undone once: {:?}", log);
                // A step's compensation comes before those of the steps it depended on,
                // directly or not; others may run at once.
                for (i, first) in undone.iter().enumerate() {
                    for second in &undone[i + 1..] {
                        prop_assert!(!reaches(&deps, *second, *first),
                            "{} undone before {}, which depended on it: {:?}", first, second, log);
                    }
                }
            }
            other => prop_assert!(false, "unexpected end state {:?}: {:?}", other, log),
        }
    }
}
