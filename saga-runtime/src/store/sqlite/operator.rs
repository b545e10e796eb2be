//! Operator actions: a cancellation request, resume and mark failed (one locked row each),
//! and pruning; each with its audit row, in one transaction.

use std::time::SystemTime;

use sqlx::SqlitePool;

use super::rows::{COLUMNS, insert_events, load_on, record};

use crate::error::StoreError;
use crate::store::sql::{OperatorChange, database_error};
use crate::store::time::to_text;
use crate::store::{Actor, PruneReport, SagaRecord, operator};

pub(super) async fn request_cancel(
    pool: &SqlitePool,
    saga_id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<SagaRecord, StoreError> {
    let reason = crate::text::clean(reason);
    let mut tx = pool.begin().await.map_err(database_error)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET cancel_requested = ?, \
         wake_at = CASE WHEN state = 'waiting' THEN ? ELSE wake_at END \
         WHERE saga_id = ? AND state IN ('running', 'waiting') RETURNING {COLUMNS}"
    )))
    .bind(&*reason)
    .bind(to_text(SystemTime::now()))
    .bind(saga_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let Some(row) = row else {
        let existing = load_on(&mut tx, saga_id).await?;
        tx.rollback().await.map_err(database_error)?;
        return Err(operator::cancel_refused(existing, saga_id));
    };
    let record = record(&row)?;
    let (header, event) = operator::cancel_requested(&record, actor, &reason);
    insert_events(&mut tx, saga_id, &header, vec![event]).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(record)
}

/// Runs an operator action: reads the row, lets `change` decide, writes the result
/// and its audit event, all under the write lock.
pub(super) async fn change(
    pool: &SqlitePool,
    saga_id: &str,
    actor: &Actor,
    change: impl FnOnce(&SagaRecord) -> Result<OperatorChange, StoreError>,
) -> Result<SagaRecord, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(database_error)?;
    let Some(current) = load_on(&mut tx, saga_id).await? else {
        return Err(StoreError::NotFound {
            saga_id: saga_id.to_owned(),
        });
    };
    let change = change(&current)?;
    let now = to_text(SystemTime::now());
    // The time as a literal: its text is digits and separators only.
    let set = change.set_clause(|_| "?".to_owned(), &format!("'{now}'"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET {set}, owner = NULL, lease_expires_at = ?, \
         version = version + 1, updated_at = ? WHERE saga_id = ? AND version = ? RETURNING {COLUMNS}"
    )));
    for bind in change.binds {
        query = query.bind(bind);
    }
    let row = query
        .bind(&now)
        .bind(&now)
        .bind(saga_id)
        .bind(current.version)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
    let updated = record(&row)?;
    insert_events(
        &mut tx,
        saga_id,
        &operator::header(&updated, actor),
        vec![change.event],
    )
    .await?;
    tx.commit().await.map_err(database_error)?;
    Ok(updated)
}

pub(super) async fn prune(
    pool: &SqlitePool,
    before: SystemTime,
    dry_run: bool,
    actor: &Actor,
) -> Result<PruneReport, StoreError> {
    let cutoff_time = before;
    let before = to_text(before);
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(database_error)?;
    let (audit, sagas) = if dry_run {
        let audit: i64 =
            sqlx::query_scalar("SELECT count(*) FROM saga_audit_logs WHERE timestamp < ?")
                .bind(&before)
                .fetch_one(&mut *tx)
                .await
                .map_err(database_error)?;
        let sagas: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM saga_checkpoints WHERE state IN ('completed', 'failed') AND updated_at < ?",
        )
        .bind(&before)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        (audit as u64, sagas as u64)
    } else {
        let sagas = sqlx::query(
            "DELETE FROM saga_checkpoints WHERE state IN ('completed', 'failed') AND updated_at < ?",
        )
        .bind(&before)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?
        .rows_affected();
        // The signals of the sagas deleted go with them.
        sqlx::query(
            "DELETE FROM saga_signals WHERE NOT EXISTS \
             (SELECT 1 FROM saga_checkpoints AS c WHERE c.saga_id = saga_signals.saga_id)",
        )
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        let audit = sqlx::query("DELETE FROM saga_audit_logs WHERE timestamp < ?")
            .bind(&before)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?
            .rows_affected();
        (audit, sagas)
    };
    let report = PruneReport {
        audit_rows: audit,
        sagas,
    };
    if !dry_run {
        let (header, event) = operator::pruned(cutoff_time, report, actor);
        insert_events(&mut tx, operator::WHOLE_LOG, &header, vec![event]).await?;
    }
    tx.commit().await.map_err(database_error)?;
    Ok(report)
}
