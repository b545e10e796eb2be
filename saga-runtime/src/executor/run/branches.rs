//! The branches of one saga that run at once: step attempts, compensation attempts and
//! retry delays, polled by the saga's own task, and what they report back to it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::audit::NewEvent;
use crate::outputs::{Outputs, StepOutput};

use super::attempt::AttemptError;

/// What a branch reports.
pub(super) enum Event {
    /// An attempt of `step` ended.
    Attempted {
        step: usize,
        result: Result<StepOutput, AttemptError>,
        elapsed: Option<Duration>,
    },
    /// The delay before `step`'s next attempt is over.
    Due { step: usize },
    /// An attempt of `step`'s compensation ended.
    Undone {
        step: usize,
        result: Result<(), AttemptError>,
    },
    /// The delay before the next attempt of `step`'s compensation is over.
    UndoDue { step: usize },
    /// Waiting `step` should be looked at again: its delay is over, its deadline has
    /// come, or it is time to look for its signal or its child's end.
    Check { step: usize },
}

pub(super) type BranchFuture<'a> = Pin<Box<dyn Future<Output = Event> + Send + 'a>>;

/// What a branch is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An attempt of a step or of a compensation.
    Attempt,
    /// The delay before a retry, while the saga holds on to its lease.
    Delay,
    /// A step that waits (a delay, a signal, a child): when only such branches are left,
    /// the saga waits durably and lets go of its lease.
    Wait,
}

/// One attempt in flight, one retry delay, or one waiting step.
pub(super) struct Branch<'a> {
    pub(super) step: usize,
    pub(super) kind: Kind,
    /// Whether the future was polled: an attempt never polled has not begun.
    pub(super) polled: bool,
    pub(super) future: BranchFuture<'a>,
}

/// Why nothing new starts.
pub(super) enum Stop {
    /// Step `step` failed for good.
    Failed {
        step: usize,
        message: String,
        unknown: bool,
    },
    /// A cancellation was seen.
    Cancelled { reason: String },
    /// The compensation of step `step` gave up.
    GaveUp { step: usize, message: String },
}

/// The fan-out in progress.
pub(super) struct Fan<'a> {
    pub(super) branches: Vec<Branch<'a>>,
    /// Outputs of completed steps, shared with the attempts that read them.
    pub(super) outputs: Arc<Outputs>,
    /// Whether each step's last attempt timed out (its effect may have happened).
    pub(super) timed_out: Vec<bool>,
    pub(super) stop: Option<Stop>,
    /// Events of a write a cancellation refused, written with what follows.
    pub(super) carried: Vec<NewEvent>,
    /// Reports of branches that ended while a write was in flight, oldest first.
    pub(super) stashed: VecDeque<Event>,
}

impl<'a> Fan<'a> {
    /// Runs `attempt`, an attempt of step `step` or of its compensation.
    pub(super) fn push_attempt(
        &mut self,
        step: usize,
        attempt: impl Future<Output = Event> + Send + 'a,
    ) {
        self.branches.push(Branch {
            step,
            kind: Kind::Attempt,
            polled: false,
            future: Box::pin(attempt),
        });
    }

    /// Waits `delay`, then reports `event` (the next attempt of `step` is due).
    pub(super) fn push_delay(&mut self, step: usize, delay: Duration, event: Event) {
        self.push_timer(step, Kind::Delay, delay, event);
    }

    /// Waits `delay`, then reports that waiting `step` should be looked at again.
    pub(super) fn push_wait(&mut self, step: usize, delay: Duration) {
        self.push_timer(step, Kind::Wait, delay, Event::Check { step });
    }

    fn push_timer(&mut self, step: usize, kind: Kind, delay: Duration, event: Event) {
        self.branches.push(Branch {
            step,
            kind,
            polled: false,
            future: Box::pin(async move {
                tokio::time::sleep(delay).await;
                event
            }),
        });
    }
}

impl Fan<'_> {
    /// A fan-out with no branch yet, for a saga of `steps` steps.
    pub(super) fn new(steps: usize) -> Self {
        Fan {
            branches: Vec::new(),
            outputs: Arc::new(Outputs::new(steps)),
            timed_out: vec![false; steps],
            stop: None,
            carried: Vec::new(),
            stashed: VecDeque::new(),
        }
    }

    pub(super) fn is_busy(&self, step: usize) -> bool {
        self.branches.iter().any(|branch| branch.step == step)
    }

    /// Whether every branch left waits (and one does): nothing runs, nothing is about to.
    pub(super) fn only_waits(&self) -> bool {
        self.stop.is_none()
            && self.stashed.is_empty()
            && !self.branches.is_empty()
            && self.branches.iter().all(|branch| branch.kind == Kind::Wait)
    }

    /// The next report of any branch.
    pub(super) async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.stashed.pop_front() {
            return Some(event);
        }
        if self.branches.is_empty() {
            return None;
        }
        let (index, event) = std::future::poll_fn(|cx| {
            for (index, branch) in self.branches.iter_mut().enumerate() {
                branch.polled = true;
                if let Poll::Ready(event) = branch.future.as_mut().poll(cx) {
                    return Poll::Ready((index, event));
                }
            }
            Poll::Pending
        })
        .await;
        self.branches.remove(index);
        Some(event)
    }

    /// Polls every branch once, stashing the reports of those that ended: the branches go
    /// on while their saga waits for a write.
    fn pump(&mut self, cx: &mut std::task::Context<'_>) {
        let mut index = 0;
        while index < self.branches.len() {
            let branch = &mut self.branches[index];
            branch.polled = true;
            match branch.future.as_mut().poll(cx) {
                Poll::Ready(event) => {
                    self.branches.remove(index);
                    self.stashed.push_back(event);
                }
                Poll::Pending => index += 1,
            }
        }
    }
}

/// Awaits `write` while polling `fan`'s branches, so that attempts under way progress
/// during the write.
pub(super) async fn pumping<T>(fan: &mut Fan<'_>, write: impl Future<Output = T>) -> T {
    let mut write = std::pin::pin!(write);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = write.as_mut().poll(cx) {
            return Poll::Ready(value);
        }
        fan.pump(cx);
        Poll::Pending
    })
    .await
}
