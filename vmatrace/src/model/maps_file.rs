//! `/proc/PID/maps` and `/proc/PID/smaps` text, live or saved to a support
//! ticket, read into VMAs. A saved file comes from someone else: every
//! malformed line is an error naming its line, never a panic.
//!
//! Each mapping line is parsed by procfs; what procfs cannot be trusted
//! with is checked first (a line cut after the inode, which procfs takes
//! for malformed, and a `/SYSV` name shorter than its key, on which it
//! panics by slicing).

use std::collections::HashMap;

use procfs::{
    FromBufRead,
    process::{MMapPath, MemoryMap, MemoryMaps, VmFlags},
};

/// One VMA, with where its line starts in the text (for examples).
#[derive(Clone, Debug)]
pub struct Vma {
    pub map: MemoryMap,
    /// smaps' `VmFlags`, when the text has them.
    pub flags: Option<VmFlags>,
    /// Byte offset of its line in the text.
    pub at: usize,
}

impl Vma {
    pub fn start(&self) -> u64 {
        self.map.address.0
    }
    pub fn end(&self) -> u64 {
        self.map.address.1
    }
    pub fn size(&self) -> u64 {
        self.end().saturating_sub(self.start())
    }
    /// Its line as the text has it.
    pub fn line<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.at..)
            .and_then(|rest| rest.lines().next())
            .unwrap_or("")
            .trim_end()
    }
}

/// A line that is not what maps or smaps has, by its 1-based number.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
    pub text: String,
}

/// Reads maps or smaps text (the two are told apart line by line).
pub fn parse(text: &str) -> Result<Vec<Vma>, ParseError> {
    let mut vmas: Vec<Vma> = Vec::new();
    let mut at = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line_at = at;
        at += raw.len();
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let fail = |reason: &str| ParseError {
            line: index + 1,
            reason: reason.to_string(),
            text: line.chars().take(120).collect(),
        };
        if line.starts_with(|c: char| c.is_ascii_uppercase()) {
            // An smaps field of the mapping above.
            let Some(last) = vmas.last_mut() else {
                return Err(fail("an smaps field before any mapping"));
            };
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                last.flags = Some(parse_flags(flags));
            }
            continue;
        }
        let map = parse_mapping(line).map_err(|reason| fail(&reason))?;
        if let Some(previous) = vmas.last()
            && map.address.0 < previous.end()
        {
            return Err(fail("mappings out of address order or overlapping"));
        }
        vmas.push(Vma {
            map,
            flags: None,
            at: line_at,
        });
    }
    Ok(vmas)
}

/// Each mapping's `VmFlags` from smaps text read line by line (a live
/// process's smaps is twenty times its maps: it is never held whole),
/// given to the mappings parsed from maps by their starts.
pub fn add_flags(vmas: &mut [Vma], smaps: impl std::io::BufRead) {
    let mut flags: HashMap<u64, VmFlags> = HashMap::new();
    let mut start = None;
    for line in smaps.lines().map_while(Result::ok) {
        if let Some(listed) = line.strip_prefix("VmFlags:") {
            if let Some(start) = start.take() {
                flags.insert(start, parse_flags(listed));
            }
        } else if !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            start = line
                .split_once('-')
                .and_then(|(s, _)| u64::from_str_radix(s, 16).ok());
        }
    }
    for vma in vmas {
        vma.flags = flags.get(&vma.start()).copied();
    }
}

fn parse_flags(flags: &str) -> VmFlags {
    flags
        .split_ascii_whitespace()
        .filter_map(|f| VmFlags::from_name(&f.to_ascii_uppercase()))
        .fold(VmFlags::NONE, |all, f| all | f)
}

fn parse_mapping(line: &str) -> Result<MemoryMap, String> {
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    if fields.len() < 5 {
        return Err("not a mapping (start-end perms offset dev inode [name])".into());
    }
    let (start, end) = fields[0]
        .split_once('-')
        .ok_or("the address range is not start-end")?;
    let start = u64::from_str_radix(start, 16).map_err(|_| "the start is not hex")?;
    let end = u64::from_str_radix(end, 16).map_err(|_| "the end is not hex")?;
    if end <= start {
        return Err("the mapping ends before it starts".into());
    }
    if fields[1].len() != 4 || !fields[1].chars().all(|c| "rwxsp-".contains(c)) {
        return Err("the permissions are not like rw-p".into());
    }
    let name = fields.get(5).map(|n| n.trim()).unwrap_or("");
    if let Some(key) = name.strip_prefix("/SYSV")
        && (key.len() < 8 || !key.is_char_boundary(8))
    {
        return Err("a SysV segment name without its 8-digit key".into());
    }
    // A line saved without its trailing blank has five fields; procfs
    // wants the sixth, even empty.
    let whole = if fields.len() == 5 {
        format!("{line} \n")
    } else {
        format!("{line}\n")
    };
    let parsed =
        MemoryMaps::from_buf_read(whole.as_bytes()).map_err(|e| format!("not a mapping ({e})"))?;
    parsed
        .0
        .into_iter()
        .next()
        .ok_or_else(|| "not a mapping".to_string())
}

/// Whether a name is the `[vsyscall]` page, which maps lists but the
/// kernel's count does not hold.
pub fn is_vsyscall(vma: &Vma) -> bool {
    matches!(vma.map.pathname, MMapPath::Vsyscall)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55de9ed93000-55de9ed95000 r--p 00000000 fe:00 247030                     /usr/bin/cat
55de9ed95000-55de9ed9a000 r-xp 00002000 fe:00 247030                     /usr/bin/cat
7ff392d41000-7ff392e05000 rw-p 00000000 00:00 0 
7ff392e05000-7ff392e06000 ---p 00000000 00:00 0
7ffd1e6a6000-7ffd1e6c7000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn maps_lines_are_read_with_their_places() {
        let vmas = parse(MAPS).unwrap();
        assert_eq!(vmas.len(), 6);
        assert_eq!(vmas[0].start(), 0x55de9ed93000);
        assert_eq!(vmas[1].map.offset, 0x2000);
        assert_eq!(vmas[3].size(), 4096, "a line without its trailing blank");
        assert!(vmas[3].line(MAPS).ends_with("00:00 0"));
        assert!(matches!(vmas[4].map.pathname, MMapPath::Stack));
        assert!(is_vsyscall(&vmas[5]));
    }

    #[test]
    fn smaps_fields_belong_to_the_mapping_above() {
        let smaps = "\
7ff392d41000-7ff392e05000 rw-p 00000000 00:00 0 
Size:                784 kB
VmFlags: rd wr mr mw me ac lo
7ff392e05000-7ff392e06000 rw-p 00000000 00:00 0 
Size:                  4 kB
VmFlags: rd wr mr mw me ac
";
        let vmas = parse(smaps).unwrap();
        assert_eq!(vmas.len(), 2);
        assert!(vmas[0].flags.unwrap().contains(VmFlags::LO));
        assert!(!vmas[1].flags.unwrap().contains(VmFlags::LO));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_numbers() {
        for (text, line, reason) in [
            ("7f-7e rw-p 0 00:00 0 \n", 1, "ends before"),
            ("7f00-7f10 rw-p 0 00:00 0 \nhello\n", 2, "not a mapping"),
            ("Size: 4 kB\n", 1, "before any mapping"),
            ("7f00-zz rw-p 0 00:00 0 \n", 1, "not hex"),
            ("7f00-7f10 rwq 0 00:00 0 \n", 1, "permissions"),
            ("7f00-7f10 rw-s 0 00:01 5 /SYSV12\n", 1, "SysV"),
            ("7f00-7f10 rw-p 0 00:00 x \n", 1, "not a mapping"),
            (
                "7f00-7f10 rw-p 0 00:00 0 \n7e00-7f00 rw-p 0 00:00 0 \n",
                2,
                "order",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
    }
}
