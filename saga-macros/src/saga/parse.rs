//! Stage 1, syntax: the grammar of `#[saga(..)]` and `#[step(..)]`, one `parse_nested_meta`
//! loop each. Duplicates keep the first value and are reported at the second key; bad values
//! are reported at the literal; unknown keys at the key, with a suggestion.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned as _;
use syn::{Attribute, Expr, Ident, Lit, LitStr, Path, Type, UnOp};

use super::duration::parse_duration;
use crate::diag::{self, Errors};
use crate::symbol;

/// A value together with the span of the token that gave it.
#[derive(Clone, Copy)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The arguments of `#[saga(..)]`.
#[derive(Default)]
pub(crate) struct SagaArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) input: Option<Type>,
    pub(crate) krate: Option<Path>,
    pub(crate) context: Option<Ident>,
    pub(crate) state: Option<Ident>,
    pub(crate) vis: Option<syn::Visibility>,
    /// Keys that an unknown key was reported as a likely typo of; a "missing" error for
    /// them would only repeat that report.
    pub(crate) misspelled: Vec<&'static str>,
}

/// The arguments of one `#[step(..)]`. Durations are in milliseconds.
#[derive(Default)]
pub(crate) struct StepArgs {
    pub(crate) timeout: Option<Spanned<u64>>,
    pub(crate) retries: Option<Spanned<u32>>,
    pub(crate) compensate: Option<Ident>,
    pub(crate) compensate_timeout: Option<Spanned<u64>>,
    pub(crate) compensate_retries: Option<Spanned<u32>>,
    pub(crate) backoff_initial: Option<Spanned<u64>>,
    pub(crate) backoff_multiplier: Option<Spanned<f64>>,
    pub(crate) backoff_max: Option<Spanned<u64>>,
    pub(crate) jitter: Option<Spanned<f64>>,
    /// The span of the `pivot` key when the step is a pivot.
    pub(crate) pivot: Option<Span>,
    /// The span of the `concurrent` key when the step joins the group before it.
    pub(crate) concurrent: Option<Span>,
    /// The steps named in `after = "a, b"`, each spanned at the string.
    pub(crate) after: Option<Vec<Ident>>,
    /// How long the step waits, durably, once it is ready to start.
    pub(crate) delay: Option<Spanned<u64>>,
    /// The span of the `child` key when the step starts a child saga and waits for it.
    pub(crate) child: Option<Span>,
}

/// Parses the tokens inside `#[saga(..)]`.
pub(crate) fn saga_args(tokens: TokenStream, errors: &mut Errors) -> SagaArgs {
    let mut args = SagaArgs::default();
    let parser = syn::meta::parser(|meta| {
        let key = key_name(&meta.path);
        match key.as_str() {
            symbol::NAME => {
                if let Some(lit) = string_value(&meta, errors, symbol::NAME)? {
                    if lit.value().trim().is_empty() {
                        errors.spanned(&lit, "`name` cannot be empty");
                    }
                    set_once(&mut args.name, lit, &meta.path, errors);
                }
            }
            symbol::INPUT => {
                let ty: Type = meta.value()?.parse()?;
                set_once(&mut args.input, ty, &meta.path, errors);
            }
            symbol::CRATE => {
                let value = meta.value()?;
                let path = if value.peek(LitStr) {
                    let lit: LitStr = value.parse()?;
                    lit.parse::<Path>()?
                } else {
                    value.parse::<Path>()?
                };
                set_once(&mut args.krate, path, &meta.path, errors);
            }
            symbol::CONTEXT => {
                let ident = ident_value(&meta)?;
                set_once(&mut args.context, ident, &meta.path, errors);
            }
            symbol::STATE => {
                let ident = ident_value(&meta)?;
                set_once(&mut args.state, ident, &meta.path, errors);
            }
            symbol::VIS => {
                let value = meta.value()?;
                let vis = if value.peek(LitStr) {
                    let lit: LitStr = value.parse()?;
                    lit.parse::<syn::Visibility>()?
                } else {
                    value.parse::<syn::Visibility>()?
                };
                set_once(&mut args.vis, vis, &meta.path, errors);
            }
            _ => {
                if let Some(known) = diag::did_you_mean(&key, symbol::SAGA_KEYS.iter().copied()) {
                    args.misspelled.push(known);
                }
                unknown_key(&meta, &key, symbol::SAGA_KEYS, "#[saga]", errors)?;
            }
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

/// Parses one `#[step]` or `#[step(..)]` attribute.
pub(crate) fn step_args(attr: &Attribute, errors: &mut Errors) -> StepArgs {
    let mut args = StepArgs::default();
    let list = match &attr.meta {
        syn::Meta::Path(_) => return args,
        syn::Meta::List(list) => list,
        syn::Meta::NameValue(nv) => {
            errors.spanned(
                nv,
                "expected `#[step]` or `#[step(key = value, ..)]`, found `#[step = ..]`",
            );
            return args;
        }
    };
    let result = list.parse_nested_meta(|meta| {
        let key = key_name(&meta.path);
        match key.as_str() {
            symbol::TIMEOUT => {
                if let Some(ms) = duration_value(&meta, errors, symbol::TIMEOUT)? {
                    set_once(&mut args.timeout, ms, &meta.path, errors);
                }
            }
            symbol::DELAY => {
                if let Some(ms) = duration_value(&meta, errors, symbol::DELAY)? {
                    set_once(&mut args.delay, ms, &meta.path, errors);
                }
            }
            symbol::COMPENSATE_TIMEOUT => {
                if let Some(ms) = duration_value(&meta, errors, symbol::COMPENSATE_TIMEOUT)? {
                    set_once(&mut args.compensate_timeout, ms, &meta.path, errors);
                }
            }
            symbol::BACKOFF_INITIAL => {
                if let Some(ms) = duration_value(&meta, errors, symbol::BACKOFF_INITIAL)? {
                    set_once(&mut args.backoff_initial, ms, &meta.path, errors);
                }
            }
            symbol::BACKOFF_MAX => {
                if let Some(ms) = duration_value(&meta, errors, symbol::BACKOFF_MAX)? {
                    set_once(&mut args.backoff_max, ms, &meta.path, errors);
                }
            }
            symbol::RETRIES => {
                if let Some(n) = count_value(&meta, errors, symbol::RETRIES)? {
                    set_once(&mut args.retries, n, &meta.path, errors);
                }
            }
            symbol::COMPENSATE_RETRIES => {
                if let Some(n) = count_value(&meta, errors, symbol::COMPENSATE_RETRIES)? {
                    set_once(&mut args.compensate_retries, n, &meta.path, errors);
                }
            }
            symbol::BACKOFF_MULTIPLIER => {
                if let Some(x) = float_value(&meta, errors, symbol::BACKOFF_MULTIPLIER)? {
                    if x.value < 1.0 {
                        errors.at(x.span, "`backoff_multiplier` must be at least 1.0");
                    } else {
                        set_once(&mut args.backoff_multiplier, x, &meta.path, errors);
                    }
                }
            }
            symbol::JITTER => {
                if let Some(x) = float_value(&meta, errors, symbol::JITTER)? {
                    if x.value > 1.0 {
                        errors.at(
                            x.span,
                            "`jitter` is a fraction of the delay: expected a number from 0.0 to 1.0",
                        );
                    } else {
                        set_once(&mut args.jitter, x, &meta.path, errors);
                    }
                }
            }
            symbol::COMPENSATE => {
                if let Some(ident) = method_value(&meta, errors)? {
                    set_once(&mut args.compensate, ident, &meta.path, errors);
                }
            }
            symbol::PIVOT => {
                if flag_value(&meta, errors, symbol::PIVOT)? {
                    set_once(&mut args.pivot, meta.path.span(), &meta.path, errors);
                }
            }
            symbol::CONCURRENT => {
                if flag_value(&meta, errors, symbol::CONCURRENT)? {
                    set_once(&mut args.concurrent, meta.path.span(), &meta.path, errors);
                }
            }
            symbol::CHILD => {
                if flag_value(&meta, errors, symbol::CHILD)? {
                    set_once(&mut args.child, meta.path.span(), &meta.path, errors);
                }
            }
            symbol::AFTER => {
                if let Some(names) = after_value(&meta, errors)? {
                    set_once(&mut args.after, names, &meta.path, errors);
                }
            }
            _ => unknown_key(&meta, &key, symbol::STEP_KEYS, "#[step]", errors)?,
        }
        Ok(())
    });
    if let Err(error) = result {
        errors.push(error);
    }
    args
}

/// The key as written: `timeout`, or the whole path for `a::b` (never a valid key).
fn key_name(path: &Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    segments.join("::")
}

/// Stores `value` unless the slot is taken; a second value is reported at its key.
fn set_once<T>(slot: &mut Option<T>, value: T, key: &Path, errors: &mut Errors) {
    if slot.is_some() {
        errors.spanned(
            key,
            format_args!("`{}` is given more than once", key_name(key)),
        );
    } else {
        *slot = Some(value);
    }
}

/// Reports an unknown key and skips its value so that parsing can go on.
fn unknown_key(
    meta: &ParseNestedMeta<'_>,
    key: &str,
    known: &[&str],
    attribute: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    let expected = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = diag::suggestion(key, known.iter().copied());
    errors.spanned(
        &meta.path,
        format_args!("unknown key `{key}` in `{attribute}`{hint}\nexpected one of: {expected}"),
    );
    if meta.input.peek(syn::Token![=]) {
        let _: Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _: TokenTree = meta.input.parse()?;
    }
    Ok(())
}

/// A literal value, looked through the invisible groups that `macro_rules!` adds.
enum Literal<'a> {
    Int(&'a syn::LitInt),
    NegativeNumber,
    Float(&'a syn::LitFloat),
    Str(&'a LitStr),
    Bool(bool),
    Other,
}

fn literal(expr: &Expr) -> Literal<'_> {
    let mut expr = expr;
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    match expr {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Int(int) => Literal::Int(int),
            Lit::Float(float) => Literal::Float(float),
            Lit::Str(s) => Literal::Str(s),
            Lit::Bool(b) => Literal::Bool(b.value),
            _ => Literal::Other,
        },
        Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => match literal(&unary.expr) {
            Literal::Int(_) | Literal::Float(_) => Literal::NegativeNumber,
            _ => Literal::Other,
        },
        _ => Literal::Other,
    }
}

/// Integer literals may carry an integer type suffix (`3u32`), nothing else.
fn plain_integer<T>(int: &syn::LitInt, key: &str, errors: &mut Errors) -> Option<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match int.base10_parse::<T>() {
        Ok(value) => Some(value),
        Err(_) => {
            errors.spanned(int, format_args!("`{key}` is out of range"));
            None
        }
    }
}

/// `timeout = 30` (seconds) or `timeout = "500ms"`. Returns milliseconds, never zero.
fn duration_value(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
    key: &str,
) -> syn::Result<Option<Spanned<u64>>> {
    let expr: Expr = meta.value()?.parse()?;
    let span = expr.span();
    let millis = match literal(&expr) {
        Literal::Int(int) => {
            let Some(seconds) = plain_integer::<u64>(int, key, errors) else {
                return Ok(None);
            };
            let Some(ms) = seconds.checked_mul(1000) else {
                errors.spanned(int, format_args!("`{key}` is out of range"));
                return Ok(None);
            };
            ms
        }
        Literal::Str(lit) => match parse_duration(&lit.value()) {
            Ok(ms) => ms,
            Err(message) => {
                errors.spanned(lit, format_args!("invalid duration for `{key}`: {message}"));
                return Ok(None);
            }
        },
        Literal::NegativeNumber => {
            errors.spanned(&expr, format_args!("`{key}` must be greater than zero"));
            return Ok(None);
        }
        Literal::Float(_) => {
            errors.spanned(
                &expr,
                format_args!(
                    "`{key}` takes whole seconds or a duration string: write `{key} = \"1500ms\"` for a fraction of a second"
                ),
            );
            return Ok(None);
        }
        Literal::Bool(_) | Literal::Other => {
            errors.spanned(
                &expr,
                format_args!(
                    "expected seconds or a duration string for `{key}`, such as `{key} = 30` or `{key} = \"500ms\"`"
                ),
            );
            return Ok(None);
        }
    };
    if millis == 0 {
        errors.at(span, format_args!("`{key}` must be greater than zero"));
        return Ok(None);
    }
    Ok(Some(Spanned {
        value: millis,
        span,
    }))
}

/// `retries = 3`: a whole number, zero allowed.
fn count_value(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
    key: &str,
) -> syn::Result<Option<Spanned<u32>>> {
    let expr: Expr = meta.value()?.parse()?;
    let span = expr.span();
    match literal(&expr) {
        Literal::Int(int) => {
            Ok(plain_integer::<u32>(int, key, errors).map(|value| Spanned { value, span }))
        }
        Literal::NegativeNumber => {
            errors.spanned(&expr, format_args!("`{key}` cannot be negative"));
            Ok(None)
        }
        Literal::Float(_) => {
            errors.spanned(
                &expr,
                format_args!("`{key}` must be a whole number, such as `{key} = 3`"),
            );
            Ok(None)
        }
        Literal::Str(_) | Literal::Bool(_) | Literal::Other => {
            errors.spanned(
                &expr,
                format_args!("expected an integer for `{key}`, such as `{key} = 3`"),
            );
            Ok(None)
        }
    }
}

/// `backoff_multiplier = 2.0`, `jitter = 0.1`: a finite, non-negative number.
fn float_value(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
    key: &str,
) -> syn::Result<Option<Spanned<f64>>> {
    let expr: Expr = meta.value()?.parse()?;
    let span = expr.span();
    let parsed = match literal(&expr) {
        Literal::Int(int) => int.base10_parse::<f64>(),
        Literal::Float(float) => float.base10_parse::<f64>(),
        Literal::NegativeNumber => {
            errors.spanned(&expr, format_args!("`{key}` cannot be negative"));
            return Ok(None);
        }
        Literal::Str(_) | Literal::Bool(_) | Literal::Other => {
            errors.spanned(
                &expr,
                format_args!("expected a number for `{key}`, such as `{key} = 2.0`"),
            );
            return Ok(None);
        }
    };
    match parsed {
        Ok(value) if value.is_finite() => Ok(Some(Spanned { value, span })),
        _ => {
            errors.spanned(&expr, format_args!("`{key}` is out of range"));
            Ok(None)
        }
    }
}

/// `pivot` or `pivot = true`: a flag, with an optional boolean value.
fn flag_value(meta: &ParseNestedMeta<'_>, errors: &mut Errors, key: &str) -> syn::Result<bool> {
    if !meta.input.peek(syn::Token![=]) {
        return Ok(true);
    }
    let expr: Expr = meta.value()?.parse()?;
    match literal(&expr) {
        Literal::Bool(value) => Ok(value),
        _ => {
            errors.spanned(
                &expr,
                format_args!("expected `{key}` or `{key} = true`: the value is a boolean"),
            );
            Ok(false)
        }
    }
}

/// `after = "reserve_flight, reserve_hotel"`: names of earlier steps, each once.
fn after_value(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<Vec<Ident>>> {
    let expr: Expr = meta.value()?.parse()?;
    let Literal::Str(lit) = literal(&expr) else {
        errors.spanned(
            &expr,
            "expected a string naming earlier steps for `after`, such as `after = \"reserve_flight, reserve_hotel\"`",
        );
        return Ok(None);
    };
    let text = lit.value();
    let mut names: Vec<Ident> = Vec::new();
    let mut ok = true;
    for part in text.split(',') {
        let name = part.trim();
        match syn::parse_str::<Ident>(name) {
            Ok(mut ident) => {
                ident.set_span(lit.span());
                if names.contains(&ident) {
                    errors.spanned(lit, format_args!("`{name}` is named twice in `after`"));
                    ok = false;
                } else {
                    names.push(ident);
                }
            }
            Err(_) => {
                let problem = if name.is_empty() {
                    "one name is empty".to_owned()
                } else {
                    format!("`{name}` is not a step name")
                };
                errors.spanned(
                    lit,
                    format_args!(
                        "`after` lists earlier steps separated by commas, such as `after = \"reserve_flight, reserve_hotel\"`; {problem}"
                    ),
                );
                ok = false;
            }
        }
    }
    Ok(ok.then_some(names))
}

/// `compensate = "undo"` or `compensate = undo`: a method of the same impl.
fn method_value(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<Ident>> {
    let expr: Expr = meta.value()?.parse()?;
    let mut inner = &expr;
    while let Expr::Group(group) = inner {
        inner = &group.expr;
    }
    match inner {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => match syn::parse_str::<Ident>(&lit.value()) {
            Ok(mut ident) => {
                ident.set_span(lit.span());
                Ok(Some(ident))
            }
            Err(_) => {
                errors.spanned(
                    lit,
                    format_args!(
                        "`compensate` names a method of this impl, but `{}` is not an identifier",
                        lit.value()
                    ),
                );
                Ok(None)
            }
        },
        Expr::Path(path) if path.qself.is_none() && path.path.get_ident().is_some() => {
            Ok(path.path.get_ident().cloned())
        }
        _ => {
            errors.spanned(
                &expr,
                "expected the name of a method of this impl, such as `compensate = \"undo\"`",
            );
            Ok(None)
        }
    }
}

fn string_value(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
    key: &str,
) -> syn::Result<Option<LitStr>> {
    let expr: Expr = meta.value()?.parse()?;
    match literal(&expr) {
        Literal::Str(lit) => Ok(Some(lit.clone())),
        _ => {
            errors.spanned(
                &expr,
                format_args!("expected a string for `{key}`, such as `{key} = \"order_workflow\"`"),
            );
            Ok(None)
        }
    }
}

fn ident_value(meta: &ParseNestedMeta<'_>) -> syn::Result<Ident> {
    meta.value()?.parse()
}
