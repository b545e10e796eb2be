//! Typed signals (DECISIONS.md, "Sagas that wait"): a step with a `#[signal]` parameter runs once its signal
//! has arrived, the saga held by no runner meanwhile; signals that arrive early are kept,
//! each is taken once, a key de-duplicates, a payload that does not decode is rejected and
//! the step keeps waiting, and the step's timeout is the deadline of the wait. On every
//! store.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::store::{Actor, NewSignal, Sent};
use saga_runtime::{SagaState, SagaStore, StoreError};
use support::audit_trail;
use support::stores::{Backend, Harness};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approved(pub String);

/// Book an expense, wait for a manager's approval (one second; a retry is for the body),
/// then pay.
pub struct Expense;

#[saga(name = "expense", input = Claim)]
impl Expense {
    #[step(compensate = "unbook")]
    async fn book(&self, input: &Claim) -> Result<u64, StepError> {
        Ok(input.cents)
    }

    async fn unbook(&self, book: &u64) -> Result<(), StepError> {
        let _ = book;
        Ok(())
    }

    #[step(timeout = "1s", retries = 1)]
    async fn approve(
        &self,
        book: &u64,
        #[signal] approval: Approval,
    ) -> Result<Approved, StepError> {
        Ok(Approved(format!("{} approved {book}", approval.by)))
    }

    #[step]
    async fn pay(&self, approve: &Approved) -> Result<usize, StepError> {
        Ok(approve.0.len())
    }
}

fn runner(store: Arc<dyn SagaStore>) -> (Orchestrator, saga_runtime::Executor<Expense>) {
    let orchestrator = Orchestrator::builder(store)
        .lease(Duration::from_secs(30))
        .recovery(false)
        .build()
        .expect("orchestrator");
    let expenses = orchestrator.register(Expense);
    (orchestrator, expenses)
}

fn approval(by: &str) -> ExpenseSignal {
    ExpenseSignal::Approval(Approval { by: by.to_owned() })
}

async fn start(expenses: &saga_runtime::Executor<Expense>, id: &str) {
    let outcome = expenses
        .execute_with_id(id, &SagaConfig::default(), Claim { cents: 4200 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting, "{outcome:?}");
}

async fn a_signal_wakes_the_step_that_waits_for_it(h: &Harness) {
    let (orchestrator, expenses) = runner(h.reopen());
    start(&expenses, "e-1").await;
    let row = h.store.load("e-1").await.unwrap().unwrap();
    assert_eq!(row.waiting_for.as_deref(), Some("approval"));
    assert_eq!(row.signals, ["approval"]);
    assert_eq!(row.owner, None);
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 0, "not due");

    let sent = expenses.signal("e-1", approval("ada")).await.unwrap();
    assert!(matches!(sent, Sent::Delivered { .. }), "{sent:?}");
    assert_eq!(
        orchestrator.recover_expired().await.unwrap(),
        1,
        "due at once"
    );
    let outcome = expenses.outcome("e-1").await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        outcome.context().approve,
        Some(Approved("ada approved 4200".into()))
    );
    assert!(
        h.store
            .next_signal("e-1", "approval")
            .await
            .unwrap()
            .is_none(),
        "consumed"
    );
    assert_eq!(
        audit_trail(&orchestrator, "e-1").await,
        [
            "saga_started",
            "step_started:book:1",
            "step_completed:book:1",
            "saga_waiting:approve:1",
            "signal_received:approval",
            "saga_woken:approve:1",
            "step_started:approve:1",
            "step_completed:approve:1",
            "step_started:pay:1",
            "step_completed:pay:1",
            "saga_completed"
        ]
    );
    // A saga that has ended takes no more signals.
    let late = expenses.signal("e-1", approval("bob")).await.unwrap_err();
    assert!(
        late.to_string().contains("is completed; cannot signal it"),
        "{late}"
    );
    // Pruning the saga deletes its signals too.
    let memory = h.backend == Backend::Memory;
    assert_eq!(signal_rows(h).await, (!memory).then_some(1));
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let pruned = h
        .store
        .prune(later, false, &Actor::new("ops"))
        .await
        .unwrap();
    assert_eq!(pruned.sagas, 1);
    assert_eq!(signal_rows(h).await, (!memory).then_some(0));
}

/// Rows in `saga_signals` (`None` for the memory store, which has no table).
async fn signal_rows(h: &Harness) -> Option<i64> {
    let sql = "SELECT count(*) FROM saga_signals";
    match &h.raw {
        support::stores::Raw::Memory(_) => None,
        support::stores::Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.ok(),
        support::stores::Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.ok(),
    }
}

async fn an_early_signal_is_kept_and_a_key_counts_once(h: &Harness) {
    let (orchestrator, expenses) = runner(h.reopen());
    assert!(
        expenses
            .enqueue("e-2", &SagaConfig::default(), Claim { cents: 7 })
            .await
            .unwrap()
    );
    let first = expenses
        .signal_with_key("e-2", approval("ada"), "webhook-1")
        .await
        .unwrap();
    let again = expenses
        .signal_with_key("e-2", approval("mallory"), "webhook-1")
        .await
        .unwrap();
    let (Sent::Delivered { id }, Sent::Duplicate { id: earlier }) = (first, again) else {
        panic!("{first:?} then {again:?}");
    };
    assert_eq!(id, earlier);
    // Before the saga has even started: it runs straight through.
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let outcome = expenses.outcome("e-2").await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(
        outcome.context().approve,
        Some(Approved("ada approved 7".into()))
    );
    let trail = audit_trail(&orchestrator, "e-2").await;
    assert!(
        !trail.iter().any(|e| e.starts_with("saga_waiting")),
        "{trail:?}"
    );
}

async fn bad_names_and_payloads_are_refused(h: &Harness) {
    let (orchestrator, expenses) = runner(h.reopen());
    start(&expenses, "e-3").await;
    let ops = Actor::new("ops");
    let unknown = orchestrator
        .send_signal(NewSignal::new(
            "e-3",
            "aproval",
            r#"{"by":"x"}"#,
            ops.clone(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, SagaError::Store(StoreError::UnknownSignal { .. })),
        "{unknown:?}"
    );
    assert_eq!(
        unknown.to_string(),
        "saga `e-3` accepts no signal `aproval`; it accepts approval"
    );
    let not_json = orchestrator
        .send_signal(NewSignal::new("e-3", "approval", "{by", ops.clone()))
        .await
        .unwrap_err();
    assert!(not_json.to_string().contains("not JSON"), "{not_json}");
    let missing = orchestrator
        .send_signal(NewSignal::new("nobody", "approval", "{}", ops.clone()))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");

    // JSON of the wrong shape is delivered, then rejected by the runner: the step waits on.
    let wrong = orchestrator
        .send_signal(NewSignal::new(
            "e-3",
            "approval",
            r#"{"by":5}"#,
            ops.clone(),
        ))
        .await
        .unwrap();
    assert!(matches!(wrong, Sent::Delivered { .. }));
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let row = h.store.load("e-3").await.unwrap().unwrap();
    assert_eq!(row.state, SagaState::Waiting);
    // It spent nothing: the same attempt waits, to the same deadline, and no attempt
    // timed out. (It once took the wake for its deadline: `step_timed_out`, then the next
    // attempt waited, or with no retries left the saga failed.)
    assert_eq!(
        row.steps[1].to_string(),
        "waiting for its signal (for attempt 1)"
    );
    assert!(row.steps[1].deadline().is_some());
    let trail = audit_trail(&orchestrator, "e-3").await;
    assert!(
        trail.contains(&"signal_rejected:approval".to_owned()),
        "{trail:?}"
    );
    assert!(
        !trail.iter().any(|e| e.starts_with("step_timed_out")),
        "{trail:?}"
    );
    orchestrator
        .send_signal(NewSignal::new(
            "e-3",
            "approval",
            "{\"by\":\"Zoë \\u0000 <b>\"}",
            ops,
        ))
        .await
        .unwrap();
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let outcome = expenses.outcome("e-3").await.unwrap().unwrap();
    assert_eq!(
        outcome.context().approve,
        Some(Approved("Zoë \0 <b> approved 4200".into()))
    );
    let row = h.store.load("e-3").await.unwrap().unwrap();
    assert_eq!(row.steps[1].to_string(), "completed (attempt 1)");
}

async fn a_signal_that_never_comes_fails_the_step_and_compensates(h: &Harness) {
    let (orchestrator, expenses) = runner(h.reopen());
    start(&expenses, "e-4").await;
    // The deadline passes: the step fails for good (its body never ran), although it has a
    // retry left: the deadline of a wait is counted once, not once per attempt.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let outcome = expenses.outcome("e-4").await.unwrap().unwrap();
    assert_eq!(outcome.state(), SagaState::Failed, "{outcome:?}");
    assert_eq!(
        outcome.error().unwrap().to_string(),
        "step `approve`: no signal `approval` within 1s"
    );
    let row = h.store.load("e-4").await.unwrap().unwrap();
    assert_eq!(
        row.steps
            .iter()
            .map(saga_runtime::StepStatus::phase)
            .collect::<Vec<_>>(),
        ["compensated", "failed", "not_started"]
    );
    let trail = audit_trail(&orchestrator, "e-4").await;
    for event in [
        "step_timed_out:approve:1",
        "compensation_executed:book:1",
        "saga_failed",
    ] {
        assert!(trail.contains(&event.to_owned()), "{event}: {trail:?}");
    }
    assert!(
        !trail.contains(&"saga_waiting:approve:2".to_owned()),
        "{trail:?}"
    );
}

/// With the recovery loop on but slow, a signal still wakes its saga at once: the store
/// tells the runner (LISTEN/NOTIFY on PostgreSQL, in process on the others).
async fn a_signal_wakes_a_running_runner_at_once(h: &Harness) {
    let orchestrator = Orchestrator::builder(h.reopen())
        .recovery_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let expenses = orchestrator.register(Expense);
    start(&expenses, "e-5").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = std::time::Instant::now();
    expenses.signal("e-5", approval("ada")).await.unwrap();
    loop {
        let record = h.store.load("e-5").await.unwrap().unwrap();
        if record.state == SagaState::Completed {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "not woken: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "{:?}: signalled to completed in {:?}",
        h.backend,
        sent.elapsed()
    );
    orchestrator.shutdown(Duration::from_secs(1)).await;
}

/// A saga waiting for a signal, cancelled: it wakes and compensates (its deadline did not
/// pass, so no attempt timed out); resumed by hand: it looks again and waits on, with a new
/// deadline, its attempt not spent.
async fn cancel_and_resume_of_a_signal_wait(h: &Harness) {
    let (orchestrator, expenses) = runner(h.reopen());
    start(&expenses, "e-6").await;
    start(&expenses, "e-7").await;
    let ops = Actor::new("ops");
    orchestrator
        .cancel("e-6", "claim withdrawn", &ops)
        .await
        .unwrap();
    h.store.resume("e-7", "look again", &ops).await.unwrap();
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 2);

    let cancelled = expenses.outcome("e-6").await.unwrap().unwrap();
    assert_eq!(cancelled.state(), SagaState::Failed);
    assert_eq!(
        cancelled.error().unwrap().message(),
        "cancelled: claim withdrawn"
    );
    let trail = audit_trail(&orchestrator, "e-6").await;
    assert!(
        !trail.iter().any(|e| e.starts_with("step_timed_out")),
        "{trail:?}"
    );
    assert!(
        trail.contains(&"compensation_executed:book:1".to_owned()),
        "{trail:?}"
    );

    let resumed = h.store.load("e-7").await.unwrap().unwrap();
    assert_eq!(resumed.state, SagaState::Waiting);
    assert_eq!(resumed.waiting_for.as_deref(), Some("approval"));
    assert_eq!(
        resumed.steps[1].to_string(),
        "waiting for its signal (for attempt 1)"
    );
    let trail = audit_trail(&orchestrator, "e-7").await;
    assert!(
        !trail.iter().any(|e| e.starts_with("step_timed_out")),
        "{trail:?}"
    );
    expenses.signal("e-7", approval("ada")).await.unwrap();
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    assert!(
        expenses
            .outcome("e-7")
            .await
            .unwrap()
            .unwrap()
            .is_completed()
    );
}

conformance!(
    cancel_and_resume_of_a_signal_wait,
    a_signal_wakes_the_step_that_waits_for_it,
    an_early_signal_is_kept_and_a_key_counts_once,
    bad_names_and_payloads_are_refused,
    a_signal_that_never_comes_fails_the_step_and_compensates,
    a_signal_wakes_a_running_runner_at_once,
);

#[test]
fn the_definition_lists_its_signals() {
    assert_eq!(Expense::DEFINITION.signals(), ["approval"]);
    let step = &Expense::DEFINITION.steps()[1];
    assert_eq!(step.signal(), Some("approval"));
    assert_eq!(step.timeout(), Some(Duration::from_secs(1)));
}

/// The race the crash harness found: a signal sent while the write that puts its saga to
/// wait is in flight. Its sender saw the saga still running, so it did not wake it; the
/// runner, once its write is done, finds the signal and goes on. Without that, the saga
/// waited until its deadline (here it would end `failed` after a second).
#[tokio::test(start_paused = true)]
async fn a_signal_sent_while_its_saga_is_being_put_to_wait_is_not_missed() {
    let slow = support::watched::Watched {
        inner: Arc::new(saga_runtime::MemoryStore::new()),
        sink: Arc::new(|_, _, _| {}),
        save_delay: Duration::from_millis(100),
    };
    let (_orchestrator, expenses) = runner(Arc::new(slow));
    let run = {
        let expenses = expenses.clone();
        tokio::spawn(async move {
            expenses
                .execute_with_id("e-race", &SagaConfig::default(), Claim { cents: 5 })
                .await
        })
    };
    // `book` completes at once; the write that puts the saga to wait takes 100 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let record = expenses.outcome("e-race").await.unwrap().unwrap();
    assert_eq!(
        record.state(),
        SagaState::Running,
        "the wait is not written yet"
    );
    expenses.signal("e-race", approval("ada")).await.unwrap();
    let outcome = run.await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
}
