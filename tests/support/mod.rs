//! Test sagas whose steps follow a script: per step, one action per attempt.
// Each test file uses a different part; crates with stricter lints include this file too.
#![allow(dead_code, clippy::struct_field_names)]

pub mod shapes;
pub mod stores;
pub mod travel;
pub mod watched;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use saga_runtime::prelude::*;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Input {
    pub id: u64,
}

/// What one attempt does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Ok,
    Fail,
    Permanent,
    /// Sleep this long (longer than the timeout makes the attempt time out).
    Hang(Duration),
    RetryAfter(Duration),
    Panic,
    /// Ask for the saga's cancellation, then succeed.
    Cancel,
    /// Fail (retryably, or for good with `true`) with a hostile message: NUL, control
    /// characters, non-ASCII text and [`HOSTILE_LEN`] bytes in all.
    Nasty(bool),
    /// Report a crash to [`Script::crashed`] and never finish: the test then drops the
    /// saga's task, as a killed process would leave it.
    Crash,
}

/// The length of a [`Action::Nasty`] message, in bytes (well above what the runtime stores).
pub const HOSTILE_LEN: usize = 20_000;

/// A message no text column would like: NUL, control characters, non-ASCII text.
pub fn hostile(name: &str) -> String {
    let mut message =
        format!("{name} failed: nul\0 bell\x07 esc\x1b[31m tab\t nl\n cr\r ünïcødé 🚀 東京 ");
    while message.len() < HOSTILE_LEN {
        message.push_str("0123456789abcdéf");
    }
    message
}

/// One attempt as the step saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub name: &'static str,
    pub attempt: u32,
    pub at: Duration,
}

#[derive(Default)]
pub struct Script {
    actions: Mutex<HashMap<&'static str, VecDeque<Action>>>,
    log: Mutex<Vec<Attempt>>,
    /// Attempts that returned `Ok`, in order.
    succeeded: Mutex<Vec<&'static str>>,
    started: OnceLock<Instant>,
    crashed: tokio::sync::Notify,
    pub orchestrator: OnceLock<Orchestrator>,
}

impl Script {
    pub fn new() -> Arc<Self> {
        Arc::new(Script::default())
    }

    /// Queues actions for `name`'s attempts; once spent, attempts succeed.
    pub fn on(&self, name: &'static str, actions: impl IntoIterator<Item = Action>) {
        self.actions
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .extend(actions);
    }

    pub fn log(&self) -> Vec<Attempt> {
        self.log.lock().unwrap().clone()
    }

    /// The names of the attempts that returned `Ok`, in order.
    pub fn succeeded(&self) -> Vec<&'static str> {
        self.succeeded.lock().unwrap().clone()
    }

    /// Waits until an attempt has reached an [`Action::Crash`].
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    /// The names of the attempts, in order: `["a", "b", "b", "undo_a"]`.
    pub fn names(&self) -> Vec<&'static str> {
        self.log().into_iter().map(|a| a.name).collect()
    }

    pub async fn act(&self, name: &'static str, ctx: &StepContext) -> Result<u32, StepError> {
        let result = self.perform(name, ctx).await;
        if result.is_ok() {
            self.succeeded.lock().unwrap().push(name);
        }
        result
    }

    async fn perform(&self, name: &'static str, ctx: &StepContext) -> Result<u32, StepError> {
        let start = *self.started.get_or_init(Instant::now);
        self.log.lock().unwrap().push(Attempt {
            name,
            attempt: ctx.attempt(),
            at: Instant::now() - start,
        });
        let action = self
            .actions
            .lock()
            .unwrap()
            .get_mut(name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Action::Ok);
        match action {
            Action::Ok => Ok(ctx.attempt()),
            Action::Fail => Err(StepError::retryable(format!("{name} failed")).with_type("flaky")),
            Action::Permanent => Err(StepError::permanent(format!("{name} refused"))),
            Action::Hang(d) => {
                tokio::time::sleep(d).await;
                Ok(ctx.attempt())
            }
            Action::RetryAfter(d) => Err(StepError::retry_after(d, "slow down")),
            Action::Panic => panic!("{name} panicked on purpose"),
            Action::Cancel => {
                let orchestrator = self.orchestrator.get().expect("orchestrator set");
                orchestrator
                    .cancel(
                        ctx.saga_id(),
                        "customer changed their mind",
                        &Actor::new("tester"),
                    )
                    .await
                    .expect("cancel accepted");
                Ok(ctx.attempt())
            }
            Action::Nasty(permanent) => {
                let error = StepError::retryable(hostile(name)).with_type("nasty");
                Err(if permanent {
                    error.into_permanent()
                } else {
                    error
                })
            }
            Action::Crash => {
                self.crashed.notify_one();
                std::future::pending().await
            }
        }
    }
}

/// Three compensated steps; `undo_c` needs `c`'s output, `undo_b` does not.
pub struct Scripted(pub Arc<Script>);

#[saga(name = "scripted", input = Input)]
impl Scripted {
    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_a",
        backoff_initial = "100ms",
        backoff_multiplier = 2,
        backoff_max = "10s",
        jitter = 0
    )]
    async fn a(&self, input: &Input, ctx: &StepContext) -> Result<u32, StepError> {
        let _ = input;
        self.0.act("a", ctx).await
    }

    async fn undo_a(&self, a: &u32, ctx: &StepContext) -> Result<(), StepError> {
        let _ = a;
        self.0.act("undo_a", ctx).await.map(drop)
    }

    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_b",
        compensate_retries = 1,
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn b(&self, a: &u32, ctx: &StepContext) -> Result<u32, StepError> {
        let _ = a;
        self.0.act("b", ctx).await
    }

    async fn undo_b(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("undo_b", ctx).await.map(drop)
    }

    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_c",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn c(&self, b: &u32, ctx: &StepContext) -> Result<u32, StepError> {
        let _ = b;
        self.0.act("c", ctx).await
    }

    async fn undo_c(&self, c: &u32, ctx: &StepContext) -> Result<(), StepError> {
        let _ = c;
        self.0.act("undo_c", ctx).await.map(drop)
    }
}

/// A step that waits a day before it starts.
pub struct Held(pub Arc<Script>);

#[saga(name = "held", input = Input)]
impl Held {
    #[step(delay = "24h")]
    async fn release(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("release", ctx).await
    }
}

/// A step that waits up to a day for a signal `go` (a number).
pub struct Gated(pub Arc<Script>);

#[saga(name = "gated", input = Input)]
impl Gated {
    #[step(timeout = "24h")]
    async fn open(&self, #[signal] go: u32, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("open", ctx).await.map(|n| n + go)
    }
}

/// A compensated step, a pivot, then a step that can only go forward.
pub struct Pivoted(pub Arc<Script>);

#[saga(name = "pivoted", input = Input)]
impl Pivoted {
    #[step(
        timeout = "1s",
        retries = 1,
        compensate = "undo_a",
        backoff_initial = "10ms",
        jitter = 0
    )]
    async fn a(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("a", ctx).await
    }

    async fn undo_a(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("undo_a", ctx).await.map(drop)
    }

    #[step(
        pivot,
        timeout = "1s",
        retries = 1,
        backoff_initial = "10ms",
        jitter = 0
    )]
    async fn b(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("b", ctx).await
    }

    // No `retries`: after the pivot a step retries until it succeeds.
    #[step(
        timeout = "1s",
        backoff_initial = "10ms",
        backoff_max = "40ms",
        jitter = 0
    )]
    async fn c(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("c", ctx).await
    }
}

/// An orchestrator on `store` with the scripted sagas registered.
pub fn scripted(
    store: impl saga_runtime::store::IntoStore,
    script: &Arc<Script>,
) -> (
    Orchestrator,
    saga_runtime::Executor<Scripted>,
    saga_runtime::Executor<Pivoted>,
) {
    let orchestrator = Orchestrator::builder(store)
        .jitter_seed(7)
        .recovery(false)
        .build()
        .expect("orchestrator");
    let _ = script.orchestrator.set(orchestrator.clone());
    let scripted = orchestrator.register(Scripted(script.clone()));
    let pivoted = orchestrator.register(Pivoted(script.clone()));
    (orchestrator, scripted, pivoted)
}

/// The event types of a saga's audit log, as `event:step:attempt` strings.
pub async fn audit_trail(orchestrator: &Orchestrator, saga_id: &str) -> Vec<String> {
    orchestrator
        .audit_log(&AuditQuery::new().saga_id(saga_id))
        .await
        .expect("audit log")
        .into_iter()
        .map(|e| {
            let mut s = e.event_type.clone();
            if let Some(step) = e.step_name {
                s.push(':');
                s.push_str(&step);
            }
            if let Some(attempt) = e.attempt {
                s.push(':');
                s.push_str(&attempt.to_string());
            }
            s
        })
        .collect()
}
