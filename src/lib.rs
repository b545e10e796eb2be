//! Code shared by the examples and the integration tests: the deployment guide's backtest workflow
//! (`backtest`), an expense claim that waits for an approval (`expense`), and the web
//! service around them (`web`). Not published.

pub mod backtest;
pub mod expense;
pub mod web;

/// The project's README, here so that `cargo test` compiles and runs its Rust blocks.
#[doc = include_str!("../README.md")]
pub mod readme {}

/// The deployment guide (`docs/GUIDE.md`), here so that `cargo test` compiles every Rust
/// block in it and runs those that need no server.
#[doc = include_str!("../docs/GUIDE.md")]
pub mod guide {}
