//! Any bytes at all, read as a trace file and played through the same
//! state, detectors and export as `vmatrace report`/`export`: no panic, no
//! unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmatrace::{readback, tracefile::reader};

fuzz_target!(|data: &[u8]| {
    if let Ok(trace) = reader::parse(data, "fuzz") {
        let _ = readback::chrome_trace(&trace);
    }
});
