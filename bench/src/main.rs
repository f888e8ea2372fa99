//! coreplex-bench: measurement tools for coreplex and its peers.
//!
//! - `load`: HTTP/1.1 keep-alive load, closed or open loop (coordinated-omission corrected),
//!   pipelining, latency percentiles, errors by kind, its own CPU per request.
//! - `compare`: coreplex, nginx and haproxy side by side on the same core, ABAB rounds: server
//!   CPU per request, requests/s, p99, bytes per idle connection, ratios; answering directly
//!   (`--scenario direct`) or as reverse proxies in front of one nginx backend (`--scenario proxy`).
//! - `tls-bare`: server CPU per TLS handshake of a bare rustls server in memory (the yardstick
//!   for coreplex's handshake cost).
//! - `hold`: open N keep-alive connections spread over source addresses 127.0.0.2..., send one
//!   request on each, keep them idle for a while, report how many stayed alive, close with linger 0.
//! - `ws-deflate`: permessage-deflate at window bits 9 to 15 on a JSON corpus: ratio, CPU per
//!   message compressed (reset per message) and inflated with a client's context, reset vs new,
//!   memory per compressor and decompressor.
//! - `memprobe`: for a server PID, hold N connections at each of several counts and report the
//!   server's RSS growth and the kernel's socket memory growth per connection.

mod compare;
mod h2c;
mod hold;
mod load;
mod plot;
mod proc_stats;
mod tls_bare;
mod ws_deflate;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "coreplex-bench",
    version,
    about = "Load, hold and memory tools for coreplex"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// HTTP/1.1 keep-alive load (closed loop like wrk, or open loop at --rate like wrk2).
    Load {
        /// Target URL (http://host:port/path).
        url: String,
        /// Connections.
        #[arg(short = 'c', long, default_value_t = 100)]
        connections: usize,
        /// Threads (each with its own io_uring), pinned round-robin to --cpus.
        #[arg(short = 't', long, default_value_t = 1)]
        threads: usize,
        /// Duration, e.g. 10s, 500ms, 1m.
        #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Open loop: total requests per second (latency from the intended send time).
        #[arg(short = 'R', long)]
        rate: Option<f64>,
        /// Requests outstanding per connection (pipelining depth).
        #[arg(short = 'p', long, default_value_t = 1)]
        pipeline: usize,
        /// Request method.
        #[arg(short = 'm', long, default_value = "GET")]
        method: String,
        /// Extra request header, "Name: value" (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Request body (sent with Content-Length).
        #[arg(short = 'b', long)]
        body: Option<String>,
        /// A request without a response after this counts as a timeout.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        /// Source addresses 127.0.0.2.. for loopback targets (0: let the kernel choose).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// CPUs to pin the threads to, e.g. "1" or "2-5".
        #[arg(long)]
        cpus: Option<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Write the latency percentile curve to this PNG file.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// A new connection for every request (the client closes after each response): with
        /// https://, one handshake per request.
        #[arg(long)]
        reconnect: bool,
        /// https://: CA certificates (PEM) to verify the server with.
        #[arg(long)]
        cacert: Option<std::path::PathBuf>,
        /// https://: accept any certificate (signatures are still checked).
        #[arg(short = 'k', long)]
        insecure: bool,
        /// https://: the SNI name (default: the URL's host when it is a name).
        #[arg(long)]
        sni: Option<String>,
        /// https://: offer only this TLS version (1.2 or 1.3).
        #[arg(long)]
        tls_version: Option<String>,
        /// https://: key-exchange groups in order (x25519, secp256r1, secp384r1, x25519mlkem768).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// https://: offer only ECDSA or only RSA signatures (with --insecure), which picks the
        /// certificate of a server holding both.
        #[arg(long)]
        tls_sig: Option<String>,
        /// https://: ALPN protocols offered.
        #[arg(long, value_delimiter = ',', default_value = "http/1.1")]
        alpn: Vec<String>,
        /// https://: no resumption (every reconnect is a full handshake).
        #[arg(long)]
        no_resume: bool,
    },
    /// Compare coreplex with nginx and haproxy: same scenario, same core, rounds in turn.
    Compare {
        /// What the servers do: answer themselves (direct), or forward every request to one nginx
        /// backend pinned to the server CPU as well (proxy: only the proxy's CPU is counted).
        #[arg(long, value_enum, default_value_t = compare::Scenario::Direct)]
        scenario: compare::Scenario,
        /// Servers to compare (coreplex, nginx, haproxy); ratios are against the first non-coreplex
        /// one (proxy scenario: against haproxy and nginx).
        #[arg(long, default_value = "coreplex,nginx,haproxy", value_delimiter = ',')]
        servers: Vec<String>,
        /// The coreplex binary.
        #[arg(long, default_value = "target/release/coreplex")]
        coreplex: std::path::PathBuf,
        /// Directory with configs/ and peers/.
        #[arg(long, default_value = env!("CARGO_MANIFEST_DIR"))]
        bench_dir: std::path::PathBuf,
        /// Connection counts.
        #[arg(long, default_value = "100,1000", value_delimiter = ',')]
        conns: Vec<usize>,
        /// Pipelining depths.
        #[arg(long, default_value = "1,16", value_delimiter = ',')]
        pipeline: Vec<usize>,
        /// Rounds per scenario (server order alternates).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Measured time per run.
        #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Warm-up time per run.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        warmup: Duration,
        /// CPU for the server.
        #[arg(long, default_value_t = 0)]
        server_cpu: usize,
        /// CPU for the load.
        #[arg(long, default_value_t = 1)]
        client_cpu: usize,
        /// Idle connections for the bytes-per-connection figure (0 skips it; haproxy's config
        /// allows 9,900).
        #[arg(long, default_value_t = 5_000)]
        idle: usize,
        /// Port of the proxy scenario's backend on 127.0.0.1.
        #[arg(long, default_value_t = 18090)]
        backend_port: u16,
        /// Print JSON (all runs) instead of tables.
        #[arg(long)]
        json: bool,
        /// Write latency curves (first scenario) and throughput vs connections to this PNG file.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
    },
    /// The yardstick: server CPU per TLS handshake of a bare rustls server, in memory.
    TlsBare {
        /// Directory with ca.pem, ecdsa.pem/.key and rsa.pem/.key.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/certs"))]
        certs: std::path::PathBuf,
        /// Time per case.
        #[arg(short = 'd', long, default_value = "3s", value_parser = parse_duration)]
        duration: Duration,
        /// CPU to pin to.
        #[arg(long)]
        cpu: Option<usize>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Instead: serve TLS on this address (one connection at a time) until killed.
        #[arg(long)]
        serve: Option<SocketAddr>,
    },
    /// permessage-deflate at window bits 9 to 15 on a JSON corpus.
    WsDeflate {
        /// Messages in the corpus.
        #[arg(long, default_value_t = 5_000)]
        messages: usize,
        /// Least time per compression timing.
        #[arg(short = 'd', long, default_value = "1s", value_parser = parse_duration)]
        duration: Duration,
        /// CPU to pin to.
        #[arg(long)]
        cpu: Option<usize>,
        /// zlib compression level (coreplex's routes use 6).
        #[arg(long, default_value_t = 6)]
        level: u32,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Hold N idle keep-alive connections.
    Hold {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddr,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Number of source addresses (127.0.0.2 onwards).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Request path sent on each connection.
        #[arg(long, default_value = "/")]
        path: String,
        /// Fraction of the connections that send a request every --interval seconds.
        #[arg(long, default_value_t = 0.0)]
        active_fraction: f64,
        /// Seconds between requests on the active fraction.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Client processes to spread the connections over (each has its own open-files limit).
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Open the connections over TLS (any certificate accepted; SNI localhost).
        #[arg(long)]
        tls: bool,
        /// Speak HTTP/2 with prior knowledge (h2c): one request each, then idle.
        #[arg(long, conflicts_with = "tls")]
        h2c: bool,
    },
    /// Measure bytes per idle connection (server RSS and kernel socket memory) at several counts.
    Memprobe {
        /// PID of the server to measure.
        #[arg(long)]
        pid: u32,
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddr,
        /// Connection counts, comma-separated.
        #[arg(long, default_value = "1000,5000,10000,19000", value_delimiter = ',')]
        counts: Vec<usize>,
        /// Number of source addresses (127.0.0.2 onwards).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Request path sent on each connection.
        #[arg(long, default_value = "/")]
        path: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Client processes holding the connections (for counts above one process's fd limit).
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// Open the connections over TLS (any certificate accepted; SNI localhost).
        #[arg(long)]
        tls: bool,
        /// Speak HTTP/2 with prior knowledge (h2c): one request each, then idle.
        #[arg(long, conflicts_with = "tls")]
        h2c: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile();
    match cli.cmd {
        Cmd::Compare {
            scenario,
            servers,
            coreplex,
            bench_dir,
            conns,
            pipeline,
            rounds,
            duration,
            warmup,
            server_cpu,
            client_cpu,
            idle,
            backend_port,
            json,
            plot,
        } => {
            let o = compare::Options {
                servers,
                coreplex,
                bench_dir,
                conns,
                pipeline,
                rounds,
                duration,
                warmup,
                server_cpu,
                client_cpu,
                idle,
                scenario,
                backend_port,
            };
            let (runs, idle) = compare::run(&o)?;
            if let Some(path) = plot {
                compare::plot(&o, &runs, &path)?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "scenario": scenario, "runs": runs, "idle": idle })
                );
            } else {
                print!("{}", compare::table(&o, &runs, &idle));
            }
        }
        Cmd::Load {
            url,
            connections,
            threads,
            duration,
            rate,
            pipeline,
            method,
            headers,
            body,
            timeout,
            sources,
            cpus,
            json,
            plot,
            reconnect,
            cacert,
            insecure,
            sni,
            tls_version,
            groups,
            tls_sig,
            alpn,
            no_resume,
        } => {
            let cpus = match cpus {
                Some(c) => coreplex_engine::cpus::parse_cpu_list(&c)?,
                None => Vec::new(),
            };
            use std::io::IsTerminal;
            let opts = load::Options {
                url,
                connections,
                threads,
                duration,
                rate,
                depth: pipeline,
                method,
                headers,
                body,
                timeout,
                sources,
                cpus,
                progress: !json
                    && duration >= Duration::from_secs(3)
                    && std::io::stderr().is_terminal(),
                tls: load::tls::TlsOptions {
                    ca: cacert,
                    insecure,
                    sni,
                    version: tls_version,
                    groups,
                    sig: tls_sig,
                    alpn,
                    resume: !no_resume,
                },
                reconnect,
            };
            let report = load::run(&opts)?;
            if let Some(path) = plot {
                let series = plot::Series {
                    name: format!("{} connections, depth {}", report.connections, report.depth),
                    points: report
                        .percentiles
                        .iter()
                        .map(|&(q, us)| (plot::tail_x(q), us / 1000.0))
                        .collect(),
                };
                plot::latency(&path, &format!("latency: {}", report.url), &[series])?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Cmd::WsDeflate {
            messages,
            duration,
            cpu,
            level,
            json,
        } => {
            if let Some(c) = cpu {
                coreplex_engine::cpus::pin_current_thread(c)?;
            }
            let rows = ws_deflate::run(messages, duration, level);
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let r0 = &rows[0];
                println!(
                    "{} JSON messages, {} B of plaintext ({} B on average)\n",
                    r0.messages,
                    r0.plain_bytes,
                    r0.plain_bytes / r0.messages
                );
                println!("| window bits | compressed / plain | compress us/message (reset each) | reset us | new compressor us | inflate us/message with the client's context | context kept B | compressor B | decompressor B |");
                println!("|---|---|---|---|---|---|---|---|---|");
                for r in rows {
                    println!(
                        "| {} | {:.3} | {:.2} | {:.3} | {:.2} | {:.2} | {} | {:.0} | {:.0} |",
                        r.bits,
                        r.compressed_bytes as f64 / r.plain_bytes as f64,
                        r.compress_us,
                        r.reset_us,
                        r.new_us,
                        r.inflate_context_us,
                        r.context_bytes,
                        r.compressor_bytes,
                        r.decompressor_bytes
                    );
                }
            }
        }
        Cmd::TlsBare {
            certs,
            duration,
            cpu,
            json,
            serve,
        } => {
            if let Some(addr) = serve {
                return tls_bare::serve(&certs, addr, cpu);
            }
            let cases = tls_bare::run(&certs, duration, cpu)?;
            if json {
                println!("{}", serde_json::to_string(&cases)?);
            } else {
                println!("| case | handshakes | server us/handshake | client us/handshake |");
                println!("|---|---|---|---|");
                for c in cases {
                    println!(
                        "| {} | {} | {:.1} | {:.1} |",
                        c.name, c.handshakes, c.server_us, c.client_us
                    );
                }
            }
        }
        Cmd::Hold {
            target,
            conns,
            duration,
            sources,
            path,
            active_fraction,
            interval,
            processes,
            tls,
            h2c,
        } => {
            let o = hold::HoldOptions {
                target,
                conns,
                duration,
                sources,
                path,
                active_fraction,
                interval,
                processes,
                tls,
                h2c,
            };
            let (alive, total) = hold::run(&o)?;
            if processes > 1 {
                println!("alive after {duration}s: {alive}/{total} (over {processes} processes)");
            }
            if alive < total {
                std::process::exit(1);
            }
        }
        Cmd::Memprobe {
            pid,
            target,
            counts,
            sources,
            path,
            json,
            processes,
            tls,
            h2c,
        } => {
            if !json {
                println!(
                    "{:>8} {:>12} {:>14} {:>16} {:>18}",
                    "conns", "server RSS", "user B/conn", "kernel delta", "kernel B/conn(*)"
                );
            }
            for n in counts {
                std::thread::sleep(Duration::from_millis(500));
                let before = proc_stats::Snapshot::take(pid)?;
                let (alive, after) = if processes > 1 {
                    let o = hold::HoldOptions {
                        target,
                        conns: n,
                        duration: 3600,
                        sources,
                        path: path.clone(),
                        active_fraction: 0.0,
                        interval: 0,
                        processes,
                        tls,
                        h2c,
                    };
                    let mut kids = hold::spawn_holders(&o)?;
                    std::thread::sleep(Duration::from_millis(500));
                    let after = proc_stats::Snapshot::take(pid)?;
                    for k in kids.iter_mut() {
                        let _ = k.kill();
                        let _ = k.wait();
                    }
                    // Held by the children until measured: count them as opened.
                    (n, after)
                } else {
                    let mut h = if h2c {
                        hold::Holder::open_h2c(target, n, sources, &path)?
                    } else {
                        hold::Holder::open(target, n, sources, &path, tls)?
                    };
                    std::thread::sleep(Duration::from_millis(500));
                    let alive = h.check_alive();
                    let after = proc_stats::Snapshot::take(pid)?;
                    h.close();
                    (alive, after)
                };
                let held = alive.max(1) as f64;
                let user = (after.rss_bytes as f64 - before.rss_bytes as f64) / held;
                let kernel = after.kernel_bytes as f64 - before.kernel_bytes as f64;
                // Both ends of a loopback connection are sockets of this machine.
                let kernel_per = kernel / held / 2.0;
                if json {
                    println!(
                        "{{\"conns\":{n},\"alive\":{alive},\"rss_before\":{},\"rss_after\":{},\"user_bytes_per_conn\":{user:.1},\"kernel_delta\":{kernel},\"kernel_bytes_per_conn\":{kernel_per:.0}}}",
                        before.rss_bytes, after.rss_bytes
                    );
                } else {
                    println!(
                        "{n:>8} {:>12} {user:>14.1} {kernel:>16.0} {kernel_per:>18.0}",
                        after.rss_bytes
                    );
                }
                if alive < n {
                    eprintln!("warning: only {alive}/{n} connections were alive at measurement");
                }
            }
            if !json {
                println!("(*) kernel slab + socket buffer growth per connection, halved: loopback holds both ends");
            }
        }
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 10s, 500ms, 1m"))?;
    if v.is_nan() || v < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
