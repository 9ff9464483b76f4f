//! The allocation pattern of `alloc_pattern` with glibc malloc (Rust's
//! system allocator): the twin of `jemalloc_workload`. glibc's options come
//! from `GLIBC_TUNABLES` (e.g. `glibc.malloc.mmap_threshold=131072`); the
//! pattern's knobs are in `alloc_pattern/mod.rs`.

mod alloc_pattern;

fn main() {
    alloc_pattern::main_with("glibc_workload");
}
