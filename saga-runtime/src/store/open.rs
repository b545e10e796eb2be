//! Opening a store from a URL, and showing a URL without its password.

use std::sync::Arc;

#[cfg(feature = "postgres")]
use super::PostgresStore;
#[cfg(feature = "sqlite")]
use super::SqliteStore;
use super::{MemoryStore, SagaStore};
use crate::error::StoreError;

/// Opens the store a URL names: `sqlite://path.db` (or `sqlite::memory:`), `postgres://..`
/// (or `postgresql://..`), or `memory:`. SQL stores are migrated. This is how the examples
/// and the CLI follow `DATABASE_URL`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), saga_runtime::StoreError> {
/// let store = saga_runtime::store::open("memory:").await?;
/// assert!(store.load("nothing").await?.is_none());
/// assert!(saga_runtime::store::open("mysql://x").await.is_err());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`StoreError::Invalid`] for another scheme (or one whose feature is off); connection
/// and migration errors.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(clippy::unused_async) // async for the SQL stores
)]
pub async fn open(url: &str) -> Result<Arc<dyn SagaStore>, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url).await?)),
        _ => Err(StoreError::Invalid {
            what: "database URL",
            reason: format!(
                "`{}`: expected sqlite://FILE, postgres://.. or memory: (with the matching feature enabled)",
                redact(url)
            ),
        }),
    }
}

/// A database URL as it can be shown in logs and messages: its password replaced by `***`.
/// (The store errors already do this.)
///
/// ```
/// assert_eq!(
///     saga_runtime::store::redact("postgres://app:s3cret@db:5432/sagas"),
///     "postgres://app:***@db:5432/sagas"
/// );
/// ```
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
