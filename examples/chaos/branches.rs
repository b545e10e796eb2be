//! The harness's saga whose branches wait: after `reserve`, `charge` waits out a delay and
//! `ship` waits for its signal `go` at once, as branches, while the other runs; `notify`
//! joins them. The kill lands while one branch waits and the other runs, while the saga
//! waits as a whole, and while a wake resumes only the branch that is due. Its cancellation
//! comes from `reserve`, which runs alone, as the fan-out's does.

use saga_runtime::prelude::*;

use super::saga::{Chaos, ChaosInput, Shipped};

/// [`Chaos`], with `charge` (after a delay) and `ship` (for a signal) as waiting branches.
pub(crate) struct ChaosBranches(pub(crate) Chaos);

#[saga(name = "chaos_branches", input = ChaosInput)]
impl ChaosBranches {
    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_reserve",
        compensate_retries = 20
    )]
    async fn reserve(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.forward(input, ctx, 0).await
    }

    async fn undo_reserve(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 0).await
    }

    #[step(
        concurrent,
        delay = "15ms",
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_charge",
        compensate_retries = 20
    )]
    async fn charge(
        &self,
        input: &ChaosInput,
        reserve: &(),
        ctx: &StepContext,
    ) -> Result<Option<String>, StepError> {
        let () = *reserve;
        self.0.forward(input, ctx, 1).await.map(|()| None)
    }

    async fn undo_charge(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 1).await
    }

    // The deadline of the wait is 5 s, counted once, as the chain's waiting saga's.
    #[step(
        concurrent,
        timeout = 5,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_ship",
        compensate_retries = 20
    )]
    async fn ship(
        &self,
        input: &ChaosInput,
        reserve: &(),
        #[signal] go: u32,
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        let () = *reserve;
        if go != input.index {
            return Err(StepError::permanent(format!("wrong signal {go}")));
        }
        self.0.forward(input, ctx, 2).await.map(|()| Shipped)
    }

    async fn undo_ship(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 2).await
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_notify",
        compensate_retries = 20
    )]
    // The DSL hands every step a reference to the output it binds.
    #[allow(clippy::ref_option)]
    async fn notify(
        &self,
        input: &ChaosInput,
        charge: &Option<String>,
        ship: &Shipped,
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        let Shipped = *ship;
        if charge.is_some() {
            return Err(StepError::permanent(
                "charge holds an output it never returned",
            ));
        }
        self.0.forward(input, ctx, 3).await
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 3).await
    }
}
