//! [`SqliteStore`]: the embedded default. One file, no server, WAL mode.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod batch;
mod lease;
mod operator;
mod query;
mod rows;
mod signals;

use self::batch::SqliteBatch;
use super::batch::{Committer, GroupCommit, GroupCommitStats};
use super::sql::{self, OperatorChange, database_error};
use super::{
    Actor, Checkpoint, Claim, ClaimExpired, ClaimFilter, Created, EventCount, NewSaga, NewSignal,
    PendingSignal, PruneReport, RunnerStore, SagaQuery, SagaRecord, SagaStore, Saved, Sent,
    StateCount,
};
use crate::audit::{AuditHeader, AuditQuery, AuditRecord, NewEvent};
use crate::definition::BoxFuture;
use crate::error::StoreError;

/// The files of `migrations/sqlite/`, in version order (see `build.rs`).
const MIGRATIONS: &[(i64, &str, &str)] = crate::store::migrations::SQLITE;

/// The page cache of each connection, as `PRAGMA cache_size` takes it (negative: KiB):
/// SQLite's default, 2 MiB.
pub(super) const CACHE_SIZE: i64 = -2000;

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
    /// Bumped when a signal sent through this store makes a saga due (runners in other
    /// processes find it at their next recovery pass).
    wakes: Arc<tokio::sync::watch::Sender<u64>>,
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
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout)
            .foreign_keys(true);
        let options = if in_memory {
            options
        } else {
            // WAL is a setting of the file, made once by whichever process comes first;
            // every connection opened after finds it.
            wal(&options, self.busy_timeout).await?;
            options.journal_mode(SqliteJournalMode::Wal)
        };
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

/// Puts the database file in WAL mode. Switching takes a lock that SQLite's busy handler
/// does not wait for, so a process opening a new file while another does the same would
/// fail with `database is locked`: the switch is tried again until `busy_timeout`.
async fn wal(options: &SqliteConnectOptions, busy_timeout: Duration) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    let started = std::time::Instant::now();
    let mut conn = sqlx::SqliteConnection::connect_with(options).await?;
    loop {
        match sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut conn)
            .await
        {
            Ok(_) => break,
            Err(error) if started.elapsed() < busy_timeout && is_busy(&error) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(database_error(error)),
        }
    }
    conn.close().await.map_err(database_error)
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`, with any extended code.
fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(crate::error::transient_sqlite_code))
}

impl SqliteStore {
    /// What group commit has done since the store opened (see [`GroupCommitStats`]).
    #[must_use]
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.committer.stats()
    }

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
            wakes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Applies pending migrations (recorded in `_saga_migrations`), under the database's
    /// write lock: processes that open one new file at once wait for the first to migrate
    /// it (as long as the busy timeout), then find nothing left to do.
    ///
    /// # Errors
    /// A migration failed; nothing of it was applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let mut conn = self.pool.acquire().await.map_err(database_error)?;
        // `BEGIN IMMEDIATE` takes the write lock at once, so that reading which migrations
        // are applied and applying the rest are one step for every other process; each
        // migration runs in a savepoint of this transaction.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(database_error)?;
        sql::migrator(MIGRATIONS)
            .run(&mut *tx)
            .await
            .map_err(StoreError::Migrate)?;
        tx.commit().await.map_err(database_error)
    }

    /// The connection pool, for plain SQL next to the store.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

impl RunnerStore for SqliteStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(self.committer.create(saga))
    }

    fn save(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(async move {
            let tells = checkpoint.tell.is_some();
            let saved = self.committer.save(checkpoint).await;
            if tells && matches!(saved, Ok(Saved::Written { .. })) {
                // Its signal may have made a saga due: this process's runners look.
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
        Some(self.wakes.subscribe())
    }
}

impl SagaStore for SqliteStore {
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
