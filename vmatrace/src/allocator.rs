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

/// Detects the allocator from a `/proc/PID/maps` text and the executable.
pub fn detect(maps: &str, exe: Option<&Path>) -> Detected {
    let paths = || maps.lines().filter_map(|l| l.split_whitespace().nth(5));
    for (library, allocator) in LIBRARIES {
        if paths().any(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with(library))) {
            return Detected {
                allocator: *allocator,
                linked_in: false,
            };
        }
    }
    if let Some(allocator) = exe.and_then(linked_in_allocator) {
        return Detected {
            allocator,
            linked_in: true,
        };
    }
    let glibc = paths().any(|p| {
        p.rsplit('/')
            .next()
            .is_some_and(|f| f.starts_with("libc.so"))
    });
    Detected {
        allocator: if glibc {
            Allocator::Glibc
        } else {
            Allocator::Unknown
        },
        linked_in: false,
    }
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

/// The allocator of a live process.
pub fn detect_pid(pid: u32) -> Option<Detected> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(detect(&maps, Some(Path::new(&format!("/proc/{pid}/exe")))))
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
        let detected = detect_pid(std::process::id()).expect("own maps");
        assert_eq!(detected.allocator, Allocator::Glibc, "{detected}");
    }
}
