//! Compares a value from `spec.config` with what `CONFIG GET` answers, which normalizes sizes
//! to bytes, enums to lower case and `save` to single spaces.

use crate::config::directives::{self, Kind, Special};

/// Whether `got` (from `CONFIG GET`) is the value `wanted` (as the spec writes it) sets.
/// `None` when this module cannot tell for the directive's syntax: then only a `CONFIG SET`
/// that changes nothing shows the two are equal.
pub fn same(name: &str, wanted: &str, got: &str) -> Option<bool> {
    let kind = directives::lookup(name)?.kind;
    let w = wanted.trim();
    let g = got.trim();
    Some(match kind {
        Kind::Bool | Kind::Enum(_) => w.eq_ignore_ascii_case(g),
        Kind::Int { .. } => w.parse::<i64>().ok()? == g.parse::<i64>().ok()?,
        Kind::Memory { .. } if w.ends_with('%') => w == g,
        Kind::Memory { .. } => bytes(w)? == bytes(g)?,
        Kind::Flags { .. } => {
            sorted_words(&w.to_ascii_lowercase()) == sorted_words(&g.to_ascii_lowercase())
        }
        Kind::Special(Special::Save | Special::OomScoreAdjValues) => words(w) == words(g),
        Kind::Special(Special::ClientOutputBufferLimit) => buffer_limits_hold(w, g)?,
        Kind::Special(Special::NotifyKeyspaceEvents) => keyspace_classes(w) == keyspace_classes(g),
        Kind::Text(_) => w == g,
        _ => return None,
    })
}

/// A Redis memory size in bytes: digits and an optional unit (k = 1000, kb = 1024, ...).
pub fn bytes(value: &str) -> Option<u64> {
    let lower = value.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

fn words(value: &str) -> Vec<&str> {
    value.split_whitespace().collect()
}

fn sorted_words(value: &str) -> Vec<&str> {
    let mut w = words(value);
    w.sort_unstable();
    w
}

/// Each class the spec names holds its limits in `got`; classes it does not name keep
/// whatever they had, as `CONFIG SET` leaves them.
fn buffer_limits_hold(wanted: &str, got: &str) -> Option<bool> {
    let groups = |value: &str| -> Option<Vec<(String, u64, u64, u64)>> {
        let parts = words(value);
        if !parts.len().is_multiple_of(4) {
            return None;
        }
        parts
            .chunks(4)
            .map(|g| {
                let class = match g[0].to_ascii_lowercase().as_str() {
                    "replica" => "slave".to_owned(),
                    other => other.to_owned(),
                };
                Some((class, bytes(g[1])?, bytes(g[2])?, g[3].parse().ok()?))
            })
            .collect()
    };
    let have = groups(got)?;
    Some(groups(wanted)?.iter().all(|w| have.contains(w)))
}

/// Keyspace-event letters as a set, with `A` spelled out as the classes it stands for.
fn keyspace_classes(value: &str) -> Vec<char> {
    let mut classes: Vec<char> = value
        .chars()
        .flat_map(|c| {
            if c == 'A' {
                "g$lshzxetd".chars().collect()
            } else {
                vec![c]
            }
        })
        .collect();
    classes.sort_unstable();
    classes.dedup();
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_enums_and_lists_compare_as_redis_normalizes_them() {
        assert_eq!(same("maxmemory", "100mb", "104857600"), Some(true));
        assert_eq!(same("maxmemory", "100m", "104857600"), Some(false));
        assert_eq!(same("maxmemory", "1GB", "1073741824"), Some(true));
        assert_eq!(
            same("maxmemory-policy", "AllKeys-LRU", "allkeys-lru"),
            Some(true)
        );
        assert_eq!(same("appendonly", "YES", "yes"), Some(true));
        assert_eq!(same("save", "900 1  300 10", "900 1 300 10"), Some(true));
        assert_eq!(same("save", "", ""), Some(true));
        assert_eq!(same("save", "900 1", "3600 1"), Some(false));
        assert_eq!(same("hz", "20", "20"), Some(true));
        assert_eq!(same("maxmemory-clients", "10%", "10%"), Some(true));
    }

    #[test]
    fn buffer_limits_compare_only_the_named_classes() {
        let got = "normal 0 0 0 slave 1048576 2097152 3 pubsub 33554432 8388608 60";
        assert_eq!(
            same("client-output-buffer-limit", "replica 1mb 2mb 3", got),
            Some(true)
        );
        assert_eq!(
            same("client-output-buffer-limit", "pubsub 32mb 8mb 61", got),
            Some(false)
        );
    }

    #[test]
    fn keyspace_events_compare_as_sets() {
        assert_eq!(same("notify-keyspace-events", "KEA", "AKE"), Some(true));
        assert_eq!(same("notify-keyspace-events", "Ex", "xE"), Some(true));
        assert_eq!(same("notify-keyspace-events", "Ex", "E"), Some(false));
    }
}
