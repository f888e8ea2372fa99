//! The command line: `coreplex run [-c FILE]`, `coreplex check -c FILE`, `coreplex upgrade` and
//! `coreplex status` (to the running process's control socket), and `coreplex tune`.

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "coreplex",
    version,
    about = "io_uring thread-per-core server engine and reverse proxy"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (with no -c, the embedded default: a hello listener on 127.0.0.1:8080 and
    /// the admin endpoint on 127.0.0.1:9090).
    Run {
        /// Configuration file (TOML).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// CPUs to run shards on, one shard each, e.g. "0-3,6" (overrides global.cpus).
        #[arg(long)]
        cpus: Option<String>,
        /// Number of shards (overrides global.shards).
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Check a configuration file and report every error with its key path.
    Check {
        /// Configuration file (TOML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Binary upgrade of the running process: it starts the binary now at its path (same
    /// arguments, so the configuration file is read again), hands it the listening sockets, and
    /// drains once the new process serves. Exits 0 when the new process serves.
    Upgrade {
        /// The running process's configuration file (for global.control_socket).
        #[arg(short = 'c', long = "config", required_unless_present = "socket")]
        config: Option<PathBuf>,
        /// The control socket (instead of reading it from --config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// The running process's pid, start time and state (running, upgrading, draining).
    Status {
        /// The running process's configuration file (for global.control_socket).
        #[arg(short = 'c', long = "config", required_unless_present = "socket")]
        config: Option<PathBuf>,
        /// The control socket (instead of reading it from --config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Diagnose this machine's limits for a number of connections; exits 1 if it cannot hold them.
    Tune {
        /// Connections to plan for (default: global.max_connections x shards of --config, else 1000000).
        #[arg(long)]
        target_connections: Option<u64>,
        /// Configuration file to plan for (shards, backlog, max_connections).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Raise the sysctls that fall short (root); `tuning/apply.sh --revert` undoes it.
        #[arg(long)]
        apply: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(cli.log_level)
        .with_target(false)
        .init();
    match cli.cmd {
        Command::Run {
            config,
            cpus,
            shards,
        } => crate::run::run(config.as_deref(), cpus.as_deref(), shards),
        Command::Check { config } => check(&config),
        Command::Upgrade { config, socket } => control(config, socket, "upgrade"),
        Command::Status { config, socket } => control(config, socket, "status"),
        Command::Tune {
            target_connections,
            config,
            apply,
        } => {
            let cfg = match config.as_deref().map(load_file).transpose() {
                Ok(c) => c,
                Err(code) => return code,
            };
            crate::tune::run(target_connections, cfg.as_ref(), apply)
        }
    }
}

/// Reads a config file and validates it; prints every error.
pub fn load_file(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    let loaded = config::load_in(&text, base);
    if let Ok(c) = &loaded {
        for w in &c.warnings {
            eprintln!("warning: {}: {w}", path.display());
        }
    }
    loaded.map_err(|errors| {
        for e in &errors {
            eprintln!("error: {}: {e}", path.display());
        }
        eprintln!(
            "{}: {} error{} found",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(2)
    })
}

/// Sends `command` to the running process's control socket and prints its reply; exit 0 on `ok`.
fn control(config: Option<PathBuf>, socket: Option<PathBuf>, command: &str) -> ExitCode {
    let path = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => {
            let cfg = match load_file(&c) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            match cfg.global.control_socket {
                Some(p) => p,
                None => {
                    eprintln!(
                        "error: {}: global.control_socket is not set, so the running process has no control socket (send it SIGUSR2 to upgrade)",
                        c.display()
                    );
                    return ExitCode::from(2);
                }
            }
        }
        (None, None) => unreachable!("clap requires --config or --socket"),
    };
    match crate::control_socket::request(&path, command) {
        Ok(reply) => {
            let reply = reply.trim_end();
            if reply.starts_with("ok") {
                println!("{reply}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{reply}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "error: no running coreplex answers on {}: {e}",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_file(path) {
        Ok(c) => {
            let routes: usize = c.listeners.iter().map(|l| l.routes.len()).sum();
            let servers: usize = c.backends.iter().map(|b| b.servers.len()).sum();
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            println!(
                "{}: configuration OK ({} listener{}, {} route{}, {} backend{} with {} server{}, {} shard{}, admin {})",
                path.display(),
                c.listeners.len(),
                plural(c.listeners.len()),
                routes,
                plural(routes),
                c.backends.len(),
                plural(c.backends.len()),
                servers,
                plural(servers),
                c.global.cpus.len(),
                plural(c.global.cpus.len()),
                c.admin.map_or("off".to_string(), |a| a.to_string()),
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
