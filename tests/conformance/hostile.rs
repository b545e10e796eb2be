//! Rows and text nobody should trust: corrupted rows give errors and stay as they are;
//! SQL metacharacters and non-ASCII text are stored verbatim.

use super::*;

pub(crate) async fn corrupted_rows_give_errors_and_stay_unchanged(h: &Harness) {
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

pub(crate) async fn hostile_strings_are_stored_verbatim(h: &Harness) {
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
