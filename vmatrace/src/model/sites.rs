//! Call sites of the mapping calls, ranked by what they did to the VMA
//! count: `report --top-sites` and the live view's top sites.

use std::collections::HashMap;

use serde::Serialize;
use vmatrace_common::Event;

use crate::{
    model::detect,
    model::processes::Applied,
    stacks::symbols::{Frame, Stack},
};

/// Call sites, by the first frame outside the C library and the loader:
/// where in the program (or its allocator) a mapping call came from.
#[derive(Default)]
pub struct Sites {
    by_site: HashMap<String, SiteStats>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteStats {
    pub calls: u64,
    pub vmas_added: i64,
    pub splits: u64,
    pub enomem: u64,
    /// The first frame outside the allocator too, in the first stack
    /// seen from this site: the code that drove the allocator to the call
    /// (the site itself when it is no allocator frame).
    pub caller: Option<String>,
    /// The first stack seen from this site.
    #[serde(rename = "stack")]
    pub example: Option<Stack>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RankedSite {
    pub site: String,
    #[serde(flatten)]
    pub stats: SiteStats,
}

impl Sites {
    pub fn add(&mut self, stack: &Stack, event: &Event, applied: &Applied) {
        let stats = self.by_site.entry(site_of(stack)).or_default();
        stats.calls += 1;
        stats.vmas_added += detect::own_delta(event).unwrap_or(0).max(0);
        stats.splits += u64::from(applied.flags.split);
        stats.enomem += u64::from(applied.flags.enomem);
        stats.example.get_or_insert_with(|| stack.clone());
        stats.caller.get_or_insert_with(|| caller_of(stack));
    }

    /// The `n` sites that added the most VMAs (then SPLITs, ENOMEMs).
    pub fn top(&self, n: usize) -> Vec<RankedSite> {
        let mut ranked: Vec<(&String, &SiteStats)> = self.by_site.iter().collect();
        ranked.sort_by(|a, b| {
            (b.1.vmas_added, b.1.splits, b.1.enomem, a.0).cmp(&(
                a.1.vmas_added,
                a.1.splits,
                a.1.enomem,
                b.0,
            ))
        });
        ranked
            .into_iter()
            .take(n)
            .map(|(site, stats)| RankedSite {
                site: site.clone(),
                stats: stats.clone(),
            })
            .collect()
    }
}

/// The first frame outside libc and the loader: where the program (or
/// its allocator) made the call. Frames nothing is known of (a walk through
/// code without frame pointers ends in such) are passed over; a stack
/// entirely inside libc and the loader (the loader's own mappings) is
/// named by its outermost known frame.
pub fn site_of(stack: &Stack) -> String {
    first_outside(stack, |_| false)
}

/// The site, and past an allocator the code that drove it
/// (`libjemalloc.so.2+0x94cca <- decrRefCount`): what a folded line of
/// SPLITs names, so that a storm inside an unnamed allocator frame still
/// says whose it is.
pub fn site_and_caller(stack: &Stack) -> String {
    let site = site_of(stack);
    match caller_of(stack) {
        caller if caller == site || caller == "??" => site,
        caller => format!("{site} <- {caller}"),
    }
}

/// The first frame outside libc, the loader and the allocator (jemalloc,
/// tcmalloc, mimalloc, glibc malloc): the code that asked for memory.
pub fn caller_of(stack: &Stack) -> String {
    first_outside(stack, is_allocator)
}

fn first_outside(stack: &Stack, also_skip: impl Fn(&Frame) -> bool) -> String {
    let known = || stack.frames.iter().filter(|f| f.module.is_some());
    known()
        .find(|f| !f.module.as_deref().is_some_and(is_libc_or_loader) && !also_skip(f))
        .or_else(|| known().next_back())
        .map(name_of)
        .unwrap_or_else(|| "??".into())
}

fn name_of(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => {
            // Unnamed: its place in its file, the same in every process.
            let file = module.rsplit('/').next().unwrap_or(module);
            format!("{file}+{:#x}", f.offset)
        }
        (None, None) => format!("{:#x}", f.addr),
    }
}

fn is_libc_or_loader(module: &str) -> bool {
    let file = module.rsplit('/').next().unwrap_or(module);
    file.starts_with("libc.so") || file.starts_with("ld-linux") || file.starts_with("libc-")
}

/// An allocator's frame: in an allocator's library, or a function of one
/// linked into the program (jemalloc's `je_`/`_rjem_` names, tcmalloc's
/// `tc_`, mimalloc's `mi_`, the C allocation entry points).
fn is_allocator(f: &Frame) -> bool {
    const LIBRARIES: &[&str] = &["libjemalloc", "libtcmalloc", "libmimalloc"];
    const ENTRY_POINTS: &[&str] = &[
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "sdallocx",
        "mallocx",
        "rallocx",
        "dallocx",
    ];
    let file = f
        .module
        .as_deref()
        .map(|m| m.rsplit('/').next().unwrap_or(m));
    if file.is_some_and(|file| LIBRARIES.iter().any(|l| file.starts_with(l))) {
        return true;
    }
    let Some(function) = f.function.as_deref() else {
        return false;
    };
    let bare = function.trim_start_matches('_');
    [
        "je_", "rjem_", "tc_", "mi_", "jemalloc", "tcmalloc", "mimalloc",
    ]
    .iter()
    .any(|p| bare.starts_with(p))
        || function.contains("jemalloc")
        || ENTRY_POINTS.contains(&bare)
        || bare.starts_with("int_free")
        || bare.starts_with("int_malloc")
        || bare.starts_with("libc_malloc")
        || bare.starts_with("libc_free")
}

/// Call sites by pid, shared between the printer and the `--top` view.
pub type SharedSites = std::sync::Arc<std::sync::Mutex<HashMap<u32, Sites>>>;

#[cfg(test)]
mod tests {
    use vmatrace_common::{Call, EventKind};

    use super::*;
    use crate::model::detect::Flags;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0x1000,
            function: Some(function.into()),
            offset: 0,
            module: Some(module.into()),
            file: None,
            line: None,
            build_id: None,
        }
    }

    fn munmap(delta: i32) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.locked = 1;
        event.vmas_before = 10;
        event.vmas_after = 10 + delta;
        event
    }

    #[test]
    fn sites_are_ranked_by_vmas_added_past_libc() {
        let split = Applied {
            flags: Flags {
                split: true,
                ..Flags::default()
            },
            count: Some(11),
            mapping: None,
            process_comm: None,
            change: None,
        };
        let plain = Applied {
            flags: Flags::default(),
            ..split.clone()
        };
        let jemalloc = Stack::new(vec![
            frame("__munmap", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("je_pages_unmap", "/app"),
            frame("free", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            frame("free_whole", "/app"),
        ]);
        let free = Stack::new(vec![frame("free_whole", "/app")]);
        let mut sites = Sites::default();
        sites.add(&free, &munmap(-1), &plain);
        sites.add(&jemalloc, &munmap(1), &split);
        sites.add(&jemalloc, &munmap(1), &split);
        let top = sites.top(5);
        assert_eq!(top[0].site, "je_pages_unmap");
        assert_eq!(
            (
                top[0].stats.vmas_added,
                top[0].stats.splits,
                top[0].stats.calls
            ),
            (2, 2, 2)
        );
        assert_eq!(top[0].stats.caller.as_deref(), Some("free_whole"));
        assert_eq!(top[1].site, "free_whole");
        assert_eq!(top[1].stats.vmas_added, 0);
        assert_eq!(sites.top(1).len(), 1);
    }

    #[test]
    fn unknown_frames_are_passed_over_and_loader_stacks_named_inside() {
        let loader = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        let mut garbage = frame("x", "");
        garbage.function = None;
        garbage.module = None;
        let stack = Stack::new(vec![
            frame("__mmap64", loader),
            frame("_dl_map_object", loader),
            garbage,
        ]);
        assert_eq!(site_of(&stack), "_dl_map_object");
        assert_eq!(site_of(&Stack::new(Vec::new())), "??");
    }

    /// A fold line names the code past the allocator, not only the
    /// allocator's (often unnamed) frame.
    #[test]
    fn a_site_inside_the_allocator_is_told_with_its_caller() {
        let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
        let mut unnamed = frame("x", jemalloc);
        unnamed.function = None;
        unnamed.offset = 0x94cca;
        let through_jemalloc = Stack::new(vec![
            frame("__munmap", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            unnamed,
            frame("decrRefCount", "/usr/bin/redis-check-rdb"),
        ]);
        assert_eq!(
            site_and_caller(&through_jemalloc),
            "libjemalloc.so.2+0x94cca <- decrRefCount"
        );
        let own = Stack::new(vec![frame("punch_hole", "/app")]);
        assert_eq!(site_and_caller(&own), "punch_hole");
    }
}
