//! The kernel's own types, from BTF: where `mm` sits in `task_struct` and
//! `map_count` in `mm_struct`, and the arguments of the raw tracepoints.

use std::{fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use btfparse::{Offset, Readable, TypeInformation};

use crate::error::Failure;

pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// What the programs need to know of the kernel's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructOffsets {
    /// `offsetof(struct task_struct, mm)`
    pub task_mm: u64,
    /// `offsetof(struct mm_struct, map_count)`, through anonymous members.
    pub mm_map_count: u64,
    /// `offsetof(struct pt_regs, ip/sp/bp)` (x86-64; `pc`, `sp`,
    /// `regs[29]` elsewhere is not handled): where the user registers of a
    /// call that gets a stack are read. None: no user stack copies.
    pub pt_regs: Option<PtRegsOffsets>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtRegsOffsets {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
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
    Ok(StructOffsets {
        task_mm: offset("task_struct", "mm").map_err(Failure::environment)?,
        mm_map_count: offset("mm_struct", "map_count").map_err(Failure::environment)?,
        pt_regs: (|| {
            Some(PtRegsOffsets {
                ip: offset("pt_regs", "ip").ok()?,
                sp: offset("pt_regs", "sp").ok()?,
                bp: offset("pt_regs", "bp").ok()?,
            })
        })(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_btf_has_the_offsets() {
        let offsets = struct_offsets(Path::new(DEFAULT_BTF_PATH)).expect("offsets");
        assert!(offsets.task_mm > 0);
        assert!(offsets.mm_map_count > 0);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            offsets.pt_regs,
            Some(PtRegsOffsets {
                ip: 128,
                sp: 152,
                bp: 32
            })
        );
    }

    #[test]
    fn missing_btf_is_an_environment_failure() {
        let err = struct_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("no BTF"), "{err}");
    }
}
