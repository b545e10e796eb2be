//! [`Run`]: one saga being executed by this runner, and what it knows about its steps.

use std::sync::Arc;

use crate::audit::{AuditHeader, NewEvent};
use crate::backoff::Rng;
use crate::config::SagaConfig;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::{SagaError, StoreError};
use crate::executor::active::ActiveGuard;
use crate::executor::codec::encode_context;
use crate::executor::inner::Inner;
use crate::executor::outcome::{Failure, Outcome};
use crate::metrics::TypeMetrics;
use crate::outputs::Outputs;
use crate::status::{CompensationStatus, RunStatus, StepStatus};

/// One saga being executed by this runner.
pub(crate) struct Run<'a, S: Saga> {
    pub(super) inner: &'a Inner,
    pub(super) saga: &'a S,
    pub(super) guard: ActiveGuard,
    pub(super) id: Arc<str>,
    pub(super) header: Arc<AuditHeader>,
    pub(super) config: SagaConfig,
    pub(super) user_id: Option<Arc<str>>,
    pub(super) metrics: TypeMetrics,
    /// Shared with the attempts of concurrent steps while they run; owned alone otherwise.
    pub(super) ctx: Arc<S::Context>,
    /// The context changed since the last written checkpoint.
    pub(super) ctx_dirty: bool,
    /// What each step has done: the last written checkpoint's statuses, plus changes
    /// decided since that the next write carries.
    pub(super) steps: Vec<StepStatus>,
    pub(super) state: SagaState,
    pub(super) step: usize,
    pub(super) attempt: u32,
    pub(super) version: i64,
    pub(super) failure: Option<Failure>,
    pub(super) rng: Rng,
    /// The signals taken for steps that have not ended, each consumed by the write that
    /// records its step's end.
    pub(super) taken: Vec<super::wait::Taken>,
    /// Events decided but not written yet (a graph's wake's), carried by the next write.
    /// Boxed: every in-flight saga's future holds this field, and few ever fill it.
    #[allow(clippy::box_collection)] // 8 bytes in every saga's future, not a `Vec`'s 24
    pub(super) carried: Option<Box<Vec<NewEvent>>>,
}

/// Where a run starts: the state of a saga just created, or of a row just claimed.
pub(crate) struct Position<C> {
    pub(crate) ctx: C,
    pub(crate) steps: Vec<StepStatus>,
    pub(crate) state: SagaState,
    pub(crate) step: usize,
    pub(crate) attempt: u32,
    pub(crate) version: i64,
    pub(crate) failure: Option<Failure>,
}

impl<'a, S: Saga> Run<'a, S> {
    /// A run of saga `id` from `position`, writing audit rows with `header`.
    pub(crate) fn new(
        inner: &'a Inner,
        saga: &'a S,
        guard: ActiveGuard,
        id: Arc<str>,
        header: Arc<AuditHeader>,
        config: SagaConfig,
        position: Position<S::Context>,
    ) -> Self {
        let metrics = if config.enable_metrics {
            inner.metrics.for_type(&header.saga_type, S::DEFINITION)
        } else {
            TypeMetrics::disabled()
        };
        Run {
            inner,
            saga,
            guard,
            user_id: config.user_id.as_deref().map(Arc::from),
            // Each ownership of a saga draws its own jitter.
            rng: Rng::for_saga(inner.seed ^ position.version as u64, &id),
            id,
            header,
            config,
            metrics,
            ctx: Arc::new(position.ctx),
            ctx_dirty: false,
            steps: position.steps,
            state: position.state,
            step: position.step,
            attempt: position.attempt,
            version: position.version,
            failure: position.failure,
            taken: Vec::new(),
            carried: None,
        }
    }

    /// The payload of the signal taken for step `step`, if one was.
    pub(super) fn taken(&self, step: usize) -> Option<&std::sync::Arc<str>> {
        self.taken
            .iter()
            .find(|taken| taken.step == step)
            .map(|taken| &taken.payload)
    }

    /// The metrics of this saga's type (nothing if the config turned them off).
    pub(crate) fn metrics(&self) -> &TypeMetrics {
        &self.metrics
    }
}

impl<S: Saga> Run<'_, S> {
    pub(super) fn outcome(self) -> Result<Outcome<S>, SagaError> {
        let saga_id = self.id.to_string();
        let Ok(context) = Arc::try_unwrap(self.ctx) else {
            // Unreachable: every attempt that shared the context has ended.
            return Err(SagaError::Store(StoreError::Corrupt {
                saga_id,
                reason: "the context is still shared by a step attempt".to_owned(),
            }));
        };
        Ok(Outcome {
            saga_id,
            state: self.state,
            step_index: self.step,
            context,
            failure: self.failure,
            existing: false,
        })
    }

    /// The context, to change it: only while no step attempt shares it.
    pub(super) fn ctx_mut(&mut self) -> Result<&mut S::Context, SagaError> {
        match Arc::get_mut(&mut self.ctx) {
            Some(ctx) => Ok(ctx),
            None => Err(SagaError::Store(StoreError::Corrupt {
                saga_id: self.id.to_string(),
                reason: "the context is shared by a step attempt".to_owned(),
            })),
        }
    }

    pub(super) fn steps() -> &'static [StepSpec] {
        S::DEFINITION.steps()
    }

    pub(super) fn event(&self, events: &mut Vec<NewEvent>, make: impl FnOnce() -> NewEvent) {
        if self.config.enable_audit_log {
            events.push(make());
        }
    }

    /// Whether a pivot step has completed: from then on the saga only goes forward.
    pub(super) fn pivot_passed(&self) -> bool {
        Self::steps()
            .iter()
            .zip(&self.steps)
            .any(|(spec, status)| spec.pivot && status.run == RunStatus::Completed)
    }

    /// The step to undo next: among those not yet undone that have a compensation and that
    /// completed (or ended with an unknown outcome, when the compensation does not need the
    /// step's output), the one that ended last. A step always ends after the steps it
    /// depends on, so this undoes a step before anything it depended on.
    pub(super) fn next_compensable(&self) -> Option<usize> {
        Self::steps()
            .iter()
            .zip(&self.steps)
            .enumerate()
            .filter(|(_, (spec, status))| {
                let Some(comp) = &spec.compensation else {
                    return false;
                };
                let ended = match status.run {
                    RunStatus::Completed => true,
                    RunStatus::Unknown => !comp.uses_own_output,
                    _ => false,
                };
                ended && status.compensation == CompensationStatus::None
            })
            .max_by_key(|(_, (_, status))| status.order)
            .map(|(index, _)| index)
    }

    /// The status of step `index`.
    pub(super) fn status(&self, index: usize) -> StepStatus {
        self.steps.get(index).copied().unwrap_or_default()
    }

    /// Step `index`'s status once compensation attempt `attempt` has started.
    pub(super) fn compensating(&self, index: usize, attempt: u32) -> StepStatus {
        StepStatus {
            compensation: CompensationStatus::Compensating,
            compensation_attempt: attempt,
            ..self.status(index)
        }
    }

    /// The order the next step to end takes.
    pub(super) fn next_order(&self) -> u32 {
        self.steps
            .iter()
            .filter_map(|s| s.order)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    /// Records that step `index`, which had attempts under way, ended for good: with an
    /// unknown outcome (its effect may have happened) or failed (it had none). Carried by the
    /// next write.
    pub(super) fn end_step(&mut self, index: usize, unknown: bool) {
        let order = self.next_order();
        if let Some(status) = self.steps.get_mut(index)
            && (matches!(status.run, RunStatus::Running | RunStatus::Retrying)
                || (status.run == RunStatus::Waiting && status.attempt > 0))
        {
            if unknown {
                status.run = RunStatus::Unknown;
                status.order = Some(order);
            } else {
                status.run = RunStatus::Failed;
            }
        }
    }

    pub(super) fn corrupt(&self, reason: String) -> SagaError {
        SagaError::Store(StoreError::Corrupt {
            saga_id: self.id.to_string(),
            reason,
        })
    }

    /// The context as JSON, with the outputs in `pending` not moved into it yet, within the
    /// size limit.
    pub(super) fn encode(&self, pending: Option<&Outputs>) -> Result<String, SagaError> {
        encode_context::<S>(
            &self.id,
            &self.ctx,
            pending,
            self.inner.settings.max_context_bytes,
        )
    }
}
