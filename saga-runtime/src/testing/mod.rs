//! For tests of code built on the runtime (the `test-util` feature). Not for production.
//!
//! [`conformance`] checks a store of your own against the contract every store of this crate
//! meets:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use saga_runtime::SagaStore;
//! # async fn my_fresh_store() -> Arc<dyn SagaStore> { Arc::new(saga_runtime::MemoryStore::new()) }
//! # async fn demo() {
//! // In a #[tokio::test(flavor = "multi_thread")]: a fresh, empty store for every case.
//! saga_runtime::testing::conformance::run_all(|| my_fresh_store()).await;
//! # }
//! ```

pub mod conformance;
