//! Signals in PostgreSQL: delivered with their audit row and the wake of a saga waiting for
//! them in one transaction, which also `NOTIFY`s `saga_wake` so that every runner listening
//! claims the saga at once; taken oldest first; rejected with their audit row.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use super::rows::{COLUMNS, insert_events, record};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::SagaState;
use crate::error::StoreError;
use crate::store::sql::database_error;
use crate::store::{NewSignal, PendingSignal, Sent, operator};

/// The channel runners listen on; its payload is the saga id.
const CHANNEL: &str = "saga_wake";

/// Stores `signal` (unless its key was seen), writes `signal_received`, and makes the saga
/// due now if it waits for it. `Ok((sent, woken))`.
pub(super) async fn send(pool: &PgPool, signal: NewSignal) -> Result<(Sent, bool), StoreError> {
    let mut tx = pool.begin().await.map_err(database_error)?;
    let delivered = deliver_on(&mut tx, &signal).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(delivered)
}

/// [`send`] within the caller's transaction (a refusal writes nothing).
pub(super) async fn deliver_on(
    tx: &mut PgConnection,
    signal: &NewSignal,
) -> Result<(Sent, bool), StoreError> {
    operator::validate_signal(signal)?;
    // The row lock orders a signal against the saga's own writes.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = $1 FOR UPDATE"
    )))
    .bind(&signal.saga_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound {
            saga_id: signal.saga_id.clone(),
        });
    };
    let record = record(&row)?;
    operator::check_signal(&record, &signal.name)?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO saga_signals (saga_id, name, payload, dedup_key, sent_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&signal.saga_id)
    .bind(&signal.name)
    .bind(&signal.payload)
    .bind(&signal.key)
    .bind(&signal.sender.user_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database_error)?;
    let Some(id) = id else {
        let earlier: i64 = sqlx::query_scalar(
            "SELECT id FROM saga_signals WHERE saga_id = $1 AND name = $2 AND dedup_key = $3",
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
        sqlx::query("UPDATE saga_checkpoints SET wake_at = now() WHERE saga_id = $1")
            .bind(&signal.saga_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        // Delivered at commit, to every session listening.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
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
    pool: &PgPool,
    saga_id: &str,
    name: &str,
) -> Result<Option<PendingSignal>, StoreError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, payload FROM saga_signals WHERE saga_id = $1 AND name = $2 \
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
    pool: &PgPool,
    saga_id: &str,
    id: i64,
    header: &AuditHeader,
    event: NewEvent,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(database_error)?;
    sqlx::query("UPDATE saga_signals SET rejected_at = now() WHERE id = $1 AND saga_id = $2")
        .bind(id)
        .bind(saga_id)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
    insert_events(&mut tx, saga_id, header, vec![event]).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(())
}

/// Listens on `saga_wake` for as long as `wakes` has a strong owner (the store), bumping it
/// on every notification; reconnects after a lost connection, and bumps it then too, since
/// a notification may have been missed meanwhile.
pub(super) fn listen(pool: PgPool, wakes: &Arc<watch::Sender<u64>>) {
    let weak: Weak<watch::Sender<u64>> = Arc::downgrade(wakes);
    tokio::spawn(async move {
        let bump = |weak: &Weak<watch::Sender<u64>>| match weak.upgrade() {
            Some(wakes) => {
                wakes.send_modify(|n| *n = n.wrapping_add(1));
                true
            }
            None => false,
        };
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listener.await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for signals; runners poll meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if weak.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            if !bump(&weak) {
                return;
            }
            loop {
                // Wake up now and then to notice that the store is gone.
                match tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await {
                    // A notification; or `None`: the connection was lost and will be
                    // re-established, so catch up on what may have been missed.
                    Ok(Ok(_)) => {
                        if !bump(&weak) {
                            return;
                        }
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "listening for signals failed; reconnecting");
                        break;
                    }
                    Err(_) if weak.strong_count() == 0 => return,
                    Err(_) => {}
                }
            }
        }
    });
}
