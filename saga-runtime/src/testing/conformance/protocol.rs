//! The runner protocol: create, checkpoint, fencing, step statuses, idempotent start, text.

use std::time::{Duration, SystemTime};

use super::{DEFINITION, checkpoint, header, new_saga};
use crate::audit::{AuditQuery, EventType, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::status::{CompensationStatus, RunStatus, StepStatus};
use crate::store::{Created, NewSaga, SagaStore, Saved};

pub(super) fn checkpoint_round_trip(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let before = SystemTime::now() - Duration::from_secs(1);
        let created = store
            .create(new_saga("rt", Some("runner-a"), Duration::from_secs(30)))
            .await
            .expect("create");
        assert_eq!(created, Created::New { version: 1 });
        let created = store.load("rt").await.expect("load").expect("the row");
        assert_eq!(created.state, SagaState::Running);
        assert_eq!(
            (created.step_index, created.attempt, created.version),
            (0, 1, 1)
        );
        assert_eq!(created.current_step.as_deref(), Some("a"));
        assert_eq!(created.definition, DEFINITION);
        assert_eq!(created.owner.as_deref(), Some("runner-a"));
        assert!(created.created_at >= before);
        assert!(
            created.lease_expires_at.expect("a lease")
                > SystemTime::now() + Duration::from_secs(20)
        );

        let mut cp = checkpoint("rt", "runner-a", 1);
        cp.error = Some("it's broken; really".into());
        cp.failed_step = Some("b".into());
        assert_eq!(
            store.save(cp).await.expect("save"),
            Saved::Written { version: 2 }
        );
        let saved = store.load("rt").await.expect("load").expect("the row");
        assert_eq!((saved.step_index, saved.attempt, saved.version), (1, 2, 2));
        assert_eq!(saved.current_step.as_deref(), Some("b"));
        let context: serde_json::Value =
            serde_json::from_str(&saved.context).expect("the context is JSON");
        assert_eq!(context["a"], 7);
        assert_eq!(saved.error.as_deref(), Some("it's broken; really"));
        assert_eq!(saved.failed_step.as_deref(), Some("b"));
        assert_eq!(saved.user_id.as_deref(), Some("user-1"));
        assert_eq!(saved.ip_address.as_deref(), Some("10.1.2.3"));
        assert!(saved.updated_at >= created.updated_at);
        let trail = store
            .audit_log(&AuditQuery::new().saga_id("rt"))
            .await
            .expect("audit log");
        let events: Vec<&str> = trail.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(events, ["saga_started", "step_completed"], "in order");

        // `context: None` keeps the stored context.
        let mut cp = checkpoint("rt", "runner-a", 2);
        cp.context = None;
        cp.state = SagaState::Compensating;
        cp.step_index = 0;
        store.save(cp).await.expect("save");
        let kept = store.load("rt").await.expect("load").expect("the row");
        assert_eq!(kept.context, saved.context);
        assert_eq!(kept.state, SagaState::Compensating);
        assert!(store.load("missing").await.expect("load").is_none());
    })
}

pub(super) fn stale_writer_is_fenced(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("fence", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        store.save(checkpoint("fence", "a", 1)).await.expect("save");
        let before = store.load("fence").await.expect("load");
        let err = store
            .save(checkpoint("fence", "a", 1))
            .await
            .expect_err("a stale version is refused");
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
            store.load("fence").await.expect("load"),
            before,
            "a fenced write changes nothing"
        );
        let err = store
            .save(checkpoint("nobody", "a", 1))
            .await
            .expect_err("no such row");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    })
}

pub(super) fn idempotent_start(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("once", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        store.save(checkpoint("once", "a", 1)).await.expect("save");
        match store
            .create(new_saga("once", Some("b"), Duration::from_secs(30)))
            .await
            .expect("create again")
        {
            Created::Existing(record) => {
                assert_eq!(record.version, 2);
                assert_eq!(record.owner.as_deref(), Some("a"));
            }
            other => panic!("expected the existing saga, got {other:?}"),
        }
        let trail = store
            .audit_log(&AuditQuery::new().saga_id("once").event_type("saga_started"))
            .await
            .expect("audit log");
        assert_eq!(trail.len(), 1, "the second start wrote nothing");
    })
}

pub(super) fn step_statuses_round_trip(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("st", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        let created = store.load("st").await.expect("load").expect("the row");
        assert_eq!(
            created.steps,
            [
                StepStatus::running(1),
                StepStatus::not_started(),
                StepStatus::not_started()
            ]
        );
        let compensating = StepStatus {
            compensation: CompensationStatus::Compensating,
            compensation_attempt: 3,
            ..StepStatus::completed(2, 1)
        };
        let unknown = StepStatus {
            run: RunStatus::Unknown,
            attempt: 4,
            order: Some(2),
            compensation: CompensationStatus::Skipped,
            compensation_attempt: 0,
            wait: None,
            until_ms: None,
        };
        let mut cp = checkpoint("st", "a", 1);
        cp.state = SagaState::Compensating;
        cp.steps = vec![compensating, unknown, StepStatus::not_started()];
        store.save(cp).await.expect("save");
        let saved = store.load("st").await.expect("load").expect("the row");
        assert_eq!(
            saved.steps,
            [compensating, unknown, StepStatus::not_started()],
            "every status reads back as written"
        );
    })
}

pub(super) fn text_is_stored_as_given(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let id = "id with 'quotes'; and ; semicolons ✓ \u{7}";
        let mut saga = NewSaga::new(
            id,
            DEFINITION,
            super::FINGERPRINT,
            header("type'); DROP TABLE saga_checkpoints; -- ünïcødé 🚀"),
        );
        saga.first_step = "a";
        saga.steps = vec![StepStatus::running(1); 3];
        saga.owner = Some("runner-a".into());
        saga.lease = Duration::from_secs(30);
        // NUL and control characters inside the JSON context are escaped by JSON itself.
        saga.context = r#"{"input":{"text":"nul\u0000 bell\u0007 东京"}}"#.into();
        saga.events = vec![NewEvent::now(EventType::SagaStarted).error("o'brien\"; --\t\n ✓")];
        store.create(saga.clone()).await.expect("create");
        let row = store.load(id).await.expect("load").expect("the row");
        assert_eq!(row.saga_id, id);
        assert_eq!(row.saga_type, saga.header.saga_type);
        assert_eq!(row.context, saga.context);
        let trail = store
            .audit_log(&AuditQuery::new().saga_id(id))
            .await
            .expect("audit log");
        assert_eq!(
            trail[0].error_message.as_deref(),
            Some("o'brien\"; --\t\n ✓")
        );
        assert_eq!(trail[0].saga_type, saga.header.saga_type);
        let listed = store
            .list(&crate::store::SagaQuery::new().saga_type(saga.header.saga_type.clone()))
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
    })
}
