//! The expansion snapshots of `saga-macros/tests/expand/`, compiled against the real runtime
//! and run: a snapshot that no longer compiles, or whose saga no longer runs, fails here.
//! (`cargo test -p saga-macros expansion_snapshots` checks that they match what the macro
//! generates now.)
// The snapshots are generated code, which clippy does not lint where the macro emits it;
// their step bodies ignore their parameters.
#![allow(clippy::all, clippy::pedantic, unused_variables, dead_code)]

use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
}

/// The step bodies of the snapshots, which stand for the user's code: `Ok` with a default.
fn todo<T: Stub>() -> T {
    T::stub()
}

trait Stub {
    fn stub() -> Self;
}

impl<T: Default, E> Stub for Result<T, E> {
    fn stub() -> Self {
        Ok(T::default())
    }
}

mod backtest {
    use super::todo;
    use saga_runtime::prelude::*;

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct BacktestInput {
        pub strategy_id: i64,
    }
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Backtest {
        pub backtest_id: i64,
    }
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct StrategyRun {
        pub profit: f64,
    }
    pub struct BacktestWorkflow;

    include!("../saga-macros/tests/expand/backtest.expanded.rs");
}

mod pivot {
    use super::{Order, todo};
    use saga_runtime::prelude::*;

    pub struct Checkout;

    include!("../saga-macros/tests/expand/pivot.expanded.rs");
}

mod step_context {
    use super::{Order, todo};
    use saga_runtime::prelude::*;

    pub struct Payments;

    include!("../saga-macros/tests/expand/step_context.expanded.rs");
}

mod renamed_crate {
    use super::{Order, todo};
    use saga_runtime as renamed;
    use saga_runtime::prelude::{StepError, step};

    // `vis = pub(crate)`: the generated types match this type's visibility.
    pub(crate) struct Renamed;

    include!("../saga-macros/tests/expand/renamed.expanded.rs");
}

#[tokio::test]
async fn every_expanded_snapshot_compiles_and_runs() {
    let orchestrator = Orchestrator::builder(MemoryStore::new())
        .recovery(false)
        .build()
        .unwrap();
    let config = SagaConfig::default();

    let backtest = orchestrator.register(backtest::BacktestWorkflow);
    let outcome = backtest
        .execute(&config, backtest::BacktestInput { strategy_id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());

    let checkout = orchestrator.register(pivot::Checkout);
    let outcome = checkout.execute(&config, Order { id: 1 }).await.unwrap();
    assert!(outcome.is_completed());
    assert_eq!(outcome.context().reserve, Some(()));
    assert_eq!(outcome.context().charge, Some(None));
    assert!(<pivot::Checkout as Saga>::DEFINITION.steps()[1].is_pivot());

    let payments = orchestrator.register(step_context::Payments);
    let outcome = payments.execute(&config, Order { id: 1 }).await.unwrap();
    assert_eq!(outcome.context().pay.as_deref(), Some(""));

    let renamed = orchestrator.register(renamed_crate::Renamed);
    let outcome = renamed.execute(&config, Order { id: 1 }).await.unwrap();
    let data: &renamed_crate::Data = outcome.context();
    assert_eq!(data.only, Some(0));
    assert_eq!(outcome.typed_state(), Some(renamed_crate::Phase::Completed));
}
