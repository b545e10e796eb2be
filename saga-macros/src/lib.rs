//! The `#[saga]` and `#[step]` attribute macros. Use them through `saga-runtime`, which
//! re-exports them (`use saga_runtime::prelude::*;`); generated code refers to the runtime
//! only through `::saga_runtime::__private`.
//!
//! The expansion runs in four stages, each in its own module: `parse` (attribute grammar),
//! `model` (the methods as written), `validate` (rules across steps) and `codegen` (cannot
//! fail). Errors are collected across all stages and reported together, each at the
//! narrowest token.

mod diag;
mod saga;
mod symbol;
#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Turns an inherent `impl` block into a saga: a typed state machine the runtime executes.
///
/// ```
/// use saga_runtime::prelude::*;
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct OrderInput { pub order_id: u64, pub amount_cents: i64 }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct Reservation { pub reservation_id: String }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct Payment { pub payment_id: String }
///
/// pub struct OrderWorkflow;
///
/// #[saga(name = "order_workflow", input = OrderInput)]
/// impl OrderWorkflow {
///     #[step(timeout = 30, retries = 3, compensate = "release_stock")]
///     async fn reserve_stock(&self, input: &OrderInput) -> Result<Reservation, StepError> {
///         Ok(Reservation { reservation_id: format!("r-{}", input.order_id) })
///     }
///
///     async fn release_stock(&self, reserve_stock: &Reservation) -> Result<(), StepError> {
///         let _ = reserve_stock;
///         Ok(())
///     }
///
///     #[step(timeout = "500ms", retries = 5, backoff_initial = "50ms", pivot)]
///     async fn charge(
///         &self,
///         input: &OrderInput,
///         reserve_stock: &Reservation,
///         ctx: &StepContext,
///     ) -> Result<Payment, StepError> {
///         let _ = (input.amount_cents, reserve_stock, ctx.idempotency_key());
///         Ok(Payment { payment_id: "p-1".into() })
///     }
/// }
///
/// // Generated next to the impl: the typed context, the state enum and the `Saga` impl.
/// let context: OrderWorkflowContext = OrderWorkflow::new_context(OrderInput { order_id: 7, amount_cents: 100 });
/// assert!(context.reserve_stock.is_none());
/// assert_eq!(OrderWorkflow::DEFINITION.steps().len(), 2);
/// let _: OrderWorkflowState = OrderWorkflowState::ReserveStock;
/// ```
///
/// # Arguments of `#[saga(..)]`
/// - `name = "..."` (required): the saga's durable name, stored with every checkpoint.
/// - `input = Type` (required): the saga's input; `Serialize + DeserializeOwned`.
/// - `context = Name`, `state = Name`: rename the generated `{Type}Context` and `{Type}State`.
/// - `vis = pub(crate)`: the visibility of those two types; default `pub`. Give the saga
///   type's own visibility: the macro sees the `impl`, not the type's declaration, and the
///   generated types must be at least as visible as the type (E0446 otherwise).
/// - `crate = path`: where the runtime is, when it is not `::saga_runtime`.
///
/// # Arguments of `#[step(..)]`
/// - `timeout`: whole seconds (`30`) or a duration string (`"500ms"`, `"1h30m"`); default:
///   the config's `default_timeout`.
/// - `retries`: retries after the first attempt; default: the config's `default_max_retries`.
/// - `compensate = "method"`: the method of this impl that undoes the step.
/// - `compensate_timeout`, `compensate_retries`: the compensation's own policy.
/// - `backoff_initial`, `backoff_multiplier`, `backoff_max`, `jitter`: exponential backoff.
/// - `pivot`: the point of no return; a pivot step cannot have `compensate`.
///
/// # Data flow
/// Each parameter after `&self` is a shared reference bound by name to `input`, or to the
/// output of an earlier step (named after that step), or by type to `&StepContext`. A
/// compensation binds the same way and may also take the output of the step it undoes,
/// and returns `Result<(), E>`.
///
/// # Errors
/// Every mistake is a compile error at the offending token. When there is one, the macro
/// still emits the impl, and placeholder context, state and `Saga` items, so that the code
/// using the saga keeps compiling and only the real mistake is reported.
#[proc_macro_attribute]
pub fn saga(attr: TokenStream, item: TokenStream) -> TokenStream {
    saga::expand(attr.into(), item.into()).into()
}

/// Marks a method of a `#[saga]` impl as a step. See [`macro@saga`] for its arguments.
///
/// On its own, outside a `#[saga]` impl, it only reports that it is misplaced.
#[proc_macro_attribute]
pub fn step(_attr: TokenStream, item: TokenStream) -> TokenStream {
    saga::expand_lone_step(&item.into()).into()
}
