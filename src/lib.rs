//! coreplex: an io_uring, thread-per-core server engine and reverse proxy.
//!
//! The library behind the binary wires the pieces together: the command line ([`cli`]), the
//! configuration file ([`config`]), the HTTP service that runs inside each shard (`http`), the
//! admin endpoint (`admin`, `metrics`), process startup and shutdown (`run`), the binary
//! upgrade (`upgrade`, `control_socket`, `notify`) and the machine
//! diagnosis (`tune`). It is a library so that the fuzz targets (`fuzz/`) reach the
//! configuration parser; the binary is `src/main.rs`.

mod admin;
pub mod cli;
pub mod config;
mod control_socket;
pub use coreplex_http as http;
#[cfg(test)]
mod alloc_tests;
mod metrics;
mod notify;
mod run;
mod secure;
mod stats_page;
mod tune;
pub mod units;
mod upgrade;
