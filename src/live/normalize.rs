//! Compares a value from `spec.config` with what `CONFIG GET` answers, which normalizes sizes
//! to bytes, enums to lower case, numbers in lists to plain decimals and `save` to single
//! spaces, and clamps a few numbers; and writes a value in the form `CONFIG SET` takes.

use std::collections::BTreeMap;

use crate::config::directives::{self, Kind, Special};

/// Whether `got` (from `CONFIG GET`) is the value `wanted` (as the spec writes it) sets.
/// `None` when this module cannot tell for the directive's syntax: then only a `CONFIG SET`
/// that changes nothing shows the two are equal.
pub fn same(name: &str, wanted: &str, got: &str) -> Option<bool> {
    let directive = directives::lookup(name)?;
    let w = wanted.trim();
    let g = got.trim();
    Some(match directive.kind {
        Kind::Bool => w.eq_ignore_ascii_case(g),
        Kind::Enum(_) => enum_word(directive.name, w) == enum_word(directive.name, g),
        Kind::Int { .. } => {
            clamped_int(directive.name, w.parse().ok()?) == g.parse::<i64>().ok()?
        }
        Kind::Memory { .. } => clamped_size(directive.name, size(w)?) == size(g)?,
        Kind::Flags { .. } => flag_set(w) == flag_set(g),
        Kind::Special(Special::Save) => save_points(w)? == save_points(g)?,
        Kind::Special(Special::OomScoreAdjValues) => words(w) == words(g),
        Kind::Special(Special::ClientOutputBufferLimit) => buffer_limits_hold(w, g)?,
        Kind::Special(Special::NotifyKeyspaceEvents) => keyspace_classes(w) == keyspace_classes(g),
        // Redis keeps text as given, spaces at either end included.
        Kind::Text(_) => wanted == got,
        _ => return None,
    })
}

/// `value` as `CONFIG SET` takes it. At runtime Redis 7.0 splits the value of a directive
/// that takes several words at every single space and refuses the empty words a run of
/// spaces leaves, where the config file collapses runs; so runs become one space, and
/// spaces at either end go. Other values are unchanged.
pub fn for_config_set(name: &str, value: &str) -> String {
    match directives::lookup(name).map(|d| d.kind) {
        Some(
            Kind::Flags { .. }
            | Kind::Special(
                Special::Save
                | Special::ClientOutputBufferLimit
                | Special::OomScoreAdjValues
                | Special::LatencyPercentiles
                | Special::Bind,
            ),
        ) => words(value).join(" "),
        _ => value.to_owned(),
    }
}

/// Enum words Redis stores as the same value, by directive: (word, the word `CONFIG GET`
/// answers for it).
const ENUM_SYNONYMS: &[(&str, &str, &str)] = &[("oom-score-adj", "relative", "yes")];

fn enum_word(name: &str, value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    ENUM_SYNONYMS
        .iter()
        .find(|(directive, word, _)| *directive == name && *word == lower)
        .map_or(lower, |(_, _, answer)| (*answer).to_owned())
}

/// The integer Redis keeps: it takes any `hz` and clamps it to 1..=500 (`CONFIG_MIN_HZ`,
/// `CONFIG_MAX_HZ`).
fn clamped_int(name: &str, value: i64) -> i64 {
    match name {
        "hz" => value.clamp(1, 500),
        _ => value,
    }
}

/// A memory value: bytes, or a percentage of `maxmemory` (`maxmemory-clients`).
#[derive(Debug, PartialEq, Eq)]
enum Size {
    Bytes(u64),
    Percent(u64),
}

/// Redis stores a percentage as a negative size, so `0%` reads back as `0`.
fn size(value: &str) -> Option<Size> {
    Some(match value.strip_suffix('%') {
        Some(number) => match number.parse().ok()? {
            0 => Size::Bytes(0),
            percent => Size::Percent(percent),
        },
        None => Size::Bytes(bytes(value)?),
    })
}

/// The size Redis keeps: it raises a `repl-backlog-size` below 16kb to 16kb
/// (`CONFIG_REPL_BACKLOG_MIN_SIZE`).
fn clamped_size(name: &str, value: Size) -> Size {
    match (name, value) {
        ("repl-backlog-size", Size::Bytes(b)) => Size::Bytes(b.max(16 * 1024)),
        (_, value) => value,
    }
}

/// A Redis memory size in bytes: digits and an optional unit (k = 1000, kb = 1024, ...).
pub fn bytes(value: &str) -> Option<u64> {
    crate::config::validate::parse_memory(value).and_then(|b| u64::try_from(b).ok())
}

fn words(value: &str) -> Vec<&str> {
    value.split_whitespace().collect()
}

/// Flag words as a set. `default` is no flag at all, so next to others Redis drops it.
fn flag_set(value: &str) -> Vec<String> {
    let mut flags: Vec<String> = words(value)
        .into_iter()
        .map(str::to_ascii_lowercase)
        .filter(|w| w != "default")
        .collect();
    flags.sort_unstable();
    flags.dedup();
    flags
}

/// `save` as (seconds, changes) pairs. Redis reads each number with `strtoll`, so `+900`
/// and `0900` are both 900.
fn save_points(value: &str) -> Option<Vec<(i64, i64)>> {
    let parts = words(value);
    if !parts.len().is_multiple_of(2) {
        return None;
    }
    parts
        .chunks(2)
        .map(|p| Some((p[0].parse().ok()?, p[1].parse().ok()?)))
        .collect()
}

/// Each class the spec names holds its limits in `got`; classes it does not name keep
/// whatever they had, as `CONFIG SET` leaves them. A class named twice takes the later limits.
fn buffer_limits_hold(wanted: &str, got: &str) -> Option<bool> {
    type Limits = BTreeMap<String, (u64, u64, u64)>;
    let groups = |value: &str| -> Option<Limits> {
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
                Some((class, (bytes(g[1])?, bytes(g[2])?, g[3].parse().ok()?)))
            })
            .collect()
    };
    let have = groups(got)?;
    Some(
        groups(wanted)?
            .iter()
            .all(|(class, limits)| have.get(class) == Some(limits)),
    )
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
    fn values_redis_rewrites_or_clamps_compare_equal() {
        // Each `got` is what CONFIG GET answers on redis-server 7.0.15 after CONFIG SET of the
        // `wanted` value (tests/directives_match_redis.rs checks them on a live server).
        assert_eq!(same("oom-score-adj", "RELATIVE", "yes"), Some(true));
        assert_eq!(same("oom-score-adj", "relative", "absolute"), Some(false));
        assert_eq!(same("hz", "1000", "500"), Some(true));
        assert_eq!(same("hz", "0", "1"), Some(true));
        assert_eq!(same("hz", "400", "500"), Some(false));
        assert_eq!(same("repl-backlog-size", "1k", "16384"), Some(true));
        assert_eq!(same("repl-backlog-size", "20kb", "20480"), Some(true));
        assert_eq!(same("maxmemory-clients", "0%", "0"), Some(true));
        assert_eq!(same("maxmemory-clients", "10%", "0"), Some(false));
        assert_eq!(same("maxmemory-clients", "10%", "10485760"), Some(false));
        assert_eq!(
            same("shutdown-on-sigterm", "default now", "now"),
            Some(true)
        );
        assert_eq!(same("shutdown-on-sigterm", "now now", "now"), Some(true));
        assert_eq!(
            same("shutdown-on-sigint", "save default", "save"),
            Some(true)
        );
        assert_eq!(same("shutdown-on-sigint", "default", "default"), Some(true));
        assert_eq!(same("shutdown-on-sigint", "now", "default"), Some(false));
        assert_eq!(same("save", "+900 1", "900 1"), Some(true));
        assert_eq!(same("save", "0900 01", "900 1"), Some(true));
        assert_eq!(same("save", "900 1 300", "900 1"), None);
    }

    #[test]
    fn text_compares_exactly() {
        assert_eq!(same("masterauth", " x ", " x "), Some(true));
        assert_eq!(same("masterauth", " x ", "x"), Some(false));
    }

    #[test]
    fn multi_word_values_reach_config_set_with_single_spaces() {
        assert_eq!(for_config_set("save", " 900 1  300 10 "), "900 1 300 10");
        assert_eq!(for_config_set("save", "  "), "");
        assert_eq!(
            for_config_set("shutdown-on-sigterm", "now  force"),
            "now force"
        );
        assert_eq!(
            for_config_set(
                "client-output-buffer-limit",
                "normal 0 0 0  pubsub 32mb 8mb 60"
            ),
            "normal 0 0 0 pubsub 32mb 8mb 60"
        );
        assert_eq!(
            for_config_set("oom-score-adj-values", "0  200 800"),
            "0 200 800"
        );
        assert_eq!(
            for_config_set("masterauth", " two  spaces "),
            " two  spaces "
        );
        assert_eq!(for_config_set("notify-keyspace-events", "KEA"), "KEA");
        assert_eq!(for_config_set("nonsense", "a  b"), "a  b");
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
        let got = "normal 2 2 2 slave 64000 0 60 pubsub 33554432 8388608 60";
        let twice = "normal 1 1 1 normal 2 2 2";
        assert_eq!(same("client-output-buffer-limit", twice, got), Some(true));
        let unit_and_plus = "Replica 64k 0 +60";
        assert_eq!(
            same("client-output-buffer-limit", unit_and_plus, got),
            Some(true)
        );
    }

    #[test]
    fn keyspace_events_compare_as_sets() {
        assert_eq!(same("notify-keyspace-events", "KEA", "AKE"), Some(true));
        assert_eq!(same("notify-keyspace-events", "Ex", "xE"), Some(true));
        assert_eq!(same("notify-keyspace-events", "Ex", "E"), Some(false));
    }
}
