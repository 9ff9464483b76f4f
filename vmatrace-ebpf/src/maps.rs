//! The maps both sides share: the event ring buffer, the per-thread slots
//! of calls in flight, the target set and the loss counters;
//! and, in the syscall count mode, each process's calls in progress.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use vmatrace_common::{Event, SYSCALL_TABLE_SIZE, limits, lost};

/// Completed records for userspace. The loader may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// When this CPU last forced userspace awake (`helpers::wakeup_flags`).
#[map]
pub static LAST_WAKEUP_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A traced thread's slot: the call in progress, if any, and kernel-only
/// bookkeeping. Slots are reused from call to call and removed when the
/// thread exits, so the hot path never allocates or frees map elements.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Inflight {
    pub event: Event,
    /// `current->mm` at entry, so later reads of the count cost one read.
    pub mm: u64,
    /// Whether a call is in progress (its entry was seen, its exit not yet).
    pub active: u8,
    /// Where the call stands with the mmap write lock.
    pub lock: u8,
    /// Syscall count mode: the call's entry was counted in `PROCESSES`
    /// (its exit is still to be counted there).
    pub counted: u8,
    /// Syscall count mode: no other call of the process was in progress
    /// when this one began.
    pub alone: u8,
    /// The lock probes were attached when the call began (`limits::
    /// LOCK_PROBES`): if it took no write lock, it changed nothing.
    pub watched: u8,
    pub _pad: [u8; 3],
    /// Syscall count mode: the count after the thread's previous call
    /// (`last_mm` its address space, `last_ns` when it was read): a
    /// single-threaded process whose count differs at its next call's
    /// entry changed it outside a traced call (changes.rs).
    pub last_count: i32,
    /// The count as the thread took the mmap write lock of `change_mm`
    /// outside a traced call of its own (changes.rs).
    pub change_before: i32,
    pub last_mm: u64,
    pub last_ns: u64,
    /// The address space whose write lock the thread holds outside a
    /// traced call (0: none), the process it belongs to, and when the
    /// lock was taken.
    pub change_mm: u64,
    pub change_owner: u32,
    /// The site of the call's stack (`user_stack::site_of`), kept here
    /// rather than in a register while the stack is sent (see
    /// `user_stack_if_wanted`).
    pub site: u32,
    pub change_ns: u64,
    /// Syscall count mode: the process's `CallCounts::entries` right after
    /// this call's entry was counted: if it is the same at exit, no call of
    /// the process began meanwhile.
    pub entries_seen: u64,
    /// Syscall count mode: `CallCounts::made_ns` of the entry the call was
    /// counted in, so its exit is never counted in a newer one.
    pub made_ns: u64,
}

pub const LOCK_NOT_TAKEN: u8 = 0;
pub const LOCK_HELD: u8 = 1;
pub const LOCK_RELEASED: u8 = 2;

/// Slots of traced threads, by thread id.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(16384, 0);

/// A slot as it starts: all zeros (the kernel zeroes an array's values).
/// New slots are copied from it rather than from the stack, which a
/// program's 512 bytes could not spare in the lock probes.
#[map]
static FRESH_SLOT: Array<Inflight> = Array::with_max_entries(1, 0);

/// The thread's slot, created on its first traced call (or when it
/// changes a traced address space outside one, changes.rs).
#[inline(always)]
pub fn thread_slot(tid: u32) -> Option<*mut Inflight> {
    if let Some(slot) = INFLIGHT.get_ptr_mut(&tid) {
        return Some(slot);
    }
    let fresh = FRESH_SLOT.get(0)?;
    INFLIGHT.insert(&tid, fresh, 0).ok()?;
    INFLIGHT.get_ptr_mut(&tid)
}

/// Syscall count mode: a traced process's traced calls that began and that
/// ended (their difference: the calls in progress). Changed only by atomic
/// adds without fetch (BPF_XADD works on every kernel; fetching atomics
/// need Linux 5.12).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallCounts {
    pub entries: u64,
    pub exits: u64,
    /// When this entry was made: a process's entry is removed when it exits
    /// and may be made anew for a new process with the same tgid.
    pub made_ns: u64,
}

/// Syscall count mode: `CallCounts` by tgid. The loader shrinks it to one
/// entry in the lock mode, which never uses it.
#[map]
pub static PROCESSES: HashMap<u32, CallCounts> = HashMap::with_max_entries(32768, 0);

/// The traced processes (tgids), unless `TRACE_ALL` is set.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Which traced call a syscall number is, as `Call as u8 + 1`; 0 (the
/// default) for every other syscall. Filled by the loader.
#[map]
pub static SYSCALL_CALLS: Array<u8> = Array::with_max_entries(SYSCALL_TABLE_SIZE, 0);

/// `vm.max_map_count` and the NEAR-LIMIT threshold (`limits::*` slots),
/// kept current by userspace through shared memory.
#[map]
pub static LIMITS: Array<i64> = Array::with_max_entries(limits::SLOTS, BPF_F_MMAPABLE);

/// A `LIMITS` slot (0 if unreadable, which cannot happen for an array).
#[inline(always)]
pub fn limit(slot: u32) -> i64 {
    LIMITS.get(slot).copied().unwrap_or(0)
}

/// Counts of events that could not be delivered, by `lost::*` slot.
/// Memory-mapped: userspace reads it without a bpf() call, which would
/// hold the kernel's global BPF recursion guard (see `UserStack`).
#[map]
pub static LOST: Array<u64> = Array::with_max_entries(lost::SLOTS, BPF_F_MMAPABLE);
