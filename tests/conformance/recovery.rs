//! Crashes and takeovers: an interrupted step or compensation is resumed by another runner
//! (or a restarted one), a live lease is respected, a saga that keeps coming back is parked.

use super::*;

/// Runs `id` on runner A until `name` has started `attempt`, then kills runner A's task
/// (as a crash would) and lets its lease expire.
pub(crate) async fn crash_during(
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

pub(crate) async fn recovery_reruns_an_interrupted_step(h: &Harness) {
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

pub(crate) async fn recovery_continues_an_interrupted_compensation(h: &Harness) {
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

pub(crate) async fn recover_refuses_a_live_lease_and_returns_finished_sagas(h: &Harness) {
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

pub(crate) async fn too_many_recoveries_park_the_saga(h: &Harness) {
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
