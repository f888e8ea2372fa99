//! The connection against itself (client and server) and against hand-written frames.

use super::*;
use crate::h2::frame::{write_data, write_header, write_rst, write_settings, write_window_update};
use crate::h2::hpack::{write_string, Encoder};

/// Frames in `out` as (type, flags, stream, payload).
fn frames(out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut v = vec![];
    let mut at = 0;
    while at < out.len() {
        let h = FrameHeader::read(out[at..at + 9].try_into().unwrap());
        let end = at + 9 + h.len as usize;
        v.push((h.kind, h.flags, h.stream, out[at + 9..end].to_vec()));
        at = end;
    }
    v
}

fn goaway_code(out: &[u8]) -> Option<ErrorCode> {
    frames(out)
        .iter()
        .rev()
        .find(|f| f.0 == kind::GOAWAY)
        .map(|f| ErrorCode::from_code(u32::from_be_bytes(f.3[4..8].try_into().unwrap())))
}

fn rst_codes(out: &[u8]) -> Vec<(u32, ErrorCode)> {
    frames(out)
        .iter()
        .filter(|f| f.0 == kind::RST_STREAM)
        .map(|f| {
            (
                f.2,
                ErrorCode::from_code(u32::from_be_bytes(f.3[..4].try_into().unwrap())),
            )
        })
        .collect()
}

/// Feeds all of `input` to `c`, collecting events (and the data bytes of Data events).
fn feed(
    c: &mut Connection,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<Vec<(Event, Vec<u8>)>, ErrorCode> {
    let mut evs = vec![];
    let mut at = 0;
    loop {
        let (used, ev) = c.recv(&input[at..], 0, out)?;
        let base = at;
        at += used;
        match ev {
            None => break,
            Some(e @ Event::Data { start, len, .. }) => {
                evs.push((e, input[base + start..base + start + len].to_vec()))
            }
            Some(e) => evs.push((e, vec![])),
        }
    }
    assert_eq!(at, input.len(), "whole frames are consumed");
    Ok(evs)
}

/// A server that has read the client preface and SETTINGS; returns it and its output so far.
fn server_with(settings: Settings) -> (Connection, Vec<u8>) {
    let mut s = Connection::new(Role::Server, settings);
    let mut out = vec![];
    s.start(&mut out);
    let mut input = frame::PREFACE.to_vec();
    write_settings(&mut input, &[]);
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(evs[0].0, Event::Settings);
    (s, out)
}

fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut e = Encoder::new(0);
    let mut b = vec![];
    e.begin_block(&mut b);
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", path),
    ]
    .iter()
    .chain(extra)
    {
        e.encode(n.as_bytes(), v.as_bytes(), Indexing::Literal, &mut b);
    }
    b
}

fn headers_frame(out: &mut Vec<u8>, stream: u32, block: &[u8], flags: u8) {
    write_header(out, block.len(), kind::HEADERS, flags, stream);
    out.extend_from_slice(block);
}

#[test]
fn a_request_and_response_between_client_and_server() {
    let mut client = Connection::new(Role::Client, Settings::default());
    let mut server = Connection::new(Role::Server, Settings::default());
    let (mut c_out, mut s_out) = (vec![], vec![]);
    client.start(&mut c_out);
    server.start(&mut s_out);
    assert_eq!(
        client.capacity(),
        0,
        "no capacity before the server's SETTINGS"
    );
    let evs = feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    assert_eq!(evs[0].0, Event::Settings);
    assert_eq!(client.capacity(), 100, "min(ours, theirs)");
    let id = client.open_stream().unwrap();
    assert_eq!(id, 1);
    client.send_headers(id, false, &mut c_out, |w| {
        for (n, v) in [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "a.example"),
            (":path", "/up"),
        ] {
            w.field(n.as_bytes(), v.as_bytes(), Indexing::Index);
        }
        w.field(b"content-length", b"5", Indexing::Literal);
    });
    assert_eq!(client.send_data(id, b"hello", true, &mut c_out), 5);
    let evs = feed(&mut server, &std::mem::take(&mut c_out), &mut s_out).unwrap();
    let evs: Vec<_> = evs.into_iter().filter(|e| e.0 != Event::Writable).collect();
    let kinds: Vec<_> = evs.iter().map(|e| e.0).collect();
    assert_eq!(kinds[0], Event::Settings);
    assert_eq!(
        kinds[1],
        Event::Headers {
            stream: 1,
            end_stream: false
        }
    );
    assert!(matches!(
        kinds[2],
        Event::Data {
            stream: 1,
            len: 5,
            end_stream: true,
            ..
        }
    ));
    assert_eq!(evs[2].1, b"hello");
    assert_eq!(server.stream_state(1), StreamState::HalfClosedRemote);
    server.consumed(1, 5, &mut s_out);
    server.send_headers(1, false, &mut s_out, |w| {
        w.field(b":status", b"200", Indexing::Index);
        w.field(b"server", b"coreplex", Indexing::Index);
    });
    let body = vec![b'x'; 40_000];
    assert_eq!(server.send_data(1, &body, true, &mut s_out), 40_000);
    assert_eq!(server.active_streams(), 0);
    let evs = feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    assert_eq!(
        evs[0].0,
        Event::Headers {
            stream: 1,
            end_stream: false
        }
    );
    let got: Vec<u8> = evs[1..].iter().flat_map(|e| e.1.clone()).collect();
    assert_eq!(got, body);
    assert!(matches!(
        evs.last().unwrap().0,
        Event::Data {
            end_stream: true,
            ..
        }
    ));
    assert_eq!(client.active_streams(), 0);
    // DATA frames respect the peer's frame size.
    assert!(frames(&c_out).iter().all(|f| f.3.len() <= 16_384));
}

#[test]
fn flow_control_pauses_and_window_updates_resume() {
    let mut client = Connection::new(Role::Client, Settings::default());
    let (mut server, mut s_out) = server_with(Settings::default());
    let mut c_out = vec![];
    client.start(&mut c_out);
    feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    feed(
        &mut server,
        &std::mem::take(&mut c_out)[frame::PREFACE.len()..],
        &mut s_out,
    )
    .unwrap_or_default();
    let id = client.open_stream().unwrap();
    client.send_headers(id, true, &mut c_out, |w| {
        for (n, v) in [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/"),
        ] {
            w.field(n.as_bytes(), v.as_bytes(), Indexing::Index);
        }
    });
    feed(&mut server, &std::mem::take(&mut c_out), &mut s_out).unwrap();
    server.send_headers(id, false, &mut s_out, |w| {
        w.field(b":status", b"200", Indexing::Index)
    });
    let body = vec![7u8; 100_000];
    let sent = server.send_data(id, &body, true, &mut s_out);
    assert_eq!(sent, 65_535, "the initial stream window");
    assert_eq!(server.send_capacity(id), 0);
    assert_eq!(server.send_data(id, &body[sent..], true, &mut s_out), 0);
    let evs = feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    let n: usize = evs.iter().map(|e| e.1.len()).sum();
    assert_eq!(n, 65_535);
    // The client consumes: WINDOW_UPDATEs for the stream (and the connection).
    client.consumed(id, n, &mut c_out);
    let wu: Vec<_> = frames(&c_out)
        .into_iter()
        .filter(|f| f.0 == kind::WINDOW_UPDATE)
        .collect();
    assert!(wu.iter().any(|f| f.2 == id), "{wu:?}");
    let evs = feed(&mut server, &std::mem::take(&mut c_out), &mut s_out).unwrap();
    assert!(evs.iter().any(|e| e.0 == Event::Writable));
    assert_eq!(
        server.send_data(id, &body[sent..], true, &mut s_out),
        100_000 - 65_535
    );
    assert_eq!(server.active_streams(), 0);
}

#[test]
fn preface_and_first_frame_rules() {
    let mut s = Connection::new(Role::Server, Settings::default());
    let mut out = vec![];
    assert_eq!(
        s.recv(b"PRI * HTTP/2.0\r\n", 0, &mut out),
        Ok((0, None)),
        "partial preface waits"
    );
    assert_eq!(
        s.recv(b"GET / HTTP/1.1\r\n\r\n", 0, &mut out),
        Err(ErrorCode::ProtocolError)
    );
    assert_eq!(goaway_code(&out), Some(ErrorCode::ProtocolError));
    // A PING before SETTINGS.
    let mut s = Connection::new(Role::Server, Settings::default());
    let mut input = frame::PREFACE.to_vec();
    frame::write_ping(&mut input, [0; 8], false);
    let mut out = vec![];
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
}

#[test]
fn stream_id_and_state_errors() {
    // DATA on an idle stream.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    write_data(&mut input, 1, b"x", false);
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
    // HEADERS on an even stream.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        2,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
    // A stream id lower than the last one opened.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        5,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    headers_frame(
        &mut input,
        3,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
    // DATA after the client ended the stream: STREAM_CLOSED on that stream only.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        1,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    write_data(&mut input, 1, b"x", false);
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(
        evs.last().unwrap().0,
        Event::Reset {
            stream: 1,
            code: ErrorCode::StreamClosed,
            remote: false
        }
    );
    assert_eq!(rst_codes(&out), [(1, ErrorCode::StreamClosed)]);
    // HEADERS on a stream closed by RST_STREAM: STREAM_CLOSED (connection).
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    write_rst(&mut input, 1, ErrorCode::Cancel);
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    assert_eq!(feed(&mut s, &input, &mut out), Err(ErrorCode::StreamClosed));
    // A second HEADERS without END_STREAM (not trailers): PROTOCOL_ERROR on the stream.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(
        evs.last().unwrap().0,
        Event::Reset {
            stream: 1,
            code: ErrorCode::ProtocolError,
            remote: false
        }
    );
    // A stream depending on itself.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    write_header(&mut input, 5, kind::PRIORITY, 0, 1);
    input.extend_from_slice(&[0, 0, 0, 1, 16]);
    feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(rst_codes(&out), [(1, ErrorCode::ProtocolError)]);
    // Frames between HEADERS and its CONTINUATION.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), 0);
    frame::write_ping(&mut input, [0; 8], false);
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
}

#[test]
fn malformed_requests_and_content_length_reset_the_stream() {
    for (extra, body, end) in [
        (vec![("connection", "keep-alive")], &b""[..], true),
        (vec![("content-length", "3")], &b"ab"[..], true),
        (vec![("content-length", "1")], &b"ab"[..], false),
    ] {
        let (mut s, mut out) = server_with(Settings::default());
        let mut input = vec![];
        headers_frame(
            &mut input,
            1,
            &request_block("/", &extra),
            flag::END_HEADERS,
        );
        write_data(&mut input, 1, body, end);
        let _ = feed(&mut s, &input, &mut out).unwrap();
        assert_eq!(
            rst_codes(&out),
            [(1, ErrorCode::ProtocolError)],
            "{extra:?}"
        );
        assert_eq!(s.active_streams(), 0);
    }
}

#[test]
fn trailers_end_the_stream() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    write_data(&mut input, 1, b"abc", false);
    let mut t = vec![];
    Encoder::new(0).encode(b"x-checksum", b"1", Indexing::Literal, &mut t);
    headers_frame(&mut input, 1, &t, flag::END_HEADERS | flag::END_STREAM);
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(evs[2].0, Event::Trailers { stream: 1 });
    assert_eq!(s.head().get(0).0, b"x-checksum");
    assert_eq!(s.stream_state(1), StreamState::HalfClosedRemote);
}

#[test]
fn concurrent_streams_beyond_the_limit_are_refused() {
    let (mut s, mut out) = server_with(Settings {
        max_concurrent_streams: 2,
        ..Settings::default()
    });
    let mut input = vec![];
    for id in [1, 3, 5] {
        headers_frame(
            &mut input,
            id,
            &request_block("/", &[]),
            flag::END_HEADERS | flag::END_STREAM,
        );
    }
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e.0, Event::Headers { .. }))
            .count(),
        2
    );
    assert_eq!(
        evs.last().unwrap().0,
        Event::Reset {
            stream: 5,
            code: ErrorCode::RefusedStream,
            remote: false
        }
    );
    assert_eq!(rst_codes(&out), [(5, ErrorCode::RefusedStream)]);
}

#[test]
fn an_oversize_head_is_reported_and_not_kept() {
    let (mut s, mut out) = server_with(Settings {
        max_header_list_size: 1000,
        ..Settings::default()
    });
    let mut input = vec![];
    let big = "v".repeat(2000);
    headers_frame(
        &mut input,
        1,
        &request_block("/", &[("x-big", &big)]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    headers_frame(
        &mut input,
        3,
        &request_block("/ok", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(evs[0].0, Event::TooLarge { stream: 1 });
    assert_eq!(
        evs[1].0,
        Event::Headers {
            stream: 3,
            end_stream: true
        }
    );
    assert!(s.heap_bytes() < 8192, "{}", s.heap_bytes());
}

#[test]
fn continuation_flood_is_cut_with_enhance_your_calm() {
    // Endless empty CONTINUATION frames (the 2024 flood): cut by the frame count.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), 0);
    for _ in 0..100 {
        write_header(&mut input, 0, kind::CONTINUATION, 0, 1);
    }
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::EnhanceYourCalm)
    );
    assert_eq!(goaway_code(&out), Some(ErrorCode::EnhanceYourCalm));
    assert_eq!(s.flood_limit_hit(), Some(Flood::Continuations));
    // Large fragments: cut by the block size, long before memory grows.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    let mut b = vec![0x40];
    write_string(b"x-a", &mut b);
    headers_frame(&mut input, 1, &b, 0);
    for _ in 0..10 {
        write_header(&mut input, 16_000, kind::CONTINUATION, 0, 1);
        input.extend(std::iter::repeat_n(b'a', 16_000));
    }
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::EnhanceYourCalm)
    );
    assert_eq!(s.flood_limit_hit(), Some(Flood::HeaderBlock));
    // CONTINUATION without HEADERS.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    write_header(&mut input, 0, kind::CONTINUATION, flag::END_HEADERS, 1);
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
}

#[test]
fn rapid_reset_is_cut() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    for i in 0..300u32 {
        let id = 2 * i + 1;
        headers_frame(&mut input, id, &request_block("/", &[]), flag::END_HEADERS);
        write_rst(&mut input, id, ErrorCode::Cancel);
    }
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::EnhanceYourCalm)
    );
    assert_eq!(s.flood_limit_hit(), Some(Flood::Resets));
    // Resets spread over time are fine.
    let (mut s, mut out) = server_with(Settings::default());
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        let mut input = vec![];
        headers_frame(&mut input, id, &request_block("/", &[]), flag::END_HEADERS);
        write_rst(&mut input, id, ErrorCode::Cancel);
        let mut at = 0;
        while at < input.len() {
            let (used, _) = s.recv(&input[at..], u64::from(i) * 20, &mut out).unwrap();
            at += used;
        }
    }
}

#[test]
fn ping_settings_and_window_update_floods_are_cut() {
    for f in [
        |i: &mut Vec<u8>| frame::write_ping(i, [1; 8], false),
        |i: &mut Vec<u8>| write_settings(i, &[]),
        |i: &mut Vec<u8>| write_data(i, 1, b"", false),
        |i: &mut Vec<u8>| write_window_update(i, 0, 1),
    ] {
        let (mut s, mut out) = server_with(Settings::default());
        let mut input = vec![];
        headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
        for _ in 0..5000 {
            f(&mut input);
        }
        assert_eq!(
            feed(&mut s, &input, &mut out),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert_eq!(s.flood_limit_hit(), Some(Flood::Glitches));
    }
}

#[test]
fn hpack_garbage_is_a_compression_error() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &[0x80], flag::END_HEADERS);
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::CompressionError)
    );
    assert_eq!(s.flood_limit_hit(), None);
}

#[test]
fn settings_are_validated() {
    for (id, v, want) in [
        (setting::ENABLE_PUSH, 2, ErrorCode::ProtocolError),
        (
            setting::INITIAL_WINDOW_SIZE,
            1 << 31,
            ErrorCode::FlowControlError,
        ),
        (setting::MAX_FRAME_SIZE, 16_383, ErrorCode::ProtocolError),
        (setting::MAX_FRAME_SIZE, 1 << 24, ErrorCode::ProtocolError),
    ] {
        let (mut s, mut out) = server_with(Settings::default());
        let mut input = vec![];
        write_settings(&mut input, &[(id, v)]);
        assert_eq!(feed(&mut s, &input, &mut out), Err(want), "{id} {v}");
    }
    // A frame over our max frame size.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    write_header(&mut input, 16_385, kind::DATA, 0, 1);
    input.extend(std::iter::repeat_n(0, 16_385));
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::FrameSizeError)
    );
}

#[test]
fn window_overflow_errors() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    write_window_update(&mut input, 0, MAX_WINDOW);
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::FlowControlError)
    );
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        1,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    write_window_update(&mut input, 1, MAX_WINDOW);
    feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(rst_codes(&out), [(1, ErrorCode::FlowControlError)]);
    // More DATA than the stream window.
    let (mut s, mut out) = server_with(Settings {
        initial_window_size: 100,
        ..Settings::default()
    });
    let mut input = vec![];
    frame::write_settings_ack(&mut input);
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    write_data(&mut input, 1, &[0; 101], false);
    feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(rst_codes(&out), [(1, ErrorCode::FlowControlError)]);
}

#[test]
fn graceful_shutdown_is_two_goaways_around_a_ping() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        1,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    feed(&mut s, &input, &mut out).unwrap();
    out.clear();
    s.begin_shutdown(&mut out);
    let f = frames(&out);
    assert_eq!(f[0].0, kind::GOAWAY);
    assert_eq!(&f[0].3[..4], &MAX_WINDOW.to_be_bytes());
    assert_eq!(f[1].0, kind::PING);
    // A stream the client opened meanwhile is still served.
    let mut input = vec![];
    headers_frame(
        &mut input,
        3,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    frame::write_ping(&mut input, SHUTDOWN_PING, true);
    headers_frame(
        &mut input,
        5,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    out.clear();
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(evs.len(), 1, "stream 3 served, 5 ignored: {evs:?}");
    let f = frames(&out);
    assert_eq!(f[0].0, kind::GOAWAY);
    assert_eq!(&f[0].3[..4], &3u32.to_be_bytes());
    assert!(!s.is_done());
    for id in [1, 3] {
        s.send_headers(id, true, &mut out, |w| {
            w.field(b":status", b"204", Indexing::Index)
        });
    }
    assert!(s.is_done());
}

#[test]
fn client_capacity_follows_the_servers_settings_and_goaway() {
    let mut c = Connection::new(Role::Client, Settings::default());
    let mut out = vec![];
    c.start(&mut out);
    let mut input = vec![];
    write_settings(&mut input, &[(setting::MAX_CONCURRENT_STREAMS, 3)]);
    feed(&mut c, &input, &mut out).unwrap();
    assert_eq!(c.capacity(), 3);
    let ids: Vec<u32> = (0..3).map(|_| c.open_stream().unwrap()).collect();
    assert_eq!(ids, [1, 3, 5]);
    assert_eq!(c.open_stream(), None, "never a fourth stream");
    // The server raises its limit: recomputed.
    let mut input = vec![];
    write_settings(&mut input, &[(setting::MAX_CONCURRENT_STREAMS, 10)]);
    feed(&mut c, &input, &mut out).unwrap();
    assert_eq!(c.capacity(), 7);
    // GOAWAY with last_stream 1: 3 and 5 were not processed.
    let mut input = vec![];
    frame::write_goaway(&mut input, 1, ErrorCode::NoError, b"");
    let evs = feed(&mut c, &input, &mut out).unwrap();
    assert_eq!(
        evs[0].0,
        Event::GoAway {
            last_stream: 1,
            code: ErrorCode::NoError
        }
    );
    let mut refused = vec![];
    while let Some(id) = c.take_refused() {
        refused.push(id);
    }
    refused.sort();
    assert_eq!(refused, [3, 5]);
    assert_eq!(c.capacity(), 0);
    assert_eq!(c.active_streams(), 1);
}

#[test]
fn headers_larger_than_a_frame_use_continuation() {
    let mut client = Connection::new(Role::Client, Settings::default());
    let (mut server, mut s_out) = server_with(Settings {
        max_header_list_size: 64 << 10,
        ..Settings::default()
    });
    let mut c_out = vec![];
    client.start(&mut c_out);
    feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    c_out.clear();
    let id = client.open_stream().unwrap();
    let big = "q".repeat(12_000);
    client.send_headers(id, true, &mut c_out, |w| {
        for (n, v) in [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/"),
        ] {
            w.field(n.as_bytes(), v.as_bytes(), Indexing::Index);
        }
        w.field(b"x-a", big.as_bytes(), Indexing::Literal);
        w.field(b"x-b", big.as_bytes(), Indexing::Literal);
    });
    let f = frames(&c_out);
    assert_eq!(f[0].0, kind::HEADERS);
    assert_eq!(f[1].0, kind::CONTINUATION);
    assert!(f[1].1 & flag::END_HEADERS != 0);
    let evs = feed(&mut server, &c_out, &mut s_out).unwrap();
    assert_eq!(
        evs[0].0,
        Event::Headers {
            stream: 1,
            end_stream: true
        }
    );
    assert_eq!(server.head().get(5).1.len(), 12_000);
}

#[test]
fn an_idle_connection_is_small() {
    // After a request and its response, shrunk as the front end does when no stream is open.
    let mut client = Connection::new(Role::Client, Settings::default());
    let (mut server, mut s_out) = server_with(Settings::default());
    let mut c_out = vec![];
    client.start(&mut c_out);
    feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
    let id = client.open_stream().unwrap();
    client.send_headers(id, true, &mut c_out, |w| {
        for (n, v) in [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a.example"),
            (":path", "/"),
        ] {
            w.field(n.as_bytes(), v.as_bytes(), Indexing::Index);
        }
        w.field(b"user-agent", b"curl/8.0", Indexing::Index);
    });
    feed(&mut server, &c_out[frame::PREFACE.len()..], &mut s_out).unwrap();
    server.send_headers(id, false, &mut s_out, |w| {
        w.field(b":status", b"200", Indexing::Index);
        w.field(b"server", b"coreplex", Indexing::Index);
        w.field(b"content-type", b"text/plain", Indexing::Index);
    });
    server.send_data(id, b"hello", true, &mut s_out);
    server.shrink_idle();
    let tables = server.decoder.table().size() + server.encoder.table().size();
    let own = std::mem::size_of::<Connection>() + server.heap_bytes();
    // The budget: at most 2 KiB beyond the HPACK tables in use (aim 1 KiB).
    assert!(own <= 2048 + 2 * tables, "{own} bytes, tables {tables}");
    assert!(
        std::mem::size_of::<Connection>() <= 768,
        "{}",
        std::mem::size_of::<Connection>()
    );
}

#[test]
fn late_frames_after_our_reset_are_ignored_and_skipped_ids_are_errors() {
    // A request we answered early and reset (413-style): its in-flight DATA and trailers are
    // ignored; the connection goes on.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(&mut input, 1, &request_block("/", &[]), flag::END_HEADERS);
    feed(&mut s, &input, &mut out).unwrap();
    s.reset(1, ErrorCode::NoError, &mut out);
    let mut input = vec![];
    write_data(&mut input, 1, b"more body", false);
    let mut t = vec![];
    Encoder::new(0).encode(b"x-trailer", b"1", Indexing::Literal, &mut t);
    headers_frame(&mut input, 1, &t, flag::END_HEADERS | flag::END_STREAM);
    headers_frame(
        &mut input,
        3,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    let evs = feed(&mut s, &input, &mut out).unwrap();
    assert_eq!(
        evs.last().unwrap().0,
        Event::Headers {
            stream: 3,
            end_stream: true
        }
    );
    // A peer's RST for a stream we already reset changes nothing.
    let mut input = vec![];
    write_rst(&mut input, 1, ErrorCode::Cancel);
    headers_frame(&mut input, 1, &t, flag::END_HEADERS | flag::END_STREAM);
    feed(&mut s, &input, &mut out).unwrap();
    s.send_headers(3, true, &mut out, |w| {
        w.field(b":status", b"204", Indexing::Index)
    });
    // A stream that ended normally, still remembered: a connection error.
    let mut input = vec![];
    headers_frame(&mut input, 3, &t, flag::END_HEADERS | flag::END_STREAM);
    assert_eq!(feed(&mut s, &input, &mut out), Err(ErrorCode::StreamClosed));
    // Streams far below the highest (beyond the remembered window) are ignored.
    let (mut s, mut out) = server_with(Settings::default());
    for id in (1..400).step_by(2) {
        let mut input = vec![];
        headers_frame(
            &mut input,
            id,
            &request_block("/", &[]),
            flag::END_HEADERS | flag::END_STREAM,
        );
        feed(&mut s, &input, &mut out).unwrap();
        s.send_headers(id, true, &mut out, |w| {
            w.field(b":status", b"204", Indexing::Index)
        });
    }
    let mut input = vec![];
    headers_frame(&mut input, 1, &t, flag::END_HEADERS | flag::END_STREAM);
    assert!(feed(&mut s, &input, &mut out).unwrap().is_empty());
    // A skipped id (never opened, within the window) is a PROTOCOL_ERROR.
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        301,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    headers_frame(
        &mut input,
        101,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    assert_eq!(
        feed(&mut s, &input, &mut out),
        Err(ErrorCode::ProtocolError)
    );
}

#[test]
fn a_goaway_after_the_final_one_never_raises_the_last_stream() {
    let (mut s, mut out) = server_with(Settings::default());
    let mut input = vec![];
    headers_frame(
        &mut input,
        1,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    feed(&mut s, &input, &mut out).unwrap();
    s.finish_shutdown(&mut out);
    let mut input = vec![];
    headers_frame(
        &mut input,
        3,
        &request_block("/", &[]),
        flag::END_HEADERS | flag::END_STREAM,
    );
    assert!(
        feed(&mut s, &input, &mut out).unwrap().is_empty(),
        "ignored after the final GOAWAY"
    );
    out.clear();
    s.abort(ErrorCode::NoError, &mut out);
    let f = frames(&out);
    assert_eq!(&f[0].3[..4], &1u32.to_be_bytes());
}

#[test]
fn an_hpack_bomb_past_the_limit_is_counted_without_copying() {
    let mut block = vec![0x40];
    write_string(b"x-bomb", &mut block);
    write_string(&[b'a'; 4000], &mut block);
    block.extend(std::iter::repeat_n(0xbe, 16_000));
    let mut d = crate::h2::hpack::Decoder::new(4096);
    let mut list = crate::h2::hpack::HeaderList::default();
    d.decode(&block, &mut list, 1000).unwrap();
    assert!(list.oversize && list.size > 60_000_000);
    assert!(list.heap_bytes() < 16 << 10, "{}", list.heap_bytes());
}

#[test]
fn responses_without_content_keep_their_content_length() {
    // HEAD (when told), 204 and 304 answered with a content-length and END_STREAM on HEADERS:
    // no body follows, and that is no error (RFC 9113 section 8.1.1); a GET's is.
    for (method, status, head, ok) in [
        ("HEAD", "200", true, true),
        ("GET", "304", false, true),
        ("GET", "204", false, true),
        ("GET", "200", false, false),
        ("HEAD", "200", false, false),
    ] {
        let mut client = Connection::new(Role::Client, Settings::default());
        let (mut server, mut s_out) = server_with(Settings::default());
        let mut c_out = vec![];
        client.start(&mut c_out);
        feed(&mut client, &std::mem::take(&mut s_out), &mut c_out).unwrap();
        let id = client.open_stream().unwrap();
        client.send_headers(id, true, &mut c_out, |w| {
            for (n, v) in [
                (":method", method),
                (":scheme", "http"),
                (":authority", "a"),
                (":path", "/"),
            ] {
                w.field(n.as_bytes(), v.as_bytes(), Indexing::Index);
            }
        });
        if head {
            client.expect_no_body(id);
        }
        feed(&mut server, &c_out[frame::PREFACE.len()..], &mut s_out).unwrap();
        c_out.clear();
        server.send_headers(id, true, &mut s_out, |w| {
            w.field(b":status", status.as_bytes(), Indexing::Index);
            w.field(b"content-length", b"100", Indexing::Literal);
        });
        let evs = feed(&mut client, &s_out, &mut c_out).unwrap();
        let got_head = evs.iter().any(|(e, _)| {
            *e == Event::Headers {
                stream: id,
                end_stream: true,
            }
        });
        assert_eq!(got_head, ok, "{method} {status}: {evs:?}");
        if !ok {
            assert!(evs.iter().any(|(e, _)| matches!(
                e,
                Event::Reset {
                    code: ErrorCode::ProtocolError,
                    ..
                }
            )));
        }
    }
}
