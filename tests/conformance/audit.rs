//! What the executor writes for people to read: the exact audit sequences, and listing.

use super::*;

pub(crate) async fn exact_audit_sequences(h: &Harness) {
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
    // The deployment guide's three queries, from Rust.
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

pub(crate) async fn listing_and_the_stuck_query(h: &Harness) {
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
