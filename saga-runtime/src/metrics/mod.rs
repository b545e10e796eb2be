//! Prometheus metrics with the names the deployment guide's dashboard and alerts query (docs/GUIDE.md). With the `metrics` feature off, `noop.rs` takes
//! the place of `prom.rs` with the same API, so call sites carry no `cfg`.

#[cfg(not(feature = "metrics"))]
mod noop;
#[cfg(feature = "metrics")]
mod prom;

#[cfg(not(feature = "metrics"))]
pub use noop::SagaMetrics;
#[cfg(not(feature = "metrics"))]
pub(crate) use noop::TypeMetrics;
#[cfg(feature = "metrics")]
pub use prom::SagaMetrics;
#[cfg(feature = "metrics")]
pub(crate) use prom::TypeMetrics;
