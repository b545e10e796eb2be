//! What `#[saga]` emits next to its errors: the context and state types and a `Saga` impl
//! that do nothing, so that the rest of the user's code (`orchestrator.register(Flow)`,
//! `outcome.context().make`) still type-checks and only the real mistake is reported
//! (thiserror's `fallback.rs` does the same). None of it ever runs: the crate does not
//! compile while the error stands.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::{Output, SagaModel};

/// The fallback items for `model`, or nothing when the saga's input or type is unknown
/// (then the user's own code fails anyway, at the missing pieces).
// One `quote!` template of the placeholder items, read as the code it generates.
#[allow(clippy::too_many_lines)]
pub(crate) fn generate(model: &SagaModel) -> TokenStream {
    let Some(input) = &model.input else {
        return TokenStream::new();
    };
    let krate = &model.krate;
    let p = quote!(#krate::__private);
    let self_ty = &model.self_ty;
    let context = &model.context_ident;
    let state = &model.state_ident;
    let vis = &model.vis;
    let name = model
        .name
        .as_ref()
        .map_or_else(String::new, syn::LitStr::value);
    // One field per step name (a duplicate, or a step named `input`, is one of the errors).
    let mut fields: Vec<(&syn::Ident, &syn::Type)> = Vec::new();
    for step in &model.steps {
        let name = &step.func.name;
        if name == crate::symbol::INPUT_PARAM || fields.iter().any(|(f, _)| f == &name) {
            continue;
        }
        if let Output::Result(ok, _) = &step.func.output {
            fields.push((&step.func.ident, &**ok));
        }
    }
    let field_decls = fields
        .iter()
        .map(|(ident, ty)| quote!(#[allow(missing_docs)] pub #ident: ::core::option::Option<#ty>,));
    let field_inits = fields
        .iter()
        .map(|(ident, _)| quote!(#ident: ::core::option::Option::None,));
    quote! {
        /// Not generated: `#[saga]` reported an error.
        #vis struct #context {
            /// The saga's input.
            pub input: #input,
            #(#field_decls)*
        }

        /// Not generated: `#[saga]` reported an error.
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::hash::Hash,
        )]
        #vis enum #state {
            /// Every step completed.
            Completed,
            /// A step failed for good and every completed step was compensated.
            Failed,
            /// A compensation gave up.
            CompensationFailed,
            /// Parked.
            Parked,
        }

        const _: () = {
            impl #p::serde::Serialize for #context {
                fn serialize<__S>(&self, _: __S) -> ::core::result::Result<__S::Ok, __S::Error>
                where
                    __S: #p::serde::Serializer,
                {
                    ::core::result::Result::Err(<__S::Error as #p::serde::ser::Error>::custom(
                        "`#[saga]` reported an error",
                    ))
                }
            }

            impl<'de> #p::serde::Deserialize<'de> for #context {
                fn deserialize<__D>(_: __D) -> ::core::result::Result<Self, __D::Error>
                where
                    __D: #p::serde::Deserializer<'de>,
                {
                    ::core::result::Result::Err(<__D::Error as #p::serde::de::Error>::custom(
                        "`#[saga]` reported an error",
                    ))
                }
            }

            impl #p::StateOf for #state {
                fn position(self) -> (#p::SagaState, usize) {
                    (#p::SagaState::Failed, 0)
                }
            }

            impl #p::Sealed for #self_ty {}

            impl #p::Saga for #self_ty {
                type Input = #input;
                type Context = #context;
                type State = #state;
                type Signal = #p::NoSignal;

                const DEFINITION: &'static #p::Definition = &#p::Definition {
                    name: #name,
                    fingerprint: "",
                    steps: &[],
                    signals: &[],
                };

                fn check_signal(
                    _: usize,
                    _: &str,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    ::core::result::Result::Err(::std::string::String::new())
                }

                fn child_output(
                    _: usize,
                    _: &str,
                    _: &str,
                    _: ::std::vec::Vec<bool>,
                ) -> ::core::result::Result<#p::StepOutput, ::std::string::String> {
                    ::core::result::Result::Err(::std::string::String::new())
                }

                fn new_context(input: Self::Input) -> Self::Context {
                    #context { input, #(#field_inits)* }
                }

                fn input(context: &Self::Context) -> &Self::Input {
                    &context.input
                }

                fn has_output(_: &Self::Context, _: usize) -> bool {
                    false
                }

                fn decode_context(
                    _: &str,
                    _: &[bool],
                ) -> ::core::result::Result<Self::Context, ::std::string::String> {
                    ::core::result::Result::Err(::std::string::String::new())
                }

                fn encode_context(
                    _: &Self::Context,
                    _: ::core::option::Option<&#p::Outputs>,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    ::core::result::Result::Err(::std::string::String::new())
                }

                fn store_output(_: &mut Self::Context, _: usize, _: #p::StepOutput) -> bool {
                    false
                }

                fn clear_output(_: &mut Self::Context, _: usize) {}

                fn state_of(_: #p::SagaState, _: usize) -> ::core::option::Option<Self::State> {
                    ::core::option::Option::None
                }

                fn run_step<'a>(
                    &'a self,
                    step: usize,
                    _: &'a Self::Context,
                    _: ::core::option::Option<&'a #p::Outputs>,
                    _: &'a #p::StepContext,
                ) -> #p::BoxFuture<'a, ::core::result::Result<#p::StepOutput, #p::StepError>> {
                    ::std::boxed::Box::pin(::core::future::ready(
                        ::core::result::Result::Err(#p::unknown_step(step)),
                    ))
                }

                fn run_compensation<'a>(
                    &'a self,
                    step: usize,
                    _: &'a Self::Context,
                    _: &'a #p::StepContext,
                ) -> #p::BoxFuture<'a, ::core::result::Result<(), #p::StepError>> {
                    ::std::boxed::Box::pin(::core::future::ready(
                        ::core::result::Result::Err(#p::unknown_step(step)),
                    ))
                }
            }
        };
    }
}
