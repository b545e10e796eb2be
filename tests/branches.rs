//! One engine (DECISIONS.md, "One engine"): in a saga with concurrent steps, a branch may
//! wait for a delay, a signal or a child while the others run; when only waits are left the
//! saga waits as a whole, held by no runner; a wake resumes the branches that are due; a
//! failure or a cancellation ends the waits without effect and compensates; a crash while
//! one branch waits and another runs resumes both. On every store.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::store::{Actor, NewSignal, Sent};
use saga_runtime::{Executor, RunStatus, SagaState, WaitFor};
use support::audit_trail;
use support::stores::{Backend, Harness};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel {
    pub grams: u32,
}

/// The child: labels a parcel.
pub struct Courier(Log);

#[saga(name = "courier", input = Parcel)]
impl Courier {
    #[step(compensate = "void")]
    async fn label(&self, input: &Parcel) -> Result<String, StepError> {
        note(&self.0, "label");
        Ok(format!("LBL-{}", input.grams))
    }

    async fn void(&self, label: &String) -> Result<(), StepError> {
        note(&self.0, format!("void {label}"));
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub grams: u32,
    /// `authorise` fails for good.
    pub decline: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Review {
    pub ok: bool,
}

/// Reserve stock and authorise payment at once, beside a manual review (a signal), shipping
/// (a child saga) and a cooling-off delay; then capture.
pub struct Fulfil {
    log: Log,
    /// `reserve` hangs, as a runner that died mid-attempt leaves it.
    hang: Arc<AtomicBool>,
    /// `review` hangs once it has its signal.
    hang_review: Arc<AtomicBool>,
}

#[saga(name = "fulfil", input = Order)]
impl Fulfil {
    #[step(concurrent, compensate = "release")]
    async fn reserve(&self, input: &Order) -> Result<u32, StepError> {
        if self.hang.load(Ordering::SeqCst) {
            note(&self.log, "reserve hangs");
            std::future::pending::<()>().await;
        }
        note(&self.log, "reserve");
        Ok(input.grams)
    }

    async fn release(&self) -> Result<(), StepError> {
        note(&self.log, "release");
        Ok(())
    }

    #[step(concurrent, compensate = "void", retries = 0)]
    async fn authorise(&self, input: &Order) -> Result<String, StepError> {
        if input.decline {
            return Err(StepError::permanent("card declined"));
        }
        note(&self.log, "authorise");
        Ok("AUTH-1".to_owned())
    }

    async fn void(&self) -> Result<(), StepError> {
        note(&self.log, "void");
        Ok(())
    }

    #[step(concurrent, timeout = "1h", retries = 1)]
    async fn review(&self, #[signal] review: Review) -> Result<bool, StepError> {
        if self.hang_review.load(Ordering::SeqCst) {
            note(&self.log, "review hangs");
            std::future::pending::<()>().await;
        }
        note(&self.log, "review");
        Ok(review.ok)
    }

    #[step(concurrent, child, timeout = "1h")]
    async fn ship(&self, input: &Order) -> Result<Child<Courier>, StepError> {
        note(&self.log, "ship");
        Ok(Child::start(Parcel { grams: input.grams }))
    }

    #[step(concurrent, delay = "300ms")]
    async fn cool_off(&self) -> Result<(), StepError> {
        note(&self.log, "cool_off");
        Ok(())
    }

    #[step]
    async fn capture(
        &self,
        authorise: &String,
        review: &bool,
        ship: &Completed<Courier>,
    ) -> Result<String, StepError> {
        note(&self.log, "capture");
        Ok(format!("{authorise} {review} {}", ship.saga_id()))
    }
}

/// A review that must come within 500 ms.
pub struct Hasty;

#[saga(name = "hasty", input = Order)]
impl Hasty {
    #[step(concurrent, compensate = "release")]
    async fn reserve(&self, input: &Order) -> Result<u32, StepError> {
        Ok(input.grams)
    }

    async fn release(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(concurrent, timeout = "500ms", retries = 3)]
    async fn review(&self, #[signal] review: Review) -> Result<bool, StepError> {
        Ok(review.ok)
    }
}

/// A branch asks to be retried after longer than the lease while its sibling completes.
pub struct Patient(Arc<AtomicBool>);

#[saga(name = "patient", input = Order)]
impl Patient {
    #[step(concurrent)]
    async fn quick(&self, input: &Order) -> Result<u32, StepError> {
        Ok(input.grams)
    }

    #[step(concurrent, retries = 2)]
    async fn slow(&self) -> Result<(), StepError> {
        if !self.0.swap(true, Ordering::SeqCst) {
            return Err(StepError::retry_after(
                Duration::from_secs(3),
                "the supplier is closed",
            ));
        }
        Ok(())
    }
}

struct World {
    orchestrator: Orchestrator,
    orders: Executor<Fulfil>,
    log: Log,
    hang: Arc<AtomicBool>,
    hang_review: Arc<AtomicBool>,
}

fn world(h: &Harness) -> World {
    let orchestrator = Orchestrator::builder(h.reopen())
        .lease(Duration::from_secs(2))
        .recovery(false)
        .build()
        .expect("orchestrator");
    let log = Log::default();
    let hang = Arc::new(AtomicBool::new(false));
    let hang_review = Arc::new(AtomicBool::new(false));
    orchestrator.register(Courier(log.clone()));
    let orders = orchestrator.register(Fulfil {
        log: log.clone(),
        hang: hang.clone(),
        hang_review: hang_review.clone(),
    });
    World {
        orchestrator,
        orders,
        log,
        hang,
        hang_review,
    }
}

fn order(decline: bool) -> Order {
    Order {
        grams: 750,
        decline,
    }
}

/// Waits until saga `id` stands in `state`, waking what is due meanwhile.
async fn until(w: &World, id: &str, state: SagaState) -> saga_runtime::SagaRecord {
    for _ in 0..1000 {
        let record = w.orchestrator.store().load(id).await.unwrap();
        if let Some(record) = record.filter(|r| r.state == state) {
            return record;
        }
        w.orchestrator.recover_expired().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = w.orchestrator.store().load(id).await.unwrap();
    panic!("saga `{id}` never became {state}: {record:?}");
}

/// Waits until saga `id` waits with only its review left waiting, waking what is due.
async fn until_only_review_waits(w: &World, id: &str) -> saga_runtime::SagaRecord {
    for _ in 0..1000 {
        let record = w.orchestrator.store().load(id).await.unwrap().unwrap();
        let waiting: Vec<usize> = (0..record.steps.len())
            .filter(|&i| record.steps[i].run == RunStatus::Waiting)
            .collect();
        if record.state == SagaState::Waiting && waiting == [2] {
            return record;
        }
        w.orchestrator.recover_expired().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("saga `{id}` never waited for its review alone");
}

fn phases(record: &saga_runtime::SagaRecord) -> Vec<&'static str> {
    record
        .steps
        .iter()
        .map(saga_runtime::StepStatus::phase)
        .collect()
}

async fn review(w: &World, id: &str, ok: bool) {
    let sent = w
        .orders
        .signal(id, FulfilSignal::Review(Review { ok }))
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Delivered { .. }), "{sent:?}");
}

async fn a_fan_out_waits_for_its_signal_child_and_delay_then_completes(h: &Harness) {
    let w = world(h);
    let outcome = w
        .orders
        .execute_with_id("f-1", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting, "{outcome:?}");
    // Once its delay and its child are over, only the review waits.
    let row = until_only_review_waits(&w, "f-1").await;
    assert_eq!(row.owner, None, "held by no runner");
    assert_eq!(row.waiting_for.as_deref(), Some("review"), "{row:?}");
    let review_status = row.steps[2];
    assert_eq!(review_status.run, RunStatus::Waiting);
    assert_eq!(review_status.wait, Some(WaitFor::Signal));
    let deadline = review_status.until().expect("until when");
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3500), "{left:?}");
    assert_eq!(
        phases(&row),
        [
            "completed",
            "completed",
            "waiting",
            "completed",
            "completed",
            "not_started"
        ]
    );
    assert_eq!(
        row.steps[2].to_string(),
        "waiting for its signal (for attempt 1)"
    );

    review(&w, "f-1", true).await;
    let row = until(&w, "f-1", SagaState::Completed).await;
    assert!(phases(&row).iter().all(|p| *p == "completed"), "{row:?}");
    let outcome = w.orders.outcome("f-1").await.unwrap().unwrap();
    assert_eq!(
        outcome.context().capture.as_deref(),
        Some("AUTH-1 true f-1/ship")
    );
    let trail = audit_trail(&w.orchestrator, "f-1").await;
    for expected in [
        "step_waiting:review:0",
        "step_waiting:cool_off:0",
        "child_started:ship:1",
        "step_waiting:ship:1",
        "saga_waiting",
        "saga_woken",
        "step_started:review:1",
        "saga_completed",
    ] {
        assert!(
            trail.contains(&expected.to_owned()),
            "{expected}: {trail:?}"
        );
    }
    let log = w.log.lock().unwrap().clone();
    assert_eq!(log.last().map(String::as_str), Some("capture"), "{log:?}");
    assert!(log.contains(&"label".to_owned()), "{log:?}");
}

async fn a_branch_that_fails_ends_the_waits_and_compensates(h: &Harness) {
    let w = world(h);
    w.orders
        .execute_with_id("f-2", &SagaConfig::default(), order(true))
        .await
        .unwrap();
    let row = until(&w, "f-2", SagaState::Failed).await;
    assert_eq!(row.error.as_deref(), Some("card declined"), "{row:?}");
    assert_eq!(row.failed_step.as_deref(), Some("authorise"));
    assert!(
        row.steps.iter().all(|s| s.run != RunStatus::Waiting),
        "no wait is left: {row:?}"
    );
    assert_eq!(row.steps[2].phase(), "not_started", "the review never ran");
    assert_eq!(
        row.steps[4].phase(),
        "not_started",
        "nor did the delayed step"
    );
    assert_eq!(row.waiting_for, None);
    let log = w.log.lock().unwrap().clone();
    assert!(log.contains(&"release".to_owned()), "{log:?}");
    assert!(!log.contains(&"review".to_owned()), "{log:?}");
    if let Some(child) = w.orchestrator.store().load("f-2/ship").await.unwrap() {
        assert_eq!(
            child.state,
            SagaState::Failed,
            "undone or cancelled: {child:?}"
        );
    }
}

async fn cancelling_a_saga_whose_branches_wait_compensates_them(h: &Harness) {
    let w = world(h);
    w.orders
        .execute_with_id("f-3", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    until(&w, "f-3", SagaState::Waiting).await;
    let child = until_child_completed(&w, "f-3/ship").await;
    assert_eq!(child, SagaState::Completed);
    w.orchestrator
        .cancel("f-3", "the customer changed their mind", &Actor::new("ops"))
        .await
        .unwrap();
    let row = until(&w, "f-3", SagaState::Failed).await;
    assert_eq!(row.steps[2].phase(), "not_started", "{row:?}");
    assert_eq!(row.steps[3].phase(), "compensated", "{row:?}");
    let child = w
        .orchestrator
        .store()
        .load("f-3/ship")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.state, SagaState::Failed, "undone by its parent");
    let log = w.log.lock().unwrap().clone();
    for undone in ["release", "void", "void LBL-750"] {
        assert!(log.contains(&undone.to_owned()), "{undone}: {log:?}");
    }
}

async fn until_child_completed(w: &World, id: &str) -> SagaState {
    until(w, id, SagaState::Completed).await.state
}

async fn a_payload_that_does_not_decode_keeps_the_branch_waiting_to_the_same_deadline(h: &Harness) {
    let w = world(h);
    w.orders
        .execute_with_id("f-4", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    let before = until(&w, "f-4", SagaState::Waiting).await;
    let sent = w
        .orchestrator
        .store()
        .send_signal(NewSignal::new(
            "f-4",
            "review",
            r#"{"ok":"yes"}"#,
            Actor::new("ops"),
        ))
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Delivered { .. }), "{sent:?}");
    assert_eq!(w.orchestrator.recover_expired().await.unwrap(), 1, "woken");
    let after = until(&w, "f-4", SagaState::Waiting).await;
    assert_eq!(
        after.steps[2], before.steps[2],
        "the same wait, the same deadline"
    );
    let trail = audit_trail(&w.orchestrator, "f-4").await;
    assert!(
        trail.contains(&"signal_rejected:review".to_owned()),
        "{trail:?}"
    );
    review(&w, "f-4", false).await;
    let row = until(&w, "f-4", SagaState::Completed).await;
    assert_eq!(row.steps[2].attempt, 1, "no attempt spent: {row:?}");
}

async fn a_branchs_deadline_is_counted_once_and_fails_the_saga(h: &Harness) {
    let w = world(h);
    let hasty = w.orchestrator.register(Hasty);
    let outcome = hasty
        .execute_with_id("f-5", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting);
    let row = until(&w, "f-5", SagaState::Failed).await;
    assert_eq!(
        row.error.as_deref(),
        Some("no signal `review` within 500ms"),
        "{row:?}"
    );
    assert_eq!(row.steps[1].phase(), "failed");
    assert_eq!(row.steps[0].phase(), "compensated");
    let trail = audit_trail(&w.orchestrator, "f-5").await;
    let timed_out = trail
        .iter()
        .filter(|e| e.starts_with("step_timed_out"))
        .count();
    assert_eq!(timed_out, 1, "once, whatever the retries: {trail:?}");
}

async fn a_crash_while_one_branch_waits_and_another_runs_resumes_both(h: &Harness) {
    let first = world(h);
    first.hang.store(true, Ordering::SeqCst);
    let orders = first.orders.clone();
    let task = tokio::spawn(async move {
        let _ = orders
            .execute_with_id("f-6", &SagaConfig::default(), order(false))
            .await;
    });
    // Until the review waits and the child has been started, while `reserve` hangs.
    for _ in 0..500 {
        let row = first.orchestrator.store().load("f-6").await.unwrap();
        let waits = row.as_ref().is_some_and(|r| {
            r.steps[2].run == RunStatus::Waiting && r.steps[3].run == RunStatus::Waiting
        });
        if waits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A signal arrives while its runner is dead.
    review(&first, "f-6", true).await;
    task.abort();
    let _ = task.await;
    drop(first);

    let second = world(h);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the dead runner's lease
    let row = until(&second, "f-6", SagaState::Completed).await;
    assert!(phases(&row).iter().all(|p| *p == "completed"), "{row:?}");
    assert_eq!(row.steps[0].attempt, 2, "the interrupted attempt ran again");
    assert_eq!(row.steps[2].attempt, 1, "the review ran once");
    let trail = audit_trail(&second.orchestrator, "f-6").await;
    assert!(trail.contains(&"saga_recovered:1".to_owned()), "{trail:?}");
    assert_eq!(
        trail
            .iter()
            .filter(|e| e.starts_with("child_started"))
            .count(),
        1,
        "{trail:?}"
    );
}

async fn a_branchs_retry_longer_than_the_lease_waits_durably(h: &Harness) {
    let w = world(h);
    let patient = w
        .orchestrator
        .register(Patient(Arc::new(AtomicBool::new(false))));
    let outcome = patient
        .execute_with_id("f-8", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting, "{outcome:?}");
    let row = w.orchestrator.store().load("f-8").await.unwrap().unwrap();
    assert_eq!(row.owner, None, "held by no runner while it waits to retry");
    assert_eq!(row.steps[1].wait, Some(WaitFor::Retry), "{row:?}");
    assert_eq!(row.steps[1].to_string(), "waiting to retry (for attempt 2)");
    let row = until(&w, "f-8", SagaState::Completed).await;
    assert_eq!(row.steps[1].attempt, 2, "{row:?}");
}

/// Found by the crash harness: a recovery restarted an interrupted attempt of a branch
/// that had taken its signal, without the signal's payload.
async fn a_crash_during_a_signalled_branchs_attempt_reruns_it_with_its_signal(h: &Harness) {
    let first = world(h);
    first.hang_review.store(true, Ordering::SeqCst);
    // Queued, signalled, then run in a task of this test's, so that aborting it is the
    // runner's death: `review` takes its signal as it starts, and hangs.
    first
        .orders
        .enqueue("f-7", &SagaConfig::default(), order(false))
        .await
        .unwrap();
    review(&first, "f-7", true).await;
    let orders = first.orders.clone();
    let task = tokio::spawn(async move {
        let _ = orders.recover("f-7").await;
    });
    for _ in 0..500 {
        // Until the review hangs and its siblings' attempts have been written (an
        // attempt interrupted with no retry left would fail the saga instead).
        let row = first
            .orchestrator
            .store()
            .load("f-7")
            .await
            .unwrap()
            .unwrap();
        let settled = row.steps[..2].iter().all(|s| s.run == RunStatus::Completed)
            && row.steps[3].run != RunStatus::Running;
        if settled
            && first
                .log
                .lock()
                .unwrap()
                .contains(&"review hangs".to_owned())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let _ = task.await;
    drop(first);

    let second = world(h);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the dead runner's lease
    let row = until(&second, "f-7", SagaState::Completed).await;
    assert_eq!(row.steps[2].attempt, 2, "the interrupted attempt ran again");
    let log = second.log.lock().unwrap().clone();
    assert!(log.contains(&"review".to_owned()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("capture"), "{log:?}");
}

conformance!(
    a_branchs_retry_longer_than_the_lease_waits_durably,
    a_crash_during_a_signalled_branchs_attempt_reruns_it_with_its_signal,
    a_fan_out_waits_for_its_signal_child_and_delay_then_completes,
    a_branch_that_fails_ends_the_waits_and_compensates,
    cancelling_a_saga_whose_branches_wait_compensates_them,
    a_payload_that_does_not_decode_keeps_the_branch_waiting_to_the_same_deadline,
    a_branchs_deadline_is_counted_once_and_fails_the_saga,
    a_crash_while_one_branch_waits_and_another_runs_resumes_both,
);
