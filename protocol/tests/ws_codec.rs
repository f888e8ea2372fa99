//! The WebSocket codec end to end: frames written by the encoder (and the RFC's own examples)
//! read back by the decoder through a connection-like input buffer, cut at every point, and
//! every receive rule of RFC 6455 sections 5 and 8.1 answered with its close code.

use coreplex_protocol::ws::close::code;
use coreplex_protocol::ws::encode::{write_close, write_frame, write_header};
use coreplex_protocol::ws::{Decoder, DecoderConfig, Event, MessageKind, Opcode, Role, WsError};

/// An event with its bytes owned, so a run's events can be compared. Data frames' headers are
/// left out (how a message was cut into frames is not what the runs compare) but checked
/// against the payload that follows them.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Got {
    Start(MessageKind, bool),
    Data(Vec<u8>),
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// Feeds `wire` in pieces of `piece` bytes to a decoder the way a connection would: unread
/// bytes stay in the input buffer, each arrival is appended, decode runs until it needs more.
/// Data events of one message are joined so that runs cut differently compare equal.
fn run(
    config: &DecoderConfig,
    rsv1: bool,
    wire: &[u8],
    piece: usize,
) -> (Vec<Got>, Option<WsError>) {
    let mut decoder = Decoder::new(rsv1);
    let mut buffer: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut frame_left = 0u64;
    for arrival in wire.chunks(piece.max(1)) {
        buffer.extend_from_slice(arrival);
        let mut at = 0;
        loop {
            let mut out = b"kept".to_vec();
            let d = match decoder.decode(config, &buffer[at..], &mut out) {
                Err(e) => {
                    assert_eq!(out, b"kept", "a failing call leaves out as it was");
                    return (got, Some(e));
                }
                Ok(d) => d,
            };
            let idle = d.consumed == 0 && d.event.is_none();
            at += d.consumed;
            match d.event {
                None => assert_eq!(out, b"kept"),
                Some(Event::DataFrame {
                    opcode, rsv1, len, ..
                }) => {
                    assert_eq!(
                        frame_left, 0,
                        "a frame header after its predecessor's payload"
                    );
                    frame_left = len;
                    match opcode {
                        Opcode::Text => got.push(Got::Start(MessageKind::Text, rsv1)),
                        Opcode::Binary => got.push(Got::Start(MessageKind::Binary, rsv1)),
                        _ => assert!(!rsv1),
                    }
                }
                Some(Event::Data { len, last }) => {
                    assert_eq!(out.len(), 4 + len);
                    frame_left -= len as u64;
                    let bytes = &out[4..];
                    match got.last_mut() {
                        Some(Got::Data(v)) => v.extend_from_slice(bytes),
                        _ => got.push(Got::Data(bytes.to_vec())),
                    }
                    if last {
                        assert_eq!(frame_left, 0);
                    }
                }
                Some(Event::MessageEnd) => got.push(Got::End),
                Some(Event::Ping(p)) => got.push(Got::Ping(p.as_bytes().to_vec())),
                Some(Event::Pong(p)) => got.push(Got::Pong(p.as_bytes().to_vec())),
                Some(Event::Close(c)) => got.push(Got::Close(c.code, c.reason().into())),
            }
            if idle {
                break;
            }
        }
        buffer.drain(..at);
    }
    (got, None)
}

/// The same run cut at every piece size: all must agree with the whole-buffer run.
fn run_every_way(config: &DecoderConfig, rsv1: bool, wire: &[u8]) -> (Vec<Got>, Option<WsError>) {
    let whole = run(config, rsv1, wire, wire.len());
    for piece in 1..wire.len().min(40) {
        let cut = run(config, rsv1, wire, piece);
        // A run that fails may fail before an event the whole run saw only if the error came
        // from the same place; the error itself must agree.
        assert_eq!(cut.1, whole.1, "piece {piece}");
        if whole.1.is_none() {
            assert_eq!(cut.0, whole.0, "piece {piece}");
        }
    }
    whole
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn server() -> DecoderConfig {
    DecoderConfig::default()
}

fn client() -> DecoderConfig {
    DecoderConfig {
        role: Role::Client,
        ..DecoderConfig::default()
    }
}

fn masked(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, fin, op, payload, Some(KEY));
    out
}

#[test]
fn the_rfc_examples_decode() {
    // RFC 6455 section 5.7, as a client reads them (unmasked) and as a server reads them.
    let (got, err) = run_every_way(&client(), false, b"\x81\x05Hello");
    assert_eq!(
        (got, err),
        (
            vec![
                Got::Start(MessageKind::Text, false),
                Got::Data(b"Hello".to_vec()),
                Got::End
            ],
            None
        )
    );
    let (got, _) = run_every_way(
        &server(),
        false,
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
    );
    assert_eq!(
        got,
        vec![
            Got::Start(MessageKind::Text, false),
            Got::Data(b"Hello".to_vec()),
            Got::End
        ]
    );
    let (got, _) = run_every_way(&client(), false, b"\x01\x03Hel\x80\x02lo");
    assert_eq!(
        got,
        vec![
            Got::Start(MessageKind::Text, false),
            Got::Data(b"Hello".to_vec()),
            Got::End
        ]
    );
    let (got, _) = run_every_way(&client(), false, b"\x89\x05Hello\x8a\x05Hello");
    assert_eq!(
        got,
        vec![Got::Ping(b"Hello".to_vec()), Got::Pong(b"Hello".to_vec())]
    );
}

#[test]
fn large_and_empty_messages_round_trip_through_the_encoder() {
    for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let wire = masked(true, Opcode::Binary, &payload);
        let (got, err) = run(&server(), false, &wire, 4096);
        assert_eq!(err, None);
        let mut want = vec![Got::Start(MessageKind::Binary, false)];
        if len > 0 {
            want.push(Got::Data(payload.clone()));
        }
        want.push(Got::End);
        assert_eq!(got, want, "len {len}");
    }
}

#[test]
fn control_frames_between_fragments_are_delivered_in_order() {
    let mut wire = masked(false, Opcode::Text, "κό".as_bytes());
    wire.extend(masked(true, Opcode::Ping, b"p1"));
    wire.extend(masked(false, Opcode::Continuation, b""));
    wire.extend(masked(true, Opcode::Pong, b""));
    wire.extend(masked(true, Opcode::Continuation, "σμε".as_bytes()));
    let mut close = Vec::new();
    write_close(&mut close, Some(code::NORMAL), "done", Some(KEY));
    wire.extend(&close);
    wire.extend(b"ignored after close");
    let (got, err) = run_every_way(&server(), false, &wire);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            Got::Start(MessageKind::Text, false),
            Got::Data("κό".as_bytes().to_vec()),
            Got::Ping(b"p1".to_vec()),
            Got::Pong(vec![]),
            Got::Data("σμε".as_bytes().to_vec()),
            Got::End,
            Got::Close(Some(1000), "done".into()),
        ]
    );
}

#[test]
fn a_code_point_cut_between_frames_is_valid_text() {
    let text = "€𝄞".as_bytes();
    let mut wire = masked(false, Opcode::Text, &text[..2]);
    wire.extend(masked(false, Opcode::Continuation, &text[2..5]));
    wire.extend(masked(true, Opcode::Continuation, &text[5..]));
    let (got, err) = run_every_way(&server(), false, &wire);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            Got::Start(MessageKind::Text, false),
            Got::Data(text.to_vec()),
            Got::End
        ]
    );
}

/// A broken rule: its name, the config, RSV1 allowed, the wire, the error, its close code.
type Case = (&'static str, DecoderConfig, bool, Vec<u8>, WsError, u16);

#[test]
fn each_broken_rule_fails_with_its_close_code() {
    let cases: Vec<Case> = vec![
        (
            "unmasked client frame",
            server(),
            false,
            b"\x81\x00".to_vec(),
            WsError::UnmaskedClientFrame,
            1002,
        ),
        (
            "masked server frame",
            client(),
            false,
            masked(true, Opcode::Text, b""),
            WsError::MaskedServerFrame,
            1002,
        ),
        (
            "reserved opcode",
            server(),
            false,
            b"\x83\x80\0\0\0\0".to_vec(),
            WsError::ReservedOpcode(3),
            1002,
        ),
        (
            "RSV1 not negotiated",
            server(),
            false,
            b"\xC1\x80\0\0\0\0".to_vec(),
            WsError::ReservedBits,
            1002,
        ),
        (
            "RSV2",
            server(),
            true,
            b"\xA1\x80\0\0\0\0".to_vec(),
            WsError::ReservedBits,
            1002,
        ),
        (
            "RSV1 on a control frame",
            server(),
            true,
            b"\xC9\x80\0\0\0\0".to_vec(),
            WsError::ReservedBits,
            1002,
        ),
        (
            "RSV1 on a continuation",
            server(),
            true,
            [
                masked(false, Opcode::Text, b"a"),
                b"\xC0\x80\0\0\0\0".to_vec(),
            ]
            .concat(),
            WsError::ReservedBits,
            1002,
        ),
        (
            "fragmented ping",
            server(),
            false,
            b"\x09\x80\0\0\0\0".to_vec(),
            WsError::FragmentedControl,
            1002,
        ),
        (
            "ping of 126 bytes",
            server(),
            false,
            [b"\x89\xFE\x00\x7E\0\0\0\0".to_vec(), vec![0; 126]].concat(),
            WsError::ControlTooLong,
            1002,
        ),
        (
            "continuation first",
            server(),
            false,
            masked(true, Opcode::Continuation, b"x"),
            WsError::UnexpectedContinuation,
            1002,
        ),
        (
            "text inside a text",
            server(),
            false,
            [
                masked(false, Opcode::Text, b"a"),
                masked(true, Opcode::Text, b"b"),
            ]
            .concat(),
            WsError::UnfinishedMessage,
            1002,
        ),
        (
            "close of one byte",
            server(),
            false,
            masked(true, Opcode::Close, b"\x03"),
            WsError::CloseTooShort,
            1002,
        ),
        (
            "close code 1005",
            server(),
            false,
            masked(true, Opcode::Close, b"\x03\xed"),
            WsError::InvalidCloseCode(1005),
            1002,
        ),
        (
            "close reason not UTF-8",
            server(),
            false,
            masked(true, Opcode::Close, b"\x03\xe8\xff"),
            WsError::InvalidUtf8,
            1007,
        ),
        (
            "text not UTF-8",
            server(),
            false,
            masked(true, Opcode::Text, b"ok\xc0\xaf"),
            WsError::InvalidUtf8,
            1007,
        ),
        (
            "text ending mid code point",
            server(),
            false,
            masked(true, Opcode::Text, b"\xe2\x82"),
            WsError::InvalidUtf8,
            1007,
        ),
        (
            "frame over the limit",
            DecoderConfig {
                max_frame: 100,
                ..server()
            },
            false,
            masked(true, Opcode::Binary, &[0; 101]),
            WsError::FrameTooBig,
            1009,
        ),
        (
            "message over the limit",
            DecoderConfig {
                max_message: 100,
                ..server()
            },
            false,
            [
                masked(false, Opcode::Binary, &[0; 60]),
                masked(true, Opcode::Continuation, &[0; 41]),
            ]
            .concat(),
            WsError::MessageTooBig,
            1009,
        ),
    ];
    for (name, config, rsv1, wire, want, close) in cases {
        let (_, err) = run_every_way(&config, rsv1, &wire);
        assert_eq!(err, Some(want), "{name}");
        assert_eq!(want.close_code(), close, "{name}");
    }
}

#[test]
fn invalid_text_fails_before_the_rest_of_the_frame_arrives() {
    // The frame promises 1,000 bytes; the bad byte is among the first ten.
    let mut wire = Vec::new();
    write_header(&mut wire, true, false, Opcode::Text, Some(KEY), 1000);
    let mut payload = b"hello\xf4\x90\x80\x80".to_vec();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= KEY[i % 4];
    }
    wire.extend(payload);
    let (got, err) = run(&server(), false, &wire, wire.len());
    assert_eq!(err, Some(WsError::InvalidUtf8));
    assert_eq!(got, vec![Got::Start(MessageKind::Text, false)]);
}

#[test]
fn a_size_limit_is_enforced_on_the_header_before_any_payload() {
    let mut wire = Vec::new();
    write_header(&mut wire, true, false, Opcode::Binary, Some(KEY), 1 << 40);
    let config = server();
    let (got, err) = run(&config, false, &wire, wire.len());
    assert_eq!((got, err), (vec![], Some(WsError::FrameTooBig)));
}

#[test]
fn compressed_messages_are_marked_and_their_text_left_to_the_inflater() {
    // RSV1 on the first frame where permessage-deflate was negotiated; the payload (deflate
    // data, not UTF-8) is passed on as it is.
    let mut wire = Vec::new();
    write_header(&mut wire, false, true, Opcode::Text, Some(KEY), 2);
    let mut payload = *b"\xf2\x48";
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= KEY[i % 4];
    }
    wire.extend(payload);
    wire.extend(masked(true, Opcode::Continuation, b"\xcd\xc9\xc9\x07\x00"));
    let (got, err) = run_every_way(&server(), true, &wire);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            Got::Start(MessageKind::Text, true),
            Got::Data(b"\xf2\x48\xcd\xc9\xc9\x07\x00".to_vec()),
            Got::End
        ]
    );
}

#[test]
fn a_decoder_between_messages_is_idle_and_equals_a_new_one() {
    let config = server();
    let mut decoder = Decoder::new(false);
    let wire = masked(true, Opcode::Text, b"hi");
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let d = decoder.decode(&config, &wire[at..], &mut out).unwrap();
        at += d.consumed;
        assert!(!decoder.is_idle());
    }
    assert_eq!(out, b"hi");
    assert_eq!(
        decoder.decode(&config, &[], &mut out).unwrap().event,
        Some(Event::MessageEnd)
    );
    assert!(decoder.is_idle());
    assert_eq!(decoder, Decoder::new(false));
    assert!(
        std::mem::size_of::<Decoder>() <= 48,
        "{} bytes",
        std::mem::size_of::<Decoder>()
    );
}
