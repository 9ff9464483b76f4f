//! VMA flame graphs: the stacks of the traced calls, weighted by the VMAs
//! they added (or their SPLITs, ENOMEMs, or calls), folded as
//! FlameGraph.pl, inferno and speedscope read them, and drawn with
//! inferno.

use std::{collections::HashMap, io::Write};

use anyhow::Context;
use vmatrace_common::{Call, Event};

use crate::{
    model::{detect, processes::Applied, processes::comm_str},
    stacks::symbols::{JIT_MODULE, Stack},
};

/// What a stack's width stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Weight {
    /// VMAs the calls added (their own exact delta, when it grew).
    Vmas,
    /// Calls flagged SPLIT.
    Splits,
    /// Calls that failed with ENOMEM.
    Enomem,
    /// Every call with a stack.
    Calls,
}

impl Weight {
    /// The unit, for the title and the tooltips.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Vmas => "VMAs added",
            Weight::Splits => "SPLITs",
            Weight::Enomem => "ENOMEMs",
            Weight::Calls => "calls",
        }
    }

    fn of(self, event: &Event, applied: &Applied) -> u64 {
        match self {
            Weight::Vmas => detect::own_delta(event).unwrap_or(0).max(0) as u64,
            Weight::Splits => u64::from(applied.flags.split),
            Weight::Enomem => u64::from(applied.flags.enomem),
            Weight::Calls => 1,
        }
    }
}

/// Stacks folded to one line each (`comm;root;...;leaf;call`), with their
/// weights summed.
pub struct Folded {
    weight: Weight,
    lines: HashMap<String, u64>,
    /// Traced calls seen, and how many of them had a stack.
    pub calls: u64,
    pub calls_with_stacks: u64,
}

impl Folded {
    pub fn new(weight: Weight) -> Folded {
        Folded {
            weight,
            lines: HashMap::new(),
            calls: 0,
            calls_with_stacks: 0,
        }
    }

    /// Counts a traced call, and weighs its stack if it has one.
    pub fn add(&mut self, event: &Event, applied: &Applied, stack: Option<&Stack>) {
        self.calls += 1;
        let Some(stack) = stack else {
            return;
        };
        self.calls_with_stacks += 1;
        let weight = self.weight.of(event, applied);
        if weight == 0 {
            return;
        }
        *self.lines.entry(fold(event, stack)).or_default() += weight;
    }

    /// The sum of the weights: what the graph's full width stands for.
    pub fn total(&self) -> u64 {
        self.lines.values().sum()
    }

    /// The folded lines, sorted (as inferno wants them).
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .lines
            .iter()
            .map(|(stack, weight)| format!("{stack} {weight}"))
            .collect();
        lines.sort();
        lines
    }

    pub fn write_folded(&self, out: &mut impl Write) -> std::io::Result<()> {
        for line in self.lines() {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// `stacks of 120 of 4000 traced calls (record --stacks records every
    /// call's)`: what the graph can and cannot show.
    pub fn coverage(&self) -> String {
        let all = if self.calls_with_stacks < self.calls {
            " (the flagged calls'; `record --stacks` records every call's)"
        } else {
            ""
        };
        format!(
            "stacks of {} of {} traced calls{all}",
            self.calls_with_stacks, self.calls
        )
    }

    /// The flame graph as SVG, with inferno.
    pub fn write_svg(&self, title: &str, out: impl Write) -> anyhow::Result<()> {
        let lines = self.lines();
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_string();
        options.subtitle = Some(self.coverage());
        options.count_name = self.weight.unit().to_string();
        options.name_type = "Frame:".to_string();
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
            .context("drawing the flame graph")
    }
}

/// `redis-server;_start;main;...;je_pages_unmap;munmap;[munmap]`: the process, the
/// frames from the outermost, and the call.
fn fold(event: &Event, stack: &Stack) -> String {
    let mut parts: Vec<String> = vec![clean(&comm_str(&event.comm))];
    if stack.truncated {
        parts.push("[truncated]".into());
    }
    parts.extend(stack.frames.iter().rev().map(|frame| {
        let name = match (&frame.function, &frame.module) {
            (Some(function), _) => function.clone(),
            // Generated code no perf map named: one `[jit]` frame, not an
            // offset in a file it is not in.
            (None, Some(module)) if module == JIT_MODULE => JIT_MODULE.into(),
            (None, Some(module)) => {
                let file = module.rsplit('/').next().unwrap_or(module);
                format!("{file}+{:#x}", frame.offset)
            }
            (None, None) => "[unknown]".into(),
        };
        clean(&name)
    }));
    // The call itself, bracketed as FlameGraph brackets what is not a
    // function: `[munmap]`.
    parts.push(format!(
        "[{}]",
        Call::from_u8(event.call).map_or("?", Call::name)
    ));
    parts.join(";")
}

/// A frame's name as one field of a folded line: no `;`, no line break,
/// and no blank before the weight can be mistaken for it.
fn clean(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::symbols::Frame;

    fn frame(function: &str) -> Frame {
        Frame {
            addr: 0,
            function: Some(function.into()),
            offset: 0,
            module: None,
            file: None,
            line: None,
            build_id: None,
        }
    }

    #[test]
    fn stacks_fold_from_the_root_to_the_call() {
        let mut event = Event::zeroed();
        event.comm[..5].copy_from_slice(b"redis");
        event.call = Call::Munmap as u8;
        let stack = Stack {
            frames: vec![frame("munmap"), frame("je_pages_unmap"), frame("main")],
            truncated: false,
        };
        assert_eq!(
            fold(&event, &stack),
            "redis;main;je_pages_unmap;munmap;[munmap]"
        );
        let cut = Stack {
            frames: vec![frame("a;b")],
            truncated: true,
        };
        assert_eq!(fold(&event, &cut), "redis;[truncated];a:b;[munmap]");
    }
}
