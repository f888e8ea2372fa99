//! Status code helpers: reason phrases and status classes.
//!
//! Invariants: [`reason_phrase`] returns a `'static` phrase for every code
//! registered by RFC 9110 §15 (plus the widely used 103, 428, 429, 431 and
//! 511 from RFC 8297 / RFC 6585) and the empty string for anything else; the
//! empty reason phrase is valid on the wire (`status-line = HTTP-version SP
//! status-code SP [ reason-phrase ]`).

/// The canonical reason phrase for `code`, or `""` when the code is not
/// registered.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// The class of a status code (RFC 9110 §15: the first digit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Successful,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
}

impl StatusClass {
    /// The class of `code`, or `None` outside `100..=599`.
    pub fn from_code(code: u16) -> Option<StatusClass> {
        match code {
            100..=199 => Some(StatusClass::Informational),
            200..=299 => Some(StatusClass::Successful),
            300..=399 => Some(StatusClass::Redirection),
            400..=499 => Some(StatusClass::ClientError),
            500..=599 => Some(StatusClass::ServerError),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9110_codes_have_phrases() {
        let codes = [
            100, 101, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 307, 308,
            400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
            417, 421, 422, 426, 500, 501, 502, 503, 504, 505,
        ];
        for c in codes {
            assert!(!reason_phrase(c).is_empty(), "{c}");
        }
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
    }

    #[test]
    fn every_error_status_has_phrase() {
        for e in crate::RequestError::ALL {
            assert!(!reason_phrase(e.status()).is_empty(), "{e:?}");
        }
        for e in crate::BodyError::ALL {
            assert!(!reason_phrase(e.status()).is_empty(), "{e:?}");
        }
    }

    #[test]
    fn unknown_codes() {
        for c in [0, 99, 102, 199, 299, 306, 418, 499, 599, 600, 999, u16::MAX] {
            assert_eq!(reason_phrase(c), "", "{c}");
        }
    }

    #[test]
    fn classes() {
        assert_eq!(StatusClass::from_code(99), None);
        assert_eq!(
            StatusClass::from_code(100),
            Some(StatusClass::Informational)
        );
        assert_eq!(
            StatusClass::from_code(199),
            Some(StatusClass::Informational)
        );
        assert_eq!(StatusClass::from_code(200), Some(StatusClass::Successful));
        assert_eq!(StatusClass::from_code(308), Some(StatusClass::Redirection));
        assert_eq!(StatusClass::from_code(404), Some(StatusClass::ClientError));
        assert_eq!(StatusClass::from_code(599), Some(StatusClass::ServerError));
        assert_eq!(StatusClass::from_code(600), None);
        assert_eq!(StatusClass::from_code(0), None);
    }
}
