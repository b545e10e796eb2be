//! Signals (DECISIONS.md, "Sagas that wait"): a step parameter marked `#[signal]` is a typed message from
//! outside, named after the parameter; the step's body runs once it has arrived.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned as _;

use super::model::{self, ParamModel};
use super::plan::{Binding, ParamPlan, SagaPlan, StepPlan};
use super::tokens::{at, private, respan};
use crate::diag::Errors;

/// Binds a `#[signal]` parameter: by value, on a step.
pub(crate) fn bind(
    ident: &Ident,
    param: &ParamModel,
    span: Span,
    is_compensation: bool,
    errors: &mut Errors,
) -> Option<ParamPlan> {
    if is_compensation {
        errors.at(
            span,
            "`#[signal]` goes on a step's parameter: a compensation runs without waiting for anything",
        );
        return None;
    }
    if let Some(referent) = &param.referent {
        errors.spanned(
            &param.ty,
            format_args!(
                "a signal is taken by value, since the step owns the message it waited for: write `{}: {}`",
                model::unraw(ident),
                model::type_text(referent)
            ),
        );
        return None;
    }
    Some(ParamPlan {
        ident: ident.clone(),
        referent: param.ty.clone(),
        binding: Binding::Signal,
    })
}

/// The signal a step waits for, if any.
pub(crate) fn of(step: &StepPlan) -> Option<&ParamPlan> {
    step.params.iter().find(|p| p.binding == Binding::Signal)
}

/// One signal per step, and one step per signal name.
pub(crate) fn check(steps: &[StepPlan], errors: &mut Errors) {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for step in steps {
        let mut signals = step.params.iter().filter(|p| p.binding == Binding::Signal);
        let Some(first) = signals.next() else {
            continue;
        };
        for extra in signals {
            errors.spanned(
                &extra.ident,
                format_args!(
                    "a step waits for one signal: `{}` already waits for `{}`",
                    step.name,
                    model::unraw(&first.ident)
                ),
            );
        }
        if step.child.is_some() {
            errors.spanned(
                &first.ident,
                format_args!(
                    "a `child` step waits for its child saga; `{}` cannot also wait for a signal",
                    step.name
                ),
            );
        }
        let name = model::unraw(&first.ident);
        if let Some((_, other)) = seen.iter().find(|(seen, _)| *seen == name) {
            errors.spanned(
                &first.ident,
                format_args!(
                    "signal `{name}` is already step `{other}`'s; a signal's name says which step it is for, so each name belongs to one step"
                ),
            );
        }
        seen.push((name, &step.name));
    }
}

/// `Approval` for a parameter `approval`.
fn variant(param: &ParamPlan) -> Ident {
    let name = model::unraw(&param.ident);
    let camel: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect();
    format_ident!("{}", camel, span = param.ident.span())
}

/// The type behind `Saga::Signal`: the generated enum, or `NoSignal`.
pub(crate) fn type_tokens(plan: &SagaPlan) -> TokenStream {
    let p = private(plan);
    if plan.steps.iter().any(|step| of(step).is_some()) {
        let ident = &plan.signal_ident;
        quote!(#ident)
    } else {
        quote!(#p::NoSignal)
    }
}

/// `Saga::check_signal`'s arms, each spanned at its parameter's type so that a type that
/// cannot be a signal is reported there.
pub(crate) fn check_arms(plan: &SagaPlan) -> Vec<TokenStream> {
    let p = private(plan);
    plan.steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| {
            let param = of(step)?;
            let ty = &param.referent;
            let check = respan(quote!(#p::check_signal::<#ty>), at(ty.span()));
            Some(quote_spanned!(at(ty.span())=> #index => #check(payload),))
        })
        .collect()
}

/// The signal enum: one variant per signal, holding its payload.
pub(crate) fn enum_tokens(plan: &SagaPlan) -> TokenStream {
    let signals: Vec<(&StepPlan, &ParamPlan)> = plan
        .steps
        .iter()
        .filter_map(|step| of(step).map(|param| (step, param)))
        .collect();
    if signals.is_empty() {
        return TokenStream::new();
    }
    let p = private(plan);
    let ident = &plan.signal_ident;
    let vis = &plan.vis;
    let doc = format!(
        "The signals a saga `{}` waits for, one variant per `#[signal]` parameter: send one with `Executor::signal`.\n\nGenerated by `#[saga]`.",
        plan.name
    );
    let variants = signals.iter().map(|(step, param)| {
        let variant = variant(param);
        let ty = &param.referent;
        let doc = format!(
            "Signal `{}`, which step `{}` waits for.",
            model::unraw(&param.ident),
            step.name
        );
        quote!(#[doc = #doc] #variant(#ty),)
    });
    let names = signals.iter().map(|(_, param)| {
        let variant = variant(param);
        let name = model::unraw(&param.ident);
        quote!(#ident::#variant(_) => #name,)
    });
    let payloads = signals.iter().map(|(_, param)| {
        let variant = variant(param);
        let ty = &param.referent;
        // Spanned at the parameter's type, where a type that cannot be a signal is reported.
        let to_json = respan(quote!(#p::signal_to_json::<#ty>), at(ty.span()));
        quote!(#ident::#variant(__saga_payload) => #to_json(__saga_payload),)
    });
    quote! {
        #[doc = #doc]
        #vis enum #ident {
            #(#variants)*
        }

        // By name only: a payload need not be `Debug`.
        #[automatically_derived]
        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_tuple(#p::SignalOf::name(self)).finish_non_exhaustive()
            }
        }

        #[automatically_derived]
        impl #p::SignalOf for #ident {
            fn name(&self) -> &'static str {
                match self {
                    #(#names)*
                }
            }

            fn to_json(&self) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                match self {
                    #(#payloads)*
                }
            }
        }
    }
}
