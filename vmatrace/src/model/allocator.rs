//! Which allocator a process uses: a shared library in its mappings
//! (libjemalloc, libtcmalloc, libmimalloc), or one linked into its
//! executable, found by its symbols (jemalloc as Rust's tikv-jemallocator
//! links it, with `_rjem_` names, or plain `je_`/`mallctl`), else glibc.

use std::path::Path;

use object::{Object, ObjectSymbol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    Jemalloc,
    Tcmalloc,
    Mimalloc,
    Glibc,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Detected {
    pub allocator: Allocator,
    /// Linked into the executable rather than loaded as a library.
    pub linked_in: bool,
}

impl std::fmt::Display for Detected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.allocator {
            Allocator::Jemalloc => "jemalloc",
            Allocator::Tcmalloc => "tcmalloc",
            Allocator::Mimalloc => "mimalloc",
            Allocator::Glibc => "glibc malloc",
            Allocator::Unknown => "unknown",
        };
        write!(
            f,
            "{name}{}",
            if self.linked_in { " (linked in)" } else { "" }
        )
    }
}

const LIBRARIES: &[(&str, Allocator)] = &[
    ("libjemalloc", Allocator::Jemalloc),
    ("libtcmalloc", Allocator::Tcmalloc),
    ("libmimalloc", Allocator::Mimalloc),
];

impl Detected {
    /// Whether `other`, found later in the same address space, says more:
    /// an allocator library beats one linked in, which beats glibc, which
    /// beats not knowing.
    pub fn is_outranked_by(self, other: Detected) -> bool {
        let rank = |d: Detected| match (d.allocator, d.linked_in) {
            (Allocator::Unknown, _) => 0,
            (Allocator::Glibc, _) => 1,
            (_, true) => 2,
            (_, false) => 3,
        };
        rank(other) > rank(self)
    }
}

/// The allocator a shared library the process mapped stands for, if any:
/// an allocator library, or the C library (glibc malloc, unless more is
/// known).
pub fn of_library(path: &str) -> Option<Detected> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let allocator = LIBRARIES
        .iter()
        .find(|(library, _)| file.starts_with(library))
        .map(|(_, allocator)| *allocator)
        .or_else(|| file.starts_with("libc.so").then_some(Allocator::Glibc))?;
    Some(Detected {
        allocator,
        linked_in: false,
    })
}

/// Detects the allocator from a `/proc/PID/maps` text and the executable.
pub fn detect(maps: &str, exe: Option<&Path>) -> Detected {
    let mut best = Detected {
        allocator: Allocator::Unknown,
        linked_in: false,
    };
    if let Some(allocator) = exe.and_then(linked_in_allocator) {
        best = Detected {
            allocator,
            linked_in: true,
        };
    }
    let libraries = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(of_library);
    for found in libraries {
        if best.is_outranked_by(found) {
            best = found;
        }
    }
    best
}

/// An allocator whose entry points the executable defines itself.
fn linked_in_allocator(exe: &Path) -> Option<Allocator> {
    let data = std::fs::read(exe).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let mut found = None;
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        if !symbol.is_definition() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let allocator =
            if name.starts_with("_rjem_") || name.starts_with("je_") || name == "mallctl" {
                Allocator::Jemalloc
            } else if name == "tc_malloc" {
                Allocator::Tcmalloc
            } else if name == "mi_malloc" {
                Allocator::Mimalloc
            } else {
                continue;
            };
        found = Some(allocator);
        break;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIBC_MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/sbin/mysqld
7f0000000000-7f0000028000 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn later_libraries_say_more_than_earlier_guesses() {
        let unknown = detect("", None);
        let glibc = of_library("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let jemalloc = of_library("/usr/lib/libjemalloc.so.2").unwrap();
        let linked = Detected {
            allocator: Allocator::Jemalloc,
            linked_in: true,
        };
        assert!(unknown.is_outranked_by(glibc));
        assert!(glibc.is_outranked_by(linked));
        assert!(linked.is_outranked_by(jemalloc));
        assert!(!linked.is_outranked_by(glibc), "libc comes with everything");
        assert_eq!(of_library("/usr/lib/libz.so.1"), None);
    }

    #[test]
    fn libraries_in_the_maps_name_the_allocator() {
        let jemalloc = format!(
            "{GLIBC_MAPS}7f1000000000-7f1000100000 r-xp 00000000 fe:01 789 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
        );
        assert_eq!(detect(&jemalloc, None).allocator, Allocator::Jemalloc);
        assert_eq!(detect(GLIBC_MAPS, None).allocator, Allocator::Glibc);
        assert_eq!(detect("", None).allocator, Allocator::Unknown);
        assert_eq!(detect(GLIBC_MAPS, None).to_string(), "glibc malloc");
    }

    #[test]
    fn this_test_binary_uses_glibc() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("own maps");
        let detected = detect(&maps, Some(Path::new("/proc/self/exe")));
        assert_eq!(detected.allocator, Allocator::Glibc, "{detected}");
    }
}
