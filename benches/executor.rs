//! Criterion benchmarks of the executor's own cost:
//! - `per_step`: a 3-step saga on the in-memory store (audit log off and on) against the
//!   same three step bodies as a bare chain of async functions, each under a timeout;
//! - `dispatch`: one step called through the generated `Saga::run_step` against a direct
//!   call of the method.
//!
//! `cargo bench --bench executor`; per-step overhead = (saga - bare chain) / 3.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use saga_runtime::StepContext;
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    pub n: u64,
}

pub struct Three;

#[saga(name = "three", input = Input)]
impl Three {
    #[step(timeout = 30, retries = 0, compensate = "undo")]
    async fn a(&self, input: &Input) -> Result<u64, StepError> {
        Ok(black_box(input.n) + 1)
    }

    async fn undo(&self, a: &u64) -> Result<(), StepError> {
        let _ = a;
        Ok(())
    }

    #[step(timeout = 30, retries = 0)]
    async fn b(&self, a: &u64) -> Result<u64, StepError> {
        Ok(black_box(*a) * 2)
    }

    #[step(timeout = 30, retries = 0)]
    async fn c(&self, b: &u64) -> Result<u64, StepError> {
        Ok(black_box(*b) + 3)
    }
}

async fn body(x: u64) -> Result<u64, StepError> {
    Ok(black_box(x) + 1)
}

/// The same three bodies, each under a timeout, with nothing else.
async fn bare_chain(n: u64) -> Result<u64, StepError> {
    let limit = Duration::from_secs(30);
    let a = tokio::time::timeout(limit, body(n))
        .await
        .map_err(|_| StepError::retryable("timeout"))??;
    let b = tokio::time::timeout(limit, body(a))
        .await
        .map_err(|_| StepError::retryable("timeout"))??;
    tokio::time::timeout(limit, body(b))
        .await
        .map_err(|_| StepError::retryable("timeout"))?
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Unique saga ids across samples.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn per_step(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("per_step");
    group.bench_function("bare_chain_3_steps", |b| {
        b.to_async(&rt).iter(|| bare_chain(black_box(7)));
    });
    for (name, audit) in [
        ("memory_saga_3_steps_audit_off", false),
        ("memory_saga_3_steps_audit_on", true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iterations| async move {
                // A fresh store per sample, so that stored sagas do not pile up.
                let orchestrator = Orchestrator::builder(MemoryStore::new())
                    .recovery(false)
                    .build()
                    .expect("an orchestrator");
                let three = orchestrator.register(Three);
                let config = SagaConfig::default()
                    .enable_audit_log(audit)
                    .enable_metrics(false);
                let ids: Vec<String> = (0..iterations)
                    .map(|_| format!("s{}", NEXT.fetch_add(1, Ordering::Relaxed)))
                    .collect();
                let started = Instant::now();
                for id in ids {
                    let outcome = three
                        .execute_with_id(id, &config, Input { n: 7 })
                        .await
                        .expect("ran");
                    black_box(outcome.is_completed());
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

fn dispatch(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("dispatch");
    let saga = Three;
    group.bench_function("direct_method_call", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(saga.b(black_box(&7)).await) });
    });
    let step_context = rt.block_on(async { context_for_bench() });
    group.bench_function("generated_run_step", |b| {
        b.to_async(&rt).iter(|| async {
            let mut ctx = Three::new_context(Input { n: 7 });
            ctx.a = Some(7);
            let output = saga.run_step(1, &ctx, None, &step_context).await;
            black_box(output.map(|output| Three::store_output(&mut ctx, 1, output)))
        });
    });
    group.finish();
}

/// A step context, as the executor would build it (not public API: built through a run).
fn context_for_bench() -> StepContext {
    saga_runtime::__private::bench_step_context()
}

criterion_group!(benches, per_step, dispatch);
criterion_main!(benches);
