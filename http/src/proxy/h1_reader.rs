//! Reading an HTTP/1.1 backend's response: the head with strict framing (`parse_response`),
//! then the body by its framing, into a [`ResponseSink`] that bounds how much it takes at a
//! time (the backend connection stops reading while the sink is full).

use super::Resp;
use coreplex_protocol::h1::{
    parse_response, BodyDecoder, BodyKind, Limits, Method, ResponseBody, ResponseHead,
};

/// Limits on a backend's response head.
const RESPONSE_LIMITS: Limits = Limits {
    max_request_line: 8192,
    max_header_bytes: 64 * 1024,
    max_headers: 128,
    max_body: u64::MAX,
};

/// What a backend's response is read into (a stream exchange's buffers, `stream_upstream`).
pub(super) trait ResponseSink {
    /// A response head. Interim (1xx) heads return `Ok(None)`; a final head returns how its
    /// body is read (`Err`: the head is unacceptable).
    fn head(&mut self, head: &ResponseHead<'_, '_>) -> Result<Option<Resp>, ()>;
    /// Body bytes (payload only where the body state says to strip chunked framing).
    fn body(&mut self, bytes: &[u8]);
    /// How many more body bytes (as received, framing included) may be taken now; reading
    /// stops at 0 and the rest waits in the connection's input.
    fn room(&self) -> usize {
        usize::MAX
    }
}

/// How a final response head's body is read: `dechunk` strips chunked framing.
pub(super) fn body_state(body: ResponseBody, dechunk: bool) -> Resp {
    match body {
        ResponseBody::Length(n) => {
            Resp::Body(BodyDecoder::new(BodyKind::Length(n), u64::MAX), false)
        }
        ResponseBody::Chunked => Resp::Body(BodyDecoder::new(BodyKind::Chunked, u64::MAX), dechunk),
        ResponseBody::UntilClose => Resp::UntilClose,
        ResponseBody::None | ResponseBody::Tunnel => Resp::Done,
    }
}

/// How far a response read got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Read {
    /// Bytes of the input consumed.
    pub used: usize,
    /// Reading stopped for lack of room in the sink (not for lack of input).
    pub blocked: bool,
}

/// Reads response bytes from `input` into `sink` as far as `resp` (updated) and the sink's
/// room allow (`Err`: a malformed head or body).
pub(super) fn read_response(
    resp: &mut Resp,
    input: &[u8],
    method: Method,
    sink: &mut impl ResponseSink,
) -> Result<Read, ()> {
    let mut pos = 0;
    let stop = |used, blocked| Ok(Read { used, blocked });
    loop {
        match resp {
            Resp::Head => {
                let mut scratch = [httparse::EMPTY_HEADER; 128];
                let head =
                    match parse_response(&input[pos..], method, &RESPONSE_LIMITS, &mut scratch) {
                        Ok(Some(h)) => h,
                        Ok(None) => return stop(pos, false),
                        Err(e) => {
                            tracing::debug!("bad response from backend: {e}");
                            return Err(());
                        }
                    };
                pos += head.head_len;
                if let Some(next) = sink.head(&head)? {
                    *resp = next;
                }
            }
            Resp::Body(decoder, dechunk) => {
                let room = sink.room();
                if room == 0 {
                    return stop(pos, pos < input.len());
                }
                let end = pos.saturating_add(room).min(input.len());
                let limited = end < input.len();
                let rest = &input[pos..end];
                let step = decoder.decode(rest).map_err(|e| {
                    tracing::debug!("bad response body from backend: {e}");
                })?;
                let bytes = if *dechunk {
                    &rest[step.payload.clone()]
                } else {
                    &rest[..step.consumed]
                };
                if !bytes.is_empty() {
                    sink.body(bytes);
                }
                pos += step.consumed;
                if step.done {
                    *resp = Resp::Done;
                } else if step.consumed == 0 || pos == end {
                    return stop(pos, limited);
                }
            }
            Resp::UntilClose => {
                let end = pos.saturating_add(sink.room()).min(input.len());
                sink.body(&input[pos..end]);
                return stop(end, end < input.len());
            }
            Resp::Done => return stop(pos, false),
        }
    }
}
