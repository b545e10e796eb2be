//! The harness's fan-out saga: the same four steps as `Chaos`, but `charge` and `ship` run
//! at once after `reserve`, and `notify` waits for both. Its steps write the same ledger
//! with the same seeded behaviour, so the parent checks it with the same invariants. Its
//! cancellation comes from `reserve`, which runs alone, so that "nothing starts after a
//! cancellation" stays a strict check.

use saga_runtime::prelude::*;

use super::saga::{Chaos, ChaosInput, Shipped};

/// [`Chaos`], with its middle steps concurrent.
pub(crate) struct ChaosFan(pub(crate) Chaos);

#[saga(name = "chaos_fan", input = ChaosInput)]
impl ChaosFan {
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

    /// Unlike the chain's, it does not take its step's output: a crash between `reserve`'s
    /// cancellation request and its checkpoint leaves `reserve`'s outcome unknown, and only
    /// a compensation that needs no output can undo it (the chain covers the other case).
    async fn undo_reserve(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 0).await
    }

    #[step(
        concurrent,
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

    #[step(
        concurrent,
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_ship",
        compensate_retries = 20
    )]
    async fn ship(
        &self,
        input: &ChaosInput,
        reserve: &(),
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        let () = *reserve;
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
    ) -> Result<Vec<String>, StepError> {
        let Shipped = *ship;
        if charge.is_some() {
            return Err(StepError::permanent(
                "charge holds an output it never returned",
            ));
        }
        self.0.forward(input, ctx, 3).await?;
        Ok(if input.index.is_multiple_of(2) {
            Vec::new()
        } else {
            vec!["ünïcødé \0 🚀".repeat(2_000); 4]
        })
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 3).await
    }
}
