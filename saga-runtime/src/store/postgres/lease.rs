//! Ownership: claiming a saga by id, claiming those whose lease ran out (`FOR UPDATE SKIP
//! LOCKED`), renewing and releasing leases.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::rows::{COLUMNS, micros, record};
use crate::error::StoreError;
use crate::store::sql::{self, database_error};
use crate::store::{Claim, ClaimExpired, ClaimFilter, SagaRecord};

pub(super) async fn claim(pool: &PgPool, claim: Claim) -> Result<SagaRecord, StoreError> {
    let mut conn = pool.acquire().await.map_err(database_error)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET owner = $1, lease_expires_at = now() + $2 * interval '1 microsecond', \
         version = version + 1, recovery_count = recovery_count + 1, updated_at = now() \
         WHERE saga_id = $3 AND version = $4 RETURNING {COLUMNS}"
    )))
    .bind(&*claim.owner)
    .bind(micros(claim.lease))
    .bind(&claim.saga_id)
    .bind(claim.expected_version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    match row {
        Some(row) => record(&row),
        None => {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT version FROM saga_checkpoints WHERE saga_id = $1")
                    .bind(&claim.saga_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(database_error)?;
            Err(match found {
                Some(found) => StoreError::Fenced {
                    saga_id: claim.saga_id,
                    expected: claim.expected_version,
                    found: Some(found),
                },
                None => StoreError::NotFound {
                    saga_id: claim.saga_id,
                },
            })
        }
    }
}

pub(super) async fn claim_expired(
    pool: &PgPool,
    request: ClaimExpired,
    filter: ClaimFilter<'_>,
) -> Result<Vec<SagaRecord>, StoreError> {
    if request.definitions.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    let definitions: Vec<String> = request
        .definitions
        .iter()
        .map(|d| (*d).to_owned())
        .collect();
    let mut tx = pool.begin().await.map_err(database_error)?;
    // Expired leases first, then due wakes (a waiting row's lease is its claimer's, if any).
    // Locked rows belong to a concurrent claimer: skip them rather than wait. The order is
    // the table's column, not the select list's alias of the same name (a computed value,
    // which no index serves: a million waiting rows were sorted for every claim).
    let kinds = [
        (
            format!(
                "state IN {} AND lease_expires_at <= now()",
                sql::ACTIVE_STATES
            ),
            "lease_expires_at",
        ),
        (
            "state = 'waiting' AND wake_at <= now() \
             AND (lease_expires_at IS NULL OR lease_expires_at <= now())"
                .to_owned(),
            "wake_at",
        ),
    ];
    let mut claimed = Vec::new();
    for (index, (where_clause, order)) in kinds.iter().enumerate() {
        if index == 0 && !request.expired_leases {
            continue;
        }
        let wanted = request.limit as usize - claimed.len();
        if wanted == 0 {
            break;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints \
             WHERE {where_clause} AND definition = ANY($1) \
             ORDER BY saga_checkpoints.{order} LIMIT $2 FOR UPDATE SKIP LOCKED"
        )))
        .bind(&definitions)
        .bind(i64::try_from(wanted * 4).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(database_error)?;
        let mut accepted: Vec<String> = Vec::new();
        for row in &rows {
            if accepted.len() >= wanted {
                break;
            }
            match record(row) {
                Ok(candidate) if filter(&candidate) => accepted.push(candidate.saga_id),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "skipping an unreadable saga row"),
            }
        }
        if accepted.is_empty() {
            continue;
        }
        // A wake is no recovery: only a claim of an expired lease counts as one.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE saga_checkpoints SET owner = $1, \
             lease_expires_at = now() + $2 * interval '1 microsecond', version = version + 1, \
             recovery_count = recovery_count + $4, updated_at = now() \
             WHERE saga_id = ANY($3) RETURNING {COLUMNS}"
        )))
        .bind(&*request.owner)
        .bind(micros(request.lease))
        .bind(&accepted)
        .bind(i32::from(index == 0))
        .fetch_all(&mut *tx)
        .await
        .map_err(database_error)?;
        for row in &rows {
            claimed.push(record(row)?);
        }
    }
    tx.commit().await.map_err(database_error)?;
    Ok(claimed)
}

pub(super) async fn renew(
    pool: &PgPool,
    owner: &str,
    saga_ids: &[Arc<str>],
    lease: Duration,
) -> Result<Vec<Arc<str>>, StoreError> {
    if saga_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = saga_ids.iter().map(ToString::to_string).collect();
    let renewed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET lease_expires_at = now() + $1 * interval '1 microsecond' \
         WHERE owner = $2 AND state IN {} AND saga_id = ANY($3) RETURNING saga_id",
        sql::ACTIVE_STATES
    )))
    .bind(micros(lease))
    .bind(owner)
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(database_error)?;
    Ok(saga_ids
        .iter()
        .filter(|id| renewed.iter().any(|r| r.as_str() == &***id))
        .cloned()
        .collect())
}

pub(super) async fn release(
    pool: &PgPool,
    owner: &str,
    saga_ids: &[Arc<str>],
) -> Result<(), StoreError> {
    if saga_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = saga_ids.iter().map(ToString::to_string).collect();
    sqlx::query(
        "UPDATE saga_checkpoints SET lease_expires_at = now() WHERE owner = $1 AND saga_id = ANY($2)",
    )
    .bind(owner)
    .bind(&ids)
    .execute(pool)
    .await
    .map_err(database_error)?;
    Ok(())
}
