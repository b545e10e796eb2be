//! The dependency graph of a saga's steps (DECISIONS.md, "Parallel steps"): which earlier steps each step
//! waits for before it starts.

use super::plan::{Binding, StepPlan};

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
