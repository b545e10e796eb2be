//! Sagas that wait (DECISIONS.md, "Sagas that wait"): a step's `delay`, or a retry delay longer than the
//! lease, writes the saga `waiting`, held by no runner; any runner wakes it when it is due,
//! or at once when it is cancelled or resumed by hand. A day's delay under the paused clock
//! on the memory store (it passes at once); ownership, fencing, cancellation and resumption
//! on every store.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use saga_runtime::prelude::*;
use saga_runtime::store::{Actor, ClaimExpired};
use saga_runtime::{MemoryStore, RunStatus, SagaState, SagaStore};
use support::audit_trail;
use support::stores::{Backend, Harness};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u32,
}

/// What the steps did, in order.
#[derive(Debug, Default)]
pub struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Reserve, hold for a day, then charge.
pub struct Hold(Arc<Log>);

#[saga(name = "hold", input = Order)]
impl Hold {
    #[step(compensate = "release")]
    async fn reserve(&self, input: &Order) -> Result<u32, StepError> {
        self.0.push("reserve");
        Ok(input.id)
    }

    async fn release(&self, reserve: &u32) -> Result<(), StepError> {
        self.0.push(format!("release {reserve}"));
        Ok(())
    }

    #[step(delay = "24h")]
    async fn charge(&self, reserve: &u32) -> Result<(), StepError> {
        self.0.push(format!("charge {reserve}"));
        Ok(())
    }
}

/// A first step that waits, and a step that asks to be retried later than a lease lasts.
pub struct Later(Arc<Log>);

#[saga(name = "later", input = Order)]
impl Later {
    #[step(delay = "300ms")]
    async fn first(&self, input: &Order) -> Result<u32, StepError> {
        self.0.push("first");
        Ok(input.id)
    }

    #[step]
    async fn poll(&self, ctx: &StepContext) -> Result<Option<String>, StepError> {
        self.0.push(format!("poll {}", ctx.attempt()));
        if ctx.attempt() == 1 {
            return Err(StepError::retry_after(
                Duration::from_millis(1500),
                "not ready yet",
            ));
        }
        Ok(None)
    }
}

fn orchestrator(store: Arc<dyn SagaStore>, runner: &str, lease: Duration) -> Orchestrator {
    Orchestrator::builder(store)
        .runner_id(runner)
        .lease(lease)
        .recovery(false)
        .build()
        .expect("orchestrator")
}

#[tokio::test(start_paused = true)]
async fn a_day_long_delay_holds_nothing_and_passes_at_once_under_a_paused_clock() {
    let store = MemoryStore::new();
    let log = Arc::new(Log::default());
    let runner = orchestrator(Arc::new(store.clone()), "runner", Duration::from_secs(30));
    let holds = runner.register(Hold(log.clone()));

    let outcome = holds
        .execute_with_id("h-1", &SagaConfig::default(), Order { id: 7 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting);
    assert_eq!(outcome.context().reserve, Some(7));
    assert_eq!(log.entries(), ["reserve"]);
    let row = store.load("h-1").await.unwrap().unwrap();
    assert_eq!(row.state, SagaState::Waiting);
    assert_eq!(
        (row.owner, row.lease_expires_at),
        (None, None),
        "held by no runner"
    );
    assert_eq!(row.steps[1].run, RunStatus::Waiting);
    assert_eq!(
        row.steps[1].to_string(),
        "waiting for its delay (for attempt 1)"
    );
    let wait = row
        .wake_at
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(wait > Duration::from_secs(24 * 3600 - 5), "{wait:?}");

    // Not due: nobody claims it, however often runners look.
    tokio::time::advance(Duration::from_secs(23 * 3600)).await;
    assert_eq!(runner.recover_expired().await.unwrap(), 0);
    assert_eq!(log.entries(), ["reserve"]);

    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(runner.recover_expired().await.unwrap(), 1);
    let outcome = holds.outcome("h-1").await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(log.entries(), ["reserve", "charge 7"]);
    let row = store.load("h-1").await.unwrap().unwrap();
    assert_eq!(row.recovery_count, 0, "a wake is no recovery");
    assert_eq!(row.wake_at, None);
    assert_eq!(
        audit_trail(&runner, "h-1").await,
        [
            "saga_started",
            "step_started:reserve:1",
            "step_completed:reserve:1",
            "saga_waiting:charge:1",
            "saga_woken:charge:1",
            "step_started:charge:1",
            "step_completed:charge:1",
            "saga_completed"
        ]
    );
}

/// On every store: a wait ends the run and holds nothing; a runner that claimed a due saga
/// and stopped keeps others off only for its lease; the wake is no recovery; a retry later
/// than the lease waits the same way; overdue waits are counted.
async fn waits_are_held_by_no_runner(h: &Harness) {
    let lease = Duration::from_millis(800);
    let log = Arc::new(Log::default());
    let a = orchestrator(h.reopen(), "runner-a", lease);
    let later_a = a.register(Later(log.clone()));
    let outcome = later_a
        .execute_with_id("l-1", &SagaConfig::default(), Order { id: 3 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting);
    assert!(log.entries().is_empty(), "the first step waits first");
    let row = h.store.load("l-1").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.owner.as_deref()),
        (SagaState::Waiting, None)
    );
    assert!(row.wake_at.is_some());
    assert_eq!(a.recover_expired().await.unwrap(), 0, "not due yet");

    // Due; a claimer takes it and stops before writing: others stay off for its lease.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = h
        .store
        .stats(SystemTime::now(), SystemTime::now())
        .await
        .unwrap();
    let waiting = stats
        .iter()
        .find(|c| c.state == SagaState::Waiting)
        .unwrap();
    assert_eq!((waiting.count, waiting.overdue), (1, 1));
    let accept = |_: &saga_runtime::SagaRecord| true;
    let zombie = h
        .store
        .claim_expired(
            ClaimExpired::new("zombie", lease, vec!["later"], 10),
            &accept,
        )
        .await
        .unwrap();
    assert_eq!(zombie.len(), 1);
    assert_eq!(
        zombie[0].state,
        SagaState::Waiting,
        "stays waiting until written"
    );
    let b = orchestrator(h.reopen(), "runner-b", lease);
    let later_b = b.register(Later(log.clone()));
    assert_eq!(
        b.recover_expired().await.unwrap(),
        0,
        "the zombie's lease holds"
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(b.recover_expired().await.unwrap(), 1);

    // `poll` failed once and asked for 1.5 s, longer than the lease: the saga waits again.
    assert_eq!(log.entries(), ["first", "poll 1"]);
    let row = h.store.load("l-1").await.unwrap().unwrap();
    assert_eq!(row.state, SagaState::Waiting, "{row:?}");
    assert_eq!(row.steps[1].to_string(), "waiting to retry (for attempt 2)");
    assert_eq!(row.recovery_count, 0, "wakes are no recoveries");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(b.recover_expired().await.unwrap(), 1);
    let outcome = later_b.outcome("l-1").await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        outcome.context().poll,
        Some(None),
        "a `None` output, completed"
    );
    assert_eq!(log.entries(), ["first", "poll 1", "poll 2"]);
    let trail = audit_trail(&b, "l-1").await;
    assert_eq!(
        trail,
        [
            "saga_started",
            "saga_waiting:first:1",
            "saga_woken:first:1",
            "step_started:first:1",
            "step_completed:first:1",
            "step_started:poll:1",
            "step_failed:poll:1",
            "step_retrying:poll:2",
            "saga_waiting:poll:2",
            "saga_woken:poll:2",
            "step_started:poll:2",
            "step_completed:poll:2",
            "saga_completed"
        ]
    );
    // The zombie's write is fenced off.
    assert!(zombie[0].version < h.store.load("l-1").await.unwrap().unwrap().version);
}

/// On every store: a day's wait ends early when cancelled (compensating) or resumed by hand
/// (going on); both are counted as waiting until a runner wakes them.
async fn cancel_and_resume_wake_a_wait_at_once(h: &Harness) {
    let log = Arc::new(Log::default());
    let runner = orchestrator(h.reopen(), "runner", Duration::from_secs(30));
    let holds = runner.register(Hold(log.clone()));
    for id in ["c-1", "c-2"] {
        let outcome = holds
            .execute_with_id(id, &SagaConfig::default(), Order { id: 5 })
            .await
            .unwrap();
        assert_eq!(outcome.state(), SagaState::Waiting);
    }
    assert_eq!(runner.recover_expired().await.unwrap(), 0, "due tomorrow");
    let ops = Actor::new("ops");
    runner.cancel("c-1", "out of stock", &ops).await.unwrap();
    h.store.resume("c-2", "ship today", &ops).await.unwrap();
    let stats = h
        .store
        .stats(
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let waiting = stats
        .iter()
        .find(|c| c.state == SagaState::Waiting)
        .unwrap();
    assert_eq!(waiting.count, 2);
    assert_eq!(runner.recover_expired().await.unwrap(), 2);
    let cancelled = holds.outcome("c-1").await.unwrap().unwrap();
    assert_eq!(cancelled.state(), SagaState::Failed);
    assert_eq!(
        cancelled.error().unwrap().message(),
        "cancelled: out of stock"
    );
    let trail = audit_trail(&runner, "c-1").await;
    let woken = trail.iter().position(|e| e == "saga_woken:charge:1");
    let cancel = trail.iter().position(|e| e == "saga_cancelled");
    assert!(woken.is_some() && woken < cancel, "{trail:?}");
    assert!(
        !trail.iter().any(|e| e.starts_with("step_started:charge")),
        "charge never started: {trail:?}"
    );
    assert!(holds.outcome("c-2").await.unwrap().unwrap().is_completed());
    let mut entries = log.entries();
    entries.sort();
    assert_eq!(entries, ["charge 5", "release 5", "reserve", "reserve"]);
}

conformance!(
    waits_are_held_by_no_runner,
    cancel_and_resume_wake_a_wait_at_once
);
