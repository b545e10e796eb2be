//! One conformance suite, run against every store: the memory store, a SQLite file, and
//! PostgreSQL (in a schema of its own; set `SAGA_TEST_POSTGRES_URL`, which CI does).

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use saga_runtime::audit::{AuditHeader, NewEvent};
use saga_runtime::prelude::*;
use saga_runtime::store::{Checkpoint, Claim, ClaimExpired, Created, NewSaga, Saved};
use saga_runtime::{EventType, Executor, SagaStore, StepStatus, StoreError};
use support::stores::{Backend, Harness};
use support::{Action, Input, Script, Scripted, audit_trail};

fn header(saga_type: &str) -> Arc<AuditHeader> {
    Arc::new(AuditHeader {
        saga_type: saga_type.to_owned(),
        user_id: Some("user-1".into()),
        ip_address: Some("10.1.2.3".into()),
    })
}

fn new_saga(id: &str, owner: Option<&str>, lease: Duration) -> NewSaga {
    NewSaga {
        saga_id: id.into(),
        definition: "scripted",
        fingerprint: <Scripted as Saga>::DEFINITION.fingerprint(),
        first_step: "a",
        steps: vec![
            StepStatus::running(1),
            StepStatus::not_started(),
            StepStatus::not_started(),
        ],
        context: r#"{"input":{"id":1},"a":null,"b":null,"c":null}"#.into(),
        config: serde_json::to_string(&SagaConfig::default()).unwrap(),
        header: header("scripted"),
        owner: owner.map(Arc::from),
        lease,
        events: vec![NewEvent::now(EventType::SagaStarted)],
    }
}

fn checkpoint(id: &str, owner: &str, version: i64) -> Checkpoint {
    Checkpoint {
        saga_id: id.into(),
        owner: owner.into(),
        expected_version: version,
        state: SagaState::Running,
        step_index: 1,
        current_step: Some("b"),
        attempt: 2,
        steps: vec![
            StepStatus::completed(1, 1),
            StepStatus::running(2),
            StepStatus::not_started(),
        ],
        context: Some(r#"{"input":{"id":1},"a":7,"b":null,"c":null}"#.into()),
        error: None,
        failed_step: None,
        progress: true,
        parked_from: None,
        unless_cancelled: true,
        clear_cancel: false,
        lease: Duration::from_secs(30),
        header: header("scripted"),
        events: vec![NewEvent::now(EventType::StepCompleted).step("a").attempt(1)],
    }
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

async fn checkpoint_round_trip(h: &Harness) {
    let store = &h.store;
    let before = SystemTime::now() - Duration::from_secs(1);
    assert_eq!(
        store
            .create(new_saga("rt", Some("runner-a"), Duration::from_secs(30)))
            .await
            .unwrap(),
        Created::New { version: 1 }
    );
    let created = store.load("rt").await.unwrap().unwrap();
    assert_eq!(created.state, SagaState::Running);
    assert_eq!(
        (created.step_index, created.attempt, created.version),
        (0, 1, 1)
    );
    assert_eq!(created.current_step.as_deref(), Some("a"));
    assert_eq!(created.definition, "scripted");
    assert_eq!(created.owner.as_deref(), Some("runner-a"));
    assert!(created.created_at >= before);
    assert!(created.lease_expires_at.unwrap() > SystemTime::now() + Duration::from_secs(20));

    let mut cp = checkpoint("rt", "runner-a", 1);
    cp.error = Some("it's broken; really".into());
    cp.failed_step = Some("b".into());
    assert_eq!(store.save(cp).await.unwrap(), Saved::Written { version: 2 });
    let saved = store.load("rt").await.unwrap().unwrap();
    assert_eq!((saved.step_index, saved.attempt, saved.version), (1, 2, 2));
    assert_eq!(saved.current_step.as_deref(), Some("b"));
    let context: serde_json::Value = serde_json::from_str(&saved.context).unwrap();
    assert_eq!(context["a"], 7);
    assert_eq!(saved.error.as_deref(), Some("it's broken; really"));
    assert_eq!(saved.failed_step.as_deref(), Some("b"));
    assert_eq!(saved.user_id.as_deref(), Some("user-1"));
    assert_eq!(saved.ip_address.as_deref(), Some("10.1.2.3"));
    assert!(saved.updated_at >= created.updated_at);

    // `context: None` keeps the stored context.
    let mut cp = checkpoint("rt", "runner-a", 2);
    cp.context = None;
    cp.state = SagaState::Compensating;
    cp.step_index = 0;
    store.save(cp).await.unwrap();
    let kept = store.load("rt").await.unwrap().unwrap();
    assert_eq!(kept.context, saved.context);
    assert_eq!(kept.state, SagaState::Compensating);
    assert!(store.load("missing").await.unwrap().is_none());
}

async fn stale_writer_is_fenced(h: &Harness) {
    let store = &h.store;
    store
        .create(new_saga("fence", Some("a"), Duration::from_secs(30)))
        .await
        .unwrap();
    store.save(checkpoint("fence", "a", 1)).await.unwrap();
    let before = h.raw_row("fence").await;
    let err = store.save(checkpoint("fence", "a", 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                expected: 1,
                found: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        h.raw_row("fence").await,
        before,
        "a fenced write changes nothing"
    );
    let err = store.save(checkpoint("nobody", "a", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn lease_expiry_lets_a_second_runner_claim(h: &Harness) {
    let store = &h.store;
    store
        .create(new_saga("lease", Some("a"), Duration::from_millis(300)))
        .await
        .unwrap();
    let accept_all = |_: &saga_runtime::SagaRecord| true;
    let request = || ClaimExpired {
        owner: "b".into(),
        lease: Duration::from_secs(30),
        definitions: vec!["scripted"],
        limit: 10,
    };
    assert!(
        store
            .claim_expired(request(), &accept_all)
            .await
            .unwrap()
            .is_empty(),
        "lease still live"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let claimed = store.claim_expired(request(), &accept_all).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].owner.as_deref(), Some("b"));
    assert_eq!((claimed[0].version, claimed[0].recovery_count), (2, 1));
    // The old owner is fenced off; its renewals are refused.
    let err = store.save(checkpoint("lease", "a", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(
        store
            .renew("a", &["lease".into()], Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .renew("b", &["lease".into()], Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        1
    );
    // A live lease is not claimed again, and other definitions are left alone.
    assert!(
        store
            .claim_expired(request(), &accept_all)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .create(new_saga("other", Some("a"), Duration::ZERO))
        .await
        .unwrap();
    let mut only_others = request();
    only_others.definitions = vec!["another_definition"];
    assert!(
        store
            .claim_expired(only_others, &accept_all)
            .await
            .unwrap()
            .is_empty()
    );
    // Rows the filter refuses are not touched.
    let before = h.raw_row("other").await;
    assert!(
        store
            .claim_expired(request(), &|_| false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.raw_row("other").await, before);
    // A claim by id is fenced by the version read.
    let claim = Claim {
        saga_id: "other".into(),
        owner: "c".into(),
        expected_version: 1,
        lease: Duration::from_secs(5),
    };
    assert_eq!(store.claim(claim.clone()).await.unwrap().version, 2);
    assert!(matches!(
        store.claim(claim).await.unwrap_err(),
        StoreError::Fenced { .. }
    ));
    // Releasing ends the lease now.
    store.release("c", &["other".into()]).await.unwrap();
    assert!(
        store
            .load("other")
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at
            .unwrap()
            <= SystemTime::now()
    );
}

/// Runs `id` on runner A until `name` has started `attempt`, then kills runner A's task
/// (as a crash would) and lets its lease expire.
async fn crash_during(
    h: &Harness,
    id: &'static str,
    script: &Arc<Script>,
    name: &'static str,
    attempts: usize,
) {
    let (_a, executor) = runner(h.reopen(), "runner-a", Duration::from_millis(300), script);
    let task = tokio::spawn(async move {
        executor
            .execute_with_id(id, &SagaConfig::default(), Input { id: 1 })
            .await
    });
    for _ in 0..500 {
        if script.names().iter().filter(|n| **n == name).count() >= attempts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(400)).await;
}

async fn recovery_reruns_an_interrupted_step(h: &Harness) {
    let first = Script::new();
    first.on("b", [Action::Hang(Duration::from_secs(30))]);
    crash_during(h, "crash-step", &first, "b", 1).await;
    assert_eq!(first.names(), ["a", "b"]);

    let second = Script::new();
    let (b, _) = runner(h.reopen(), "runner-b", Duration::from_secs(30), &second);
    assert_eq!(b.recover_expired().await.unwrap(), 1);
    assert_eq!(
        second.names(),
        ["b", "c"],
        "a is not re-run; the interrupted b is"
    );
    assert_eq!(second.log()[0].attempt, 2, "the interrupted attempt counts");
    let record = h.store.load("crash-step").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Completed);
    assert_eq!(record.owner.as_deref(), Some("runner-b"));
    let trail = audit_trail(&b, "crash-step").await;
    assert_eq!(
        trail,
        [
            "saga_started",
            "step_started:a:1",
            "step_completed:a:1",
            "step_started:b:1",
            "saga_recovered:1",
            "step_started:b:2",
            "step_completed:b:2",
            "step_started:c:1",
            "step_completed:c:1",
            "saga_completed",
        ]
    );
}

async fn recovery_continues_an_interrupted_compensation(h: &Harness) {
    let first = Script::new();
    first.on("c", [Action::Permanent]);
    first.on("undo_b", [Action::Hang(Duration::from_secs(30))]);
    crash_during(h, "crash-comp", &first, "undo_b", 1).await;
    assert_eq!(first.names(), ["a", "b", "c", "undo_b"]);

    let second = Script::new();
    let (b, executor) = runner(h.reopen(), "runner-b", Duration::from_secs(30), &second);
    let outcome = executor.recover("crash-comp").await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(second.names(), ["undo_b", "undo_a"]);
    assert_eq!(second.log()[0].attempt, 2);
    assert_eq!(outcome.error().unwrap().step(), Some("c"));
    let trail = audit_trail(&b, "crash-comp").await;
    assert_eq!(
        trail[trail.len() - 6..],
        [
            "saga_recovered:1",
            "compensation_started:b:2",
            "compensation_executed:b:2",
            "compensation_started:a:1",
            "compensation_executed:a:1",
            "saga_failed",
        ]
    );
}

async fn recover_refuses_a_live_lease_and_returns_finished_sagas(h: &Harness) {
    h.store
        .create(new_saga("live", Some("someone"), Duration::from_mins(1)))
        .await
        .unwrap();
    let script = Script::new();
    let (_, executor) = runner(h.reopen(), "me", Duration::from_secs(30), &script);
    let err = executor.recover("live").await.unwrap_err();
    assert!(matches!(err, SagaError::Leased { .. }), "{err}");
    let err = executor.recover("nothing-here").await.unwrap_err();
    assert!(
        matches!(err, SagaError::Store(StoreError::NotFound { .. })),
        "{err}"
    );
    executor
        .execute_with_id("done", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    let again = executor.recover("done").await.unwrap();
    assert!(again.is_completed() && again.is_existing());
    assert_eq!(script.names(), ["a", "b", "c"]);
}

async fn idempotent_start(h: &Harness) {
    let store = &h.store;
    store
        .create(new_saga("once", Some("a"), Duration::from_secs(30)))
        .await
        .unwrap();
    store.save(checkpoint("once", "a", 1)).await.unwrap();
    match store
        .create(new_saga("once", Some("b"), Duration::from_secs(30)))
        .await
        .unwrap()
    {
        Created::Existing(record) => {
            assert_eq!(record.version, 2);
            assert_eq!(record.owner.as_deref(), Some("a"));
        }
        other @ Created::New { .. } => panic!("expected the existing saga, got {other:?}"),
    }
    let trail = h
        .store
        .audit_log(&AuditQuery::new().saga_id("once").event_type("saga_started"))
        .await
        .unwrap();
    assert_eq!(trail.len(), 1, "the second start wrote nothing");
}

async fn exact_audit_sequences(h: &Harness) {
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    script.on("undo_b", [Action::Fail, Action::Fail]);
    let (orchestrator, executor) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    let config = SagaConfig::new("audited")
        .user_id("u-9")
        .ip_address("192.0.2.1");
    let ok_script = Script::new();
    let (_, ok_executor) = runner(h.reopen(), "r2", Duration::from_secs(30), &ok_script);
    ok_executor
        .execute_with_id("seq-ok", &config, Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(
        audit_trail(&orchestrator, "seq-ok").await,
        [
            "saga_started",
            "step_started:a:1",
            "step_completed:a:1",
            "step_started:b:1",
            "step_completed:b:1",
            "step_started:c:1",
            "step_completed:c:1",
            "saga_completed",
        ]
    );
    let outcome = executor
        .execute_with_id("seq-cf", &config, Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::CompensationFailed);
    assert_eq!(
        audit_trail(&orchestrator, "seq-cf").await,
        [
            "saga_started",
            "step_started:a:1",
            "step_completed:a:1",
            "step_started:b:1",
            "step_completed:b:1",
            "step_started:c:1",
            "step_failed:c:1",
            "compensation_started:b:1",
            "compensation_failed:b:1",
            "compensation_started:b:2",
            "compensation_failed:b:2",
            "saga_compensation_failed:b",
        ]
    );
    let comp_script = Script::new();
    comp_script.on("b", [Action::Permanent]);
    let (_, comp_executor) = runner(h.reopen(), "r3", Duration::from_secs(30), &comp_script);
    comp_executor
        .execute_with_id("seq-comp", &config, Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(
        audit_trail(&orchestrator, "seq-comp").await,
        [
            "saga_started",
            "step_started:a:1",
            "step_completed:a:1",
            "step_started:b:1",
            "step_failed:b:1",
            "compensation_started:a:1",
            "compensation_executed:a:1",
            "saga_failed",
        ]
    );
    let rows = orchestrator
        .audit_log(&AuditQuery::new().user_id("u-9"))
        .await
        .unwrap();
    assert!(rows.len() >= 28);
    assert!(
        rows.iter()
            .all(|r| r.saga_type == "audited" && r.ip_address.as_deref() == Some("192.0.2.1"))
    );
    // The seed's three queries, from Rust.
    let failed = orchestrator
        .audit_log(
            &AuditQuery::new()
                .event_type("saga_failed")
                .since(SystemTime::now() - Duration::from_hours(24)),
        )
        .await
        .unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|r| r.saga_id.as_str())
            .collect::<Vec<_>>(),
        ["seq-comp"]
    );
    let compensations = orchestrator
        .audit_log(
            &AuditQuery::new()
                .event_type_prefix("compensation_")
                .user_id("u-9"),
        )
        .await
        .unwrap();
    assert_eq!(compensations.len(), 6);
    let timeline = orchestrator
        .audit_log(&AuditQuery::new().saga_id("seq-comp"))
        .await
        .unwrap();
    assert!(
        timeline
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    assert_eq!(
        orchestrator
            .audit_log(&AuditQuery::new().saga_id("seq-comp").limit(3))
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn corrupted_rows_give_errors_and_stay_unchanged(h: &Harness) {
    let script = Script::new();
    let (orchestrator, executor) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    for id in [
        "bad-json",
        "bad-shape",
        "bad-fingerprint",
        "bad-state",
        "bad-size",
    ] {
        h.store
            .create(new_saga(id, None, Duration::ZERO))
            .await
            .unwrap();
    }
    // Not JSON at all (the JSONB column of PostgreSQL cannot hold that: it gets valid JSON
    // of the wrong shape instead).
    let bad_json = if h.backend == Backend::Postgres {
        r#"UPDATE saga_checkpoints SET context = '{"input": "seven"}' WHERE saga_id = $1"#
    } else {
        "UPDATE saga_checkpoints SET context = '{not json' WHERE saga_id = $1"
    };
    h.tamper("bad-json", bad_json, |r| r.context = "{not json".into())
        .await;
    h.tamper(
        "bad-shape",
        r#"UPDATE saga_checkpoints SET context = '{"a": 1}' WHERE saga_id = $1"#,
        |r| r.context = r#"{"a": 1}"#.into(),
    )
    .await;
    h.tamper(
        "bad-fingerprint",
        "UPDATE saga_checkpoints SET fingerprint = '0000' WHERE saga_id = $1",
        |r| r.fingerprint = "0000".into(),
    )
    .await;
    for id in ["bad-json", "bad-shape"] {
        let before = h.raw_row(id).await;
        let err = executor.recover(id).await.unwrap_err();
        assert!(matches!(err, SagaError::Decode { .. }), "{id}: {err}");
        assert_eq!(h.raw_row(id).await, before, "{id} unchanged");
    }
    // A context above the limit (1 MiB by default) is refused before serde reads it.
    let oversized = if h.backend == Backend::Postgres {
        "UPDATE saga_checkpoints SET context = jsonb_build_object('pad', repeat('x', 2200000)) \
         WHERE saga_id = $1"
    } else {
        "UPDATE saga_checkpoints SET context = '{\"pad\":\"' || hex(zeroblob(1100000)) || '\"}' \
         WHERE saga_id = $1"
    };
    h.tamper("bad-size", oversized, |r| {
        r.context = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2_200_000));
    })
    .await;
    let before = h.raw_row("bad-size").await;
    let err = executor.recover("bad-size").await.unwrap_err();
    assert!(
        matches!(err, SagaError::ContextTooLarge { limit: 1_048_576, size, .. } if size > 2_000_000),
        "{err}"
    );
    assert_eq!(h.raw_row("bad-size").await, before, "bad-size unchanged");

    let before = h.raw_row("bad-fingerprint").await;
    let err = executor.recover("bad-fingerprint").await.unwrap_err();
    assert!(
        matches!(err, SagaError::FingerprintMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(h.raw_row("bad-fingerprint").await, before);

    if h.backend != Backend::Memory {
        // The memory store holds typed states: an unknown one cannot exist there.
        h.tamper(
            "bad-state",
            "UPDATE saga_checkpoints SET state = 'exploded' WHERE saga_id = $1",
            |_| {},
        )
        .await;
        let before = h.raw_row("bad-state").await;
        let err = h.store.load("bad-state").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("exploded")),
            "{err}"
        );
        assert!(matches!(
            executor.recover("bad-state").await.unwrap_err(),
            SagaError::Store(StoreError::Corrupt { .. })
        ));
        assert_eq!(h.raw_row("bad-state").await, before);
    }
    // The recovery loop leaves all of them as they are and runs nothing.
    let rows_before = [
        h.raw_row("bad-json").await,
        h.raw_row("bad-shape").await,
        h.raw_row("bad-fingerprint").await,
        h.raw_row("bad-size").await,
    ];
    let recovered = orchestrator.recover_expired().await.unwrap();
    assert_eq!(
        recovered,
        usize::from(h.backend == Backend::Memory),
        "only the untouched `bad-state` row of the memory store is runnable"
    );
    assert_eq!(
        [
            h.raw_row("bad-json").await,
            h.raw_row("bad-shape").await,
            h.raw_row("bad-fingerprint").await,
            h.raw_row("bad-size").await,
        ],
        rows_before
    );
}

async fn hostile_strings_are_stored_verbatim(h: &Harness) {
    let script = Script::new();
    let (orchestrator, executor) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    let saga_type = "type'); DROP TABLE saga_checkpoints; -- ünïcødé 🚀";
    let user = "o'brien\"; DELETE FROM saga_audit_logs; --";
    let ip = "::1'; SELECT 1; -- 東京";
    let config = SagaConfig::new(saga_type).user_id(user).ip_address(ip);
    let id = "id with 'quotes'; and ; semicolons ✓";
    let outcome = executor
        .execute_with_id(id, &config, Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    let record = orchestrator.load(id).await.unwrap().unwrap();
    assert_eq!(record.saga_id, id);
    assert_eq!(record.saga_type, saga_type);
    assert_eq!(record.user_id.as_deref(), Some(user));
    assert_eq!(record.ip_address.as_deref(), Some(ip));
    let rows = orchestrator
        .audit_log(&AuditQuery::new().saga_id(id))
        .await
        .unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r.saga_type == saga_type
        && r.user_id.as_deref() == Some(user)
        && r.ip_address.as_deref() == Some(ip)));
    let listed = h
        .store
        .list(&saga_runtime::store::SagaQuery::new().saga_type(saga_type))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn cancellation_requests(h: &Harness) {
    let store = &h.store;
    store
        .create(new_saga("c1", Some("a"), Duration::from_secs(30)))
        .await
        .unwrap();
    let actor = Actor::new("ops'; --");
    store
        .request_cancel("c1", "customer asked", &actor)
        .await
        .unwrap();
    // The owner keeps ownership (the version does not move); its next forward write sees
    // the request and writes nothing.
    assert_eq!(
        store.save(checkpoint("c1", "a", 1)).await.unwrap(),
        Saved::Cancelled {
            reason: "customer asked".into()
        }
    );
    let mut compensate = checkpoint("c1", "a", 1);
    compensate.state = SagaState::Compensating;
    compensate.unless_cancelled = false;
    compensate.clear_cancel = true;
    assert_eq!(
        store.save(compensate).await.unwrap(),
        Saved::Written { version: 2 }
    );
    assert_eq!(
        store.load("c1").await.unwrap().unwrap().cancel_requested,
        None
    );
    let err = store
        .request_cancel("c1", "again", &actor)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidState {
                state: SagaState::Compensating,
                ..
            }
        ),
        "{err}"
    );
    let err = store.request_cancel("nope", "x", &actor).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let rows = store
        .audit_log(
            &AuditQuery::new()
                .saga_id("c1")
                .event_type("cancel_requested"),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_id.as_deref(), Some("ops'; --"));
    assert_eq!(rows[0].error_message.as_deref(), Some("customer asked"));
}

async fn listing_and_the_stuck_query(h: &Harness) {
    let script = Script::new();
    let (_, executor) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    executor
        .execute_with_id("l1", &SagaConfig::new("kind_a"), Input { id: 1 })
        .await
        .unwrap();
    executor
        .execute_with_id("l2", &SagaConfig::new("kind_b"), Input { id: 2 })
        .await
        .unwrap();
    h.store
        .create(new_saga("l3", Some("x"), Duration::from_secs(30)))
        .await
        .unwrap();
    let q = saga_runtime::store::SagaQuery::new;
    assert_eq!(h.store.list(&q()).await.unwrap().len(), 3);
    assert_eq!(
        h.store
            .list(&q().state(SagaState::Completed))
            .await
            .unwrap()
            .len(),
        2
    );
    let kind_a = h.store.list(&q().saga_type("kind_a")).await.unwrap();
    assert_eq!(
        kind_a
            .iter()
            .map(|r| r.saga_id.as_str())
            .collect::<Vec<_>>(),
        ["l1"]
    );
    assert_eq!(h.store.list(&q().limit(1)).await.unwrap().len(), 1);
    let future = SystemTime::now() + Duration::from_hours(1);
    let stuck = h
        .store
        .list(&q().state(SagaState::Running).updated_before(future))
        .await
        .unwrap();
    assert_eq!(
        stuck.iter().map(|r| r.saga_id.as_str()).collect::<Vec<_>>(),
        ["l3"]
    );
    let past = SystemTime::now() - Duration::from_hours(1);
    assert!(
        h.store
            .list(&q().state(SagaState::Running).updated_before(past))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn too_many_recoveries_park_the_saga(h: &Harness) {
    h.store
        .create(new_saga("restless", None, Duration::ZERO))
        .await
        .unwrap();
    // Five claims without progress already happened (the default limit is five).
    h.tamper(
        "restless",
        "UPDATE saga_checkpoints SET recovery_count = 5, attempt = 1 WHERE saga_id = $1",
        |r| {
            r.recovery_count = 5;
            r.attempt = 1;
        },
    )
    .await;
    let script = Script::new();
    let (orchestrator, _) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    assert!(script.names().is_empty(), "a parked saga runs nothing");
    let record = h.store.load("restless").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Parked);
    assert_eq!(record.parked_from, Some(SagaState::Running));
    assert!(
        record
            .error
            .unwrap()
            .contains("recovered 6 times without progress")
    );
    let trail = audit_trail(&orchestrator, "restless").await;
    assert_eq!(
        trail[trail.len() - 2..],
        ["saga_recovered:1", "saga_parked"]
    );
    // Parked sagas are not claimed again.
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 0);
}

async fn operator_actions(h: &Harness) {
    let store = &h.store;
    let ops = Actor::new("alice");
    // A compensation that gave up, resumed by a person: compensation starts over.
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    script.on("undo_b", [Action::Fail, Action::Fail]);
    let (orchestrator, executor) = runner(h.reopen(), "r", Duration::from_secs(30), &script);
    let outcome = executor
        .execute_with_id("op-cf", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::CompensationFailed);
    let resumed = store
        .resume("op-cf", "refund service fixed", &ops)
        .await
        .unwrap();
    assert_eq!(
        (resumed.state, resumed.attempt, resumed.owner.as_deref()),
        (SagaState::Compensating, 0, None)
    );
    assert!(resumed.lease_expires_at.unwrap() <= SystemTime::now());
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    assert_eq!(
        store.load("op-cf").await.unwrap().unwrap().state,
        SagaState::Failed
    );
    assert_eq!(
        script.names()[script.names().len() - 2..],
        ["undo_b", "undo_a"]
    );
    let trail = audit_trail(&orchestrator, "op-cf").await;
    let resumed_at = trail.iter().position(|e| e == "operator_resumed").unwrap();
    assert_eq!(
        trail[resumed_at + 1..resumed_at + 3],
        ["saga_recovered:0", "compensation_started:b:1"]
    );
    let row = store
        .audit_log(
            &AuditQuery::new()
                .saga_id("op-cf")
                .event_type("operator_resumed"),
        )
        .await
        .unwrap();
    assert_eq!(row[0].user_id.as_deref(), Some("alice"));
    assert_eq!(
        row[0].error_message.as_deref(),
        Some("refund service fixed")
    );

    // Finished sagas can be neither resumed nor failed.
    let err = store
        .resume("op-cf", "refund service fixed", &ops)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidState {
                state: SagaState::Failed,
                ..
            }
        ),
        "{err}"
    );
    let err = store.mark_failed("op-cf", "x", &ops).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err}");
    assert!(matches!(
        store.resume("nope", "x", &ops).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));

    // A running saga marked failed by hand: its owner is fenced off.
    store
        .create(new_saga("op-fail", Some("zombie"), Duration::from_secs(60)))
        .await
        .unwrap();
    let failed = store
        .mark_failed("op-fail", "Timeout - manually compensated", &ops)
        .await
        .unwrap();
    assert_eq!(failed.state, SagaState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("Timeout - manually compensated")
    );
    assert!(matches!(
        store
            .save(checkpoint("op-fail", "zombie", 1))
            .await
            .unwrap_err(),
        StoreError::Fenced { .. }
    ));

    // A stuck running saga keeps its attempt count when resumed.
    store
        .create(new_saga("op-stuck", Some("gone"), Duration::from_secs(600)))
        .await
        .unwrap();
    let stuck = store.resume("op-stuck", "owner died", &ops).await.unwrap();
    assert_eq!(
        (stuck.state, stuck.attempt, stuck.owner),
        (SagaState::Running, 1, None)
    );

    // Statistics, then retention.
    let stats = store
        .stats(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    let count = |state| {
        stats
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum::<u64>()
    };
    assert_eq!(
        (count(SagaState::Failed), count(SagaState::Running)),
        (2, 1)
    );
    assert_eq!(
        stats.iter().map(|c| c.stuck).sum::<u64>(),
        1,
        "only the running one can be stuck"
    );
    let dry = store
        .prune(SystemTime::now() + Duration::from_secs(1), true, &ops)
        .await
        .unwrap();
    assert_eq!(dry.sagas, 2);
    assert!(dry.audit_rows > 10);
    assert!(
        store.load("op-fail").await.unwrap().is_some(),
        "a dry run deletes nothing"
    );
    let none = store
        .prune(SystemTime::now() - Duration::from_secs(3600), false, &ops)
        .await
        .unwrap();
    assert_eq!((none.sagas, none.audit_rows), (0, 0));
    let done = store
        .prune(SystemTime::now() + Duration::from_secs(1), false, &ops)
        .await
        .unwrap();
    // The prune that removed nothing still left a row saying who ran it.
    assert_eq!(
        (done.sagas, done.audit_rows),
        (dry.sagas, dry.audit_rows + 1)
    );
    assert!(store.load("op-fail").await.unwrap().is_none());
    assert!(
        store.load("op-stuck").await.unwrap().is_some(),
        "unfinished sagas are kept"
    );
    // What is left of the log is who pruned it.
    let left = store.audit_log(&AuditQuery::new()).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].event_type, "operator_pruned");
    assert_eq!(
        (left[0].saga_id.as_str(), left[0].user_id.as_deref()),
        ("*", Some("alice"))
    );
    let counts = store
        .event_counts(SystemTime::now() - Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].event_type.as_str(), counts[0].count),
        ("operator_pruned", 1)
    );
}

conformance!(
    checkpoint_round_trip,
    stale_writer_is_fenced,
    lease_expiry_lets_a_second_runner_claim,
    recovery_reruns_an_interrupted_step,
    recovery_continues_an_interrupted_compensation,
    recover_refuses_a_live_lease_and_returns_finished_sagas,
    idempotent_start,
    exact_audit_sequences,
    corrupted_rows_give_errors_and_stay_unchanged,
    hostile_strings_are_stored_verbatim,
    cancellation_requests,
    listing_and_the_stuck_query,
    too_many_recoveries_park_the_saga,
    operator_actions,
);
