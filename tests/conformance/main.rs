//! One conformance suite, run against every store: the memory store, a SQLite file, and
//! PostgreSQL (in a schema of its own; set `SAGA_TEST_POSTGRES_URL`, which CI does).
//!
//! The store contract itself is `saga_runtime::testing::conformance` (the `test-util`
//! feature), which a store of your own can run too; this file runs it on our three stores,
//! then the cases that need sagas running or rows tampered with, by topic: `recovery`,
//! `audit`, `hostile` and `operator`.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod hostile;
mod operator;
mod recovery;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use saga_runtime::audit::{AuditHeader, NewEvent};
use saga_runtime::prelude::*;
use saga_runtime::store::{Checkpoint, NewSaga};
use saga_runtime::{EventType, Executor, StepStatus, StoreError};
use support::stores::{Backend, Harness};
use support::{Action, Input, Script, Scripted, audit_trail};

use self::audit::{exact_audit_sequences, listing_and_the_stuck_query};
use self::hostile::{
    corrupted_rows_give_errors_and_stay_unchanged, hostile_strings_are_stored_verbatim,
};
use self::operator::operator_actions;
use self::recovery::{
    recover_refuses_a_live_lease_and_returns_finished_sagas,
    recovery_continues_an_interrupted_compensation, recovery_reruns_an_interrupted_step,
    too_many_recoveries_park_the_saga,
};

fn header(saga_type: &str) -> Arc<AuditHeader> {
    Arc::new(AuditHeader {
        saga_type: saga_type.to_owned(),
        user_id: Some("user-1".into()),
        ip_address: Some("10.1.2.3".into()),
    })
}

/// A new `scripted` saga at step `a`, as a runner creates one.
fn new_saga(id: &str, owner: Option<&str>, lease: Duration) -> NewSaga {
    let mut saga = NewSaga::new(
        id,
        "scripted",
        <Scripted as Saga>::DEFINITION.fingerprint(),
        header("scripted"),
    );
    saga.first_step = "a";
    saga.steps = vec![
        StepStatus::running(1),
        StepStatus::not_started(),
        StepStatus::not_started(),
    ];
    saga.context = r#"{"input":{"id":1},"a":null,"b":null,"c":null}"#.into();
    saga.config = serde_json::to_string(&SagaConfig::default()).unwrap();
    saga.owner = owner.map(Arc::from);
    saga.lease = lease;
    saga.events = vec![NewEvent::now(EventType::SagaStarted)];
    saga
}

/// `a` completed and `b` started at attempt 2, by `owner` holding `version`.
fn checkpoint(id: &str, owner: &str, version: i64) -> Checkpoint {
    let mut cp = Checkpoint::new(id, owner, version, SagaState::Running, header("scripted"));
    cp.step_index = 1;
    cp.current_step = Some("b");
    cp.attempt = 2;
    cp.steps = vec![
        StepStatus::completed(1, 1),
        StepStatus::running(2),
        StepStatus::not_started(),
    ];
    cp.context = Some(r#"{"input":{"id":1},"a":7,"b":null,"c":null}"#.into());
    cp.progress = true;
    cp.unless_cancelled = true;
    cp.lease = Duration::from_secs(30);
    cp.events = vec![NewEvent::now(EventType::StepCompleted).step("a").attempt(1)];
    cp
}

/// An orchestrator over `store` as runner `name`, with the scripted saga registered.
fn runner(
    store: Arc<dyn SagaStore>,
    name: &str,
    lease: Duration,
    script: &Arc<Script>,
) -> (Orchestrator, Executor<Scripted>) {
    let orchestrator = Orchestrator::builder(store)
        .runner_id(name)
        .lease(lease)
        .recovery(false)
        .jitter_seed(3)
        .build()
        .unwrap();
    let _ = script.orchestrator.set(orchestrator.clone());
    let executor = orchestrator.register(Scripted(script.clone()));
    (orchestrator, executor)
}

/// The store contract (`saga_runtime::testing::conformance`), each case on a fresh store.
async fn store_contract(backend: Backend) {
    for (name, case) in saga_runtime::testing::conformance::CASES {
        let Some(harness) = Harness::open(backend).await else {
            return;
        };
        eprintln!("store contract on {backend:?}: {name}");
        case(&*harness.store).await;
        harness.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_on_memory() {
    store_contract(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_on_sqlite() {
    store_contract(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_on_postgres() {
    store_contract(Backend::Postgres).await;
}

conformance!(
    recovery_reruns_an_interrupted_step,
    recovery_continues_an_interrupted_compensation,
    recover_refuses_a_live_lease_and_returns_finished_sagas,
    too_many_recoveries_park_the_saga,
    exact_audit_sequences,
    listing_and_the_stuck_query,
    corrupted_rows_give_errors_and_stay_unchanged,
    hostile_strings_are_stored_verbatim,
    operator_actions,
);
