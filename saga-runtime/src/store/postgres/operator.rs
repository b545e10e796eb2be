//! Operator actions: a cancellation request, resume and mark failed (one locked row each),
//! and pruning; each with its audit row, in one transaction.

use std::time::SystemTime;

use sqlx::PgPool;

use super::rows::{COLUMNS, insert_events, load_on, record};

use crate::error::StoreError;
use crate::store::sql::{OperatorChange, database_error};
use crate::store::time::to_micros;
use crate::store::{Actor, PruneReport, SagaRecord, operator};

pub(super) async fn request_cancel(
    pool: &PgPool,
    saga_id: &str,
    reason: &str,
    actor: &Actor,
) -> Result<SagaRecord, StoreError> {
    let reason = crate::text::clean(reason);
    let mut tx = pool.begin().await.map_err(database_error)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET cancel_requested = $1, \
         wake_at = CASE WHEN state = 'waiting' THEN now() ELSE wake_at END \
         WHERE saga_id = $2 AND state IN ('running', 'waiting') RETURNING {COLUMNS}"
    )))
    .bind(&*reason)
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

/// Runs an operator action: locks the row, lets `change` decide, writes the result and
/// its audit event in one transaction.
pub(super) async fn change(
    pool: &PgPool,
    saga_id: &str,
    actor: &Actor,
    change: impl FnOnce(&SagaRecord) -> Result<OperatorChange, StoreError>,
) -> Result<SagaRecord, StoreError> {
    let mut tx = pool.begin().await.map_err(database_error)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = $1 FOR UPDATE"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound {
            saga_id: saga_id.to_owned(),
        });
    };
    let current = record(&row)?;
    let change = change(&current)?;
    let n = change.binds.len();
    let set = change.set_clause(|i| format!("${i}"), "now()");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET {set}, owner = NULL, lease_expires_at = now(), \
         version = version + 1, updated_at = now() WHERE saga_id = ${} AND version = ${} \
         RETURNING {COLUMNS}",
        n + 1,
        n + 2
    )));
    for bind in change.binds {
        query = query.bind(bind);
    }
    let row = query
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
    pool: &PgPool,
    before: SystemTime,
    dry_run: bool,
    actor: &Actor,
) -> Result<PruneReport, StoreError> {
    let cutoff_time = before;
    let before = to_micros(before);
    let cutoff = "'epoch'::timestamptz + $1 * interval '1 microsecond'";
    let mut tx = pool.begin().await.map_err(database_error)?;
    let (audit, sagas) = if dry_run {
        let audit: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM saga_audit_logs WHERE timestamp < {cutoff}"
        )))
        .bind(before)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        let sagas: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM saga_checkpoints WHERE state IN ('completed', 'failed') AND updated_at < {cutoff}"
        )))
        .bind(before)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        (audit as u64, sagas as u64)
    } else {
        let sagas = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM saga_checkpoints WHERE state IN ('completed', 'failed') AND updated_at < {cutoff}"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?
        .rows_affected();
        // The signals of the sagas deleted go with them.
        sqlx::query(
            "DELETE FROM saga_signals AS g WHERE NOT EXISTS \
             (SELECT 1 FROM saga_checkpoints AS c WHERE c.saga_id = g.saga_id)",
        )
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        let audit = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM saga_audit_logs WHERE timestamp < {cutoff}"
        )))
        .bind(before)
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
