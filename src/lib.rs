//! Code shared by the examples and the integration tests: the seed's backtest workflow
//! (`backtest`) and the web service around it (`web`). Not published.

pub mod backtest;
pub mod web;
