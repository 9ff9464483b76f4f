//! Readable at any rate: during an incident a process can make 50,000
//! flagged calls a second, far more than anyone reads. On a terminal the
//! first few flagged lines of each site (and flag) in a second are printed
//! whole; the rest of that second is counted and said in one line
//! (`... 4812 more SPLIT from je_pages_unmap in 1 s`). Piped or JSON output
//! is complete unless `--max-rate` says otherwise: scripts count lines.

use std::collections::HashMap;

/// Flagged lines of one flag and site printed whole per second, by default
/// on a terminal.
pub const DEFAULT_MAX_RATE: u32 = 5;

#[derive(Default)]
struct SiteSecond {
    printed: u32,
    folded: u64,
}

/// Counts each second's flagged lines by flag and site.
pub struct Folder {
    max_per_s: u32,
    /// The second being counted (CLOCK_MONOTONIC seconds).
    second: Option<u64>,
    /// (flag, site) -> this second's count; in first-seen order for output.
    sites: HashMap<(&'static str, String), SiteSecond>,
    order: Vec<(&'static str, String)>,
}

impl Folder {
    /// Prints at most `max_per_s` lines of a flag and site a second (0
    /// prints every line).
    pub fn new(max_per_s: u32) -> Folder {
        Folder {
            max_per_s,
            second: None,
            sites: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// Whether a flagged line of `flag` from `site` at `at_ns` is printed
    /// whole. `said` gets the fold lines of a second that has ended.
    pub fn admit(
        &mut self,
        at_ns: u64,
        flag: &'static str,
        site: &str,
        said: &mut Vec<String>,
    ) -> bool {
        if self.max_per_s == 0 {
            return true;
        }
        let second = at_ns / 1_000_000_000;
        if self.second.is_some_and(|s| s < second) {
            said.extend(self.close_second());
        }
        self.second = Some(self.second.map_or(second, |s| s.max(second)));
        let key = (flag, site.to_string());
        let count = match self.sites.get_mut(&key) {
            Some(count) => count,
            None => {
                self.order.push(key.clone());
                self.sites.entry(key).or_default()
            }
        };
        if count.printed < self.max_per_s {
            count.printed += 1;
            true
        } else {
            count.folded += 1;
            false
        }
    }

    /// The fold lines of the second being counted, which has ended (or the
    /// trace has): one per flag and site that had lines left out.
    pub fn close_second(&mut self) -> Vec<String> {
        let lines = self
            .order
            .drain(..)
            .filter_map(|key| {
                let count = self.sites.remove(&key)?;
                let (flag, site) = key;
                (count.folded > 0).then(|| {
                    format!(
                        "... {} more {flag} from {site} in 1 s (folded: --max-rate 0 prints every line)",
                        count.folded
                    )
                })
            })
            .collect();
        self.sites.clear();
        self.second = None;
        lines
    }

    /// Whether a second is being counted that ended before `now_ns`.
    pub fn second_ended(&self, now_ns: u64) -> bool {
        self.second.is_some_and(|s| s < now_ns / 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_storm_folds_into_one_line_per_site_and_second() {
        let mut folder = Folder::new(3);
        let mut said = Vec::new();
        let printed = (0..1000)
            .filter(|i| folder.admit(5 * S + i, "SPLIT", "je_pages_unmap", &mut said))
            .count();
        assert_eq!(printed, 3);
        assert!(folder.admit(5 * S + 10, "ENOMEM", "je_pages_unmap", &mut said));
        assert!(said.is_empty(), "nothing said while the second runs");
        // The next second says what the last one left out, and starts anew.
        assert!(folder.admit(6 * S, "SPLIT", "je_pages_unmap", &mut said));
        assert_eq!(
            said,
            [
                "... 997 more SPLIT from je_pages_unmap in 1 s (folded: --max-rate 0 prints every line)"
            ]
        );
        assert!(folder.second_ended(7 * S));
        assert!(
            folder.close_second().is_empty(),
            "nothing folded in second 6"
        );
    }

    #[test]
    fn max_rate_zero_prints_everything() {
        let mut folder = Folder::new(0);
        let mut said = Vec::new();
        assert!((0..1000).all(|i| folder.admit(i, "SPLIT", "x", &mut said)));
        assert!(said.is_empty());
    }
}
