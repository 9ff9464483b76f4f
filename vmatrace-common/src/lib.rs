//! Types shared by the vmatrace eBPF programs and its userspace.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel side writes
//! these bytes into maps and the ring buffer, userspace reads them back.
//! There is exactly one event type, [`Event`], for every kind of record.
#![no_std]

pub mod proc_stats;

/// The memory-mapping calls vmatrace traces. The discriminant is what the
/// kernel writes into [`Event::call`]; the order is part of the ABI between
/// the two sides (and, later, of the trace file format), so only append.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    Mmap = 0,
    Munmap = 1,
    Brk = 2,
    Mprotect = 3,
    PkeyMprotect = 4,
    Mremap = 5,
    Madvise = 6,
    Mlock = 7,
    Mlock2 = 8,
    Munlock = 9,
    Mlockall = 10,
    Munlockall = 11,
    Shmat = 12,
    Shmdt = 13,
    Mseal = 14,
    // Calls that change the count only now and then (`Call::is_watched`):
    // reported only when they did, or failed with ENOMEM.
    Mbind = 15,
    SetMempolicyHomeNode = 16,
    IoSetup = 17,
    IoDestroy = 18,
    /// Only userfaultfd's range (un)registration (`UFFDIO_*` commands).
    Ioctl = 19,
    /// Only `PR_SET_VMA` (naming anonymous memory).
    Prctl = 20,
    RemapFilePages = 21,
    MapShadowStack = 22,
    ProcessMadvise = 23,
}

impl Call {
    /// Every traced call, in discriminant order.
    pub const ALL: [Call; 24] = [
        Call::Mmap,
        Call::Munmap,
        Call::Brk,
        Call::Mprotect,
        Call::PkeyMprotect,
        Call::Mremap,
        Call::Madvise,
        Call::Mlock,
        Call::Mlock2,
        Call::Munlock,
        Call::Mlockall,
        Call::Munlockall,
        Call::Shmat,
        Call::Shmdt,
        Call::Mseal,
        Call::Mbind,
        Call::SetMempolicyHomeNode,
        Call::IoSetup,
        Call::IoDestroy,
        Call::Ioctl,
        Call::Prctl,
        Call::RemapFilePages,
        Call::MapShadowStack,
        Call::ProcessMadvise,
    ];

    /// The syscall's name, as in `syscalls/sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Mmap => "mmap",
            Call::Munmap => "munmap",
            Call::Brk => "brk",
            Call::Mprotect => "mprotect",
            Call::PkeyMprotect => "pkey_mprotect",
            Call::Mremap => "mremap",
            Call::Madvise => "madvise",
            Call::Mlock => "mlock",
            Call::Mlock2 => "mlock2",
            Call::Munlock => "munlock",
            Call::Mlockall => "mlockall",
            Call::Munlockall => "munlockall",
            Call::Shmat => "shmat",
            Call::Shmdt => "shmdt",
            Call::Mseal => "mseal",
            Call::Mbind => "mbind",
            Call::SetMempolicyHomeNode => "set_mempolicy_home_node",
            Call::IoSetup => "io_setup",
            Call::IoDestroy => "io_destroy",
            Call::Ioctl => "ioctl",
            Call::Prctl => "prctl",
            Call::RemapFilePages => "remap_file_pages",
            Call::MapShadowStack => "map_shadow_stack",
            Call::ProcessMadvise => "process_madvise",
        }
    }

    /// How many arguments the syscall takes (the rest of [`Event::args`] is 0).
    pub const fn arg_count(self) -> usize {
        match self {
            Call::Mmap | Call::Mbind => 6,
            Call::Mremap | Call::Prctl | Call::RemapFilePages | Call::ProcessMadvise => 5,
            Call::PkeyMprotect | Call::SetMempolicyHomeNode => 4,
            Call::Mprotect
            | Call::Madvise
            | Call::Mlock2
            | Call::Shmat
            | Call::Mseal
            | Call::Ioctl
            | Call::MapShadowStack => 3,
            Call::Munmap | Call::Mlock | Call::Munlock | Call::IoSetup => 2,
            Call::Brk | Call::Mlockall | Call::Shmdt | Call::IoDestroy => 1,
            Call::Munlockall => 0,
        }
    }

    /// Calls that change the VMA count only now and then (a memory policy
    /// or a userfaultfd range on part of a mapping cuts it, an aio context
    /// maps its ring): traced like the others, but sent to userspace only
    /// when the count changed or the call failed with ENOMEM, so a process
    /// that calls them often costs no event per call.
    pub const fn is_watched(self) -> bool {
        self as u8 >= Call::Mbind as u8
    }

    /// Calls without which vmatrace cannot keep an exact picture: the tool
    /// refuses to run if one of these cannot be attached. The others are
    /// newer or rarer, and missing ones are reported as a warning.
    pub const fn is_essential(self) -> bool {
        matches!(
            self,
            Call::Mmap | Call::Munmap | Call::Brk | Call::Mprotect | Call::Mremap | Call::Madvise
        )
    }

    pub const fn from_u8(value: u8) -> Option<Call> {
        if (value as usize) < Call::ALL.len() {
            Some(Call::ALL[value as usize])
        } else {
            None
        }
    }
}

/// What an [`Event`] records.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A traced syscall completed: `call`, `args`, `ret` and the counts.
    Syscall = 0,
    /// The process called execve successfully: a new address space,
    /// `vmas_after` is its first count.
    Exec = 1,
    /// A traced process forked a child that is now traced too:
    /// `args[0]` is the child's pid, `args[1]` the clone flags.
    Fork = 2,
    /// The last thread of a traced process exited.
    Exit = 3,
    /// A traced process started a thread while the lock probes were not
    /// attached (`limits::LOCK_PROBES` 0, with `LOCK_PROBES_ON_DEMAND`):
    /// userspace attaches them. `args[0]` is the thread's id. Never
    /// recorded in trace files.
    Thread = 4,
    /// The count of a traced process changed in a write section of its
    /// address space that no traced call of the thread holding it made
    /// (seen by the lock probes: a syscall vmatrace does not decode, the
    /// kernel's own mappings such as the uprobes page, another process
    /// sharing or changing the address space), or, counted at syscall
    /// entry and exit, between two calls of a single-threaded process.
    /// `pid` is the process whose count changed; `tid` and `comm` the task
    /// that changed it (`call` is 1 when that task belongs to another
    /// process); `ret` is the number of the syscall it was in
    /// ([`change_nr`]); `args` that syscall's arguments when known.
    Change = 5,
}

/// What [`Event::ret`] holds in a [`EventKind::Change`] event: the number of
/// the syscall the changing task was in (its return value is not known
/// yet when the lock is let go), or one of these.
pub mod change_nr {
    /// Not in a syscall (a trap, such as the uprobes page mapped on a
    /// breakpoint), or by a kernel thread or an io_uring worker.
    pub const OUTSIDE: i64 = -1;
    /// Unknown: the kernel has no `bpf_task_pt_regs` (before 5.15), or
    /// the change was found between two calls (syscall count mode).
    pub const UNKNOWN: i64 = -2;
}

impl EventKind {
    pub const fn from_u8(value: u8) -> Option<EventKind> {
        match value {
            0 => Some(EventKind::Syscall),
            1 => Some(EventKind::Exec),
            2 => Some(EventKind::Fork),
            3 => Some(EventKind::Exit),
            4 => Some(EventKind::Thread),
            5 => Some(EventKind::Change),
            _ => None,
        }
    }
}

pub const COMM_LEN: usize = 16;

/// One record from the kernel, 120 bytes. See the field docs for what each
/// kind fills in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at syscall entry.
    pub enter_ns: u64,
    /// `bpf_ktime_get_ns()` at syscall exit (or when the lifecycle event
    /// happened).
    pub exit_ns: u64,
    /// When `vmas_after` was read.
    pub count_ns: u64,
    pub args: [u64; 6],
    /// The raw return value: a negative errno on failure. In a
    /// [`EventKind::Change`] event, the syscall number ([`change_nr`]).
    pub ret: i64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// The process's VMA count (`mm->map_count`) as the call began: read
    /// when it took the mmap write lock if it did (`locked`), else at exit.
    /// -1 when unreadable.
    pub vmas_before: i32,
    /// The count as the call ended: read when it gave up (or downgraded)
    /// the write lock if it took it, else at exit. -1 when unreadable.
    pub vmas_after: i32,
    /// An [`EventKind`] discriminant.
    pub kind: u8,
    /// A [`Call`] discriminant (Syscall events only).
    pub call: u8,
    /// 1 if `vmas_after - vmas_before` is this call's own effect, exact
    /// whatever other threads do: with the lock probes, both counts were
    /// read under the call's own write lock (only the holder changes the
    /// count); counted at syscall entry and exit (`counted`), no other call
    /// of the process ran in between.
    pub locked: u8,
    /// Where the counts were read: a [`count_mode`] value. With
    /// [`count_mode::SYSCALL`] and `locked` 0 the difference is the call's
    /// effect plus whatever calls of other threads did meanwhile: inexact.
    /// (0 in recordings older than this field.)
    pub counted: u8,
    /// The calling thread's user stack. From the kernel, a [`stack_field`]
    /// value: whether a [`UserStack`] was sent for this call, and the call
    /// site it stands for; userspace replaces it with its own id of the
    /// stack plus 1. 0 when none was captured (see `CAPTURE_STACKS`).
    pub stack: u32,
    pub comm: [u8; COMM_LEN],
}

impl Event {
    pub const fn zeroed() -> Event {
        Event {
            enter_ns: 0,
            exit_ns: 0,
            count_ns: 0,
            args: [0; 6],
            ret: 0,
            pid: 0,
            tid: 0,
            vmas_before: -1,
            vmas_after: -1,
            kind: 0,
            call: 0,
            locked: 0,
            counted: 0,
            stack: 0,
            comm: [0; COMM_LEN],
        }
    }
}

/// Sizes userspace checks at compile time so both sides agree.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();
const _: () = assert!(EVENT_SIZE == 120);

/// Slots of the `LIMITS` array: what userspace tells the programs while
/// they run, through shared memory: what they compare counts with
/// (rewritten whenever `vm.max_map_count` changes: a sysctl can be changed
/// while vmatrace runs), and whether the lock probes run.
pub mod limits {
    /// `vm.max_map_count`, for the ENOMEM causes.
    pub const MAX_MAP_COUNT: u32 = 0;
    /// The NEAR-LIMIT threshold in VMAs.
    pub const WARN_AT: u32 = 1;
    /// Nonzero once the lock probes are attached: a call that begins then
    /// has its write section seen, so the lock's counts (or, if it never
    /// took the write lock, no change) are its own. Set by userspace after
    /// the attachment, never cleared while tracing.
    pub const LOCK_PROBES: u32 = 2;
    pub const SLOTS: u32 = 3;
}

/// Slots of the `LOST` counter array (memory-mapped by userspace, which
/// reads it without a bpf() call): why an event never reached userspace.
/// Every slot is reported; none is ever silently dropped.
pub mod lost {
    /// The ring buffer was full when a completed call was to be sent.
    pub const RINGBUF_FULL: u32 = 0;
    /// The in-flight table was full at syscall entry, so the call's exit
    /// could not be matched.
    pub const INFLIGHT_FULL: u32 = 1;
    /// A child of a followed process could not be added to the target set:
    /// all of its calls are missed.
    pub const TARGETS_FULL: u32 = 2;
    /// Lifecycle (exec, fork, exit) events the ring buffer had no room for.
    pub const LIFECYCLE_RINGBUF_FULL: u32 = 3;
    /// Stacks that could not be captured (their ring buffer was full, or
    /// the stack unreadable); the events themselves were delivered.
    pub const STACK_UNAVAILABLE: u32 = 4;
    /// A traced call's exit was seen without its entry: the kernel skipped
    /// the entry program (its recursion guard), so the call is lost.
    pub const ENTRY_MISSED: u32 = 5;
    /// A traced thread entered a call while its previous call was still
    /// open, or left a call other than the open one: that call's exit was
    /// skipped, so it is lost.
    pub const EXIT_MISSED: u32 = 6;
    pub const SLOTS: u32 = 7;
}

/// Values of the `COUNT_MODE` global and of [`Event::counted`]: where the
/// programs read a call's counts.
pub mod count_mode {
    /// When the call takes and releases the mmap write lock (the mmap_lock
    /// tracepoints, Linux 5.11+): exact under any concurrency. A call that
    /// never took the write lock changed nothing; its counts are both read
    /// at exit.
    pub const LOCK: u8 = 0;
    /// At syscall entry and exit, for kernels without the mmap_lock
    /// tracepoints: exact (`locked` 1) when no other traced call of the
    /// process was in progress meanwhile.
    pub const SYSCALL: u8 = 1;
}

/// Names of the maps and globals, shared so the loader and the programs
/// cannot drift apart.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const TARGETS: &str = "TARGETS";
    pub const LOST: &str = "LOST";
    pub const PROCESSES: &str = "PROCESSES";
    pub const COUNT_MODE: &str = "COUNT_MODE";
    pub const CAPTURE_STACKS: &str = "CAPTURE_STACKS";
    pub const LIMITS: &str = "LIMITS";

    pub const TRACE_ALL: &str = "TRACE_ALL";
    pub const FOLLOW_FORKS: &str = "FOLLOW_FORKS";
    pub const LOCK_PROBES_ON_DEMAND: &str = "LOCK_PROBES_ON_DEMAND";
    pub const SELF_TGID: &str = "SELF_TGID";
    pub const TASK_MM_OFFSET: &str = "TASK_MM_OFFSET";
    pub const MM_MAP_COUNT_OFFSET: &str = "MM_MAP_COUNT_OFFSET";
    pub const MM_USERS_OFFSET: &str = "MM_USERS_OFFSET";
    pub const MM_START_STACK_OFFSET: &str = "MM_START_STACK_OFFSET";
    pub const TASK_FSBASE_OFFSET: &str = "TASK_FSBASE_OFFSET";
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    pub const NEWTASK_PID_OFFSET: &str = "NEWTASK_PID_OFFSET";
    pub const NEWTASK_FLAGS_OFFSET: &str = "NEWTASK_FLAGS_OFFSET";
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    pub const STACK_WAKEUP_BYTES: &str = "STACK_WAKEUP_BYTES";
    pub const STACK_SITE_NS: &str = "STACK_SITE_NS";
    pub const TASK_BTF: &str = "TASK_BTF";
    pub const TASK_COMM_OFFSET: &str = "TASK_COMM_OFFSET";
    pub const SYSCALL_CALLS: &str = "SYSCALL_CALLS";
    pub const LOCK_ACQUIRED_MM_OFFSET: &str = "LOCK_ACQUIRED_MM_OFFSET";
    pub const LOCK_ACQUIRED_WRITE_OFFSET: &str = "LOCK_ACQUIRED_WRITE_OFFSET";
    pub const LOCK_ACQUIRED_SUCCESS_OFFSET: &str = "LOCK_ACQUIRED_SUCCESS_OFFSET";
    pub const LOCK_RELEASED_MM_OFFSET: &str = "LOCK_RELEASED_MM_OFFSET";
    pub const USER_STACK_COPIES: &str = "USER_STACK_COPIES";
    pub const USER_STACK_BYTES: &str = "USER_STACK_BYTES";
    pub const PT_REGS_IP_OFFSET: &str = "PT_REGS_IP_OFFSET";
    pub const PT_REGS_SP_OFFSET: &str = "PT_REGS_SP_OFFSET";
    pub const PT_REGS_BP_OFFSET: &str = "PT_REGS_BP_OFFSET";
    pub const PT_REGS_LR_OFFSET: &str = "PT_REGS_LR_OFFSET";
    pub const SYSCALL_REGS: &str = "SYSCALL_REGS";
    pub const PT_REGS_NR_OFFSET: &str = "PT_REGS_NR_OFFSET";
    pub const PT_REGS_NR_BYTES: &str = "PT_REGS_NR_BYTES";
    pub const PT_REGS_ARG_OFFSETS: &str = "PT_REGS_ARG_OFFSETS";
    pub const MM_OWNER_OFFSET: &str = "MM_OWNER_OFFSET";
    pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
    pub const TASK_FLAGS_OFFSET: &str = "TASK_FLAGS_OFFSET";
}

/// Entries of the `SYSCALL_CALLS` map: syscall numbers below this are
/// looked up (the highest traced one, mseal, is 462 on x86-64 and arm64).
pub const SYSCALL_TABLE_SIZE: u32 = 1024;

/// `SYSCALL_CALLS` values of the syscalls that build a new address space:
/// execve and execveat replace the one they run in, fork, vfork, clone and
/// clone3 copy into the child's. Its count is told by the exec and fork
/// events, so the lock probes send no [`EventKind::Change`] for the write
/// sections that build it. Never traced calls.
pub const SYSCALL_EXEC: u8 = 0xfc;
pub const SYSCALL_FORK: u8 = 0xfd;
/// prctl's option that names anonymous memory: the only prctl traced.
pub const PR_SET_VMA: u64 = 0x5356_4d41;
/// The ioctl type of userfaultfd's commands (`UFFDIO`): the only ioctls
/// traced (registering a range cuts the mappings it covers).
pub const UFFDIO_TYPE: u64 = 0xaa;
/// `UFFDIO_REGISTER` and `UFFDIO_UNREGISTER`: their range (`start`,
/// `len`, read from the caller's memory at entry) is kept in `args[3]` and
/// `args[4]`.
pub const UFFDIO_REGISTER: u64 = 0xc020_aa00;
pub const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;

/// Whether a call of a watched syscall is one vmatrace traces: ioctl only
/// for userfaultfd, prctl only for `PR_SET_VMA`.
#[inline(always)]
pub const fn traced_args(call: Call, arg0: u64, arg1: u64) -> bool {
    match call {
        Call::Ioctl => (arg1 >> 8) & 0xff == UFFDIO_TYPE,
        Call::Prctl => arg0 == PR_SET_VMA,
        _ => true,
    }
}

/// [`Event::stack`] as the kernel sends it: [`stack_field::SENT`] when a
/// [`UserStack`] record was sent just before the event, and in the other
/// bits the call's site, when stacks are sent by site (`STACK_SITE_NS`):
/// a call whose site sent its stack recently gets no stack of its own,
/// only the site, and stands with the stack its site sent last.
pub mod stack_field {
    /// A stack record was sent for this call.
    pub const SENT: u32 = 1 << 31;
    /// The site bits (0: no site, every such call sends its own stack).
    pub const SITE: u32 = SENT - 1;

    /// The site of a [`super::Event::stack`] value the kernel sent.
    pub const fn site(stack: u32) -> u32 {
        stack & SITE
    }

    /// Whether a stack record came with the call.
    pub const fn sent(stack: u32) -> bool {
        stack & SENT != 0
    }

    /// A site id from a hash: the site bits, never 0.
    pub const fn site_of_hash(hash: u64) -> u32 {
        let folded = (hash ^ (hash >> 32)) as u32 & SITE;
        if folded == 0 { 1 } else { folded }
    }
}

/// Values of the `CAPTURE_STACKS` global.
pub mod capture_stacks {
    pub const NONE: u8 = 0;
    /// Calls that split a mapping or failed with ENOMEM.
    pub const FLAGGED: u8 = 1;
    pub const ALL: u8 = 2;
}

/// VMAs a successful call creates by itself, before any cut: the new
/// mapping of mmap and shmat (and of io_setup's ring, a shadow stack, the
/// remap_file_pages window), the new heap VMA brk may start, the copy
/// mremap leaves when MREMAP_DONTUNMAP keeps the old range mapped. A call
/// whose own change to the count exceeds this split a mapping.
pub const fn creates(call: u8, args: &[u64; 6]) -> i64 {
    const MREMAP_DONTUNMAP: u64 = 4;
    let makes_one = call == Call::Mmap as u8
        || call == Call::Shmat as u8
        || call == Call::Brk as u8
        || call == Call::IoSetup as u8
        || call == Call::MapShadowStack as u8
        || call == Call::RemapFilePages as u8
        || (call == Call::Mremap as u8 && args[3] & MREMAP_DONTUNMAP != 0);
    makes_one as i64
}

/// Whether a call mapped a file (a successful mmap without
/// MAP_ANONYMOUS). Userspace names the file from /proc while the process
/// still has it mapped, so the kernel wakes it for these at once.
pub const fn maps_a_file(call: u8, args: &[u64; 6], ret: i64) -> bool {
    const MAP_ANONYMOUS: u64 = 0x20;
    call == Call::Mmap as u8 && ret >= 0 && args[3] & MAP_ANONYMOUS == 0
}

/// Value of the `TARGETS` map: a traced tgid.
pub const TARGET_TRACED: u8 = 1;

/// `-ENOMEM` as the kernel returns it.
pub const ENOMEM_RET: i64 = -12;

/// Most bytes of user stack a [`UserStackCopy`] holds.
pub const USER_STACK_COPY_MAX: usize = 16384;

/// Most frames of the kernel's frame-pointer walk a [`UserStack`] holds
/// (the kernel's default `perf_event_max_stack`).
pub const USER_STACK_FRAMES_MAX: usize = 127;

/// The user stack of a call that got one, sent through the
/// `USER_STACK_COPIES` ring buffer just before its event (matched by `tid`
/// and `enter_ns`): the kernel's frame-pointer walk, and the user
/// registers as the syscall left user mode. It travels through a ring
/// buffer rather than a stack map so that userspace never reads a map
/// while tracing: a map read (a bpf() call) holds the kernel's global BPF
/// recursion guard, and on preemptible kernels (7.x) a reader preempted
/// there makes the kernel skip every tracepoint program on its CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserStack {
    pub pid: u32,
    pub tid: u32,
    pub enter_ns: u64,
    /// The user instruction pointer, stack pointer and frame pointer
    /// (rbp, x29) as the syscall left user mode (0 without a stack copy).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The link register (x30 on arm64: a syscall stub's caller, where
    /// x86-64 has it at `sp`); 0 where there is none or without a copy.
    /// Not in trace files (they hold symbolized stacks), so adding it
    /// changed only what the two sides exchange.
    pub lr: u64,
    /// How many bytes from `sp` on were read into [`UserStackCopy::bytes`]
    /// (0: no copy, or none were readable).
    pub len: u32,
    /// How many bytes of `frames` the kernel's walk filled (8 a frame).
    pub frames_len: u32,
    pub frames: [u64; USER_STACK_FRAMES_MAX],
}

/// A [`UserStack`] and the top of the user stack: the return address at
/// `sp` names the caller of a syscall stub, which a frame-pointer walk
/// skips, and the bytes let userspace unwind with the modules' call-frame
/// information. Sent instead of a bare [`UserStack`] when copies are on,
/// in the smallest size that holds the bytes asked for (a ring buffer
/// record's size is fixed when the program is built).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserStackCopy<const N: usize = USER_STACK_COPY_MAX> {
    pub stack: UserStack,
    pub bytes: [u8; N],
}

/// The smaller copy size (the default `--stack-bytes`).
pub const USER_STACK_COPY_SMALL: usize = 8192;

/// The header of a [`UserStackCopy`], before its bytes: the size of a
/// bare [`UserStack`] record.
pub const USER_STACK_COPY_HEADER: usize = core::mem::offset_of!(UserStackCopy, bytes);
const _: () = assert!(USER_STACK_COPY_HEADER == core::mem::size_of::<UserStack>());

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with no padding-sensitive invariants.
    unsafe impl aya::Pod for super::Event {}
}
