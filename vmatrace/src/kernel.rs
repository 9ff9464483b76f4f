//! What vmatrace needs to know about the running kernel before it loads its
//! programs: struct offsets and tracepoint arguments from BTF, field offsets
//! of the tracepoints it reads, tracefs, and the VMA limit.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

use crate::error::Failure;

pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// What the programs need to know of the kernel's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructOffsets {
    /// `offsetof(struct task_struct, mm)`
    pub task_mm: u64,
    /// `offsetof(struct mm_struct, map_count)`, through anonymous members.
    pub mm_map_count: u64,
    /// mmap_lock_acquire_returned still passes the memcg path (before 6.12).
    pub lock_tracepoint_has_memcg_path: bool,
}

/// Reads the member offsets from a BTF file (normally the running kernel's).
pub fn struct_offsets(btf_path: &Path) -> Result<StructOffsets, Failure> {
    if !btf_path.exists() {
        return Err(Failure::environment(anyhow!(
            "{} does not exist: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y is needed), \
             and vmatrace needs it to find mm_struct.map_count",
            btf_path.display()
        )));
    }
    let bytes = fs::read(btf_path)
        .with_context(|| format!("reading BTF from {}", btf_path.display()))
        .map_err(Failure::environment)?;
    let types = TypeInformation::new(&BtfBytes(bytes))
        .map_err(|e| anyhow!("cannot parse BTF in {}: {e:?}", btf_path.display()))
        .map_err(Failure::environment)?;
    let offset = |type_name: &str, member: &str| -> Result<u64> {
        let id = types
            .id_of(type_name)
            .ok_or_else(|| anyhow!("BTF in {} has no type {type_name}", btf_path.display()))?;
        match types.offset_of(id, member) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes as u64),
            Ok((_, Offset::BitOffsetAndSize(..))) => {
                bail!("{type_name}.{member} is a bit field")
            }
            Err(e) => bail!("BTF has no {type_name}.{member}: {e:?}"),
        }
    };
    let lock_tracepoint_has_memcg_path = match raw_tracepoint_arity(
        &types,
        "mmap_lock_acquire_returned",
    ) {
        Some(3) => false, // (mm, write, success)
        Some(4) => true,  // (mm, memcg_path, write, success)
        other => {
            return Err(Failure::environment(anyhow!(
                "unexpected arguments of tracepoint mmap_lock_acquire_returned in BTF: {other:?}"
            )));
        }
    };
    Ok(StructOffsets {
        task_mm: offset("task_struct", "mm").map_err(Failure::environment)?,
        mm_map_count: offset("mm_struct", "map_count").map_err(Failure::environment)?,
        lock_tracepoint_has_memcg_path,
    })
}

/// How many arguments a raw tracepoint passes: BTF describes it as
/// `typedef void (*btf_trace_<name>)(void *__data, <TP_PROTO args>)`.
fn raw_tracepoint_arity(types: &TypeInformation, name: &str) -> Option<usize> {
    let id = types.id_of(&format!("btf_trace_{name}"))?;
    let TypeVariant::Typedef(typedef) = types.from_id(id)? else {
        return None;
    };
    let TypeVariant::Ptr(ptr) = types.from_id(*typedef.tid())? else {
        return None;
    };
    let TypeVariant::FuncProto(proto) = types.from_id(*ptr.tid())? else {
        return None;
    };
    proto.parameter_list().len().checked_sub(1)
}

/// A BTF blob in memory, for btfparse.
struct BtfBytes(Vec<u8>);

impl Readable for BtfBytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.checked_add(buffer.len());
        match end.and_then(|end| self.0.get(start..end)) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// Byte offsets of the named fields in a tracepoint `format` file.
pub fn format_offsets(format: &str) -> HashMap<String, u64> {
    let mut offsets = HashMap::new();
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let declaration = parts.next().unwrap_or("").trim();
        let offset = parts
            .next()
            .and_then(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.parse::<u64>().ok());
        // The field name is the declaration's last word, minus array brackets.
        let name = declaration
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("");
        if let (Some(offset), false) = (offset, name.is_empty()) {
            offsets.insert(name.to_string(), offset);
        }
    }
    offsets
}

/// Field offsets of the lifecycle tracepoints the programs read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// 0: the kernel's sched_process_exit has no `group_dead`.
    pub exit_group_dead: u64,
    pub newtask_pid: u64,
    pub newtask_clone_flags: u64,
}

pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointOffsets, Failure> {
    let read = |event: &str| -> Result<HashMap<String, u64>, Failure> {
        let path = tracefs.join("events").join(event).join("format");
        let text = fs::read_to_string(&path)
            .with_context(|| format!("cannot read the tracepoint format {}", path.display()))
            .map_err(Failure::environment)?;
        Ok(format_offsets(&text))
    };
    let field = |fields: &HashMap<String, u64>, event: &str, name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| Failure::environment(anyhow!("tracepoint {event} has no field {name}")))
    };
    let exit = read("sched/sched_process_exit")?;
    let newtask = read("task/task_newtask")?;

    Ok(TracepointOffsets {
        exit_group_dead: exit.get("group_dead").copied().unwrap_or(0),
        newtask_pid: field(&newtask, "task_newtask", "pid")?,
        newtask_clone_flags: field(&newtask, "task_newtask", "clone_flags")?,
    })
}

/// Makes sure tracefs is mounted at [`TRACEFS`], mounting it if needed.
pub fn ensure_tracefs() -> Result<PathBuf, Failure> {
    let root = PathBuf::from(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root);
    }
    let debugfs_tracing = PathBuf::from("/sys/kernel/debug/tracing");
    if debugfs_tracing.join("events").is_dir() {
        return Ok(debugfs_tracing);
    }
    mount_tracefs(&root).map_err(|e| {
        Failure::environment(anyhow!(
            "tracefs is not mounted and mounting it failed ({e}); mount it with \
             `mount -t tracefs tracefs {TRACEFS}` and try again"
        ))
    })?;
    if !root.join("events").is_dir() {
        return Err(Failure::environment(anyhow!(
            "mounted tracefs on {TRACEFS} but it has no events/ directory"
        )));
    }
    Ok(root)
}

fn mount_tracefs(at: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let target = CString::new(at.as_os_str().as_encoded_bytes())?;
    let fstype = c"tracefs";
    // SAFETY: every pointer is a valid NUL-terminated string for the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `vm.max_map_count`, the per-process VMA limit.
pub fn max_map_count() -> Result<u64> {
    let text =
        fs::read_to_string(MAX_MAP_COUNT).with_context(|| format!("reading {MAX_MAP_COUNT}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{MAX_MAP_COUNT} holds {text:?}, not a number"))
}

/// Offset to add to a CLOCK_MONOTONIC timestamp (what `bpf_ktime_get_ns`
/// returns) to get nanoseconds since the Unix epoch.
pub fn monotonic_to_realtime_offset() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec to write to.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let mono = now(libc::CLOCK_MONOTONIC);
    let real = now(libc::CLOCK_REALTIME);
    real - mono
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_offsets_reads_names_and_offsets() {
        let format = "name: sched_process_exit\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:const void * ptr;\toffset:40;\tsize:8;\tsigned:0;\n\
            \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        let offsets = format_offsets(format);
        assert_eq!(offsets["comm"], 8);
        assert_eq!(offsets["pid"], 24);
        assert_eq!(offsets["group_dead"], 32);
        assert_eq!(offsets["ptr"], 40);
    }

    #[test]
    fn running_kernel_btf_has_the_offsets() {
        let offsets = struct_offsets(Path::new(DEFAULT_BTF_PATH)).expect("offsets");
        assert!(offsets.task_mm > 0);
        assert!(offsets.mm_map_count > 0);
        assert!(
            !offsets.lock_tracepoint_has_memcg_path,
            "Linux 6.18 passes no memcg path"
        );
    }

    #[test]
    fn missing_btf_is_an_environment_failure() {
        let err = struct_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("no BTF"), "{err}");
    }
}
