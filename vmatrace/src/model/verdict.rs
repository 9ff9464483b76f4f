//! The verdict: for each process at risk, what happened, how, and what to
//! do, in plain words and with the numbers. Advice is given only where the
//! observed calls support it, and says so when it is a guess.

use serde::Serialize;

use crate::model::{allocator::Allocator, processes::ProcessState};

/// One process's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub pid: u32,
    pub comm: String,
    /// What happened: the limit hit, or how near the count came.
    pub what: String,
    /// How: the calls and mappings that added the VMAs.
    pub how: Option<String>,
    pub advice: Vec<Advice>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Advice {
    pub text: String,
    /// `observed` when the calls seen support it; `guess` when it rests on
    /// what usually causes such calls.
    pub basis: &'static str,
}

/// What the verdicts need besides each process's state.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub limit: u64,
    /// The NEAR-LIMIT threshold in VMAs.
    pub warn_at: u64,
    /// CLOCK_MONOTONIC ns of the start of tracing, for "+12.3 s".
    pub start_ns: u64,
    /// The call site that added the most VMAs, by pid, when stacks were
    /// ranked.
    pub top_site: &'a dyn Fn(u32) -> Option<String>,
}

/// Whether a process is at risk: it failed with ENOMEM, crossed the
/// NEAR-LIMIT threshold, or peaked at half the limit or more.
pub fn at_risk(state: &ProcessState, ctx: &Context) -> bool {
    state.enomem > 0
        || state.near_limit > 0
        || (state.peak > 0 && state.peak as u64 * 2 >= peak_limit(state, ctx))
}

/// The limit in force when the count peaked: the trace may have run under
/// another limit than the one at its end.
fn peak_limit(state: &ProcessState, ctx: &Context) -> u64 {
    if state.peak_limit == 0 {
        ctx.limit
    } else {
        state.peak_limit
    }
}

/// The highest limit a call failed at (the limit may have changed during
/// the trace), if any did.
fn ran_out_at(state: &ProcessState) -> Option<u64> {
    state.vma_limit_enomem_by_limit.keys().next_back().copied()
}

/// `; the limit was 300 then (65530 at the end)`, when the trace ran under
/// other limits than the one it ended with.
fn limits_then(state: &ProcessState, ctx: &Context) -> String {
    let failed_at: Vec<String> = state
        .vma_limit_enomem_by_limit
        .iter()
        .map(|(limit, n)| format!("{} at {limit}", calls(*n)))
        .collect();
    let other = state
        .vma_limit_enomem_by_limit
        .keys()
        .chain(std::iter::once(&peak_limit(state, ctx)))
        .any(|&limit| limit != ctx.limit);
    match (other, failed_at.len()) {
        (false, _) => String::new(),
        (true, 0) => format!(
            " (under a vm.max_map_count of {}; {} at the end of the trace)",
            peak_limit(state, ctx),
            ctx.limit
        ),
        (true, _) => format!(
            " (the limit changed during the trace: {} failed; {} at its end)",
            failed_at.join(", "),
            ctx.limit
        ),
    }
}

/// The verdicts of the processes at risk, the closest to the limit first.
pub fn verdicts<'a>(states: impl Iterator<Item = &'a ProcessState>, ctx: &Context) -> Vec<Verdict> {
    let mut at_risk: Vec<&ProcessState> = states.filter(|s| at_risk(s, ctx)).collect();
    at_risk.sort_by_key(|s| {
        (
            std::cmp::Reverse(s.enomem),
            std::cmp::Reverse(s.peak),
            s.pid,
        )
    });
    at_risk.into_iter().map(|s| verdict(s, ctx)).collect()
}

pub fn verdict(state: &ProcessState, ctx: &Context) -> Verdict {
    Verdict {
        pid: state.pid,
        comm: state.comm.clone(),
        what: what_happened(state, ctx),
        how: how(state, ctx),
        advice: advice(state, ctx),
    }
}

impl Verdict {
    /// One paragraph, as the summary and the report open with.
    pub fn to_text(&self) -> String {
        let mut text = format!("pid {} ({}) {}.", self.pid, self.comm, self.what);
        if let Some(how) = &self.how {
            text.push_str(&format!(" {how}."));
        }
        for (n, advice) in self.advice.iter().enumerate() {
            let guess = if advice.basis == "guess" {
                " (a guess from the calls seen)"
            } else {
                ""
            };
            text.push_str(&format!(" ({}) {}{guess}.", n + 1, advice.text));
        }
        text
    }
}

fn at(ns: u64, ctx: &Context) -> String {
    format!("+{:.1} s", ns.saturating_sub(ctx.start_ns) as f64 / 1e9)
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

fn what_happened(state: &ProcessState, ctx: &Context) -> String {
    let limit = peak_limit(state, ctx);
    let peak = format!(
        "{} of {} VMAs ({:.1}%) at {}{}",
        state.peak,
        limit,
        percent(state.peak.max(0) as u64, limit),
        at(state.peak_ns, ctx),
        limits_then(state, ctx)
    );
    let at_limit = vma_limit_enomems(state);
    let for_memory = state.enomem.saturating_sub(at_limit);
    let memory = if for_memory > 0 {
        format!(
            "; {} failed with ENOMEM for lack of memory, not the VMA limit \
             (overcommit, RLIMIT_AS or address space)",
            calls(for_memory)
        )
    } else {
        String::new()
    };
    match (state.first_vma_limit_ns, state.first_enomem_ns) {
        (Some(first), _) if at_limit > 0 => format!(
            "hit the VMA limit: {} failed with ENOMEM at the limit, the first at {}; its count peaked at {peak}{memory}{}",
            calls(at_limit),
            at(first, ctx),
            symptoms(state)
        ),
        (_, Some(first)) if for_memory > 0 => format!(
            "failed with ENOMEM for lack of memory, not the VMA limit: {}, the first at {} (overcommit, RLIMIT_AS or address space); its count peaked at {peak}",
            calls(for_memory),
            at(first, ctx)
        ),
        _ if state.near_limit > 0 => {
            format!("came near the VMA limit: its count peaked at {peak}; no call failed")
        }
        _ => format!("peaked at {peak}; no call failed"),
    }
}

/// ENOMEMs the VMA limit caused.
fn vma_limit_enomems(state: &ProcessState) -> u64 {
    state.enomem_by_cause.get("vma_limit").copied().unwrap_or(0)
}

fn kind_phrase(kind: &str) -> &'static str {
    match kind {
        "anon" => "anonymous mappings",
        "[heap]" => "the heap",
        "[stack]" => "the stack",
        "file" => "file mappings",
        _ => "mappings vmatrace could not name",
    }
}

/// The (call, kind of mapping) that made the most SPLITs, and how many.
fn main_cut(state: &ProcessState) -> Option<((&'static str, &'static str), u64)> {
    state
        .splits_by_call_and_kind
        .iter()
        .max_by_key(|(key, n)| (**n, std::cmp::Reverse(**key)))
        .map(|(key, n)| (*key, *n))
}

/// What the program saw of the calls that failed at the limit, as its
/// users and its logs will tell it.
fn symptoms(state: &ProcessState) -> String {
    let seen: Vec<String> = state
        .vma_limit_enomem_by_call
        .iter()
        .filter_map(|(call, n)| {
            let what = match *call {
                "munmap" => {
                    "a failed munmap: jemalloc aborts the process (\"<jemalloc>: Error in \
                     munmap(): Cannot allocate memory\"), glibc's free leaks the block"
                }
                "mprotect" => {
                    "a failed mprotect: among others, how a new thread's stack fails \
                     (pthread_create returns EAGAIN, \"Resource temporarily unavailable\"; \
                     MariaDB and MySQL log \"Can't create a new thread\")"
                }
                "mmap" => {
                    "a failed mmap: allocations fail with memory to spare (malloc returns \
                     NULL, \"out of memory\" errors, a thread not created)"
                }
                _ => return None,
            };
            Some(format!("{n} {call}{} ({what})", plural(*n)))
        })
        .collect();
    if seen.is_empty() {
        return String::new();
    }
    format!("; what the program saw: {}", seen.join("; "))
}

/// "1 call", "2 calls".
fn calls(n: u64) -> String {
    format!("{n} call{}", plural(n))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `The count grew by new mappings more than by cuts: 2330 VMAs added by
/// new mappings (2290 of files in /var/kafka/, ...), 63 by cuts`, when it
/// did.
fn grown_by_new_mappings(state: &ProcessState) -> Option<String> {
    let by_splits = state.added_by.get("split").copied().unwrap_or(0);
    let mut new: Vec<(&String, &u64)> = state
        .added_by
        .iter()
        .filter(|(how, _)| *how != "split")
        .collect();
    let by_new: u64 = new.iter().map(|(_, n)| **n).sum();
    if by_new <= by_splits {
        return None;
    }
    new.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = new
        .iter()
        .take(3)
        .map(|(how, n)| format!("{n} of {how}"))
        .collect();
    Some(format!(
        "The count grew by new mappings more than by cuts: {by_new} VMAs added by new mappings \
         ({}), {by_splits} by cuts",
        kinds.join(", ")
    ))
}

fn how(state: &ProcessState, ctx: &Context) -> Option<String> {
    let grown = grown_by_new_mappings(state);
    let Some(((call, kind), n)) = main_cut(state) else {
        return grown;
    };
    let mut text = grown.map_or(String::new(), |g| format!("{g}; "));
    text.push_str(&format!(
        "{n} {call} call{} cut {} ({:.0}% of its {} SPLITs)",
        plural(n),
        kind_phrase(kind),
        percent(n, state.splits),
        state.splits
    ));
    if let Some(site) = (ctx.top_site)(state.pid) {
        text.push_str(&format!(", most from {site}"));
    }
    if let Some(allocator) = state.allocator {
        text.push_str(&format!("; it uses {allocator}"));
    }
    Some(text)
}

fn advice(state: &ProcessState, ctx: &Context) -> Vec<Advice> {
    let mut advice = Vec::new();
    if let Some(limit) = limit_advice(state, ctx) {
        advice.push(limit);
    }
    let top_site = (ctx.top_site)(state.pid);
    if let Some(jvm) = jvm_advice(state, top_site.as_deref()) {
        advice.push(jvm);
    } else if let Some(allocator) = allocator_advice(state, top_site.is_some()) {
        advice.push(allocator);
    }
    advice
}

/// What a JVM's own patterns call for, as seen on Debian's openjdk-17:
/// each Java thread's guard zone (`StackOverflow::create_stack_guard_pages`
/// maps 16 KiB over the bottom of the thread's stack and protects it: +2
/// VMAs a thread; 400 idle threads added 801 VMAs, with -Xss256k or -Xss4m
/// alike), and each file mapped with `FileChannel.map` (one VMA for as long
/// as its buffer lives).
fn jvm_advice(state: &ProcessState, top_site: Option<&str>) -> Option<Advice> {
    let site = top_site.unwrap_or("");
    if site.contains("create_stack_guard_pages") {
        return Some(Advice {
            text: "each Java thread adds 2 VMAs: the JVM maps its stack guard zone over the \
                   bottom of the thread's stack and protects it \
                   (StackOverflow::create_stack_guard_pages), cutting the stack mapping; fewer \
                   threads (pools sized to the work) lower the count, -Xss does not (it sets \
                   the stacks' size, not their number: 200 threads held 600 VMAs at -Xss256k \
                   and 598 at -Xss4m on openjdk-17)"
                .into(),
            basis: "observed",
        });
    }
    let maps_files = site.starts_with("FileChannelImpl.")
        || (state.comm == "java" && grown_by_new_mappings(state).is_some());
    maps_files.then(|| Advice {
        text: "the JVM keeps each file mapped with FileChannel.map as a VMA of its own until \
               the buffer is collected: Kafka maps each log segment's offset and time \
               indexes (2 VMAs a segment, as its documentation counts), Elasticsearch and \
               OpenSearch their index files (mmapfs), and both document \
               vm.max_map_count=262144 as their minimum; fewer, larger segments or shards \
               map fewer files"
            .into(),
        basis: if site.starts_with("FileChannelImpl.") {
            "observed"
        } else {
            "guess"
        },
    })
}

/// A `vm.max_map_count` that would have held what was seen.
fn limit_advice(state: &ProcessState, ctx: &Context) -> Option<Advice> {
    let limit = ran_out_at(state).unwrap_or_else(|| peak_limit(state, ctx));
    let hit = vma_limit_enomems(state) > 0 || state.peak as u64 >= limit;
    if hit {
        let four_times = (limit * 4).next_power_of_two();
        if four_times <= ctx.limit {
            return Some(Advice {
                text: format!(
                    "the process ran out at a vm.max_map_count of {limit}; the {} in force at \
                     the end of the trace leaves it room: watch its peak",
                    ctx.limit
                ),
                basis: "observed",
            });
        }
        return Some(Advice {
            text: format!(
                "raise vm.max_map_count (sysctl -w vm.max_map_count={four_times}, and in \
                 /etc/sysctl.d/ to keep it): the process ran out at {limit}, so how many it \
                 would have needed was not seen; watch its peak after raising it"
            ),
            basis: "guess",
        });
    }
    // Twice the peak, rounded up: room for the peak to double.
    let wanted = (state.peak.max(0) as u64 * 2).next_power_of_two();
    (state.peak as u64 >= ctx.warn_at && wanted > ctx.limit).then(|| Advice {
        text: format!(
            "vm.max_map_count={wanted} would hold twice the observed peak ({}); today's {} leaves {} VMAs at that peak",
            state.peak,
            ctx.limit,
            ctx.limit as i64 - state.peak
        ),
        basis: "observed",
    })
}

/// glibc maps a block with mmap only from its mmap threshold (128 KiB at
/// least): smaller unmaps are not malloc's.
fn mostly_large_unmaps(state: &ProcessState) -> bool {
    let (large, all) = state
        .munmap_sizes
        .iter()
        .fold((0, 0), |(large, all), (up_to, n)| {
            (large + if *up_to > 128 * 1024 { *n } else { 0 }, all + n)
        });
    large * 2 > all
}

/// What the allocator can do differently, if its calls made the SPLITs.
fn allocator_advice(state: &ProcessState, site_known: bool) -> Option<Advice> {
    let ((call, kind), n) = main_cut(state)?;
    let dominant = n * 2 >= state.splits;
    if !dominant || kind != "anon" {
        return None;
    }
    let allocator = state.allocator.map(|a| a.allocator);
    match (call, allocator) {
        ("munmap", Some(Allocator::Jemalloc)) => Some(Advice {
            text: "jemalloc is giving memory back with munmap, cutting holes in its extents: \
                   it does so only with retain:false; retain:true (jemalloc's default) keeps \
                   the extents mapped and purges them with madvise, which splits nothing. Look \
                   for retain:false in MALLOC_CONF, _RJEM_MALLOC_CONF or the program's built-in \
                   malloc_conf; a longer dirty_decay_ms also makes these calls rarer"
                .into(),
            basis: "observed",
        }),
        ("munmap", Some(Allocator::Glibc)) if mostly_large_unmaps(state) => {
            let largest = state.munmap_sizes.keys().max().copied().unwrap_or(0);
            let threshold = largest.clamp(128 * 1024, 32 << 20);
            Some(Advice {
                text: format!(
                    "glibc maps blocks above its mmap threshold one by one; side by side they \
                     merge, and freeing one cuts the merged mapping. A fixed threshold above \
                     the blocks freed (GLIBC_TUNABLES=glibc.malloc.mmap_threshold={threshold}) \
                     serves them from the heap instead"
                ),
                basis: "guess",
            })
        }
        ("munmap", _) if !site_known => Some(Advice {
            text: "the program (or its allocator) unmaps parts of larger anonymous mappings; \
                   the stacks of a recording (`record --stacks`, then `report --top-sites`) \
                   name the callers"
                .into(),
            basis: "observed",
        }),
        ("mprotect", _) => Some(Advice {
            text: "mprotect of part of anonymous mappings makes the SPLITs (guard pages of \
                   thread stacks or arenas, JIT code): the count grows with the threads or \
                   arenas, not with malloc/free"
                .into(),
            basis: "guess",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::allocator::Detected;

    #[test]
    fn one_call_is_one_call() {
        assert_eq!(calls(1), "1 call");
        assert_eq!(calls(3), "3 calls");
    }

    fn no_site(_: u32) -> Option<String> {
        None
    }

    fn jemalloc_at_the_limit() -> ProcessState {
        let mut state = ProcessState::new(42);
        state.comm = "redis-server".into();
        state.allocator = Some(Detected {
            allocator: Allocator::Jemalloc,
            linked_in: false,
        });
        state.peak = 65_530;
        state.peak_ns = 20_900_000_000;
        state.enomem = 49_972;
        state.first_enomem_ns = Some(21_000_000_000);
        state.enomem_by_cause.insert("vma_limit", 49_972);
        state.vma_limit_enomem_by_call.insert("munmap", 49_970);
        state.vma_limit_enomem_by_call.insert("mprotect", 2);
        state.first_vma_limit_ns = Some(21_000_000_000);
        state.splits = 291_621;
        state
            .splits_by_call_and_kind
            .insert(("munmap", "anon"), 291_600);
        state
            .splits_by_call_and_kind
            .insert(("mprotect", "file"), 21);
        state
    }

    /// Debian's openjdk-17 mapping index files at a limit of 2500: the
    /// count grew by the files, not by its few cuts.
    #[test]
    fn a_count_grown_by_new_mappings_is_said_before_the_cuts() {
        let ctx = Context {
            limit: 2_500,
            warn_at: 2_250,
            start_ns: 0,
            top_site: &|_| None,
        };
        let mut state = ProcessState::new(7);
        state.comm = "java".into();
        state.peak = 2_500;
        state.splits = 63;
        state
            .splits_by_call_and_kind
            .insert(("mprotect", "anon"), 23);
        state.added_by.insert("files in /var/kafka/".into(), 2_290);
        state.added_by.insert("anon".into(), 40);
        state.added_by.insert("split".into(), 63);
        let how = verdict(&state, &ctx).how.unwrap();
        assert!(
            how.starts_with(
                "The count grew by new mappings more than by cuts: 2330 VMAs added by new \
                 mappings (2290 of files in /var/kafka/, 40 of anon), 63 by cuts; 23 mprotect"
            ),
            "{how}"
        );
        // Cuts that grew it more are told as before.
        state.added_by.insert("split".into(), 5_000);
        let how = verdict(&state, &ctx).how.unwrap();
        assert!(how.starts_with("23 mprotect calls cut"), "{how}");
    }

    /// MariaDB under jemalloc, the limit lowered to 300 during the trace
    /// and put back to 65530 before its end: the verdict says the limit it
    /// ran out at, not the one at the end.
    #[test]
    fn the_verdict_judges_by_the_limit_in_force_when_it_happened() {
        let ctx = Context {
            limit: 65_530,
            warn_at: 58_977,
            start_ns: 0,
            top_site: &|_| None,
        };
        let mut state = jemalloc_at_the_limit();
        state.peak = 301;
        state.peak_limit = 300;
        state.enomem = 1_377;
        state.enomem_by_cause.insert("vma_limit", 1_377);
        state.vma_limit_enomem_by_limit.insert(300, 1_377);
        assert!(at_risk(&state, &ctx));
        let text = verdict(&state, &ctx).to_text();
        for needle in [
            "hit the VMA limit: 1377 calls failed with ENOMEM at the limit",
            "its count peaked at 301 of 300 VMAs (100.3%) at +20.9 s",
            "(the limit changed during the trace: 1377 calls at 300 failed; 65530 at its end)",
            "the process ran out at a vm.max_map_count of 300; the 65530 in force at the end",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert!(!text.contains("ran out at 65530"), "{text}");

        // A peak at half of a lowered limit is a risk at that limit.
        let mut calm = ProcessState::new(7);
        calm.peak = 200;
        calm.peak_limit = 300;
        assert!(at_risk(&calm, &ctx));
        assert!(
            verdict(&calm, &ctx)
                .what
                .contains("200 of 300 VMAs (66.7%) at +0.0 s (under a vm.max_map_count of 300; 65530 at the end of the trace)"),
            "{}",
            verdict(&calm, &ctx).what
        );
    }

    #[test]
    fn a_jemalloc_process_at_the_limit_gets_the_limit_and_retain() {
        let ctx = Context {
            limit: 65_530,
            warn_at: 58_977,
            start_ns: 0,
            top_site: &|_| Some("je_pages_unmap".to_string()),
        };
        let state = jemalloc_at_the_limit();
        assert!(at_risk(&state, &ctx));
        let text = verdict(&state, &ctx).to_text();
        for needle in [
            "pid 42 (redis-server) hit the VMA limit: 49972 calls failed with ENOMEM at the limit, the first at +21.0 s",
            "291600 munmap calls cut anonymous mappings (100% of its 291621 SPLITs), most from je_pages_unmap; it uses jemalloc",
            "vm.max_map_count=262144",
            "what the program saw: 2 mprotects (a failed mprotect: among others, how a new thread's stack fails",
            "49970 munmaps (a failed munmap: jemalloc aborts the process",
            "retain:false",
            "(a guess from the calls seen)",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }

    #[test]
    fn enomem_for_memory_is_not_called_the_vma_limit() {
        let ctx = Context {
            limit: 65_530,
            warn_at: 58_977,
            start_ns: 0,
            top_site: &no_site,
        };
        let mut state = ProcessState::new(9);
        state.peak = 40;
        state.enomem = 2;
        state.first_enomem_ns = Some(1_000_000_000);
        state.enomem_by_cause.insert("memory", 2);
        assert!(at_risk(&state, &ctx));
        let verdict = verdict(&state, &ctx);
        assert!(
            verdict
                .what
                .starts_with("failed with ENOMEM for lack of memory, not the VMA limit: 2 calls"),
            "{verdict:?}"
        );
        assert!(
            verdict
                .advice
                .iter()
                .all(|a| !a.text.contains("max_map_count")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_calm_process_is_not_at_risk_and_a_near_one_gets_a_limit_that_holds() {
        let ctx = Context {
            limit: 65_530,
            warn_at: 58_977,
            start_ns: 0,
            top_site: &no_site,
        };
        let mut state = ProcessState::new(7);
        state.peak = 300;
        assert!(!at_risk(&state, &ctx));
        state.peak = 60_000;
        state.near_limit = 1;
        let verdict = verdict(&state, &ctx);
        assert!(
            verdict.what.contains("came near the VMA limit"),
            "{verdict:?}"
        );
        assert_eq!(verdict.advice[0].basis, "observed");
        assert!(
            verdict.advice[0]
                .text
                .starts_with("vm.max_map_count=131072"),
            "{verdict:?}"
        );
    }

    /// openjdk-17 with 400 threads, and mapping index files, as traced
    /// here (the sites `report --top-sites` named).
    #[test]
    fn a_jvm_gets_advice_on_its_threads_and_mapped_files() {
        let ctx = Context {
            limit: 2_000,
            warn_at: 1_800,
            start_ns: 0,
            top_site: &|_| Some("StackOverflow::create_stack_guard_pages()".to_string()),
        };
        let mut state = ProcessState::new(7);
        state.comm = "java".into();
        state.peak = 1_999;
        state.splits = 403;
        state.splits_by_call_and_kind.insert(("mmap", "anon"), 403);
        let text = verdict(&state, &ctx).to_text();
        assert!(
            text.contains("each Java thread adds 2 VMAs") && text.contains("-Xss does not"),
            "{text}"
        );
        let files = Context {
            top_site: &|_| Some("FileChannelImpl.mapInternal".to_string()),
            ..ctx
        };
        let text = verdict(&state, &files).to_text();
        assert!(
            text.contains("FileChannel.map") && text.contains("262144"),
            "{text}"
        );
        assert!(!text.contains("(a guess"), "{text}");
        let other = Context {
            top_site: &|_| Some("je_pages_unmap".to_string()),
            ..ctx
        };
        state.comm = "redis-server".into();
        assert!(!verdict(&state, &other).to_text().contains("Java"));
    }
}
