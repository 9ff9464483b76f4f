//! The guest's initramfs: a static busybox, the kernel modules that reaching
//! the shared root needs, and `/init` (a busybox shell script), written as
//! an uncompressed `newc` cpio archive (no cpio or gzip needed on the host;
//! the kernel takes it as is).

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// What `/init` needs that a cloud kernel may build as a module: the
/// virtio PCI transport, virtiofs (with fuse) for the host's root, overlay
/// for a writable layer over it. Built-in ones are skipped; dependencies
/// are added from each module's own `depends=`.
const WANTED_MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay"];

/// PID 1. It mounts the host's root (virtiofs tag `hostroot`, read-only)
/// under a tmpfs overlay, moves into it and runs the script named by
/// `guest.script=` on the kernel command line, its output and a final
/// status marker going to the second serial port (ttyS1) so kernel
/// messages on the console (ttyS0) never mix with it. `guest.rw=DIR`
/// mounts the writable share (tag `hostrw`) at DIR.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
fail() { echo "<<guest-error $*>>" > $out; echo "guest: $*"; poweroff -f; }
for m in $(cat /modules/order); do insmod /modules/$m || fail "insmod $m"; done
for word in $(cat /proc/cmdline); do
    case $word in
        guest.script=*) script=${word#guest.script=} ;;
        guest.rw=*) rw=${word#guest.rw=} ;;
    esac
done
mount -t virtiofs -o ro hostroot /lower || fail "mounting the host's root (virtiofs)"
mount -t tmpfs -o mode=755 tmpfs /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "overlay"
if [ -n "$rw" ]; then
    mkdir -p /newroot$rw && mount -t virtiofs hostrw /newroot$rw || fail "writable share $rw"
fi
for d in proc sys dev; do mount --move /$d /newroot/$d; done
chroot /newroot /bin/sh -c '
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
echo "<<guest-booted $(cut -d" " -f1 /proc/uptime)>>" > '$out'
sh '"$script"' > '$out' 2>&1 < /dev/null
status=$?
echo "" > '$out'
echo "<<guest-exit-status $status $(cut -d" " -f1 /proc/uptime)>>" > '$out'
'
sync
poweroff -f
"#;

/// Builds the initramfs for the kernel whose modules are in `modules`.
pub fn build(modules: &Path, busybox: &Path, out: &Path) -> Result<()> {
    let mut archive = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules",
    ] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    archive.char_device("dev/console", 5, 1);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
    );
    let mut order = String::new();
    for (name, bytes) in modules_in_load_order(modules)? {
        let file = format!("{name}.ko");
        archive.file(&format!("modules/{file}"), 0o644, &bytes);
        order.push_str(&file);
        order.push('\n');
    }
    archive.file("modules/order", 0o644, order.as_bytes());
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, archive.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out)?;
    Ok(())
}

/// The wanted modules that are not built in, dependencies first, each
/// decompressed (insmod of busybox reads plain `.ko` files).
fn modules_in_load_order(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let builtin: HashSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .with_context(|| format!("reading {}/modules.builtin", dir.display()))?
        .lines()
        .filter_map(module_name)
        .collect();
    let mut files = HashMap::new();
    index_modules(dir, &mut files)?;
    let mut ordered = Vec::new();
    let mut seen = HashSet::new();
    for name in WANTED_MODULES {
        add_module(name, &builtin, &files, &mut seen, &mut ordered)?;
    }
    Ok(ordered)
}

fn add_module(
    name: &str,
    builtin: &HashSet<String>,
    files: &HashMap<String, PathBuf>,
    seen: &mut HashSet<String>,
    ordered: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let name = name.replace('-', "_");
    if builtin.contains(&name) || !seen.insert(name.clone()) {
        return Ok(());
    }
    let path = files
        .get(&name)
        .with_context(|| format!("kernel module {name} is neither built in nor shipped"))?;
    let bytes = decompress(path)?;
    for dependency in modinfo_depends(&bytes) {
        add_module(&dependency, builtin, files, seen, ordered)?;
    }
    ordered.push((name, bytes));
    Ok(())
}

/// `kernel/fs/fuse/virtiofs.ko[.xz]` -> `virtiofs`, `-` spelled `_` as the
/// kernel does.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (file.contains(".ko") && !stem.is_empty()).then(|| stem.replace('-', "_"))
}

fn index_modules(dir: &Path, files: &mut HashMap<String, PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, files)?;
        } else if let Some(name) = path.to_str().and_then(module_name) {
            files.insert(name, path);
        }
    }
    Ok(())
}

/// Debian compresses modules with xz (6.x) or not at all (5.10); zstd is
/// handled too in case a later kernel switches.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} (install it: apt-get install {tool})"))?;
    if !out.status.success() {
        bail!("{tool} -dc {name} failed");
    }
    Ok(out.stdout)
}

/// The `depends=a,b` entry of a module's `.modinfo` section: entries there
/// are NUL-separated `key=value` strings, so a NUL-delimited search finds
/// it without parsing the ELF file.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `path` is an ELF executable without a program interpreter,
/// i.e. one that runs without the host's libraries.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // 64-bit little-endian only: the host is x86-64.
    if elf.get(..6) != Some(&b"\x7fELF\x02\x01"[..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum as usize).all(|i| {
        let at = phoff as usize + i * phentsize as usize;
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    })
}

/// A `newc` cpio archive in memory.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major, minor));
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // with its NUL
            0,                     // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            write!(self.bytes, "{field:08x}").expect("writing to a Vec");
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.bytes
    }
}
