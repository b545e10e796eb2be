//! The plan of a saga that passed every check: what `validate` builds from the model and
//! the generators (`codegen`, `context`, `graph`, `signal`, `child`) read. It depends on
//! nothing of theirs, so that calls flow one way: `validate` calls the checks in `graph`,
//! `signal` and `child`, and all of them read these types.

use proc_macro2::Span;
use syn::{Ident, Path, Type};

/// A saga that passed every check.
pub(crate) struct SagaPlan {
    pub(crate) name: String,
    pub(crate) fingerprint: String,
    pub(crate) input: Type,
    pub(crate) krate: Path,
    pub(crate) context_ident: Ident,
    pub(crate) state_ident: Ident,
    pub(crate) signal_ident: Ident,
    pub(crate) vis: syn::Visibility,
    pub(crate) self_ty: Type,
    pub(crate) steps: Vec<StepPlan>,
}

pub(crate) struct StepPlan {
    pub(crate) ident: Ident,
    pub(crate) name: String,
    /// The state-enum variant while this step is next or running.
    pub(crate) variant: Ident,
    /// The type of its output in the context: what its body returns, or for a child step,
    /// `Completed<S>`.
    pub(crate) output: Type,
    /// For a `child` step: what its body returns (`Child<S>`).
    pub(crate) child: Option<Type>,
    /// The span of the declared return type.
    pub(crate) return_span: Span,
    pub(crate) params: Vec<ParamPlan>,
    pub(crate) timeout_ms: Option<u64>,
    /// `delay`, in milliseconds, spanned at its value.
    pub(crate) delay: Option<super::parse::Spanned<u64>>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff_initial_ms: Option<u64>,
    pub(crate) backoff_multiplier: Option<f64>,
    pub(crate) backoff_max_ms: Option<u64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) pivot: bool,
    pub(crate) concurrent: bool,
    /// The steps it waits for before it starts (DECISIONS.md, "Parallel steps"), by index, ascending.
    pub(crate) depends_on: Vec<usize>,
    pub(crate) compensation: Option<CompensationPlan>,
}

pub(crate) struct CompensationPlan {
    pub(crate) ident: Ident,
    pub(crate) name: String,
    /// The state-enum variant while this compensation is next or running.
    pub(crate) variant: Ident,
    pub(crate) params: Vec<ParamPlan>,
    /// The span of the declared return type.
    pub(crate) return_span: Span,
    /// The span of `T` in its `Result<T, E>`, which must be `()`.
    pub(crate) ok_span: Span,
    pub(crate) uses_own_output: bool,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retries: Option<u32>,
}

pub(crate) struct ParamPlan {
    pub(crate) ident: Ident,
    /// `T` in the parameter's `&T`.
    pub(crate) referent: Type,
    pub(crate) binding: Binding,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    Input,
    Output(usize),
    StepContext,
    /// A `#[signal]` parameter, taken by value: `referent` is its type.
    Signal,
}
