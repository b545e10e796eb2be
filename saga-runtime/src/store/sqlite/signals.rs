//! Signals in SQLite: delivered under the write lock with their audit row (and the wake of
//! a saga waiting for them), taken oldest first, rejected with their audit row.

use std::time::SystemTime;

use sqlx::{SqliteConnection, SqlitePool};

use super::rows::{insert_events, load_on};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::SagaState;
use crate::error::StoreError;
use crate::store::sql::database_error;
use crate::store::time::to_text;
use crate::store::{NewSignal, PendingSignal, Sent, operator};

/// Stores `signal` (unless its key was seen), writes `signal_received`, and makes the saga
/// due now if it waits for it. `Ok((sent, woken))`.
pub(super) async fn send(pool: &SqlitePool, signal: NewSignal) -> Result<(Sent, bool), StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(database_error)?;
    let delivered = deliver_on(&mut tx, &signal).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(delivered)
}

/// [`send`] within the caller's transaction (a refusal writes nothing).
pub(super) async fn deliver_on(
    tx: &mut SqliteConnection,
    signal: &NewSignal,
) -> Result<(Sent, bool), StoreError> {
    operator::validate_signal(signal)?;
    let Some(record) = load_on(&mut *tx, &signal.saga_id).await? else {
        return Err(StoreError::NotFound {
            saga_id: signal.saga_id.clone(),
        });
    };
    operator::check_signal(&record, &signal.name)?;
    let now = to_text(SystemTime::now());
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO saga_signals (saga_id, name, payload, dedup_key, sent_by, sent_at) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&signal.saga_id)
    .bind(&signal.name)
    .bind(&signal.payload)
    .bind(&signal.key)
    .bind(&signal.sender.user_id)
    .bind(&now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let Some(id) = id else {
        let earlier: i64 = sqlx::query_scalar(
            "SELECT id FROM saga_signals WHERE saga_id = ? AND name = ? AND dedup_key = ?",
        )
        .bind(&signal.saga_id)
        .bind(&signal.name)
        .bind(&signal.key)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        return Ok((Sent::Duplicate { id: earlier }, false));
    };
    let woken = record.state == SagaState::Waiting
        && record
            .waiting_for
            .as_deref()
            .is_some_and(|w| crate::store::waits_for(w, &signal.name));
    if woken {
        sqlx::query("UPDATE saga_checkpoints SET wake_at = ? WHERE saga_id = ?")
            .bind(&now)
            .bind(&signal.saga_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
    }
    let header = operator::header(&record, &signal.sender);
    let event = operator::received(id, signal);
    insert_events(&mut *tx, &signal.saga_id, &header, vec![event]).await?;
    Ok((Sent::Delivered { id }, woken))
}

pub(super) async fn next(
    pool: &SqlitePool,
    saga_id: &str,
    name: &str,
) -> Result<Option<PendingSignal>, StoreError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, payload FROM saga_signals WHERE saga_id = ? AND name = ? \
         AND consumed_at IS NULL AND rejected_at IS NULL ORDER BY id LIMIT 1",
    )
    .bind(saga_id)
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(database_error)?;
    Ok(row.map(|(id, payload)| PendingSignal { id, payload }))
}

pub(super) async fn reject(
    pool: &SqlitePool,
    saga_id: &str,
    id: i64,
    header: &AuditHeader,
    event: NewEvent,
) -> Result<(), StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(database_error)?;
    sqlx::query("UPDATE saga_signals SET rejected_at = ? WHERE id = ? AND saga_id = ?")
        .bind(to_text(SystemTime::now()))
        .bind(id)
        .bind(saga_id)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
    insert_events(&mut tx, saga_id, header, vec![event]).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(())
}
