//! What differs between the architectures vmatrace runs on (x86-64 and
//! arm64), in one place: where the user registers of a syscall sit in the
//! kernel's `struct pt_regs` and the thread pointer in its `task_struct`
//! (looked up by name in BTF, `kernel::btf`), and the DWARF unwinder of the
//! stack copies (`stacks::unwind`).
//!
//! The eBPF programs are the same object on both: what differs reaches
//! them as the offsets the loader sets. The syscall numbers come from the
//! `libc` and `syscalls` crates, which are built for the target already
//! (arm64 uses the kernel's generic table: no `mmap2`, and `mmap`, `brk`
//! by their own numbers).

use std::sync::Arc;

/// An architecture vmatrace is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// The architecture of this build.
#[cfg(target_arch = "x86_64")]
pub const NATIVE: Arch = Arch::X86_64;
#[cfg(target_arch = "aarch64")]
pub const NATIVE: Arch = Arch::Aarch64;

/// The architecture's name as a literal, for `concat!` (`--version`).
#[cfg(target_arch = "x86_64")]
macro_rules! name_literal {
    () => {
        "x86_64"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! name_literal {
    () => {
        "aarch64"
    };
}
pub(crate) use name_literal;

/// The syscalls that copy an address space: arm64 has no `fork` and
/// `vfork` (its libc forks with `clone`).
#[cfg(target_arch = "x86_64")]
pub const FORK_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_clone,
    libc::SYS_clone3,
];
#[cfg(target_arch = "aarch64")]
pub const FORK_SYSCALLS: &[libc::c_long] = &[libc::SYS_clone, libc::SYS_clone3];

/// The mmap flag of this architecture alone: x86-64's `MAP_32BIT`
/// (arm64 has none: 0, never named).
#[cfg(target_arch = "x86_64")]
pub const MAP_32BIT: u64 = libc::MAP_32BIT as u64;
#[cfg(target_arch = "aarch64")]
pub const MAP_32BIT: u64 = 0;

/// A register as the kernel saves it: a member of `struct pt_regs`, and
/// for an array member (`regs[29]` on arm64) the element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub member: &'static str,
    pub index: u64,
}

impl Reg {
    const fn named(member: &'static str) -> Reg {
        Reg { member, index: 0 }
    }

    const fn element(member: &'static str, index: u64) -> Reg {
        Reg { member, index }
    }
}

/// Where the registers the programs read are, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// The user instruction pointer as the syscall left user mode.
    pub ip: Reg,
    pub sp: Reg,
    /// The frame pointer: rbp, x29.
    pub fp: Reg,
    /// The link register (x30), where a syscall stub's caller is on arm64;
    /// None where the return address is on the stack (x86-64).
    pub lr: Option<Reg>,
    /// The syscall number (`orig_ax`; `syscallno`, an s32 on arm64) and
    /// its size in bytes: negative outside a syscall.
    pub nr: Reg,
    pub nr_bytes: u8,
    /// The six argument registers. arm64 overwrites x0 with the return
    /// value: its first argument stays in `orig_x0`.
    pub args: [Reg; 6],
    /// The user thread pointer, a path from `task_struct`: x86-64's
    /// `thread.fsbase`, arm64's `thread.uw.tp_value` (TPIDR_EL0). A glibc
    /// or musl thread's stack ends below it.
    pub thread_pointer: &'static [&'static str],
}

const X86_64_REGISTERS: Registers = Registers {
    ip: Reg::named("ip"),
    sp: Reg::named("sp"),
    fp: Reg::named("bp"),
    lr: None,
    nr: Reg::named("orig_ax"),
    nr_bytes: 8,
    args: [
        Reg::named("di"),
        Reg::named("si"),
        Reg::named("dx"),
        Reg::named("r10"),
        Reg::named("r8"),
        Reg::named("r9"),
    ],
    thread_pointer: &["thread", "fsbase"],
};

/// arm64's `struct pt_regs` begins with `user_pt_regs` (`regs[31]`, `sp`,
/// `pc`, `pstate`) as an anonymous member, then `orig_x0` and `syscallno`.
const AARCH64_REGISTERS: Registers = Registers {
    ip: Reg::named("pc"),
    sp: Reg::named("sp"),
    fp: Reg::element("regs", 29),
    lr: Some(Reg::element("regs", 30)),
    nr: Reg::named("syscallno"),
    nr_bytes: 4,
    args: [
        Reg::named("orig_x0"),
        Reg::element("regs", 1),
        Reg::element("regs", 2),
        Reg::element("regs", 3),
        Reg::element("regs", 4),
        Reg::element("regs", 5),
    ],
    thread_pointer: &["thread", "uw", "tp_value"],
};

impl Arch {
    /// The name `uname -m` and Rust give it.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub const fn registers(self) -> Registers {
        match self {
            Arch::X86_64 => X86_64_REGISTERS,
            Arch::Aarch64 => AARCH64_REGISTERS,
        }
    }
}

/// The DWARF unwinder of this architecture's code (framehop's), over the
/// unwind sections of each module, and what it keeps between walks.
#[cfg(target_arch = "x86_64")]
pub type Unwinder = framehop::x86_64::UnwinderX86_64<Arc<[u8]>>;
#[cfg(target_arch = "x86_64")]
pub type UnwindCache = framehop::x86_64::CacheX86_64;
#[cfg(target_arch = "x86_64")]
pub type UnwindRegs = framehop::x86_64::UnwindRegsX86_64;

#[cfg(target_arch = "aarch64")]
pub type Unwinder = framehop::aarch64::UnwinderAarch64<Arc<[u8]>>;
#[cfg(target_arch = "aarch64")]
pub type UnwindCache = framehop::aarch64::CacheAarch64;
#[cfg(target_arch = "aarch64")]
pub type UnwindRegs = framehop::aarch64::UnwindRegsAarch64;

/// The registers a DWARF walk starts from: x86-64's unwinder takes the
/// instruction, stack and frame pointers; arm64's the link register, the
/// stack and frame pointers (the instruction pointer is the walk's first
/// address on both).
#[cfg(target_arch = "x86_64")]
pub fn unwind_regs(ip: u64, sp: u64, fp: u64, _lr: u64) -> UnwindRegs {
    UnwindRegs::new(ip, sp, fp)
}
#[cfg(target_arch = "aarch64")]
pub fn unwind_regs(_ip: u64, sp: u64, fp: u64, lr: u64) -> UnwindRegs {
    UnwindRegs::new(lr, sp, fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_architecture_is_the_one_rust_built_for() {
        assert_eq!(NATIVE.name(), std::env::consts::ARCH);
        assert_eq!(name_literal!(), std::env::consts::ARCH);
    }

    #[test]
    fn only_arm64_has_a_link_register_and_a_32_bit_syscall_number() {
        let (x86, arm) = (Arch::X86_64.registers(), Arch::Aarch64.registers());
        assert_eq!(x86.lr, None);
        assert_eq!(arm.lr, Some(Reg::element("regs", 30)));
        assert_eq!((x86.nr_bytes, arm.nr_bytes), (8, 4));
        assert_eq!(arm.args[0].member, "orig_x0", "x0 holds the return value");
    }
}
