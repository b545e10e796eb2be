//! Unit tests of the expansion on token streams: error text and count, a snapshot of the
//! generated code, and robustness against arbitrary input.

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::quote;

use crate::saga::expand;

/// The messages of the `compile_error!`s in `output`, in order.
fn error_messages(output: &TokenStream) -> Vec<String> {
    let mut messages = Vec::new();
    collect_errors(output.clone(), &mut messages);
    messages
}

fn collect_errors(stream: TokenStream, out: &mut Vec<String>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Ident(ident) if ident == "compile_error" => {
                if let Some(TokenTree::Group(group)) = tokens.get(i + 2)
                    && let Ok(lit) = syn::parse2::<syn::LitStr>(group.stream())
                {
                    out.push(lit.value());
                }
            }
            TokenTree::Group(group) => collect_errors(group.stream(), out),
            _ => {}
        }
    }
}

fn backtest() -> TokenStream {
    quote! {
        impl BacktestWorkflow {
            #[step(timeout = 30, retries = 3, compensate = "delete_backtest")]
            async fn create_backtest(&self, input: &BacktestInput) -> Result<Backtest, StepError> {
                todo()
            }

            async fn delete_backtest(&self, create_backtest: &Backtest) -> Result<(), StepError> {
                todo()
            }

            #[step(timeout = 300, retries = 2, compensate = "cleanup_strategy")]
            async fn run_strategy(&self, create_backtest: &Backtest) -> Result<StrategyRun, StepError> {
                todo()
            }

            async fn cleanup_strategy(&self, create_backtest: &Backtest) -> Result<(), StepError> {
                todo()
            }
        }
    }
}

fn saga_attr() -> TokenStream {
    quote!(name = "backtest_workflow", input = BacktestInput)
}

#[test]
fn valid_saga_expands_without_errors_into_parsable_items() {
    let output = expand(saga_attr(), backtest());
    assert_eq!(error_messages(&output), Vec::<String>::new());
    let file: syn::File = syn::parse2(output).expect("the expansion parses as items");
    let text = prettyplease::unparse(&file);
    for expected in [
        "pub struct BacktestWorkflowContext",
        "pub enum BacktestWorkflowState",
        "CompensatingCreateBacktest",
        "impl ::saga_runtime::__private::Saga for BacktestWorkflow",
        "name: \"backtest_workflow\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("#[step"),
        "`#[step]` attributes are consumed"
    );
}

/// The shapes whose expansion is kept as a file, so that a change in the generated code shows
/// up as a reviewed diff: `(file name, #[saga] arguments, impl)`. The root package's
/// `tests/expanded.rs` compiles each file (and runs it) against the real runtime.
fn snapshot_cases() -> Vec<(&'static str, TokenStream, TokenStream)> {
    vec![
        ("backtest", saga_attr(), backtest()),
        (
            "pivot",
            quote!(name = "order", input = Order),
            quote! {
                impl Checkout {
                    #[step(retries = 2, compensate = "release")]
                    async fn reserve(&self, input: &Order) -> Result<(), StepError> {
                        todo()
                    }

                    async fn release(&self, input: &Order) -> Result<(), StepError> {
                        todo()
                    }

                    #[step(pivot, timeout = "500ms")]
                    async fn charge(&self, input: &Order, reserve: &()) -> Result<Option<String>, StepError> {
                        todo()
                    }

                    #[step]
                    async fn ship(&self, charge: &Option<String>) -> Result<u64, StepError> {
                        todo()
                    }
                }
            },
        ),
        (
            "step_context",
            quote!(name = "payments", input = Order),
            quote! {
                impl Payments {
                    #[step(compensate = "refund")]
                    async fn pay(&self, ctx: &StepContext, input: &Order) -> Result<String, StepError> {
                        todo()
                    }

                    async fn refund(&self, pay: &String, context: &StepContext) -> Result<(), StepError> {
                        todo()
                    }
                }
            },
        ),
        (
            "renamed",
            quote!(name = "renamed", input = Order, context = Data, state = Phase, vis = pub(crate), crate = renamed),
            quote! {
                impl Renamed {
                    #[step]
                    async fn only(&self, input: &Order) -> Result<u8, StepError> {
                        todo()
                    }
                }
            },
        ),
    ]
}

#[test]
fn expansion_snapshots() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let mut changed = Vec::new();
    for (name, attr, item) in snapshot_cases() {
        let output = expand(attr, item);
        assert_eq!(error_messages(&output), Vec::<String>::new(), "{name}");
        let file: syn::File = syn::parse2(output).expect("the expansion parses as items");
        let text = format!(
            "// Generated by `cargo test -p saga-macros expansion_snapshots` (UPDATE_EXPANDED=1 to refresh).\n// What `#[saga]` generates for the `{name}` shape; `tests/expanded.rs` compiles it.\n\n{}",
            prettyplease::unparse(&file)
        );
        let path = dir.join(format!("{name}.expanded.rs"));
        if std::env::var_os("UPDATE_EXPANDED").is_some() {
            std::fs::create_dir_all(&dir).expect("create dir");
            std::fs::write(&path, &text).expect("write snapshot");
        }
        if std::fs::read_to_string(&path).unwrap_or_default() != text {
            changed.push(name);
        }
    }
    assert!(
        changed.is_empty(),
        "the expansion of {changed:?} changed; review it and refresh with UPDATE_EXPANDED=1"
    );
}

fn errors_of(attr: TokenStream, item: TokenStream) -> Vec<String> {
    error_messages(&expand(attr, item))
}

#[test]
fn every_mistake_is_reported_in_one_pass() {
    let errors = errors_of(
        saga_attr(),
        quote! {
            impl Flow {
                #[step(timeout = 0, retries = -2, compensate = "nothing", timout = 3)]
                fn make(&self, input: &BacktestInput) -> Made { todo() }

                #[step(pivot)]
                async fn ship(&self, later: &Made, ctx: StepContext) -> Result<Shipped, StepError> { todo() }
            }
        },
    );
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert!(errors[0].contains("`timeout` must be greater than zero"));
    assert!(errors[1].contains("`retries` cannot be negative"));
    assert!(
        errors[2].contains("unknown key `timout`") && errors[2].contains("did you mean `timeout`")
    );
    assert!(errors[3].contains("must be an `async fn`"));
    assert!(errors[4].contains("must return `Result<T, E>`"));
    assert!(errors[5].contains("no method `nothing`"));
    assert!(errors[6].contains("`later` is neither the saga input nor an earlier step"));
    assert!(errors[7].contains("shared references: write `&StepContext`"));
}

#[test]
fn single_mistakes_give_single_errors() {
    let cases: Vec<(TokenStream, TokenStream, &str)> = vec![
        (
            quote!(name = "x"),
            quote!(impl F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "missing `input`",
        ),
        (
            quote!(input = I),
            quote!(impl F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "missing `name`",
        ),
        (
            quote!(name = "x", input = I, name = "y"),
            quote!(impl F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "`name` is given more than once",
        ),
        (
            quote!(name = "", input = I),
            quote!(impl F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "`name` cannot be empty",
        ),
        (
            saga_attr(),
            quote!(impl F { async fn a(&self) -> Result<u8, E> { todo() } }),
            "at least one step",
        ),
        (
            saga_attr(),
            quote!(impl T for F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "not on a trait impl",
        ),
        (
            saga_attr(),
            quote!(
                fn free() {}
            ),
            "inherent `impl` block",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step(compensate = "b", pivot)] async fn a(&self) -> Result<u8, E> { todo() } async fn b(&self) -> Result<(), E> { todo() } }),
            "a `pivot` step cannot have `compensate`",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step] async fn a(&self, b: &u8) -> Result<u8, E> { todo() } #[step] async fn b(&self) -> Result<u8, E> { todo() } }),
            "`b` runs after `a`",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step] async fn a<T>(&self) -> Result<u8, E> { todo() } }),
            "cannot be generic",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step] #[cfg(test)] async fn a(&self) -> Result<u8, E> { todo() } }),
            "`#[cfg]` is not supported on a step",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step] #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
            "duplicate `#[step]`",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step(retries = 99999999999)] async fn a(&self) -> Result<u8, E> { todo() } }),
            "`retries` is out of range",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step(timeout = "3 fortnights")] async fn a(&self) -> Result<u8, E> { todo() } }),
            "unknown unit `fortnights`",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step(compensate_retries = 3)] async fn a(&self) -> Result<u8, E> { todo() } }),
            "`compensate_retries` needs `compensate`",
        ),
        (
            saga_attr(),
            quote!(impl F { #[step] async fn completed(&self) -> Result<u8, E> { todo() } }),
            "which is taken",
        ),
        (
            saga_attr(),
            quote!(
                impl<T> F<T> {
                    #[step]
                    async fn a(&self) -> Result<u8, E> {
                        todo()
                    }
                }
            ),
            "generic sagas are not supported",
        ),
    ];
    for (attr, item, expected) in cases {
        let errors = errors_of(attr.clone(), item.clone());
        assert_eq!(
            errors.len(),
            1,
            "{attr} / {item}: expected one error containing {expected:?}, got {errors:#?}"
        );
        assert!(
            errors[0].contains(expected),
            "{attr} / {item}: expected {expected:?}, got {:?}",
            errors[0]
        );
    }
}

#[test]
fn errors_keep_the_users_impl_without_step_attributes() {
    let output = expand(
        quote!(name = "x"),
        quote!(impl F { #[step] async fn a(&self) -> Result<u8, E> { todo() } }),
    );
    let text = output.to_string();
    assert!(text.contains("impl F"), "{text}");
    assert!(text.contains("async fn a"), "{text}");
    assert!(!text.contains("# [step]"), "{text}");
}

/// SplitMix64, for reproducible random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
}

const IDENTS: &[&str] = &[
    "step",
    "saga",
    "name",
    "input",
    "timeout",
    "retries",
    "compensate",
    "pivot",
    "jitter",
    "backoff_initial",
    "backoff_max",
    "backoff_multiplier",
    "async",
    "fn",
    "self",
    "impl",
    "Result",
    "StepContext",
    "cfg",
    "for",
    "crate",
    "context",
    "state",
    "x",
    "r#type",
];
const PUNCTS: &[char] = &['#', '=', ',', '&', '-', ':', '<', '>', '!', ';', '.', '\''];

fn random_token(rng: &mut Rng, depth: usize) -> TokenTree {
    match rng.below(if depth > 3 { 4 } else { 5 }) {
        0 => TokenTree::Ident(Ident::new(
            IDENTS[rng.below(IDENTS.len())].trim_start_matches("r#"),
            Span::call_site(),
        )),
        1 => TokenTree::Punct(Punct::new(
            PUNCTS[rng.below(PUNCTS.len())],
            if rng.below(2) == 0 {
                Spacing::Alone
            } else {
                Spacing::Joint
            },
        )),
        2 => TokenTree::Literal(match rng.below(6) {
            0 => Literal::u64_unsuffixed(rng.next() % 1000),
            1 => Literal::string(["500ms", "", "1h30m", "x y", "0", "delete"][rng.below(6)]),
            2 => Literal::f64_unsuffixed((rng.below(300) as f64) / 100.0),
            3 => Literal::i64_unsuffixed(-(rng.below(5) as i64)),
            4 => Literal::u64_suffixed(rng.next()),
            _ => Literal::character('x'),
        }),
        3 => TokenTree::Ident(Ident::new("true", Span::call_site())),
        _ => {
            let delimiter = [
                Delimiter::Parenthesis,
                Delimiter::Brace,
                Delimiter::Bracket,
                Delimiter::None,
            ][rng.below(4)];
            let len = rng.below(6);
            let inner: TokenStream = (0..len).map(|_| random_token(rng, depth + 1)).collect();
            TokenTree::Group(Group::new(delimiter, inner))
        }
    }
}

/// Applies one random edit somewhere in the tree.
fn mutate(stream: TokenStream, rng: &mut Rng) -> TokenStream {
    let mut tokens: Vec<TokenTree> = stream.into_iter().collect();
    if tokens.is_empty() {
        return std::iter::once(random_token(rng, 0)).collect();
    }
    let at = rng.below(tokens.len());
    match rng.below(6) {
        0 => {
            tokens.remove(at);
        }
        1 => {
            let copy = tokens[at].clone();
            tokens.insert(at, copy);
        }
        2 => tokens[at] = random_token(rng, 0),
        3 => tokens.insert(at, random_token(rng, 0)),
        4 => {
            let other = rng.below(tokens.len());
            tokens.swap(at, other);
        }
        _ => {
            if let TokenTree::Group(group) = &tokens[at] {
                let inner = mutate(group.stream(), rng);
                let mut replaced = Group::new(group.delimiter(), inner);
                replaced.set_span(group.span());
                tokens[at] = TokenTree::Group(replaced);
            } else {
                tokens.truncate(at);
            }
        }
    }
    tokens.into_iter().collect()
}

/// At least 10,000 mutated and random token streams: `expand` always returns.
#[test]
fn expansion_never_panics_on_arbitrary_tokens() {
    let cases: usize = std::env::var("SAGA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("SAGA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5a6a);
    let mut rng = Rng(seed);
    let seeds = [
        (saga_attr(), backtest()),
        (
            quote!(
                name = "p",
                input = I,
                context = C,
                state = S,
                crate = ::saga_runtime
            ),
            quote!(impl P {
                #[step(timeout = "500ms", retries = 0, backoff_initial = "10ms", backoff_multiplier = 2.5, backoff_max = "1s", jitter = 0.2, pivot)]
                async fn a(&self, input: &I, ctx: &StepContext) -> Result<u8, E> { todo() }
                #[saga_runtime::step(compensate = undo, compensate_timeout = 5, compensate_retries = 9)]
                async fn b(&self, a: &u8) -> Result<u8, E> { todo() }
                async fn undo(&self, b: &u8, a: &u8) -> Result<(), E> { todo() }
            }),
        ),
    ];
    let mut with_errors = 0usize;
    for case in 0..cases {
        let (mut attr, mut item) = seeds[case % seeds.len()].clone();
        if case % 10 == 9 {
            attr = (0..rng.below(8))
                .map(|_| random_token(&mut rng, 0))
                .collect();
            item = (0..rng.below(12))
                .map(|_| random_token(&mut rng, 0))
                .collect();
        } else {
            for _ in 0..=rng.below(4) {
                if rng.below(3) == 0 {
                    attr = mutate(attr, &mut rng);
                } else {
                    item = mutate(item, &mut rng);
                }
            }
        }
        let shown = format!("attr: {attr}\nitem: {item}");
        let Ok(output) = std::panic::catch_unwind(|| expand(attr, item)) else {
            panic!("case {case} (seed {seed}) panicked on\n{shown}");
        };
        if !error_messages(&output).is_empty() {
            with_errors += 1;
        }
    }
    eprintln!(
        "fuzz: {cases} cases (seed {seed}), 0 panics, {with_errors} rejected with errors, {} accepted",
        cases - with_errors
    );
    // The mutations must actually exercise the error paths, not only valid input.
    assert!(
        with_errors > cases / 2,
        "only {with_errors} of {cases} cases had errors"
    );
}
