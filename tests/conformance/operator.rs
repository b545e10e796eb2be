//! Operator actions on sagas a runner ran: a compensation that gave up, resumed by a
//! person, is finished by a runner.

use super::*;

pub(crate) async fn operator_actions(h: &Harness) {
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
        .stats(
            SystemTime::now() + Duration::from_secs(1),
            SystemTime::now(),
        )
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
