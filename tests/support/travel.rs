//! A saga with a fan-out: `flight`, `hotel` and `car` start at once, `charge` (the pivot)
//! waits for all three, then `confirm` and `notify` run together after it. Each step follows
//! its script and returns its attempt number.
#![allow(dead_code)]

use std::sync::Arc;

use saga_runtime::prelude::*;

use super::{Input, Script};

pub struct Trip(pub Arc<Script>);

#[saga(name = "trip", input = Input)]
impl Trip {
    #[step(
        concurrent,
        timeout = "30s",
        retries = 2,
        backoff_initial = "100ms",
        jitter = 0,
        compensate = "cancel_flight"
    )]
    async fn flight(&self, input: &Input, ctx: &StepContext) -> Result<u32, StepError> {
        let _ = input;
        self.0.act("flight", ctx).await
    }

    #[step(
        concurrent,
        timeout = "30s",
        retries = 2,
        backoff_initial = "100ms",
        jitter = 0,
        compensate = "cancel_hotel"
    )]
    async fn hotel(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("hotel", ctx).await
    }

    #[step(
        concurrent,
        timeout = "30s",
        retries = 2,
        backoff_initial = "100ms",
        jitter = 0,
        compensate = "cancel_car"
    )]
    async fn car(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("car", ctx).await
    }

    #[step(
        pivot,
        timeout = "30s",
        retries = 2,
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn charge(
        &self,
        flight: &u32,
        hotel: &u32,
        car: &u32,
        ctx: &StepContext,
    ) -> Result<u32, StepError> {
        let _ = (flight, hotel, car);
        self.0.act("charge", ctx).await
    }

    #[step(timeout = "30s", backoff_initial = "100ms", jitter = 0)]
    async fn confirm(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("confirm", ctx).await
    }

    #[step(
        concurrent,
        after = "charge",
        timeout = "30s",
        backoff_initial = "100ms",
        jitter = 0
    )]
    async fn notify(&self, ctx: &StepContext) -> Result<u32, StepError> {
        self.0.act("notify", ctx).await
    }

    async fn cancel_flight(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("cancel_flight", ctx).await.map(drop)
    }

    async fn cancel_hotel(&self, hotel: &u32, ctx: &StepContext) -> Result<(), StepError> {
        let _ = hotel;
        self.0.act("cancel_hotel", ctx).await.map(drop)
    }

    async fn cancel_car(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.0.act("cancel_car", ctx).await.map(drop)
    }
}

/// An orchestrator on `store`, as runner `runner_id`, with [`Trip`] registered.
pub fn trip(
    store: impl saga_runtime::store::IntoStore,
    runner_id: &str,
    script: &Arc<Script>,
) -> (Orchestrator, saga_runtime::Executor<Trip>) {
    let orchestrator = Orchestrator::builder(store)
        .runner_id(runner_id)
        .jitter_seed(7)
        .recovery(false)
        .build()
        .expect("orchestrator");
    let _ = script.orchestrator.set(orchestrator.clone());
    let trip = orchestrator.register(Trip(script.clone()));
    (orchestrator, trip)
}
