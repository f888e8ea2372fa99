//! One HTTP/2 exchange with prior knowledge over a blocking socket, for `hold --h2c` and
//! `memprobe --h2c`: the preface, SETTINGS both ways, one GET, its whole response; then the
//! caller keeps only the socket, so the server holds an idle h2 connection that served a request.
//! The client side is coreplex-protocol's own sans-I/O connection.

use anyhow::{bail, Result};
use coreplex_protocol::h2::conn::{Connection, Event, Role, Settings};
use coreplex_protocol::h2::hpack::Indexing;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Sends `GET path` on a new h2c connection over `s` and reads the response to its end.
pub fn exchange(s: &mut TcpStream, path: &str) -> Result<()> {
    let mut c = Connection::new(
        Role::Client,
        Settings {
            encoder_table_size: 0,
            ..Settings::default()
        },
    );
    let mut out = Vec::new();
    c.start(&mut out);
    s.write_all(&out)?;
    out.clear();
    let mut input = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut stream = None;
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("closed before the response");
        }
        input.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        loop {
            let (used, ev) = c
                .recv(&input[at..], 0, &mut out)
                .map_err(|e| anyhow::anyhow!("h2 error {e:?}"))?;
            at += used;
            match ev {
                None => break,
                Some(Event::Settings) if stream.is_none() => {
                    let id = c.open_stream().expect("capacity after SETTINGS");
                    c.send_headers(id, true, &mut out, |w| {
                        for (name, value) in [
                            (&b":method"[..], &b"GET"[..]),
                            (b":scheme", b"http"),
                            (b":authority", b"bench"),
                            (b":path", path.as_bytes()),
                        ] {
                            w.field(name, value, Indexing::Literal);
                        }
                    });
                    stream = Some(id);
                }
                Some(Event::Headers { end_stream, .. }) if end_stream => {
                    s.write_all(&out)?;
                    return Ok(());
                }
                Some(Event::Data {
                    stream: id,
                    len,
                    end_stream,
                    ..
                }) => {
                    c.consumed(id, len, &mut out);
                    if end_stream {
                        s.write_all(&out)?;
                        return Ok(());
                    }
                }
                Some(Event::Reset { code, .. }) => bail!("stream reset: {code:?}"),
                Some(_) => {}
            }
        }
        input.drain(..at);
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
    }
}
