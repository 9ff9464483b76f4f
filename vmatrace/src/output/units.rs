//! Numbers and lists as people read them.

use std::collections::BTreeMap;

/// "anon 9155, [heap] 3": the mappings SPLITs cut, most cut first.
pub fn splits_by_mapping(splits: &BTreeMap<String, u64>) -> String {
    let mut ranked: Vec<(&String, &u64)> = splits.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    ranked
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// Below `model` and `output` both: the model words its anatomy with sizes.
pub use crate::bytes::human_bytes;

pub fn human_duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(129 * 1024), "129.0KiB");
        assert_eq!(human_bytes(3 << 30), "3.0GiB");
    }
}
