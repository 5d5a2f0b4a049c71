//! Wiring of the `rxgate` program: configuration layering, subcommands, and the servers.
//!
//! **Invariant:** only this crate reads configuration files and environment variables.

pub mod allocator;
mod backup;
pub mod cli;
mod commands;
pub mod config;
mod devcert;
mod lifecycle;
mod listeners;
pub mod logging;
mod output;
mod users;

pub use commands::run;
