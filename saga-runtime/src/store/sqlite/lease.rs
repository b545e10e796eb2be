//! Ownership: claiming a saga by id, claiming those whose lease ran out (under the write
//! lock), renewing and releasing leases.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::rows::{COLUMNS, miss, record};
use crate::error::StoreError;
use crate::store::sql::{ACTIVE_STATES, database_error};
use crate::store::time::{later, to_text};
use crate::store::{Claim, ClaimExpired, ClaimFilter, SagaRecord};

pub(super) async fn claim(pool: &SqlitePool, claim: Claim) -> Result<SagaRecord, StoreError> {
    let mut conn = pool.acquire().await.map_err(database_error)?;
    let now = SystemTime::now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE saga_checkpoints SET owner = ?, lease_expires_at = ?, version = version + 1, \
         recovery_count = recovery_count + 1, updated_at = ? \
         WHERE saga_id = ? AND version = ? RETURNING {COLUMNS}"
    )))
    .bind(&*claim.owner)
    .bind(to_text(later(now, claim.lease)))
    .bind(to_text(now))
    .bind(&claim.saga_id)
    .bind(claim.expected_version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    match row {
        Some(row) => record(&row),
        None => Err(miss(&mut conn, &claim.saga_id, claim.expected_version).await),
    }
}

pub(super) async fn claim_expired(
    pool: &SqlitePool,
    request: ClaimExpired,
    filter: ClaimFilter<'_>,
) -> Result<Vec<SagaRecord>, StoreError> {
    if request.definitions.is_empty() || request.limit == 0 {
        return Ok(Vec::new());
    }
    // IMMEDIATE takes the write lock first, so the read and the claims are one step.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(database_error)?;
    let now = SystemTime::now();
    let now_text = to_text(now);
    let mut claimed = Vec::new();
    // Expired leases first, then due wakes (a waiting row's lease is a claimer's, if any).
    // Each names its index: without statistics, SQLite's planner takes the state index for
    // `state = 'waiting'` and sorts every waiting row by `wake_at` on every pass (a million
    // waiting sagas made each pass read and sort the table); the partial index on
    // `wake_at` holds waiting rows only, in order, so a pass reads the due ones alone.
    let kinds = [
        (
            "",
            format!("state IN {ACTIVE_STATES} AND lease_expires_at <= ?"),
            "lease_expires_at",
        ),
        (
            " INDEXED BY ix_saga_checkpoints_wake_at",
            "state = 'waiting' AND wake_at <= ? \
             AND (lease_expires_at IS NULL OR lease_expires_at <= ?)"
                .to_owned(),
            "wake_at",
        ),
    ];
    for (index, (indexed_by, condition, order)) in kinds.iter().enumerate() {
        if index == 0 && !request.expired_leases {
            continue;
        }
        let wanted = request.limit as usize - claimed.len();
        if wanted == 0 {
            break;
        }
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints{indexed_by} WHERE "
        ));
        let mut parts = condition.split('?');
        query.push(parts.next().unwrap_or_default());
        for part in parts {
            query.push_bind(now_text.clone()).push(part);
        }
        query.push(" AND definition IN (");
        let mut names = query.separated(", ");
        for definition in &request.definitions {
            names.push_bind(*definition);
        }
        // Rows the filter refuses must not starve the others: look further than the limit.
        query
            .push(format!(") ORDER BY {order} LIMIT "))
            .push_bind(i64::try_from(wanted * 4).unwrap_or(i64::MAX));
        let rows = query
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(database_error)?;
        // A wake is no recovery: only a claim of an expired lease counts as one.
        let recovered = i64::from(index == 0);
        for row in &rows {
            if claimed.len() >= request.limit as usize {
                break;
            }
            let candidate = match record(row) {
                Ok(candidate) => candidate,
                Err(error) => {
                    tracing::error!(%error, "skipping an unreadable saga row");
                    continue;
                }
            };
            if !filter(&candidate) {
                continue;
            }
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE saga_checkpoints SET owner = ?, lease_expires_at = ?, version = version + 1, \
                 recovery_count = recovery_count + ?, updated_at = ? \
                 WHERE saga_id = ? AND version = ? RETURNING {COLUMNS}"
            )))
            .bind(&*request.owner)
            .bind(to_text(later(now, request.lease)))
            .bind(recovered)
            .bind(now_text.clone())
            .bind(&candidate.saga_id)
            .bind(candidate.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database_error)?;
            if let Some(row) = row {
                claimed.push(record(&row)?);
            }
        }
    }
    tx.commit().await.map_err(database_error)?;
    Ok(claimed)
}

pub(super) async fn renew(
    pool: &SqlitePool,
    owner: &str,
    saga_ids: &[Arc<str>],
    lease: Duration,
) -> Result<Vec<Arc<str>>, StoreError> {
    if saga_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<Sqlite>::new("UPDATE saga_checkpoints SET lease_expires_at = ");
    query
        .push_bind(to_text(later(SystemTime::now(), lease)))
        .push(" WHERE owner = ")
        .push_bind(owner)
        .push(format!(" AND state IN {ACTIVE_STATES} AND saga_id IN ("));
    let mut ids = query.separated(", ");
    for id in saga_ids {
        ids.push_bind(id.to_string());
    }
    query.push(") RETURNING saga_id");
    let renewed: Vec<String> = query
        .build_query_scalar()
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
    pool: &SqlitePool,
    owner: &str,
    saga_ids: &[Arc<str>],
) -> Result<(), StoreError> {
    if saga_ids.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<Sqlite>::new("UPDATE saga_checkpoints SET lease_expires_at = ");
    query
        .push_bind(to_text(SystemTime::now()))
        .push(" WHERE owner = ")
        .push_bind(owner)
        .push(" AND saga_id IN (");
    let mut ids = query.separated(", ");
    for id in saga_ids {
        ids.push_bind(id.to_string());
    }
    query.push(")");
    query.build().execute(pool).await.map_err(database_error)?;
    Ok(())
}
