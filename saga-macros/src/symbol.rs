//! The attribute keys the macros understand, in one place (serde's `symbol.rs`).

pub(crate) const NAME: &str = "name";
pub(crate) const INPUT: &str = "input";
pub(crate) const CRATE: &str = "crate";
pub(crate) const CONTEXT: &str = "context";
pub(crate) const STATE: &str = "state";
pub(crate) const VIS: &str = "vis";

/// Keys of `#[saga(...)]`, for did-you-mean suggestions.
pub(crate) const SAGA_KEYS: &[&str] = &[NAME, INPUT, CRATE, CONTEXT, STATE, VIS];

pub(crate) const STEP: &str = "step";
/// The attribute that marks a step parameter as a signal.
pub(crate) const SIGNAL: &str = "signal";

pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const RETRIES: &str = "retries";
pub(crate) const COMPENSATE: &str = "compensate";
pub(crate) const COMPENSATE_TIMEOUT: &str = "compensate_timeout";
pub(crate) const COMPENSATE_RETRIES: &str = "compensate_retries";
pub(crate) const BACKOFF_INITIAL: &str = "backoff_initial";
pub(crate) const BACKOFF_MULTIPLIER: &str = "backoff_multiplier";
pub(crate) const BACKOFF_MAX: &str = "backoff_max";
pub(crate) const JITTER: &str = "jitter";
pub(crate) const PIVOT: &str = "pivot";
pub(crate) const CONCURRENT: &str = "concurrent";
pub(crate) const AFTER: &str = "after";
pub(crate) const DELAY: &str = "delay";
pub(crate) const CHILD: &str = "child";

/// Keys of `#[step(...)]`, for did-you-mean suggestions.
pub(crate) const STEP_KEYS: &[&str] = &[
    TIMEOUT,
    RETRIES,
    COMPENSATE,
    COMPENSATE_TIMEOUT,
    COMPENSATE_RETRIES,
    BACKOFF_INITIAL,
    BACKOFF_MULTIPLIER,
    BACKOFF_MAX,
    JITTER,
    PIVOT,
    CONCURRENT,
    AFTER,
    DELAY,
    CHILD,
];

/// The parameter name that binds the saga's input.
pub(crate) const INPUT_PARAM: &str = "input";
/// The type that binds the step context, whatever the parameter is called.
pub(crate) const STEP_CONTEXT: &str = "StepContext";
