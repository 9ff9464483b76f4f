//! The allocation pattern the allocator workloads share
//! (`jemalloc_workload` links jemalloc, `glibc_workload` uses glibc malloc;
//! everything else is this code), with knobs to vary it:
//!
//!   --rounds N     rounds (default 200)
//!   --blocks N     blocks allocated per round (default 64)
//!   --max-kib K    the largest block in KiB; sizes run over 4 KiB steps up
//!                  to it (default 384)
//!   --keep-every N keep every N-th block of a round, free the rest at once
//!                  (default 3)
//!   --hold N       rounds a kept block lives before it is freed (default 0:
//!                  freed at the end of its round). Long-lived blocks pin the
//!                  allocator's extents and let holes accumulate.
//!   --threads N    run the rounds on N threads at once (default 1): each
//!                  thread gets its own arena in either allocator
//!   --pause        stay alive after the last round until a stdin line, so a
//!                  tracer can still read /proc
//!
//! Prints `ready pid=N` at the start and `done rounds=N` at the end, on
//! stderr.

use std::collections::VecDeque;

pub struct Pattern {
    pub rounds: usize,
    pub blocks: usize,
    pub max_kib: usize,
    pub keep_every: usize,
    pub hold: usize,
    pub threads: usize,
    pub pause: bool,
}

impl Pattern {
    pub fn from_args() -> Result<Pattern, String> {
        let mut pattern = Pattern {
            rounds: 200,
            blocks: 64,
            max_kib: 384,
            keep_every: 3,
            hold: 0,
            threads: 1,
            pause: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--pause" {
                pattern.pause = true;
                continue;
            }
            let mut value = || -> Result<usize, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{arg} needs a number"))
            };
            match arg.as_str() {
                "--rounds" => pattern.rounds = value()?,
                "--blocks" => pattern.blocks = value()?,
                "--max-kib" => pattern.max_kib = value()?.max(4),
                "--keep-every" => pattern.keep_every = value()?.max(1),
                "--hold" => pattern.hold = value()?,
                "--threads" => pattern.threads = value()?.max(1),
                // A bare number is the rounds, as before.
                other => {
                    pattern.rounds = other
                        .parse()
                        .map_err(|_| format!("unknown argument {other:?}"))?
                }
            }
        }
        Ok(pattern)
    }

    /// Blocks of many sizes, most freed at once and some kept for `hold`
    /// rounds, in an order that leaves holes in the allocator's mappings.
    fn run_rounds(&self, seed: usize) {
        let steps = (self.max_kib / 4).max(1);
        let mut held: VecDeque<Vec<Vec<u8>>> = VecDeque::new();
        for round in 0..self.rounds {
            let blocks: Vec<Vec<u8>> = (0..self.blocks)
                .map(|i| vec![1u8; 4096 * (1 + (i * 7 + round + seed) % steps)])
                .collect();
            let kept: Vec<Vec<u8>> = blocks
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % self.keep_every == 0)
                .map(|(_, b)| b)
                .collect();
            std::hint::black_box(&kept);
            held.push_back(kept);
            while held.len() > self.hold {
                held.pop_front();
            }
        }
    }

    pub fn run(&self, name: &str) {
        say(name, &format!("ready pid={}", std::process::id()));
        std::thread::scope(|scope| {
            for seed in 1..self.threads {
                scope.spawn(move || self.run_rounds(seed * 13));
            }
            self.run_rounds(0);
        });
        say(name, &format!("done rounds={}", self.rounds));
        if self.pause {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid stack location.
            unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        }
    }
}

fn say(name: &str, text: &str) {
    let line = format!("{name}: {text}\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

pub fn main_with(name: &str) {
    match Pattern::from_args() {
        Ok(pattern) => pattern.run(name),
        Err(e) => {
            say(name, &e);
            std::process::exit(2);
        }
    }
}
