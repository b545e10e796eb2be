use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestInput {
    pub strategy_id: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backtest {
    pub id: i64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRun {
    pub profit: f64,
}

pub struct BacktestWorkflow;

#[saga(name = "backtest_workflow", input = BacktestInput)]
impl BacktestWorkflow {
    #[step(timeout = 30, retries = 3, compensate = "delete_backtest")]
    async fn create_backtest(&self, input: &BacktestInput) -> Result<Backtest, StepError> {
        Ok(Backtest {
            id: input.strategy_id * 10,
        })
    }

    async fn delete_backtest(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        let _ = create_backtest;
        Ok(())
    }

    #[step(timeout = 300, retries = 2, compensate = "cleanup_strategy")]
    async fn run_strategy(&self, create_backtest: &Backtest) -> Result<StrategyRun, StepError> {
        let _ = create_backtest;
        Err(StepError::permanent("boom"))
    }

    async fn cleanup_strategy(&self, create_backtest: &Backtest) -> Result<(), StepError> {
        let _ = create_backtest;
        Ok(())
    }
}

#[tokio::test]
async fn smoke() {
    let orch = Orchestrator::builder(MemoryStore::new()).build().unwrap();
    let exec = orch.register(BacktestWorkflow);
    let out = exec
        .execute(&SagaConfig::default(), BacktestInput { strategy_id: 1 })
        .await
        .unwrap();
    println!("{out:?} {:?}", out.context());
    let log = orch
        .audit_log(&AuditQuery::new().saga_id(out.saga_id()))
        .await
        .unwrap();
    for e in log {
        println!(
            "{} {:?} {:?} {:?}",
            e.event_type, e.step_name, e.attempt, e.error_message
        );
    }
    assert_eq!(out.state(), SagaState::Failed);
}
