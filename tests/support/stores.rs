//! One harness per store for the conformance suite: the memory store, a SQLite file in a
//! temporary folder, and PostgreSQL in a schema of its own (dropped afterwards).

use std::sync::Arc;

use saga_runtime::store::{MemoryStore, PostgresStore, SagaRecord, SqliteStore};
use saga_runtime::{RunnerStore, SagaStore};

/// The variable that points the PostgreSQL tests at a server.
pub const POSTGRES_URL_VAR: &str = "SAGA_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// What a test may do to the rows behind the store's back.
pub enum Raw {
    Memory(MemoryStore),
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

pub struct Harness {
    pub backend: Backend,
    pub store: Arc<dyn SagaStore>,
    pub raw: Raw,
    schema: Option<(String, String)>,
    dir: Option<TempDir>,
}

/// A temporary folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("saga-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (u64::from(nanos) << 16) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The PostgreSQL URL, or `None` (with a note) when the tests should skip. Under CI the
/// variable is required.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{POSTGRES_URL_VAR} must be set in CI: the PostgreSQL tests may not skip there"
            );
            eprintln!("note: {POSTGRES_URL_VAR} is not set; skipping the PostgreSQL case");
            None
        }
    }
}

impl Harness {
    /// A fresh, empty, migrated store; `None` if the backend is unavailable (PostgreSQL
    /// without a URL outside CI).
    pub async fn open(backend: Backend) -> Option<Harness> {
        match backend {
            Backend::Memory => {
                let store = MemoryStore::new();
                Some(Harness {
                    backend,
                    store: Arc::new(store.clone()),
                    raw: Raw::Memory(store),
                    schema: None,
                    dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = TempDir::new("sqlite");
                let store = SqliteStore::open(dir.0.join("sagas.db"))
                    .await
                    .expect("open sqlite");
                Some(Harness {
                    backend,
                    raw: Raw::Sqlite(store.pool().clone()),
                    store: Arc::new(store),
                    schema: None,
                    dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let url = postgres_url()?;
                let schema = format!("saga_test_{}", unique());
                let store = PostgresStore::builder(url.clone())
                    .schema(schema.clone())
                    .pool_size(2)
                    .max_overflow(4)
                    .connect()
                    .await
                    .expect("connect to PostgreSQL");
                Some(Harness {
                    backend,
                    raw: Raw::Postgres(store.pool().clone()),
                    store: Arc::new(store),
                    schema: Some((url, schema)),
                    dir: None,
                })
            }
        }
    }

    /// A second handle on the same database, as another process would open it.
    pub fn reopen(&self) -> Arc<dyn SagaStore> {
        match &self.raw {
            Raw::Memory(store) => Arc::new(store.clone()),
            Raw::Sqlite(pool) => Arc::new(SqliteStore::from_pool(pool.clone())),
            Raw::Postgres(pool) => Arc::new(PostgresStore::from_pool(pool.clone())),
        }
    }

    /// Runs `sql` (SQL stores), or `edit` on the memory row.
    pub async fn tamper(&self, saga_id: &str, sql: &str, edit: impl FnOnce(&mut SagaRecord)) {
        match &self.raw {
            Raw::Memory(store) => {
                let mut record = self.store.load(saga_id).await.unwrap().unwrap();
                edit(&mut record);
                store.put_raw(record);
            }
            Raw::Sqlite(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(sql.replace("$1", "?")))
                    .bind(saga_id)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Raw::Postgres(pool) => {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .bind(saga_id)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }

    /// The raw `state`, `context`, `version`, `fingerprint` and `owner` of a row, as text.
    pub async fn raw_row(&self, saga_id: &str) -> Vec<Option<String>> {
        let sql = "SELECT state, CAST(context AS TEXT), CAST(version AS TEXT), fingerprint, owner, \
                   CAST(recovery_count AS TEXT) FROM saga_checkpoints WHERE saga_id = $1";
        match &self.raw {
            Raw::Memory(store) => {
                let r = store.load(saga_id).await.unwrap().unwrap();
                vec![
                    Some(r.state.to_string()),
                    Some(r.context),
                    Some(r.version.to_string()),
                    Some(r.fingerprint),
                    r.owner,
                    Some(r.recovery_count.to_string()),
                ]
            }
            Raw::Sqlite(pool) => {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.replace("$1", "?")))
                    .bind(saga_id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                (0..6)
                    .map(|i| sqlx::Row::try_get(&row, i).unwrap())
                    .collect()
            }
            Raw::Postgres(pool) => {
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .bind(saga_id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
                (0..6)
                    .map(|i| sqlx::Row::try_get(&row, i).unwrap())
                    .collect()
            }
        }
    }

    /// Where another process finds this database: the SQLite file, or the PostgreSQL
    /// schema (on the server of [`postgres_url`]). `None` for the memory store.
    pub fn location(&self) -> Option<String> {
        match (&self.schema, &self.dir) {
            (Some((_, schema)), _) => Some(schema.clone()),
            (None, Some(dir)) => Some(dir.0.join("sagas.db").display().to_string()),
            (None, None) => None,
        }
    }

    /// Drops the PostgreSQL schema; nothing is left behind.
    pub async fn close(self) {
        if let Some((url, schema)) = &self.schema {
            if let Raw::Postgres(pool) = &self.raw {
                pool.close().await;
            }
            let pool = sqlx::PgPool::connect(url)
                .await
                .expect("connect for cleanup");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .expect("drop test schema");
            pool.close().await;
        }
    }
}

/// Runs each named `async fn(&Harness)` of the calling file against every store: one test
/// per store and case, in modules `memory`, `sqlite` and `postgres`.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = super::Harness::open(super::Backend::Memory).await.unwrap();
                    super::$case(&harness).await;
                    harness.close().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = super::Harness::open(super::Backend::Sqlite).await.unwrap();
                    super::$case(&harness).await;
                    harness.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = super::Harness::open(super::Backend::Postgres).await else {
                        return;
                    };
                    super::$case(&harness).await;
                    harness.close().await;
                }
            )*
        }
    };
}
