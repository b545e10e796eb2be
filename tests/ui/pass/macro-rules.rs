//! A saga written by a `macro_rules!` macro: the generated code's local variables must not
//! take the caller's hygiene (regression: `self` and `__saga_ctx` did).
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub n: u64 }

macro_rules! two_steps {
    ($ty:ident, $name:literal, $first:ident, $undo:ident, $second:ident) => {
        pub struct $ty;

        #[saga(name = $name, input = Input)]
        impl $ty {
            #[step(compensate = $undo)]
            async fn $first(&self, input: &Input) -> Result<u64, StepError> {
                Ok(input.n + 1)
            }

            async fn $undo(&self, $first: &u64) -> Result<(), StepError> {
                let _ = $first;
                Ok(())
            }

            #[step]
            async fn $second(&self, $first: &u64, ctx: &StepContext) -> Result<u64, StepError> {
                let _ = ctx.attempt();
                Ok($first * 2)
            }
        }
    };
}

two_steps!(Doubler, "doubler", add_one, undo_add_one, double);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let orchestrator = Orchestrator::builder(MemoryStore::new()).build().unwrap();
    let doubler = orchestrator.register(Doubler);
    let outcome = doubler.execute(&SagaConfig::default(), Input { n: 4 }).await.unwrap();
    assert_eq!(outcome.context().double, Some(10));
}
