//! Sans-I/O protocol support for coreplex: HTTP/1.1 (below), HTTP/2 ([`h2`]), the WebSocket
//! codec ([`ws`]) and the PROXY protocol header ([`proxy`]).
//!
//! This crate performs no I/O, reads no clock and spawns no threads: callers
//! hand it byte slices and get back positions, parsed views and errors. The
//! hot path allocates nothing per request.
//!
//! The typical HTTP/1.1 server flow for one connection:
//!
//! 1. Append received bytes to the connection buffer and call
//!    [`HeadScanner::scan`] until it reports [`Scan::Complete`] (each call only
//!    looks at the bytes added since the previous call).
//! 2. Call [`parse_request`] on the buffer to get a [`RequestHead`] whose
//!    string fields borrow from the buffer.
//! 3. Build a [`BodyDecoder`] from [`RequestHead::body`] and feed it the bytes
//!    following the head until it reports `done`; the remaining bytes belong to
//!    the next (pipelined) request.
//!
//! Framing is strict (RFC 9112 / RFC 9110): anything ambiguous is an error,
//! and every error maps to the status code the server should answer with
//! before closing the connection ([`RequestError::status`],
//! [`BodyError::status`]).

#![forbid(unsafe_code)]

pub mod h1;
pub mod h2;
pub mod proxy;
pub mod ws;

pub use h1::{
    parse_request, reason_phrase, BodyDecoder, BodyError, BodyKind, DecodeStep, HeadScanner,
    Limits, Method, RequestError, RequestHead, Scan, StatusClass, Version,
};
