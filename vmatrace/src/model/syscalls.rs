//! Decoding the traced calls' arguments and results the way strace shows
//! them: flags by name, addresses in hex, errors as `-1 ENOMEM (...)`.

use serde_json::{Map, Value, json};
use vmatrace_common::Call;

type Flag = (u64, &'static str);

const PROT: &[Flag] = &[
    (libc::PROT_READ as u64, "PROT_READ"),
    (libc::PROT_WRITE as u64, "PROT_WRITE"),
    (libc::PROT_EXEC as u64, "PROT_EXEC"),
    (libc::PROT_GROWSDOWN as u64, "PROT_GROWSDOWN"),
    (libc::PROT_GROWSUP as u64, "PROT_GROWSUP"),
];

const MAP_FLAGS: &[Flag] = &[
    (libc::MAP_FIXED as u64, "MAP_FIXED"),
    (libc::MAP_ANONYMOUS as u64, "MAP_ANONYMOUS"),
    (crate::arch::MAP_32BIT, "MAP_32BIT"),
    (libc::MAP_GROWSDOWN as u64, "MAP_GROWSDOWN"),
    (libc::MAP_DENYWRITE as u64, "MAP_DENYWRITE"),
    (libc::MAP_EXECUTABLE as u64, "MAP_EXECUTABLE"),
    (libc::MAP_LOCKED as u64, "MAP_LOCKED"),
    (libc::MAP_NORESERVE as u64, "MAP_NORESERVE"),
    (libc::MAP_POPULATE as u64, "MAP_POPULATE"),
    (libc::MAP_NONBLOCK as u64, "MAP_NONBLOCK"),
    (libc::MAP_STACK as u64, "MAP_STACK"),
    (libc::MAP_HUGETLB as u64, "MAP_HUGETLB"),
    (libc::MAP_SYNC as u64, "MAP_SYNC"),
    (libc::MAP_FIXED_NOREPLACE as u64, "MAP_FIXED_NOREPLACE"),
    (0x8000000, "MAP_UNINITIALIZED"),
];

const MREMAP_FLAGS: &[Flag] = &[
    (libc::MREMAP_MAYMOVE as u64, "MREMAP_MAYMOVE"),
    (libc::MREMAP_FIXED as u64, "MREMAP_FIXED"),
    (4, "MREMAP_DONTUNMAP"),
];

const MLOCK_FLAGS: &[Flag] = &[(1, "MLOCK_ONFAULT")];

const MLOCKALL_FLAGS: &[Flag] = &[
    (libc::MCL_CURRENT as u64, "MCL_CURRENT"),
    (libc::MCL_FUTURE as u64, "MCL_FUTURE"),
    (4, "MCL_ONFAULT"),
];

const SHM_FLAGS: &[Flag] = &[
    (libc::SHM_RDONLY as u64, "SHM_RDONLY"),
    (libc::SHM_RND as u64, "SHM_RND"),
    (0o40000, "SHM_REMAP"),
    (0o100000, "SHM_EXEC"),
];

const ADVICE: &[Flag] = &[
    (0, "MADV_NORMAL"),
    (1, "MADV_RANDOM"),
    (2, "MADV_SEQUENTIAL"),
    (3, "MADV_WILLNEED"),
    (4, "MADV_DONTNEED"),
    (8, "MADV_FREE"),
    (9, "MADV_REMOVE"),
    (10, "MADV_DONTFORK"),
    (11, "MADV_DOFORK"),
    (12, "MADV_MERGEABLE"),
    (13, "MADV_UNMERGEABLE"),
    (14, "MADV_HUGEPAGE"),
    (15, "MADV_NOHUGEPAGE"),
    (16, "MADV_DONTDUMP"),
    (17, "MADV_DODUMP"),
    (18, "MADV_WIPEONFORK"),
    (19, "MADV_KEEPONFORK"),
    (20, "MADV_COLD"),
    (21, "MADV_PAGEOUT"),
    (22, "MADV_POPULATE_READ"),
    (23, "MADV_POPULATE_WRITE"),
    (24, "MADV_DONTNEED_LOCKED"),
    (25, "MADV_COLLAPSE"),
    (100, "MADV_HWPOISON"),
    (101, "MADV_SOFT_OFFLINE"),
    (102, "MADV_GUARD_INSTALL"),
    (103, "MADV_GUARD_REMOVE"),
];

const MPOL_MODES: &[Flag] = &[
    (0, "MPOL_DEFAULT"),
    (1, "MPOL_PREFERRED"),
    (2, "MPOL_BIND"),
    (3, "MPOL_INTERLEAVE"),
    (4, "MPOL_LOCAL"),
    (5, "MPOL_PREFERRED_MANY"),
    (6, "MPOL_WEIGHTED_INTERLEAVE"),
];

const MPOL_MODE_FLAGS: &[Flag] = &[
    (1 << 15, "MPOL_F_STATIC_NODES"),
    (1 << 14, "MPOL_F_RELATIVE_NODES"),
    (1 << 13, "MPOL_F_NUMA_BALANCING"),
];

const MPOL_MF_FLAGS: &[Flag] = &[
    (1, "MPOL_MF_STRICT"),
    (2, "MPOL_MF_MOVE"),
    (4, "MPOL_MF_MOVE_ALL"),
];

const SHADOW_STACK_FLAGS: &[Flag] = &[
    (1, "SHADOW_STACK_SET_TOKEN"),
    (2, "SHADOW_STACK_SET_MARKER"),
];

/// `A|B|0x40` for a flag word; `zero` when no bit is set.
pub fn flags(value: u64, table: &[Flag], zero: &str) -> String {
    if value == 0 {
        return zero.to_string();
    }
    let mut names = Vec::new();
    let mut rest = value;
    for (bit, name) in table {
        if *bit != 0 && rest & bit == *bit {
            names.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

fn map_flags(value: u64) -> String {
    let kind = match value & 0x3 {
        0x1 => "MAP_SHARED",
        0x2 => "MAP_PRIVATE",
        0x3 => "MAP_SHARED_VALIDATE",
        _ => "",
    };
    let rest = flags(value & !0x3, MAP_FLAGS, "");
    match (kind.is_empty(), rest.is_empty()) {
        (false, false) => format!("{kind}|{rest}"),
        (false, true) => kind.to_string(),
        (true, false) => rest,
        (true, true) => "0".to_string(),
    }
}

fn advice(value: u64) -> String {
    ADVICE
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| value.to_string())
}

/// A memory policy mode and its flags: `MPOL_BIND|MPOL_F_STATIC_NODES`.
fn mpol_mode(value: u64) -> String {
    let mode = value & 0xff;
    let name = MPOL_MODES
        .iter()
        .find(|(v, _)| *v == mode)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| mode.to_string());
    match flags(value & !0xff, MPOL_MODE_FLAGS, "") {
        rest if rest.is_empty() => name,
        rest => format!("{name}|{rest}"),
    }
}

/// An ioctl command by name where vmatrace traces it (userfaultfd's).
fn ioctl_command(value: u64) -> String {
    match value {
        vmatrace_common::UFFDIO_REGISTER => "UFFDIO_REGISTER".into(),
        vmatrace_common::UFFDIO_UNREGISTER => "UFFDIO_UNREGISTER".into(),
        other => format!("{other:#x}"),
    }
}

fn hex(value: u64) -> String {
    if value == 0 {
        "NULL".to_string()
    } else {
        format!("{value:#x}")
    }
}

/// The arguments as the kernel reads them: a parameter of 32 bits (an
/// `int` or `unsigned int`) is the low half of its register, whatever the
/// caller left in the high half.
pub fn as_read(call: Call, args: &[u64; 6]) -> [u64; 6] {
    let narrow: &[usize] = match call {
        Call::Mbind => &[5],
        Call::MapShadowStack => &[2],
        Call::ProcessMadvise => &[3, 4],
        Call::IoSetup => &[0],
        Call::Ioctl => &[0, 1],
        Call::Prctl => &[0],
        Call::Mlock2 | Call::Mseal => &[2],
        Call::Mlockall => &[0],
        _ => &[],
    };
    let mut args = *args;
    for &i in narrow {
        args[i] &= u64::from(u32::MAX);
    }
    args
}

/// The argument list as strace prints it, without the parentheses.
pub fn format_args(call: Call, args: &[u64; 6]) -> String {
    let [a0, a1, a2, a3, a4, a5] = as_read(call, args);
    match call {
        Call::Mmap => format!(
            "{}, {}, {}, {}, {}, {:#x}",
            hex(a0),
            a1,
            flags(a2, PROT, "PROT_NONE"),
            map_flags(a3),
            a4 as i32,
            a5
        ),
        Call::Munmap | Call::Mlock | Call::Munlock => format!("{}, {}", hex(a0), a1),
        Call::Brk | Call::Shmdt => hex(a0),
        Call::Mprotect => format!("{}, {}, {}", hex(a0), a1, flags(a2, PROT, "PROT_NONE")),
        Call::PkeyMprotect => format!(
            "{}, {}, {}, {}",
            hex(a0),
            a1,
            flags(a2, PROT, "PROT_NONE"),
            a3 as i32
        ),
        Call::Mremap => {
            let mut text = format!(
                "{}, {}, {}, {}",
                hex(a0),
                a1,
                a2,
                flags(a3, MREMAP_FLAGS, "0")
            );
            if a3 & libc::MREMAP_FIXED as u64 != 0 || a3 & 4 != 0 {
                text.push_str(&format!(", {}", hex(a4)));
            }
            text
        }
        Call::Madvise => format!("{}, {}, {}", hex(a0), a1, advice(a2)),
        Call::Mlock2 => format!("{}, {}, {}", hex(a0), a1, flags(a2, MLOCK_FLAGS, "0")),
        Call::Mlockall => flags(a0, MLOCKALL_FLAGS, "0"),
        Call::Munlockall => String::new(),
        Call::Shmat => format!("{}, {}, {}", a0 as i32, hex(a1), flags(a2, SHM_FLAGS, "0")),
        Call::Mseal => format!("{}, {}, {:#x}", hex(a0), a1, a2),
        Call::Mbind => format!(
            "{}, {}, {}, {}, {}, {}",
            hex(a0),
            a1,
            mpol_mode(a2),
            hex(a3),
            a4,
            flags(a5, MPOL_MF_FLAGS, "0")
        ),
        Call::SetMempolicyHomeNode => format!("{}, {}, {}, {}", hex(a0), a1, a2, a3),
        Call::IoSetup => format!("{}, {}", a0 as u32, hex(a1)),
        Call::IoDestroy => hex(a0),
        Call::Ioctl => match a1 {
            vmatrace_common::UFFDIO_REGISTER | vmatrace_common::UFFDIO_UNREGISTER => format!(
                "{}, {}, {{start={}, len={}}}",
                a0 as i32,
                ioctl_command(a1),
                hex(a3),
                a4
            ),
            _ => format!("{}, {}, {}", a0 as i32, ioctl_command(a1), hex(a2)),
        },
        Call::Prctl => {
            let what = if a1 == 0 {
                "PR_SET_VMA_ANON_NAME".to_string()
            } else {
                a1.to_string()
            };
            format!("PR_SET_VMA, {what}, {}, {}, {}", hex(a2), a3, hex(a4))
        }
        Call::RemapFilePages => format!(
            "{}, {}, {}, {}, {:#x}",
            hex(a0),
            a1,
            flags(a2, PROT, "PROT_NONE"),
            a3,
            a4
        ),
        Call::MapShadowStack => format!(
            "{}, {}, {}",
            hex(a0),
            a1,
            flags(a2, SHADOW_STACK_FLAGS, "0")
        ),
        Call::ProcessMadvise => {
            format!("{}, {}, {}, {}, {}", a0 as i32, hex(a1), a2, advice(a3), a4)
        }
    }
}

/// A syscall vmatrace does not decode, as in a change of the count made in
/// it (`EventKind::Change`): its name, and its arguments as numbers (small
/// ones in decimal, addresses in hex; trailing zeros left out).
pub fn format_undecoded(nr: i64, args: &[u64; 6]) -> String {
    let name = syscall_name(nr);
    // One of the traced calls, made by a task that is not traced (another
    // process sharing the address space): decoded all the same.
    if let Some(call) = Call::ALL
        .iter()
        .find(|c| c.name() == name && !c.is_watched())
    {
        return format!("{name}({})", format_args(*call, args));
    }
    let used = args.iter().rposition(|a| *a != 0).map_or(0, |i| i + 1);
    // The registers past a syscall's arguments hold whatever was there.
    let used = used.min(undecoded_arg_count(&name));
    let args: Vec<String> = args[..used]
        .iter()
        .map(|a| {
            if *a < 0x10000 || *a as i64 >= -4096 && (*a as i64) < 0 {
                (*a as i64).to_string()
            } else {
                format!("{a:#x}")
            }
        })
        .collect();
    format!("{name}({})", args.join(", "))
}

/// How many arguments the syscalls that change the count without being
/// decoded take (the registers past them are not arguments); 6 for the
/// others.
fn undecoded_arg_count(name: &str) -> usize {
    match name {
        "close" | "exit" | "exit_group" | "userfaultfd" | "io_uring_setup" => 1,
        "arch_prctl" | "clone3" | "dup2" => 2,
        "close_range" | "dup3" | "read" | "write" | "ioctl" | "execve" => 3,
        "clone" => 5,
        _ => 6,
    }
}

/// A syscall's name by its number on this architecture (`syscall_N` for a
/// number the table does not know, a newer kernel's).
pub fn syscall_name(nr: i64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map(|sysno| sysno.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// The arguments as a JSON object with the syscall's own parameter names.
pub fn args_json(call: Call, args: &[u64; 6]) -> Value {
    let names: &[&str] = match call {
        Call::Mmap => &["addr", "length", "prot", "flags", "fd", "offset"],
        Call::Munmap | Call::Mlock | Call::Munlock => &["addr", "length"],
        Call::Brk => &["brk"],
        Call::Mprotect => &["addr", "length", "prot"],
        Call::PkeyMprotect => &["addr", "length", "prot", "pkey"],
        Call::Mremap => &[
            "old_address",
            "old_size",
            "new_size",
            "flags",
            "new_address",
        ],
        Call::Madvise => &["addr", "length", "advice"],
        Call::Mlock2 => &["addr", "length", "flags"],
        Call::Mlockall => &["flags"],
        Call::Munlockall => &[],
        Call::Shmat => &["shmid", "shmaddr", "shmflg"],
        Call::Shmdt => &["shmaddr"],
        Call::Mseal => &["addr", "length", "flags"],
        Call::Mbind => &["addr", "length", "mode", "nodemask", "maxnode", "flags"],
        Call::SetMempolicyHomeNode => &["addr", "length", "home_node", "flags"],
        Call::IoSetup => &["nr_events", "ctxp"],
        Call::IoDestroy => &["ctx"],
        Call::Ioctl => &["fd", "cmd", "arg", "start", "length"],
        Call::Prctl => &["option", "attr", "addr", "length", "name"],
        Call::RemapFilePages => &["addr", "length", "prot", "pgoff", "flags"],
        Call::MapShadowStack => &["addr", "length", "flags"],
        Call::ProcessMadvise => &["pidfd", "iovec", "vlen", "advice", "flags"],
    };
    let mut object = Map::new();
    for (name, value) in names.iter().zip(as_read(call, args).iter()) {
        let value = match *name {
            "fd" | "pkey" | "shmid" | "pidfd" => json!(*value as i32),
            _ => json!(value),
        };
        object.insert((*name).to_string(), value);
    }
    Value::Object(object)
}

/// The result as strace prints it: an address, a number or `-1 ERRNO (text)`.
pub fn format_result(call: Call, ret: i64) -> String {
    if let Some(errno) = errno_of(call, ret) {
        return format!(
            "-1 {} ({})",
            errno_name(errno),
            std::io::Error::from_raw_os_error(errno as i32)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or("")
        );
    }
    match call {
        Call::Mmap | Call::Mremap | Call::Brk | Call::Shmat => format!("{:#x}", ret as u64),
        _ => ret.to_string(),
    }
}

/// The errno a call failed with, if it failed. brk never fails that way: it
/// returns the unchanged break instead.
pub fn errno_of(call: Call, ret: i64) -> Option<i64> {
    (call != Call::Brk && (-4095..0).contains(&ret)).then_some(-ret)
}

pub fn errno_name(errno: i64) -> String {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOSYS => "ENOSYS",
        libc::EIDRM => "EIDRM",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EHWPOISON => "EHWPOISON",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// Bytes a successful call added to (positive) or removed from (negative)
/// the address space, when the arguments say so. brk needs the previous
/// break, which the caller tracks.
pub fn mapped_delta(call: Call, args: &[u64; 6], ret: i64) -> i64 {
    if errno_of(call, ret).is_some() {
        return 0;
    }
    let page_up = |len: u64| len.div_ceil(4096) * 4096;
    match call {
        Call::Mmap => page_up(args[1]) as i64,
        Call::Munmap => -(page_up(args[1]) as i64),
        Call::Mremap => page_up(args[2]) as i64 - page_up(args[1]) as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmap_is_shown_like_strace() {
        let args = [0, 4096, 3, 0x22, u32::MAX as u64, 0];
        assert_eq!(
            format_args(Call::Mmap, &args),
            "NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0"
        );
    }

    #[test]
    fn unknown_bits_stay_visible() {
        assert_eq!(flags(0x1 | 0x100, PROT, "PROT_NONE"), "PROT_READ|0x100");
        assert_eq!(flags(0, PROT, "PROT_NONE"), "PROT_NONE");
        assert_eq!(advice(4), "MADV_DONTNEED");
        assert_eq!(advice(77), "77");
    }

    #[test]
    fn results_and_errors() {
        assert_eq!(format_result(Call::Munmap, 0), "0");
        assert_eq!(
            format_result(Call::Munmap, -12),
            "-1 ENOMEM (Cannot allocate memory)"
        );
        assert_eq!(
            format_result(Call::Mmap, 0x7f00_0000_0000),
            "0x7f0000000000"
        );
        // A high mmap address is not an error.
        assert_eq!(errno_of(Call::Mmap, 0x7fff_ffff_f000), None);
        assert_eq!(errno_of(Call::Brk, -12), None);
    }

    #[test]
    fn mapped_bytes_round_to_pages() {
        assert_eq!(
            mapped_delta(Call::Mmap, &[0, 100, 0, 0, 0, 0], 0x1000),
            4096
        );
        assert_eq!(
            mapped_delta(Call::Munmap, &[0x1000, 8192, 0, 0, 0, 0], 0),
            -8192
        );
        assert_eq!(
            mapped_delta(Call::Munmap, &[0x1000, 8192, 0, 0, 0, 0], -22),
            0
        );
        assert_eq!(
            mapped_delta(Call::Mremap, &[0, 8192, 4096, 0, 0, 0], 0x1000),
            -4096
        );
    }

    #[test]
    fn watched_calls_are_shown_like_strace() {
        // The flags are an unsigned int: the register's high half is not.
        assert_eq!(
            format_args(
                Call::Mbind,
                &[0x7f00_0000_0000, 4096, 2, 0x7ffd_0000, 2, 0x7f83_0000_0000]
            ),
            "0x7f0000000000, 4096, MPOL_BIND, 0x7ffd0000, 2, 0"
        );
        assert_eq!(
            format_args(
                Call::Ioctl,
                &[
                    5,
                    vmatrace_common::UFFDIO_REGISTER,
                    0x7ffd_0000,
                    0x7f00_0000_0000,
                    4096,
                    0
                ]
            ),
            "5, UFFDIO_REGISTER, {start=0x7f0000000000, len=4096}"
        );
        assert_eq!(
            format_args(Call::Prctl, &[0x5356_4d41, 0, 0x1000, 8192, 0x2000, 0]),
            "PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x1000, 8192, 0x2000"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn undecoded_syscalls_are_named_by_number() {
        assert_eq!(syscall_name(3), "close");
        assert_eq!(syscall_name(999), "syscall_999");
        assert_eq!(format_undecoded(3, &[5, 0, 0, 0x7ffc, 7, 0]), "close(5)");
        assert_eq!(
            format_undecoded(11, &[0x7f00_0000_1000, 4096, 0, 0x4022, 7, 0]),
            "munmap(0x7f0000001000, 4096)"
        );
        assert_eq!(
            format_undecoded(237, &[0x7f00_0000_0000, 4096, 2, 0, 0, 0]),
            "mbind(0x7f0000000000, 4096, 2)"
        );
    }

    #[test]
    fn json_args_are_named() {
        let value = args_json(Call::Munmap, &[0x1000, 4096, 0, 0, 0, 0]);
        assert_eq!(value, json!({"addr": 4096, "length": 4096}));
    }
}
