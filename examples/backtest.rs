//! The seed's backtest workflow, written with `#[saga]`: run once to success (with a
//! transient failure retried on the way), then once with `run_strategy` failing for good,
//! so that `create_backtest` is compensated.
//!
//! ```text
//! cargo run --example backtest                          # SQLite file ./backtest.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example backtest
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestInput {
    pub strategy_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backtest {
    pub backtest_id: i64,
    pub strategy_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRun {
    pub trades: u32,
    pub profit: f64,
}

/// Stands in for the backtest service: keeps backtests in memory.
#[derive(Default)]
pub struct BacktestService {
    next_id: AtomicI64,
    backtests: Mutex<HashMap<i64, i64>>,
}

/// Stands in for the strategy runner: strategy 7 is broken; the first call of the
/// day finds the market-data feed slow.
#[derive(Default)]
pub struct StrategyRunner {
    calls: AtomicU32,
}

pub struct BacktestWorkflow {
    backtests: BacktestService,
    runner: StrategyRunner,
}

#[saga(name = "backtest_workflow", input = BacktestInput)]
impl BacktestWorkflow {
    #[step(timeout = 30, retries = 3, compensate = "delete_backtest")]
    async fn create_backtest(
        &self,
        input: &BacktestInput,
        ctx: &StepContext,
    ) -> Result<Backtest, StepError> {
        let backtest_id = 100 + self.backtests.next_id.fetch_add(1, Ordering::SeqCst);
        self.backtests
            .backtests
            .lock()
            .map_err(|_| StepError::permanent("backtest store poisoned"))?
            .insert(backtest_id, input.strategy_id);
        println!(
            "  create_backtest  (attempt {}): created backtest {backtest_id}",
            ctx.attempt()
        );
        Ok(Backtest {
            backtest_id,
            strategy_id: input.strategy_id,
        })
    }

    async fn delete_backtest(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        self.backtests
            .backtests
            .lock()
            .map_err(|_| StepError::permanent("backtest store poisoned"))?
            .remove(&create_backtest.backtest_id);
        println!(
            "  delete_backtest  (compensation): deleted backtest {}",
            create_backtest.backtest_id
        );
        Ok(())
    }

    #[step(timeout = 300, retries = 2, compensate = "cleanup_strategy")]
    async fn run_strategy(
        &self,
        create_backtest: &Backtest,
        ctx: &StepContext,
    ) -> Result<StrategyRun, StepError> {
        if create_backtest.strategy_id == 7 {
            println!(
                "  run_strategy     (attempt {}): strategy 7 rejected its parameters",
                ctx.attempt()
            );
            return Err(StepError::permanent("strategy 7: invalid parameters")
                .with_type("invalid_strategy"));
        }
        if self.runner.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            println!(
                "  run_strategy     (attempt {}): market data feed timed out, will retry",
                ctx.attempt()
            );
            return Err(
                StepError::retryable("market data feed timed out").with_type("feed_timeout")
            );
        }
        let run = StrategyRun {
            trades: 42,
            profit: 1234.5,
        };
        println!(
            "  run_strategy     (attempt {}): {} trades, profit {}",
            ctx.attempt(),
            run.trades,
            run.profit
        );
        Ok(run)
    }

    async fn cleanup_strategy(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        println!(
            "  cleanup_strategy (compensation): cleaned up backtest {}",
            create_backtest.backtest_id
        );
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://backtest.db".to_owned());
    println!(
        "store: {} (set DATABASE_URL to use another)",
        saga_runtime::store::redact(&url)
    );
    let store = saga_runtime::store::open(&url).await?;
    let orchestrator = Orchestrator::builder(store).build()?;
    let backtests = orchestrator.register(BacktestWorkflow {
        backtests: BacktestService::default(),
        runner: StrategyRunner::default(),
    });
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
