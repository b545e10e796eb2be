//! [`PostgresStore`]: for production. Many runners on many machines share one database;
//! leases are claimed with `FOR UPDATE SKIP LOCKED`, and timestamps come from the server's
//! clock so that runners need not agree on the time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

mod batch;
mod lease;
mod operator;
mod query;
mod rows;
mod signals;

use self::batch::PostgresBatch;
use super::batch::{Committer, GroupCommit, GroupCommitStats};
use super::sql::{self, OperatorChange};
use super::{
    Actor, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, NewSignal,
    PendingSignal, PruneReport, RunnerStore, SagaQuery, SagaRecord, SagaStore, Saved, Sent,
    StateCount,
};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, NewEvent};
use crate::definition::BoxFuture;
use crate::error::StoreError;

/// The files of `migrations/postgres/`, in version order (see `build.rs`).
const MIGRATIONS: &[(i64, &str, &str)] = crate::store::migrations::POSTGRES;

/// Transactions in flight at once by default: the second starts only under a backlog
/// (see [`GroupCommit`]); on the 2-core machine of BENCHMARKS.md it lifts
/// throughput at 1,000 concurrent sagas by a third, and more did not help.
const WRITERS: usize = 2;

/// Sagas in PostgreSQL.
///
/// ```no_run
/// # async fn demo() -> Result<(), saga_runtime::StoreError> {
/// use saga_runtime::store::PostgresStore;
/// use std::time::Duration;
///
/// // The deployment guide's pool settings: 20 connections, 10 more at peak, pre-ping, hourly recycle.
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
    /// Bumped on every `saga_wake` notification (a signal made a saga due), once a runner
    /// asks for it: the listener starts then.
    wakes: Arc<tokio::sync::watch::Sender<u64>>,
    listening: Arc<std::sync::Once>,
}

/// Builds a [`PostgresStore`]; the defaults are the "Connection pooling" values of docs/GUIDE.md.
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
    /// no waiting, two writers (the second only under a backlog).
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
    /// What group commit has done since the store opened (see [`GroupCommitStats`]).
    #[must_use]
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.committer.stats()
    }

    /// A builder over `url` with the deployment guide's pool defaults (docs/GUIDE.md).
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
            group_commit: GroupCommit::default().writers(WRITERS),
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
        Self::with_settings(pool, GroupCommit::default().writers(WRITERS))
    }

    fn with_settings(pool: PgPool, settings: GroupCommit) -> Self {
        let committer = Committer::new(
            Arc::new(PostgresBatch::new(&pool, settings.writers)),
            settings,
        );
        PostgresStore {
            pool,
            committer: Arc::new(committer),
            wakes: Arc::new(tokio::sync::watch::Sender::new(0)),
            listening: Arc::new(std::sync::Once::new()),
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
        batch::create_on(conn, saga).await
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
        sql::pending(MIGRATIONS, applied)
    }
}

impl RunnerStore for PostgresStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(self.committer.create(saga))
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(async move {
            let tells = checkpoint.tell.is_some();
            let saved = self.committer.save(checkpoint).await;
            if tells && matches!(saved, Ok(Saved::Written { .. })) {
                // This process's runners at once; the others through the notification.
                self.wakes.send_modify(|n| *n = n.wrapping_add(1));
            }
            saved
        })
    }

    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(query::load(&self.pool, saga_id))
    }

    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<SagaRecord, StoreError>> {
        Box::pin(lease::claim(&self.pool, claim))
    }

    fn claim_expired<'a>(
        &'a self,
        request: ClaimExpired,
        filter: ClaimFilter<'a>,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(lease::claim_expired(&self.pool, request, filter))
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, StoreError>> {
        Box::pin(lease::renew(&self.pool, owner, saga_ids, lease))
    }

    fn release<'a>(
        &'a self,
        owner: &'a str,
        saga_ids: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(lease::release(&self.pool, owner, saga_ids))
    }

    fn append_audit<'a>(
        &'a self,
        saga_id: &'a str,
        header: &'a AuditHeader,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(query::append_audit(&self.pool, saga_id, header, events))
    }

    fn next_signal<'a>(
        &'a self,
        saga_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PendingSignal>, StoreError>> {
        Box::pin(signals::next(&self.pool, saga_id, name))
    }

    fn reject_signal<'a>(
        &'a self,
        saga_id: &'a str,
        id: i64,
        header: &'a AuditHeader,
        event: NewEvent,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(signals::reject(&self.pool, saga_id, id, header, event))
    }

    fn wakes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        self.listening
            .call_once(|| signals::listen(self.pool.clone(), &self.wakes));
        Some(self.wakes.subscribe())
    }
}

impl SagaStore for PostgresStore {
    fn audit_log<'a>(
        &'a self,
        query: &'a AuditQuery,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(query::audit_log(&self.pool, query))
    }

    fn list<'a>(
        &'a self,
        query: &'a SagaQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(query::list(&self.pool, query))
    }

    fn request_cancel<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(operator::request_cancel(&self.pool, saga_id, reason, actor))
    }

    fn stats(
        &self,
        stuck_before: SystemTime,
        overdue_before: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<StateCount>, StoreError>> {
        Box::pin(query::stats(&self.pool, stuck_before, overdue_before))
    }

    fn resume<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(operator::change(&self.pool, saga_id, actor, move |row| {
            OperatorChange::resume(row, reason)
        }))
    }

    fn mark_failed<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(operator::change(&self.pool, saga_id, actor, move |row| {
            OperatorChange::mark_failed(row, reason)
        }))
    }

    fn request_undo<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<SagaRecord, StoreError>> {
        Box::pin(operator::change(&self.pool, saga_id, actor, move |row| {
            OperatorChange::undo(row, reason)
        }))
    }

    fn prune<'a>(
        &'a self,
        before: SystemTime,
        dry_run: bool,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<PruneReport, StoreError>> {
        Box::pin(operator::prune(&self.pool, before, dry_run, actor))
    }

    fn send_signal(&self, signal: NewSignal) -> BoxFuture<'_, Result<Sent, StoreError>> {
        Box::pin(async move {
            let (sent, woken) = signals::send(&self.pool, signal).await?;
            if woken {
                // This process's runners at once; the others through the notification.
                self.wakes.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(sent)
        })
    }

    fn event_counts(
        &self,
        since: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<EventCount>, StoreError>> {
        Box::pin(query::event_counts(&self.pool, since))
    }
}
