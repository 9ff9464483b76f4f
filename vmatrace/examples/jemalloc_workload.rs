//! The allocation pattern of `alloc_pattern` with jemalloc
//! (tikv-jemallocator, linked in) as the global allocator; its glibc twin
//! is `glibc_workload`. jemalloc's options come from `_RJEM_MALLOC_CONF`
//! (tikv-jemallocator's prefix), e.g.
//! `retain:false,dirty_decay_ms:0,muzzy_decay_ms:0`; the pattern's knobs
//! are in `alloc_pattern/mod.rs` (`--rounds`, `--hold`, `--threads`, ...).

mod alloc_pattern;

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn main() {
    alloc_pattern::main_with("jemalloc_workload");
}
