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
/// - `concurrent`: the step starts together with the step declared before it, waiting
///   only for what that step's group waits for, for the earlier steps whose outputs it
///   takes, and for those named in `after`. A step without it waits for every earlier step.
///   A pivot is never concurrent.
/// - `after = "a, b"`: on a `concurrent` step, earlier steps it also waits for.
/// - `delay`: a duration (`"15m"`, `"1d"`, or whole seconds) the step waits, durably, once
///   it is ready and before its first attempt; the saga holds no runner meanwhile.
/// - `child`: the step returns `Child<S>` (`Child::start(input)`), and the runtime starts
///   saga `S` (registered with the same orchestrator) and waits for it; later steps take
///   its outcome as `Completed<S>`; the step's compensation undoes the child. `timeout`
///   is the deadline of the wait.
///
/// A parameter marked `#[signal]` (by value, `#[signal] approval: Approval`) is a typed
/// message from outside, named after the parameter: the body runs once it has arrived,
/// and `timeout` is the deadline of the wait, counted once from when the wait began: when
/// it passes, the step fails for good, whatever its `retries` (they are for the body, once
/// the signal has come). A payload that does not decode is rejected (`signal_rejected`)
/// and the step waits on, to the same deadline, with no attempt spent. The macro generates
/// `{Type}Signal`, an enum with one variant per signal, for `Executor::signal`.
///
/// Fan-out, with a step that waits for one branch only:
///
/// ```
/// use saga_runtime::prelude::*;
///
/// pub struct Trip;
///
/// #[saga(name = "trip", input = String)]
/// impl Trip {
///     #[step(compensate = "cancel_flight")]
///     async fn flight(&self, input: &String) -> Result<String, StepError> {
///         Ok(format!("FL-{input}"))
///     }
///     async fn cancel_flight(&self, flight: &String) -> Result<(), StepError> {
///         let _ = flight;
///         Ok(())
///     }
///     // Starts with `flight`.
///     #[step(concurrent)]
///     async fn hotel(&self, input: &String) -> Result<String, StepError> {
///         Ok(format!("HT-{input}"))
///     }
///     // Starts with both, once `flight` is done.
///     #[step(concurrent, after = "flight")]
///     async fn seat(&self) -> Result<(), StepError> {
///         Ok(())
///     }
///     // Waits for every step above.
///     #[step(pivot)]
///     async fn charge(&self, flight: &String, hotel: &String) -> Result<(), StepError> {
///         let _ = (flight, hotel);
///         Ok(())
///     }
/// }
///
/// let steps = Trip::DEFINITION.steps();
/// assert_eq!(steps[2].depends_on(), [0]);
/// assert_eq!(steps[3].depends_on(), [0, 1, 2]);
/// ```
///
/// A delay, a signal and a child saga:
///
/// ```
/// use saga_runtime::prelude::*;
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct Approval { pub by: String }
///
/// pub struct Shipment;
///
/// #[saga(name = "shipment", input = u64)]
/// impl Shipment {
///     #[step]
///     async fn ship(&self, input: &u64) -> Result<u64, StepError> {
///         Ok(*input)
///     }
/// }
///
/// pub struct Order;
///
/// #[saga(name = "order", input = u64)]
/// impl Order {
///     // No approval within two days fails this step (nothing to compensate: it never ran).
///     #[step(timeout = "2d")]
///     async fn approve(&self, #[signal] approval: Approval) -> Result<String, StepError> {
///         Ok(approval.by)
///     }
///     // A `shipment` saga of its own, waited for up to a week.
///     #[step(child, timeout = "7d")]
///     async fn deliver(&self, input: &u64) -> Result<Child<Shipment>, StepError> {
///         Ok(Child::start(*input))
///     }
///     // A day after the delivery.
///     #[step(delay = "1d")]
///     async fn close(&self, deliver: &Completed<Shipment>) -> Result<(), StepError> {
///         let _ = deliver.context().ship;
///         Ok(())
///     }
/// }
///
/// // The generated signal type: a wrong payload does not compile.
/// let _ = OrderSignal::Approval(Approval { by: "grace".into() });
/// ```
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
