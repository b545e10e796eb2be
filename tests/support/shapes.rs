//! Sagas whose step outputs are the shapes users reach and JSON renders oddly: `()`, a unit
//! struct, `None`, an empty collection and a large string of hostile text. Each step takes the
//! output of the one before, so a lost output fails the next step.
#![allow(dead_code)]

use std::sync::Arc;

use saga_runtime::prelude::*;

use super::{Input, Script};

/// A unit struct: serialized as JSON `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker;

/// The names of [`Shapes`]' steps, in order.
pub const SHAPE_STEPS: [&str; 5] = ["unit", "marker", "nothing", "empty", "big"];

/// The large output of step `big`: NUL, control characters, non-ASCII text, 200 KB.
pub fn big_output() -> String {
    let mut text = String::from("nul\0 bell\x07 esc\x1b[0m ünïcødé 🚀 東京 \"quoted\" \\ ");
    while text.len() < 200_000 {
        text.push_str("lorem ipsum ");
    }
    text
}

/// Five steps with odd outputs. Compensations: `undo_unit` and `undo_nothing` take their
/// step's own output (so an unknown outcome skips them), `undo_marker` and `undo_big` do not;
/// `empty` has none.
pub struct Shapes(pub Arc<Script>);

// The DSL hands every step a reference to the output it binds: `&Vec<_>`, `&Option<_>`.
#[allow(clippy::ptr_arg, clippy::ref_option)]
#[saga(name = "shapes", input = Input)]
impl Shapes {
    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_unit",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn unit(&self, input: &Input, ctx: &StepContext) -> Result<(), StepError> {
        let _ = input;
        self.0.act("unit", ctx).await.map(drop)
    }

    async fn undo_unit(&self, unit: &(), ctx: &StepContext) -> Result<(), StepError> {
        let () = *unit;
        self.0.act("undo_unit", ctx).await.map(drop)
    }

    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_marker",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn marker(&self, unit: &(), ctx: &StepContext) -> Result<Marker, StepError> {
        let () = *unit;
        self.0.act("marker", ctx).await.map(|_| Marker)
    }

    async fn undo_marker(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("undo_marker", ctx).await.map(drop)
    }

    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_nothing",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn nothing(&self, marker: &Marker, ctx: &StepContext) -> Result<Option<u32>, StepError> {
        assert_eq!(*marker, Marker);
        self.0.act("nothing", ctx).await.map(|_| None)
    }

    async fn undo_nothing(
        &self,
        nothing: &Option<u32>,
        ctx: &StepContext,
    ) -> Result<(), StepError> {
        assert_eq!(*nothing, None);
        self.0.act("undo_nothing", ctx).await.map(drop)
    }

    #[step(timeout = "1s", retries = 2, backoff_initial = "100ms", jitter = 0)]
    async fn empty(
        &self,
        nothing: &Option<u32>,
        ctx: &StepContext,
    ) -> Result<Vec<String>, StepError> {
        assert_eq!(*nothing, None);
        self.0.act("empty", ctx).await.map(|_| Vec::new())
    }

    #[step(
        timeout = "1s",
        retries = 2,
        compensate = "undo_big",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn big(&self, empty: &Vec<String>, ctx: &StepContext) -> Result<String, StepError> {
        assert!(empty.is_empty());
        self.0.act("big", ctx).await.map(|_| big_output())
    }

    async fn undo_big(&self, empty: &Vec<String>, ctx: &StepContext) -> Result<(), StepError> {
        assert!(empty.is_empty());
        self.0.act("undo_big", ctx).await.map(drop)
    }
}

/// Which steps a [`Shapes`] context holds an output for.
pub fn shape_outputs(context: &ShapesContext) -> [bool; 5] {
    [
        context.unit.is_some(),
        context.marker.is_some(),
        context.nothing.is_some(),
        context.empty.is_some(),
        context.big.is_some(),
    ]
}

/// A compensated step, a pivot and a step after it, all returning `()`.
pub struct UnitPivot(pub Arc<Script>);

#[saga(name = "unit_pivot", input = Input)]
impl UnitPivot {
    #[step(
        timeout = "1s",
        retries = 1,
        compensate = "undo_a",
        backoff_initial = "10ms",
        jitter = 0
    )]
    async fn a(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("a", ctx).await.map(drop)
    }

    async fn undo_a(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("undo_a", ctx).await.map(drop)
    }

    #[step(
        pivot,
        timeout = "1s",
        retries = 1,
        backoff_initial = "10ms",
        jitter = 0
    )]
    async fn b(&self, a: &(), ctx: &StepContext) -> Result<(), StepError> {
        let () = *a;
        self.0.act("b", ctx).await.map(drop)
    }

    // No `retries`: after the pivot a step retries until it succeeds.
    #[step(
        timeout = "1s",
        backoff_initial = "10ms",
        backoff_max = "40ms",
        jitter = 0
    )]
    async fn c(&self, b: &(), ctx: &StepContext) -> Result<(), StepError> {
        let () = *b;
        self.0.act("c", ctx).await.map(drop)
    }
}

/// An orchestrator on `store` as runner `runner_id`, with both sagas registered; no
/// background recovery.
pub fn shaped(
    store: impl saga_runtime::store::IntoStore,
    runner_id: &str,
    script: &Arc<Script>,
) -> (
    Orchestrator,
    saga_runtime::Executor<Shapes>,
    saga_runtime::Executor<UnitPivot>,
) {
    let orchestrator = Orchestrator::builder(store)
        .runner_id(runner_id)
        .jitter_seed(7)
        .recovery(false)
        .build()
        .expect("orchestrator");
    let _ = script.orchestrator.set(orchestrator.clone());
    let shapes = orchestrator.register(Shapes(script.clone()));
    let pivot = orchestrator.register(UnitPivot(script.clone()));
    (orchestrator, shapes, pivot)
}
