//! The PROXY protocol, both ways. Accepted (`[listener.proxy_protocol]`): v1 and v2 headers from
//! trusted sources name the client (seen in `X-Forwarded-For`), over plaintext and TLS; a trusted
//! source without a header, a malformed or truncated header, a header from an untrusted source,
//! and a header that does not arrive in time close the connection and are counted; an untrusted
//! source without a header is served as it is. Sent (`send_proxy`): nginx with `listen ...
//! proxy_protocol` reads the client coreplex names, over plaintext and before TLS. Real senders: curl `--haproxy-protocol` and
//! HAProxy `send-proxy-v2`.

use crate::backend::{wait_until, TestBackend};
use crate::harness::{curl, metric, temp_path, Server};
use crate::proxy::{proxy_config, srv, Nginx};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ECHO: &[u8] = b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// A proxy to `b` whose listener accepts PROXY headers from `trusted`.
fn start(b: &TestBackend, trusted: &str, pp_extra: &str) -> Server {
    Server::start(&proxy_config(
        &[srv(b.addr(), "")],
        "",
        &format!("proxy_protocol = {{ trusted = [{trusted}] {pp_extra} }}"),
    ))
}

/// Connects from `source` (an address of 127.0.0.0/8) to `to`.
pub(crate) fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `bytes` from `source` and reads until the server closes: (what came back, whether it
/// closed).
fn exchange(source: &str, to: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = connect_from(source, to);
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

fn outcome(s: &Server, outcome: &str) -> f64 {
    metric(
        s.admin(),
        &format!("coreplex_proxy_protocol_total{{outcome=\"{outcome}\"}}"),
    )
}

#[test]
fn trusted_headers_name_the_client_v1_v2_and_curl() {
    let b = TestBackend::start();
    let s = start(&b, "\"127.0.0.1/32\"", "");
    let v1 = [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".as_slice(),
        ECHO,
    ]
    .concat();
    let (text, _) = exchange("127.0.0.1", s.addr(), &v1);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("X-Forwarded-For: 203.0.113.7\r\n"), "{text}");

    let v2 = [
        v2_header(
            "198.51.100.9:1234".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        ),
        ECHO.to_vec(),
    ]
    .concat();
    let (text, _) = exchange("127.0.0.1", s.addr(), &v2);
    assert!(text.contains("X-Forwarded-For: 198.51.100.9\r\n"), "{text}");

    // A v2 LOCAL header (a balancer's own health check): the connection's own address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(ECHO);
    let (text, _) = exchange("127.0.0.1", s.addr(), &local);
    assert!(text.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{text}");

    // The header split over several writes.
    let mut c = connect_from("127.0.0.1", s.addr());
    for part in v1.chunks(7) {
        c.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    assert!(text.contains("X-Forwarded-For: 203.0.113.7\r\n"), "{text}");

    let out = curl(&[
        "-s",
        "--haproxy-protocol",
        &format!("http://{}/echo", s.addr()),
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("X-Forwarded-For: 127.0.0.1"), "curl: {body}");
    assert_eq!(outcome(&s, "accepted"), 4.0);
    assert_eq!(outcome(&s, "local"), 1.0);
}

#[test]
fn bad_headers_close_the_connection_and_are_counted() {
    let b = TestBackend::start();
    let s = start(&b, "\"127.0.0.1\"", ", timeout = \"400ms\"");
    let closed_silently = |source: &str, bytes: &[u8]| {
        let (text, closed) = exchange(source, s.addr(), bytes);
        assert!(
            closed && text.is_empty(),
            "{:?} from {source}: got {text:?} (closed: {closed})",
            String::from_utf8_lossy(bytes)
        );
    };
    // A trusted source must send a header.
    closed_silently("127.0.0.1", ECHO);
    // Malformed ones.
    for bad in [
        &b"PROXY TCP4 203.0.113.7 127.0.0.1 040000 80\r\n"[..],
        b"PROXY TCP4 203.0.113.7 ::1 4 80\r\n",
        b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        closed_silently("127.0.0.1", &[bad, ECHO].concat());
    }
    // Truncated: the client gives up half way (its FIN).
    {
        let mut c = connect_from("127.0.0.1", s.addr());
        c.write_all(b"PROXY TCP4 203.0.1").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    // An untrusted source may not claim an address...
    closed_silently(
        "127.0.0.2",
        &[
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".as_slice(),
            ECHO,
        ]
        .concat(),
    );
    // ...and is served as it is without one.
    let (text, _) = exchange("127.0.0.2", s.addr(), ECHO);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("X-Forwarded-For: 127.0.0.2\r\n"),
        "{text}"
    );
    // A header that does not arrive in time.
    let mut c = connect_from("127.0.0.1", s.addr());
    c.write_all(b"PROXY TCP4 ").unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let waited = t0.elapsed();
    assert!(
        rest.is_empty() && waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "closed after {waited:?} with {rest:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || outcome(
        &s,
        "malformed"
    ) == 5.0));
    assert_eq!(outcome(&s, "missing"), 1.0);
    assert_eq!(outcome(&s, "untrusted"), 1.0);
    assert_eq!(outcome(&s, "accepted"), 0.0);
    let closed = |r: &str| {
        metric(
            s.admin(),
            &format!("coreplex_connections_closed_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(closed("preface_rejected"), 7.0);
    assert_eq!(closed("preface_timeout"), 1.0);
    assert_eq!(
        b.requests(),
        1,
        "only the untrusted plain request reached the backend"
    );
}

#[test]
fn a_tls_listener_reads_the_header_before_the_handshake() {
    let s = Server::start(&format!(
        r#"version = 1
[global]
shards = 1
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "https"
bind = "127.0.0.1:0"
proxy_protocol = {{ trusted = ["127.0.0.0/8"] }}
[listener.tls]
{}
[[listener.route]]
respond = {{ status = 200, body = "over tls" }}
"#,
        crate::tls::tls_table("")
    ));
    let out = curl(&[
        "-sk",
        "--haproxy-protocol",
        &format!("https://localhost:{}/", s.addr().port()),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls");
    let out = curl(&["-sk", &format!("https://localhost:{}/", s.addr().port())]);
    assert!(
        out.stdout.is_empty(),
        "a trusted client without a header was served"
    );
    assert_eq!(outcome(&s, "accepted"), 1.0);
    assert_eq!(outcome(&s, "missing"), 1.0);
}

/// HAProxy in front: `send-proxy-v2` to `server`.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(server: SocketAddr) -> Haproxy {
        let addr = crate::proxy::closed_port();
        let cfg = temp_path("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\nfrontend f\n  bind {addr}\n  default_backend b\nbackend b\n  server s {server} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed: run tests/setup.sh");
        assert!(
            wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_ok()),
            "haproxy did not open {addr}"
        );
        Haproxy { child, addr }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_to_coreplex_to_nginx_carries_the_client_address_both_ways() {
    // nginx reads the PROXY header coreplex sends and answers with the address it names.
    let nginx = Nginx::start_with(
        "proxy_protocol",
        "location / {\n            default_type text/plain;\n            return 200 \"client=$proxy_protocol_addr:$proxy_protocol_port\";\n        }",
    );
    for version in ["v1", "v2"] {
        let s = Server::start(&proxy_config(
            &[srv(nginx.addr, "")],
            &format!("send_proxy = \"{version}\""),
            "proxy_protocol = { trusted = [\"127.0.0.1\"] }",
        ));
        let h = Haproxy::start(s.addr());
        // Two requests on one client connection: one backend connection, one header.
        let out = curl(&[
            "-s",
            "--interface",
            "127.0.0.3",
            &format!("http://{}/a", h.addr),
            &format!("http://{}/b", h.addr),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("client=127.0.0.3:") && text.matches("client=127.0.0.3:").count() == 2,
            "{version}: nginx saw {text:?}"
        );
        assert!(outcome(&s, "accepted") >= 1.0, "{version}");
    }
}

#[test]
fn send_proxy_goes_before_the_tls_handshake_to_a_tls_backend() {
    use crate::tls::cert;
    // nginx: TLS after a PROXY header (`listen ... ssl proxy_protocol`).
    let nginx = Nginx::start_with(
        "ssl proxy_protocol",
        &format!(
            "ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        location / {{ default_type text/plain; return 200 \"client=$proxy_protocol_addr $ssl_protocol\"; }}",
            cert("ecdsa.pem"),
            cert("ecdsa.key")
        ),
    );
    let s = Server::start(&proxy_config(
        &[srv(nginx.addr, "")],
        &format!(
            "send_proxy = \"v2\"\ntls = {{ ca = \"{}\", sni = \"localhost\" }}",
            cert("ca.pem")
        ),
        "",
    ));
    let out = curl(&[
        "-s",
        "--interface",
        "127.0.0.4",
        &format!("http://{}/", s.addr()),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "client=127.0.0.4 TLSv1.3"
    );
}
