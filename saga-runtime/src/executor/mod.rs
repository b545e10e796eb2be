//! The runtime: an [`Orchestrator`] owns a store, leases and background recovery; an
//! [`Executor`] runs sagas of one type through it.
//!
//! Modules, each calling only those listed after it: `orchestrator` (builder, settings
//! checks, the background loops it starts), `handle` (the typed [`Executor`], and
//! `Orchestrator::register`), `signal` (sending signals), `undo` (undoing a completed saga), `background` (lease renewal, state counts, recovery), `run`
//! (the state machine of one saga), `writer` (every store write and its retry), `outcome`,
//! `codec` (rows to typed sagas), `inner` (what they share), `settings`, `active`,
//! `lineage` (a child's id, its parent's, and how it tells its parent).

mod active;
mod background;
mod child;
mod codec;
mod handle;
mod inner;
mod lineage;
mod orchestrator;
mod outcome;
mod run;
mod settings;
mod signal;
mod undo;
mod writer;

pub use self::handle::{Executor, Waited, new_saga_id};
pub use self::orchestrator::{Orchestrator, OrchestratorBuilder};
pub use self::outcome::{Failure, Outcome};
