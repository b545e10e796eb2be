//! Child sagas (DECISIONS.md, "Sagas that wait"): a `#[step(child)]` returns `Child<S>`; the runtime starts
//! saga `S`, waits for it, and stores its outcome, `Completed<S>`, as the step's output.
//! Its compensation is the runtime's: the child is undone (or cancelled, if still running).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;

use super::plan::{SagaPlan, StepPlan};
use super::tokens::{at, private};
use crate::diag::Errors;

/// The name of a child step's compensation, as the audit log and the state enum say it.
pub(crate) const UNDO: &str = "undo_child";

/// How often undoing a child is retried: it fails while another runner holds the child
/// (until that runner's lease runs out), which is worth waiting for rather than leaving the
/// parent `compensation_failed`.
pub(crate) const UNDO_RETRIES: u32 = 20;

/// The name of the signal by which a child step's child says it has ended.
pub(crate) fn signal_name(step: &StepPlan) -> String {
    format!("child:{}", step.name)
}

/// The state-enum variant while a step's compensation is next or running: its own, or for
/// a child step, `Undo<Step>`.
pub(crate) fn compensation_variant(step: &StepPlan) -> Option<Ident> {
    match (&step.compensation, &step.child) {
        (Some(comp), _) => Some(comp.variant.clone()),
        (None, Some(_)) => Some(format_ident!("Undo{}", step.variant)),
        (None, None) => None,
    }
}

/// The value that a step's body returned, as the runtime takes it: boxed, or for a child
/// step, the child to start (spanned at the return type, where a step that does not
/// return `Child<S>` is reported).
pub(crate) fn output(plan: &SagaPlan, step: &StepPlan) -> TokenStream {
    let p = private(plan);
    if step.child.is_some() {
        quote_spanned!(at(step.return_span)=> #p::child_start(__saga_output))
    } else {
        quote!(#p::step_output(__saga_output))
    }
}

/// `Saga::child_output`'s arms.
pub(crate) fn output_arms(plan: &SagaPlan) -> Vec<TokenStream> {
    let p = private(plan);
    plan.steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| {
            let request = step.child.as_ref()?;
            Some(quote_spanned! {at(step.return_span)=>
                #index => #p::child_output::<<#request as #p::ChildRequest>::Saga>(
                    saga_id, context, completed,
                ),
            })
        })
        .collect()
}

/// What a `child` step cannot also be: its compensation is the undoing of its child.
pub(crate) fn check(args: &super::parse::StepArgs, errors: &mut Errors) {
    if let Some(compensate) = &args.compensate {
        errors.spanned(
            compensate,
            "a `child` step is compensated by undoing its child saga (as `Executor::undo` does); remove `compensate`",
        );
    }
}
