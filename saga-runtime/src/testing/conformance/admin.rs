//! What people and tools ask of a store: cancellation requests, operator actions, listing,
//! counts and retention.

use std::time::{Duration, SystemTime};

use super::{checkpoint, new_saga};
use crate::audit::AuditQuery;
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::status::{CompensationStatus, RunStatus, StepStatus};
use crate::store::{Actor, SagaQuery, SagaStore, Saved};

pub(super) fn cancellation_requests(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("c1", Some("a"), Duration::from_secs(30)))
            .await
            .expect("create");
        let actor = Actor::new("ops'; --");
        store
            .request_cancel("c1", "customer asked", &actor)
            .await
            .expect("request");
        // The owner keeps ownership (the version does not move); its next forward write
        // sees the request and writes nothing.
        assert_eq!(
            store.save(checkpoint("c1", "a", 1)).await.expect("save"),
            Saved::Cancelled {
                reason: "customer asked".into()
            }
        );
        let mut compensate = checkpoint("c1", "a", 1);
        compensate.state = SagaState::Compensating;
        compensate.unless_cancelled = false;
        compensate.clear_cancel = true;
        assert_eq!(
            store.save(compensate).await.expect("save"),
            Saved::Written { version: 2 }
        );
        let row = store.load("c1").await.expect("load").expect("the row");
        assert_eq!(row.cancel_requested, None);
        let err = store
            .request_cancel("c1", "again", &actor)
            .await
            .expect_err("only a running saga can be cancelled");
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
        let err = store
            .request_cancel("nope", "x", &actor)
            .await
            .expect_err("no such saga");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        let rows = store
            .audit_log(
                &AuditQuery::new()
                    .saga_id("c1")
                    .event_type("cancel_requested"),
            )
            .await
            .expect("audit log");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].user_id.as_deref(), Some("ops'; --"));
        assert_eq!(rows[0].error_message.as_deref(), Some("customer asked"));
    })
}

// One scenario, each operator action on the saga the one before left, read top to bottom.
#[allow(clippy::too_many_lines)]
pub(super) fn operator_actions(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let ops = Actor::new("alice");
        // A compensation that gave up at its third attempt: resumed with a fresh budget.
        store
            .create(new_saga("op-cf", Some("r"), Duration::from_secs(30)))
            .await
            .expect("create");
        let mut gave_up = checkpoint("op-cf", "r", 1);
        gave_up.state = SagaState::CompensationFailed;
        gave_up.step_index = 0;
        gave_up.attempt = 3;
        gave_up.steps[0].compensation = CompensationStatus::Compensating;
        gave_up.steps[0].compensation_attempt = 3;
        store.save(gave_up).await.expect("save");
        let resumed = store
            .resume("op-cf", "refund service fixed", &ops)
            .await
            .expect("resume");
        assert_eq!(
            (resumed.state, resumed.attempt, resumed.owner.as_deref()),
            (SagaState::Compensating, 0, None)
        );
        assert_eq!(resumed.steps[0].compensation_attempt, 0, "a fresh budget");
        assert!(resumed.lease_expires_at.expect("a lease") <= SystemTime::now());
        assert_eq!(resumed.version, 3, "the old owner is fenced off");
        let row = store
            .audit_log(
                &AuditQuery::new()
                    .saga_id("op-cf")
                    .event_type("operator_resumed"),
            )
            .await
            .expect("audit log");
        assert_eq!(row[0].user_id.as_deref(), Some("alice"));
        assert_eq!(
            row[0].error_message.as_deref(),
            Some("refund service fixed")
        );

        // A parked saga resumes where it stopped, with a fresh budget for that step.
        store
            .create(new_saga("op-park", Some("r"), Duration::from_secs(30)))
            .await
            .expect("create");
        let mut parked = checkpoint("op-park", "r", 1);
        parked.state = SagaState::Parked;
        parked.parked_from = Some(SagaState::Running);
        parked.steps[1] = StepStatus {
            run: RunStatus::Failed,
            ..StepStatus::running(2)
        };
        store.save(parked).await.expect("save");
        let resumed = store
            .resume("op-park", "fixed", &ops)
            .await
            .expect("resume");
        assert_eq!(
            (resumed.state, resumed.attempt, resumed.parked_from),
            (SagaState::Running, 0, None)
        );
        assert_eq!(resumed.steps[1], StepStatus::running(0));
        assert_eq!(resumed.steps[0], StepStatus::completed(1, 1), "untouched");

        // A stuck running saga keeps its attempt count.
        store
            .create(new_saga("op-stuck", Some("gone"), Duration::from_secs(600)))
            .await
            .expect("create");
        let stuck = store
            .resume("op-stuck", "owner died", &ops)
            .await
            .expect("resume");
        assert_eq!(
            (stuck.state, stuck.attempt, stuck.owner),
            (SagaState::Running, 1, None)
        );

        // A running saga marked failed by hand: its owner is fenced off.
        store
            .create(new_saga("op-fail", Some("zombie"), Duration::from_secs(60)))
            .await
            .expect("create");
        let failed = store
            .mark_failed("op-fail", "Timeout - manually compensated", &ops)
            .await
            .expect("mark failed");
        assert_eq!(failed.state, SagaState::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("Timeout - manually compensated")
        );
        assert!(matches!(
            store
                .save(checkpoint("op-fail", "zombie", 1))
                .await
                .expect_err("fenced"),
            StoreError::Fenced { .. }
        ));

        // Finished sagas can be neither resumed nor failed.
        let err = store
            .resume("op-fail", "x", &ops)
            .await
            .expect_err("finished");
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
        let err = store
            .mark_failed("op-fail", "x", &ops)
            .await
            .expect_err("finished");
        assert!(matches!(err, StoreError::InvalidState { .. }), "{err}");
        assert!(matches!(
            store
                .resume("nope", "x", &ops)
                .await
                .expect_err("no such saga"),
            StoreError::NotFound { .. }
        ));

        // Retention removes finished sagas and old audit rows, and says who pruned.
        let later = SystemTime::now() + Duration::from_secs(1);
        let dry = store.prune(later, true, &ops).await.expect("dry run");
        assert_eq!(dry.sagas, 1, "only op-fail is finished");
        assert!(dry.audit_rows >= 10, "{dry:?}");
        assert!(store.load("op-fail").await.expect("load").is_some());
        let none = store
            .prune(SystemTime::now() - Duration::from_hours(1), false, &ops)
            .await
            .expect("prune");
        assert_eq!((none.sagas, none.audit_rows), (0, 0));
        let done = store.prune(later, false, &ops).await.expect("prune");
        // The prune that removed nothing left a row saying who ran it.
        assert_eq!(
            (done.sagas, done.audit_rows),
            (dry.sagas, dry.audit_rows + 1)
        );
        assert!(store.load("op-fail").await.expect("load").is_none());
        assert!(store.load("op-stuck").await.expect("load").is_some());
        let left = store
            .audit_log(&AuditQuery::new())
            .await
            .expect("audit log");
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].event_type, "operator_pruned");
        assert_eq!(
            (left[0].saga_id.as_str(), left[0].user_id.as_deref()),
            ("*", Some("alice"))
        );
    })
}

/// The audit log of many sagas is read oldest first, and a limit keeps the oldest rows,
/// wherever each saga's rows are kept (enough sagas that a store spreading them over
/// shards holds more than a limit's worth in each).
pub(super) fn the_audit_log_is_read_oldest_first(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let ids: Vec<String> = (0..64).map(|n| format!("log-{n}")).collect();
        for id in &ids {
            store
                .create(new_saga(id, Some("x"), Duration::from_secs(30)))
                .await
                .expect("create");
            // Distinct times, even on a store that keeps microseconds.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = |limit: Option<u32>| {
            let query = AuditQuery::new().event_type("saga_started");
            let query = match limit {
                Some(limit) => query.limit(limit),
                None => query,
            };
            async move {
                let rows = store.audit_log(&query).await.expect("audit log");
                rows.into_iter().map(|row| row.saga_id).collect::<Vec<_>>()
            }
        };
        assert_eq!(started(None).await, ids, "oldest first");
        assert_eq!(started(Some(2)).await, ids[..2], "the oldest two");
        assert_eq!(started(Some(5)).await, ids[..5], "the oldest five");
        assert!(started(Some(0)).await.is_empty());
    })
}

pub(super) fn listing_and_counts(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        for (id, saga_type) in [("l1", "kind_a"), ("l2", "kind_b"), ("l3", "kind_b")] {
            let mut saga = new_saga(id, Some("x"), Duration::from_secs(30));
            saga.header = super::header(saga_type);
            store.create(saga).await.expect("create");
        }
        let mut done = checkpoint("l2", "x", 1);
        done.state = SagaState::Completed;
        store.save(done).await.expect("save");
        assert_eq!(store.list(&SagaQuery::new()).await.expect("list").len(), 3);
        let completed = store
            .list(&SagaQuery::new().state(SagaState::Completed))
            .await
            .expect("list");
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].saga_id, "l2");
        let kind_b = store
            .list(&SagaQuery::new().saga_type("kind_b"))
            .await
            .expect("list");
        assert_eq!(kind_b.len(), 2);
        assert_eq!(
            store
                .list(&SagaQuery::new().limit(1))
                .await
                .expect("list")
                .len(),
            1
        );
        // The deployment guide's stuck query: running and not written since a time.
        let future = SystemTime::now() + Duration::from_hours(1);
        let stuck = store
            .list(
                &SagaQuery::new()
                    .state(SagaState::Running)
                    .updated_before(future),
            )
            .await
            .expect("list");
        let mut ids: Vec<&str> = stuck.iter().map(|r| r.saga_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["l1", "l3"]);
        let past = SystemTime::now() - Duration::from_hours(1);
        assert!(
            store
                .list(
                    &SagaQuery::new()
                        .state(SagaState::Running)
                        .updated_before(past)
                )
                .await
                .expect("list")
                .is_empty()
        );
        // Counts by type and state, stuck ones among them.
        let stats = store.stats(future, future).await.expect("stats");
        let count = |saga_type: &str, state| {
            stats
                .iter()
                .find(|c| c.saga_type == saga_type && c.state == state)
                .map_or((0, 0), |c| (c.count, c.stuck))
        };
        assert_eq!(count("kind_a", SagaState::Running), (1, 1));
        assert_eq!(count("kind_b", SagaState::Running), (1, 1));
        assert_eq!(count("kind_b", SagaState::Completed), (1, 0));
        let events = store
            .event_counts(SystemTime::now() - Duration::from_secs(60))
            .await
            .expect("event counts");
        let started: u64 = events
            .iter()
            .filter(|e| e.event_type == "saga_started")
            .map(|e| e.count)
            .sum();
        assert_eq!(started, 3);
    })
}

/// The console's paging: newest first (ties by id, descending), a page at a time from the
/// last row of the one before, filtered by id prefix and creation time.
pub(super) fn keyset_paging(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let ids = ["p-a", "p-b", "p-c", "p-d", "p-e", "q-ü", "q-%_"];
        for id in ids {
            store
                .create(new_saga(id, Some("x"), Duration::from_secs(30)))
                .await
                .expect("create");
        }
        let mut seen: Vec<String> = Vec::new();
        let mut query = SagaQuery::new().limit(2);
        loop {
            let page = store.list(&query).await.expect("list");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            for pair in page.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert!(
                    (a.created_at, &a.saga_id) > (b.created_at, &b.saga_id),
                    "newest first, then by id descending: {} before {}",
                    a.saga_id,
                    b.saga_id
                );
            }
            let last = page.last().expect("a row");
            query = SagaQuery::new()
                .limit(2)
                .after(last.created_at, last.saga_id.clone());
            seen.extend(page.into_iter().map(|r| r.saga_id));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "every saga once: {seen:?}");
        let prefixed = store
            .list(&SagaQuery::new().id_prefix("q-%"))
            .await
            .expect("list");
        let prefixed: Vec<&str> = prefixed.iter().map(|r| r.saga_id.as_str()).collect();
        assert_eq!(prefixed, ["q-%_"], "a prefix is literal, not a pattern");
        let unicode = store
            .list(&SagaQuery::new().id_prefix("q-ü"))
            .await
            .expect("list");
        assert_eq!(unicode.len(), 1);
        let later = SystemTime::now() + Duration::from_secs(3600);
        let before = store
            .list(&SagaQuery::new().created_before(later).id_prefix("p-"))
            .await
            .expect("list");
        assert_eq!(before.len(), 5);
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let none = store
            .list(&SagaQuery::new().created_before(earlier))
            .await
            .expect("list");
        assert!(none.is_empty());
    })
}
