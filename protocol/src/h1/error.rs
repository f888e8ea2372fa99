//! Errors produced while reading a request head ([`RequestError`]) and a
//! request body ([`BodyError`]).
//!
//! Invariants: every variant maps to exactly one HTTP status code (`status`)
//! and to a stable snake_case `label` for metrics; `ALL` lists every variant
//! exactly once. After any of these errors the server answers with the
//! status and closes the connection: the framing can no longer be trusted.

use thiserror::Error;

/// Why a request head was rejected.
#[non_exhaustive]
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestError {
    /// The request line is longer than `Limits::max_request_line` (414).
    #[error("request line too long")]
    RequestLineTooLong,
    /// The head is longer than `Limits::max_header_bytes` (431).
    #[error("request header section too large")]
    HeadersTooLarge,
    /// More header lines than `Limits::max_headers` (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// A well-formed `HTTP/x.y` version other than 1.0 or 1.1 (505).
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// Malformed request line or header field (400).
    #[error("malformed request")]
    Syntax,
    /// A LF not preceded by CR (400).
    #[error("bare LF in request head")]
    BareLf,
    /// A CR not followed by LF (400).
    #[error("bare CR in request head")]
    BareCr,
    /// A header line starting with whitespace (obsolete line folding) (400).
    #[error("obsolete line folding in request head")]
    ObsFold,
    /// The request target is not valid for the method (400).
    #[error("invalid request target")]
    InvalidTarget,
    /// An HTTP/1.1 request without a Host header field (400).
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host header field (400).
    #[error("duplicate Host header")]
    DuplicateHost,
    /// A Host header field value that is not a valid authority (400).
    #[error("invalid Host header")]
    InvalidHost,
    /// A Content-Length value that is not 1 to 19 decimal digits (400).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// More than one Content-Length field, or a comma-separated list (400).
    #[error("duplicate Content-Length")]
    DuplicateContentLength,
    /// Both Content-Length and Transfer-Encoding are present (400).
    #[error("Content-Length together with Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding in an HTTP/1.0 request (400).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// The final transfer coding is not `chunked` (400).
    #[error("chunked is not the final transfer coding")]
    ChunkedNotFinal,
    /// `chunked` applied more than once (400).
    #[error("chunked transfer coding applied more than once")]
    DuplicateChunked,
    /// Empty or malformed Transfer-Encoding value or list element (400).
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A transfer coding other than `chunked` (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// Content-Length above `Limits::max_body` (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// An Expect value other than `100-continue` (417).
    #[error("expectation failed")]
    ExpectationFailed,
}

impl RequestError {
    /// Every variant, in declaration order (for metrics pre-registration).
    pub const ALL: &'static [RequestError] = &[
        RequestError::RequestLineTooLong,
        RequestError::HeadersTooLarge,
        RequestError::TooManyHeaders,
        RequestError::UnsupportedVersion,
        RequestError::Syntax,
        RequestError::BareLf,
        RequestError::BareCr,
        RequestError::ObsFold,
        RequestError::InvalidTarget,
        RequestError::MissingHost,
        RequestError::DuplicateHost,
        RequestError::InvalidHost,
        RequestError::InvalidContentLength,
        RequestError::DuplicateContentLength,
        RequestError::ContentLengthWithTransferEncoding,
        RequestError::TransferEncodingHttp10,
        RequestError::ChunkedNotFinal,
        RequestError::DuplicateChunked,
        RequestError::InvalidTransferEncoding,
        RequestError::UnsupportedTransferCoding,
        RequestError::BodyTooLarge,
        RequestError::ExpectationFailed,
    ];

    /// The status code the server should answer with.
    pub fn status(self) -> u16 {
        match self {
            RequestError::RequestLineTooLong => 414,
            RequestError::HeadersTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::UnsupportedVersion => 505,
            RequestError::UnsupportedTransferCoding => 501,
            RequestError::BodyTooLarge => 413,
            RequestError::ExpectationFailed => 417,
            RequestError::Syntax
            | RequestError::BareLf
            | RequestError::BareCr
            | RequestError::ObsFold
            | RequestError::InvalidTarget
            | RequestError::MissingHost
            | RequestError::DuplicateHost
            | RequestError::InvalidHost
            | RequestError::InvalidContentLength
            | RequestError::DuplicateContentLength
            | RequestError::ContentLengthWithTransferEncoding
            | RequestError::TransferEncodingHttp10
            | RequestError::ChunkedNotFinal
            | RequestError::DuplicateChunked
            | RequestError::InvalidTransferEncoding => 400,
        }
    }

    /// A stable snake_case name for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RequestError::RequestLineTooLong => "request_line_too_long",
            RequestError::HeadersTooLarge => "headers_too_large",
            RequestError::TooManyHeaders => "too_many_headers",
            RequestError::UnsupportedVersion => "unsupported_version",
            RequestError::Syntax => "syntax",
            RequestError::BareLf => "bare_lf",
            RequestError::BareCr => "bare_cr",
            RequestError::ObsFold => "obs_fold",
            RequestError::InvalidTarget => "invalid_target",
            RequestError::MissingHost => "missing_host",
            RequestError::DuplicateHost => "duplicate_host",
            RequestError::InvalidHost => "invalid_host",
            RequestError::InvalidContentLength => "invalid_content_length",
            RequestError::DuplicateContentLength => "duplicate_content_length",
            RequestError::ContentLengthWithTransferEncoding => {
                "content_length_with_transfer_encoding"
            }
            RequestError::TransferEncodingHttp10 => "transfer_encoding_http10",
            RequestError::ChunkedNotFinal => "chunked_not_final",
            RequestError::DuplicateChunked => "duplicate_chunked",
            RequestError::InvalidTransferEncoding => "invalid_transfer_encoding",
            RequestError::UnsupportedTransferCoding => "unsupported_transfer_coding",
            RequestError::BodyTooLarge => "body_too_large",
            RequestError::ExpectationFailed => "expectation_failed",
        }
    }
}

/// Why a request body was rejected.
#[non_exhaustive]
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyError {
    /// A chunk-size line that does not start with a hex digit, has a bad
    /// byte in the size, or does not end in CRLF (400).
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size with more than 16 significant hex digits (400).
    #[error("chunk size overflow")]
    ChunkSizeOverflow,
    /// A malformed chunk extension, or a chunk-size line over 4096 bytes (400).
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    /// Chunk data not followed by exactly CRLF (400).
    #[error("missing CRLF after chunk data")]
    MissingChunkCrlf,
    /// A LF not preceded by CR in chunk framing (400).
    #[error("bare LF in chunked body")]
    BareLf,
    /// The trailer section exceeds 8192 bytes (400).
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A malformed trailer field line (400).
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The payload exceeds the configured maximum body size (413).
    #[error("request body too large")]
    BodyTooLarge,
}

impl BodyError {
    /// Every variant, in declaration order (for metrics pre-registration).
    pub const ALL: &'static [BodyError] = &[
        BodyError::InvalidChunkSize,
        BodyError::ChunkSizeOverflow,
        BodyError::InvalidChunkExtension,
        BodyError::MissingChunkCrlf,
        BodyError::BareLf,
        BodyError::TrailersTooLarge,
        BodyError::InvalidTrailer,
        BodyError::BodyTooLarge,
    ];

    /// The status code the server should answer with.
    pub fn status(self) -> u16 {
        match self {
            BodyError::BodyTooLarge => 413,
            BodyError::InvalidChunkSize
            | BodyError::ChunkSizeOverflow
            | BodyError::InvalidChunkExtension
            | BodyError::MissingChunkCrlf
            | BodyError::BareLf
            | BodyError::TrailersTooLarge
            | BodyError::InvalidTrailer => 400,
        }
    }

    /// A stable snake_case name for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            BodyError::InvalidChunkSize => "invalid_chunk_size",
            BodyError::ChunkSizeOverflow => "chunk_size_overflow",
            BodyError::InvalidChunkExtension => "invalid_chunk_extension",
            BodyError::MissingChunkCrlf => "missing_chunk_crlf",
            BodyError::BareLf => "bare_lf",
            BodyError::TrailersTooLarge => "trailers_too_large",
            BodyError::InvalidTrailer => "invalid_trailer",
            BodyError::BodyTooLarge => "body_too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_labels(labels: &[&'static str]) {
        for (i, l) in labels.iter().enumerate() {
            assert!(!l.is_empty());
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{l}"
            );
            assert!(!labels[..i].contains(l), "duplicate label {l}");
        }
    }

    #[test]
    fn request_errors_table() {
        assert_eq!(RequestError::ALL.len(), 22);
        let labels: Vec<_> = RequestError::ALL.iter().map(|e| e.label()).collect();
        check_labels(&labels);
        for (i, e) in RequestError::ALL.iter().enumerate() {
            assert!(!RequestError::ALL[..i].contains(e));
            assert!(!e.to_string().is_empty());
            assert!((400..=505).contains(&e.status()));
        }
        assert_eq!(RequestError::RequestLineTooLong.status(), 414);
        assert_eq!(RequestError::HeadersTooLarge.status(), 431);
        assert_eq!(RequestError::TooManyHeaders.status(), 431);
        assert_eq!(RequestError::UnsupportedVersion.status(), 505);
        assert_eq!(RequestError::Syntax.status(), 400);
        assert_eq!(RequestError::BareLf.status(), 400);
        assert_eq!(RequestError::ObsFold.status(), 400);
        assert_eq!(RequestError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(RequestError::BodyTooLarge.status(), 413);
        assert_eq!(RequestError::ExpectationFailed.status(), 417);
        assert_eq!(
            RequestError::RequestLineTooLong.label(),
            "request_line_too_long"
        );
        assert_eq!(RequestError::BareLf.label(), "bare_lf");
    }

    #[test]
    fn body_errors_table() {
        assert_eq!(BodyError::ALL.len(), 8);
        let labels: Vec<_> = BodyError::ALL.iter().map(|e| e.label()).collect();
        check_labels(&labels);
        for e in BodyError::ALL {
            let want = if *e == BodyError::BodyTooLarge {
                413
            } else {
                400
            };
            assert_eq!(e.status(), want, "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
