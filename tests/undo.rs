//! Undoing a completed saga (DECISIONS.md, "Sagas that wait"): `Executor::undo` and `saga undo` compensate
//! its completed steps, newest first, and it ends `failed` with `undone: <reason>`; refused
//! past a pivot (by the executor before anything is written, and by the runner for a
//! request made without the definition, as the CLI makes it). On every store.

mod support;

use saga_runtime::prelude::*;
use saga_runtime::store::Actor;
use saga_runtime::{SagaState, StoreError};
use support::stores::{Backend, Harness};
use support::{Input, Pivoted, Script, Scripted, audit_trail};

async fn a_completed_saga_is_undone_newest_step_first(h: &Harness) {
    let script = Script::new();
    let orchestrator = Orchestrator::builder(h.reopen())
        .recovery(false)
        .build()
        .unwrap();
    let scripted = orchestrator.register(Scripted(script.clone()));
    let pivoted = orchestrator.register(Pivoted(script.clone()));
    let config = SagaConfig::new("orders");
    let ops = Actor::new("ops");
    for id in ["u-1", "u-2"] {
        let outcome = scripted
            .execute_with_id(id, &config, Input { id: 1 })
            .await
            .unwrap();
        assert!(outcome.is_completed());
    }

    // Through the executor: compensated here and now.
    let outcome = scripted
        .undo("u-1", "the customer sent it back", &ops)
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(
        outcome.error().unwrap().to_string(),
        "undone: the customer sent it back"
    );
    let undone: Vec<&str> = script
        .names()
        .into_iter()
        .filter(|n| n.starts_with("undo"))
        .collect();
    assert_eq!(undone, ["undo_c", "undo_b", "undo_a"]);
    let trail = audit_trail(&orchestrator, "u-1").await;
    let asked = trail.iter().position(|e| e == "saga_undone").unwrap();
    assert!(
        trail[asked..].starts_with(&[
            "saga_undone".to_owned(),
            "compensation_started:c:1".to_owned()
        ]),
        "{trail:?}"
    );
    assert_eq!(trail.last().map(String::as_str), Some("saga_failed"));
    let who = orchestrator
        .audit_log(&AuditQuery::new().saga_id("u-1").event_type("saga_undone"))
        .await
        .unwrap();
    assert_eq!(who[0].user_id.as_deref(), Some("ops"));

    // Only a completed saga can be undone.
    let again = scripted.undo("u-1", "twice", &ops).await.unwrap_err();
    assert!(
        matches!(again, SagaError::Store(StoreError::InvalidState { .. })),
        "{again}"
    );

    // Through the store, as `saga undo` asks: the next runner to claim it compensates.
    h.store.request_undo("u-2", "by hand", &ops).await.unwrap();
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let outcome = scripted.outcome("u-2").await.unwrap().unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(outcome.error().unwrap().message(), "undone: by hand");

    // Past a pivot: refused before anything is written, or by the runner.
    let past = pivoted
        .execute_with_id("u-3", &config, Input { id: 3 })
        .await
        .unwrap();
    assert!(past.is_completed());
    let refused = pivoted.undo("u-3", "too late", &ops).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "saga `u-3` passed its pivot `b`, whose effects cannot be undone"
    );
    h.store.request_undo("u-3", "too late", &ops).await.unwrap();
    assert_eq!(orchestrator.recover_expired().await.unwrap(), 1);
    let kept = pivoted.outcome("u-3").await.unwrap().unwrap();
    assert!(kept.is_completed(), "{kept:?}");
    assert_eq!(kept.error(), None);
    let trail = audit_trail(&orchestrator, "u-3").await;
    assert!(
        trail.ends_with(&["saga_undone".to_owned(), "cancel_ignored".to_owned()]),
        "{trail:?}"
    );
    let undo_a = script.names().iter().filter(|n| **n == "undo_a").count();
    assert_eq!(undo_a, 2, "u-1 and u-2 only: u-3's step `a` was not undone");
}

conformance!(a_completed_saga_is_undone_newest_step_first);
