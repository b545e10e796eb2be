use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub amount: i64 }

pub struct Payments;

#[saga(name = "payments", input = Input)]
impl Payments {
    #[step(timeout = "500ms", retries = 1)]
    async fn charge(&self, input: &Input, ctx: &StepContext) -> Result<String, StepError> {
        assert_eq!(ctx.attempt(), 1);
        assert_eq!(ctx.user_id(), Some("alice"));
        assert!(ctx.remaining() <= std::time::Duration::from_millis(500));
        Ok(format!("{}:{}", ctx.idempotency_key(), input.amount))
    }

    #[step]
    async fn receipt(&self, context: &saga_runtime::StepContext, charge: &String) -> Result<String, StepError> {
        Ok(format!("{} via {}", charge, context.step()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let orchestrator = Orchestrator::builder(MemoryStore::new()).build().unwrap();
    let payments = orchestrator.register(Payments);
    let outcome = payments
        .execute_with_id("pay-1", &SagaConfig::default().user_id("alice"), Input { amount: 5 })
        .await
        .unwrap();
    assert_eq!(outcome.context().charge.as_deref(), Some("pay-1:charge:5"));
    assert_eq!(outcome.context().receipt.as_deref(), Some("pay-1:charge:5 via receipt"));
}
