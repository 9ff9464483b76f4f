//! `vmatrace --generate WHAT`: the man page and shell completion scripts,
//! made from the clap definitions in [`crate::cli`], so they never drift
//! from `--help`. `cargo xtask dist` runs it on the built binary (as
//! ripgrep does) and packs what it prints.
//!
//! The option is read before clap parses anything and is not one of the
//! clap definitions: a hidden clap option would still be offered by the
//! bash completions it generates.

use std::{ffi::OsString, io::Write};

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;
use clap_mangen::{
    Man,
    roff::{Roff, roman},
};

use crate::cli::Cli;

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, vmatrace(1), in roff.
    Man,
    /// bash completions.
    CompleteBash,
    /// zsh completions.
    CompleteZsh,
    /// fish completions.
    CompleteFish,
}

/// `Some` when the command line is `vmatrace --generate WHAT` (nothing
/// else): what to print, or why WHAT is not something it prints.
pub fn requested(args: &[OsString]) -> Option<Result<Generated, String>> {
    if args.get(1)? != "--generate" {
        return None;
    }
    let names = || {
        Generated::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match &args[2..] {
        [what] => Generated::from_str(&what.to_string_lossy(), false)
            .map_err(|_| format!("--generate {what:?}: one of {}", names())),
        _ => Err(format!("usage: vmatrace --generate <{}>", names())),
    })
}

/// Writes what was asked for to `out`.
pub fn generate(what: Generated, out: &mut dyn Write) -> std::io::Result<()> {
    let shell = match what {
        Generated::Man => return man_page(out),
        Generated::CompleteBash => Shell::Bash,
        Generated::CompleteZsh => Shell::Zsh,
        Generated::CompleteFish => Shell::Fish,
    };
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// vmatrace(1): one page for the command and its subcommands, so `man
/// vmatrace` has every option (clap_mangen alone makes a page per
/// subcommand); `--help`'s closing text (examples, exit status) becomes
/// sections of their own, laid out as in `--help`.
fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = for_the_page(Cli::command());
    cmd.build();
    let man = Man::new(cmd.clone())
        .date(env!("VMATRACE_COMMIT_DATE"))
        .source(format!("vmatrace {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    man.render_title(out)?;
    out.write_all(&section(|w| man.render_name_section(w))?)?;
    out.write_all(&section(|w| man.render_synopsis_section(w))?)?;
    out.write_all(b".SH DESCRIPTION\n")?;
    out.write_all(description(&cmd).as_bytes())?;
    out.write_all(&section(|w| man.render_options_section(w))?)?;
    out.write_all(b".SH COMMANDS\n")?;
    // clap's own `help` subcommand is --help again.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        subcommand(sub, out)?;
    }
    if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        out.write_all(closing_sections(&text.to_string()).as_bytes())?;
    }
    out.write_all(&section(|w| man.render_version_section(w))?)?;
    Ok(())
}

/// The page shows every option: one-line help that `--help` keeps for
/// `--help` only (`hide_short_help`, e.g. --btf) is the option's long help
/// here, which clap_mangen prints (it prints no short help hidden so).
fn for_the_page(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|arg| match arg.get_help().cloned() {
        Some(help) if arg.is_hide_short_help_set() && arg.get_long_help().is_none() => {
            arg.long_help(help)
        }
        _ => arg,
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, for_the_page))
}

/// One subcommand, under COMMANDS: its name and synopsis, what it does,
/// its options.
fn subcommand(sub: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(sub.clone());
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    out.write_all(format!(".SS \"{name}\"\n").as_bytes())?;
    out.write_all(&body(section(|w| man.render_synopsis_section(w))?))?;
    out.write_all(b".PP\n")?;
    out.write_all(description(sub).as_bytes())?;
    out.write_all(&body(section(|w| man.render_options_section(w))?))?;
    Ok(())
}

/// A command's long about: paragraphs filled, indented lines (the flags'
/// table) kept as they are, which filling would run together.
fn description(cmd: &clap::Command) -> String {
    let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) else {
        return String::new();
    };
    let mut roff = Roff::new();
    let mut verbatim = false;
    for line in about.to_string().lines() {
        let indented = line.starts_with(' ');
        if indented != verbatim {
            roff.control(if indented { "nf" } else { "fi" }, []);
            verbatim = indented;
        }
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else {
            roff.text([roman(line)]);
        }
    }
    if verbatim {
        roff.control("fi", []);
    }
    without_preamble(&roff)
}

/// A section rendered by clap_mangen, without the preamble each of its
/// renderers repeats (the page has it once, from the title).
fn section(render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let preamble = Roff::new().render();
    Ok(buf
        .strip_prefix(preamble.as_bytes())
        .map(<[u8]>::to_vec)
        .unwrap_or(buf))
}

/// A section's text without its `.SH` heading lines, to sit under a
/// subcommand's `.SS` heading.
fn body(section: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&section);
    text.lines()
        .filter(|line| !line.starts_with(".SH "))
        .flat_map(|line| [line, "\n"])
        .collect::<String>()
        .into_bytes()
}

/// `--help`'s closing text as man sections: each unindented line ending
/// in `:` ("Examples:", "Exit status:") heads a section, and what follows
/// keeps its lines and columns (no filling).
fn closing_sections(text: &str) -> String {
    let mut roff = Roff::new();
    let mut in_block = false;
    for line in text.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.starts_with(' ') && !h.is_empty());
        if let Some(heading) = heading {
            if in_block {
                roff.control("fi", []);
            }
            roff.control("SH", [heading.to_uppercase().as_str()]);
            roff.control("nf", []);
            in_block = true;
        } else if line.is_empty() {
            roff.text([roman("")]);
        } else {
            roff.text([roman(line)]);
        }
    }
    if in_block {
        roff.control("fi", []);
    }
    without_preamble(&roff)
}

/// Roff text as clap_mangen writes it (apostrophes as `\*(Aq`, defined by
/// the preamble the page has once), without that preamble.
fn without_preamble(roff: &Roff) -> String {
    let preamble = Roff::new().render();
    let text = roff.render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn generated(what: Generated) -> String {
        let mut out = Vec::new();
        generate(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_man_page_has_every_option_of_every_command() {
        let page = generated(Generated::Man);
        assert!(
            page.starts_with(&Roff::new().render()),
            "one preamble first"
        );
        assert_eq!(page.matches(".ie \\n(.g").count(), 1, "one preamble only");
        assert!(page.contains(".TH vmatrace 1"), "{}", &page[..400]);
        for heading in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "COMMANDS",
            "EXAMPLES",
            "\"EXIT STATUS\"",
            "VERSION",
        ] {
            assert!(page.contains(&format!(".SH {heading}\n")), "no {heading}");
        }
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let name = format!(".SS \"vmatrace {}\"", sub.get_name());
            assert!(page.contains(&name), "no {name}");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                        "{} --{long} is not in the page",
                        sub.get_name()
                    );
                }
            }
        }
        // Options hidden from the short help are in the page, with their
        // help; clap's help subcommand and --generate are not.
        assert!(page.contains("Read kernel type information from this BTF file"));
        assert!(page.contains("Where each call\\*(Aqs VMA counts are read"));
        assert!(!page.contains("vmatrace help"));
        assert!(!page.contains("generate"));
        // The flags' table keeps its lines.
        assert!(page.contains(".nf\n  SPLIT       the call cut"), "{page}");
        // The examples keep their lines.
        assert!(page.contains(".SH EXAMPLES\n.nf\n  sudo vmatrace \\-p 1234   "));
    }

    #[test]
    fn completions_know_the_subcommands_and_options() {
        for (what, marker) in [
            (Generated::CompleteBash, "complete -F"),
            (Generated::CompleteZsh, "#compdef vmatrace"),
            (Generated::CompleteFish, "complete -c vmatrace"),
        ] {
            let script = generated(what);
            assert!(script.contains(marker), "{what:?}: no {marker:?}");
            for word in ["record", "replay", "serve", "only-flagged", "max-size"] {
                assert!(script.contains(word), "{what:?}: no {word}");
            }
            assert!(!script.contains("generate"), "{what:?} offers --generate");
        }
    }

    #[test]
    fn generate_is_read_alone_and_hidden() {
        let args = |words: &[&str]| -> Vec<OsString> {
            std::iter::once("vmatrace")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect()
        };
        assert_eq!(
            requested(&args(&["--generate", "complete-zsh"])),
            Some(Ok(Generated::CompleteZsh))
        );
        assert_eq!(
            requested(&args(&["--generate", "man"])),
            Some(Ok(Generated::Man))
        );
        let bad = requested(&args(&["--generate", "pdf"]))
            .unwrap()
            .unwrap_err();
        assert!(
            bad.contains("man, complete-bash, complete-zsh, complete-fish"),
            "{bad}"
        );
        assert!(requested(&args(&["--generate"])).unwrap().is_err());
        assert!(
            requested(&args(&["--generate", "man", "-p", "1"]))
                .unwrap()
                .is_err()
        );
        assert_eq!(requested(&args(&["-p", "1", "--generate", "man"])), None);
        assert_eq!(requested(&args(&[])), None);
        // clap knows nothing of it: not in --help, an error anywhere else.
        assert!(
            !Cli::command()
                .render_long_help()
                .to_string()
                .contains("generate")
        );
        assert!(Cli::try_parse_from(["vmatrace", "-p", "1", "--generate", "man"]).is_err());
    }
}
