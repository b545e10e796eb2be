//! `#[saga]`: parse → model → validate → codegen. Everything below works on `proc_macro2`
//! so that unit tests can call [`expand`] directly.

mod child;
mod codegen;
mod context;
mod duration;
mod fallback;
mod graph;
mod model;
pub(crate) mod parse;
mod plan;
mod signal;
mod tokens;
mod validate;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{ImplItem, Item, ItemImpl};

use crate::diag::Errors;

/// Expands `#[saga(attr)] item`. Never panics: every problem becomes a `compile_error!`,
/// emitted next to the user's impl (with `#[step]` removed) so the rest of their code still
/// type-checks and the IDE keeps working.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new();
    let args = parse::saga_args(attr, &mut errors);
    let mut item_impl = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Impl(item_impl)) => item_impl,
        Ok(other) => {
            errors.spanned(
                item_keyword(&other),
                "`#[saga]` goes on an inherent `impl` block, such as `#[saga(..)] impl OrderWorkflow { .. }`",
            );
            return with_errors(item, errors);
        }
        Err(error) => {
            errors.push(error);
            return with_errors(item, errors);
        }
    };
    if let Some((path, for_token)) = &item_impl.trait_ {
        errors.spanned(
            quote!(#path #for_token),
            "`#[saga]` goes on an inherent `impl` block, not on a trait impl",
        );
        strip_step_attrs(&mut item_impl);
        return with_errors(item_impl.into_token_stream(), errors);
    }

    let model = model::from_syn(args, &item_impl, &mut errors);
    // Built before validation consumes the model; emitted only with errors.
    let fallback = fallback::generate(&model);
    let plan = validate::validate(model, &mut errors);
    let step_uses = step_attr_uses(&item_impl);
    strip_step_attrs(&mut item_impl);
    match (errors.finish(), plan) {
        (Ok(()), Some(plan)) => {
            let context = context::generate(&plan);
            let generated = codegen::generate(&plan);
            quote! {
                #item_impl
                #context
                #generated
                #step_uses
            }
        }
        (Err(error), _) => {
            let error = error.into_compile_error();
            quote! {
                #item_impl
                #error
                #fallback
                #step_uses
            }
        }
        (Ok(()), None) => {
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                "internal error in `#[saga]`: validation failed without a message; please report it",
            )
            .into_compile_error();
            quote!(#item_impl #error)
        }
    }
}

/// `#[step]` outside a `#[saga]` impl: the item unchanged plus one clear error.
pub(crate) fn expand_lone_step(item: &TokenStream) -> TokenStream {
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        "`#[step]` must be inside a `#[saga]` impl block: put `#[saga(name = \"..\", input = ..)]` on the `impl`",
    )
    .into_compile_error();
    quote!(#item #error)
}

fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    match errors.finish() {
        Ok(()) => item,
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#item #error)
        }
    }
}

/// `use step as _;` for each distinct path the user wrote in `#[step]`: the attributes are
/// consumed here, and without this the user's `use ..::step` import would look unused.
fn step_attr_uses(item: &ItemImpl) -> TokenStream {
    let mut seen: Vec<String> = Vec::new();
    let mut uses = TokenStream::new();
    for impl_item in &item.items {
        let ImplItem::Fn(func) = impl_item else {
            continue;
        };
        for attr in func.attrs.iter().filter(|a| model::is_step_attr(a)) {
            let path = attr.path();
            let text = path.to_token_stream().to_string();
            if !seen.contains(&text) {
                seen.push(text);
                uses.extend(quote!(#[allow(unused_imports)] use #path as _;));
            }
        }
    }
    if uses.is_empty() {
        uses
    } else {
        quote!(const _: () = { #uses };)
    }
}

/// Removes `#[step]` from every item of the impl, and `#[signal]` from every parameter: the
/// saga consumed them.
fn strip_step_attrs(item: &mut ItemImpl) {
    for impl_item in &mut item.items {
        if let ImplItem::Fn(f) = impl_item {
            for input in &mut f.sig.inputs {
                if let syn::FnArg::Typed(pat_type) = input {
                    pat_type.attrs.retain(|attr| !model::is_signal_attr(attr));
                }
            }
        }
        let attrs = match impl_item {
            ImplItem::Fn(f) => &mut f.attrs,
            ImplItem::Const(c) => &mut c.attrs,
            ImplItem::Type(t) => &mut t.attrs,
            ImplItem::Macro(m) => &mut m.attrs,
            _ => continue,
        };
        attrs.retain(|attr| !model::is_step_attr(attr));
    }
}

/// The keyword that introduces `item`, the narrowest token to blame.
fn item_keyword(item: &Item) -> TokenStream {
    match item {
        Item::Fn(f) => f.sig.fn_token.into_token_stream(),
        Item::Struct(s) => s.struct_token.into_token_stream(),
        Item::Enum(e) => e.enum_token.into_token_stream(),
        Item::Trait(t) => t.trait_token.into_token_stream(),
        Item::Mod(m) => m.mod_token.into_token_stream(),
        Item::Union(u) => u.union_token.into_token_stream(),
        Item::Const(c) => c.const_token.into_token_stream(),
        Item::Static(s) => s.static_token.into_token_stream(),
        Item::Type(t) => t.type_token.into_token_stream(),
        other => other.into_token_stream(),
    }
}
