//! Child sagas (DECISIONS.md, "Sagas that wait"): a `#[step(child)]` starts a saga of another registered type
//! with the id `<parent>/<step>`, waits for it durably, and takes its typed outcome as the
//! step's output; the child's end wakes the parent; a re-run attaches to the same child; the
//! parent's compensation undoes a completed child and cancels a running one. On every store.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::store::{Actor, Sent};
use saga_runtime::{Executor, SagaState};
use support::audit_trail;
use support::stores::{Backend, Harness};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel {
    pub weight_g: u32,
    /// The courier refuses it (the child fails and compensates itself).
    pub refuse: bool,
}

/// The child: labels a parcel, then waits for the courier's `pickup` signal.
pub struct Courier(Log);

#[saga(name = "courier", input = Parcel)]
impl Courier {
    #[step(compensate = "void_label")]
    async fn label(&self, input: &Parcel) -> Result<String, StepError> {
        note(&self.0, "label");
        Ok(format!("LBL-{}", input.weight_g))
    }

    async fn void_label(&self, label: &String) -> Result<(), StepError> {
        note(&self.0, format!("void {label}"));
        Ok(())
    }

    /// A unit output: the parent must read it back as an output.
    #[step(timeout = "1h", retries = 0)]
    async fn pickup(&self, input: &Parcel, #[signal] pickup: String) -> Result<(), StepError> {
        if input.refuse {
            return Err(StepError::permanent(format!("{pickup} refused the parcel")));
        }
        note(&self.0, "picked up");
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub weight_g: u32,
    pub refuse: bool,
    /// `confirm` fails, so that the parent compensates after its child completed.
    pub fail_confirm: bool,
}

/// The parent: reserves stock, ships through a `courier` child, confirms.
pub struct Shop(Log);

#[saga(name = "shop", input = Order)]
impl Shop {
    #[step(compensate = "release")]
    async fn reserve(&self, input: &Order) -> Result<u32, StepError> {
        note(&self.0, "reserve");
        Ok(input.weight_g)
    }

    async fn release(&self) -> Result<(), StepError> {
        note(&self.0, "release");
        Ok(())
    }

    #[step(child, timeout = "1h", retries = 0)]
    async fn ship(&self, input: &Order, reserve: &u32) -> Result<Child<Courier>, StepError> {
        note(&self.0, "ship");
        Ok(Child::start(Parcel {
            weight_g: *reserve,
            refuse: input.refuse,
        }))
    }

    #[step]
    async fn confirm(&self, input: &Order, ship: &Completed<Courier>) -> Result<String, StepError> {
        if input.fail_confirm {
            return Err(StepError::permanent("the customer cancelled"));
        }
        assert_eq!(ship.context().pickup, Some(()));
        Ok(format!(
            "{} via {}",
            ship.context().label.clone().unwrap_or_default(),
            ship.saga_id()
        ))
    }
}

/// A parent that gives its child 300 ms (once: `retries` are for the body).
pub struct Impatient;

#[saga(name = "impatient", input = Order)]
impl Impatient {
    #[step(child, timeout = "300ms", retries = 1)]
    async fn ship(&self, input: &Order) -> Result<Child<Courier>, StepError> {
        Ok(Child::start(Parcel {
            weight_g: input.weight_g,
            refuse: false,
        }))
    }
}

struct World {
    orchestrator: Orchestrator,
    shops: Executor<Shop>,
    couriers: Executor<Courier>,
    log: Log,
}

fn world(h: &Harness) -> World {
    let orchestrator = Orchestrator::builder(h.reopen())
        .lease(Duration::from_secs(30))
        .recovery(false)
        .build()
        .expect("orchestrator");
    let log = Log::default();
    let couriers = orchestrator.register(Courier(log.clone()));
    let shops = orchestrator.register(Shop(log.clone()));
    World {
        orchestrator,
        shops,
        couriers,
        log,
    }
}

fn order(refuse: bool, fail_confirm: bool) -> Order {
    Order {
        weight_g: 750,
        refuse,
        fail_confirm,
    }
}

/// Waits until saga `id` (of either type) stands in `state`, waking what is due meanwhile.
async fn until(w: &World, id: &str, state: SagaState) {
    for _ in 0..500 {
        let record = w.orchestrator.store().load(id).await.unwrap();
        if record.as_ref().is_some_and(|r| r.state == state) {
            return;
        }
        w.orchestrator.recover_expired().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = w.orchestrator.store().load(id).await.unwrap();
    panic!(
        "saga `{id}` never became {state}: {:?}",
        record.map(|r| (r.state, r.error))
    );
}

async fn pickup(w: &World, child: &str) {
    let sent = w
        .couriers
        .signal(child, CourierSignal::Pickup("dhl".into()))
        .await
        .unwrap();
    assert!(matches!(sent, Sent::Delivered { .. }), "{sent:?}");
}

async fn a_child_completes_and_its_outcome_is_the_steps_output(h: &Harness) {
    let w = world(h);
    let outcome = w
        .shops
        .execute_with_id(
            "o-1",
            &SagaConfig::default().user_id("ada"),
            order(false, false),
        )
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Waiting);
    until(&w, "o-1/ship", SagaState::Waiting).await;
    let child = w
        .orchestrator
        .store()
        .load("o-1/ship")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.definition, "courier");
    assert_eq!(
        child.user_id.as_deref(),
        Some("ada"),
        "it inherits its parent's user"
    );
    pickup(&w, "o-1/ship").await;
    until(&w, "o-1", SagaState::Completed).await;
    let outcome = w.shops.outcome("o-1").await.unwrap().unwrap();
    assert_eq!(
        outcome.context().confirm.as_deref(),
        Some("LBL-750 via o-1/ship")
    );
    let ship = outcome.context().ship.as_ref().unwrap();
    assert_eq!(ship.saga_id(), "o-1/ship");
    assert_eq!(ship.context().pickup, Some(()));
    assert_eq!(
        *w.log.lock().unwrap(),
        ["reserve", "ship", "label", "picked up"]
    );
    let trail = audit_trail(&w.orchestrator, "o-1").await;
    for expected in [
        "child_started:ship:1",
        "saga_waiting:ship:1",
        "signal_received:child:ship",
        "saga_woken:ship:1",
        "step_completed:ship:1",
        "saga_completed",
    ] {
        assert!(
            trail.iter().any(|e| e == expected),
            "{expected} in {trail:?}"
        );
    }
    // The end signal was consumed with the step: nothing left pending.
    let pending = w
        .orchestrator
        .store()
        .next_signal("o-1", "child:ship")
        .await
        .unwrap();
    assert!(pending.is_none(), "{pending:?}");
}

async fn a_child_that_fails_fails_the_step(h: &Harness) {
    let w = world(h);
    w.shops
        .execute_with_id("o-2", &SagaConfig::default(), order(true, false))
        .await
        .unwrap();
    until(&w, "o-2/ship", SagaState::Waiting).await;
    pickup(&w, "o-2/ship").await;
    until(&w, "o-2", SagaState::Failed).await;
    let outcome = w.shops.outcome("o-2").await.unwrap().unwrap();
    let failure = outcome.error().unwrap();
    assert_eq!(failure.step(), Some("ship"));
    assert!(
        failure
            .message()
            .starts_with("child saga `o-2/ship` ended failed at step `pickup`: dhl refused"),
        "{failure}"
    );
    // The child compensated itself; the parent compensated what came before the child.
    assert_eq!(
        *w.log.lock().unwrap(),
        ["reserve", "ship", "label", "void LBL-750", "release"]
    );
}

async fn the_parents_compensation_undoes_a_completed_child(h: &Harness) {
    let w = world(h);
    w.shops
        .execute_with_id("o-3", &SagaConfig::default(), order(false, true))
        .await
        .unwrap();
    until(&w, "o-3/ship", SagaState::Waiting).await;
    pickup(&w, "o-3/ship").await;
    until(&w, "o-3", SagaState::Failed).await;
    let child = w.couriers.outcome("o-3/ship").await.unwrap().unwrap();
    assert_eq!(child.state(), SagaState::Failed);
    assert!(
        child
            .error()
            .unwrap()
            .message()
            .starts_with("undone: its parent `o-3` is compensating"),
        "{:?}",
        child.error()
    );
    assert_eq!(
        *w.log.lock().unwrap(),
        [
            "reserve",
            "ship",
            "label",
            "picked up",
            "void LBL-750",
            "release"
        ],
        "the child is undone before the step before it"
    );
    let trail = audit_trail(&w.orchestrator, "o-3").await;
    assert!(
        trail.iter().any(|e| e == "compensation_executed:ship:1"),
        "{trail:?}"
    );
    let who = w
        .orchestrator
        .audit_log(
            &AuditQuery::new()
                .saga_id("o-3/ship")
                .event_type("saga_undone"),
        )
        .await
        .unwrap();
    assert_eq!(who[0].user_id.as_deref(), Some("parent saga"));
}

async fn cancelling_the_parent_cancels_its_running_child(h: &Harness) {
    let w = world(h);
    w.shops
        .execute_with_id("o-4", &SagaConfig::default(), order(false, false))
        .await
        .unwrap();
    until(&w, "o-4/ship", SagaState::Waiting).await;
    w.orchestrator
        .cancel("o-4", "out of stock", &Actor::new("ops"))
        .await
        .unwrap();
    until(&w, "o-4", SagaState::Failed).await;
    let child = w.couriers.outcome("o-4/ship").await.unwrap().unwrap();
    assert_eq!(child.state(), SagaState::Failed);
    assert!(
        child
            .error()
            .unwrap()
            .message()
            .starts_with("cancelled: its parent `o-4`"),
        "{:?}",
        child.error()
    );
    assert_eq!(
        *w.log.lock().unwrap(),
        ["reserve", "ship", "label", "void LBL-750", "release"]
    );
}

async fn a_rerun_attaches_to_the_same_child(h: &Harness) {
    let w = world(h);
    // The child exists already, as after a crash between its start and the parent's write.
    let child = w
        .couriers
        .execute_with_id(
            "o-5/ship",
            &SagaConfig::default(),
            Parcel {
                weight_g: 1,
                refuse: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(child.state(), SagaState::Waiting);
    w.shops
        .execute_with_id("o-5", &SagaConfig::default(), order(false, false))
        .await
        .unwrap();
    pickup(&w, "o-5/ship").await;
    until(&w, "o-5", SagaState::Completed).await;
    let outcome = w.shops.outcome("o-5").await.unwrap().unwrap();
    assert_eq!(
        outcome.context().confirm.as_deref(),
        Some("LBL-1 via o-5/ship"),
        "the first child's outcome, not a new one's"
    );
    let started = w
        .orchestrator
        .audit_log(
            &AuditQuery::new()
                .saga_id("o-5/ship")
                .event_type("saga_started"),
        )
        .await
        .unwrap();
    assert_eq!(started.len(), 1, "one child, started once");
    let attached = w
        .orchestrator
        .audit_log(&AuditQuery::new().saga_id("o-5").event_type("child_started"))
        .await
        .unwrap();
    assert!(
        attached[0]
            .details
            .as_deref()
            .unwrap_or("")
            .contains("\"created\":false"),
        "{attached:?}"
    );
}

async fn an_unregistered_child_type_fails_the_step_clearly(h: &Harness) {
    let orchestrator = Orchestrator::builder(h.reopen())
        .recovery(false)
        .build()
        .unwrap();
    let log = Log::default();
    let shops = orchestrator.register(Shop(log.clone()));
    let outcome = shops
        .execute_with_id("o-6", &SagaConfig::default(), order(false, false))
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(
        outcome.error().unwrap().to_string(),
        "step `ship`: child saga `o-6/ship` cannot start: saga `courier` is not registered with this orchestrator"
    );
    assert_eq!(*log.lock().unwrap(), ["reserve", "ship", "release"]);
}

async fn a_forged_end_signal_is_not_believed(h: &Harness) {
    let w = world(h);
    w.shops
        .execute_with_id("o-7", &SagaConfig::default(), order(false, false))
        .await
        .unwrap();
    until(&w, "o-7/ship", SagaState::Waiting).await;
    // As `saga signal o-7 child:ship --json ..` would send it: the child has not ended.
    let forged = saga_runtime::store::NewSignal::new(
        "o-7",
        "child:ship",
        r#"{"child":"o-7/ship","state":"completed"}"#,
        Actor::new("mallory"),
    );
    w.orchestrator.send_signal(forged).await.unwrap();
    assert_eq!(w.orchestrator.recover_expired().await.unwrap(), 1);
    assert_eq!(
        w.orchestrator
            .store()
            .load("o-7")
            .await
            .unwrap()
            .unwrap()
            .state,
        SagaState::Waiting
    );
    let trail = audit_trail(&w.orchestrator, "o-7").await;
    assert!(
        trail.iter().any(|e| e == "signal_rejected:child:ship"),
        "{trail:?}"
    );
    pickup(&w, "o-7/ship").await;
    until(&w, "o-7", SagaState::Completed).await;
}

async fn past_its_deadline_the_step_gives_up_and_cancels_the_child(h: &Harness) {
    let w = world(h);
    let impatient = w.orchestrator.register(Impatient);
    impatient
        .execute_with_id("o-8", &SagaConfig::default(), order(false, false))
        .await
        .unwrap();
    until(&w, "o-8", SagaState::Failed).await;
    let outcome = impatient.outcome("o-8").await.unwrap().unwrap();
    assert_eq!(
        outcome.error().unwrap().to_string(),
        "step `ship`: child saga `o-8/ship` did not end within 300ms"
    );
    let trail = audit_trail(&w.orchestrator, "o-8").await;
    let timed_out: Vec<&String> = trail
        .iter()
        .filter(|e| e.starts_with("step_timed_out"))
        .collect();
    assert_eq!(
        timed_out,
        ["step_timed_out:ship:1"],
        "the deadline is counted once, whatever the retries: {trail:?}"
    );
    assert_eq!(
        trail
            .iter()
            .filter(|e| e.starts_with("child_started"))
            .count(),
        1,
        "{trail:?}"
    );
    let child = w.couriers.outcome("o-8/ship").await.unwrap().unwrap();
    assert_eq!(child.state(), SagaState::Failed, "cancelled by its parent");
    assert_eq!(*w.log.lock().unwrap(), ["label", "void LBL-750"]);
}

conformance!(
    past_its_deadline_the_step_gives_up_and_cancels_the_child,
    a_child_completes_and_its_outcome_is_the_steps_output,
    a_child_that_fails_fails_the_step,
    the_parents_compensation_undoes_a_completed_child,
    cancelling_the_parent_cancels_its_running_child,
    a_rerun_attaches_to_the_same_child,
    an_unregistered_child_type_fails_the_step_clearly,
    a_forged_end_signal_is_not_believed,
);
