//! The anatomy of a count, for a person: the groups largest first, each
//! with its numbers, what it means, what to do and a few of its lines.

use std::fmt::Write;

use crate::{
    model::anatomy::{Anatomy, Group, Kind, reason_words},
    output::units::human_bytes,
};

/// The full anatomy (`vmatrace maps`), under a headline naming `whose`.
pub fn full(whose: &str, anatomy: &Anatomy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", headline(whose, anatomy));
    for (rank, group) in anatomy.groups.iter().enumerate() {
        let _ = writeln!(out);
        // Advice on a group that holds next to nothing of the limit is
        // noise, but the largest group's is what the reader came for.
        let advise = rank == 0 || group.share_of_limit >= ADVICE_SHARE_MIN;
        write_group(&mut out, group, advise);
    }
    if !anatomy.merge_blockers.is_empty() {
        let blockers: Vec<String> = anatomy
            .merge_blockers
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason_words(reason)))
            .collect();
        let _ = writeln!(
            out,
            "\nadjacent VMAs the kernel kept apart, in all groups: {}",
            blockers.join(", ")
        );
    }
    out
}

/// `pid 10993 (holder): 30022 VMAs, 45.8% of vm.max_map_count 65530`
pub fn headline(whose: &str, anatomy: &Anatomy) -> String {
    format!(
        "{whose}: {} VMAs, {:.1}% of vm.max_map_count {}",
        anatomy.vmas,
        crate::model::anatomy::percent(anatomy.vmas, anatomy.limit),
        anatomy.limit
    )
}

/// The largest groups on one line: `holes 29999 (45.8%), libraries 14`.
pub fn brief(anatomy: &Anatomy, groups: usize) -> String {
    anatomy
        .groups
        .iter()
        .take(groups)
        .map(|g| {
            if g.share_of_limit >= 1.0 {
                format!("{} {} ({:.1}%)", g.kind.name(), g.vmas, g.share_of_limit)
            } else {
                format!("{} {}", g.kind.name(), g.vmas)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent of the limit a group holds before its advice is printed, the
/// largest group's aside (JSON has it always).
const ADVICE_SHARE_MIN: f64 = 1.0;

fn write_group(out: &mut String, group: &Group, advise: bool) {
    let _ = writeln!(
        out,
        "{:<14} {:>6} VMAs {:>5.1}%  {} in all, typically {}, within {:#x}-{:#x}",
        group.kind.name(),
        group.vmas,
        group.share_of_limit,
        human_bytes(group.bytes),
        human_bytes(group.typical_size),
        group.start,
        group.end,
    );
    let _ = writeln!(out, "  {}", group.meaning);
    if advise && !group.advice.is_empty() {
        let _ = writeln!(out, "  what to do: {}", group.advice);
    }
    let listed = matches!(
        group.kind,
        Kind::Files | Kind::Libraries | Kind::Holes | Kind::Named
    );
    if listed {
        for part in &group.parts {
            let _ = writeln!(
                out,
                "    {:>6} VMAs {:>9}  {} {}",
                part.vmas,
                human_bytes(part.bytes),
                part.what,
                part.name
            );
        }
    }
    for example in &group.examples {
        let _ = writeln!(out, "    | {example}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{anatomy::classify, maps_file::parse};

    #[test]
    fn the_text_leads_with_the_largest_group() {
        let text: String = (0..40u64)
            .map(|k| {
                let start = 0x7f0000000000 + k * 0x2000;
                format!("{start:x}-{:x} rw-p 00000000 00:00 0 \n", start + 0x1000)
            })
            .collect();
        let anatomy = classify(&parse(&text).unwrap(), &text, None, 100, 2);
        let printed = full("pid 7 (holder)", &anatomy);
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(
            lines[0],
            "pid 7 (holder): 40 VMAs, 40.0% of vm.max_map_count 100"
        );
        assert!(
            lines[2].starts_with(
                "holes              40 VMAs  40.0%  160.0KiB in all, typically 4.0KiB"
            ),
            "{printed}"
        );
        assert!(printed.contains("1 run of anonymous pieces"), "{printed}");
        assert!(
            printed.contains("run 0x7f0000000000-0x7f000004f000"),
            "{printed}"
        );
        assert_eq!(printed.matches("    | ").count(), 2, "{printed}");
        assert_eq!(brief(&anatomy, 3), "holes 40 (40.0%)");
    }
}
