//! Black-box end-to-end tests of the `coreplex` binary: each test starts its own server process
//! on `127.0.0.1:0` through [`harness::Server`] and talks to it over raw sockets, curl, the admin
//! endpoint, `/proc` and signals. Run `tests/setup.sh` first on a fresh machine (it installs curl).

mod access_log;
mod backend;
mod cli;
mod forwarding;
mod h2;
mod h2_backend;
mod h2_backend_http1;
mod h2_proxy;
mod harness;
mod http1;
mod malformed;
mod metrics;
mod proxy;
mod proxy_pool;
mod proxy_protocol;
mod runtime;
mod shards;
mod shutdown;
mod stats_page;
mod timeouts;
mod tls;
mod tuning;
mod tunnel;
mod upgrade;
mod websocket;
mod ws_proxy;
