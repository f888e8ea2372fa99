//! coreplex-pool: backend connection pool policy (reuse modes never/safe/aggressive/always, limits,
//! queues, rate limits, balancing). Pure data and policy: no I/O, no clock (time is passed in).
//!
//! This crate is filled by the reverse-proxy work; the engine core does not use it yet.
#![forbid(unsafe_code)]
