//! Any text at all, read as a saved maps or smaps file and explained as
//! `vmatrace maps FILE` does: an error or an anatomy, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmatrace::model::{anatomy, maps_file};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(vmas) = maps_file::parse(text)
    {
        let explained = anatomy::classify(&vmas, text, None, 65530, 3);
        assert_eq!(
            explained.groups.iter().map(|g| g.vmas).sum::<u64>(),
            explained.vmas
        );
    }
});
