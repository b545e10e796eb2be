//! What the code that `#[saga]` generates calls: the checks that make a wrong parameter,
//! output or payload type a compile error at the user's token (each trait says, in its
//! error message, what it checks), and the glue between a saga's typed context and the
//! runtime. Hand-written code has no use for these; they are documented so that a compile
//! error naming one of them can be read. Generated code reaches them through
//! `::saga_runtime::__private`, whose re-exports may change in any release.

use crate::context::StepContext;
use crate::definition::Saga;
use crate::error::StepError;
use crate::outputs::StepOutput;

/// Seals [`Saga`]: `#[saga]` implements it for the type it generates a saga for.
pub trait Sealed {}

/// Converts a step's error type into a [`StepError`]; named so that a missing conversion is
/// reported against this bound.
#[inline]
pub fn into_step_error<E: Into<StepError>>(error: E) -> StepError {
    error.into()
}

/// Binds a parameter declared `&B` to a value of type `A` (the saga input or a step's
/// output): only when they are the same type, and with a message that says which is which.
#[diagnostic::on_unimplemented(
    message = "this parameter is declared `&{B}`, but it binds `{Self}`",
    label = "declare it `&{Self}`",
    note = "a parameter binds the saga input (`input`) or the output of the earlier step it is named after"
)]
pub trait BindsAs<B: ?Sized> {
    /// The value, as the declared type.
    fn bind(&self) -> &B;
}

impl<T> BindsAs<T> for T {
    fn bind(&self) -> &T {
        self
    }
}

/// See [`BindsAs`].
#[inline]
pub fn bind<A: BindsAs<B>, B: ?Sized>(value: &A) -> &B {
    value.bind()
}

/// A signal's payload type: sent as JSON and read back into the step's parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a signal: its payload is stored as JSON",
    label = "a `#[signal]` parameter's type must implement `Serialize` and `DeserializeOwned`",
    note = "derive `serde::Serialize` and `serde::Deserialize` on it"
)]
pub trait SignalPayload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> SignalPayload for T {}

/// The payload of `T` as JSON.
///
/// # Errors
/// What serde said.
pub fn signal_to_json<T: SignalPayload>(payload: &T) -> Result<String, String> {
    serde_json::to_string(payload).map_err(|e| e.to_string())
}

/// Whether `payload` decodes into `T`.
///
/// # Errors
/// What serde said.
pub fn check_signal<T: SignalPayload>(payload: &str) -> Result<(), String> {
    serde_json::from_str::<T>(payload)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The step's signal, decoded for its parameter. The runner checked it before the attempt,
/// so an error here means the runtime and the step disagree.
///
/// # Errors
/// A permanent [`StepError`] if there is no payload or it does not decode.
pub fn signal_payload<T: SignalPayload>(step_context: &StepContext) -> Result<T, StepError> {
    let payload = step_context
        .signal_payload()
        .ok_or_else(|| StepError::permanent("the step ran without its signal"))?;
    serde_json::from_str(payload)
        .map_err(|e| StepError::permanent(format!("its signal does not decode: {e}")))
}

use crate::child::ChildRequest;

/// The output of a child step's body: the child to start, boxed for the runtime.
#[inline]
pub fn child_start<T: ChildRequest>(child: T) -> StepOutput {
    child.into_output()
}

/// The output of a child step whose child `saga_id` completed with `context` (as stored;
/// `completed[i]`: whether its step `i` completed).
///
/// # Errors
/// What serde said.
pub fn child_output<C: Saga>(
    saga_id: &str,
    context: &str,
    completed: Vec<bool>,
) -> Result<StepOutput, String> {
    crate::child::completed_output::<C>(saga_id, context, completed)
}

/// What a compensation's `Ok` holds: `()`, and nothing else.
#[diagnostic::on_unimplemented(
    message = "a compensation must return `Result<(), E>`; this one returns `Result<{Self}, E>`",
    label = "expected `()`",
    note = "a compensation undoes its step; anything it would return has nowhere to go"
)]
pub trait CompensationOk {}

impl CompensationOk for () {}

/// Checks, at the compensation's return type, that its `Ok` holds `()`.
#[inline]
pub fn compensation_returns_unit<T: CompensationOk>(_value: T) {}

/// The error when a checkpoint lacks an output that a step's parameter needs.
#[must_use]
pub fn missing_output(step: &'static str) -> StepError {
    StepError::permanent(format!(
        "the context has no output of step `{step}`; the checkpoint does not match the definition"
    ))
    .with_type("corrupt_context")
}

/// Decodes the value of one step's key in a stored context: as the step's output if the
/// step completed (even from `null`: `()`, `None`, a unit struct), else as an optional one
/// (`null` is no output). The generated context's only `Deserialize` bound on an output goes
/// through here, so a missing impl is reported once, at the user's type.
pub struct StepSeed<T> {
    completed: bool,
    output: core::marker::PhantomData<fn() -> T>,
}

impl<T> core::fmt::Debug for StepSeed<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StepSeed")
            .field("completed", &self.completed)
            .finish()
    }
}

impl<T> StepSeed<T> {
    /// The seed of a step that completed, or not.
    #[must_use]
    pub fn new(completed: bool) -> Self {
        StepSeed {
            completed,
            output: core::marker::PhantomData,
        }
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for StepSeed<T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        if self.completed {
            T::deserialize(deserializer).map(Some)
        } else {
            <Option<T> as serde::Deserialize>::deserialize(deserializer)
        }
    }
}

/// Decodes `json` through `seed`, refusing trailing characters.
///
/// # Errors
/// What serde said.
pub fn decode_seeded<'de, S>(json: &'de str, seed: S) -> Result<S::Value, String>
where
    S: serde::de::DeserializeSeed<'de>,
{
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = seed
        .deserialize(&mut deserializer)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Serializes a context (through the generated view that also reads [`Outputs`](crate::definition::Outputs)) as JSON.
///
/// # Errors
/// What serde said.
pub fn encode_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// The error when the runtime asks for a step index the saga does not have.
#[must_use]
pub fn unknown_step(index: usize) -> StepError {
    StepError::permanent(format!("the saga has no step at index {index}"))
        .with_type("corrupt_context")
}

/// Debug output of a context field: whether the step's output is there, not the payload.
#[derive(Clone, Copy)]
pub struct StepMark(pub bool);

impl core::fmt::Debug for StepMark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0 { "<done>" } else { "<pending>" })
    }
}

/// A step context for benchmarks of the generated dispatch.
#[cfg(feature = "test-util")]
#[must_use]
pub fn bench_step_context() -> StepContext {
    StepContext::new(
        "bench".into(),
        "bench",
        false,
        1,
        tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        None,
    )
}
