//! User stacks, symbolized with blazesym while the process is alive: the
//! function, and file:line where debug info exists, for the main binary
//! and shared libraries, PIE and ASLR included.

use std::{collections::HashMap, sync::Arc};

use blazesym::{
    Pid,
    symbolize::{Input, Symbolized, Symbolizer, source::Process, source::Source},
};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub addr: u64,
    /// The function (demangled), if known.
    pub function: Option<String>,
    /// Offset of `addr` in the function.
    pub offset: u64,
    /// The ELF file the address is in.
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The walk did not reach a thread's first function (`_start`,
    /// `start_thread`, `clone3`...): code without frame pointers ended it
    /// early, and the callers above the last frame are missing.
    pub truncated: bool,
}

/// Functions a complete user stack ends in.
const STACK_ROOTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "thread_start",
];

impl Stack {
    pub fn new(frames: Vec<Frame>) -> Stack {
        let truncated = !frames.iter().any(|f| {
            f.function
                .as_deref()
                .is_some_and(|name| STACK_ROOTS.iter().any(|root| name.ends_with(root)))
        });
        Stack { frames, truncated }
    }
}

/// Symbolizes stacks, remembering each (pid, stack id) it has done: the
/// kernel gives one id to every identical stack.
pub struct Symbols {
    symbolizer: Symbolizer,
    done: HashMap<(u32, u32), Arc<Stack>>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbolizer: Symbolizer::new(),
            done: HashMap::new(),
        }
    }
}

impl Symbols {
    pub fn cached(&self, pid: u32, stack_id: u32) -> Option<Arc<Stack>> {
        self.done.get(&(pid, stack_id)).cloned()
    }

    /// The stack `stack_id` of `pid`, its addresses read by `addresses`
    /// the first time. Returns it and whether it is new.
    pub fn stack(
        &mut self,
        pid: u32,
        stack_id: u32,
        addresses: impl FnOnce() -> Option<Vec<u64>>,
    ) -> Option<(Arc<Stack>, bool)> {
        if let Some(stack) = self.cached(pid, stack_id) {
            return Some((stack, false));
        }
        let addrs = addresses()?;
        let stack = Arc::new(Stack::new(self.symbolize(pid, &addrs)));
        self.done.insert((pid, stack_id), stack.clone());
        Some((stack, true))
    }

    /// Remembers a stack symbolized elsewhere (read back from a trace).
    pub fn insert(&mut self, pid: u32, stack_id: u32, stack: Stack) {
        self.done.insert((pid, stack_id), Arc::new(stack));
    }

    /// Symbolizes through the live process's /proc entries. The first
    /// stack in a binary parses its symbols and DWARF (0.4 s for a 5 MB
    /// debug build here); later ones take microseconds to milliseconds.
    fn symbolize(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let source = Source::Process(Process::new(Pid::from(pid)));
        let symbolized = self
            .symbolizer
            .symbolize(&source, Input::AbsAddr(addrs))
            .unwrap_or_default();
        addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| match symbolized.get(i) {
                Some(Symbolized::Sym(sym)) => Frame {
                    addr: *addr,
                    function: Some(sym.name.to_string()),
                    offset: sym.offset as u64,
                    module: sym
                        .module
                        .as_ref()
                        .map(|m| m.to_string_lossy().into_owned()),
                    file: sym.code_info.as_ref().map(|c| {
                        let file = c.file.to_string_lossy();
                        match &c.dir {
                            Some(dir) => dir.join(&*file).display().to_string(),
                            None => file.into_owned(),
                        }
                    }),
                    line: sym.code_info.as_ref().and_then(|c| c.line),
                },
                _ => Frame {
                    addr: *addr,
                    function: None,
                    offset: 0,
                    module: None,
                    file: None,
                    line: None,
                },
            })
            .collect()
    }
}

/// One line per frame, as a backtrace prints them.
pub fn format_stack(stack: &Stack) -> String {
    let mut text = String::new();
    for (i, frame) in stack.frames.iter().enumerate() {
        let name = frame.function.as_deref().unwrap_or("??");
        text.push_str(&format!("    #{i:<2} {:#014x} {name}", frame.addr));
        if frame.offset > 0 {
            text.push_str(&format!("+{:#x}", frame.offset));
        }
        match (&frame.file, frame.line) {
            (Some(file), Some(line)) => text.push_str(&format!(" ({file}:{line})")),
            _ => {
                if let Some(module) = &frame.module {
                    let base = module.rsplit('/').next().unwrap_or(module);
                    text.push_str(&format!(" ({base})"));
                }
            }
        }
        text.push('\n');
    }
    if stack.truncated {
        text.push_str("    ... (truncated: the walk stopped early, code without frame pointers)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame {
            addr: 0x1000,
            function: Some(name.into()),
            offset: 4,
            module: Some("/usr/lib/libc.so.6".into()),
            file: None,
            line: None,
        }
    }

    #[test]
    fn stacks_that_reach_a_root_are_whole() {
        assert!(
            !Stack::new(vec![
                frame("munmap"),
                frame("main"),
                frame("__libc_start_call_main")
            ])
            .truncated
        );
        assert!(Stack::new(vec![frame("munmap"), frame("je_pages_unmap")]).truncated);
    }

    #[test]
    fn frames_print_like_a_backtrace() {
        let text = format_stack(&Stack::new(vec![frame("munmap")]));
        assert!(
            text.contains("#0  0x000000001000 munmap+0x4 (libc.so.6)"),
            "{text}"
        );
        assert!(text.contains("truncated"));
    }

    #[test]
    fn own_stack_symbolizes_to_this_test() {
        let here = own_stack_symbolizes_to_this_test as *const () as u64;
        let mut symbols = Symbols::default();
        let (stack, new) = symbols
            .stack(std::process::id(), 1, || Some(vec![here]))
            .unwrap();
        assert!(new);
        assert!(
            stack.frames.iter().any(|f| f
                .function
                .as_deref()
                .is_some_and(|n| n.contains("own_stack_symbolizes_to_this_test"))),
            "{stack:?}"
        );
        let (_, new) = symbols.stack(std::process::id(), 1, || None).unwrap();
        assert!(!new, "cached");
    }
}
