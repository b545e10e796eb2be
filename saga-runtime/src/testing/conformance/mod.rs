//! The store conformance suite: every case the memory, SQLite and PostgreSQL stores pass,
//! written against [`SagaStore`] alone, so that a store of your own can be held to the same
//! contract. Each case takes a fresh, empty, migrated store; [`run_all`] runs them all.
//!
//! Topics: `protocol` (create, checkpoint, fencing, step statuses, idempotent start, text),
//! `lease` (claims, renewal, release), `admin` (cancellation requests, operator actions,
//! listing, counts, retention) and `waiting` (waiting rows, signals, undo requests).
//!
//! The cases write rows of a definition named `conformance` with three steps (`a`, `b`,
//! `c`); no saga code runs. A case panics with what it expected, like any test.

mod admin;
mod children;
mod lease;
mod protocol;
mod waiting;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditHeader, EventType, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::status::StepStatus;
use crate::store::{Checkpoint, NewSaga, SagaStore};

/// One case: a fresh store in, a panic out if the store breaks the contract.
pub type Case = for<'a> fn(&'a dyn SagaStore) -> BoxFuture<'a, ()>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("checkpoint_round_trip", protocol::checkpoint_round_trip),
    ("stale_writer_is_fenced", protocol::stale_writer_is_fenced),
    ("idempotent_start", protocol::idempotent_start),
    (
        "step_statuses_round_trip",
        protocol::step_statuses_round_trip,
    ),
    ("text_is_stored_as_given", protocol::text_is_stored_as_given),
    (
        "expired_leases_are_claimed",
        lease::expired_leases_are_claimed,
    ),
    ("claims_are_fenced", lease::claims_are_fenced),
    ("cancellation_requests", admin::cancellation_requests),
    ("operator_actions", admin::operator_actions),
    ("listing_and_counts", admin::listing_and_counts),
    (
        "the_audit_log_is_read_oldest_first",
        admin::the_audit_log_is_read_oldest_first,
    ),
    ("keyset_paging", admin::keyset_paging),
    (
        "waits_are_held_by_nobody_until_due",
        waiting::waits_are_held_by_nobody_until_due,
    ),
    (
        "signals_are_kept_taken_and_consumed",
        waiting::signals_are_kept_taken_and_consumed,
    ),
    (
        "a_wait_for_several_signals_wakes_on_any",
        waiting::a_wait_for_several_signals_wakes_on_any,
    ),
    (
        "a_wake_up_claims_due_waits_only",
        waiting::a_wake_up_claims_due_waits_only,
    ),
    (
        "a_signal_racing_its_wait_makes_it_due",
        waiting::a_signal_racing_its_wait_makes_it_due,
    ),
    (
        "a_duplicate_signal_wakes_nothing",
        waiting::a_duplicate_signal_wakes_nothing,
    ),
    ("undo_requests", waiting::undo_requests),
    (
        "a_childs_end_is_told_with_its_write",
        children::a_childs_end_is_told_with_its_write,
    ),
];

/// Runs every case of [`CASES`], each on a store from `fresh`, and names the case that
/// fails (then panics with its message).
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn SagaStore>>,
{
    for (name, case) in CASES {
        let store = fresh().await;
        eprintln!("conformance: {name}");
        case(&*store).await;
    }
}

/// The definition every case writes rows of.
const DEFINITION: &str = "conformance";
const FINGERPRINT: &str = "c0nf0rm4nc3";

fn header(saga_type: &str) -> Arc<AuditHeader> {
    Arc::new(AuditHeader {
        saga_type: saga_type.to_owned(),
        user_id: Some("user-1".into()),
        ip_address: Some("10.1.2.3".into()),
    })
}

/// A new saga at step `a`, owned by `owner` for `lease` (or by nobody), as a runner
/// creates one.
fn new_saga(id: &str, owner: Option<&str>, lease: Duration) -> NewSaga {
    let mut saga = NewSaga::new(id, DEFINITION, FINGERPRINT, header("conformance"));
    saga.first_step = "a";
    saga.steps = vec![
        if owner.is_some() {
            StepStatus::running(1)
        } else {
            StepStatus::not_started()
        },
        StepStatus::not_started(),
        StepStatus::not_started(),
    ];
    saga.context = r#"{"input":{"id":1},"a":null,"b":null,"c":null}"#.into();
    saga.config = "{}".into();
    saga.owner = owner.map(Arc::from);
    saga.lease = lease;
    saga.events = vec![NewEvent::now(EventType::SagaStarted)];
    saga
}

/// `a` completed, `b` started at attempt 2, by `owner` holding `version`.
fn checkpoint(id: &str, owner: &str, version: i64) -> Checkpoint {
    let mut cp = Checkpoint::new(
        id,
        owner,
        version,
        SagaState::Running,
        header("conformance"),
    );
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
