#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
pub mod __private;
pub mod audit;
mod backoff;
pub mod child;
pub mod codegen;
mod config;
mod context;
pub mod definition;
mod error;
mod executor;
mod metrics;
mod outputs;
pub mod prelude;
mod random;
mod state;
mod status;
pub mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod text;

pub use audit::{AuditQuery, AuditRecord, EventType};
pub use backoff::Backoff;
pub use child::{Child, Completed};
pub use config::SagaConfig;
pub use context::StepContext;
pub use definition::{Saga, SagaState, UnknownState};
pub use error::{ErrorClass, Result, ResultExt, SagaError, StepError, StoreError};
pub use executor::{
    Executor, Failure, Orchestrator, OrchestratorBuilder, Outcome, Waited, new_saga_id,
};
pub use metrics::SagaMetrics;
/// The `prometheus` crate, in the version the metrics are built with: register
/// [`SagaMetrics`] in a `saga_runtime::prometheus::Registry` without matching versions by
/// hand.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use prometheus;
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc(inline)]
pub use saga_macros::{saga, step};
/// sqlx, whose types appear in the SQL stores' API (`StoreError::Database` holds a
/// `sqlx::Error`, `PostgresStore::create_in` takes a `PgConnection`, `pool()` gives a pool):
/// this is the version they are from.
#[cfg(feature = "_sqlx")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;
pub use store::{
    Actor, CompensationStatus, MemoryStore, RunStatus, RunnerStore, SagaQuery, SagaRecord,
    SagaStore, StepStatus, WaitFor,
};
#[cfg(feature = "_sqlx")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use store::{GroupCommit, GroupCommitStats};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::{SqliteStore, SqliteStoreBuilder};
