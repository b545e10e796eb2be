//! The deployment guide's backtest workflow (`src/backtest.rs`): run once to success, with a transient
//! failure retried on the way, then once with `run_strategy` failing for good, so that
//! `create_backtest` is compensated.
//!
//! ```text
//! cargo run --example backtest                          # SQLite file ./backtest.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example backtest
//! ```

use saga_runtime::prelude::*;
use saga_suite::backtest::{BacktestInput, BacktestWorkflow};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://backtest.db".to_owned());
    println!(
        "store: {} (set DATABASE_URL to use another)",
        saga_runtime::store::redact(&url)
    );
    let store = saga_runtime::store::open(&url).await?;
    let orchestrator = Orchestrator::builder(store).build()?;
    // The strategy runner's first call times out; strategy ids ending in 7 are rejected.
    let backtests = orchestrator.register(BacktestWorkflow::new(1_000, true));
    let config = SagaConfig::new("backtest_workflow")
        .user_id("user_123")
        .ip_address("127.0.0.1");

    for (title, strategy_id) in [
        ("run 1: strategy 123", 123),
        ("run 2: strategy 7, whose run fails for good", 7),
    ] {
        println!("\n== {title} ==");
        let outcome = backtests
            .execute(&config, BacktestInput { strategy_id })
            .await?;
        println!("outcome: {} (saga {})", outcome.state(), outcome.saga_id());
        let context = outcome.context();
        if let Some(backtest) = &context.create_backtest {
            println!("  context.create_backtest = {backtest:?}");
        }
        if let Some(run) = &context.run_strategy {
            println!("  context.run_strategy    = {run:?}");
        }
        if let Some(error) = outcome.error() {
            println!("  error: {error}");
        }
        let trail: Vec<String> = orchestrator
            .audit_log(&AuditQuery::new().saga_id(outcome.saga_id()))
            .await?
            .into_iter()
            .map(|e| match e.step_name {
                Some(step) => format!("{}({step})", e.event_type),
                None => e.event_type,
            })
            .collect();
        println!("  audit: {}", trail.join(" → "));
    }
    Ok(())
}
