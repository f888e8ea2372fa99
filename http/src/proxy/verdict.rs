//! What a proxied exchange does when its backend side fails, decided in one place for both
//! client kinds (an HTTP/1.1 connection's exchange and an HTTP/2 stream's): what the pool is
//! told about the attempt, and whether the request is tried again, answered with a status, cut
//! (its response had started) or mirrored to an HTTP/1.1 client by closing.
//!
//! The proxy's one error type is [`ProxyError`]: its kind (the metric label), the side at
//! fault ([`ProxyError::side`]), and its retry class ([`ProxyError::retry`]); [`decide`] maps an
//! error and what the exchange had done ([`Facts`]) to a [`Verdict`]. No I/O: the unit tests
//! below check every row of the table.

pub use super::stats::ProxyError;
use super::Failure;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The backend (its server's health may count it).
    Backend,
    /// The proxy's own limits (queues, local slots): no server is to blame.
    Proxy,
    /// The client went away.
    Client,
}

/// When a failed request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Nothing reached a server: another server may take it (`retries` bounds it).
    AnotherServer,
    /// A reused connection died before any response byte: only a request that can be sent
    /// again (idempotent, no body) goes again.
    IfReplayable,
    /// Never.
    Never,
}

impl ProxyError {
    /// Who caused it.
    pub fn side(self) -> Side {
        match self {
            ProxyError::ConnectFailed
            | ProxyError::ConnectTimeout
            | ProxyError::ServerTimeout
            | ProxyError::BackendClosed
            | ProxyError::BadResponse => Side::Backend,
            ProxyError::QueueTimeout
            | ProxyError::QueueFull
            | ProxyError::NoServer
            | ProxyError::NoSlot => Side::Proxy,
            ProxyError::ClientAbort => Side::Client,
        }
    }

    /// Whether the request may go again.
    pub fn retry(self) -> RetryClass {
        match self {
            ProxyError::ConnectFailed | ProxyError::ConnectTimeout => RetryClass::AnotherServer,
            ProxyError::BackendClosed => RetryClass::IfReplayable,
            _ => RetryClass::Never,
        }
    }

    /// The status that answers it before the response started.
    pub fn status(self) -> u16 {
        match self {
            ProxyError::ServerTimeout => 504,
            ProxyError::BackendClosed | ProxyError::BadResponse => 502,
            ProxyError::ClientAbort => 408,
            ProxyError::ConnectFailed
            | ProxyError::ConnectTimeout
            | ProxyError::QueueTimeout
            | ProxyError::QueueFull
            | ProxyError::NoServer
            | ProxyError::NoSlot => 503,
        }
    }
}

/// Which client the exchange answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// An HTTP/1.1 connection; `first`: its first request, `sent_fin`: its FIN was passed on
    /// to the backend (`client_close = "forward"`), `own_conn`: the request had an HTTP/1.1
    /// backend connection to itself, so that closing the client connection mirrors that
    /// connection's close (not so for requests riding a multiplexed h2 connection).
    Http1 {
        first: bool,
        sent_fin: bool,
        own_conn: bool,
    },
    /// An HTTP/2 stream.
    Http2,
}

/// What the exchange had done when its backend connection went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// What the backend side recorded (`None`: the connection went without a reason, which
    /// while connecting means no local slot).
    pub failure: Option<Failure>,
    /// A new connection was still being made.
    pub connecting: bool,
    /// Some of the response went to the client.
    pub resp_started: bool,
    /// That response's body ends at the connection's close (a cut must not look complete).
    pub until_close: bool,
    /// The connection was reused from the pool.
    pub reused: bool,
    /// Some response byte arrived.
    pub resp_seen: bool,
    /// Idempotent and without a body: it may be sent again.
    pub replayable: bool,
    pub retries_left: u32,
    pub client: ClientKind,
}

/// What to tell the pool about the connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolNote {
    /// Nothing: the exchange's slot went with its connection.
    Nothing,
    /// Give the attempt back without touching the server's health.
    Aborted,
    /// The attempt failed: counts toward the server's passive health.
    Failed,
}

/// How a response that started is ended so that the client cannot take it for complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutHow {
    /// HTTP/1.1, framed body: send what is queued, then close (the framing shows the cut).
    Flush,
    /// HTTP/1.1, body delimited by the close: reset the connection.
    Reset,
    /// HTTP/2: RST_STREAM(INTERNAL_ERROR).
    ResetStream,
    /// HTTP/1.1: close at once, nothing more sent (a [`Verdict::Close`]).
    Close,
}

/// What the exchange does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it again (another server preferred); with no retry left, answer `error.status()`.
    Retry(ProxyError),
    /// Answer `error.status()`.
    Answer(ProxyError),
    /// The response started: cut it.
    Cut(ProxyError, CutHow),
    /// HTTP/1.1 only: close the client connection without an answer (the backend's close is
    /// mirrored, so the client retries as it would against the server; or the client left).
    Close(ProxyError),
}

/// The decision for an exchange whose backend connection went away before it was done.
pub fn decide(f: &Facts) -> (PoolNote, Verdict) {
    if f.connecting {
        let error = match f.failure {
            // The connection went without a reason: no local slot for it.
            None => ProxyError::NoSlot,
            // It answered, but not in the protocol it was meant to speak.
            Some(Failure::BadResponse) => ProxyError::BadResponse,
            Some(Failure::ConnectTimeout) => ProxyError::ConnectTimeout,
            Some(_) => ProxyError::ConnectFailed,
        };
        let note = match error.side() {
            Side::Backend => PoolNote::Failed,
            Side::Proxy | Side::Client => PoolNote::Aborted,
        };
        let verdict = match error.retry() {
            RetryClass::AnotherServer => Verdict::Retry(error),
            _ => Verdict::Answer(error),
        };
        return (note, verdict);
    }
    let error = match f.failure {
        Some(Failure::ServerTimeout) => ProxyError::ServerTimeout,
        Some(Failure::BadResponse) => ProxyError::BadResponse,
        _ => ProxyError::BackendClosed,
    };
    if f.resp_started {
        let how = match f.client {
            ClientKind::Http2 => CutHow::ResetStream,
            ClientKind::Http1 { .. } if f.until_close => CutHow::Reset,
            ClientKind::Http1 { .. } => CutHow::Flush,
        };
        return (PoolNote::Nothing, Verdict::Cut(error, how));
    }
    let replay = error.retry() == RetryClass::IfReplayable
        && f.reused
        && !f.resp_seen
        && f.replayable
        && f.retries_left > 0;
    let verdict = match f.client {
        _ if replay => Verdict::Retry(error),
        ClientKind::Http1 { sent_fin: true, .. } if error == ProxyError::BackendClosed => {
            // The backend closed after the client's FIN reached it: the client left.
            Verdict::Close(ProxyError::ClientAbort)
        }
        ClientKind::Http1 {
            first: false,
            own_conn: true,
            ..
        } if error == ProxyError::BackendClosed && f.reused && !f.resp_seen => {
            Verdict::Close(error)
        }
        _ => Verdict::Answer(error),
    };
    (PoolNote::Nothing, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: ClientKind = ClientKind::Http1 {
        first: false,
        sent_fin: false,
        own_conn: true,
    };

    fn facts(client: ClientKind) -> Facts {
        Facts {
            failure: None,
            connecting: false,
            resp_started: false,
            until_close: false,
            reused: false,
            resp_seen: false,
            replayable: true,
            retries_left: 3,
            client,
        }
    }

    fn connecting(failure: Option<Failure>) -> Facts {
        Facts {
            connecting: true,
            failure,
            ..facts(H1)
        }
    }

    #[test]
    fn every_error_has_a_side_a_retry_class_and_a_status() {
        for e in ProxyError::ALL {
            let status = e.status();
            assert!(
                [408, 502, 503, 504].contains(&status),
                "{e:?} answers {status}"
            );
            match e.side() {
                Side::Proxy => assert_eq!(status, 503, "{e:?}"),
                Side::Client => assert_eq!(e.retry(), RetryClass::Never),
                Side::Backend => {}
            }
        }
        assert_eq!(ProxyError::ServerTimeout.status(), 504);
        assert_eq!(ProxyError::BadResponse.retry(), RetryClass::Never);
    }

    #[test]
    fn a_connection_without_a_local_slot_is_503_and_leaves_health_alone() {
        assert_eq!(
            decide(&connecting(None)),
            (PoolNote::Aborted, Verdict::Answer(ProxyError::NoSlot))
        );
        assert_eq!(ProxyError::NoSlot.status(), 503);
    }

    #[test]
    fn failed_connects_count_against_the_server_and_go_to_another() {
        assert_eq!(
            decide(&connecting(Some(Failure::ConnectFailed))),
            (PoolNote::Failed, Verdict::Retry(ProxyError::ConnectFailed))
        );
        assert_eq!(
            decide(&connecting(Some(Failure::ConnectTimeout))),
            (PoolNote::Failed, Verdict::Retry(ProxyError::ConnectTimeout))
        );
        // Not even a body sent: a POST goes again too (nothing reached the server).
        let post = Facts {
            replayable: false,
            ..connecting(Some(Failure::ConnectFailed))
        };
        assert_eq!(decide(&post).1, Verdict::Retry(ProxyError::ConnectFailed));
    }

    #[test]
    fn a_server_speaking_the_wrong_protocol_is_502_without_retry() {
        assert_eq!(
            decide(&connecting(Some(Failure::BadResponse))),
            (PoolNote::Failed, Verdict::Answer(ProxyError::BadResponse))
        );
    }

    #[test]
    fn timeouts_and_bad_responses_before_the_response_are_answered() {
        for client in [H1, ClientKind::Http2] {
            let f = Facts {
                failure: Some(Failure::ServerTimeout),
                reused: true,
                ..facts(client)
            };
            assert_eq!(
                decide(&f),
                (
                    PoolNote::Nothing,
                    Verdict::Answer(ProxyError::ServerTimeout)
                )
            );
            let f = Facts {
                failure: Some(Failure::BadResponse),
                reused: true,
                ..facts(client)
            };
            assert_eq!(decide(&f).1, Verdict::Answer(ProxyError::BadResponse));
        }
    }

    #[test]
    fn a_reused_connection_that_died_before_answering_replays_only_what_can_go_again() {
        let race = Facts {
            reused: true,
            ..facts(ClientKind::Http2)
        };
        assert_eq!(decide(&race).1, Verdict::Retry(ProxyError::BackendClosed));
        // A body, or a non-idempotent method: answered, not sent twice.
        let post = Facts {
            replayable: false,
            ..race
        };
        assert_eq!(decide(&post).1, Verdict::Answer(ProxyError::BackendClosed));
        // No retry left, or some response byte seen, or a new connection: answered.
        for f in [
            Facts {
                retries_left: 0,
                ..race
            },
            Facts {
                resp_seen: true,
                ..race
            },
            Facts {
                reused: false,
                ..race
            },
        ] {
            assert_eq!(
                decide(&f).1,
                Verdict::Answer(ProxyError::BackendClosed),
                "{f:?}"
            );
        }
    }

    #[test]
    fn an_http1_client_sees_a_dead_reused_connection_mirrored() {
        // A later request of the connection that cannot be replayed: the client's own
        // keep-alive retry logic handles a close, as against the server itself.
        let f = Facts {
            reused: true,
            replayable: false,
            ..facts(H1)
        };
        assert_eq!(decide(&f).1, Verdict::Close(ProxyError::BackendClosed));
        // Its first request gets the 502 (it never saw a keep-alive connection close).
        let first = Facts {
            client: ClientKind::Http1 {
                first: true,
                sent_fin: false,
                own_conn: true,
            },
            ..f
        };
        assert_eq!(decide(&first).1, Verdict::Answer(ProxyError::BackendClosed));
        // A request that rode a multiplexed connection: its client's connection has nothing
        // to mirror, 502.
        let relayed = Facts {
            client: ClientKind::Http1 {
                first: false,
                sent_fin: false,
                own_conn: false,
            },
            ..f
        };
        assert_eq!(
            decide(&relayed).1,
            Verdict::Answer(ProxyError::BackendClosed)
        );
        // An h2 stream cannot be "closed": 502.
        let h2 = Facts {
            client: ClientKind::Http2,
            ..f
        };
        assert_eq!(decide(&h2).1, Verdict::Answer(ProxyError::BackendClosed));
    }

    #[test]
    fn a_backend_closing_after_the_clients_fin_means_the_client_left() {
        let f = Facts {
            replayable: false,
            client: ClientKind::Http1 {
                first: true,
                sent_fin: true,
                own_conn: true,
            },
            ..facts(H1)
        };
        assert_eq!(decide(&f).1, Verdict::Close(ProxyError::ClientAbort));
        // A timeout is still the server's.
        let t = Facts {
            failure: Some(Failure::ServerTimeout),
            ..f
        };
        assert_eq!(decide(&t).1, Verdict::Answer(ProxyError::ServerTimeout));
    }

    #[test]
    fn a_response_that_started_is_cut_so_it_cannot_look_complete() {
        let started = Facts {
            resp_started: true,
            resp_seen: true,
            reused: true,
            ..facts(H1)
        };
        assert_eq!(
            decide(&started),
            (
                PoolNote::Nothing,
                Verdict::Cut(ProxyError::BackendClosed, CutHow::Flush)
            )
        );
        let until_close = Facts {
            until_close: true,
            ..started
        };
        assert_eq!(
            decide(&until_close).1,
            Verdict::Cut(ProxyError::BackendClosed, CutHow::Reset)
        );
        let h2 = Facts {
            client: ClientKind::Http2,
            failure: Some(Failure::ServerTimeout),
            ..started
        };
        assert_eq!(
            decide(&h2).1,
            Verdict::Cut(ProxyError::ServerTimeout, CutHow::ResetStream)
        );
    }
}
