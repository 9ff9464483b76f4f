//! Processes ranked by risk, for the summary of a run that met many (`-a`):
//! the first `shown` of them, and the rest folded into one line ("and 724
//! short-lived processes: 12,345 calls, 0 flagged").

use crate::model::processes::ProcessState;

/// What the folded processes add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Folded {
    pub processes: u64,
    /// Of them, exited before the summary.
    pub exited: u64,
    pub calls: u64,
    /// Calls flagged SPLIT, ENOMEM or NEAR-LIMIT.
    pub flagged: u64,
}

impl Folded {
    /// "and 724 processes (700 short-lived): 12,345 calls, 0 flagged"
    pub fn to_text(&self) -> String {
        let group = |n: u64| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        };
        let short = if self.exited == self.processes {
            "short-lived processes".to_string()
        } else {
            format!("processes ({} short-lived)", group(self.exited))
        };
        format!(
            "and {} {short}: {} calls, {} flagged",
            group(self.processes),
            group(self.calls),
            group(self.flagged)
        )
    }
}

/// Risk of one process for the summary: ENOMEMs first, then the peak
/// against the limit, then splits, then calls.
fn risk_key(state: &ProcessState, limit: u64) -> (u64, u64, u64, u64) {
    let peak_permille =
        (state.peak.max(state.count.unwrap_or(0)).max(0) as u64 * 1000) / limit.max(1);
    (
        state.enomem,
        peak_permille + state.near_limit.min(1) * 1000,
        state.splits,
        state.calls.values().sum(),
    )
}

/// The processes most at risk first, at most `shown` of them, and what the
/// rest add up to.
pub fn rank_and_fold<'a>(
    states: impl Iterator<Item = &'a ProcessState>,
    limit: u64,
    shown: usize,
) -> (Vec<&'a ProcessState>, Option<Folded>) {
    let mut states: Vec<&ProcessState> = states.collect();
    states.sort_by(|a, b| {
        risk_key(b, limit)
            .cmp(&risk_key(a, limit))
            .then(a.pid.cmp(&b.pid))
    });
    if states.len() <= shown {
        return (states, None);
    }
    let rest = states.split_off(shown);
    let mut folded = Folded::default();
    for state in rest {
        folded.processes += 1;
        folded.exited += u64::from(state.exited);
        folded.calls += state.calls.values().sum::<u64>();
        folded.flagged += state.splits + state.enomem + state.near_limit;
    }
    (states, Some(folded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32, peak: i64, splits: u64, enomem: u64, calls: u64) -> ProcessState {
        let mut s = ProcessState::new(pid);
        s.peak = peak;
        s.count = Some(peak);
        s.splits = splits;
        s.enomem = enomem;
        s.exited = true;
        s.calls.insert("mmap", calls);
        s
    }

    #[test]
    fn ranks_and_folds() {
        let states = [
            state(1, 30, 0, 0, 5),
            state(2, 60000, 10, 0, 100),
            state(3, 40, 0, 2, 7),
            state(4, 20, 1, 0, 3000),
        ];
        let (shown, folded) = rank_and_fold(states.iter(), 65530, 2);
        assert_eq!(shown.iter().map(|s| s.pid).collect::<Vec<_>>(), vec![3, 2]);
        let folded = folded.unwrap();
        assert_eq!(folded.processes, 2);
        assert_eq!(folded.calls, 3005);
        assert_eq!(folded.flagged, 1);
        assert_eq!(
            folded.to_text(),
            "and 2 short-lived processes: 3,005 calls, 1 flagged"
        );
    }
}
