//! [`SqliteStore`]: the embedded default. One file, no server, WAL mode.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

mod batch;

use self::batch::SqliteBatch;
use super::batch::{Committer, GroupCommit, Op, Reply};
use super::sql::{self, ACTIVE_STATES, RawAudit, RawRecord, database_error};
use super::time::{from_text, later, to_text};
use super::{
    Actor, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, PruneReport,
    SagaQuery, SagaRecord, SagaStore, Saved, StateCount, operator,
};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, EventType, NewEvent};
use crate::definition::BoxFuture;
use crate::error::StoreError;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        20_261_125_000_001,
        "create saga tables",
        include_str!("../../../../migrations/sqlite/20261125000001_create_saga_tables.sql"),
    ),
    (
        20_261_128_000_001,
        "step status",
        include_str!("../../../../migrations/sqlite/20261128000001_step_status.sql"),
    ),
];

/// The columns of `saga_checkpoints`, in [`record`]'s order.
pub(super) const COLUMNS: &str = "saga_id, saga_type, definition, fingerprint, state, step_index, current_step, \
    attempt, step_status, context, config, error, failed_step, version, owner, lease_expires_at, recovery_count, \
    parked_from, cancel_requested, user_id, ip_address, created_at, updated_at";

/// Sagas in a SQLite database file.
///
/// ```no_run
/// # async fn demo() -> Result<(), saga_runtime::StoreError> {
/// use saga_runtime::store::SqliteStore;
/// use std::time::Duration;
///
/// let store = SqliteStore::open("sagas.db").await?; // created and migrated if needed
/// // The same, from a URL, with settings:
/// let store = SqliteStore::builder("sqlite://sagas.db")
///     .connections(8)
///     .busy_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    committer: Arc<Committer>,
}

/// Builds a [`SqliteStore`]; the same shape as
/// [`PostgresStoreBuilder`](crate::store::PostgresStoreBuilder).
#[derive(Debug, Clone)]
#[must_use = "call `connect` to open the store"]
pub struct SqliteStoreBuilder {
    source: Source,
    connections: u32,
    busy_timeout: Duration,
    migrate: bool,
    group_commit: GroupCommit,
}

/// Where the database is.
#[derive(Debug, Clone)]
enum Source {
    Url(String),
    Path(std::path::PathBuf),
}

impl SqliteStoreBuilder {
    fn new(source: Source) -> Self {
        SqliteStoreBuilder {
            source,
            connections: 4,
            busy_timeout: Duration::from_secs(10),
            migrate: true,
            group_commit: GroupCommit::default(),
        }
    }

    /// Connections in the pool. Default 4 (SQLite has one writer; readers use the others).
    /// An in-memory database (`sqlite::memory:`) always uses exactly one: each connection
    /// would be a database of its own.
    pub fn connections(mut self, connections: u32) -> Self {
        self.connections = connections;
        self
    }

    /// How long a statement waits for a file locked by another connection or process
    /// before failing with `SQLITE_BUSY` (which the runtime then retries). Default 10 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Group-commit settings (see [`GroupCommit`]). Default: batches of up to 500 writes,
    /// no waiting, one transaction in flight.
    pub fn group_commit(mut self, settings: GroupCommit) -> Self {
        self.group_commit = settings;
        self
    }

    /// Apply migrations on connect. Default on; off, see
    /// [`SqliteStore::pending_migrations`] and [`SqliteStore::migrate`].
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Opens the database (creating the file if needed), in WAL mode, and applies the
    /// migrations unless turned off.
    ///
    /// # Errors
    /// A malformed URL, zero connections, or a database that cannot be opened or migrated.
    pub async fn connect(self) -> Result<SqliteStore, StoreError> {
        let (options, in_memory) = match &self.source {
            Source::Path(path) => (SqliteConnectOptions::new().filename(path), false),
            Source::Url(url) => (
                SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Invalid {
                    what: "SQLite URL",
                    reason: e.to_string(),
                })?,
                url.contains(":memory:") || url.contains("mode=memory"),
            ),
        };
        if self.connections == 0 {
            return Err(StoreError::Invalid {
                what: "connections",
                reason: "at least one connection is needed".into(),
            });
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { self.connections })
            .min_connections(1)
            .connect_with(options)
            .await?;
        let store = SqliteStore::with_settings(pool, self.group_commit);
        if self.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl SqliteStore {
    /// A builder over a `sqlite:` URL (`sqlite://sagas.db`, `sqlite::memory:`).
    pub fn builder(url: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(Source::Url(url.into()))
    }

    /// Connects to a `sqlite:` URL with the default settings, creating the file if needed,
    /// and applies the migrations.
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Opens the database file at `path` (a path, not a URL), creating it if needed, with
    /// the default settings, and applies the migrations.
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::connect`].
    pub async fn open(path: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        SqliteStoreBuilder::new(Source::Path(path.as_ref().to_path_buf()))
            .connect()
            .await
    }

    /// An in-memory database (one connection), migrated: gone when the store is dropped.
    ///
    /// # Errors
    /// SQLite could not start.
    pub async fn memory() -> Result<Self, StoreError> {
        Self::connect("sqlite::memory:").await
    }

    /// Uses an existing pool as it is (no migrations: call [`SqliteStore::migrate`]).
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self::with_settings(pool, GroupCommit::default())
    }

    fn with_settings(pool: SqlitePool, settings: GroupCommit) -> Self {
        let committer = Committer::new(Arc::new(SqliteBatch { pool: pool.clone() }), settings);
        SqliteStore {
            pool,
            committer: Arc::new(committer),
        }
    }

    /// Applies pending migrations (recorded in `_saga_migrations`).
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
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

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

fn audit_record(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
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
async fn insert_events(
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

async fn load_on(
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
async fn miss(conn: &mut SqliteConnection, saga_id: &str, expected: i64) -> StoreError {
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

impl SqliteStore {
    async fn claim_impl(&self, claim: Claim) -> Result<SagaRecord, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(database_error)?;
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

    async fn claim_expired_impl(
        &self,
        request: ClaimExpired,
        filter: ClaimFilter<'_>,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        if request.definitions.is_empty() || request.limit == 0 {
            return Ok(Vec::new());
        }
        // IMMEDIATE takes the write lock first, so the read and the claims are one step.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(database_error)?;
        let now = SystemTime::now();
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints WHERE state IN {ACTIVE_STATES} AND lease_expires_at <= "
        ));
        query.push_bind(to_text(now)).push(" AND definition IN (");
        let mut names = query.separated(", ");
        for definition in &request.definitions {
            names.push_bind(*definition);
        }
        // Rows the filter refuses must not starve the others: look further than the limit.
        query
            .push(") ORDER BY lease_expires_at LIMIT ")
            .push_bind(i64::from(request.limit) * 4);
        let rows = query
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(database_error)?;
        let mut claimed = Vec::new();
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
                 recovery_count = recovery_count + 1, updated_at = ? \
                 WHERE saga_id = ? AND version = ? RETURNING {COLUMNS}"
            )))
            .bind(&*request.owner)
            .bind(to_text(later(now, request.lease)))
            .bind(to_text(now))
            .bind(&candidate.saga_id)
            .bind(candidate.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database_error)?;
            if let Some(row) = row {
                claimed.push(record(&row)?);
            }
        }
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
        let mut query =
            QueryBuilder::<Sqlite>::new("UPDATE saga_checkpoints SET lease_expires_at = ");
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
        let mut query =
            QueryBuilder::<Sqlite>::new("UPDATE saga_checkpoints SET lease_expires_at = ");
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
        query
            .build()
            .execute(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(())
    }

    async fn audit_log_impl(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
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
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        rows.iter().map(audit_record).collect()
    }

    async fn list_impl(&self, q: &SagaQuery) -> Result<Vec<SagaRecord>, StoreError> {
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
        query.push(" ORDER BY created_at DESC, saga_id");
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
            "UPDATE saga_checkpoints SET cancel_requested = ? \
             WHERE saga_id = ? AND state = 'running' RETURNING {COLUMNS}"
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
             coalesce(sum(CASE WHEN state IN ('running', 'compensating') AND updated_at < ? THEN 1 ELSE 0 END), 0) \
             FROM saga_checkpoints GROUP BY saga_type, state ORDER BY saga_type, state",
        )
        .bind(to_text(stuck_before))
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(sql::state_counts(rows))
    }

    /// Runs an operator action: reads the row, lets `change` decide, writes the result
    /// and its audit event, all under the write lock.
    async fn operator_impl(
        &self,
        saga_id: &str,
        actor: &Actor,
        change: impl FnOnce(&SagaRecord) -> Result<sql::OperatorChange, StoreError>,
    ) -> Result<SagaRecord, StoreError> {
        let mut tx = self
            .pool
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
        let set = change.set_clause(|_| "?".to_owned());
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

    async fn prune_impl(
        &self,
        before: SystemTime,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<PruneReport, StoreError> {
        let cutoff_time = before;
        let before = to_text(before);
        let mut tx = self
            .pool
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
    async fn event_counts_impl(&self, since: SystemTime) -> Result<Vec<EventCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT saga_type, event_type, count(*) FROM saga_audit_logs WHERE timestamp >= ? \
             GROUP BY saga_type, event_type ORDER BY saga_type, event_type",
        )
        .bind(to_text(since))
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

sql::impl_sql_store!(SqliteStore);
