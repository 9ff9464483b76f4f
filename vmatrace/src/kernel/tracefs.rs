//! tracefs: where it is (mounted if missing) and the field offsets of the
//! tracepoints the programs read.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};

use crate::error::Failure;

pub const TRACEFS: &str = "/sys/kernel/tracing";

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

/// The field offsets of tracepoint `event` (`category/name`), from its
/// format file; `missing` says what its absence means.
fn event_fields(tracefs: &Path, event: &str, missing: &str) -> Result<Fields, Failure> {
    let path = tracefs.join("events").join(event).join("format");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("{missing}: cannot read {}", path.display()))
        .map_err(Failure::environment)?;
    Ok(Fields {
        event: event.to_string(),
        offsets: format_offsets(&text),
    })
}

/// One tracepoint's field offsets.
struct Fields {
    event: String,
    offsets: HashMap<String, u64>,
}

impl Fields {
    fn get(&self, name: &str) -> Result<u64, Failure> {
        self.offsets.get(name).copied().ok_or_else(|| {
            Failure::environment(anyhow!("tracepoint {} has no field {name}", self.event))
        })
    }
}

pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointOffsets, Failure> {
    let lifecycle = "a tracepoint vmatrace needs is missing";
    let exit = event_fields(tracefs, "sched/sched_process_exit", lifecycle)?;
    let newtask = event_fields(tracefs, "task/task_newtask", lifecycle)?;
    Ok(TracepointOffsets {
        exit_group_dead: exit.offsets.get("group_dead").copied().unwrap_or(0),
        newtask_pid: newtask.get("pid")?,
        newtask_clone_flags: newtask.get("clone_flags")?,
    })
}

/// What the lock probes cost the host on kernels whose mmap_lock events
/// carry a memory cgroup path (see docs/overhead.md, "The lock probes on
/// Linux 5.11 to 6.12").
pub const MEMCG_PATH_COST: &str = "on this kernel the mmap_lock tracepoints carry a cgroup path, which \
     the kernel builds (under a global lock) for every mmap lock taken on the host while vmatrace \
     runs: page-fault-heavy processes slow down (x1.5 on a bystander loop measured on 6.1); \
     --count-mode syscall avoids it, exact for single-threaded processes";

/// Field offsets of the mmap_lock events the lock programs read (a
/// `memcg_path` string before Linux 6.12 moves `write` and `success`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTracepointOffsets {
    pub acquired_mm: u64,
    pub acquired_write: u64,
    pub acquired_success: u64,
    pub released_mm: u64,
    /// The events carry the memory cgroup's path (Linux 5.11 to 6.12): the
    /// kernel builds it, under a global lock, for every mmap lock taken on
    /// the host while any program is attached to them.
    pub builds_memcg_path: bool,
}

pub fn lock_tracepoint_offsets(tracefs: &Path) -> Result<LockTracepointOffsets, Failure> {
    let missing = "this kernel has no mmap_lock tracepoints (Linux 5.11+ has them)";
    let acquired = event_fields(tracefs, "mmap_lock/mmap_lock_acquire_returned", missing)?;
    let released = event_fields(tracefs, "mmap_lock/mmap_lock_released", missing)?;
    Ok(LockTracepointOffsets {
        builds_memcg_path: acquired.offsets.contains_key("memcg_path"),
        acquired_mm: acquired.get("mm")?,
        acquired_write: acquired.get("write")?,
        acquired_success: acquired.get("success")?,
        released_mm: released.get("mm")?,
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
    fn running_kernel_lock_events_pass_no_memcg_path() {
        let tracefs = ensure_tracefs().expect("tracefs (tests run as root)");
        let lock = lock_tracepoint_offsets(&tracefs).expect("mmap_lock events");
        // Linux 6.18: mm, memcg_id, write, success; before 6.12 a
        // memcg_path string (a 4-byte __data_loc) sat between mm and write.
        assert_eq!(lock.acquired_mm, 8);
        assert_eq!((lock.acquired_write, lock.acquired_success), (24, 25));
        assert_eq!(lock.released_mm, 8);
    }
}
