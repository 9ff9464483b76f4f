//! The documents against the binary, so they cannot drift from it: every
//! subcommand and long option of `--help` is in the user guide's reference
//! (and the reference lists no option that does not exist), the README's
//! exit-status table has the codes of `--help` and of the man page, the
//! README's flags are those of `--help`, the README keeps the set-up
//! commands CI runs, and every relative link of README.md,
//! ARCHITECTURE.md and docs/*.md points to a file (and heading) that
//! exists. Needs no root.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

/// The user guide, whose "Reference" section lists every option.
const GUIDE: &str = "docs/guide.md";
const REFERENCE_HEADING: &str = "## Reference";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vmatrace/ is in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What vmatrace prints on stdout for `args`; it must succeed.
fn vmatrace(args: &[&str]) -> String {
    let out = Command::new(support::vmatrace_bin())
        .args(args)
        .output()
        .expect("running vmatrace");
    assert!(
        out.status.success(),
        "vmatrace {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `vmatrace [SUBCOMMAND] --help`.
fn help(subcommand: Option<&str>) -> String {
    match subcommand {
        Some(sub) => vmatrace(&[sub, "--help"]),
        None => vmatrace(&["--help"]),
    }
}

/// The lines of a `--help` text under `heading` (e.g. "Commands:"), up to
/// the next unindented line.
fn help_block<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// The subcommands `vmatrace --help` lists (clap's own `help` left out).
fn subcommands(main_help: &str) -> BTreeSet<String> {
    let names: BTreeSet<String> = help_block(main_help, "Commands:")
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 5, "no commands parsed from:\n{main_help}");
    names
}

/// The long options a `--help` text lists, without `--help` and
/// `--version`. Option lines are indented by 2 (`  -p, --pid`) or 6
/// (`      --json`); deeper lines are descriptions.
fn long_options(help: &str) -> BTreeSet<String> {
    help_block(help, "Options:")
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("      --").or_else(|| {
                line.strip_prefix("  -")
                    .and_then(|r| r.split_once(", --"))
                    .map(|(_, r)| r)
            })?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .filter(|name| name != "help" && name != "version")
        .collect()
}

/// The `--name` words of `text` (a name ends at anything but a letter,
/// digit or hyphen).
fn options_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            found.insert(name.clone());
        }
        rest = &after[name.len()..];
    }
    found
}

/// Text outside fenced code blocks, line by line.
fn prose_lines(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The sections of the guide's reference, by the commands their heading
/// names: "" for plain `vmatrace`, else the subcommand. A heading may
/// name several (`vmatrace` and `vmatrace record`).
fn reference_sections(guide: &str) -> BTreeMap<String, String> {
    let start = guide
        .find(&format!("\n{REFERENCE_HEADING}"))
        .unwrap_or_else(|| panic!("{GUIDE} has no {REFERENCE_HEADING:?} section"));
    let reference = &guide[start + 1..];
    let reference = match reference[1..].find("\n## ") {
        Some(end) => &reference[..end + 1],
        None => reference,
    };
    let mut sections = BTreeMap::new();
    for part in reference.split("\n### ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        for named in heading.split('`').skip(1).step_by(2) {
            let Some(command) = named.strip_prefix("vmatrace") else {
                continue;
            };
            let previous = sections.insert(command.trim().to_string(), body.to_string());
            assert!(previous.is_none(), "{GUIDE}: `{named}` has two sections");
        }
    }
    sections
}

#[test]
fn the_guide_lists_every_subcommand_and_option() {
    let main_help = help(None);
    let guide = read(GUIDE);
    let sections = reference_sections(&guide);
    let mut commands: BTreeSet<String> = subcommands(&main_help);
    commands.insert(String::new());
    let documented: BTreeSet<String> = sections.keys().cloned().collect();
    assert_eq!(
        documented, commands,
        "the sections of {GUIDE}'s reference (left) and the commands of --help (right; \"\" is plain vmatrace)"
    );
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for command in &commands {
        let help = help((!command.is_empty()).then_some(command.as_str()));
        let options = long_options(&help);
        assert!(!options.is_empty(), "no options parsed from:\n{help}");
        let section = &sections[command];
        let mentioned = options_in(section);
        for option in &options {
            if !mentioned.contains(option) {
                missing.push(format!("vmatrace {command} --{option}"));
            }
        }
        // The options the section's table lists (its first column) must
        // exist: an option removed from the code goes from the guide too.
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let first_cell = row[1..].split(" | ").next().unwrap_or_default();
            for option in options_in(first_cell) {
                if !options.contains(&option) && option != "help" && option != "version" {
                    unknown.push(format!("vmatrace {command} --{option}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options of --help missing from {GUIDE}'s reference: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "{GUIDE}'s reference lists options --help does not have: {unknown:?}"
    );
}

#[test]
fn the_man_page_has_the_subcommands_of_help() {
    let page = vmatrace(&["--generate", "man"]);
    let in_page: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SS \"vmatrace "))
        .filter_map(|l| l.strip_suffix('"'))
        .map(str::to_string)
        .collect();
    assert_eq!(in_page, subcommands(&help(None)));
}

/// The exit codes in the lines of a "code  meaning" list.
fn codes_listed<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<u32> {
    lines
        .into_iter()
        .filter_map(|l| {
            let (code, meaning) = l.trim_start().split_once("  ")?;
            (!meaning.trim().is_empty()).then_some(())?;
            code.parse().ok()
        })
        .collect()
}

/// The body of a markdown section, from its heading to the next heading
/// of the same or a higher level.
fn markdown_section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap_or_default();
    let start = markdown
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?}"))
        + heading.len()
        + 2;
    let body = &markdown[start..];
    let end = body
        .lines()
        .filter(|l| l.starts_with('#'))
        .find(|l| l.split(' ').next().is_some_and(|h| h.len() <= level.len()))
        .and_then(|l| body.find(&format!("\n{l}\n")))
        .unwrap_or(body.len());
    &body[..end]
}

#[test]
fn the_readme_has_the_exit_codes_of_help_and_the_man_page() {
    let main_help = help(None);
    let from_help = codes_listed(help_block(&main_help, "Exit status:"));
    let page = vmatrace(&["--generate", "man"]);
    let man_section = page
        .split(".SH \"EXIT STATUS\"\n")
        .nth(1)
        .expect("the man page has an EXIT STATUS section")
        .split("\n.SH ")
        .next()
        .unwrap_or_default();
    let from_man = codes_listed(man_section.lines());
    let readme = read("README.md");
    let table = markdown_section(&readme, "## Exit status");
    let from_readme: BTreeSet<u32> = table
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| ")?
                .split(" |")
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert!(from_help.len() >= 5, "codes of --help: {from_help:?}");
    assert_eq!(
        from_man, from_help,
        "the man page's exit codes (left) and --help's"
    );
    assert_eq!(
        from_readme, from_help,
        "README.md's exit-status table (left) and --help's codes"
    );
}

#[test]
fn the_readme_has_the_flags_of_help() {
    let main_help = help(None);
    // The flags' table of the long about: `  NAME   description`.
    let from_help: BTreeSet<String> = main_help
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_once("  "))
        .map(|(name, _)| name.trim())
        .filter(|name| name.len() > 2 && name.chars().all(|c| c.is_ascii_uppercase() || c == '-'))
        .map(str::to_string)
        .collect();
    assert!(
        from_help.contains("SPLIT"),
        "no flags parsed from:\n{main_help}"
    );
    let readme = read("README.md");
    let from_readme: BTreeSet<String> = markdown_section(&readme, "## The flags")
        .lines()
        .filter_map(|l| l.strip_prefix("- **")?.split_once("**"))
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(
        from_readme, from_help,
        "README.md's flags (left) and --help's"
    );
}

#[test]
fn the_readme_keeps_the_commands_ci_runs() {
    let readme = read("README.md");
    let quick_start = markdown_section(&readme, "## Quick start");
    for command in ["cargo xtask run -- -p <pid>", "cargo xtask test"] {
        assert!(
            quick_start.lines().any(|l| l.starts_with(command)),
            "README.md's Quick start lost `{command}`"
        );
    }
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo xtask test"),
        ".ci/run no longer runs the README's test command"
    );
}

/// The documents whose links are checked.
fn documents() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(
        docs.iter().any(|p| p.ends_with(GUIDE)),
        "{GUIDE} is missing"
    );
    files.extend(docs);
    files
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (a repeated heading gets
/// `-1`, `-2`, ... as on GitHub).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(markdown) {
        let Some(text) = line.strip_prefix('#') else {
            continue;
        };
        let text = text.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let base = slug(text);
        let n = seen.entry(base.clone()).or_default();
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of a markdown text's inline links `[text](target)`, outside
/// code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(markdown) {
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_points_to_something_that_exists() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("readable");
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                document.clone()
            } else {
                document.parent().expect("a directory").join(path)
            };
            let name = document.strip_prefix(workspace()).unwrap_or(&document);
            if !file.exists() {
                broken.push(format!(
                    "{}: ({target}): no {}",
                    name.display(),
                    file.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if file.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let linked = std::fs::read_to_string(&file).expect("readable");
            if !anchors(&linked).contains(anchor) {
                broken.push(format!(
                    "{}: ({target}): no heading #{anchor} in {}",
                    name.display(),
                    file.display()
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_helpers_parse_what_they_should() {
    assert_eq!(
        slug("`--top`: the allocator's pattern"),
        "--top-the-allocators-pattern"
    );
    assert_eq!(
        slug("What holds the VMAs already: `vmatrace maps`"),
        "what-holds-the-vmas-already-vmatrace-maps"
    );
    assert_eq!(
        options_in("`--max-rate N` and --stacks, not a--b or --X"),
        BTreeSet::from(["max-rate".to_string(), "stacks".to_string()])
    );
    let help = "Options:\n  -p, --pid <PID>\n          Trace\n          --force there\n      --json  JSON\n  -h, --help\n";
    assert_eq!(
        long_options(help),
        BTreeSet::from(["pid".to_string(), "json".to_string()])
    );
    assert_eq!(
        link_targets("[a](b.md#c) `[x](y)` [d](#e)\n```\n[f](g)\n```\n"),
        vec!["b.md#c".to_string(), "#e".to_string()]
    );
}
