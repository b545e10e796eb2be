//! [`PostgresStore`]: for production. Many runners on many machines share one database;
//! leases are claimed with `FOR UPDATE SKIP LOCKED`, and timestamps come from the server's
//! clock so that runners need not agree on the time.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

mod batch;

use self::batch::PostgresBatch;
use super::batch::{Committer, GroupCommit, Op, Reply};
use super::sql::{self, RawAudit, RawRecord, database_error};
use super::time::{from_micros, to_micros};
use super::{
    Actor, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, PruneReport,
    SagaQuery, SagaRecord, SagaStore, Saved, StateCount, operator,
};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, EventType, NewEvent};
use crate::definition::BoxFuture;
use crate::error::StoreError;
use std::time::SystemTime;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        20_261_125_000_001,
        "create saga tables",
        include_str!("../../../../migrations/postgres/20261125000001_create_saga_tables.sql"),
    ),
    (
        20_261_128_000_001,
        "step status",
        include_str!("../../../../migrations/postgres/20261128000001_step_status.sql"),
    ),
];

/// The columns of `saga_checkpoints` as [`record`] reads them: integers widened, JSON as
/// text, timestamps as microseconds since the epoch.
pub(super) const COLUMNS: &str = "saga_id, saga_type, definition, fingerprint, state, \
    step_index::int8 AS step_index, current_step, attempt::int8 AS attempt, step_status, \
    context::text AS context, config::text AS config, error, failed_step, version, owner, \
    (extract(epoch FROM lease_expires_at) * 1000000)::int8 AS lease_expires_at, \
    recovery_count::int8 AS recovery_count, parked_from, cancel_requested, user_id, ip_address, \
    (extract(epoch FROM created_at) * 1000000)::int8 AS created_at, \
    (extract(epoch FROM updated_at) * 1000000)::int8 AS updated_at";

const AUDIT_COLUMNS: &str = "id, saga_id, saga_type, event_type, step_name, attempt::int8 AS attempt, \
    error_message, details, user_id, ip_address, \
    (extract(epoch FROM timestamp) * 1000000)::int8 AS timestamp";

/// Sagas in PostgreSQL.
///
/// ```no_run
/// # async fn demo() -> Result<(), saga_runtime::StoreError> {
/// use saga_runtime::store::PostgresStore;
/// use std::time::Duration;
///
/// // The seed's pool settings: 20 connections, 10 more at peak, pre-ping, hourly recycle.
/// let store = PostgresStore::builder("postgres://postgres@127.0.0.1/app")
///     .pool_size(20)
///     .max_overflow(10)
///     .pool_pre_ping(true)
///     .pool_recycle(Duration::from_secs(3600))
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    committer: Arc<Committer>,
}

/// Builds a [`PostgresStore`]; the defaults are the seed's "Connection Pooling" values.
#[derive(Debug, Clone)]
#[must_use = "call `connect` to open the store"]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: u32,
    max_overflow: u32,
    pre_ping: bool,
    recycle: Option<Duration>,
    acquire_timeout: Duration,
    schema: Option<String>,
    migrate: bool,
    group_commit: GroupCommit,
}

impl PostgresStoreBuilder {
    /// Connections kept open. Default 20.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Extra connections opened at peak and closed when idle. Default 10.
    pub fn max_overflow(mut self, overflow: u32) -> Self {
        self.max_overflow = overflow;
        self
    }

    /// Check a connection before handing it out. Default on.
    pub fn pool_pre_ping(mut self, on: bool) -> Self {
        self.pre_ping = on;
        self
    }

    /// Replace connections older than this. Default one hour; `None` keeps them.
    pub fn pool_recycle(mut self, recycle: impl Into<Option<Duration>>) -> Self {
        self.recycle = recycle.into();
        self
    }

    /// How long to wait for a free connection. Default 30 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Keep the saga tables in this schema (created if missing) instead of the default
    /// search path: one schema per tenant, or per test.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Group-commit settings (see [`GroupCommit`]). Default: batches of up to 500 writes,
    /// no waiting, four transactions in flight.
    pub fn group_commit(mut self, settings: GroupCommit) -> Self {
        self.group_commit = settings;
        self
    }

    /// Apply migrations on connect. Default on.
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Opens the pool (and applies migrations unless turned off).
    ///
    /// # Errors
    /// A malformed URL or schema name, an unreachable server, or a failed migration.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let mut options: PgConnectOptions =
            self.url
                .parse()
                .map_err(|e: sqlx::Error| StoreError::Invalid {
                    what: "PostgreSQL URL",
                    reason: e.to_string(),
                })?;
        if self.pool_size == 0 && self.max_overflow == 0 {
            return Err(StoreError::Invalid {
                what: "pool size",
                reason: "pool_size + max_overflow must be at least 1".into(),
            });
        }
        if let Some(schema) = &self.schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(StoreError::Invalid {
                    what: "schema name",
                    reason: format!("`{schema}`: use letters, digits and underscores"),
                });
            }
            let mut conn = sqlx::ConnectOptions::connect(&options).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&mut conn)
            .await?;
            sqlx::Connection::close(conn).await?;
            options = options.options([("search_path", schema.as_str())]);
        }
        // One direct connection first: an unreachable server, a refused login or a missing
        // database is reported as such, not as a pool timeout.
        let probe = sqlx::ConnectOptions::connect(&options).await?;
        sqlx::Connection::close(probe).await?;
        let pool = PgPoolOptions::new()
            .min_connections(self.pool_size.min(self.pool_size + self.max_overflow))
            .max_connections((self.pool_size + self.max_overflow).max(1))
            .test_before_acquire(self.pre_ping)
            .max_lifetime(self.recycle)
            .idle_timeout(Some(Duration::from_mins(10)))
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(options);
        // Fail now, with a clear error, if the server is unreachable.
        drop(pool.acquire().await?);
        let store = PostgresStore::with_settings(pool, self.group_commit);
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl PostgresStore {
    /// A builder over `url` with the seed's pool defaults.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            pool_size: 20,
            max_overflow: 10,
            pre_ping: true,
            recycle: Some(Duration::from_hours(1)),
            acquire_timeout: Duration::from_secs(30),
            schema: None,
            migrate: true,
            group_commit: GroupCommit::default().writers(4),
        }
    }

    /// Connects with the default pool and applies migrations.
    ///
    /// # Errors
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Uses an existing pool as it is (no migrations: call [`PostgresStore::migrate`]).
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self::with_settings(pool, GroupCommit::default().writers(4))
    }

    fn with_settings(pool: PgPool, settings: GroupCommit) -> Self {
        let committer = Committer::new(
            Arc::new(PostgresBatch::new(&pool, settings.writers)),
            settings,
        );
        PostgresStore {
            pool,
            committer: Arc::new(committer),
        }
    }

    /// Applies pending migrations (recorded in `_saga_migrations`, under a lock, so that
    /// many processes may start at once).
    ///
    /// # Errors
    /// A migration failed; nothing of it was applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sql::migrator(MIGRATIONS)
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    /// The connection pool, for plain SQL next to the store.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes a new saga through `conn`, typically inside the caller's own transaction, so
    /// that the saga exists if and only if the caller's writes commit. The saga has no owner
    /// yet; a runner's recovery loop (or `Executor::recover`) runs it after the commit.
    ///
    /// # Errors
    /// A database error; [`Created::Existing`] if the id is taken.
    pub async fn create_in(conn: &mut PgConnection, saga: NewSaga) -> Result<Created, StoreError> {
        create_on(conn, saga).await
    }
}

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

fn audit_record(row: &PgRow) -> Result<AuditRecord, StoreError> {
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

/// A duration as microseconds, for `$n * interval '1 microsecond'`.
pub(super) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

async fn insert_events(
    conn: &mut PgConnection,
    saga_id: &str,
    header: &AuditHeader,
    events: Vec<NewEvent>,
) -> Result<(), StoreError> {
    insert_events_many(conn, &[(saga_id, header, &events)]).await
}

/// An audit row to insert: the saga, its header, the event.
type EventRow<'a> = (&'a str, &'a AuditHeader, &'a NewEvent);

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

async fn create_on(conn: &mut PgConnection, saga: NewSaga) -> Result<Created, StoreError> {
    let lease = if saga.owner.is_some() {
        micros(saga.lease)
    } else {
        0
    };
    let inserted = sqlx::query(
        "INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, \
         step_index, current_step, attempt, step_status, context, config, version, owner, \
         lease_expires_at, recovery_count, user_id, ip_address, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'running', 0, $5, $12, $13, $6, $7, 1, $8, \
         now() + $9 * interval '1 microsecond', 0, $10, $11, now(), now()) \
         ON CONFLICT (saga_id) DO NOTHING",
    )
    .bind(&*saga.saga_id)
    .bind(&saga.header.saga_type)
    .bind(saga.definition)
    .bind(saga.fingerprint)
    .bind(saga.first_step)
    .bind(&saga.context)
    .bind(&saga.config)
    .bind(saga.owner.as_deref())
    .bind(lease)
    .bind(&saga.header.user_id)
    .bind(&saga.header.ip_address)
    .bind(i32::from(saga.owner.is_some()))
    .bind(crate::status::encode(&saga.steps))
    .execute(&mut *conn)
    .await
    .map_err(database_error)?;
    if inserted.rows_affected() == 0 {
        return match load_on(conn, &saga.saga_id).await? {
            Some(record) => Ok(Created::Existing(Box::new(record))),
            None => Err(StoreError::NotFound {
                saga_id: saga.saga_id.to_string(),
            }),
        };
    }
    insert_events(conn, &saga.saga_id, &saga.header, saga.events).await?;
    Ok(Created::New { version: 1 })
}

async fn load_on(conn: &mut PgConnection, saga_id: &str) -> Result<Option<SagaRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = $1"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(record).transpose()
}

impl PostgresStore {
    async fn claim_impl(&self, claim: Claim) -> Result<SagaRecord, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(database_error)?;
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

    async fn claim_expired_impl(
        &self,
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
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        // Locked rows belong to a concurrent claimer: skip them rather than wait.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints \
             WHERE state IN {} AND lease_expires_at <= now() AND definition = ANY($1) \
             ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            sql::ACTIVE_STATES
        )))
        .bind(&definitions)
        .bind(i64::from(request.limit) * 4)
        .fetch_all(&mut *tx)
        .await
        .map_err(database_error)?;
        let mut accepted: Vec<String> = Vec::new();
        for row in &rows {
            if accepted.len() >= request.limit as usize {
                break;
            }
            match record(row) {
                Ok(candidate) if filter(&candidate) => accepted.push(candidate.saga_id),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "skipping an unreadable saga row"),
            }
        }
        let claimed = if accepted.is_empty() {
            Vec::new()
        } else {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE saga_checkpoints SET owner = $1, \
                 lease_expires_at = now() + $2 * interval '1 microsecond', version = version + 1, \
                 recovery_count = recovery_count + 1, updated_at = now() \
                 WHERE saga_id = ANY($3) RETURNING {COLUMNS}"
            )))
            .bind(&*request.owner)
            .bind(micros(request.lease))
            .bind(&accepted)
            .fetch_all(&mut *tx)
            .await
            .map_err(database_error)?;
            rows.iter().map(record).collect::<Result<Vec<_>, _>>()?
        };
        tx.commit().await.map_err(database_error)?;
        Ok(claimed)
    }

    async fn renew_impl(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(saga_ids
            .iter()
            .filter(|id| renewed.iter().any(|r| r.as_str() == &***id))
            .cloned()
            .collect())
    }

    async fn release_impl(&self, owner: &str, saga_ids: &[Arc<str>]) -> Result<(), StoreError> {
        if saga_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = saga_ids.iter().map(ToString::to_string).collect();
        sqlx::query(
            "UPDATE saga_checkpoints SET lease_expires_at = now() WHERE owner = $1 AND saga_id = ANY($2)",
        )
        .bind(owner)
        .bind(&ids)
        .execute(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(())
    }

    async fn audit_log_impl(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM saga_audit_logs WHERE true"
        ));
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
                .push(" AND starts_with(event_type, ")
                .push_bind(prefix.clone())
                .push(")");
        }
        if let Some(user_id) = &q.user_id {
            query.push(" AND user_id = ").push_bind(user_id.clone());
        }
        if let Some(since) = q.since {
            query
                .push(" AND timestamp >= 'epoch'::timestamptz + ")
                .push_bind(to_micros(since))
                .push(" * interval '1 microsecond'");
        }
        if let Some(until) = q.until {
            query
                .push(" AND timestamp < 'epoch'::timestamptz + ")
                .push_bind(to_micros(until))
                .push(" * interval '1 microsecond'");
        }
        query.push(" ORDER BY timestamp, id");
        if let Some(limit) = q.limit {
            query.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        rows.iter().map(audit_record).collect()
    }

    async fn list_impl(&self, q: &SagaQuery) -> Result<Vec<SagaRecord>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints WHERE true"
        ));
        if let Some(state) = q.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(saga_type) = &q.saga_type {
            query.push(" AND saga_type = ").push_bind(saga_type.clone());
        }
        if let Some(since) = q.created_since {
            query
                .push(" AND created_at >= 'epoch'::timestamptz + ")
                .push_bind(to_micros(since))
                .push(" * interval '1 microsecond'");
        }
        if let Some(before) = q.updated_before {
            query
                .push(" AND updated_at < 'epoch'::timestamptz + ")
                .push_bind(to_micros(before))
                .push(" * interval '1 microsecond'");
        }
        query.push(" ORDER BY saga_checkpoints.created_at DESC, saga_id");
        if let Some(limit) = q.limit {
            query.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        rows.iter().map(record).collect()
    }

    async fn request_cancel_impl(
        &self,
        saga_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<SagaRecord, StoreError> {
        let reason = crate::text::clean(reason);
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE saga_checkpoints SET cancel_requested = $1 \
             WHERE saga_id = $2 AND state = 'running' RETURNING {COLUMNS}"
        )))
        .bind(&*reason)
        .bind(saga_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(database_error)?;
        let Some(row) = row else {
            let existing = load_on(&mut tx, saga_id).await?;
            tx.rollback().await.map_err(database_error)?;
            return Err(match existing {
                Some(record) => StoreError::InvalidState {
                    saga_id: record.saga_id,
                    state: record.state,
                    action: "cancel",
                },
                None => StoreError::NotFound {
                    saga_id: saga_id.to_owned(),
                },
            });
        };
        let record = record(&row)?;
        let header = operator::header(&record, actor);
        let event = NewEvent::now(EventType::CancelRequested).error(reason);
        insert_events(&mut tx, saga_id, &header, vec![event]).await?;
        tx.commit().await.map_err(database_error)?;
        Ok(record)
    }
    async fn stats_impl(&self, stuck_before: SystemTime) -> Result<Vec<StateCount>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT saga_type, state, count(*), \
             coalesce(sum(CASE WHEN state IN ('running', 'compensating') \
             AND updated_at < 'epoch'::timestamptz + $1 * interval '1 microsecond' THEN 1 ELSE 0 END), 0)::int8 \
             FROM saga_checkpoints GROUP BY saga_type, state ORDER BY saga_type, state",
        )
        .bind(to_micros(stuck_before))
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(sql::state_counts(rows))
    }

    /// Runs an operator action: locks the row, lets `change` decide, writes the result and
    /// its audit event in one transaction.
    async fn operator_impl(
        &self,
        saga_id: &str,
        actor: &Actor,
        change: impl FnOnce(&SagaRecord) -> Result<sql::OperatorChange, StoreError>,
    ) -> Result<SagaRecord, StoreError> {
        let mut tx = self.pool.begin().await.map_err(database_error)?;
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
        let set = change.set_clause(|i| format!("${i}"));
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

    async fn prune_impl(
        &self,
        before: SystemTime,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<PruneReport, StoreError> {
        let cutoff_time = before;
        let before = to_micros(before);
        let cutoff = "'epoch'::timestamptz + $1 * interval '1 microsecond'";
        let mut tx = self.pool.begin().await.map_err(database_error)?;
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
    async fn event_counts_impl(&self, since: SystemTime) -> Result<Vec<EventCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT saga_type, event_type, count(*) FROM saga_audit_logs \
             WHERE timestamp >= 'epoch'::timestamptz + $1 * interval '1 microsecond' \
             GROUP BY saga_type, event_type ORDER BY saga_type, event_type",
        )
        .bind(to_micros(since))
        .fetch_all(&self.pool)
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

    /// The migrations this database lacks (all of them if it has no saga tables).
    ///
    /// # Errors
    /// A database error other than a missing bookkeeping table.
    pub async fn pending_migrations(&self) -> Result<Vec<(i64, &'static str)>, StoreError> {
        let applied: Result<Vec<i64>, _> =
            sqlx::query_scalar("SELECT version FROM _saga_migrations WHERE success")
                .fetch_all(&self.pool)
                .await;
        let applied = match applied.map_err(database_error) {
            Ok(applied) => applied,
            Err(StoreError::NotMigrated(_)) => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(MIGRATIONS
            .iter()
            .filter(|(version, _, _)| !applied.contains(version))
            .map(|&(version, description, _)| (version, description))
            .collect())
    }
}

sql::impl_sql_store!(PostgresStore);
