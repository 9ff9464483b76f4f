//! The jemalloc twin of `workload malloc`: the same allocation pattern, with
//! jemalloc (tikv-jemallocator, linked in) as the global allocator. Its
//! options come from `_RJEM_MALLOC_CONF` (tikv-jemallocator's prefix), e.g.
//! `retain:false,dirty_decay_ms:0,muzzy_decay_ms:0`.

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn say(text: &str) {
    let line = format!("jemalloc_workload: {text}\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    say(&format!("ready pid={}", std::process::id()));
    // Blocks of many sizes, freed in an order that leaves holes: jemalloc
    // maps extents and gives pages back as they empty.
    for round in 0..rounds {
        let blocks: Vec<Vec<u8>> = (0..64)
            .map(|i| vec![1u8; 4096 * (1 + (i * 7 + round) % 96)])
            .collect();
        let kept: Vec<Vec<u8>> = blocks
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|(_, b)| b)
            .collect();
        std::hint::black_box(&kept);
    }
    say(&format!("done rounds={rounds}"));
    if std::env::args().any(|a| a == "--pause") {
        // Alive until told, so a tracer can still symbolize its stacks.
        let mut byte = 0u8;
        // SAFETY: reading one byte into a valid stack location.
        unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
    }
}
