//! Prometheus metrics. Names and labels are contracts: the dashboard and alerts in `deploy/` (docs/GUIDE.md), and
//! `deploy/`, query them. Labels are bounded: saga type, step name, error type; never ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::definition::{Definition, SagaState};
use crate::store::StateCount;

/// Buckets from 5 ms to 2 h: sagas last from milliseconds (in-process steps) to hours
/// (human approvals, long batch jobs).
const SAGA_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0,
];

/// Buckets from 1 ms to 10 min for one step attempt.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// The saga metrics, registered in a Prometheus registry. Clones share the collectors.
///
/// | name | type | labels |
/// |---|---|---|
/// | `saga_started_total` | counter | `saga_type` |
/// | `saga_completed_total` | counter | `saga_type` |
/// | `saga_failed_total` | counter | `saga_type` (ended `failed` or `compensation_failed`) |
/// | `saga_duration_seconds` | histogram | `saga_type` |
/// | `saga_running_current` | gauge | `saga_type` (executing in this process) |
/// | `saga_step_failed_total` | counter | `saga_type`, `step_name`, `error_type` |
/// | `saga_step_duration_seconds` | histogram | `saga_type`, `step_name` |
/// | `saga_step_retries_total` | counter | `saga_type`, `step_name` |
/// | `saga_compensation_executed_total` | counter | `saga_type` |
/// | `saga_compensation_failed_total` | counter | `saga_type` (gave up) |
/// | `saga_recovered_total` | counter | `saga_type` |
/// | `saga_parked_total` | counter | `saga_type` |
/// | `saga_state_current` | gauge | `saga_type`, `state` (sagas in the store, by state) |
/// | `saga_stuck_current` | gauge | `saga_type` (active, not written for `stuck_after`) |
/// | `saga_waits_total` | counter | `saga_type` (a saga began to wait, durably) |
/// | `saga_wakes_total` | counter | `saga_type` (a runner woke a waiting saga) |
/// | `saga_wait_overdue_current` | gauge | `saga_type` (waiting, due longer ago than `overdue_after`) |
/// | `saga_signals_total` | counter | `saga_type`, `outcome` (`taken` by its step, or `rejected`: its payload did not decode) |
///
/// The three store gauges are refreshed by each runner's background loop from the shared
/// database, so several runners export the same values: aggregate them with `max`.
///
/// ```
/// use saga_runtime::SagaMetrics;
/// let registry = prometheus::Registry::new();
/// let metrics = SagaMetrics::register(&registry).unwrap();
/// # let _ = metrics;
/// ```
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    inner: Option<Arc<Collectors>>,
}

#[derive(Debug)]
struct Collectors {
    started: IntCounterVec,
    completed: IntCounterVec,
    failed: IntCounterVec,
    duration: HistogramVec,
    running: IntGaugeVec,
    step_failed: IntCounterVec,
    step_duration: HistogramVec,
    step_retries: IntCounterVec,
    compensation_executed: IntCounterVec,
    compensation_failed: IntCounterVec,
    recovered: IntCounterVec,
    parked: IntCounterVec,
    states: IntGaugeVec,
    stuck: IntGaugeVec,
    waits: IntCounterVec,
    wakes: IntCounterVec,
    overdue: IntGaugeVec,
    signals: IntCounterVec,
    /// Resolved handles per saga type: one lookup per saga instead of one per step.
    by_type: Mutex<HashMap<String, Arc<TypeHandles>>>,
}

impl SagaMetrics {
    /// Creates the collectors and registers them in `registry`.
    ///
    /// # Errors
    /// Prometheus's error if the names are already registered there (share one
    /// `SagaMetrics` between orchestrators instead).
    // One list: every collector with its name, help and labels, a few lines each.
    #[allow(clippy::too_many_lines)]
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let collectors = Collectors {
            started: counter("saga_started_total", "Sagas started.", &["saga_type"])?,
            completed: counter(
                "saga_completed_total",
                "Sagas whose steps all completed.",
                &["saga_type"],
            )?,
            failed: counter(
                "saga_failed_total",
                "Sagas that failed (compensated, or compensation gave up).",
                &["saga_type"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "saga_duration_seconds",
                    "Time from a saga's start (or recovery) to its end in this process.",
                )
                .buckets(SAGA_BUCKETS.to_vec()),
                &["saga_type"],
            )?,
            running: IntGaugeVec::new(
                Opts::new(
                    "saga_running_current",
                    "Sagas executing in this process now.",
                ),
                &["saga_type"],
            )?,
            step_failed: counter(
                "saga_step_failed_total",
                "Failed step attempts.",
                &["saga_type", "step_name", "error_type"],
            )?,
            step_duration: HistogramVec::new(
                HistogramOpts::new("saga_step_duration_seconds", "Duration of step attempts.")
                    .buckets(STEP_BUCKETS.to_vec()),
                &["saga_type", "step_name"],
            )?,
            step_retries: counter(
                "saga_step_retries_total",
                "Step attempts retried after a failure.",
                &["saga_type", "step_name"],
            )?,
            compensation_executed: counter(
                "saga_compensation_executed_total",
                "Compensations that completed.",
                &["saga_type"],
            )?,
            compensation_failed: counter(
                "saga_compensation_failed_total",
                "Compensations that gave up, leaving the saga in compensation_failed.",
                &["saga_type"],
            )?,
            recovered: counter(
                "saga_recovered_total",
                "Sagas taken over by a runner after their owner stopped.",
                &["saga_type"],
            )?,
            parked: counter(
                "saga_parked_total",
                "Sagas parked (dead letter) for a person to handle.",
                &["saga_type"],
            )?,
            states: IntGaugeVec::new(
                Opts::new(
                    "saga_state_current",
                    "Sagas in the store, by type and state.",
                ),
                &["saga_type", "state"],
            )?,
            stuck: IntGaugeVec::new(
                Opts::new(
                    "saga_stuck_current",
                    "Running or compensating sagas not written for longer than the stuck threshold.",
                ),
                &["saga_type"],
            )?,
            waits: counter(
                "saga_waits_total",
                "Times a saga began to wait durably (a step's delay, a long retry).",
                &["saga_type"],
            )?,
            wakes: counter(
                "saga_wakes_total",
                "Times a runner woke a waiting saga that was due or cancelled.",
                &["saga_type"],
            )?,
            signals: counter(
                "saga_signals_total",
                "Signals taken by the step that waited for them, or rejected (undecodable payload).",
                &["saga_type", "outcome"],
            )?,
            overdue: IntGaugeVec::new(
                Opts::new(
                    "saga_wait_overdue_current",
                    "Waiting sagas due longer ago than the overdue threshold, not yet woken.",
                ),
                &["saga_type"],
            )?,
            by_type: Mutex::new(HashMap::new()),
        };
        registry.register(Box::new(collectors.started.clone()))?;
        registry.register(Box::new(collectors.completed.clone()))?;
        registry.register(Box::new(collectors.failed.clone()))?;
        registry.register(Box::new(collectors.duration.clone()))?;
        registry.register(Box::new(collectors.running.clone()))?;
        registry.register(Box::new(collectors.step_failed.clone()))?;
        registry.register(Box::new(collectors.step_duration.clone()))?;
        registry.register(Box::new(collectors.step_retries.clone()))?;
        registry.register(Box::new(collectors.compensation_executed.clone()))?;
        registry.register(Box::new(collectors.compensation_failed.clone()))?;
        registry.register(Box::new(collectors.recovered.clone()))?;
        registry.register(Box::new(collectors.parked.clone()))?;
        registry.register(Box::new(collectors.states.clone()))?;
        registry.register(Box::new(collectors.stuck.clone()))?;
        registry.register(Box::new(collectors.waits.clone()))?;
        registry.register(Box::new(collectors.wakes.clone()))?;
        registry.register(Box::new(collectors.overdue.clone()))?;
        registry.register(Box::new(collectors.signals.clone()))?;
        Ok(SagaMetrics {
            inner: Some(Arc::new(collectors)),
        })
    }

    /// The metrics registered in Prometheus's default registry (once per process; later
    /// calls return the same collectors).
    ///
    /// # Errors
    /// Prometheus's error if other collectors already took these names there.
    pub fn default_registry() -> Result<Self, prometheus::Error> {
        static DEFAULT: std::sync::OnceLock<SagaMetrics> = std::sync::OnceLock::new();
        if let Some(metrics) = DEFAULT.get() {
            return Ok(metrics.clone());
        }
        let metrics = SagaMetrics::register(prometheus::default_registry())?;
        Ok(DEFAULT.get_or_init(|| metrics).clone())
    }

    /// Metrics that record nothing.
    #[must_use]
    pub fn disabled() -> Self {
        SagaMetrics { inner: None }
    }

    /// Whether anything is recorded.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Sets `saga_state_current`, `saga_stuck_current` and `saga_wait_overdue_current`
    /// from store counts.
    pub(crate) fn set_state_counts(&self, counts: &[StateCount]) {
        let Some(c) = &self.inner else { return };
        c.states.reset();
        c.stuck.reset();
        c.overdue.reset();
        for count in counts {
            if let Ok(gauge) = c
                .states
                .get_metric_with_label_values(&[count.saga_type.as_str(), count.state.as_str()])
            {
                gauge.set(i64::try_from(count.count).unwrap_or(i64::MAX));
            }
            if let Ok(gauge) = c
                .stuck
                .get_metric_with_label_values(&[count.saga_type.as_str()])
            {
                gauge.add(i64::try_from(count.stuck).unwrap_or(i64::MAX));
            }
            if let Ok(gauge) = c
                .overdue
                .get_metric_with_label_values(&[count.saga_type.as_str()])
            {
                gauge.add(i64::try_from(count.overdue).unwrap_or(i64::MAX));
            }
        }
    }

    /// The metrics of `saga_type`, resolved once and cached.
    pub(crate) fn for_type(&self, saga_type: &str, definition: &'static Definition) -> TypeMetrics {
        let Some(c) = &self.inner else {
            return TypeMetrics(None);
        };
        let mut cache = c
            .by_type
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handles) = cache.get(saga_type)
            && std::ptr::eq(handles.definition, definition)
        {
            return TypeMetrics(Some(handles.clone()));
        }
        let labels = [saga_type];
        let (Ok(started), Ok(completed), Ok(failed), Ok(duration), Ok(running)) = (
            c.started.get_metric_with_label_values(&labels),
            c.completed.get_metric_with_label_values(&labels),
            c.failed.get_metric_with_label_values(&labels),
            c.duration.get_metric_with_label_values(&labels),
            c.running.get_metric_with_label_values(&labels),
        ) else {
            return TypeMetrics(None);
        };
        let (Ok(compensation_executed), Ok(compensation_failed), Ok(recovered), Ok(parked)) = (
            c.compensation_executed
                .get_metric_with_label_values(&labels),
            c.compensation_failed.get_metric_with_label_values(&labels),
            c.recovered.get_metric_with_label_values(&labels),
            c.parked.get_metric_with_label_values(&labels),
        ) else {
            return TypeMetrics(None);
        };
        // Rare events, resolved when they happen; their series start at zero here.
        let _ = c.waits.get_metric_with_label_values(&labels);
        let _ = c.wakes.get_metric_with_label_values(&labels);
        let steps = definition
            .steps()
            .iter()
            .filter_map(|step| {
                let labels = [saga_type, step.name()];
                Some(StepHandles {
                    duration: c.step_duration.get_metric_with_label_values(&labels).ok()?,
                    retries: c.step_retries.get_metric_with_label_values(&labels).ok()?,
                    name: step.name(),
                })
            })
            .collect();
        let handles = Arc::new(TypeHandles {
            definition,
            saga_type: saga_type.to_owned(),
            collectors: c.clone(),
            started,
            completed,
            failed,
            duration,
            running,
            compensation_executed,
            compensation_failed,
            recovered,
            parked,
            steps,
        });
        cache.insert(saga_type.to_owned(), handles.clone());
        TypeMetrics(Some(handles))
    }
}

#[derive(Debug)]
struct TypeHandles {
    definition: &'static Definition,
    saga_type: String,
    collectors: Arc<Collectors>,
    started: IntCounter,
    completed: IntCounter,
    failed: IntCounter,
    duration: Histogram,
    running: IntGauge,
    compensation_executed: IntCounter,
    compensation_failed: IntCounter,
    recovered: IntCounter,
    parked: IntCounter,
    steps: Vec<StepHandles>,
}

#[derive(Debug)]
struct StepHandles {
    name: &'static str,
    duration: Histogram,
    retries: IntCounter,
}

/// Metric handles of one saga type; `None` when metrics are off.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeMetrics(Option<Arc<TypeHandles>>);

impl TypeMetrics {
    pub(crate) fn disabled() -> Self {
        TypeMetrics(None)
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn saga_started(&self) {
        if let Some(h) = &self.0 {
            h.started.inc();
        }
    }

    pub(crate) fn running_inc(&self) {
        if let Some(h) = &self.0 {
            h.running.inc();
        }
    }

    pub(crate) fn running_dec(&self) {
        if let Some(h) = &self.0 {
            h.running.dec();
        }
    }

    pub(crate) fn saga_finished(&self, state: SagaState, elapsed: Duration) {
        if let Some(h) = &self.0 {
            match state {
                SagaState::Completed => h.completed.inc(),
                SagaState::Failed | SagaState::CompensationFailed => h.failed.inc(),
                _ => {}
            }
            h.duration.observe(elapsed.as_secs_f64());
        }
    }

    pub(crate) fn step_attempt(&self, step: usize, elapsed: Duration) {
        if let Some(s) = self.0.as_ref().and_then(|h| h.steps.get(step)) {
            s.duration.observe(elapsed.as_secs_f64());
        }
    }

    pub(crate) fn step_failed(&self, step: usize, error_type: &str) {
        if let Some(h) = &self.0 {
            let name = h.steps.get(step).map_or("unknown", |s| s.name);
            if let Ok(counter) = h.collectors.step_failed.get_metric_with_label_values(&[
                h.saga_type.as_str(),
                name,
                error_type,
            ]) {
                counter.inc();
            }
        }
    }

    pub(crate) fn step_retried(&self, step: usize) {
        if let Some(s) = self.0.as_ref().and_then(|h| h.steps.get(step)) {
            s.retries.inc();
        }
    }

    pub(crate) fn compensation_executed(&self) {
        if let Some(h) = &self.0 {
            h.compensation_executed.inc();
        }
    }

    pub(crate) fn compensation_failed(&self) {
        if let Some(h) = &self.0 {
            h.compensation_failed.inc();
        }
    }

    pub(crate) fn waiting(&self) {
        if let Some(h) = &self.0
            && let Ok(counter) = h
                .collectors
                .waits
                .get_metric_with_label_values(&[h.saga_type.as_str()])
        {
            counter.inc();
        }
    }

    pub(crate) fn signal_taken(&self) {
        self.signal("taken");
    }

    pub(crate) fn signal_rejected(&self) {
        self.signal("rejected");
    }

    fn signal(&self, outcome: &str) {
        if let Some(h) = &self.0
            && let Ok(counter) = h
                .collectors
                .signals
                .get_metric_with_label_values(&[h.saga_type.as_str(), outcome])
        {
            counter.inc();
        }
    }

    pub(crate) fn woken(&self) {
        if let Some(h) = &self.0
            && let Ok(counter) = h
                .collectors
                .wakes
                .get_metric_with_label_values(&[h.saga_type.as_str()])
        {
            counter.inc();
        }
    }

    pub(crate) fn recovered(&self) {
        if let Some(h) = &self.0 {
            h.recovered.inc();
        }
    }

    pub(crate) fn parked(&self) {
        if let Some(h) = &self.0 {
            h.parked.inc();
        }
    }
}
