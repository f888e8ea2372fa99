//! The WebSocket decoder on arbitrary bytes, fed whole and cut into pieces (sizes from the
//! input's first byte): never panics, consumes no more than it is given, yields events in a
//! well-formed order (data only inside a message, nothing after a close), never more message
//! bytes than the limit, only UTF-8 for a completed uncompressed text message, and the same
//! events and error however the input is cut.
#![no_main]

use coreplex_protocol::ws::{Decoder, DecoderConfig, Event, MessageKind, Opcode, Role};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Start(MessageKind, bool),
    Data(Vec<u8>),
    End,
    Control(u8, Vec<u8>),
    Close(Option<u16>, String),
}

fn run(config: &DecoderConfig, rsv1: bool, wire: &[u8], piece: usize) -> (Vec<Got>, Option<u16>) {
    let mut decoder = Decoder::new(rsv1);
    let mut buffer = Vec::new();
    let mut got: Vec<Got> = Vec::new();
    let mut in_message: Option<(MessageKind, bool, Vec<u8>)> = None;
    let mut frame_left = 0u64;
    let mut out = Vec::new();
    for arrival in wire.chunks(piece) {
        buffer.extend_from_slice(arrival);
        let mut at = 0;
        loop {
            let unread = buffer.len() - at;
            out.clear();
            let d = match decoder.decode(config, &buffer[at..], &mut out) {
                Ok(d) => d,
                Err(e) => {
                    assert!(out.is_empty(), "a failing call leaves out as it was");
                    return (got, Some(e.close_code()));
                }
            };
            assert!(d.consumed <= unread);
            let idle = d.consumed == 0 && d.event.is_none();
            at += d.consumed;
            assert!(!matches!(got.last(), Some(Got::Close(..))) || d.event.is_none(), "an event after close");
            match d.event {
                None => assert!(out.is_empty()),
                Some(Event::DataFrame { opcode, rsv1: compressed, len, .. }) => {
                    assert_eq!(frame_left, 0);
                    assert!(len <= config.max_frame);
                    frame_left = len;
                    let kind = match opcode {
                        Opcode::Text => MessageKind::Text,
                        Opcode::Binary => MessageKind::Binary,
                        _ => {
                            assert!(in_message.is_some() && !compressed);
                            continue;
                        }
                    };
                    assert!(in_message.is_none());
                    in_message = Some((kind, compressed, Vec::new()));
                    got.push(Got::Start(kind, compressed));
                }
                Some(Event::Data { len, last }) => {
                    assert_eq!(out.len(), len);
                    assert!(len as u64 <= frame_left);
                    frame_left -= len as u64;
                    assert!(!last || frame_left == 0);
                    let message = in_message.as_mut().expect("data inside a message");
                    message.2.extend_from_slice(&out);
                    assert!(message.2.len() as u64 <= config.max_message);
                    match got.last_mut() {
                        Some(Got::Data(v)) => v.extend_from_slice(&out),
                        _ => got.push(Got::Data(out.clone())),
                    }
                }
                Some(Event::MessageEnd) => {
                    assert_eq!(frame_left, 0);
                    let (kind, compressed, bytes) = in_message.take().expect("an end inside a message");
                    if kind == MessageKind::Text && !compressed {
                        assert!(std::str::from_utf8(&bytes).is_ok());
                    }
                    got.push(Got::End);
                }
                Some(Event::Ping(p)) => got.push(Got::Control(9, p.as_bytes().to_vec())),
                Some(Event::Pong(p)) => got.push(Got::Control(10, p.as_bytes().to_vec())),
                Some(Event::Close(c)) => got.push(Got::Close(c.code, c.reason().to_string())),
            }
            if idle {
                break;
            }
        }
        buffer.drain(..at);
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, wire)) = data.split_first() else {
        return;
    };
    let config = DecoderConfig {
        role: if knobs & 1 == 0 { Role::Server } else { Role::Client },
        max_frame: if knobs & 2 == 0 { 1 << 20 } else { 200 },
        max_message: if knobs & 4 == 0 { 1 << 20 } else { 300 },
    };
    let rsv1 = knobs & 8 != 0;
    let piece = 1 + (knobs >> 4) as usize;
    let whole = run(&config, rsv1, wire, wire.len().max(1));
    let cut = run(&config, rsv1, wire, piece);
    assert_eq!(whole.1, cut.1, "the same error however the input is cut");
    if whole.1.is_none() {
        assert_eq!(whole.0, cut.0, "the same events however the input is cut");
    }
});
