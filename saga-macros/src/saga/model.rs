//! Stage 2, model: plain structs for the saga and each method, keeping the original tokens
//! for spans. Nothing here is checked across methods; that is `validate`'s job.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat, Path, ReturnType, Type};

use super::parse::{self, SagaArgs, StepArgs};
use crate::diag::Errors;
use crate::symbol;

/// The whole `#[saga]` impl, as written.
pub(crate) struct SagaModel {
    /// Saga keys already reported as misspelled.
    pub(crate) misspelled: Vec<&'static str>,
    pub(crate) name: Option<LitStr>,
    pub(crate) input: Option<Type>,
    pub(crate) krate: Path,
    pub(crate) context_ident: Ident,
    pub(crate) state_ident: Ident,
    /// The generated signal enum (only for a saga whose steps wait for signals).
    pub(crate) signal_ident: Ident,
    /// The visibility of the generated context and state types.
    pub(crate) vis: syn::Visibility,
    pub(crate) self_ty: Type,
    /// Where to report saga-wide errors (the self type).
    pub(crate) self_span: Span,
    pub(crate) steps: Vec<StepModel>,
    /// Every method that is not a step: the candidates for `compensate`.
    pub(crate) methods: Vec<FnModel>,
}

/// A method marked `#[step]`.
pub(crate) struct StepModel {
    pub(crate) func: FnModel,
    pub(crate) args: StepArgs,
}

/// The shape of one method's signature.
pub(crate) struct FnModel {
    pub(crate) ident: Ident,
    /// The name without a raw-identifier prefix.
    pub(crate) name: String,
    pub(crate) is_async: bool,
    /// Span of `fn name` for errors about the signature as a whole.
    pub(crate) sig_span: Span,
    pub(crate) receiver: Receiver,
    pub(crate) generics: Option<Span>,
    pub(crate) output: Output,
    pub(crate) params: Vec<ParamModel>,
}

pub(crate) enum Receiver {
    /// `&self`
    SharedRef,
    /// Anything else, with the span of the receiver.
    Other(Span),
    /// No receiver at all; the span is the parameter list.
    Missing(Span),
}

pub(crate) enum Output {
    /// `Result<T, E>` (or an alias such as `Result<T>`): `T`, and the span of the whole
    /// return type (where a bad `E` is reported).
    Result(Box<Type>, Span),
    /// Some other type, with its span.
    NotResult(Span),
    /// `-> ..` missing; the span is the signature.
    Unit(Span),
}

/// A parameter after the receiver.
pub(crate) struct ParamModel {
    /// The parameter's name, or `None` with an error already recorded.
    pub(crate) ident: Option<Ident>,
    pub(crate) ty: Type,
    /// `T` in `&T`, if the parameter is a shared reference.
    pub(crate) referent: Option<Type>,
    /// Whether `T` names `StepContext`.
    pub(crate) is_step_context: bool,
    /// The span of its `#[signal]` attribute, if it has one.
    pub(crate) signal: Option<Span>,
}

/// Builds the model of `item`, recording shape errors that do not need other methods.
pub(crate) fn from_syn(args: SagaArgs, item: &ItemImpl, errors: &mut Errors) -> SagaModel {
    let self_span = item.self_ty.span();
    let self_ident = self_type_ident(&item.self_ty);
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.spanned(
            &item.generics,
            "generic sagas are not supported: put `#[saga]` on an impl of a concrete type",
        );
    }
    let base = self_ident
        .clone()
        .unwrap_or_else(|| Ident::new("Saga", self_span));
    if self_ident.is_none() {
        errors.at(
            self_span,
            "`#[saga]` needs a named type, such as `impl OrderWorkflow { .. }`",
        );
    }
    let context_ident = args
        .context
        .unwrap_or_else(|| Ident::new(&format!("{}Context", unraw(&base)), base.span()));
    let state_ident = args
        .state
        .unwrap_or_else(|| Ident::new(&format!("{}State", unraw(&base)), base.span()));
    let signal_ident = Ident::new(&format!("{}Signal", unraw(&base)), base.span());
    let krate = args
        .krate
        .unwrap_or_else(|| syn::parse_quote!(::saga_runtime));

    let mut steps = Vec::new();
    let mut methods = Vec::new();
    for impl_item in &item.items {
        match impl_item {
            ImplItem::Fn(func) => {
                let step_attrs: Vec<&syn::Attribute> =
                    func.attrs.iter().filter(|a| is_step_attr(a)).collect();
                let Some((first, rest)) = step_attrs.split_first() else {
                    methods.push(fn_model(func, errors));
                    continue;
                };
                for extra in rest {
                    errors.spanned(extra, "duplicate `#[step]` attribute");
                }
                for attr in &func.attrs {
                    if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                        errors.spanned(
                            attr,
                            "`#[cfg]` is not supported on a step: a saga's steps must not depend on the build configuration (put the `#[cfg]` inside the step's body)",
                        );
                    }
                }
                let args = parse::step_args(first, errors);
                steps.push(StepModel {
                    func: fn_model(func, errors),
                    args,
                });
            }
            other => {
                for attr in item_attrs(other) {
                    if is_step_attr(attr) {
                        errors.spanned(attr, "`#[step]` goes on an `async fn` method");
                    }
                }
            }
        }
    }

    SagaModel {
        misspelled: args.misspelled,
        name: args.name,
        input: args.input,
        krate,
        context_ident,
        state_ident,
        signal_ident,
        vis: args.vis.unwrap_or_else(|| syn::parse_quote!(pub)),
        self_ty: (*item.self_ty).clone(),
        self_span,
        steps,
        methods,
    }
}

/// Whether `attr` is `#[step]`, `#[step(..)]` or a path to it such as `#[saga_runtime::step]`.
pub(crate) fn is_step_attr(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == symbol::STEP)
}

/// Whether `attr` is `#[signal]` (on a step parameter).
pub(crate) fn is_signal_attr(attr: &syn::Attribute) -> bool {
    attr.path().is_ident(symbol::SIGNAL)
}

fn item_attrs(item: &ImplItem) -> &[syn::Attribute] {
    match item {
        ImplItem::Const(c) => &c.attrs,
        ImplItem::Type(t) => &t.attrs,
        ImplItem::Macro(m) => &m.attrs,
        _ => &[],
    }
}

/// `Foo` in `impl Foo` or `impl a::Foo`.
fn self_type_ident(ty: &Type) -> Option<Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.clone())
        }
        Type::Group(group) => self_type_ident(&group.elem),
        Type::Paren(paren) => self_type_ident(&paren.elem),
        _ => None,
    }
}

/// The identifier's text without the `r#` of a raw identifier.
pub(crate) fn unraw(ident: &Ident) -> String {
    let text = ident.to_string();
    match text.strip_prefix("r#") {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

fn fn_model(func: &ImplItemFn, errors: &mut Errors) -> FnModel {
    let sig = &func.sig;
    let sig_span = sig
        .fn_token
        .span
        .join(sig.ident.span())
        .unwrap_or(sig.ident.span());
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) => match &receiver.kind {
            syn::ReceiverKind::Reference(_, _, None) if receiver.mutability.is_none() => {
                Receiver::SharedRef
            }
            _ => Receiver::Other(receiver.span()),
        },
        _ => Receiver::Missing(sig.paren_token.span.join()),
    };
    let generics = if sig.generics.params.is_empty() && sig.generics.where_clause.is_none() {
        None
    } else {
        Some(sig.generics.span())
    };
    let output = match &sig.output {
        ReturnType::Default => Output::Unit(sig_span),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => Output::Result(Box::new(ok), ty.span()),
            None => Output::NotResult(ty.span()),
        },
    };
    let mut params = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(pat_type) = arg else {
            continue;
        };
        let ident = match &*pat_type.pat {
            Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => {
                Some(pat.ident.clone())
            }
            other => {
                errors.spanned(
                    other,
                    "step parameters bind by name: use a plain name such as `input` or the name of an earlier step",
                );
                None
            }
        };
        let (referent, is_step_context) = match &*pat_type.ty {
            Type::Reference(reference) if reference.mutability.is_none() => {
                let is_ctx = last_segment_is(&reference.elem, symbol::STEP_CONTEXT);
                (Some((*reference.elem).clone()), is_ctx)
            }
            _ => (None, false),
        };
        let signal = pat_type
            .attrs
            .iter()
            .find(|attr| is_signal_attr(attr))
            .map(|attr| attr.path().span());
        params.push(ParamModel {
            ident,
            ty: (*pat_type.ty).clone(),
            referent,
            is_step_context,
            signal,
        });
    }
    FnModel {
        ident: sig.ident.clone(),
        name: unraw(&sig.ident),
        is_async: sig.asyncness.is_some(),
        sig_span,
        receiver,
        generics,
        output,
        params,
    }
}

/// `T` in `Result<T, E>`, `Result<T>` or `a::b::Result<T, E>`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else {
        return match ty {
            Type::Group(group) => result_ok_type(&group.elem),
            Type::Paren(paren) => result_ok_type(&paren.elem),
            _ => None,
        };
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name),
        Type::Group(group) => last_segment_is(&group.elem, name),
        _ => false,
    }
}

/// Tokens for the step's type, used by error messages.
pub(crate) fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace("& ", "&")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
}
