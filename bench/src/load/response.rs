//! Framing of HTTP/1.1 responses on a client connection: where one response ends and the next
//! begins (Content-Length, chunked, or until close), and its status.

use coreplex_protocol::h1::{
    parse_response, BodyDecoder, BodyKind, Limits, Method, ResponseBody,
    ResponseError as ResponseError2,
};

/// Why a response could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The head is not valid HTTP/1.x.
    #[error("invalid response head")]
    Head,
    /// The head is larger than 64 KiB.
    #[error("response head too large")]
    HeadTooLarge,
    /// The body framing is invalid.
    #[error("invalid response body framing")]
    Body,
}

/// A response that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Status code.
    pub status: u16,
    /// Bytes of input the response took (head and body).
    pub len: usize,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// What [`Parser::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A response completed within the input.
    Done(Done),
    /// More input is needed; all of it was consumed into the parser's state (body bytes) or must be
    /// kept (`keep` bytes of head not yet complete).
    NeedMore {
        /// Bytes consumed (discarded body bytes).
        consumed: usize,
    },
}

const MAX_HEAD: usize = 64 * 1024;

/// Per-connection response framing state.
#[derive(Default)]
pub struct Parser {
    body: Option<(BodyDecoder, u16, bool)>,
    until_close: Option<(u16, usize)>,
    head_only_next: bool,
}

impl Parser {
    /// The next response answers a HEAD request (no body).
    pub fn expect_head_response(&mut self, yes: bool) {
        self.head_only_next = yes;
    }

    /// Processes `input` (the unconsumed bytes of the connection). Returns a finished response or
    /// how much was consumed while waiting for more.
    pub fn feed(&mut self, input: &[u8]) -> Result<Step, ResponseError> {
        if let Some((status, n)) = &mut self.until_close {
            *n += input.len();
            let _ = status;
            return Ok(Step::NeedMore {
                consumed: input.len(),
            });
        }
        if let Some((decoder, status, close)) = &mut self.body {
            let mut pos = 0;
            loop {
                let step = decoder
                    .decode(&input[pos..])
                    .map_err(|_| ResponseError::Body)?;
                pos += step.consumed;
                if step.done {
                    let d = Done {
                        status: *status,
                        len: pos,
                        close: *close,
                    };
                    self.body = None;
                    return Ok(Step::Done(d));
                }
                if step.consumed == 0 || pos == input.len() {
                    return Ok(Step::NeedMore { consumed: pos });
                }
            }
        }
        let head_only = self.head_only_next;
        let method = if head_only { Method::Head } else { Method::Get };
        let limits = Limits {
            max_header_bytes: MAX_HEAD,
            max_headers: 64,
            ..Limits::default()
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let head = match parse_response(input, method, &limits, &mut headers) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Step::NeedMore { consumed: 0 }),
            Err(ResponseError2::HeadersTooLarge) => return Err(ResponseError::HeadTooLarge),
            Err(_) => return Err(ResponseError::Head),
        };
        let (status, end, close) = (head.status, head.head_len, !head.keep_alive);
        if head.interim {
            // Not the answer; the caller feeds again after it.
            return Ok(Step::Done(Done {
                status,
                len: end,
                close: false,
            }));
        }
        self.head_only_next = false;
        let kind = match head.body {
            ResponseBody::None | ResponseBody::Tunnel => {
                return Ok(Step::Done(Done {
                    status,
                    len: end,
                    close,
                }))
            }
            ResponseBody::Length(n) => BodyKind::Length(n),
            ResponseBody::Chunked => BodyKind::Chunked,
            ResponseBody::UntilClose => {
                self.until_close = Some((status, input.len() - end));
                return Ok(Step::NeedMore {
                    consumed: input.len(),
                });
            }
        };
        self.body = Some((BodyDecoder::new(kind, u64::MAX), status, close));
        match self.feed(&input[end..])? {
            Step::Done(d) => Ok(Step::Done(Done {
                len: end + d.len,
                ..d
            })),
            Step::NeedMore { consumed } => Ok(Step::NeedMore {
                consumed: end + consumed,
            }),
        }
    }

    /// The connection closed: a response delimited by close is complete now.
    pub fn on_eof(&mut self) -> Option<u16> {
        self.until_close.take().map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_content_length_and_pipelined_responses() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut p = Parser::default();
        let Step::Done(d) = p.feed(two).unwrap() else {
            panic!()
        };
        assert_eq!((d.status, d.len, d.close), (200, 43, false));
        let Step::Done(d) = p.feed(&two[43..]).unwrap() else {
            panic!()
        };
        assert_eq!((d.status, d.len), (404, two.len() - 43));
    }

    #[test]
    fn frames_split_chunked_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for split in 1..r.len() {
            let mut p = Parser::default();
            let mut buf: Vec<u8> = r[..split].to_vec();
            let mut done = None;
            let mut rest = &r[split..];
            loop {
                match p.feed(&buf).unwrap() {
                    Step::Done(d) => {
                        done = Some(d);
                        break;
                    }
                    Step::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        if rest.is_empty() {
                            break;
                        }
                        buf.push(rest[0]);
                        rest = &rest[1..];
                    }
                }
            }
            let d = done.unwrap_or_else(|| panic!("split {split}"));
            assert_eq!(d.status, 200);
            assert!(d.close);
        }
    }

    #[test]
    fn rejects_garbage_and_handles_head_responses() {
        assert_eq!(
            Parser::default().feed(b"garbage\r\n\r\n"),
            Err(ResponseError::Head)
        );
        let mut p = Parser::default();
        p.expect_head_response(true);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n";
        assert_eq!(
            p.feed(r).unwrap(),
            Step::Done(Done {
                status: 200,
                len: r.len(),
                close: false
            })
        );
    }
}
