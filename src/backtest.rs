//! The deployment guide's backtest workflow, written with `#[saga]`.
//!
//! `create_backtest` (timeout 30 s, 3 retries) is compensated by `delete_backtest`;
//! `run_strategy` (timeout 300 s, 2 retries) by `cleanup_strategy`. The services are
//! stand-ins: strategies whose id ends in 7 are rejected for good, and the strategy runner
//! can be made to time out every n-th call, so that retries show.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use saga_runtime::prelude::*;

/// The saga's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestInput {
    pub strategy_id: i64,
}

/// The output of `create_backtest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backtest {
    pub backtest_id: i64,
    pub strategy_id: i64,
}

/// The output of `run_strategy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRun {
    pub trades: u32,
    pub profit: f64,
}

/// Stands in for the backtest service: keeps backtests in memory.
#[derive(Debug, Default)]
pub struct BacktestService {
    next_id: AtomicI64,
    backtests: Mutex<HashMap<i64, i64>>,
}

impl BacktestService {
    /// How many backtests exist (created and not deleted).
    pub fn len(&self) -> usize {
        self.backtests.lock().map_or(0, |b| b.len())
    }

    /// Whether no backtest exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stands in for the strategy runner.
#[derive(Debug, Default)]
pub struct StrategyRunner {
    calls: AtomicU32,
    /// Every n-th call (the first included) times out; 0 never.
    flaky_every: u32,
}

/// The workflow: its services, and whether to print each step as it happens.
#[derive(Debug, Default)]
pub struct BacktestWorkflow {
    pub backtests: BacktestService,
    pub runner: StrategyRunner,
    pub verbose: bool,
}

impl BacktestWorkflow {
    /// A workflow whose runner times out on every `flaky_every`-th call (0: never).
    #[must_use]
    pub fn new(flaky_every: u32, verbose: bool) -> Self {
        BacktestWorkflow {
            backtests: BacktestService::default(),
            runner: StrategyRunner {
                calls: AtomicU32::new(0),
                flaky_every,
            },
            verbose,
        }
    }

    fn say(&self, line: std::fmt::Arguments<'_>) {
        if self.verbose {
            println!("  {line}");
        }
    }
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
        self.say(format_args!(
            "create_backtest  (attempt {}): created backtest {backtest_id}",
            ctx.attempt()
        ));
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
        self.say(format_args!(
            "delete_backtest  (compensation): deleted backtest {}",
            create_backtest.backtest_id
        ));
        Ok(())
    }

    #[step(timeout = 300, retries = 2, compensate = "cleanup_strategy")]
    async fn run_strategy(
        &self,
        create_backtest: &Backtest,
        ctx: &StepContext,
    ) -> Result<StrategyRun, StepError> {
        if create_backtest.strategy_id % 10 == 7 {
            self.say(format_args!(
                "run_strategy     (attempt {}): strategy {} rejected its parameters",
                ctx.attempt(),
                create_backtest.strategy_id
            ));
            return Err(StepError::permanent(format!(
                "strategy {}: invalid parameters",
                create_backtest.strategy_id
            ))
            .with_type("invalid_strategy"));
        }
        let call = self.runner.calls.fetch_add(1, Ordering::SeqCst);
        if self.runner.flaky_every > 0 && call.is_multiple_of(self.runner.flaky_every) {
            self.say(format_args!(
                "run_strategy     (attempt {}): market data feed timed out, will retry",
                ctx.attempt()
            ));
            return Err(
                StepError::retryable("market data feed timed out").with_type("feed_timeout")
            );
        }
        let run = StrategyRun {
            trades: 42,
            profit: 1234.5,
        };
        self.say(format_args!(
            "run_strategy     (attempt {}): {} trades, profit {}",
            ctx.attempt(),
            run.trades,
            run.profit
        ));
        Ok(run)
    }

    async fn cleanup_strategy(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        self.say(format_args!(
            "cleanup_strategy (compensation): cleaned up backtest {}",
            create_backtest.backtest_id
        ));
        Ok(())
    }
}
