//! Taking a saga over: after a claim, the interrupted attempt is counted and the saga goes
//! on from its last checkpoint (or is parked, if it keeps coming back without progress).

use crate::audit::{EventType, NewEvent};
use crate::backoff::Policy;
use crate::definition::{Saga, SagaState, StepSpec};
use crate::error::SagaError;
use crate::status::{CompensationStatus, RunStatus, StepStatus};

use super::state::Run;
use super::write::Draft;

impl<S: Saga> Run<'_, S> {
    /// After a claim: counts the interrupted attempt and continues.
    pub(super) async fn resume_after_claim(
        &mut self,
        recovery_count: u32,
        woken: super::wait::Woken,
    ) -> Result<(), SagaError> {
        if self.state == SagaState::Waiting {
            // Due, signalled or cancelled: a wake, not a recovery.
            return self.wake(woken).await;
        }
        if self.state == SagaState::Compensating
            && !self.steps.is_empty()
            && self
                .steps
                .iter()
                .all(|s| s.compensation == CompensationStatus::None)
        {
            // Compensating, yet no compensation has started: someone asked to undo it.
            return self.begin_undo().await;
        }
        let mut events = Vec::new();
        let current = self.status(self.step);
        let interrupted = if self.state == SagaState::Compensating {
            current.compensation_attempt
        } else {
            current.attempt
        };
        self.attempt = interrupted;
        // An enqueued saga that nobody has started yet (created at version 1, claimed once)
        // is picked up, not recovered.
        let first_pickup = interrupted == 0 && self.version == 2;
        if first_pickup {
            self.metrics.saga_started();
        } else {
            self.metrics.recovered();
            self.event(&mut events, || {
                NewEvent::now(EventType::SagaRecovered)
                    .attempt(interrupted)
                    .details(format!("{{\"recovery_count\":{recovery_count}}}"))
            });
        }
        if recovery_count > self.inner.settings.max_recoveries {
            let reason = format!(
                "recovered {recovery_count} times without progress (limit {})",
                self.inner.settings.max_recoveries
            );
            return self.park(reason, events).await;
        }
        let step = self.step;
        let Some(spec) = Self::steps().get(step) else {
            return Err(self.corrupt(format!("no step at index {step}")));
        };
        match self.state {
            SagaState::Running if !S::DEFINITION.is_chain() => {
                return self.resume_branches(events).await;
            }
            SagaState::Compensating if !S::DEFINITION.is_chain() => {
                return self.resume_undos(events).await;
            }
            SagaState::Running => self.resume_step(spec, interrupted, events).await?,
            SagaState::Compensating => {
                self.resume_compensation(spec, interrupted, events).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// After a claim, in a chain running step `spec`: its next attempt, unless the
    /// interrupted one spent the retry budget.
    async fn resume_step(
        &mut self,
        spec: &'static StepSpec,
        interrupted: u32,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let (step, next) = (self.step, interrupted.saturating_add(1));
        let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
        if next > policy.max_attempts && !self.pivot_passed() {
            let message = format!(
                "attempt {interrupted} was interrupted (the runner stopped) and the retry budget of {} attempt(s) is spent",
                policy.max_attempts
            );
            self.event(&mut events, || {
                NewEvent::now(EventType::StepFailed)
                    .step(spec.name)
                    .attempt(interrupted)
                    .error(message.clone())
            });
            return self.give_up(step, message, true, events).await;
        }
        if self.status(step).run == RunStatus::NotStarted {
            // Picked up before its first attempt: its delay or signal comes first.
            let recovered_events = events.clone();
            match self.must_wait(step, 0, events).await? {
                Ok(draft) => {
                    if let Some(reason) = self.wait(draft).await? {
                        return self.cancelled(reason, step, false, recovered_events).await;
                    }
                    return Ok(());
                }
                Err(back) => events = back,
            }
        }
        self.event(&mut events, || {
            NewEvent::now(EventType::StepStarted)
                .step(spec.name)
                .attempt(next)
        });
        let recovered_events = events.clone();
        let draft = Draft::new(SagaState::Running, step, next, events)
            .status(step, StepStatus::running(next));
        if let Some(reason) = self.write_forward(draft).await? {
            let mut events = recovered_events;
            events.retain(|e| e.event_type == EventType::SagaRecovered);
            return self.cancelled(reason, step, true, events).await;
        }
        self.attempt = next;
        Ok(())
    }

    /// After a claim, in a chain compensating step `spec`: the compensation's next
    /// attempt, unless the interrupted one spent its retry budget.
    async fn resume_compensation(
        &mut self,
        spec: &'static StepSpec,
        interrupted: u32,
        mut events: Vec<NewEvent>,
    ) -> Result<(), SagaError> {
        let (step, next) = (self.step, interrupted.saturating_add(1));
        let Some(comp) = &spec.compensation else {
            return Err(self.corrupt(format!(
                "compensating step `{}`, which has no compensation",
                spec.name
            )));
        };
        let policy =
            Policy::for_compensation(spec, comp, &self.config, &self.inner.settings.backoff);
        if next > policy.max_attempts {
            self.metrics.compensation_failed();
            let message = format!(
                "compensation `{}` was interrupted at attempt {interrupted} and its retry budget is spent",
                comp.name
            );
            return self
                .compensation_gave_up(step, interrupted, message, events)
                .await;
        }
        self.event(&mut events, || {
            NewEvent::now(EventType::CompensationStarted)
                .step(spec.name)
                .attempt(next)
        });
        let compensating = self.compensating(step, next);
        self.write(
            Draft::new(SagaState::Compensating, step, next, events).status(step, compensating),
        )
        .await?;
        self.attempt = next;
        Ok(())
    }

    /// After a claim, in a saga with concurrent steps: every step whose attempt was
    /// interrupted (or whose retry was pending) starts its next attempt, in one write; if
    /// one has spent its retry budget, none restarts and the saga fails at that step, the
    /// other interrupted steps' outcomes unknown.
    async fn resume_branches(&mut self, mut events: Vec<NewEvent>) -> Result<(), SagaError> {
        let interrupted: Vec<usize> = (0..Self::steps().len())
            .filter(|&step| {
                matches!(
                    self.status(step).run,
                    RunStatus::Running | RunStatus::Retrying
                )
            })
            .collect();
        // A step that failed for good while its siblings ran: the saga was stopping. The
        // interrupted siblings' outcomes are unknown; nothing restarts.
        let ended = (0..Self::steps().len()).find(|&step| {
            matches!(
                self.status(step).run,
                RunStatus::Failed | RunStatus::Unknown
            )
        });
        if let Some(failed) = ended {
            for &step in &interrupted {
                self.end_step(step, true);
            }
            self.end_waits();
            let message = self.failure.as_ref().map_or_else(
                || "failed before the runner stopped".to_owned(),
                |f| f.message.clone(),
            );
            let unknown = self.status(failed).run == RunStatus::Unknown;
            return self.give_up(failed, message, unknown, events).await;
        }
        let pivot_passed = self.pivot_passed();
        let spent = interrupted.iter().find_map(|&step| {
            let spec = Self::steps().get(step)?;
            let policy = Policy::for_step(spec, &self.config, &self.inner.settings.backoff);
            let attempt = self.status(step).attempt;
            (attempt >= policy.max_attempts && !pivot_passed).then(|| {
                let message = format!(
                    "attempt {attempt} was interrupted (the runner stopped) and the retry budget of {} attempt(s) is spent",
                    policy.max_attempts
                );
                (step, spec.name, attempt, message)
            })
        });
        if let Some((failed, name, attempt, message)) = spent {
            self.event(&mut events, || {
                NewEvent::now(EventType::StepFailed)
                    .step(name)
                    .attempt(attempt)
                    .error(message.clone())
            });
            for &step in &interrupted {
                self.end_step(step, true);
            }
            self.end_waits();
            return self.give_up(failed, message, true, events).await;
        }
        let Some(&latest) = interrupted.last() else {
            // Nothing was under way: the fan-out starts what is ready.
            return Ok(());
        };
        let recovered_events = events.clone();
        for &step in &interrupted {
            let name = Self::steps().get(step).map_or("", |spec| spec.name());
            let next = self.status(step).attempt.saturating_add(1);
            self.event(&mut events, || {
                NewEvent::now(EventType::StepStarted)
                    .step(name)
                    .attempt(next)
            });
        }
        let latest_attempt = self.status(latest).attempt.saturating_add(1);
        let mut draft = Draft::new(SagaState::Running, latest, latest_attempt, events);
        for &step in &interrupted {
            let next = self.status(step).attempt.saturating_add(1);
            draft = draft.status(step, StepStatus::running(next));
        }
        if let Some(reason) = self.write_forward(draft).await? {
            let mut events = recovered_events;
            events.retain(|e| e.event_type == EventType::SagaRecovered);
            for &step in &interrupted {
                self.end_step(step, true);
            }
            self.end_waits();
            return self.cancelled(reason, latest, true, events).await;
        }
        self.step = latest;
        self.attempt = latest_attempt;
        Ok(())
    }

    /// After a claim, in a saga with concurrent steps that was compensating: every
    /// compensation that was interrupted starts its next attempt, in one write; if one has
    /// spent its retry budget, the saga ends `compensation_failed`.
    async fn resume_undos(&mut self, mut events: Vec<NewEvent>) -> Result<(), SagaError> {
        let undoing: Vec<usize> = (0..Self::steps().len())
            .filter(|&step| self.status(step).compensation == CompensationStatus::Compensating)
            .collect();
        let spent = undoing.iter().find_map(|&step| {
            let spec = Self::steps().get(step)?;
            let comp = spec.compensation.as_ref()?;
            let policy =
                Policy::for_compensation(spec, comp, &self.config, &self.inner.settings.backoff);
            let attempt = self.status(step).compensation_attempt;
            (attempt >= policy.max_attempts).then(|| {
                let message = format!(
                    "compensation `{}` was interrupted at attempt {attempt} and its retry budget is spent",
                    comp.name
                );
                (step, message)
            })
        });
        if let Some((step, message)) = spent {
            self.metrics.compensation_failed();
            let attempt = self.status(step).compensation_attempt;
            return self
                .compensation_gave_up(step, attempt, message, events)
                .await;
        }
        let Some(&latest) = undoing.last() else {
            // Nothing was under way: the compensations that may start, start.
            if !events.is_empty() {
                let attempt = self.attempt;
                self.write(Draft::new(
                    SagaState::Compensating,
                    self.step,
                    attempt,
                    events,
                ))
                .await?;
            }
            return Ok(());
        };
        let mut changes = Vec::new();
        for &step in &undoing {
            let name = Self::steps().get(step).map_or("", |spec| spec.name());
            let next = self.status(step).compensation_attempt.saturating_add(1);
            self.event(&mut events, || {
                NewEvent::now(EventType::CompensationStarted)
                    .step(name)
                    .attempt(next)
            });
            changes.push((step, self.compensating(step, next)));
        }
        let latest_attempt = self.status(latest).compensation_attempt.saturating_add(1);
        let mut draft = Draft::new(SagaState::Compensating, latest, latest_attempt, events);
        for (step, status) in changes {
            draft = draft.status(step, status);
        }
        self.write(draft).await?;
        self.step = latest;
        self.attempt = latest_attempt;
        Ok(())
    }
}
