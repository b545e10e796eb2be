//! Sagas that wait: waiting rows held by nobody and claimed when due; signals kept, taken
//! oldest first, rejected and consumed; undo requests.

use std::time::Duration;

use super::{DEFINITION, header, new_saga};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::status::StepStatus;
use crate::store::{Actor, Checkpoint, ClaimExpired, NewSignal, SagaRecord, SagaStore, Sent};

fn claim_by(owner: &str) -> ClaimExpired {
    ClaimExpired::new(owner, Duration::from_secs(30), vec![DEFINITION], 10)
}

fn accept_all(_: &SagaRecord) -> bool {
    true
}

/// `a` completed; the saga waits, for `wake_after`, to start `b` (for `signal`, if given).
fn waiting(
    id: &str,
    version: i64,
    wake_after: Duration,
    signal: Option<&'static str>,
) -> Checkpoint {
    let mut cp = Checkpoint::new(id, "a", version, SagaState::Waiting, header("conformance"));
    cp.step_index = 1;
    cp.current_step = Some("b");
    cp.steps = vec![
        StepStatus::completed(1, 1),
        StepStatus::waiting(0),
        StepStatus::not_started(),
    ];
    cp.progress = true;
    cp.unless_cancelled = true;
    cp.lease = Duration::from_secs(30);
    cp.wake_after = Some(wake_after);
    cp.waiting_for = signal.map(Into::into);
    cp
}

/// Creates saga `id` at step `a`, accepting the signal `go`.
async fn create_accepting_go(store: &dyn SagaStore, id: &str) {
    let mut saga = new_saga(id, Some("a"), Duration::from_secs(30));
    saga.signals = &["go"];
    store.create(saga).await.expect("create");
}

/// Whether a recovery claim by `owner` finds nothing to take.
async fn claims_nothing(store: &dyn SagaStore, owner: &str) -> bool {
    store
        .claim_expired(claim_by(owner), &accept_all)
        .await
        .expect("claim")
        .is_empty()
}

async fn load(store: &dyn SagaStore, id: &str) -> SagaRecord {
    store.load(id).await.expect("load").expect("the saga")
}

pub(super) fn waits_are_held_by_nobody_until_due(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        for id in ["due", "later"] {
            store
                .create(new_saga(id, Some("a"), Duration::from_secs(30)))
                .await
                .expect("create");
        }
        store
            .save(waiting("due", 1, Duration::ZERO, None))
            .await
            .expect("wait");
        store
            .save(waiting("later", 1, Duration::from_secs(3600), None))
            .await
            .expect("wait");
        let row = load(store, "due").await;
        assert_eq!(row.state, SagaState::Waiting);
        assert_eq!(
            (row.owner, row.lease_expires_at),
            (None, None),
            "held by nobody"
        );
        assert!(row.wake_at.is_some());
        assert_eq!(load(store, "later").await.state, SagaState::Waiting);

        let claimed = store
            .claim_expired(claim_by("b"), &accept_all)
            .await
            .expect("claim");
        let ids: Vec<&str> = claimed.iter().map(|r| r.saga_id.as_str()).collect();
        assert_eq!(ids, ["due"], "only the due one");
        let row = &claimed[0];
        assert_eq!(
            row.state,
            SagaState::Waiting,
            "stays waiting until its claimer writes"
        );
        assert_eq!(row.owner.as_deref(), Some("b"));
        assert_eq!(row.recovery_count, 0, "a wake is no recovery");
        assert!(
            claims_nothing(store, "c").await,
            "the claimer's lease keeps others off"
        );
    })
}

pub(super) fn a_wait_for_several_signals_wakes_on_any(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let ops = Actor::new("ops");
        for id in ["both", "early-stop"] {
            let mut saga = new_saga(id, Some("a"), Duration::from_secs(30));
            saga.signals = &["go", "stop", "go:on"];
            store.create(saga).await.expect("create");
        }
        let mut wait = waiting("both", 1, Duration::from_secs(3600), None);
        wait.waiting_for = Some("go stop".into());
        store.save(wait).await.expect("wait");
        assert_eq!(
            load(store, "both").await.waiting_for.as_deref(),
            Some("go stop")
        );
        // A name that only contains one of them wakes nothing.
        store
            .send_signal(NewSignal::new("both", "go:on", "1", ops.clone()))
            .await
            .expect("send");
        assert!(claims_nothing(store, "b").await, "not due");
        store
            .send_signal(NewSignal::new("both", "stop", "1", ops.clone()))
            .await
            .expect("send");
        let claimed = store
            .claim_expired(claim_by("b"), &accept_all)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "the second name wakes it");

        // One of them pending when the saga goes to wait: due at once.
        store
            .send_signal(NewSignal::new("early-stop", "stop", "1", ops.clone()))
            .await
            .expect("send");
        let mut wait = waiting("early-stop", 1, Duration::from_secs(3600), None);
        wait.waiting_for = Some("go stop".into());
        store.save(wait).await.expect("wait");
        let claimed = store
            .claim_expired(claim_by("c"), &accept_all)
            .await
            .expect("claim");
        let ids: Vec<&str> = claimed.iter().map(|r| r.saga_id.as_str()).collect();
        assert_eq!(ids, ["early-stop"], "due at once");
    })
}

pub(super) fn signals_are_kept_taken_and_consumed(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        create_accepting_go(store, "sig").await;
        assert_eq!(load(store, "sig").await.signals, ["go"]);
        let ops = Actor::new("ops");
        let send = |name: &str, payload: &str, key: Option<&str>| {
            let mut signal = NewSignal::new("sig", name, payload, ops.clone());
            signal.key = key.map(str::to_owned);
            store.send_signal(signal)
        };
        let unknown = send("og", "1", None).await.expect_err("unknown name");
        assert!(
            matches!(unknown, StoreError::UnknownSignal { .. }),
            "{unknown}"
        );
        let not_json = send("go", "{", None).await.expect_err("not JSON");
        assert!(matches!(not_json, StoreError::Invalid { .. }), "{not_json}");
        // Kept before the saga waits for them, once per key, oldest first.
        let Sent::Delivered { id: first } = send("go", "1", Some("k")).await.expect("send") else {
            panic!("the first signal is delivered");
        };
        let again = send("go", "9", Some("k")).await.expect("send");
        assert_eq!(again, Sent::Duplicate { id: first });
        let Sent::Delivered { id: second } = send("go", "2", None).await.expect("send") else {
            panic!("a signal without a key is delivered");
        };
        let next = store.next_signal("sig", "go").await.expect("next");
        assert_eq!(
            next.map(|s| (s.id, s.payload)),
            Some((first, "1".to_owned()))
        );
        // Rejected: never taken again.
        store
            .reject_signal(
                "sig",
                first,
                &header("conformance"),
                crate::audit::NewEvent::now(crate::audit::EventType::SignalRejected),
            )
            .await
            .expect("reject");
        let next = store.next_signal("sig", "go").await.expect("next");
        assert_eq!(next.map(|s| s.id), Some(second));
        // Consumed by the checkpoint that ends its step.
        let mut done = super::checkpoint("sig", "a", 1);
        done.consume_signals = Box::new([second]);
        store.save(done).await.expect("save");
        assert_eq!(store.next_signal("sig", "go").await.expect("next"), None);
        store
            .save(waiting("sig", 2, Duration::from_secs(3600), Some("go")))
            .await
            .expect("wait");
        // A signal for a saga waiting for it makes it due at once.
        assert!(
            store
                .claim_expired(claim_by("b"), &accept_all)
                .await
                .expect("claim")
                .is_empty(),
            "not due yet"
        );
        send("go", "3", None).await.expect("send");
        let claimed = store
            .claim_expired(claim_by("b"), &accept_all)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "woken by its signal");
        // Put to wait for a signal that is already here (its sender saw the saga still
        // running): due at once, whatever happens to the writer next.
        let mut early = new_saga("early", Some("a"), Duration::from_secs(30));
        early.signals = &["go"];
        store.create(early).await.expect("create");
        store
            .send_signal(NewSignal::new("early", "go", "5", ops.clone()))
            .await
            .expect("send");
        store
            .save(waiting("early", 1, Duration::from_secs(3600), Some("go")))
            .await
            .expect("wait");
        let claimed = store
            .claim_expired(claim_by("c"), &accept_all)
            .await
            .expect("claim");
        let ids: Vec<&str> = claimed.iter().map(|r| r.saga_id.as_str()).collect();
        assert_eq!(ids, ["early"], "due at once: its signal was already there");
        let missing = store
            .send_signal(NewSignal::new("nobody", "go", "1", ops.clone()))
            .await
            .expect_err("no saga");
        assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
    })
}

/// A claim on a wake-up (`due_only`) takes due waits and leaves expired leases to the
/// recovery pass.
pub(super) fn a_wake_up_claims_due_waits_only(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("expired", Some("a"), Duration::from_millis(50)))
            .await
            .expect("create");
        store
            .create(new_saga("due", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        store
            .save(waiting("due", 1, Duration::ZERO, None))
            .await
            .expect("wait");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ids = |claimed: Vec<SagaRecord>| -> Vec<String> {
            claimed.into_iter().map(|r| r.saga_id).collect()
        };
        let woken = store
            .claim_expired(claim_by("b").due_only(), &accept_all)
            .await
            .expect("claim");
        assert_eq!(ids(woken), ["due"], "a wake-up takes the due wait alone");
        let recovered = store
            .claim_expired(claim_by("c"), &accept_all)
            .await
            .expect("claim");
        assert_eq!(
            ids(recovered),
            ["expired"],
            "the recovery pass takes the lease"
        );
    })
}

/// A signal sent while its saga is being put to wait for it: once both have committed, the
/// saga is due, whichever went first. The sender may see the saga still running and not
/// wake it; then the wait must see the signal, even when it was written while the sender
/// held the saga's row (on PostgreSQL, a statement whose snapshot predates the signal).
/// Otherwise the saga sleeps until its deadline with its signal beside it, if the runner
/// that wrote the wait dies before it looks again.
pub(super) fn a_signal_racing_its_wait_makes_it_due(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let sender = Actor::new("ops");
        for n in 0..100 {
            let id = format!("race-{n}");
            create_accepting_go(store, &id).await;
            let put_to_wait = store.save(waiting(&id, 1, Duration::from_secs(3600), Some("go")));
            let signal = store.send_signal(NewSignal::new(&id, "go", "1", sender.clone()));
            let (written, delivered) = tokio::join!(put_to_wait, signal);
            written.expect("wait");
            delivered.expect("send");
            let this = |row: &SagaRecord| row.saga_id == id;
            let claimed = store
                .claim_expired(claim_by("b"), &this)
                .await
                .expect("claim");
            assert_eq!(
                claimed.len(),
                1,
                "{id}: signalled while it was put to wait for the signal, yet not due"
            );
        }
    })
}

/// A duplicate of a signal already taken (a sender retrying with the same key) is refused,
/// and makes nothing due: a saga waiting for that signal again sleeps on. Were it woken,
/// each retry would cost a claim and a look for a signal that is not there.
pub(super) fn a_duplicate_signal_wakes_nothing(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        create_accepting_go(store, "dup").await;
        let send = || {
            let mut signal = NewSignal::new("dup", "go", "1", Actor::new("ops"));
            signal.key = Some("retry".to_owned());
            store.send_signal(signal)
        };
        let Sent::Delivered { id } = send().await.expect("send") else {
            panic!("the first signal is delivered");
        };
        // Step `a` takes it and ends; the saga then waits for another `go`.
        let mut took = Checkpoint::new("dup", "a", 1, SagaState::Running, header("conformance"));
        took.consume_signals = Box::new([id]);
        took.progress = true;
        took.lease = Duration::from_secs(30);
        store.save(took).await.expect("take the signal");
        store
            .save(waiting("dup", 2, Duration::from_secs(3600), Some("go")))
            .await
            .expect("wait");
        assert_eq!(send().await.expect("send again"), Sent::Duplicate { id });
        assert!(
            claims_nothing(store, "b").await,
            "a duplicate made the wait due"
        );
        let row = load(store, "dup").await;
        assert_eq!((row.state, row.owner), (SagaState::Waiting, None));
    })
}

pub(super) fn undo_requests(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("undo", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        let ops = Actor::new("ops");
        let running = store
            .request_undo("undo", "too soon", &ops)
            .await
            .expect_err("a running saga cannot be undone");
        assert!(
            matches!(running, StoreError::InvalidState { .. }),
            "{running}"
        );
        let mut done = Checkpoint::new("undo", "a", 1, SagaState::Completed, header("conformance"));
        done.steps = vec![
            StepStatus::completed(1, 1),
            StepStatus::completed(1, 2),
            StepStatus::completed(1, 3),
        ];
        done.step_index = 2;
        store.save(done).await.expect("complete");
        let row = store
            .request_undo("undo", "sent back", &ops)
            .await
            .expect("undo");
        assert_eq!(row.state, SagaState::Compensating);
        assert_eq!(row.error.as_deref(), Some("undone: sent back"));
        assert_eq!(row.owner, None);
        let claimed = store
            .claim_expired(claim_by("b"), &accept_all)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "runnable at once");
    })
}
