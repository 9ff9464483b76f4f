//! Just enough of an ELF reader to say whether an executable is static:
//! no program interpreter (PT_INTERP, the dynamic loader the kernel would
//! start first) and no shared library it needs (DT_NEEDED). A static-pie
//! binary, as Rust's musl target makes, keeps a PT_DYNAMIC segment for
//! its own relocations, with no DT_NEEDED in it; and which machine it is
//! for (`e_machine`: x86-64 or aarch64). ELF64, little-endian only, which
//! is what `cargo xtask dist` builds.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const PT_LOAD: u32 = 1;
/// `e_machine` values (elf.h).
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// How an executable is linked, as its headers say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Linking {
    /// The program interpreter, if any (`/lib64/ld-linux-x86-64.so.2`).
    pub interpreter: Option<String>,
    /// The shared libraries it needs (`libc.so.6`, ...).
    pub needed: Vec<String>,
    /// It has a dynamic section at all (a static-pie binary does).
    pub has_dynamic: bool,
    /// `e_machine`: `EM_X86_64`, `EM_AARCH64`, ...
    pub machine: u16,
}

impl Linking {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    /// One line for the build's output and the test's.
    pub fn describe(&self) -> String {
        if self.is_static() {
            let kind = if self.has_dynamic {
                "static-pie"
            } else {
                "static"
            };
            format!("{kind}: no PT_INTERP, no DT_NEEDED")
        } else {
            format!(
                "dynamic: interpreter {}, needs [{}]",
                self.interpreter.as_deref().unwrap_or("none"),
                self.needed.join(", ")
            )
        }
    }
}

pub fn linking_of(path: &Path) -> Result<Linking> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&data).with_context(|| format!("{} is not an ELF64 executable", path.display()))
}

/// Reads the program headers, the interpreter's path and the dynamic
/// section's DT_NEEDED names (through DT_STRTAB, mapped back to a file
/// offset by the PT_LOAD segment that holds it).
pub fn parse(data: &[u8]) -> Result<Linking> {
    ensure!(data.get(..4) == Some(b"\x7fELF"), "no ELF magic");
    ensure!(data.get(4) == Some(&2), "not ELF64");
    ensure!(data.get(5) == Some(&1), "not little-endian");
    let phoff = u64_at(data, 0x20)? as usize;
    let phentsize = u16_at(data, 0x36)? as usize;
    let phnum = u16_at(data, 0x38)? as usize;
    ensure!(
        phentsize >= 56,
        "program header entries of {phentsize} bytes"
    );
    let mut linking = Linking {
        machine: u16_at(data, 0x12)?,
        ..Linking::default()
    };
    let mut loads = Vec::new(); // (vaddr, offset, filesz)
    let mut dynamic = None; // (offset, filesz)
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (kind, offset) = (u32_at(data, ph)?, u64_at(data, ph + 8)?);
        let (vaddr, filesz) = (u64_at(data, ph + 16)?, u64_at(data, ph + 32)?);
        match kind {
            PT_INTERP => {
                let bytes = slice(data, offset, filesz)?;
                let path = bytes.split(|&b| b == 0).next().unwrap_or_default();
                linking.interpreter = Some(String::from_utf8_lossy(path).into_owned());
            }
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            _ => {}
        }
    }
    let Some((offset, size)) = dynamic else {
        return Ok(linking);
    };
    linking.has_dynamic = true;
    let entries = slice(data, offset, size)?;
    let mut needed_offsets = Vec::new();
    let mut strtab_vaddr = None;
    for entry in entries.chunks_exact(16) {
        let tag = u64_at(entry, 0)?;
        let value = u64_at(entry, 8)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed_offsets.push(value),
            DT_STRTAB => strtab_vaddr = Some(value),
            _ => {}
        }
    }
    if needed_offsets.is_empty() {
        return Ok(linking);
    }
    let strtab_vaddr = strtab_vaddr.context("DT_NEEDED without DT_STRTAB")?;
    let strtab = loads
        .iter()
        .find(|(vaddr, _, filesz)| (*vaddr..vaddr + filesz).contains(&strtab_vaddr))
        .map(|(vaddr, offset, _)| strtab_vaddr - vaddr + offset)
        .context("DT_STRTAB outside every PT_LOAD segment")?;
    for name in needed_offsets {
        let start = usize::try_from(strtab + name)?;
        let bytes = data.get(start..).context("DT_NEEDED past the end")?;
        let name = bytes.split(|&b| b == 0).next().unwrap_or_default();
        linking
            .needed
            .push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(linking)
}

fn slice(data: &[u8], offset: u64, size: u64) -> Result<&[u8]> {
    let (start, size) = (usize::try_from(offset)?, usize::try_from(size)?);
    match start.checked_add(size).and_then(|end| data.get(start..end)) {
        Some(bytes) => Ok(bytes),
        None => bail!("a segment at {offset:#x}+{size:#x} is past the end of the file"),
    }
}

fn u16_at(data: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(field(data, at)?))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(field(data, at)?))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(field(data, at)?))
}

fn field<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N]> {
    data.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("cut short at byte {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xtask itself is linked against the build machine's glibc.
    #[test]
    fn a_glibc_program_is_dynamic() {
        let me = std::env::current_exe().unwrap();
        let linking = linking_of(&me).unwrap();
        assert!(!linking.is_static(), "{}", linking.describe());
        assert!(
            linking
                .interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{linking:?}"
        );
        assert!(
            linking.needed.iter().any(|n| n.starts_with("libc.so")),
            "{linking:?}"
        );
    }

    /// A minimal ELF64 executable: one PT_LOAD, and with `dynamic` a
    /// PT_DYNAMIC of `entries` (tag, value) whose strings are `strings`.
    fn elf(interp: Option<&str>, entries: &[(u64, u64)], strings: &[u8]) -> Vec<u8> {
        let mut data = vec![0u8; 64];
        data[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let phnum = 1 + u16::from(interp.is_some()) + u16::from(!entries.is_empty());
        data[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        data[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        data[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        let contents_at = 64 + 56 * phnum as u64;
        let mut contents = Vec::new();
        let mut headers = Vec::new();
        let mut header = |kind: u32, offset: u64, size: u64| {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&(0x1000 + offset).to_le_bytes()); // vaddr
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            headers.extend(ph);
        };
        if let Some(interp) = interp {
            header(PT_INTERP, contents_at, interp.len() as u64 + 1);
            contents.extend(interp.as_bytes());
            contents.push(0);
        }
        let strings_at = contents_at + contents.len() as u64;
        contents.extend(strings);
        if !entries.is_empty() {
            let dynamic_at = contents_at + contents.len() as u64;
            for (tag, value) in entries {
                let value = if *tag == DT_STRTAB {
                    0x1000 + strings_at
                } else {
                    *value
                };
                contents.extend(tag.to_le_bytes());
                contents.extend(value.to_le_bytes());
            }
            contents.extend([0u8; 16]);
            header(PT_DYNAMIC, dynamic_at, 16 * (entries.len() as u64 + 1));
        }
        header(PT_LOAD, 0, contents_at + contents.len() as u64);
        data.extend(headers);
        data.extend(contents);
        data
    }

    #[test]
    fn headers_say_how_it_is_linked() {
        let static_exe = parse(&elf(None, &[], b"")).unwrap();
        assert!(static_exe.is_static());
        assert_eq!(static_exe.describe(), "static: no PT_INTERP, no DT_NEEDED");

        // static-pie: a dynamic section for its relocations, no libraries.
        let static_pie = parse(&elf(None, &[(DT_STRTAB, 0), (0x6ffffffb, 1)], b"\0")).unwrap();
        assert!(static_pie.is_static() && static_pie.has_dynamic);

        let needs = parse(&elf(
            None,
            &[(DT_STRTAB, 0), (DT_NEEDED, 1)],
            b"\0libc.so\0",
        ))
        .unwrap();
        assert_eq!(needs.needed, ["libc.so"]);
        assert!(!needs.is_static());

        let interp = parse(&elf(Some("/lib/ld-musl-x86_64.so.1"), &[], b"")).unwrap();
        assert_eq!(
            interp.interpreter.as_deref(),
            Some("/lib/ld-musl-x86_64.so.1")
        );
        assert!(!interp.is_static());

        assert!(parse(b"#!/bin/sh\n").is_err());
        let mut arm64 = elf(None, &[], b"");
        arm64[0x12..0x14].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(parse(&arm64).unwrap().machine, EM_AARCH64);
        let mut cut = elf(Some("/lib/ld.so"), &[], b"");
        cut.truncate(130);
        assert!(parse(&cut).is_err());
    }
}
