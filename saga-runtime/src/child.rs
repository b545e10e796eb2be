//! Child sagas (DECISIONS.md, "Sagas that wait"): a step marked `#[step(child)]` returns [`Child`], the input
//! of a saga of another registered type; the runtime starts that saga with an id derived
//! from the parent's, waits for it durably, and the step's output is the child's outcome,
//! [`Completed`].
//!
//! ```
//! use saga_runtime::prelude::*;
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Parcel { pub weight_g: u32 }
//!
//! pub struct Courier;
//!
//! #[saga(name = "shipping", input = Parcel)]
//! impl Courier {
//!     #[step]
//!     async fn label(&self, input: &Parcel) -> Result<String, StepError> {
//!         Ok(format!("LBL-{}", input.weight_g))
//!     }
//! }
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Order { pub weight_g: u32 }
//!
//! pub struct Shop;
//!
//! #[saga(name = "order", input = Order)]
//! impl Shop {
//!     /// Starts a `shipping` saga, waits for it, and holds its outcome.
//!     #[step(child, timeout = "1h")]
//!     async fn ship(&self, input: &Order) -> Result<Child<Courier>, StepError> {
//!         Ok(Child::start(Parcel { weight_g: input.weight_g }))
//!     }
//!
//!     #[step]
//!     async fn confirm(&self, ship: &Completed<Courier>) -> Result<String, StepError> {
//!         Ok(ship.context().label.clone().unwrap_or_default())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), SagaError> {
//! let orchestrator = Orchestrator::builder(MemoryStore::new()).build()?;
//! let _couriers = orchestrator.register(Courier); // children must be registered too
//! let shops = orchestrator.register(Shop);
//! // Returns when the parent starts to wait for its child (or, as here, when a child
//! // quick enough has already ended, at the parent's own end).
//! shops
//!     .execute_with_id("order-1", &SagaConfig::default(), Order { weight_g: 750 })
//!     .await?;
//! let outcome = shops.ended("order-1", std::time::Duration::from_millis(10)).await?;
//! assert!(outcome.is_completed());
//! assert_eq!(outcome.context().confirm.as_deref(), Some("LBL-750"));
//! # Ok(()) }
//! ```

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::definition::Saga;
use crate::error::StepError;

/// What a `#[step(child)]` returns: the input of the child saga to start. The step's output,
/// once the child has completed, is [`Completed<C>`].
///
/// If the step runs again (a retry, or after a crash), it attaches to the child started
/// the first time (same id: `<parent id>/<step name>`); the input it returns then is not
/// used.
pub struct Child<C: Saga> {
    input: C::Input,
}

impl<C: Saga> Child<C> {
    /// A child saga of type `C`, to start with `input`.
    pub fn start(input: C::Input) -> Self {
        Child { input }
    }

    /// The child's input.
    pub fn input(&self) -> &C::Input {
        &self.input
    }
}

impl<C: Saga> fmt::Debug for Child<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("saga", &C::DEFINITION.name())
            .finish_non_exhaustive()
    }
}

/// A child saga that completed: its id and its typed context (its input and every step's
/// output). The output of a `#[step(child)]` that returned [`Child<C>`].
pub struct Completed<C: Saga> {
    saga_id: String,
    /// Whether each of its steps completed: how its context is decoded.
    steps: Vec<bool>,
    context: C::Context,
}

impl<C: Saga> Completed<C> {
    /// The child's saga id (`<parent id>/<step name>`).
    #[must_use]
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The child's typed context.
    #[must_use]
    pub fn context(&self) -> &C::Context {
        &self.context
    }

    /// Takes the child's context.
    #[must_use]
    pub fn into_context(self) -> C::Context {
        self.context
    }

    /// Decodes a completed child as stored: `completed[i]` says whether its step `i`
    /// completed (so that a `()` output reads back as an output).
    pub(crate) fn decode(
        saga_id: String,
        context: &str,
        completed: Vec<bool>,
    ) -> Result<Self, String> {
        let context = C::decode_context(context, &completed)?;
        Ok(Completed {
            saga_id,
            steps: completed,
            context,
        })
    }
}

impl<C: Saga> fmt::Debug for Completed<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completed")
            .field("saga", &C::DEFINITION.name())
            .field("saga_id", &self.saga_id)
            .finish_non_exhaustive()
    }
}

/// Stored in the parent's context as `{"saga_id":..,"completed":[..],"context":{..}}`.
impl<C: Saga> Serialize for Completed<C> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::{Error as _, SerializeStruct as _};
        let context = C::encode_context(&self.context, None).map_err(Z::Error::custom)?;
        let context: Box<serde_json::value::RawValue> =
            serde_json::value::RawValue::from_string(context).map_err(Z::Error::custom)?;
        let mut state = serializer.serialize_struct("Completed", 3)?;
        state.serialize_field("saga_id", &self.saga_id)?;
        state.serialize_field("completed", &self.steps)?;
        state.serialize_field("context", &context)?;
        state.end()
    }
}

impl<'de, C: Saga> Deserialize<'de> for Completed<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            saga_id: String,
            completed: Vec<bool>,
            context: Box<serde_json::value::RawValue>,
        }
        let stored = Stored::deserialize(deserializer)?;
        Completed::decode(stored.saga_id, stored.context.get(), stored.completed)
            .map_err(D::Error::custom)
    }
}

/// Implemented by [`Child<C>`] only: what a `#[step(child)]` must return.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a `#[step(child)]` returns `Result<Child<S>, E>`, where `S` is the child saga; this one returns `{Self}`",
    label = "expected `Child<S>`",
    note = "`Child::start(input)` starts a saga `S` with `input` and waits for it; the step's output is then `Completed<S>`"
)]
pub trait ChildRequest: Send + Sync + 'static {
    /// The child saga.
    type Saga: Saga;

    /// Boxed for the runtime, type-erased.
    fn into_output(self) -> crate::outputs::StepOutput;
}

impl<C: Saga> ChildRequest for Child<C> {
    type Saga = C;

    fn into_output(self) -> crate::outputs::StepOutput {
        Box::new(ChildStart {
            definition: C::DEFINITION.name(),
            input: Box::new(self.input),
        })
    }
}

/// A child to start, type-erased for the runtime: its definition and input.
pub(crate) struct ChildStart {
    pub(crate) definition: &'static str,
    pub(crate) input: Box<dyn std::any::Any + Send + Sync>,
}

/// The output of a child step whose child completed, boxed for [`Saga::store_output`].
pub(crate) fn completed_output<C: Saga>(
    saga_id: &str,
    context: &str,
    completed: Vec<bool>,
) -> Result<crate::outputs::StepOutput, String> {
    let completed = Completed::<C>::decode(saga_id.to_owned(), context, completed)?;
    Ok(Box::new(completed))
}

/// The error a child step fails with when its child cannot start.
pub(crate) fn cannot_start(message: impl fmt::Display) -> StepError {
    StepError::permanent(message).with_type("child")
}
