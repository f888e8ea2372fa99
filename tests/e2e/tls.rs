//! TLS, black-box, with curl and `openssl s_client` as clients and nginx as a TLS backend:
//! TLS 1.2 and 1.3 with SNI and ALPN; resumption on 20 reconnects to a 2-shard server (tickets,
//! both versions); one key file shared by two processes; key rotation (a ticket sealed with the
//! previous key resumes, one older than the kept keys does not); ECDSA or RSA by what the client
//! accepts; unknown names refused; plaintext HTTP answered 400; TLS 1.0 refused with
//! `protocol_version`; a handshake slowloris closed at `client_hs`; client certificates;
//! `X-Forwarded-Proto: https`; backends over TLS (verified, wrong CA -> 503, the SNI nginx saw,
//! resumption counted); `coreplex check` errors with their key paths.

use crate::backend::TestBackend;
use crate::harness::{
    metric, metric_in, metrics_text, run_cli, temp_path, test_shards, write_temp, Server,
};
use crate::proxy::{fields, values, Nginx};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn certs() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/certs"))
}

pub(crate) fn cert(name: &str) -> String {
    certs().join(name).to_string_lossy().into_owned()
}

/// A `[listener.tls]` table body with the ECDSA and RSA test certificates and `extra` keys.
pub(crate) fn tls_table(extra: &str) -> String {
    format!(
        "certificates = [ {{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }} ]\n{extra}",
        cert("ecdsa.pem"),
        cert("ecdsa.key"),
        cert("rsa.pem"),
        cert("rsa.key")
    )
}

/// A configuration with one TLS listener answering `hello over tls` on every path.
fn tls_config(shards: usize, global_tls: &str, listener_extra: &str, tls_extra: &str) -> String {
    format!(
        r#"version = 1

[global]
shards = {shards}
max_connections = 256

[global.tls]
{global_tls}

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "https"
bind = "127.0.0.1:0"
{listener_extra}

[listener.tls]
{tls}

[[listener.route]]
path_prefix = "/"
respond = {{ body = "hello over tls" }}
"#,
        tls = tls_table(tls_extra)
    )
}

/// `curl` over TLS to `addr` as `localhost` (with `--resolve`), trusting the test CA; returns
/// (exit code, stdout, stderr).
fn curl_tls(addr: SocketAddr, path: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let url = format!("https://localhost:{}{path}", addr.port());
    let o = crate::harness::curl(
        &[
            &[
                "-sS",
                "-v",
                "--cacert",
                &cert("ca.pem"),
                "--resolve",
                &resolve,
            ][..],
            extra,
            &[&url],
        ]
        .concat(),
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `curl` over TLS to `addr` as `localhost`, `GET path` `n` times on one connection.
fn curl_tls_repeat(addr: SocketAddr, path: &str, n: usize) -> std::process::Output {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let url = format!("https://localhost:{}{path}", addr.port());
    let ca = cert("ca.pem");
    let mut args = vec!["-sS", "--cacert", &ca, "--resolve", &resolve];
    args.extend(std::iter::repeat_n(url.as_str(), n));
    crate::harness::curl(&args)
}

/// One `openssl s_client` handshake: reads and writes the session file `sess`, stays 300 ms so
/// TLS 1.3 tickets arrive. Returns its output.
pub(crate) fn s_client(addr: SocketAddr, args: &[&str], sess: Option<&PathBuf>) -> String {
    let connect = addr.to_string();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &connect, "-CAfile", &cert("ca.pem")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = sess {
        cmd.arg("-sess_out").arg(s);
        if s.exists() {
            cmd.arg("-sess_in").arg(s);
        }
    }
    let mut child = cmd
        .spawn()
        .expect("openssl runs (tests/setup.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = stdin.write_all(b"Q\n");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn curl_over_tls_12_and_13_with_sni_and_alpn() {
    let s = Server::start(&tls_config(1, "", "", ""));
    for (flag, version) in [("--tlsv1.3", "TLSv1.3"), ("--tls-max", "TLSv1.2")] {
        let args: &[&str] = if flag == "--tls-max" {
            &["--tls-max", "1.2"]
        } else {
            &[flag]
        };
        let (code, body, log) = curl_tls(s.addr(), "/", args);
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(body, "hello over tls");
        assert!(
            log.contains(&format!("SSL connection using {version}")),
            "{log}"
        );
        // The default ALPN list offers h2 first, so curl (which offers h2 too) gets it.
        assert!(log.contains("ALPN: server accepted h2"), "{log}");
        assert!(log.contains("subject: CN=localhost"), "{log}");
    }
    let (code, body, log) = curl_tls(s.addr(), "/", &["--http1.1"]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(body, "hello over tls");
    assert!(log.contains("ALPN: server accepted http/1.1"), "{log}");
    let text = metrics_text(s.admin());
    let get = |k: &str| metric_in(&text, k).unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(
        get("coreplex_tls_handshakes_total{side=\"listener\",version=\"1.3\",kind=\"full\"}"),
        2.0
    );
    assert_eq!(
        get("coreplex_tls_handshakes_total{side=\"listener\",version=\"1.2\",kind=\"full\"}"),
        1.0
    );
    assert_eq!(get("coreplex_tls_alpn_total{protocol=\"h2\"}"), 2.0);
    assert_eq!(get("coreplex_tls_alpn_total{protocol=\"http/1.1\"}"), 1.0);
    // curl's TLS 1.3 and 1.2 suites (the --http1.1 handshake is TLS 1.3 too).
    let suites: f64 = text
        .lines()
        .filter(|l| l.starts_with("coreplex_tls_cipher_total{suite=\"TLS13_"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(suites, 2.0, "{text}");
    let tls12: f64 = text
        .lines()
        .filter(|l| l.starts_with("coreplex_tls_cipher_total{suite=\"TLS_ECDHE_"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(tls12, 1.0, "{text}");
    // Names: "localhost" is a certificate's; an unknown one gets the default here.
    assert_eq!(
        get("coreplex_tls_unknown_sni_total{answer=\"default\"}"),
        0.0
    );
    let out = s_client(s.addr(), &["-servername", "other.example"], None);
    assert!(
        out.contains("subject=CN = localhost") || out.contains("CN=localhost"),
        "{out}"
    );
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_tls_unknown_sni_total{answer=\"default\"}"
        ),
        1.0
    );
    assert_eq!(get("coreplex_tls_handshake_seconds_count"), 3.0);
    assert!(get("coreplex_tls_ticket_keys") >= 1.0);
}

#[test]
fn every_reconnect_resumes_on_a_two_shard_server() {
    let shards = test_shards("every_reconnect_resumes_on_a_two_shard_server", 2);
    let s = Server::start(&tls_config(shards, "", "", ""));
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = temp_path("tls-session.pem");
        let first = s_client(
            s.addr(),
            &[version, "-servername", "localhost"],
            Some(&sess),
        );
        assert!(first.contains("\nNew, TLSv1."), "{first}");
        for i in 0..20 {
            let out = s_client(
                s.addr(),
                &[version, "-servername", "localhost"],
                Some(&sess),
            );
            assert!(
                out.contains("\nReused, TLSv1."),
                "{version} reconnect {i}: {out}"
            );
        }
        let _ = std::fs::remove_file(&sess);
    }
    let resumed = metric(
        s.admin(),
        "coreplex_tls_handshakes_total{side=\"listener\",version=\"1.3\",kind=\"resumed\"}",
    ) + metric(
        s.admin(),
        "coreplex_tls_handshakes_total{side=\"listener\",version=\"1.2\",kind=\"resumed\"}",
    );
    assert_eq!(resumed, 40.0);
    // Both shards took part (20 connections each way over two SO_REUSEPORT sockets).
    if shards == 2 {
        let text = metrics_text(s.admin());
        assert!(text.contains("coreplex_shards 2"), "{text}");
    }
}

#[test]
fn a_shared_key_file_resumes_across_processes() {
    let mut keys = Vec::new();
    for _ in 0..2 {
        keys.extend(coreplex_tls_key());
    }
    let file = temp_path("ticket.keys");
    std::fs::write(&file, &keys).unwrap();
    let global = format!("ticket_key_file = \"{}\"", file.display());
    let a = Server::start(&tls_config(1, &global, "", ""));
    let b = Server::start(&tls_config(1, &global, "", ""));
    let sess = temp_path("tls-session.pem");
    let first = s_client(
        a.addr(),
        &["-tls1_3", "-servername", "localhost"],
        Some(&sess),
    );
    assert!(first.contains("\nNew, TLSv1.3"), "{first}");
    let other = s_client(
        b.addr(),
        &["-tls1_3", "-servername", "localhost"],
        Some(&sess),
    );
    assert!(
        other.contains("\nReused, TLSv1.3"),
        "instance B did not resume A's session: {other}"
    );
    assert_eq!(metric(b.admin(), "coreplex_tls_ticket_keys"), 2.0);
    // An instance with other keys: a full handshake.
    let other_file = temp_path("ticket2.keys");
    std::fs::write(&other_file, coreplex_tls_key()).unwrap();
    let c = Server::start(&tls_config(
        1,
        &format!("ticket_key_file = \"{}\"", other_file.display()),
        "",
        "",
    ));
    let sess2 = temp_path("tls-session.pem");
    s_client(
        a.addr(),
        &["-tls1_3", "-servername", "localhost"],
        Some(&sess2),
    );
    let out = s_client(
        c.addr(),
        &["-tls1_3", "-servername", "localhost"],
        Some(&sess2),
    );
    assert!(out.contains("\nNew, TLSv1.3"), "{out}");
    for f in [file, other_file, sess, sess2] {
        let _ = std::fs::remove_file(f);
    }
}

/// 80 random bytes: one key of the nginx / Envoy ticket key file format.
fn coreplex_tls_key() -> Vec<u8> {
    let mut k = vec![0u8; 80];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut k).unwrap();
    k
}

#[test]
fn rotated_keys_keep_resuming_for_one_lifetime() {
    // A new key every second, each kept for a 3 s lifetime.
    let s = Server::start(&tls_config(
        1,
        "ticket_rotate = \"1s\"\nticket_lifetime = \"3s\"",
        "",
        "",
    ));
    let sess = temp_path("tls-session.pem");
    s_client(
        s.addr(),
        &["-tls1_2", "-servername", "localhost"],
        Some(&sess),
    );
    let saved = std::fs::read(&sess).unwrap();
    // After a rotation the previous key still opens the ticket.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(metric(s.admin(), "coreplex_tls_ticket_keys") >= 2.0);
    let out = s_client(
        s.addr(),
        &["-tls1_2", "-servername", "localhost"],
        Some(&sess),
    );
    assert!(
        out.contains("\nReused, TLSv1.2"),
        "not resumed after one rotation: {out}"
    );
    // The same ticket past its lifetime (and past the kept keys): a full handshake.
    std::thread::sleep(Duration::from_millis(4500));
    std::fs::write(&sess, &saved).unwrap();
    let out = s_client(
        s.addr(),
        &["-tls1_2", "-servername", "localhost"],
        Some(&sess),
    );
    assert!(
        out.contains("\nNew, TLSv1.2"),
        "an expired ticket resumed: {out}"
    );
    let _ = std::fs::remove_file(&sess);
}

#[test]
fn ecdsa_or_rsa_by_what_the_client_accepts() {
    let s = Server::start(&tls_config(1, "", "", ""));
    let out = s_client(
        s.addr(),
        &[
            "-tls1_2",
            "-servername",
            "localhost",
            "-sigalgs",
            "RSA+SHA256:RSA-PSS+SHA256",
        ],
        None,
    );
    assert!(out.contains("Peer signature type: RSA"), "{out}");
    let out = s_client(s.addr(), &["-tls1_3", "-servername", "localhost"], None);
    assert!(out.contains("Peer signature type: ECDSA"), "{out}");
}

#[test]
fn unknown_names_plaintext_and_old_versions_get_their_answers() {
    let s = Server::start(&tls_config(1, "", "", "unknown_sni = \"refuse\""));
    let out = s_client(s.addr(), &["-servername", "other.example"], None);
    assert!(
        out.contains("alert unrecognized name") || out.contains("SSL alert number 112"),
        "{out}"
    );
    let out = s_client(s.addr(), &["-servername", "localhost"], None);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // Plaintext HTTP to the TLS port: a readable 400.
    let (bytes, closed) = crate::harness::raw(
        s.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("https://"), "{text}");
    assert!(closed);
    // TLS 1.0: protocol_version.
    let out = s_client(s.addr(), &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], None);
    assert!(
        out.contains("alert protocol version") || out.contains("SSL alert number 70"),
        "{out}"
    );
    let failures = |r: &str| {
        metric(
            s.admin(),
            &format!("coreplex_tls_failures_total{{side=\"listener\",reason=\"{r}\"}}"),
        )
    };
    assert_eq!(failures("unknown_name"), 1.0);
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_tls_unknown_sni_total{answer=\"refused\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_tls_unknown_sni_total{answer=\"default\"}"
        ),
        0.0
    );
    assert_eq!(failures("plaintext_http"), 1.0);
    assert_eq!(failures("incompatible"), 1.0);
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_connections_closed_total{reason=\"handshake_failed\"}"
        ),
        3.0
    );
}

/// Reads from `c` until EOF (or 3 s); returns what came and whether it closed.
fn read_until_close(c: &mut TcpStream) -> (Vec<u8>, bool) {
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(c, &mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn garbage_truncated_hellos_renegotiation_and_closes_without_close_notify() {
    let s = Server::start(&tls_config(1, "", "", ""));
    // A handshake record whose body is not a ClientHello: a fatal alert (content type 21), closed.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let mut garbage = vec![22, 3, 1, 0, 64];
    garbage.extend((0..64u32).map(|i| (i * 37 % 251) as u8));
    c.write_all(&garbage).unwrap();
    let (got, closed) = read_until_close(&mut c);
    assert!(closed, "still open after garbage");
    assert_eq!(got.first(), Some(&21), "an alert record: {got:?}");
    assert_eq!(got.get(5), Some(&2), "fatal: {got:?}");
    // A ClientHello cut short, then FIN: closed, nothing sent.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.write_all(&[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, 9, 9, 9])
        .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, closed) = read_until_close(&mut c);
    assert!(closed && got.is_empty(), "closed={closed} got={got:?}");
    // Random bytes that are not TLS at all: closed (with or without an alert).
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    let (_, closed) = read_until_close(&mut c);
    assert!(closed);
    // TLS 1.2 renegotiation (openssl's `R`): refused with a no_renegotiation warning.
    let out = s_client_typing(s.addr(), "-tls1_2", &["R\n"]);
    assert!(
        out.contains("RENEGOTIATING") && out.contains("no renegotiation"),
        "{out}"
    );
    // Clients that vanish without close_notify, mid-request and after a complete request (Python's
    // ssl module; detach() drops the socket without the closing record).
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile={ca:?})
for request in [b"GET / HTTP/1.1\r\nHo", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]:
    raw = socket.create_connection(("127.0.0.1", {port}))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(request)
    if request.endswith(b"\r\n\r\n"):
        assert b"hello over tls" in tls.recv(4096)
    socket.socket(fileno=tls.detach()).close()
print("ok")
"#,
        ca = cert("ca.pem"),
        port = s.addr().port()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    crate::harness::wait_metric(
        s.admin(),
        "coreplex_connections_current",
        |v| v == 0.0,
        "every connection closed",
    );
    // The server is unharmed.
    let (code, body, log) = curl_tls(s.addr(), "/", &[]);
    assert_eq!((code, body.as_str()), (Some(0), "hello over tls"), "{log}");
}

/// Runs `openssl s_client` (lines sent with CRLF) over `version` against `addr`, typing each
/// of `lines` 300 ms apart; returns what it printed.
fn s_client_typing(addr: SocketAddr, version: &str, lines: &[&str]) -> String {
    let connect = addr.to_string();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            version,
            "-crlf",
            "-CAfile",
            &cert("ca.pem"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        std::thread::sleep(Duration::from_millis(300));
        let _ = stdin.write_all(line.as_bytes());
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn tls13_key_updates_either_way_keep_the_connection_working() {
    // After the handshake the records are coreplex's own (rustls handed the secrets over): a
    // KeyUpdate from openssl, with and without asking coreplex to update too, between requests.
    let s = Server::start(&tls_config(1, "", "", ""));
    let request = "GET / HTTP/1.1\nHost: localhost\n\n";
    let out = s_client_typing(
        s.addr(),
        "-tls1_3",
        &[request, "k\n", request, "K\n", request],
    );
    assert_eq!(out.matches("KEYUPDATE").count(), 2, "{out}");
    assert_eq!(out.matches("hello over tls").count(), 3, "{out}");
    let m = crate::harness::metrics_text(s.admin());
    let failures: f64 = m
        .lines()
        .filter(|l| l.starts_with("coreplex_tls_failures_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 0.0, "no TLS failure: {m}");
}

#[test]
fn a_handshake_slowloris_is_closed_at_client_hs() {
    let s = Server::start(&tls_config(
        1,
        "",
        "timeouts = { client_hs = \"400ms\" }",
        "",
    ));
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.write_all(&[22, 3, 1, 0]).unwrap(); // the start of a record, then nothing
    let t0 = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
    let took = t0.elapsed();
    assert_eq!(n, 0, "bytes before the close: {:?}", &buf[..n]);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_connections_closed_total{reason=\"handshake_timeout\"}"
        ),
        1.0
    );
}

#[test]
fn client_certificates_required_and_optional() {
    let ca = cert("ca.pem");
    let s = Server::start(&tls_config(
        1,
        "",
        "",
        &format!("client_ca = \"{ca}\"\nclient_auth = \"required\""),
    ));
    let (code, _, log) = curl_tls(s.addr(), "/", &[]);
    assert_ne!(code, Some(0), "served without a client certificate: {log}");
    let (code, body, log) = curl_tls(
        s.addr(),
        "/",
        &["--cert", &cert("client.pem"), "--key", &cert("client.key")],
    );
    assert_eq!((code, body.as_str()), (Some(0), "hello over tls"), "{log}");
    let s = Server::start(&tls_config(
        1,
        "",
        "",
        &format!("client_ca = \"{ca}\"\nclient_auth = \"optional\""),
    ));
    let (code, body, _) = curl_tls(s.addr(), "/", &[]);
    assert_eq!((code, body.as_str()), (Some(0), "hello over tls"));
}

/// A proxy with a TLS listener routing to `backend_toml` (a `[backend.app]` body).
fn tls_proxy(backend_toml: &str) -> Server {
    Server::start(&format!(
        r#"version = 1

[global]
shards = 1
max_connections = 256

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "https"
bind = "127.0.0.1:0"

[listener.tls]
{tls}

[[listener.route]]
path_prefix = "/"
backend = "app"

[backend.app]
{backend_toml}
"#,
        tls = tls_table("")
    ))
}

#[test]
fn x_forwarded_proto_says_https() {
    let b = TestBackend::start();
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{}\" }} ]\nforwarded = true",
        b.addr()
    ));
    let (code, body, log) = curl_tls(s.addr(), "/echo", &[]);
    assert_eq!(code, Some(0), "{log}");
    let f = fields(&body);
    assert_eq!(values(&f, "x-forwarded-proto"), ["https"], "{body}");
    assert_eq!(
        values(&f, "forwarded"),
        ["for=127.0.0.1;proto=https"],
        "{body}"
    );
    drop(b);
}

/// nginx over TLS (the ECDSA test certificate) answering `sni=<name> reused=<r|.> <protocol>` (TLS 1.3 named: nginx 1.22 leaves it out by default).
fn tls_nginx() -> Nginx {
    Nginx::start_with(
        "ssl",
        &format!(
            "ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_session_tickets on;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        location / {{ default_type text/plain; return 200 \"sni=$ssl_server_name reused=$ssl_session_reused $ssl_protocol\"; }}",
            cert("ecdsa.pem"),
            cert("ecdsa.key")
        ),
    )
}

#[test]
fn backends_over_tls_verified_with_sni_and_resumed() {
    let n = tls_nginx();
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{}\" }} ]\nreuse = \"never\"\ntls = {{ ca = \"{}\", sni = \"localhost\" }}",
        n.addr,
        cert("ca.pem")
    ));
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (code, body, log) = curl_tls(s.addr(), "/", &[]);
        assert_eq!(code, Some(0), "{log}");
        bodies.push(body);
    }
    assert_eq!(bodies[0], "sni=localhost reused=. TLSv1.3");
    assert!(
        bodies[1..]
            .iter()
            .all(|b| b == "sni=localhost reused=r TLSv1.3"),
        "pool refills did not resume: {bodies:?}"
    );
    let full = metric(
        s.admin(),
        "coreplex_tls_handshakes_total{side=\"backend\",version=\"1.3\",kind=\"full\"}",
    );
    let resumed = metric(
        s.admin(),
        "coreplex_tls_handshakes_total{side=\"backend\",version=\"1.3\",kind=\"resumed\"}",
    );
    assert_eq!((full, resumed), (1.0, 2.0), "{}", metrics_text(s.admin()));
    assert_eq!(backend_tls_handshakes(&s), (Some(1.0), Some(2.0)));
    let text = metrics_text(s.admin());
    let ratio = metric_in(
        &text,
        "coreplex_backend_tls_resumption_ratio{backend=\"app\"}",
    )
    .unwrap();
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{ratio}");
}

/// Backend `app`'s TLS handshakes (full, resumed), from the metrics.
fn backend_tls_handshakes(s: &Server) -> (Option<f64>, Option<f64>) {
    let text = metrics_text(s.admin());
    let backend = |k: &str| metric_in(&text, &format!("{k}{{backend=\"app\"}}"));
    (
        backend("coreplex_backend_tls_handshakes_full_total"),
        backend("coreplex_backend_tls_handshakes_resumed_total"),
    )
}

#[test]
fn a_backend_with_an_untrusted_certificate_gets_503_and_recovers_when_trusted() {
    let n = tls_nginx();
    // Verified against the bundled web roots: the test CA is not among them.
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{}\" }} ]\nretries = 1\ntls = {{ sni = \"localhost\" }}",
        n.addr
    ));
    let (code, body, log) = curl_tls(s.addr(), "/", &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!((code, body.as_str()), (Some(0), "503"), "{log}");
    assert_eq!(
        metric(
            s.admin(),
            "coreplex_tls_failures_total{side=\"backend\",reason=\"bad_certificate\"}"
        ),
        2.0,
        "the try and the retry"
    );
    // verify = false (explicit): served.
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{}\" }} ]\ntls = {{ verify = false, sni = \"localhost\" }}",
        n.addr
    ));
    let (code, body, _) = curl_tls(s.addr(), "/", &[]);
    assert_eq!(
        (code, body.as_str()),
        (Some(0), "sni=localhost reused=. TLSv1.3")
    );
}

#[test]
fn check_reports_tls_errors_with_their_key_paths() {
    let text = format!(
        r#"version = 1
[global.tls]
ticket_key_file = "/nonexistent/keys"
[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
certificates = [
  {{ cert = "{ecdsa}", key = "{rsa_key}" }},
  {{ cert = "/nonexistent.pem", key = "{rsa_key}" }},
  {{ cert = "{ecdsa}", key = "{ecdsa_key}", names = ["example.com"] }},
]
cipher_suites = ["TLS_NOPE"]
min_version = "1.1"
[[listener.route]]
respond = {{ body = "x" }}
[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
certificates = [ {{ cert = "{ecdsa}", key = "{ecdsa_key}" }} ]
groups = ["X448"]
min_version = "1.3"
max_version = "1.2"
[[listener.route]]
respond = {{ body = "x" }}
[backend.b]
servers = [ {{ address = "127.0.0.1:1" }} ]
tls = {{ min_version = "1.3", max_version = "1.2" }}
"#,
        ecdsa = cert("ecdsa.pem"),
        ecdsa_key = cert("ecdsa.key"),
        rsa_key = cert("rsa.key"),
    );
    check_reports(
        &text,
        &[
            ("global.tls.ticket_key_file", "cannot read"),
            ("listener[0].tls.certificates[0].cert", "does not match"),
            ("listener[0].tls.certificates[1].cert", "cannot read"),
            ("listener[0].tls.certificates[2].names[0]", "not covered"),
            ("listener[0].tls.cipher_suites", "TLS_NOPE"),
            ("listener[0].tls.min_version", "1.1"),
            ("listener[1].tls.groups", "X448"),
            ("listener[1].tls.min_version", "is above max_version"),
            ("backend.b.tls.min_version", "is above max_version"),
        ],
    );
}

/// `coreplex check` on config `text` exits 2 with an error line at each key path that says what
/// is paired with it.
fn check_reports(text: &str, errors: &[(&str, &str)]) {
    let path = write_temp("bad-tls.toml", text);
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for (p, says) in errors {
        let want = format!("error: {file}: {p}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&want) && l.contains(says)),
            "no `{want}...{says}` line in:\n{err}"
        );
    }
}

#[test]
fn large_responses_arrive_whole_over_tls_direct_and_proxied() {
    // Output is sealed a bounded chunk at a time: a body many chunks long, of a length that is no
    // multiple of a record or a chunk, arrives whole and in order, twice on one connection.
    let body: String = (0..300_001u32)
        .map(|i| {
            char::from(
                b"0123456789abcdefghijklmnopqrstuvwxyz"[(i % 36) as usize ^ (i / 36 % 2) as usize],
            )
        })
        .collect();
    let cfg = tls_config(1, "", "", "").replace(
        "respond = { body = \"hello over tls\" }",
        &format!("respond = {{ body = \"{body}\" }}"),
    );
    let s = Server::start(&cfg);
    let o = curl_tls_repeat(s.addr(), "/big", 2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), 2 * body.len());
    assert!(
        o.stdout == [body.as_bytes(), body.as_bytes()].concat(),
        "the body differs"
    );
    let text = metrics_text(s.admin());
    assert_eq!(
        metric_in(
            &text,
            "coreplex_tls_handshakes_total{side=\"listener\",version=\"1.3\",kind=\"full\"}"
        ),
        Some(1.0),
        "both requests on one connection"
    );
    // Proxied: 3 MB from a plaintext backend streams out over TLS.
    let b = TestBackend::start();
    let p = tls_proxy(&format!("servers = [ {{ address = \"{}\" }} ]", b.addr()));
    let (code, out, log) = curl_tls(p.addr(), "/bytes/3000001", &[]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(out.len(), 3_000_001);
    assert!(out.bytes().all(|c| c == b'x'));
    drop(b);
}

/// Runs `openssl ARGS`, which must succeed.
fn openssl(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A leaf certificate for `sans` (`DNS:...` entries) signed by the test CA, with the key made
/// by `key_args` (openssl req options), valid 30 days, in a fresh temp directory: (cert path,
/// key path).
fn leaf_cert(name: &str, key_args: &[&str], sans: &str) -> (String, String) {
    leaf_cert_for_days(name, key_args, sans, "30")
}

/// [`leaf_cert`] valid `days` days (`"0"`: expired a second after it was made).
fn leaf_cert_for_days(name: &str, key_args: &[&str], sans: &str, days: &str) -> (String, String) {
    let dir = crate::harness::temp_path(&format!("{name}-cert"));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, csr, pem) = (dir.join("k.pem"), dir.join("r.csr"), dir.join("c.pem"));
    let ext = dir.join("ext");
    std::fs::write(
        &ext,
        format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let (key_s, csr_s, pem_s) = (
        key.to_str().unwrap(),
        csr.to_str().unwrap(),
        pem.to_str().unwrap(),
    );
    let subj = format!("/CN={name}");
    openssl(
        &[
            &[
                "req", "-new", "-nodes", "-subj", &subj, "-keyout", key_s, "-out", csr_s,
            ][..],
            key_args,
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr_s,
        "-CA",
        &cert("ca.pem"),
        "-CAkey",
        &cert("ca.key"),
        "-set_serial",
        "7",
        "-days",
        days,
        "-out",
        pem_s,
        "-extfile",
        ext.to_str().unwrap(),
    ]);
    (pem_s.to_string(), key_s.to_string())
}

#[test]
fn certificates_are_chosen_by_name_with_wildcards_and_every_key_type() {
    let p384 = leaf_cert(
        "a.test",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
        "DNS:a.test",
    );
    let ed = leaf_cert("wild.b.test", &["-newkey", "ed25519"], "DNS:*.b.test");
    let rsa4k = leaf_cert("c.test", &["-newkey", "rsa:4096"], "DNS:c.test");
    let extra = [p384, ed, rsa4k]
        .iter()
        .map(|(c, k)| format!("{{ cert = \"{c}\", key = \"{k}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tls = tls_table("").replace(" ]\n", &format!(", {extra} ]\n"));
    let cfg = tls_config(1, "", "", "").replace(&tls_table(""), &tls);
    let s = Server::start(&cfg);
    let hello = |name: &str| s_client(s.addr(), &["-servername", name], None);
    let out = hello("a.test");
    assert!(out.contains("subject=CN = a.test"), "{out}");
    assert!(out.contains("Server public key is 384 bit"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // One label under the wildcard matches it; the bare name and two labels do not.
    let out = hello("x.b.test");
    assert!(out.contains("subject=CN = wild.b.test"), "{out}");
    assert!(out.contains("Peer signature type: ed25519"), "{out}");
    for name in ["b.test", "y.x.b.test"] {
        let out = hello(name);
        assert!(out.contains("subject=CN = localhost"), "{name}: {out}");
    }
    let out = hello("c.test");
    assert!(out.contains("subject=CN = c.test"), "{out}");
    assert!(out.contains("Server public key is 4096 bit"), "{out}");
    let out = hello("localhost");
    assert!(out.contains("subject=CN = localhost"), "{out}");
}

#[test]
fn version_limits_and_key_exchange_groups_are_enforced() {
    let alert_70 =
        |out: &str| out.contains("alert protocol version") || out.contains("SSL alert number 70");
    // A listener limited to one version refuses the other (protocol_version) and serves its own.
    for (limit, refused, served, shows) in [
        (
            "min_version = \"1.3\"",
            "-tls1_2",
            "-tls1_3",
            "New, TLSv1.3, Cipher is TLS_",
        ),
        (
            "max_version = \"1.2\"",
            "-tls1_3",
            "-tls1_2",
            "Protocol  : TLSv1.2",
        ),
    ] {
        let s = Server::start(&tls_config(1, "", "", limit));
        let out = s_client(s.addr(), &[refused, "-servername", "localhost"], None);
        assert!(alert_70(&out), "{refused} offered to `{limit}`: {out}");
        let out = s_client(s.addr(), &[served, "-servername", "localhost"], None);
        assert!(out.contains(shows), "`{limit}`: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // Only P-384: a client with X25519 alone has no group in common.
    let s = Server::start(&tls_config(1, "", "", "groups = [\"P-384\"]"));
    let out = s_client(
        s.addr(),
        &["-tls1_3", "-groups", "X25519", "-servername", "localhost"],
        None,
    );
    assert!(
        out.contains("alert handshake failure") || out.contains("SSL alert number 40"),
        "X25519 accepted: {out}"
    );
    assert!(out.contains("Cipher is (NONE)"), "{out}");
    let out = s_client(
        s.addr(),
        &[
            "-tls1_3",
            "-groups",
            "X25519:P-384",
            "-servername",
            "localhost",
        ],
        None,
    );
    assert!(out.contains("Server Temp Key: ECDH, secp384r1"), "{out}");
    assert!(out.contains("Cipher is TLS_"), "{out}");
}

#[test]
fn tls12_session_ids_resume_only_with_a_session_cache() {
    // A TLS 1.2 client without ticket support resumes through the per-shard session cache.
    for (cache, resumed) in [("session_cache = 100", true), ("", false)] {
        let s = Server::start(&tls_config(1, "", "", cache));
        let sess = crate::harness::temp_path("tls12-session-id.pem");
        let args = ["-tls1_2", "-no_ticket", "-servername", "localhost"];
        let first = s_client(s.addr(), &args, Some(&sess));
        assert!(first.contains("New, TLSv1.2"), "{first}");
        let second = s_client(s.addr(), &args, Some(&sess));
        assert_eq!(
            second.contains("Reused, TLSv1.2"),
            resumed,
            "`{cache}`: {second}"
        );
    }
}

/// nginx over TLS on `addr` with certificate `cert` / `key`, answering `ok <protocol>`.
fn tls_nginx_at(addr: SocketAddr, cert: &str, key: &str) -> Nginx {
    Nginx::start_at(
        addr,
        "ssl",
        &format!(
            "ssl_certificate {cert};\n        ssl_certificate_key {key};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        location / {{ default_type text/plain; return 200 \"ok $ssl_protocol\"; }}"
        ),
    )
}

#[test]
fn backend_certificate_errors_are_503_and_the_running_proxy_recovers_once_fixed() {
    // The same server address with an expired certificate, then one for another name, then a
    // good one: 503 (bad_certificate) twice, then served by the same running proxy.
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let expired = leaf_cert_for_days("localhost", &ec, "DNS:localhost", "0");
    let other = leaf_cert("other.test", &ec, "DNS:other.test");
    std::thread::sleep(Duration::from_millis(1100)); // past the expired one's notAfter
    let addr = crate::proxy::closed_port();
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{addr}\" }} ]\nretries = 0\nhealth = {{ fail_threshold = 2, down_for = \"300ms\" }}\ntls = {{ ca = \"{}\", sni = \"localhost\" }}",
        cert("ca.pem")
    ));
    let status = || {
        let (code, body, log) = curl_tls(s.addr(), "/", &["-o", "/dev/null", "-w", "%{http_code}"]);
        assert_eq!(code, Some(0), "{log}");
        body
    };
    let bad = || {
        metric(
            s.admin(),
            "coreplex_tls_failures_total{side=\"backend\",reason=\"bad_certificate\"}",
        )
    };
    for (i, (c, k)) in [expired, other].iter().enumerate() {
        let n = tls_nginx_at(addr, c, k);
        assert_eq!(status(), "503", "certificate {i}");
        assert_eq!(bad(), (i + 1) as f64, "certificate {i}");
        drop(n);
    }
    let n = tls_nginx_at(addr, &cert("ecdsa.pem"), &cert("ecdsa.key"));
    assert!(
        crate::backend::wait_until(Duration::from_secs(5), || status() == "200"),
        "not served again once the certificate was fixed"
    );
    let (code, body, _) = curl_tls(s.addr(), "/", &[]);
    assert_eq!((code, body.as_str()), (Some(0), "ok TLSv1.3"));
    assert_eq!(bad(), 2.0);
    drop(n);
}

#[test]
fn tls_backend_connections_are_reused_with_a_server_sni_and_a_client_certificate() {
    // nginx asks for a client certificate signed by the test CA and names the SNI it got.
    let n = Nginx::start_with(
        "ssl",
        &format!(
            "ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_client_certificate {};\n        ssl_verify_client on;\n        location / {{ default_type text/plain; return 200 \"sni=$ssl_server_name client=$ssl_client_s_dn\"; }}",
            cert("ecdsa.pem"),
            cert("ecdsa.key"),
            cert("ca.pem")
        ),
    );
    // The backend-wide SNI is wrong; the server's own one wins.
    let s = tls_proxy(&format!(
        "servers = [ {{ address = \"{}\", sni = \"localhost\" }} ]\ntls = {{ ca = \"{}\", sni = \"wrong.test\", cert = \"{}\", key = \"{}\" }}",
        n.addr,
        cert("ca.pem"),
        cert("client.pem"),
        cert("client.key")
    ));
    // Five requests on one client connection: one backend connection, one handshake.
    let o = curl_tls_repeat(s.addr(), "/", 5);
    let body = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        body,
        "sni=localhost client=CN=localhost".repeat(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(backend_tls_handshakes(&s), (Some(1.0), Some(0.0)));
    let text = metrics_text(s.admin());
    assert_eq!(
        metric_in(&text, "coreplex_backend_connects_total{backend=\"app\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn session_rate_makes_new_tls_sessions_wait() {
    // A burst of 4, then 4 new sessions per second: 12 handshakes at once take about 2 s, all
    // served (excess waits in the backlog, nothing is refused).
    let s = Server::start(&tls_config(1, "", "", "session_rate = 4"));
    let addr = s.addr();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|_| std::thread::spawn(move || curl_tls(addr, "/", &["--max-time", "10"])))
        .collect();
    for h in clients {
        let (code, body, log) = h.join().unwrap();
        assert_eq!((code, body.as_str()), (Some(0), "hello over tls"), "{log}");
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "12 sessions at session_rate = 4/s took only {took:?}"
    );
    assert!(metric(s.admin(), "coreplex_accept_rate_limited_total") >= 1.0);
}

#[test]
fn idle_tls_connections_hold_no_buffer_and_one_timer_each() {
    // Ten TLS keep-alive connections (openssl s_client, kept open) after one request each: the
    // TLS state stays, but no receive buffer is held, and one keep-alive timer each.
    use std::io::Read;
    let s = Server::start(&tls_config(1, "", "", ""));
    let connect = s.addr().to_string();
    let mut held = Vec::new();
    for i in 0..10 {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &connect])
            .args(["-servername", "localhost", "-CAfile", &cert("ca.pem")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("hello over tls") {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("connection {i}: no response"));
        assert!(
            String::from_utf8_lossy(&got).ends_with("hello over tls"),
            "connection {i}: {}",
            String::from_utf8_lossy(&got)
        );
        held.push((child, stdin));
    }
    let text = metrics_text(s.admin());
    let m = |k: &str| metric_in(&text, k).unwrap();
    assert_eq!(m("coreplex_connections_current"), 10.0);
    assert_eq!(
        m("coreplex_buffers_outstanding"),
        0.0,
        "an idle TLS connection holds a buffer"
    );
    assert_eq!(m("coreplex_timers"), 10.0, "one keep-alive timer each");
    for (mut child, stdin) in held {
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A leaf certificate for `localhost` valid from `start` to `end` (`YYYYMMDDHHMMSSZ`), made with
/// `openssl ca` (which, unlike `x509 -req`, takes both dates): (cert path, key path).
fn leaf_cert_dated(start: &str, end: &str) -> (String, String) {
    let dir = crate::harness::temp_path("dated-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "0A\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n"
        ),
    )
    .unwrap();
    let (key, csr, pem) = (
        format!("{d}/k.pem"),
        format!("{d}/r.csr"),
        format!("{d}/c.pem"),
    );
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-addext",
        "subjectAltName=DNS:localhost",
    ]);
    openssl(&[
        "ca",
        "-batch",
        "-notext",
        "-config",
        &format!("{d}/ca.cnf"),
        "-cert",
        &cert("ca.pem"),
        "-keyfile",
        &cert("ca.key"),
        "-in",
        &csr,
        "-out",
        &pem,
        "-startdate",
        start,
        "-enddate",
        end,
    ]);
    (pem, key)
}

#[test]
fn check_refuses_certificates_out_of_their_validity_and_warns_before_expiry() {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let expired = leaf_cert_for_days("localhost", &ec, "DNS:localhost", "0");
    let future = leaf_cert_dated("20400101000000Z", "20410101000000Z");
    let soon = leaf_cert_for_days("localhost", &ec, "DNS:localhost", "10");
    std::thread::sleep(Duration::from_millis(1100)); // past the expired one's notAfter
    let key_dir = crate::harness::temp_path("key-is-a-dir");
    std::fs::create_dir_all(&key_dir).unwrap();
    let listener = |c: &str, k: &str| {
        format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncertificates = [ {{ cert = \"{c}\", key = \"{k}\" }} ]\n[[listener.route]]\nrespond = {{ body = \"x\" }}\n")
    };
    let text = format!(
        "version = 1\n{}{}{}",
        listener(&expired.0, &expired.1),
        listener(&future.0, &future.1),
        listener(&cert("ecdsa.pem"), key_dir.to_str().unwrap()),
    );
    check_reports(
        &text,
        &[
            ("listener[0].tls.certificates[0].cert", "expired"),
            ("listener[1].tls.certificates[0].cert", "not valid yet"),
            ("listener[2].tls.certificates[0].key", ""),
        ],
    );
    // Expiring within 30 days: valid, with a warning.
    let path = write_temp(
        "soon-tls.toml",
        &format!("version = 1\n{}", listener(&soon.0, &soon.1)),
    );
    let file = path.to_string_lossy().into_owned();
    let o = run_cli(&["check", "-c", &file]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let want = format!("warning: {file}: listener[0].tls.certificates[0].cert: ");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&want) && l.contains("expires in 9 days")),
        "no `{want}... expires in 9 days` line in:\n{err}"
    );
}
