//! The deployment guide's backtest workflow, written with the DSL, run to success and to compensation.
use saga_runtime::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestInput { pub strategy_id: i64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backtest { pub backtest_id: i64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRun { pub profit: f64 }

pub struct BacktestWorkflow { fail_run: AtomicBool, deleted: AtomicBool }

#[saga(name = "backtest_workflow", input = BacktestInput)]
impl BacktestWorkflow {
    #[step(timeout = 30, retries = 3, compensate = "delete_backtest")]
    async fn create_backtest(&self, input: &BacktestInput) -> Result<Backtest, StepError> {
        Ok(Backtest { backtest_id: input.strategy_id * 100 })
    }

    async fn delete_backtest(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        assert_eq!(create_backtest.backtest_id, 12300);
        self.deleted.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[step(timeout = 300, retries = 2, compensate = "cleanup_strategy")]
    async fn run_strategy(&self, create_backtest: &Backtest) -> Result<StrategyRun, StepError> {
        if self.fail_run.load(Ordering::SeqCst) {
            return Err(StepError::permanent("strategy crashed"));
        }
        Ok(StrategyRun { profit: create_backtest.backtest_id as f64 / 1000.0 })
    }

    async fn cleanup_strategy(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        let _ = create_backtest;
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let orchestrator = Orchestrator::builder(MemoryStore::new()).build().unwrap();
    let backtests = orchestrator.register(BacktestWorkflow {
        fail_run: AtomicBool::new(false),
        deleted: AtomicBool::new(false),
    });
    let config = SagaConfig::new("backtest_workflow").user_id("user_1").ip_address("127.0.0.1");

    let ok = backtests.execute(&config, BacktestInput { strategy_id: 123 }).await.unwrap();
    assert_eq!(ok.state(), SagaState::Completed);
    assert_eq!(ok.typed_state(), Some(BacktestWorkflowState::Completed));
    let ctx: &BacktestWorkflowContext = ok.context();
    assert_eq!(ctx.create_backtest.as_ref().map(|b| b.backtest_id), Some(12300));
    assert!(ctx.run_strategy.is_some());

    backtests.saga().fail_run.store(true, Ordering::SeqCst);
    let failed = backtests.execute(&config, BacktestInput { strategy_id: 123 }).await.unwrap();
    assert_eq!(failed.state(), SagaState::Failed);
    assert_eq!(failed.error().and_then(|e| e.step()), Some("run_strategy"));
    assert!(backtests.saga().deleted.load(Ordering::SeqCst));
}
