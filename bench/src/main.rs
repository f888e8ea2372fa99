//! coreplex-bench: measurement tools for coreplex and its peers.
//!
//! - `hold`: open N keep-alive connections spread over source addresses 127.0.0.2..., send one
//!   request on each, keep them idle for a while, report how many stayed alive, close with linger 0.
//! - `memprobe`: for a server PID, hold N connections at each of several counts and report the
//!   server's RSS growth and the kernel's socket memory growth per connection.

mod hold;
mod proc_stats;

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
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile();
    match cli.cmd {
        Cmd::Hold {
            target,
            conns,
            duration,
            sources,
            path,
        } => {
            let mut h = hold::Holder::open(target, conns, sources, &path)?;
            println!("opened {} connections ({} failed)", h.alive(), h.failed);
            std::thread::sleep(Duration::from_secs(duration));
            let alive = h.check_alive();
            println!("alive after {duration}s: {alive}/{conns}");
            h.close();
            if alive < conns {
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
                let mut h = hold::Holder::open(target, n, sources, &path)?;
                std::thread::sleep(Duration::from_millis(500));
                let alive = h.check_alive();
                let after = proc_stats::Snapshot::take(pid)?;
                h.close();
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

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
