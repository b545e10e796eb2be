//! Stage 3, validate: the rules that span methods (bindings, compensations, pivots), turning
//! the model into a plan that code generation can read without failing.

use proc_macro2::Span;
use syn::spanned::Spanned as _;
use syn::{Ident, Type};

use super::graph;
use super::model::{self, FnModel, Output, Receiver, SagaModel, StepModel};
use super::plan::{Binding, CompensationPlan, ParamPlan, SagaPlan, StepPlan};
use super::signal;
use crate::diag::{self, Errors};
use crate::symbol;

/// Names of the state variants that do not belong to a step.
const TERMINAL_VARIANTS: &[&str] = &["Completed", "Failed", "CompensationFailed", "Parked"];

/// Checks the model; returns a plan only if no error was found anywhere.
pub(crate) fn validate(model: SagaModel, errors: &mut Errors) -> Option<SagaPlan> {
    let name = match &model.name {
        Some(lit) => lit.value(),
        None if model.misspelled.contains(&symbol::NAME) => String::new(),
        None => {
            errors.at(
                Span::call_site(),
                "missing `name` in `#[saga(..)]`: the saga's durable name, such as `#[saga(name = \"order_workflow\", input = OrderInput)]`",
            );
            String::new()
        }
    };
    let input = match &model.input {
        Some(ty) => ty.clone(),
        None if model.misspelled.contains(&symbol::INPUT) => syn::parse_quote!(()),
        None => {
            errors.at(
                Span::call_site(),
                "missing `input` in `#[saga(..)]`: the type of the saga's input, such as `#[saga(name = \"order_workflow\", input = OrderInput)]`",
            );
            syn::parse_quote!(())
        }
    };
    if model.steps.is_empty() {
        errors.at(
            model.self_span,
            "a saga needs at least one step: mark its methods with `#[step]`",
        );
    }

    check_step_names(&model, errors);
    let steps: Vec<StepPlan> = model
        .steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| step_plan(&model, index, step, errors))
        .collect();

    let after = resolve_after(&model, errors);
    if !errors.is_empty() || steps.len() != model.steps.len() {
        return None;
    }
    let mut steps = steps;
    graph::depends_on(&mut steps, &after);
    signal::check(&steps, errors);
    if !errors.is_empty() {
        return None;
    }
    Some(SagaPlan {
        fingerprint: fingerprint(&name, &steps),
        name,
        input,
        krate: model.krate,
        context_ident: model.context_ident,
        state_ident: model.state_ident,
        signal_ident: model.signal_ident,
        vis: model.vis,
        self_ty: model.self_ty,
        steps,
    })
}

/// Duplicate names, the reserved name `input`, and state-variant collisions.
fn check_step_names(model: &SagaModel, errors: &mut Errors) {
    let mut variants: Vec<String> = TERMINAL_VARIANTS.iter().map(|v| (*v).to_owned()).collect();
    for (index, step) in model.steps.iter().enumerate() {
        let func = &step.func;
        if model.steps[..index]
            .iter()
            .any(|earlier| earlier.func.name == func.name)
        {
            errors.spanned(
                &func.ident,
                format_args!(
                    "two steps are named `{}`; step names must be unique",
                    func.name
                ),
            );
            continue;
        }
        if func.name == symbol::INPUT_PARAM {
            errors.spanned(
                &func.ident,
                "a step cannot be named `input`: that name binds the saga's input",
            );
            continue;
        }
        let variant = camel_case(&func.name);
        let compensating = format!("Compensating{variant}");
        for candidate in [&variant, &compensating] {
            if variants.contains(candidate) {
                errors.spanned(
                    &func.ident,
                    format_args!(
                        "step `{}` would be the state `{}::{candidate}`, which is taken; rename the step",
                        func.name, model.state_ident
                    ),
                );
            }
        }
        variants.push(variant);
        variants.push(compensating);
    }
}

fn step_plan(
    model: &SagaModel,
    index: usize,
    step: &StepModel,
    errors: &mut Errors,
) -> Option<StepPlan> {
    let func = &step.func;
    let args = &step.args;
    check_shape(func, "a step", errors);
    let output = match &func.output {
        Output::Result(ok, span) => Some(((**ok).clone(), *span)),
        Output::NotResult(span) => {
            errors.at(
                *span,
                format_args!(
                    "step `{}` must return `Result<T, E>` where `E: Into<StepError>`",
                    func.name
                ),
            );
            None
        }
        Output::Unit(span) => {
            errors.at(
                *span,
                format_args!(
                    "step `{}` must return `Result<T, E>` where `E: Into<StepError>`; it returns nothing",
                    func.name
                ),
            );
            None
        }
    };
    let params = bind_params(model, index, func, false, errors);

    if let (Some(initial), Some(max)) = (args.backoff_initial, args.backoff_max)
        && max.value < initial.value
    {
        errors.at(max.span, "`backoff_max` is shorter than `backoff_initial`");
    }
    if let (Some(pivot), Some(_)) = (args.pivot, &args.compensate) {
        errors.at(
            pivot,
            "a `pivot` step cannot have `compensate`: once a pivot completes, the saga never compensates",
        );
    }
    let earlier_pivot = model.steps[..index]
        .iter()
        .find(|earlier| earlier.args.pivot.is_some());
    if let (Some(pivot), Some(retries)) = (earlier_pivot, args.retries) {
        errors.at(
            retries.span,
            format_args!(
                "`retries` cannot apply to `{}`: it comes after the pivot `{}`, and a step after the pivot retries until it succeeds (a permanent error parks the saga); remove `retries`, and bound how long a caller waits with `Executor::execute_within`",
                func.name, pivot.func.name
            ),
        );
    }
    if let (Some(concurrent), Some(_)) = (args.concurrent, args.pivot) {
        errors.at(
            concurrent,
            "a pivot cannot be `concurrent`: it is the point of no return, so it waits for every earlier step and every later step waits for it",
        );
    }
    if let (None, Some(names)) = (args.concurrent, &args.after)
        && let Some(first) = names.first()
    {
        errors.spanned(
            first,
            format_args!(
                "`after` only applies to a `concurrent` step: `{}` is not concurrent, so it already waits for every earlier step",
                func.name
            ),
        );
    }
    if args.compensate.is_none() {
        if let Some(key) = args.compensate_timeout {
            errors.at(key.span, "`compensate_timeout` needs `compensate`");
        }
        if let Some(key) = args.compensate_retries {
            errors.at(key.span, "`compensate_retries` needs `compensate`");
        }
    }

    let compensation = args
        .compensate
        .as_ref()
        .and_then(|target| compensation_plan(model, index, step, target, errors));

    if args.child.is_some() {
        super::child::check(args, errors);
    }
    let variant = Ident::new(&camel_case(&func.name), func.ident.span());
    let (output, return_span) = output?;
    let (output, child) = match args.child {
        Some(_) => {
            let krate = &model.krate;
            let completed: Type = syn::parse_quote_spanned! {return_span=>
                #krate::__private::Completed<<#output as #krate::__private::ChildRequest>::Saga>
            };
            (completed, Some(output))
        }
        None => (output, None),
    };
    Some(StepPlan {
        ident: func.ident.clone(),
        name: func.name.clone(),
        variant,
        output,
        child,
        return_span,
        params: params?,
        timeout_ms: args.timeout.map(|t| t.value),
        delay: args.delay,
        retries: args.retries.map(|r| r.value),
        backoff_initial_ms: args.backoff_initial.map(|d| d.value),
        backoff_multiplier: args.backoff_multiplier.map(|m| m.value),
        backoff_max_ms: args.backoff_max.map(|d| d.value),
        jitter: args.jitter.map(|j| j.value),
        pivot: args.pivot.is_some(),
        concurrent: args.concurrent.is_some(),
        depends_on: Vec::new(),
        compensation: match (&args.compensate, compensation) {
            (Some(_), None) => return None,
            (_, plan) => plan,
        },
    })
}

/// The steps each step names in `after`, by index: only earlier steps, each reported where
/// it is written otherwise.
fn resolve_after(model: &SagaModel, errors: &mut Errors) -> Vec<Vec<usize>> {
    model
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let names = step.args.after.as_deref().unwrap_or_default();
            names
                .iter()
                .filter_map(|ident| {
                    let name = model::unraw(ident);
                    let this = &step.func.name;
                    match model.steps.iter().position(|s| s.func.name == name) {
                        Some(source) if source < index => return Some(source),
                        Some(source) if source == index => errors.spanned(
                            ident,
                            format_args!("step `{this}` cannot run after itself"),
                        ),
                        Some(_) => errors.spanned(
                            ident,
                            format_args!(
                                "`{name}` is declared after `{this}`; `after` names only earlier steps, so that declaration order is always a valid order to run the saga"
                            ),
                        ),
                        None => {
                            let earlier = model.steps[..index].iter().map(|s| s.func.name.as_str());
                            let hint = diag::suggestion(&name, earlier);
                            errors.spanned(
                                ident,
                                format_args!("`after` names `{name}`, which is not a step of this saga{hint}"),
                            );
                        }
                    }
                    None
                })
                .collect()
        })
        .collect()
}

fn compensation_plan(
    model: &SagaModel,
    index: usize,
    step: &StepModel,
    target: &Ident,
    errors: &mut Errors,
) -> Option<CompensationPlan> {
    let wanted = model::unraw(target);
    let Some(func) = model.methods.iter().find(|m| m.name == wanted) else {
        if model.steps.iter().any(|s| s.func.name == wanted) {
            errors.spanned(
                target,
                format_args!(
                    "`{wanted}` is a step; a compensation is a plain method of the impl, without `#[step]`"
                ),
            );
        } else {
            let hint = diag::suggestion(&wanted, model.methods.iter().map(|m| m.name.as_str()));
            errors.spanned(
                target,
                format_args!(
                    "no method `{wanted}` in this impl to compensate `{}`{hint}",
                    step.func.name
                ),
            );
        }
        return None;
    };
    check_shape(func, "a compensation", errors);
    let (return_span, ok_span) = match &func.output {
        Output::Result(ok, span) => (*span, ok.span()),
        Output::NotResult(span) | Output::Unit(span) => {
            errors.at(
                *span,
                format_args!(
                    "compensation `{}` must return `Result<(), E>` where `E: Into<StepError>`",
                    func.name
                ),
            );
            (*span, *span)
        }
    };
    let params = bind_params(model, index, func, true, errors)?;
    let uses_own_output = params.iter().any(|p| p.binding == Binding::Output(index));
    Some(CompensationPlan {
        ident: func.ident.clone(),
        name: func.name.clone(),
        variant: Ident::new(
            &format!("Compensating{}", camel_case(&step.func.name)),
            step.func.ident.span(),
        ),
        params,
        return_span,
        ok_span,
        uses_own_output,
        timeout_ms: step.args.compensate_timeout.map(|t| t.value),
        retries: step.args.compensate_retries.map(|r| r.value),
    })
}

/// `async`, `&self`, no generics.
fn check_shape(func: &FnModel, what: &str, errors: &mut Errors) {
    if !func.is_async {
        errors.at(
            func.sig_span,
            format_args!("{what} must be an `async fn`: `{}` is not async", func.name),
        );
    }
    match func.receiver {
        Receiver::SharedRef => {}
        Receiver::Other(span) | Receiver::Missing(span) => errors.at(
            span,
            format_args!("{what} takes `&self` as its first parameter"),
        ),
    }
    if let Some(span) = func.generics {
        errors.at(
            span,
            format_args!("{what} cannot be generic: its data flows through concrete types"),
        );
    }
}

/// Binds each parameter of `func` (step `index`, or its compensation) to its source.
fn bind_params(
    model: &SagaModel,
    index: usize,
    func: &FnModel,
    is_compensation: bool,
    errors: &mut Errors,
) -> Option<Vec<ParamPlan>> {
    let step_name = &model.steps[index].func.name;
    let mut plans = Vec::new();
    let mut ok = true;
    for param in &func.params {
        let Some(ident) = &param.ident else {
            ok = false;
            continue;
        };
        if let Some(span) = param.signal {
            match signal::bind(ident, param, span, is_compensation, errors) {
                Some(plan) => plans.push(plan),
                None => ok = false,
            }
            continue;
        }
        let Some(referent) = &param.referent else {
            errors.spanned(
                &param.ty,
                format_args!(
                    "parameters of steps and compensations are shared references: write `&{}`",
                    model::type_text(&param.ty)
                ),
            );
            ok = false;
            continue;
        };
        let name = model::unraw(ident);
        let binding = if param.is_step_context {
            Some(Binding::StepContext)
        } else if name == symbol::INPUT_PARAM {
            Some(Binding::Input)
        } else if let Some(source) = model.steps.iter().position(|s| s.func.name == name) {
            if source < index || (is_compensation && source == index) {
                Some(Binding::Output(source))
            } else if source == index {
                errors.spanned(
                    ident,
                    format_args!(
                        "step `{step_name}` cannot take its own output; only its compensation can"
                    ),
                );
                None
            } else {
                let who = if is_compensation {
                    format!("the compensation of `{step_name}`")
                } else {
                    format!("step `{step_name}`")
                };
                errors.spanned(
                    ident,
                    format_args!(
                        "`{name}` runs after `{step_name}`, so {who} cannot use its output; only earlier steps' outputs are available"
                    ),
                );
                None
            }
        } else {
            let mut available = vec![symbol::INPUT_PARAM];
            available.extend(model.steps[..index].iter().map(|s| s.func.name.as_str()));
            if is_compensation {
                available.push(step_name);
            }
            let hint = diag::suggestion(&name, available.iter().copied());
            let listed = available
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.spanned(
                ident,
                format_args!(
                    "`{name}` is neither the saga input nor an earlier step{hint}\nparameters bind by name to one of {listed}, or by type to `&StepContext`"
                ),
            );
            None
        };
        match binding {
            Some(binding) => plans.push(ParamPlan {
                ident: ident.clone(),
                referent: referent.clone(),
                binding,
            }),
            None => ok = false,
        }
    }
    ok.then_some(plans)
}

/// `create_backtest` → `CreateBacktest`.
pub(crate) fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'S');
    }
    out
}

/// FNV-1a (64 bit) over the saga name and the ordered step names, and over the graph when it
/// is not a chain: stable across compiler versions, unlike `DefaultHasher`. A chain keeps the
/// fingerprint it had before graphs existed, so that its stored sagas still resume.
fn fingerprint(name: &str, steps: &[StepPlan]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(name.as_bytes());
    for step in steps {
        feed(step.name.as_bytes());
    }
    if !graph::is_chain(steps) {
        for step in steps {
            let deps: Vec<String> = step.depends_on.iter().map(usize::to_string).collect();
            feed(format!("after:{}", deps.join(",")).as_bytes());
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::camel_case;

    #[test]
    fn camel() {
        assert_eq!(camel_case("create_backtest"), "CreateBacktest");
        assert_eq!(camel_case("step"), "Step");
        assert_eq!(camel_case("a__b"), "AB");
        assert_eq!(camel_case("_1x"), "S1x");
    }
}
