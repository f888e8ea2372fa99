//! Differential tests against the `h2` crate (hyper's HTTP/2): our server connection answering
//! h2's client, and our client connection talking to h2's server, over an in-memory duplex
//! pipe. Requests carry varied headers and bodies up to 300 KB (flow control both ways, many at
//! once); each side checks what the other sent, byte for byte.

use bytes::Bytes;
use coreplex_protocol::h2::conn::{Connection, Event, Role, Settings};
use coreplex_protocol::h2::hpack::Indexing;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The most a test waits for its peer (a stalled exchange fails instead of hanging).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A body of `n` bytes that depends on `seed` (so mixed-up bodies are caught).
fn body(seed: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed) as u8)
        .collect()
}

/// What request `i` sends: (path, extra header value, body length).
fn request(i: u32) -> (String, String, usize) {
    let len = match i % 5 {
        0 => 0,
        1 => 13,
        2 => 16_384,
        3 => 70_000,
        _ => 300_000,
    };
    (
        format!("/item/{i}?q={}", "x".repeat((i % 7) as usize)),
        format!("v{}-{}", i, "y".repeat((i * 37 % 200) as usize)),
        len,
    )
}

/// Sends `data` on an h2 stream as its windows allow, ending the stream.
async fn send_all(send: &mut h2::SendStream<Bytes>, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        send.reserve_capacity(data.len() - at);
        let cap = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .expect("capacity")
            .expect("no error");
        let n = cap.min(data.len() - at);
        send.send_data(
            Bytes::copy_from_slice(&data[at..at + n]),
            at + n == data.len(),
        )
        .expect("send_data");
        at += n;
    }
}

/// Receives a whole h2 body, releasing its capacity as it goes.
async fn recv_all(recv: &mut h2::RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("data");
        recv.flow_control()
            .release_capacity(chunk.len())
            .expect("release");
        got.extend_from_slice(&chunk);
    }
    got
}

/// Our server: answers each request with 200, `x-path` echoing `:path`, `x-len` the body
/// length it received, and a body derived from the request's `x-seed`.
async fn our_server(mut io: DuplexStream) {
    let mut c = Connection::new(
        Role::Server,
        Settings {
            max_concurrent_streams: 64,
            ..Settings::default()
        },
    );
    let mut out = Vec::new();
    c.start(&mut out);
    let mut input = Vec::new();
    let mut buf = vec![0u8; 65536];
    // stream -> (path, seed, body bytes received)
    let mut reqs: HashMap<u32, (String, u32, usize)> = HashMap::new();
    // (stream, response body, bytes sent)
    let mut sending: Vec<(u32, Vec<u8>, usize)> = Vec::new();
    loop {
        if !out.is_empty() {
            io.write_all(&out).await.unwrap();
            out.clear();
        }
        let n = io.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        input.extend_from_slice(&buf[..n]);
        let mut at = 0;
        loop {
            let (used, ev) = c
                .recv(&input[at..], 0, &mut out)
                .expect("no connection error");
            let base = at;
            at += used;
            let mut finished = None;
            match ev {
                None => break,
                Some(Event::Headers { stream, end_stream }) => {
                    let mut path = String::new();
                    let mut seed = 0;
                    for (name, value) in c.head().iter() {
                        match name {
                            b":path" => path = String::from_utf8(value.to_vec()).unwrap(),
                            b"x-seed" => {
                                seed = std::str::from_utf8(value).unwrap().parse().unwrap()
                            }
                            _ => {}
                        }
                    }
                    reqs.insert(stream, (path, seed, 0));
                    if end_stream {
                        finished = Some(stream);
                    }
                }
                Some(Event::Data {
                    stream,
                    start,
                    len,
                    end_stream,
                }) => {
                    let data = &input[base + start..base + start + len];
                    let r = reqs.get_mut(&stream).unwrap();
                    assert_eq!(data, &body(r.1, r.2 + len)[r.2..], "request body bytes");
                    r.2 += len;
                    c.consumed(stream, len, &mut out);
                    if end_stream {
                        finished = Some(stream);
                    }
                }
                Some(Event::Writable | Event::Settings) => {}
                Some(e) => panic!("unexpected {e:?}"),
            }
            if let Some(stream) = finished {
                let (path, seed, got) = reqs.remove(&stream).unwrap();
                let resp = body(seed ^ 0x5a, got / 2 + 5);
                c.send_headers(stream, false, &mut out, |w| {
                    w.field(b":status", b"200", Indexing::Index);
                    w.field(b"x-path", path.as_bytes(), Indexing::Literal);
                    w.field(b"x-len", got.to_string().as_bytes(), Indexing::Literal);
                    w.field(
                        b"content-type",
                        b"application/octet-stream",
                        Indexing::Index,
                    );
                });
                sending.push((stream, resp, 0));
            }
        }
        input.drain(..at);
        // Response bodies, as the windows allow.
        sending.retain_mut(|(stream, data, sent)| {
            let n = c.send_data(*stream, &data[*sent..], true, &mut out);
            *sent += n;
            *sent < data.len()
        });
    }
}

#[tokio::test(flavor = "current_thread")]
async fn h2_crate_client_against_our_server() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(our_server(server_io));
    let (mut client, conn) = h2::client::handshake(client_io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    for i in 0..60u32 {
        client = client.ready().await.unwrap();
        let (path, extra, len) = request(i);
        let req = http::Request::builder()
            .method(if len == 0 { "GET" } else { "POST" })
            .uri(format!("http://example.test{path}"))
            .header("x-seed", i.to_string())
            .header("x-extra", extra)
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, len == 0).unwrap();
        tasks.push(tokio::spawn(async move {
            if len > 0 {
                send_all(&mut send, &body(i, len)).await;
            }
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let (parts, mut recv) = resp.into_parts();
            assert_eq!(parts.headers["x-path"], path.as_str());
            assert_eq!(parts.headers["x-len"], len.to_string().as_str());
            let got = recv_all(&mut recv).await;
            assert_eq!(got, body(i ^ 0x5a, len / 2 + 5), "response body of {i}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(LIMIT, t)
            .await
            .expect("each exchange completes in time")
            .unwrap();
    }
    drop(client);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn our_client_against_the_h2_crate_server() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut srv = h2::server::Builder::new()
            .max_concurrent_streams(3)
            .handshake::<_, Bytes>(server_io)
            .await
            .unwrap();
        while let Some(req) = srv.accept().await {
            let (req, mut respond) = req.unwrap();
            tokio::spawn(async move {
                let (parts, mut recv) = req.into_parts();
                let got = recv_all(&mut recv).await;
                let seed: u32 = parts.headers["x-seed"].to_str().unwrap().parse().unwrap();
                assert_eq!(got, body(seed, got.len()), "request body");
                let resp = http::Response::builder()
                    .status(200)
                    .header("x-path", parts.uri.path_and_query().unwrap().as_str())
                    .header("x-len", got.len().to_string())
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(resp, false).unwrap();
                send_all(&mut send, &body(seed ^ 0x5a, got.len() / 2 + 5)).await;
            });
        }
    });
    let mut io = client_io;
    let mut c = Connection::new(Role::Client, Settings::default());
    let mut out = Vec::new();
    c.start(&mut out);
    let mut input = Vec::new();
    let mut buf = vec![0u8; 65536];
    let total = 30u32;
    let mut next = 0u32;
    let mut max_open = 0;
    // stream -> (request index, request body bytes sent, head seen, response bytes)
    let mut open: HashMap<u32, (u32, usize, bool, Vec<u8>)> = HashMap::new();
    let mut done = 0;
    while done < total {
        // Open what the server's limit allows (never a fourth stream).
        while next < total && c.capacity() > 0 {
            let id = c.open_stream().unwrap();
            let (path, extra, len) = request(next);
            let method: &[u8] = if len == 0 { b"GET" } else { b"POST" };
            let seed = next.to_string();
            c.send_headers(id, len == 0, &mut out, |w| {
                w.field(b":method", method, Indexing::Index);
                w.field(b":scheme", b"http", Indexing::Index);
                w.field(b":authority", b"example.test", Indexing::Index);
                w.field(b":path", path.as_bytes(), Indexing::Literal);
                w.field(b"x-seed", seed.as_bytes(), Indexing::Literal);
                w.field(b"x-extra", extra.as_bytes(), Indexing::Index);
            });
            open.insert(id, (next, 0, false, Vec::new()));
            next += 1;
        }
        max_open = max_open.max(c.active_streams());
        // Request bodies, as the windows allow.
        for (&id, st) in open.iter_mut() {
            let len = request(st.0).2;
            if st.1 < len {
                let data = body(st.0, len);
                st.1 += c.send_data(id, &data[st.1..], true, &mut out);
            }
        }
        if !out.is_empty() {
            io.write_all(&out).await.unwrap();
            out.clear();
        }
        let n = tokio::time::timeout(LIMIT, io.read(&mut buf))
            .await
            .expect("the server answers in time")
            .unwrap();
        assert!(n > 0, "server closed");
        input.extend_from_slice(&buf[..n]);
        let mut at = 0;
        loop {
            let (used, ev) = c
                .recv(&input[at..], 0, &mut out)
                .expect("no connection error");
            let base = at;
            at += used;
            match ev {
                None => break,
                Some(Event::Headers { stream, end_stream }) => {
                    let st = open.get_mut(&stream).unwrap();
                    let (path, _, len) = request(st.0);
                    let get = |n: &[u8]| {
                        c.head()
                            .iter()
                            .find(|(k, _)| *k == n)
                            .map(|(_, v)| v.to_vec())
                    };
                    assert_eq!(c.checked().status, 200);
                    assert_eq!(get(b"x-path").unwrap(), path.as_bytes());
                    assert_eq!(get(b"x-len").unwrap(), len.to_string().as_bytes());
                    st.2 = true;
                    assert!(!end_stream);
                }
                Some(Event::Data {
                    stream,
                    start,
                    len,
                    end_stream,
                }) => {
                    let st = open.get_mut(&stream).unwrap();
                    st.3.extend_from_slice(&input[base + start..base + start + len]);
                    c.consumed(stream, len, &mut out);
                    if end_stream {
                        let (i, _, head, got) = open.remove(&stream).unwrap();
                        assert!(head);
                        let len = request(i).2;
                        assert_eq!(got, body(i ^ 0x5a, len / 2 + 5), "response of {i}");
                        done += 1;
                    }
                }
                Some(Event::Settings | Event::Writable) => {}
                Some(e) => panic!("unexpected {e:?}"),
            }
        }
        input.drain(..at);
    }
    assert_eq!(
        max_open, 3,
        "the server's limit of 3 streams, used and never exceeded"
    );
}
