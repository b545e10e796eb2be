//! The harness's chain saga: steps that write the ledger, sleep, and fail at seeded random.

use std::sync::OnceLock;
use std::time::Duration;

use saga_runtime::prelude::*;

use super::ledger::{Entry, Ledger};
use super::{HOSTILE_ERROR, Sabotage, mix, plan};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosInput {
    pub(crate) trial: u32,
    pub(crate) index: u32,
    /// Run by [`ChaosFan`], which cancels from its first step.
    #[serde(default)]
    pub(crate) fan: bool,
}

/// A unit struct: JSON `null`, like `()` and `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipped;

/// A saga whose steps only write to the ledger, sleep, and fail at seeded random. Their
/// outputs are the shapes that JSON renders as `null` or as nothing (`()`, `None`, a unit
/// struct) and an empty or large collection; each step takes the one before it, and
/// `undo_reserve` takes its own step's `()`, so a lost output shows up as a failed step or
/// compensation.
pub(crate) struct Chaos {
    pub(crate) ledger: Ledger,
    pub(crate) runner: String,
    pub(crate) seed: u64,
    pub(crate) orchestrator: OnceLock<Orchestrator>,
    pub(crate) sabotage: Option<Sabotage>,
}

#[saga(name = "chaos_order", input = ChaosInput)]
impl Chaos {
    #[step(
        timeout = 60,
        retries = 4,
        backoff_initial = "2ms",
        compensate = "undo_reserve",
        compensate_retries = 20
    )]
    async fn reserve(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.forward(input, ctx, 0).await
    }

    async fn undo_reserve(
        &self,
        input: &ChaosInput,
        reserve: &(),
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        let () = *reserve;
        self.backward(input, ctx, 0).await
    }

    #[step(
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
        self.forward(input, ctx, 1).await.map(|()| None)
    }

    async fn undo_charge(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 1).await
    }

    #[step(
        timeout = 60,
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
        ctx: &StepContext,
    ) -> Result<Shipped, StepError> {
        if charge.is_some() {
            return Err(StepError::permanent(
                "charge holds an output it never returned",
            ));
        }
        self.forward(input, ctx, 2).await.map(|()| Shipped)
    }

    async fn undo_ship(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 2).await
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
    ) -> Result<Vec<String>, StepError> {
        let Shipped = *ship;
        self.forward(input, ctx, 3).await?;
        // Every other saga keeps a large output, the rest an empty one.
        Ok(if input.index.is_multiple_of(2) {
            Vec::new()
        } else {
            vec!["ünïcødé \0 🚀".repeat(2_000); 4]
        })
    }

    async fn undo_notify(&self, input: &ChaosInput, ctx: &StepContext) -> Result<(), StepError> {
        self.backward(input, ctx, 3).await
    }
}

/// The saga a ledger entry belongs to: a child saga's (`<parent>/<step>`) is its parent's,
/// so that the parent is checked with its child's effects. A child's step that cancels
/// cancels the child and then its parent: the child alone could still complete (its last
/// step was under way) and its parent go on, which the checks would rightly take for a
/// step started after a cancellation.
pub(crate) fn family(saga_id: &str) -> &str {
    saga_id
        .split_once('/')
        .map_or(saga_id, |(parent, _)| parent)
}

impl Chaos {
    fn entry<'a>(
        &'a self,
        input: &ChaosInput,
        ctx: &'a StepContext,
        step: usize,
        kind: &'a str,
    ) -> Entry<'a> {
        Entry {
            trial: input.trial,
            saga_id: family(ctx.saga_id()),
            step,
            kind,
            runner: &self.runner,
            attempt: ctx.attempt(),
        }
    }

    fn roll(&self, input: &ChaosInput, step: usize, attempt: u32, salt: u64) -> u64 {
        mix(
            self.seed,
            &[
                u64::from(input.trial),
                u64::from(input.index),
                step as u64,
                u64::from(attempt),
                salt,
            ],
        )
    }

    async fn note(&self, entry: &Entry<'_>) -> Result<(), StepError> {
        self.ledger
            .record(entry)
            .await
            .map_err(|e| StepError::retryable(format!("ledger: {e}")))
    }

    pub(crate) async fn forward(
        &self,
        input: &ChaosInput,
        ctx: &StepContext,
        step: usize,
    ) -> Result<(), StepError> {
        let attempt = ctx.attempt();
        self.note(&self.entry(input, ctx, step, "start")).await?;
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 2) % 12,
        ))
        .await;
        // A transient failure on some first and second attempts: the step is retried.
        if attempt <= 2 && self.roll(input, step, attempt, 3) % 100 < 15 {
            return Err(StepError::retryable(HOSTILE_ERROR));
        }
        let plan = plan(self.seed, input.trial, input.index);
        if step == 3 && plan.fails {
            return Err(StepError::permanent(format!(
                "card declined: {HOSTILE_ERROR}"
            )));
        }
        self.note(&self.entry(input, ctx, step, "do")).await?;
        if self.sabotage == Some(Sabotage::DoubleDo) {
            self.note(&self.entry(input, ctx, step, "do")).await?;
        }
        let cancel_step = if input.fan { 0 } else { 2 };
        if step == cancel_step
            && plan.cancels
            && let Some(orchestrator) = self.orchestrator.get()
        {
            // A child saga cancels itself, then its parent (see [`family`]).
            let mut ids = vec![ctx.saga_id(), family(ctx.saga_id())];
            ids.dedup();
            for id in ids {
                orchestrator
                    .cancel(id, "customer cancelled", &Actor::new("chaos"))
                    .await
                    .map_err(|e| StepError::retryable(format!("cancel: {e}")))?;
            }
            self.note(&self.entry(input, ctx, step, "cancel")).await?;
        }
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 4) % 6,
        ))
        .await;
        Ok(())
    }

    pub(crate) async fn backward(
        &self,
        input: &ChaosInput,
        ctx: &StepContext,
        step: usize,
    ) -> Result<(), StepError> {
        let attempt = ctx.attempt();
        self.note(&self.entry(input, ctx, step, "undo_start"))
            .await?;
        tokio::time::sleep(Duration::from_millis(
            self.roll(input, step, attempt, 5) % 8,
        ))
        .await;
        if attempt <= 2 && self.roll(input, step, attempt, 6) % 100 < 10 {
            return Err(StepError::retryable(format!("refund: {HOSTILE_ERROR}")));
        }
        if self.sabotage == Some(Sabotage::SkipUndo) {
            return Ok(());
        }
        self.note(&self.entry(input, ctx, step, "undo")).await
    }
}
