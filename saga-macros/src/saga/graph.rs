//! The dependency graph of a saga's steps (DECISIONS.md, "Parallel steps"): which earlier steps each step
//! waits for before it starts.

use super::validate::{Binding, StepPlan};
use crate::diag::Errors;

/// Fills in each step's `depends_on`, given the steps each names in `after` (earlier ones
/// only, as `validate` checked).
///
/// Steps form groups in declaration order: a step without `concurrent` starts a group and
/// waits for every earlier step; a `concurrent` step joins the group of the step before it
/// and waits for what that group waits for, the earlier steps whose outputs it takes, the
/// steps it names in `after`, and a pivot that leads its group.
pub(crate) fn depends_on(steps: &mut [StepPlan], after: &[Vec<usize>]) {
    let mut group_start = 0;
    for index in 0..steps.len() {
        let step = &steps[index];
        if !step.concurrent || index == 0 {
            group_start = index;
        }
        let mut deps: Vec<usize> = if step.concurrent {
            let mut deps: Vec<usize> = (0..group_start).collect();
            deps.extend(step.params.iter().filter_map(|param| match param.binding {
                Binding::Output(source) => Some(source),
                Binding::Input | Binding::StepContext | Binding::Signal => None,
            }));
            deps.extend(after.get(index).into_iter().flatten().copied());
            deps.extend((group_start..index).filter(|&earlier| steps[earlier].pivot));
            deps
        } else {
            (0..index).collect()
        };
        deps.sort_unstable();
        deps.dedup();
        steps[index].depends_on = deps;
    }
}

/// Whether every step waits for every earlier one: a saga without concurrency.
pub(crate) fn is_chain(steps: &[StepPlan]) -> bool {
    steps
        .iter()
        .enumerate()
        .all(|(index, step)| step.depends_on.len() == index)
}

/// A durable `delay` puts the whole saga to wait, so for now it is a chain's: in a saga with
/// concurrent steps, other branches may be running when a step becomes ready.
pub(crate) fn check_delays(steps: &[StepPlan], errors: &mut Errors) {
    if is_chain(steps) {
        return;
    }
    for step in steps {
        if step.child.is_some() {
            errors.at(
                step.return_span,
                format_args!(
                    "child sagas are not supported yet in a saga with `concurrent` steps: `{}` would wait for its child while other steps may be running; a chain of steps can wait",
                    step.name
                ),
            );
        }
        if let Some(delay) = step.delay {
            errors.at(
                delay.span,
                format_args!(
                    "`delay` is not supported yet in a saga with `concurrent` steps: `{}` would wait while other steps may be running; a chain of steps can wait",
                    step.name
                ),
            );
        }
    }
}
