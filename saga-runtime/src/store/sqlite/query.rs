//! Reading: the audit log, lists of sagas, counts by state and by event.

use std::time::SystemTime;

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::rows::{COLUMNS, audit_record, insert_events, load_on, record};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, NewEvent};
use crate::error::StoreError;
use crate::store::sql::{self, database_error};
use crate::store::time::to_text;
use crate::store::{EventCount, SagaQuery, SagaRecord, StateCount};

pub(super) async fn audit_log(
    pool: &SqlitePool,
    q: &AuditQuery,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT id, saga_id, saga_type, event_type, step_name, attempt, error_message, details, \
         user_id, ip_address, timestamp FROM saga_audit_logs WHERE 1 = 1",
    );
    if let Some(saga_id) = &q.saga_id {
        query.push(" AND saga_id = ").push_bind(saga_id.clone());
    }
    if let Some(event_type) = &q.event_type {
        query
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
    if let Some(prefix) = &q.event_type_prefix {
        query
            .push(" AND substr(event_type, 1, length(")
            .push_bind(prefix.clone())
            .push(")) = ")
            .push_bind(prefix.clone());
    }
    if let Some(user_id) = &q.user_id {
        query.push(" AND user_id = ").push_bind(user_id.clone());
    }
    if let Some(since) = q.since {
        query.push(" AND timestamp >= ").push_bind(to_text(since));
    }
    if let Some(until) = q.until {
        query.push(" AND timestamp < ").push_bind(to_text(until));
    }
    query.push(" ORDER BY timestamp, id");
    if let Some(limit) = q.limit {
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
    let rows = query
        .build()
        .fetch_all(pool)
        .await
        .map_err(database_error)?;
    rows.iter().map(audit_record).collect()
}

pub(super) async fn list(pool: &SqlitePool, q: &SagaQuery) -> Result<Vec<SagaRecord>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE 1 = 1"
    ));
    if let Some(state) = q.state {
        query.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(saga_type) = &q.saga_type {
        query.push(" AND saga_type = ").push_bind(saga_type.clone());
    }
    if let Some(since) = q.created_since {
        query.push(" AND created_at >= ").push_bind(to_text(since));
    }
    if let Some(before) = q.updated_before {
        query.push(" AND updated_at < ").push_bind(to_text(before));
    }
    if let Some(before) = q.due_before {
        query
            .push(" AND state = 'waiting' AND wake_at < ")
            .push_bind(to_text(before));
    }
    if let Some(before) = q.created_before {
        query.push(" AND created_at < ").push_bind(to_text(before));
    }
    if let Some(prefix) = &q.id_prefix {
        query
            .push(" AND substr(saga_id, 1, ")
            .push_bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
            .push(") = ")
            .push_bind(prefix.clone());
    }
    if let Some((at, id)) = &q.after {
        let at = to_text(*at);
        query
            .push(" AND (created_at < ")
            .push_bind(at.clone())
            .push(" OR (created_at = ")
            .push_bind(at)
            .push(" AND saga_id < ")
            .push_bind(id.clone())
            .push("))");
    }
    query.push(" ORDER BY created_at DESC, saga_id DESC");
    if let Some(limit) = q.limit {
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
    let rows = query
        .build()
        .fetch_all(pool)
        .await
        .map_err(database_error)?;
    rows.iter().map(record).collect()
}

/// A type, a state, and how many sagas, stuck sagas and overdue waits it has.
type CountRow = (String, String, i64, i64, i64);

pub(super) async fn stats(
    pool: &SqlitePool,
    stuck_before: SystemTime,
    overdue_before: SystemTime,
) -> Result<Vec<StateCount>, StoreError> {
    // The count reads every page of the table. Through a connection's usual page cache
    // (2 MiB) it would fill that cache with pages no other query wants, and, run on each
    // pooled connection in turn, every connection's: a runner's memory would grow by
    // megabytes with the table's size. It reads through a small cache instead.
    let mut conn = pool.acquire().await.map_err(database_error)?;
    sqlx::query("PRAGMA cache_size = -64")
        .execute(&mut *conn)
        .await
        .map_err(database_error)?;
    let rows: Result<Vec<CountRow>, _> = sqlx::query_as(
        "SELECT saga_type, state, count(*), \
         coalesce(sum(CASE WHEN state IN ('running', 'compensating') AND updated_at < ? THEN 1 ELSE 0 END), 0), \
         coalesce(sum(CASE WHEN state = 'waiting' AND wake_at < ? THEN 1 ELSE 0 END), 0) \
         FROM saga_checkpoints GROUP BY saga_type, state ORDER BY saga_type, state",
    )
    .bind(to_text(stuck_before))
    .bind(to_text(overdue_before))
    .fetch_all(&mut *conn)
    .await;
    let restored = sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA cache_size = {}",
        super::CACHE_SIZE
    )))
    .execute(&mut *conn)
    .await;
    if restored.is_err() {
        // Never hand a connection with a small cache back to the pool.
        conn.detach();
    }
    Ok(sql::state_counts(rows.map_err(database_error)?))
}

pub(super) async fn event_counts(
    pool: &SqlitePool,
    since: SystemTime,
) -> Result<Vec<EventCount>, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT saga_type, event_type, count(*) FROM saga_audit_logs WHERE timestamp >= ? \
         GROUP BY saga_type, event_type ORDER BY saga_type, event_type",
    )
    .bind(to_text(since))
    .fetch_all(pool)
    .await
    .map_err(database_error)?;
    Ok(rows
        .into_iter()
        .map(|(saga_type, event_type, count)| EventCount {
            saga_type,
            event_type,
            count: u64::try_from(count).unwrap_or(0),
        })
        .collect())
}

pub(super) async fn load(
    pool: &SqlitePool,
    saga_id: &str,
) -> Result<Option<SagaRecord>, StoreError> {
    let mut conn = pool.acquire().await.map_err(database_error)?;
    load_on(&mut conn, saga_id).await
}

pub(super) async fn append_audit(
    pool: &SqlitePool,
    saga_id: &str,
    header: &AuditHeader,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(database_error)?;
    insert_events(&mut conn, saga_id, header, events).await
}
