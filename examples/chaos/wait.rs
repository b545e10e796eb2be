//! The harness's waiting saga: the chain's four steps, but `charge` waits out a delay first
//! and `ship` waits for a signal `go` (its payload: the saga's index), both durably, so the
//! kill lands while sagas wait, while timers fall due and while signals are delivered and
//! taken. The child and, after the kill, the parent send each saga's signal under one key,
//! so exactly one is ever stored; the parent checks that it was taken once, by `ship`.

use saga_runtime::StoreError;
use saga_runtime::prelude::*;
use saga_runtime::store::{Actor, NewSignal, Sent};

use super::saga::{Chaos, ChaosInput, Shipped};

/// [`Chaos`], waiting before `charge` and for `ship`'s signal.
pub(crate) struct ChaosWait(pub(crate) Chaos);

/// The key every sender of a saga's signal uses.
pub(crate) const SIGNAL_KEY: &str = "go-once";

#[saga(name = "chaos_wait", input = ChaosInput)]
impl ChaosWait {
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

    // The deadline of the wait is 5 s, counted once: a saga whose signal never came fails
    // then, within the parent's recovery window. A signal whose wake was missed is taken
    // at the deadline (`late_wakes` counts those).
    #[step(
        timeout = 5,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_ship",
        compensate_retries = 20
    )]
    // The DSL hands every step a reference to the output it binds.
    #[allow(clippy::ref_option)]
    async fn ship(
        &self,
        input: &ChaosInput,
        charge: &Option<String>,
        #[signal] go: u32,
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        if charge.is_some() || go != input.index {
            return Err(StepError::permanent(format!(
                "wrong inputs: charge {charge:?}, signal {go}"
            )));
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
    async fn notify(
        &self,
        input: &ChaosInput,
        ship: &Shipped,
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        let Shipped = *ship;
        self.0.forward(input, ctx, 3).await
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.0.backward(input, ctx, 3).await
    }
}

/// Sends saga `id`'s signal (index `index`) under the one key, until it is stored or the
/// saga is past needing it; a saga that does not exist yet is waited for `tries` times
/// (after a kill, one that never was created is not). Sent untyped, by name, so that it
/// serves [`ChaosWait`] and [`ChaosBranches`](super::branches::ChaosBranches) alike.
/// Whether this call delivered it.
pub(crate) async fn send_go(
    store: &dyn saga_runtime::SagaStore,
    id: &str,
    index: u32,
    tries: u32,
) -> Result<bool, String> {
    for _ in 0..tries {
        let signal =
            NewSignal::new(id, "go", index.to_string(), Actor::new("chaos")).key(SIGNAL_KEY);
        match store.send_signal(signal).await {
            Ok(Sent::Delivered { .. }) => return Ok(true),
            // A duplicate (the key was used), or the saga ended already (it failed before
            // it reached `ship`): nothing to send.
            Ok(_) | Err(StoreError::InvalidState { .. }) => return Ok(false),
            // Not created yet (it is being enqueued): try again.
            Err(StoreError::NotFound { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(error) => return Err(format!("signal {id}: {error}")),
        }
    }
    Ok(false)
}
