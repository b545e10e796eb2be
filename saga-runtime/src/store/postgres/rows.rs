//! Rows in and out of PostgreSQL: the columns read, turning a row into a record, and
//! inserting audit rows.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use crate::audit::{AuditHeader, AuditRecord, NewEvent};
use crate::error::StoreError;
use crate::store::SagaRecord;
use crate::store::sql::{RawAudit, RawRecord, database_error};
use crate::store::time::{from_micros, to_micros};

/// The columns of `saga_checkpoints` as [`record`] reads them: integers widened, JSON as
/// text, timestamps as microseconds since the epoch.
pub(super) const COLUMNS: &str = "saga_id, saga_type, definition, fingerprint, state, \
    step_index::int8 AS step_index, current_step, attempt::int8 AS attempt, step_status, \
    context::text AS context, config::text AS config, error, failed_step, version, owner, \
    (extract(epoch FROM lease_expires_at) * 1000000)::int8 AS lease_expires_at, \
    (extract(epoch FROM wake_at) * 1000000)::int8 AS wake_at, \
    recovery_count::int8 AS recovery_count, parked_from, cancel_requested, waiting_for, signals, \
    user_id, ip_address, \
    (extract(epoch FROM created_at) * 1000000)::int8 AS created_at, \
    (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at";

/// The columns of `saga_audit_logs` as [`audit_record`] reads them.
pub(super) const AUDIT_COLUMNS: &str = "id, saga_id, saga_type, event_type, step_name, attempt::int8 AS attempt, \
    error_message, details, user_id, ip_address, \
    (extract(epoch FROM timestamp) * 1000000)::int8 AS timestamp";

pub(super) fn record(row: &PgRow) -> Result<SagaRecord, StoreError> {
    let micros = |column: &str| -> Result<Option<std::time::SystemTime>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(from_micros))
    };
    let saga_id: String = row.try_get("saga_id")?;
    let required = |column: &str| -> Result<std::time::SystemTime, StoreError> {
        micros(column)?.ok_or_else(|| StoreError::Corrupt {
            saga_id: saga_id.clone(),
            reason: format!("`{column}` is empty"),
        })
    };
    RawRecord {
        lease_expires_at: micros("lease_expires_at")?,
        wake_at: micros("wake_at")?,
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

pub(super) fn audit_record(row: &PgRow) -> Result<AuditRecord, StoreError> {
    let timestamp: i64 = row.try_get("timestamp")?;
    RawAudit {
        id: row.try_get("id")?,
        saga_id: row.try_get("saga_id")?,
        saga_type: row.try_get("saga_type")?,
        event_type: row.try_get("event_type")?,
        step_name: row.try_get("step_name")?,
        attempt: row.try_get("attempt")?,
        error_message: row.try_get("error_message")?,
        details: row.try_get("details")?,
        user_id: row.try_get("user_id")?,
        ip_address: row.try_get("ip_address")?,
        timestamp: from_micros(timestamp),
    }
    .validate()
}

pub(super) async fn insert_events(
    conn: &mut PgConnection,
    saga_id: &str,
    header: &AuditHeader,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    insert_events_many(conn, &[(saga_id, header, &events)]).await
}

/// Inserts the events of many sagas in one statement (arrays through unnest: one statement
/// text, one prepared plan).
pub(super) async fn insert_events_many(
    conn: &mut PgConnection,
    sagas: &[(&str, &AuditHeader, &Vec<NewEvent>)],
) -> Result<(), StoreError> {
    let rows: Vec<EventRow<'_>> = sagas
        .iter()
        .flat_map(|(id, header, events)| events.iter().map(move |e| (*id, *header, e)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: &dyn Fn(&EventRow<'_>) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(f).collect()
    };
    sqlx::query(
        "INSERT INTO saga_audit_logs (saga_id, saga_type, event_type, step_name, attempt, \
         error_message, details, user_id, ip_address, timestamp) \
         SELECT v.saga_id, v.saga_type, v.event_type, v.step_name, v.attempt, v.error_message, \
         v.details, v.user_id, v.ip_address, 'epoch'::timestamptz + v.ts_us * interval '1 microsecond' \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::int8[]) \
         AS v(saga_id, saga_type, event_type, step_name, attempt, error_message, details, \
         user_id, ip_address, ts_us)",
    )
    .bind(text(&|(id, _, _)| Some((*id).to_owned())))
    .bind(text(&|(_, h, _)| Some(h.saga_type.clone())))
    .bind(text(&|(_, _, e)| Some(e.event_type.as_str().to_owned())))
    .bind(text(&|(_, _, e)| e.step_name.as_deref().map(str::to_owned)))
    .bind(
        rows.iter()
            .map(|(_, _, e)| e.attempt.map(|a| i32::try_from(a).unwrap_or(i32::MAX)))
            .collect::<Vec<Option<i32>>>(),
    )
    .bind(text(&|(_, _, e)| e.error_message.clone()))
    .bind(text(&|(_, _, e)| e.details.clone()))
    .bind(text(&|(_, h, _)| h.user_id.clone()))
    .bind(text(&|(_, h, _)| h.ip_address.clone()))
    .bind(
        rows.iter()
            .map(|(_, _, e)| to_micros(e.timestamp))
            .collect::<Vec<i64>>(),
    )
    .execute(&mut *conn)
    .await
    .map_err(database_error)?;
    Ok(())
}

pub(super) async fn load_on(
    conn: &mut PgConnection,
    saga_id: &str,
) -> Result<Option<SagaRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = $1"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(record).transpose()
}

/// A duration as microseconds, for `$n * interval '1 microsecond'`.
pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// An audit row to insert: the saga, its header, the event.
type EventRow<'a> = (&'a str, &'a AuditHeader, &'a NewEvent);
