//! Token helpers shared by the code generators: spans that point at the user's code, and
//! the path to the runtime's hidden module.

use proc_macro2::{Span, TokenStream};
use quote::quote;

use super::plan::SagaPlan;

/// A span that points at the user's `token` but resolves names like the macro's own output.
/// Errors land on the user's code, while the generated local variables (`__saga_ctx`,
/// `self`) stay visible even when the user's tokens come from a `macro_rules!` macro, whose
/// hygiene would otherwise hide them.
pub(crate) fn at(token: Span) -> Span {
    Span::call_site().located_at(token)
}

/// `#krate::__private`, through which generated code names every runtime item.
pub(crate) fn private(plan: &SagaPlan) -> TokenStream {
    let krate = &plan.krate;
    quote!(#krate::__private)
}

/// `tokens` with every token, nested ones included, at `span`.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            proc_macro2::TokenTree::Group(group) => {
                let mut respanned =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                proc_macro2::TokenTree::Group(respanned)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
