//! The life cycle of a connection: its two directions and its end, as one enum whose transitions
//! all live here. The operations the kernel owns (a receive armed, a send or a connect in
//! flight) stay bits in the record: they change with submissions and completions, not with the
//! protocol.
//!
//! ```text
//!            shutdown_write                 output sent: FIN
//!   Open{Open} ──────────────▶ Open{ShutPending} ──────────────▶ Open{Shut}
//!       │                                                           │ peer FIN (both ways done)
//!       │ close_after_flush                                         ▼
//!       ▼          output sent: FIN, no peer FIN yet              Closing ◀── close, error,
//!   Flushing ─────────────────────────────────────▶ Lingering         ▲         timeout (any)
//!       │   output sent and peer FIN seen (or linger 0)  │ peer FIN,  │
//!       └────────────────────────────────────────────────┼────────────┘
//!                                                        └ linger timer
//! ```
//!
//! The peer's FIN (`eof`) is remembered in `Open` and `Flushing`: the read side ends, the write
//! side goes on (a half-closed client still gets its response). `Lingering` reads and drops input
//! until the peer's FIN or the linger timer, so the peer reads the last response instead of a
//! reset. `Closing` waits for the cancelled operations' completions; the slot is freed after.

/// The sending side of an open connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// Open.
    Open,
    /// A FIN goes out once pending output is sent.
    ShutPending,
    /// The FIN is sent.
    Shut,
}

/// Where a connection is in its life; see the module docs for the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Serving. `eof`: the peer's FIN arrived (the read side is done).
    Open { write: Write, eof: bool },
    /// Closes once pending output is sent. `eof`: the peer's FIN arrived.
    Flushing { eof: bool },
    /// Our FIN is sent; input is read and dropped until the peer's FIN or the linger timer.
    Lingering,
    /// Operations are being cancelled; the slot is freed once their completions are in.
    Closing,
}

/// What the shard does once a connection's output is all sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterOutput {
    /// Nothing: the connection goes on.
    Continue,
    /// Send the FIN (a half-close asked for earlier); the connection goes on.
    SendFin,
    /// Send the FIN, then linger.
    Linger,
    /// Send the FIN, then close (the peer's FIN is in, or no linger is configured).
    FinThenClose,
}

impl Life {
    /// A new connection.
    pub(super) const OPEN: Life = Life::Open {
        write: Write::Open,
        eof: false,
    };

    /// Closing (whatever it was doing).
    pub(super) fn is_closing(self) -> bool {
        self == Life::Closing
    }

    /// Lingering or closing: input is no longer for the service, callbacks are over.
    pub(super) fn is_ending(self) -> bool {
        matches!(self, Life::Lingering | Life::Closing)
    }

    /// Closing once output is sent.
    pub(super) fn is_flushing(self) -> bool {
        matches!(self, Life::Flushing { .. })
    }

    /// The peer's FIN arrived (lingering ends with it, so it is never set there).
    pub(super) fn eof(self) -> bool {
        matches!(
            self,
            Life::Open { eof: true, .. } | Life::Flushing { eof: true }
        )
    }

    /// Open, with the peer's FIN in: a FIN still to report to the service.
    pub(super) fn open_at_eof(self) -> bool {
        matches!(self, Life::Open { eof: true, .. })
    }

    /// Both directions are done: our FIN is sent and the peer's arrived.
    pub(super) fn both_done(self) -> bool {
        self == Life::Open {
            write: Write::Shut,
            eof: true,
        }
    }

    /// The service asked to close after its output is sent.
    pub(super) fn close_after_flush(self) -> Life {
        match self {
            Life::Open { eof, .. } => Life::Flushing { eof },
            other => other,
        }
    }

    /// The service asked to half-close (FIN once output is sent).
    pub(super) fn shutdown_write(self) -> Life {
        match self {
            Life::Open {
                write: Write::Open,
                eof,
            } => Life::Open {
                write: Write::ShutPending,
                eof,
            },
            other => other,
        }
    }

    /// The peer's FIN arrived. Returns the next state; a lingering connection is done with it.
    pub(super) fn peer_eof(self) -> Life {
        match self {
            Life::Open { write, .. } => Life::Open { write, eof: true },
            Life::Flushing { .. } => Life::Flushing { eof: true },
            Life::Lingering | Life::Closing => Life::Closing,
        }
    }

    /// All output handed to the engine is sent: what follows, and the next state.
    pub(super) fn output_sent(self, linger: bool) -> (Life, AfterOutput) {
        match self {
            Life::Flushing { eof } if eof || !linger => (Life::Closing, AfterOutput::FinThenClose),
            Life::Flushing { .. } => (Life::Lingering, AfterOutput::Linger),
            Life::Open {
                write: Write::ShutPending,
                eof,
            } => (
                Life::Open {
                    write: Write::Shut,
                    eof,
                },
                AfterOutput::SendFin,
            ),
            other => (other, AfterOutput::Continue),
        }
    }

    /// Whether pending output is to be sent (not once lingering or closing).
    pub(super) fn sends(self) -> bool {
        !self.is_ending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_response_lingers_unless_the_peer_is_gone() {
        let flushing = Life::OPEN.close_after_flush();
        assert_eq!(flushing, Life::Flushing { eof: false });
        assert_eq!(
            flushing.output_sent(true),
            (Life::Lingering, AfterOutput::Linger)
        );
        assert_eq!(
            flushing.output_sent(false),
            (Life::Closing, AfterOutput::FinThenClose)
        );
        assert_eq!(
            flushing.peer_eof().output_sent(true),
            (Life::Closing, AfterOutput::FinThenClose)
        );
        assert_eq!(Life::Lingering.peer_eof(), Life::Closing);
        assert!(Life::Lingering.is_ending() && !Life::Lingering.eof());
    }

    #[test]
    fn half_closes_both_ways_end_in_closing() {
        let open = Life::OPEN.shutdown_write();
        assert_eq!(open.shutdown_write(), open, "asking twice changes nothing");
        let (shut, then) = open.output_sent(true);
        assert_eq!(then, AfterOutput::SendFin);
        assert!(!shut.both_done());
        let done = shut.peer_eof();
        assert!(done.both_done() && done.eof() && done.open_at_eof());
        // The other order: the peer's FIN first, then ours.
        let (done, _) = Life::OPEN.peer_eof().shutdown_write().output_sent(true);
        assert!(done.both_done());
    }

    #[test]
    fn closing_is_final_and_small() {
        for life in [
            Life::OPEN,
            Life::Flushing { eof: true },
            Life::Lingering,
            Life::Closing,
        ] {
            assert_eq!(
                life.output_sent(true).0.peer_eof().close_after_flush(),
                life.output_sent(true)
                    .0
                    .peer_eof()
                    .close_after_flush()
                    .shutdown_write()
            );
        }
        assert_eq!(Life::Closing.close_after_flush(), Life::Closing);
        assert_eq!(Life::Closing.shutdown_write(), Life::Closing);
        assert_eq!(Life::Closing.peer_eof(), Life::Closing);
        assert_eq!(Life::Closing.output_sent(true).0, Life::Closing);
        assert!(std::mem::size_of::<Life>() <= 2);
    }
}
