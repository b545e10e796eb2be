//! Rows in and out of SQLite: the columns read, turning a row into a record, and inserting
//! audit rows.

use std::time::SystemTime;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::audit::{AuditHeader, AuditRecord, NewEvent};
use crate::error::StoreError;
use crate::store::SagaRecord;
use crate::store::sql::{RawAudit, RawRecord, database_error};
use crate::store::time::{from_text, to_text};

/// The columns of `saga_checkpoints`, in [`record`]'s order.
pub(super) const COLUMNS: &str = "saga_id, saga_type, definition, fingerprint, state, step_index, current_step, \
    attempt, step_status, context, config, error, failed_step, version, owner, lease_expires_at, wake_at, recovery_count, \
    parked_from, cancel_requested, waiting_for, signals, user_id, ip_address, created_at, updated_at";

pub(super) fn record(row: &SqliteRow) -> Result<SagaRecord, StoreError> {
    let saga_id: String = row.try_get("saga_id")?;
    let time = |column: &str| -> Result<Option<SystemTime>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| from_text(&t))
            .transpose()
            .map_err(|reason| StoreError::Corrupt {
                saga_id: saga_id.clone(),
                reason: format!("`{column}`: {reason}"),
            })
    };
    let required = |column: &str| -> Result<SystemTime, StoreError> {
        time(column)?.ok_or_else(|| StoreError::Corrupt {
            saga_id: saga_id.clone(),
            reason: format!("`{column}` is empty"),
        })
    };
    RawRecord {
        lease_expires_at: time("lease_expires_at")?,
        wake_at: time("wake_at")?,
        waiting_for: row.try_get("waiting_for")?,
        signals: row.try_get("signals")?,
        created_at: required("created_at")?,
        updated_at: required("updated_at")?,
        saga_type: row.try_get("saga_type")?,
        definition: row.try_get("definition")?,
        fingerprint: row.try_get("fingerprint")?,
        state: row.try_get("state")?,
        step_index: row.try_get("step_index")?,
        current_step: row.try_get("current_step")?,
        attempt: row.try_get("attempt")?,
        step_status: row.try_get("step_status")?,
        context: row.try_get("context")?,
        config: row.try_get("config")?,
        error: row.try_get("error")?,
        failed_step: row.try_get("failed_step")?,
        version: row.try_get("version")?,
        owner: row.try_get("owner")?,
        recovery_count: row.try_get("recovery_count")?,
        parked_from: row.try_get("parked_from")?,
        cancel_requested: row.try_get("cancel_requested")?,
        user_id: row.try_get("user_id")?,
        ip_address: row.try_get("ip_address")?,
        saga_id: saga_id.clone(),
    }
    .validate()
}

pub(super) fn audit_record(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let saga_id: String = row.try_get("saga_id")?;
    let timestamp: String = row.try_get("timestamp")?;
    let timestamp = from_text(&timestamp).map_err(|reason| StoreError::Corrupt {
        saga_id: saga_id.clone(),
        reason: format!("audit `timestamp`: {reason}"),
    })?;
    RawAudit {
        id: row.try_get("id")?,
        saga_type: row.try_get("saga_type")?,
        event_type: row.try_get("event_type")?,
        step_name: row.try_get("step_name")?,
        attempt: row.try_get("attempt")?,
        error_message: row.try_get("error_message")?,
        details: row.try_get("details")?,
        user_id: row.try_get("user_id")?,
        ip_address: row.try_get("ip_address")?,
        saga_id,
        timestamp,
    }
    .validate()
}

/// Inserts `events` of one saga in one statement.
pub(super) async fn insert_events(
    conn: &mut SqliteConnection,
    saga_id: &str,
    header: &AuditHeader,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    insert_events_many(conn, &[(saga_id, header, &events)]).await
}

/// Inserts the events of many sagas, in as few statements as the parameter limit allows.
pub(super) async fn insert_events_many(
    conn: &mut SqliteConnection,
    sagas: &[(&str, &AuditHeader, &Vec<NewEvent>)],
) -> Result<(), StoreError> {
    let rows: Vec<(&str, &AuditHeader, &NewEvent)> = sagas
        .iter()
        .flat_map(|(id, header, events)| events.iter().map(move |e| (*id, *header, e)))
        .collect();
    for chunk in rows.chunks(1_000) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO saga_audit_logs (saga_id, saga_type, event_type, step_name, attempt, \
             error_message, details, user_id, ip_address, timestamp) ",
        );
        query.push_values(chunk, |mut row, (saga_id, header, event)| {
            row.push_bind(*saga_id)
                .push_bind(&header.saga_type)
                .push_bind(event.event_type.as_str())
                .push_bind(event.step_name.as_deref())
                .push_bind(event.attempt.map(i64::from))
                .push_bind(event.error_message.as_deref())
                .push_bind(event.details.as_deref())
                .push_bind(&header.user_id)
                .push_bind(&header.ip_address)
                .push_bind(to_text(event.timestamp));
        });
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(database_error)?;
    }
    Ok(())
}

pub(super) async fn load_on(
    conn: &mut SqliteConnection,
    saga_id: &str,
) -> Result<Option<SagaRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = ?"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(record).transpose()
}

/// Why a fenced statement touched no row.
pub(super) async fn miss(conn: &mut SqliteConnection, saga_id: &str, expected: i64) -> StoreError {
    let found: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT version FROM saga_checkpoints WHERE saga_id = ?")
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await;
    match found {
        Ok(Some(found)) => StoreError::Fenced {
            saga_id: saga_id.to_owned(),
            expected,
            found: Some(found),
        },
        Ok(None) => StoreError::NotFound {
            saga_id: saga_id.to_owned(),
        },
        Err(error) => database_error(error),
    }
}
