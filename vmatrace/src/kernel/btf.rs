//! The kernel's own types, from BTF: where `mm` sits in `task_struct` and
//! `map_count` in `mm_struct`, and the user registers in `pt_regs`.

use std::{fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    arch::{self, Arch, Reg},
    error::Failure,
};

pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// What the programs need to know of the kernel's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructOffsets {
    /// `offsetof(struct task_struct, mm)`
    pub task_mm: u64,
    /// `offsetof(struct mm_struct, map_count)`, through anonymous members.
    pub mm_map_count: u64,
    /// `offsetof(struct mm_struct, mm_users)`: one user is a process with a
    /// single thread and no other process in its address space.
    pub mm_users: u64,
    /// `offsetof(struct mm_struct, start_stack)`: the main thread's stack
    /// is mapped from its stack pointer up to there at least.
    pub mm_start_stack: u64,
    /// Where the user thread pointer is in `task_struct` (`thread.fsbase`
    /// on x86-64, `thread.uw.tp_value` on arm64: `arch::Registers`; 0 if
    /// not found): a glibc or musl thread's stack ends below it.
    pub task_thread_pointer: u64,
    /// `offsetof(struct task_struct, comm)` (0 if not found): the exit
    /// program reads the caller's name with two loads, not a helper call.
    pub task_comm: u64,
    /// Where the user registers of a call that gets a stack are read in
    /// `struct pt_regs`. None: no user stack copies.
    pub pt_regs: Option<PtRegsOffsets>,
    /// Where a syscall's number and arguments sit in `pt_regs`: a change of
    /// the count outside a traced call names the syscall it happened in.
    /// None: it is not named.
    pub syscall_regs: Option<SyscallRegsOffsets>,
    /// `offsetof(struct mm_struct, owner)` (CONFIG_MEMCG; 0 if absent) and
    /// `offsetof(struct task_struct, tgid)`: which process an address space
    /// belongs to when another task changes it.
    pub mm_owner: u64,
    pub task_tgid: u64,
    /// `offsetof(struct task_struct, flags)`: kernel threads and io_uring
    /// workers are in no syscall of their own.
    pub task_flags: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRegsOffsets {
    /// The syscall number (negative outside a syscall) and its size: 8
    /// bytes (`orig_ax`) or 4 (arm64's `syscallno`, an s32).
    pub nr: u64,
    pub nr_bytes: u8,
    pub args: [u64; 6],
}

/// The instruction, stack and frame pointers, and the link register where
/// there is one (0 if none: x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtRegsOffsets {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub lr: u64,
}

/// The structs whose members the programs need.
const STRUCTS: [&str; 3] = ["task_struct", "mm_struct", "pt_regs"];

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
    offsets_in(&bytes, arch::NATIVE)
        .with_context(|| format!("in the BTF of {}", btf_path.display()))
        .map_err(Failure::environment)
}

/// The offsets in a BTF blob of a kernel built for `arch`.
fn offsets_in(blob: &[u8], arch: Arch) -> Result<StructOffsets> {
    let types = Types::index(blob).context("cannot parse BTF")?;
    // One pass over the types for every struct asked for.
    let structs = types.structs_named(&STRUCTS);
    let lookup = |type_name: &str, path: &[&str]| -> Result<u64> {
        let id = STRUCTS
            .iter()
            .position(|s| *s == type_name)
            .and_then(|i| structs[i])
            .ok_or_else(|| anyhow!("no struct {type_name}"))?;
        types
            .path_offset(id, path)?
            .ok_or_else(|| anyhow!("no {type_name}.{}", path.join(".")))
    };
    let offset = |type_name: &str, member: &str| lookup(type_name, &[member]);
    // A register: its member, plus the element for an array of u64s.
    let reg =
        |reg: Reg| -> Option<u64> { Some(offset("pt_regs", reg.member).ok()? + 8 * reg.index) };
    let regs = arch.registers();
    Ok(StructOffsets {
        task_mm: offset("task_struct", "mm")?,
        mm_map_count: offset("mm_struct", "map_count")?,
        mm_users: offset("mm_struct", "mm_users")?,
        mm_start_stack: offset("mm_struct", "start_stack")?,
        task_thread_pointer: lookup("task_struct", regs.thread_pointer).unwrap_or(0),
        task_comm: offset("task_struct", "comm").unwrap_or(0),
        pt_regs: (|| {
            Some(PtRegsOffsets {
                ip: reg(regs.ip)?,
                sp: reg(regs.sp)?,
                bp: reg(regs.fp)?,
                lr: match regs.lr {
                    Some(lr) => reg(lr)?,
                    None => 0,
                },
            })
        })(),
        syscall_regs: (|| {
            let mut args = [0; 6];
            for (slot, arg) in args.iter_mut().zip(regs.args) {
                *slot = reg(arg)?;
            }
            Some(SyscallRegsOffsets {
                nr: reg(regs.nr)?,
                nr_bytes: regs.nr_bytes,
                args,
            })
        })(),
        mm_owner: offset("mm_struct", "owner").unwrap_or(0),
        task_tgid: offset("task_struct", "tgid").unwrap_or(0),
        task_flags: offset("task_struct", "flags").unwrap_or(0),
    })
}

/// BTF kinds (uapi `BTF_KIND_*`) this reader looks into.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// The type records of a BTF blob, found by id, read in place.
///
/// Written here rather than taken from a BTF library: btfparse decodes all
/// of vmlinux's ~150,000 types into memory (a 60 MB peak, most of
/// vmatrace's footprint), for three structs. This reads the blob in one
/// pass, keeps where each record starts (4 bytes a type), and decodes only
/// the structs asked for.
struct Types<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Where each type's record starts in `types`; index = id - 1.
    starts: Vec<u32>,
}

impl<'a> Types<'a> {
    fn index(blob: &'a [u8]) -> Result<Types<'a>> {
        let u32_at = |at: usize| -> Result<u32> {
            let bytes = blob.get(at..at + 4).context("the header is cut short")?;
            Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
        };
        if blob.get(..2) != Some(&0xeb9f_u16.to_le_bytes()[..]) {
            bail!("not BTF (bad magic), or not little-endian");
        }
        let header_len = u32_at(4)? as usize;
        let section = |off: usize, len: usize| -> Result<&'a [u8]> {
            let start = header_len + u32_at(off)? as usize;
            let len = u32_at(len)? as usize;
            blob.get(start..start + len)
                .context("a section runs past the end of the file")
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut index = Types {
            types,
            strings,
            starts: Vec::with_capacity(types.len() / 24),
        };
        let mut at = 0usize;
        while at + 12 <= types.len() {
            index.starts.push(at as u32);
            at += 12 + index.trailing_bytes(at)?;
        }
        Ok(index)
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.types
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// (name offset, kind, vlen, kind_flag, size or type) of a record.
    fn header(&self, at: usize) -> (u32, u32, usize, bool, u32) {
        let info = self.u32_at(at + 4);
        (
            self.u32_at(at),
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            self.u32_at(at + 8),
        )
    }

    /// Bytes after a record's 12-byte header, by kind (uapi btf.h).
    fn trailing_bytes(&self, at: usize) -> Result<usize> {
        let (_, kind, vlen, ..) = self.header(at);
        Ok(match kind {
            1 | 14 | 17 => 4,                           // INT, VAR, DECL_TAG
            3 => 12,                                    // ARRAY
            KIND_STRUCT | KIND_UNION | 15 => 12 * vlen, // members, DATASEC
            6 | 13 => 8 * vlen,                         // ENUM, FUNC_PROTO
            19 => 12 * vlen,                            // ENUM64
            2 | 7 | 8..=12 | 16 | 18 => 0,
            other => bail!("unknown BTF kind {other}"),
        })
    }

    fn record(&self, id: u32) -> Option<usize> {
        let index = (id as usize).checked_sub(1)?;
        self.starts.get(index).map(|&at| at as usize)
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The id of the (complete) struct called `name`.
    /// The ids of the first non-empty structs with these names, in one
    /// pass over the types (a pass is milliseconds on vmlinux).
    fn structs_named<const N: usize>(&self, names: &[&str; N]) -> [Option<u32>; N] {
        let mut found = [None; N];
        for id in 1..=self.starts.len() as u32 {
            let (name_off, kind, vlen, ..) = self.header(self.record(id).expect("indexed"));
            if kind != KIND_STRUCT || vlen == 0 {
                continue;
            }
            let name = self.name(name_off);
            for (slot, wanted) in found.iter_mut().zip(names) {
                if slot.is_none() && name == wanted.as_bytes() {
                    *slot = Some(id);
                }
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        found
    }

    /// The id `id` names once typedefs and qualifiers are looked through.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            let Some(at) = self.record(id) else { break };
            match self.header(at) {
                (
                    _,
                    KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG,
                    _,
                    _,
                    next,
                ) => id = next,
                _ => break,
            }
        }
        id
    }

    /// The byte offset of a member reached through named members, each of
    /// a struct or union type (`thread.uw.tp_value`), from struct `id`.
    fn path_offset(&self, id: u32, path: &[&str]) -> Result<Option<u64>> {
        let (mut offset, mut ty) = (0, id);
        for member in path {
            let Some((at, member_type)) = self.member_offset(self.resolve(ty), member, 0)? else {
                return Ok(None);
            };
            offset += at;
            ty = member_type;
        }
        Ok(Some(offset))
    }

    /// The byte offset of `member` in struct or union `id`, looking into
    /// its anonymous members (which add their own offsets), and its type.
    fn member_offset(&self, id: u32, member: &str, depth: u32) -> Result<Option<(u64, u32)>> {
        let Some(at) = self.record(id) else {
            return Ok(None);
        };
        let (_, kind, vlen, kind_flag, _) = self.header(at);
        if !matches!(kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return Ok(None);
        }
        for i in 0..vlen {
            let m = at + 12 + 12 * i;
            let (name_off, ty, raw) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let (bit_offset, bit_size) = if kind_flag {
                (raw & 0xff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let name = self.name(name_off);
            if name == member.as_bytes() {
                if bit_size != 0 || bit_offset % 8 != 0 {
                    bail!("{member} is a bit field");
                }
                return Ok(Some((u64::from(bit_offset / 8), ty)));
            }
            if name.is_empty()
                && let Some((inner, inner_type)) =
                    self.member_offset(self.resolve(ty), member, depth + 1)?
            {
                return Ok(Some((u64::from(bit_offset / 8) + inner, inner_type)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_btf_has_the_offsets() {
        let offsets = struct_offsets(Path::new(DEFAULT_BTF_PATH)).expect("offsets");
        assert!(offsets.task_mm > 0);
        assert!(offsets.mm_map_count > 0);
        assert!(offsets.mm_users > 0 && offsets.mm_users != offsets.mm_map_count);
        #[cfg(target_arch = "x86_64")]
        assert!(offsets.task_thread_pointer > offsets.task_mm, "{offsets:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            offsets.pt_regs,
            Some(PtRegsOffsets {
                ip: 128,
                sp: 152,
                bp: 32,
                lr: 0
            })
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            offsets.syscall_regs,
            Some(SyscallRegsOffsets {
                nr: 120,
                nr_bytes: 8,
                args: [112, 104, 96, 56, 72, 64]
            })
        );
        assert!(offsets.mm_owner > 0 && offsets.task_tgid > 0, "{offsets:?}");
    }

    /// A BTF blob: `int`, `struct inner { int a; int count; }` and
    /// `struct outer { int x; struct inner; int flag:1; }` (the inner one
    /// anonymous, at byte 8).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0count\0outer\0x\0flag\0";
        let name = |s: &str| {
            let at = strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .unwrap();
            (at + 1) as u32
        };
        let mut types = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        put(&[name("int"), 1 << 24, 4, 32]); // 1: INT
        put(&[name("inner"), (4 << 24) | 2, 8]); // 2: STRUCT inner
        put(&[name("a"), 1, 0, name("count"), 1, 32]);
        put(&[name("outer"), (4 << 24) | (1 << 31) | 3, 16]); // 3: STRUCT outer
        put(&[name("x"), 1, 0, 0, 2, 64, name("flag"), 1, (1 << 24) | 96]);
        blob_of(&types, strings)
    }

    #[test]
    fn members_are_found_through_anonymous_members() {
        let blob = blob();
        let types = Types::index(&blob).unwrap();
        let outer = types.structs_named(&["outer"])[0].unwrap();
        assert_eq!(types.member_offset(outer, "x", 0).unwrap(), Some((0, 1)));
        assert_eq!(
            types.member_offset(outer, "count", 0).unwrap(),
            Some((12, 1))
        );
        assert_eq!(types.member_offset(outer, "nothing", 0).unwrap(), None);
        assert!(
            types.member_offset(outer, "flag", 0).is_err(),
            "a bit field"
        );
        assert!(types.structs_named(&["int"])[0].is_none());
        assert!(Types::index(&blob[..10]).is_err());
    }

    /// A type record: (name, kind, size or type, members as (name, type,
    /// byte offset)).
    type Record<'a> = (&'a str, u32, u32, &'a [(&'a str, u32, u32)]);

    /// BTF built from records, ids from 1 in order.
    fn btf_of(records: &[Record]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |s: &str| -> u32 {
            if s.is_empty() {
                return 0;
            }
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let mut types = Vec::new();
        let mut put = |w: u32| types.extend_from_slice(&w.to_le_bytes());
        for &(type_name, kind, size, members) in records {
            put(name(type_name));
            put((kind << 24) | members.len() as u32);
            put(size);
            for &(member, ty, offset) in members {
                put(name(member));
                put(ty);
                put(offset * 8);
            }
            if kind == 1 {
                put(64); // INT: 64 bits
            }
        }
        blob_of(&types, &strings)
    }

    /// A BTF blob: the header, then the type and string sections.
    fn blob_of(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        for w in [
            0x0001_eb9f_u32,
            24,
            0,
            types.len() as u32,
            types.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        blob.extend_from_slice(types);
        blob.extend_from_slice(strings);
        blob
    }

    /// The members vmatrace reads, laid out as arm64's 6.1 kernel has them:
    /// `pt_regs` opens with an anonymous union of `user_pt_regs` and an
    /// anonymous struct of `regs[31]`, `sp`, `pc`, `pstate`; the thread
    /// pointer is `thread.uw.tp_value`, inside a named anonymous struct.
    fn arm64_btf() -> Vec<u8> {
        const INT: u32 = 1;
        const STRUCT: u32 = KIND_STRUCT;
        const UNION: u32 = KIND_UNION;
        let common: &[(&str, u32, u32)] = &[("mm", INT, 1184), ("comm", INT, 1888)];
        btf_of(&[
            ("u64", 1, 8, &[]), // 1
            (
                "",
                STRUCT,
                272,
                &[("regs", INT, 0), ("sp", INT, 248), ("pc", INT, 256)],
            ), // 2
            ("", UNION, 272, &[("user_regs", INT, 0), ("", 2, 0)]), // 3
            (
                "pt_regs",
                STRUCT,
                336,
                &[("", 3, 0), ("orig_x0", INT, 272), ("syscallno", INT, 280)],
            ), // 4
            (
                "",
                STRUCT,
                16,
                &[("tp_value", INT, 0), ("tp2_value", INT, 8)],
            ), // 5
            (
                "thread_struct",
                STRUCT,
                1024,
                &[("cpu_context", INT, 0), ("uw", 5, 112)],
            ), // 6
            (
                "task_struct",
                STRUCT,
                4096,
                &[
                    common[0],
                    common[1],
                    ("tgid", INT, 1456),
                    ("thread", 6, 2880),
                ],
            ), // 7
            (
                "mm_struct",
                STRUCT,
                1024,
                &[
                    ("map_count", INT, 100),
                    ("mm_users", INT, 96),
                    ("start_stack", INT, 352),
                ],
            ), // 8
        ])
    }

    #[test]
    fn arm64_registers_and_thread_pointer_are_found_by_their_names() {
        let offsets = offsets_in(&arm64_btf(), Arch::Aarch64).expect("offsets");
        assert_eq!(
            offsets.pt_regs,
            Some(PtRegsOffsets {
                ip: 256,
                sp: 248,
                bp: 29 * 8,
                lr: 30 * 8
            })
        );
        assert_eq!(
            offsets.syscall_regs,
            Some(SyscallRegsOffsets {
                nr: 280,
                nr_bytes: 4,
                args: [272, 8, 16, 24, 32, 40]
            })
        );
        assert_eq!(offsets.task_thread_pointer, 2880 + 112);
        assert_eq!((offsets.task_mm, offsets.mm_map_count), (1184, 100));
    }

    #[test]
    fn x86_names_find_no_registers_in_arm64_btf() {
        let offsets = offsets_in(&arm64_btf(), Arch::X86_64).expect("offsets");
        assert_eq!(offsets.pt_regs, None, "no ip/bp: no stack copies");
        assert_eq!(offsets.syscall_regs, None);
        assert_eq!(offsets.task_thread_pointer, 0, "no thread.fsbase");
    }

    #[test]
    fn missing_btf_is_an_environment_failure() {
        let err = struct_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("no BTF"), "{err}");
    }
}
