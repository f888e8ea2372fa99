//! Sans-I/O HTTP/2 (RFC 9113) with HPACK (RFC 7541).
//!
//! - [`hpack`]: header compression.
pub mod conn;
pub mod error;
pub mod frame;
pub mod hpack;
pub mod message;
pub mod stream;
