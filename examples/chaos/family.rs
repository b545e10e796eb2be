//! The harness's parent and child sagas: the same four ledger steps, but `charge` and
//! `ship` are the steps of a child saga (`ChaosKid`) that the parent's `ship` step starts
//! and waits for. The child writes the ledger under its parent's id, so the parent is
//! checked with the same invariants as the other sagas: a completed parent has all four
//! effects, a failed one has every effect undone, the child's included (its parent's
//! compensation undoes or cancels it). The kill lands while children start, run, end and
//! tell their parents, and while parents undo them. The parent also checks that its child
//! was started once.

use saga_runtime::prelude::*;

use super::saga::{Chaos, ChaosInput, Shipped};

/// The parent: `reserve`, then a child for `charge` and `ship`, then `notify`.
pub(crate) struct ChaosParent(pub(crate) Chaos);

/// The child: `charge` and `ship`, as the chain's.
pub(crate) struct ChaosKid(pub(crate) Chaos);

#[saga(name = "chaos_parent", input = ChaosInput)]
impl ChaosParent {
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

    // The deadline of the wait for the child is 5 s, as for the waiting saga's signal: a
    // child whose runner died before it told the parent is found at the deadline.
    #[step(child, timeout = 5, retries = 4, backoff_initial = "2ms")]
    async fn ship(&self, input: &ChaosInput) -> Result<Child<ChaosKid>, StepError> {
        Ok(Child::start(input.clone()))
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_notify",
        compensate_retries = 20
    )]
    async fn notify(
        &self,
        input: &ChaosInput,
        ship: &Completed<ChaosKid>,
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        if ship.context().ship.is_none() {
            return Err(StepError::permanent("the child completed without shipping"));
        }
        self.0.forward(input, ctx, 3).await
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 3).await
    }
}

#[saga(name = "chaos_kid", input = ChaosInput)]
impl ChaosKid {
    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_charge",
        compensate_retries = 20
    )]
    async fn charge(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.forward(input, ctx, 1).await
    }

    async fn undo_charge(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 1).await
    }

    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_ship",
        compensate_retries = 20
    )]
    async fn ship(
        &self,
        input: &ChaosInput,
        charge: &(),
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        let () = *charge;
        self.0.forward(input, ctx, 2).await.map(|()| Shipped)
    }

    async fn undo_ship(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 2).await
    }
}
