//! The runtime grows the descriptor table once at start to what its shards may hold (so that no
//! shard stalls on a table growth under load: in a threaded process each growth waits for an
//! RCU grace period). Checked through `FDSize` in /proc/self/status.

mod common;

use coreplex_engine::{CloseReason, ConnCx, Id, Runtime, Service};

struct Nothing(coreplex_engine::Plain);

impl Service for Nothing {
    type Conn = ();
    type Busy = ();
    type Stats = ();
    type Transport = coreplex_engine::Plain;

    fn transport(&mut self) -> &mut coreplex_engine::Plain {
        &mut self.0
    }
    fn on_accept(&mut self, _: &mut ConnCx<'_, ()>, _: &mut (), _: usize) {}
    fn on_input(&mut self, _: &mut ConnCx<'_, ()>, _: &mut (), input: &[u8]) -> usize {
        input.len()
    }
    fn on_timer(&mut self, _: &mut ConnCx<'_, ()>, _: &mut ()) {}
    fn on_shutdown(&mut self, cx: &mut ConnCx<'_, ()>, _: &mut ()) {
        cx.close(CloseReason::Shutdown);
    }
    fn on_close(&mut self, _: Id, _: (), _: CloseReason) {}
    fn stats(&mut self) {}
}

fn fd_table_size() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn the_descriptor_table_is_sized_for_every_connection_at_start() {
    let mut cfg = common::one_shard();
    cfg.shard.max_connections = 3000;
    cfg.shard.max_outbound = 1000;
    // The open-files limit caps it (this machine's hard limit is 20,000).
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let want = 4000u64.min(soft);
    let rt = Runtime::start(cfg, |_| Nothing(coreplex_engine::Plain)).expect("runtime starts");
    let size = fd_table_size();
    assert!(
        size >= want,
        "FDSize {size}, below the {want} the shard may hold"
    );
    drop(rt);
}
