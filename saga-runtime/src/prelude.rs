//! `use saga_runtime::prelude::*;` brings what a saga definition and its caller need.

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use saga_macros::{saga, step};
pub use serde::{Deserialize, Serialize};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::SqliteStore;
pub use crate::{
    Actor, AuditQuery, Child, Completed, Executor, MemoryStore, Orchestrator, Outcome, ResultExt,
    RunnerStore, Saga, SagaConfig, SagaError, SagaState, SagaStore, StepContext, StepError,
};
