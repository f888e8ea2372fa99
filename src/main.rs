//! coreplex: an io_uring, thread-per-core server engine and reverse proxy.
//!
//! The binary wires the pieces together: the command line ([`cli`]), the configuration file
//! ([`config`]), the HTTP service that runs inside each shard ([`http`]), the admin endpoint
//! ([`admin`], [`metrics`]), process startup and shutdown ([`run`]) and the machine diagnosis
//! ([`tune`]).

mod admin;
mod cli;
mod config;
mod http;
mod metrics;
mod run;
mod secure;
mod tune;
mod units;

fn main() -> std::process::ExitCode {
    cli::main()
}
