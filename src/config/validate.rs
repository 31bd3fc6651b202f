//! Checks user-supplied redis.conf directives before anything reaches a running Redis.
//!
//! A directive Redis would refuse at startup, or one that would break the pod, restarts a
//! healthy Redis into a crash loop; refusing the spec instead keeps the running pods as they are.
//! Values are checked as `render` writes them: one argument, quoted when needed, which Redis
//! 7.0 splits on spaces itself for the directives that take several words (`save`, ...).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;

use super::directives::{self, Directive, Kind, Special, TextRule};

/// One refused directive and why, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The directive name as the user wrote it.
    pub directive: String,
    /// What is wrong and, where it helps, the expected form.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.directive, self.reason)
    }
}

/// Directives the operator renders itself (`bind * -::*`, `daemonize no`, `dir /data`,
/// `port 6379`) and refuses from users: the pod's ports, probe, volume and process model
/// depend on them.
pub const OPERATOR_OWNED: &[&str] = &["bind", "daemonize", "dir", "port"];

/// Checks every directive; an empty result means the config is valid. There is one entry per
/// refused directive, in key order, so the same spec always yields the same message.
pub fn validate(config: &BTreeMap<String, String>) -> Vec<Violation> {
    // Primary directive name -> the first key that set it, to catch `Maxmemory` next to
    // `maxmemory`, or an alias next to its primary name: the rendered file would keep only
    // one of them, and which one would depend on sort order.
    let mut seen: BTreeMap<&'static str, &str> = BTreeMap::new();
    config
        .iter()
        .filter_map(|(key, value)| {
            check_entry(key, value, &mut seen)
                .err()
                .map(|reason| Violation {
                    directive: key.clone(),
                    // Refusals quote the value; a credential's is never shown.
                    reason: match crate::auth::is_secret_directive(key) && !value.is_empty() {
                        true => reason.replace(value, "<redacted>"),
                        false => reason,
                    },
                })
        })
        .collect()
}

fn check_entry<'a>(
    key: &'a str,
    value: &str,
    seen: &mut BTreeMap<&'static str, &'a str>,
) -> Result<(), String> {
    let Some(directive) = directives::lookup(key) else {
        return Err(unknown(key));
    };
    match seen.entry(directive.name) {
        Entry::Vacant(slot) => {
            slot.insert(key);
        }
        Entry::Occupied(slot) => {
            let first = *slot.get();
            return Err(if first.eq_ignore_ascii_case(key) {
                format!("duplicate of {first} (directive names are case-insensitive)")
            } else {
                format!(
                    "same directive as {first} (both name {}); set only one",
                    directive.name
                )
            });
        }
    }
    if let Some(why) = refusal(directive) {
        return Err(why);
    }
    check_value(directive, value)
}

/// Why the operator refuses a directive Redis itself would accept, or `None` when users may
/// set it.
pub fn refusal(directive: &Directive) -> Option<String> {
    let name = directive.name;
    let why = if OPERATOR_OWNED.contains(&name) {
        "set by the operator"
    } else if let Kind::Ignored { replacement } = directive.kind {
        // Redis 7.0 reads these and drops them; accepting them would suggest they do something.
        return Some(match replacement {
            Some(other) => format!("has no effect in Redis 7.0; use {other}"),
            None => "has no effect in Redis 7.0".to_owned(),
        });
    } else if directive.hidden {
        // HIDDEN_CONFIG knobs exist for Redis's own test suite (artificial delays, exit on
        // panic) and would only make a production instance misbehave.
        "not supported: an undocumented Redis test setting"
    } else if name.starts_with("cluster-") {
        // Cluster mode needs a bus port, a writable nodes.conf and slot assignment that the
        // operator does not provide; with cluster mode off the other cluster-* settings do
        // nothing, so refusing the whole family keeps the message simple.
        "not supported: cluster mode is not managed by the operator"
    } else if name.starts_with("tls-") && !crate::tls::USER_TUNABLE.contains(&name) {
        // The ports, files, replication and client authentication follow spec.tls, whose
        // Secret the operator mounts; a tls-port without those files stops Redis at startup.
        "not supported: set spec.tls instead; the operator renders the TLS directives from it"
    } else {
        match name {
            // Kubernetes runs and watches the process: logs go to stdout for `kubectl logs`
            // (a log file on an unwritable path stops Redis at startup), nothing reads a pid
            // file, and upstart/systemd notification has no receiver in a pod.
            "logfile" => "not supported: logs go to stdout, where kubectl logs reads them",
            "pidfile" => "not supported: the container runtime tracks the process",
            "supervised" => "not supported: Kubernetes supervises the process",
            // Clients and the readiness probe connect over TCP; a socket path outside a
            // writable directory stops Redis at startup.
            "unixsocket" | "unixsocketperm" => {
                "not supported: clients and the readiness probe connect over TCP"
            }
            // Files and modules the operator does not mount: a missing one makes Redis exit
            // at startup, so every restart would fail.
            "include" => "not supported: would read a file the operator does not mount",
            "aclfile" => "not supported: the operator sets it; declare users in spec.auth.users",
            "loadmodule" => "not supported: would load a module the operator does not mount",
            // Renaming or disabling commands (PING, CONFIG) breaks the readiness probe; ACL
            // users can lock the probe out of the default user. Neither can be written as
            // one quoted value either.
            "rename-command" => "not supported: would break the readiness probe",
            "user" => "not supported: declare users in spec.auth.users, their passwords in Secrets",
            // Replicas log in to their primary as the operator's replication user.
            "masterauth" | "masteruser" => {
                "not supported: the operator sets it (replicas log in as its replication user); passwords go in spec.auth"
            }
            // Lets clients change `dir` and `dbfilename` at runtime, moving data off the volume.
            "enable-protected-configs" => {
                "not supported: would let clients move dir and dbfilename off the data volume"
            }
            // Topology is the operator's: a fixed replicaof would point every pod at one
            // address and make them read-only; sentinel lines need sentinel mode, which Redis
            // refuses to mix with a plain server.
            "replicaof" => {
                "not supported: with replicas of 2 or more the operator decides who replicates whom"
            }
            // The operator names replicas by pod IP in FAILOVER and compares the addresses
            // the primary reports with its pods'; an announced address would not match.
            "replica-announce-ip" | "replica-announce-port" | "replica-announced" => {
                "not supported: the operator finds replicas by their pod IP"
            }
            // A writable replica takes writes its primary never sees, which a resync or a
            // failover silently drops.
            "replica-read-only" => "not supported: replicas are always read-only",
            "sentinel" => "not supported: sentinel mode is not managed by the operator",
            _ => return None,
        }
    };
    Some(why.to_owned())
}

/// "unknown directive", with the closest known name when it is only a typo away.
fn unknown(key: &str) -> String {
    let key = key.to_ascii_lowercase();
    let budget = match key.len() {
        0..=5 => 1,
        6..=10 => 2,
        _ => 3,
    };
    let closest = directives::DIRECTIVES
        .iter()
        .flat_map(Directive::names)
        .map(|name| (edit_distance(&key, name), name))
        .min();
    match closest {
        Some((distance, name)) if distance <= budget => {
            format!("unknown directive (did you mean {name}?)")
        }
        _ => "unknown directive".to_owned(),
    }
}

/// Levenshtein distance over bytes; directive names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Checks one value against the directive's kind.
fn check_value(directive: &Directive, value: &str) -> Result<(), String> {
    // A newline would end the directive and start another line of redis.conf; other control
    // characters are never meaningful in a value.
    if value.chars().any(char::is_control) {
        return Err(
            "contains a control character (values must be one line of printable text)".into(),
        );
    }
    match directive.kind {
        Kind::Bool => {
            if value.eq_ignore_ascii_case("yes") || value.eq_ignore_ascii_case("no") {
                Ok(())
            } else {
                Err(format!("{value:?} is not yes or no"))
            }
        }
        Kind::Int { min, max } => match parse_int(value) {
            Some(n) if (i128::from(min)..=i128::from(max)).contains(&n) => Ok(()),
            Some(_) => Err(format!("{value:?} is out of range {min}..={max}")),
            None => Err(format!("{value:?} is not an integer")),
        },
        Kind::Octal { max } => match u32::from_str_radix(value, 8) {
            Ok(n) if n <= max && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err(format!(
                "{value:?} is not an octal permission from 0 to {max:o}"
            )),
        },
        Kind::Memory { min, max, percent } => check_memory(value, min, max, percent),
        Kind::Enum(choices) => {
            if choices.iter().any(|c| c.eq_ignore_ascii_case(value)) {
                Ok(())
            } else {
                Err(format!("{value:?} is not one of {}", choices.join(", ")))
            }
        }
        Kind::Flags { values, exclusive } => check_flags(value, values, exclusive),
        Kind::Text(rule) => check_text(value, rule),
        Kind::Special(special) => check_special(value, special),
        Kind::Ignored { .. } => Ok(()),
    }
}

/// Parses an integer the way Redis's `string2ll` does: an optional `-`, then `0` or digits
/// without a leading zero; no `+`, spaces or `-0`. Too many digits reads as out of range.
fn parse_int(value: &str) -> Option<i128> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let valid = match digits.as_bytes() {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => *first != b'0' && digits.bytes().all(|b| b.is_ascii_digit()),
    };
    if !valid {
        return None;
    }
    // More than 30 digits is beyond every bound; fewer always fit an i128.
    let magnitude: i128 = if digits.len() > 30 {
        i128::MAX / 2
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses a memory size the way Redis's `memtoull` does (digits, then an optional unit), but
/// refuses what Redis reads as 0 by accident: the empty string and a unit without digits.
pub(crate) fn parse_memory(value: &str) -> Option<u128> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    // Redis silently wraps sizes past 2^64; anything that long is out of every range here.
    let number: u128 = if digits.len() > 30 {
        u128::MAX / 2
    } else {
        digits.parse().ok()?
    };
    Some(number.saturating_mul(multiplier))
}

fn check_memory(value: &str, min: u64, max: u64, percent: bool) -> Result<(), String> {
    if let Some(bytes) = parse_memory(value) {
        return if (u128::from(min)..=u128::from(max)).contains(&bytes) {
            Ok(())
        } else {
            Err(format!(
                "{value:?} is out of range {}..={}",
                show_size(min),
                show_size(max)
            ))
        };
    }
    if percent && let Some(number) = value.strip_suffix('%') {
        // Redis reads the number with string2ll and stores the percentage as a negative
        // size, bounded by -100.
        return match parse_int(number) {
            Some(n) if (0..=100).contains(&n) => Ok(()),
            Some(n) if n > 100 => Err(format!("{value:?} is out of range 0%..=100%")),
            _ => Err(format!("{value:?} is not a percentage from 0% to 100%")),
        };
    }
    Err(if percent {
        format!(
            "{value:?} is not a memory size (expected bytes, a number with k, kb, m, mb, g or gb, \
             or a percentage of maxmemory such as 10%)"
        )
    } else {
        format!(
            "{value:?} is not a memory size (expected bytes or a number with k, kb, m, mb, g or gb)"
        )
    })
}

/// A bound in the unit a person would write it in, when it is a whole number of one.
fn show_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")];
    UNITS
        .iter()
        .find(|(size, _)| bytes != 0 && bytes.is_multiple_of(*size))
        .map_or_else(
            || bytes.to_string(),
            |(size, unit)| format!("{}{unit}", bytes / size),
        )
}

/// Splits a multi-word value the way Redis 7.0 splits a single quoted argument. Quotes and
/// backslashes would be re-interpreted by that split, and no valid word contains them.
fn words(value: &str) -> Result<Vec<&str>, String> {
    if value.contains(['"', '\'', '\\']) {
        return Err("quotes and backslashes are not allowed in this value".into());
    }
    Ok(value.split(' ').filter(|w| !w.is_empty()).collect())
}

fn check_flags(value: &str, values: &[&str], exclusive: &[&str]) -> Result<(), String> {
    let expected = values.join(", ");
    let words = words(value)?;
    if words.is_empty() {
        return Err(format!("expected one or more of {expected}"));
    }
    if let Some(bad) = words
        .iter()
        .find(|w| !values.iter().any(|v| v.eq_ignore_ascii_case(w)))
    {
        return Err(format!("{bad:?} is not one of {expected}"));
    }
    let chosen: Vec<&str> = exclusive
        .iter()
        .copied()
        .filter(|x| words.iter().any(|w| w.eq_ignore_ascii_case(x)))
        .collect();
    if chosen.len() > 1 {
        return Err(format!("{} cannot be combined", chosen.join(" and ")));
    }
    Ok(())
}

fn check_text(value: &str, rule: TextRule) -> Result<(), String> {
    match rule {
        TextRule::Any => Ok(()),
        TextRule::FileName | TextRule::NonEmptyFileName if value.contains('/') => {
            Err(format!("{value:?} must be a file name, not a path"))
        }
        TextRule::NonEmptyFileName if value.is_empty() => Err("must not be empty".into()),
        TextRule::FileName | TextRule::NonEmptyFileName => Ok(()),
        TextRule::Hostname => {
            if value.len() >= 256 {
                Err("must be shorter than 256 characters".into())
            } else if value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                Ok(())
            } else {
                Err(format!(
                    "{value:?} may contain only letters, digits, - and ."
                ))
            }
        }
        TextRule::ProcTitleTemplate => {
            if proc_title_template_is_valid(value) {
                Ok(())
            } else {
                Err(format!(
                    "{value:?} is not a valid template (use {{title}}, {{listen-addr}}, \
                     {{server-mode}}, {{port}}, {{tls-port}}, {{config-file}} or {{unixsocket}}, \
                     and something that is not blank when the title is empty)"
                ))
            }
        }
    }
}

/// Redis expands the template with an empty title and refuses unknown `{variables}`, an
/// unclosed `{`, and a result that is blank once trimmed. `{{` and `}}` are literal braces,
/// as is a lone `}`.
fn proc_title_template_is_valid(template: &str) -> bool {
    // Variables that always expand to something (a port or an address); the others may be
    // empty: the title is empty during validation, server-mode outside cluster/sentinel, and
    // unixsocket when none is set.
    const NON_EMPTY: &[&str] = &["listen-addr", "port", "tls-port", "config-file"];
    const MAYBE_EMPTY: &[&str] = &["title", "server-mode", "unixsocket"];
    let mut visible = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{").or_else(|| rest.strip_prefix("}}")) {
            visible = true;
            rest = after;
        } else if c == '{' {
            let Some(end) = rest.find('}') else {
                return false;
            };
            let variable = &rest[1..end];
            if NON_EMPTY.contains(&variable) {
                visible = true;
            } else if !MAYBE_EMPTY.contains(&variable) {
                return false;
            }
            rest = &rest[end + 1..];
        } else {
            visible |= c != ' ';
            rest = &rest[c.len_utf8()..];
        }
    }
    visible
}

fn check_special(value: &str, special: Special) -> Result<(), String> {
    match special {
        Special::Save => check_save(value),
        Special::ClientOutputBufferLimit => check_client_output_buffer_limit(value),
        Special::NotifyKeyspaceEvents => {
            match value.chars().find(|c| !"Ag$lshzxeKEtmdn".contains(*c)) {
                None => Ok(()),
                Some(c) => Err(format!(
                    "{c:?} is not an event class (expected letters from Ag$lshzxeKEtmdn, or \"\")"
                )),
            }
        }
        Special::OomScoreAdjValues => {
            let words = words(value)?;
            let in_range = |w: &&str| parse_int(w).is_some_and(|n| (-2000..=2000).contains(&n));
            if words.len() == 3 && words.iter().all(in_range) {
                Ok(())
            } else {
                Err(format!(
                    "{value:?} is not three integers from -2000 to 2000 (master, replica, \
                     background child)"
                ))
            }
        }
        Special::LatencyPercentiles => {
            for word in words(value)? {
                match word.parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => {}
                    _ => {
                        return Err(format!(
                            "{word:?} is not a percentile (expected numbers from 0 to 100 \
                             separated by spaces, or \"\")"
                        ));
                    }
                }
            }
            Ok(())
        }
        Special::Bind => {
            let words = words(value)?;
            if words.len() > 16 {
                Err("at most 16 addresses".into())
            } else {
                Ok(())
            }
        }
        Special::ReplicaOf => match words(value)?.as_slice() {
            [no, one] if no.eq_ignore_ascii_case("no") && one.eq_ignore_ascii_case("one") => Ok(()),
            [_, port] if parse_int(port).is_some_and(|p| (0..=65535).contains(&p)) => Ok(()),
            _ => Err(format!("{value:?} is not \"<host> <port>\" or \"no one\"")),
        },
        Special::Dir
        | Special::Include
        | Special::RenameCommand
        | Special::User
        | Special::LoadModule
        | Special::Sentinel => {
            if value.trim().is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(())
            }
        }
    }
}

fn check_save(value: &str) -> Result<(), String> {
    let words = words(value)?;
    // Redis reads each number with strtoll; seconds must be at least 1, changes at least 0.
    let number = |w: &str, min: i128| {
        let digits = w.strip_prefix('+').unwrap_or(w);
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.len() <= 18
            && digits
                .parse::<i128>()
                .is_ok_and(|n| n >= min && n <= i128::from(i32::MAX))
    };
    let valid = words.len().is_multiple_of(2)
        && words
            .chunks(2)
            .all(|pair| number(pair[0], 1) && number(pair[1], 0));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a save schedule (expected \"<seconds> <changes>\" pairs such as \
             \"900 1 300 10\", seconds at least 1, or \"\" to turn snapshots off)"
        ))
    }
}

fn check_client_output_buffer_limit(value: &str) -> Result<(), String> {
    let words = words(value)?;
    if words.is_empty() || !words.len().is_multiple_of(4) {
        return Err(format!(
            "{value:?} is not a buffer limit (expected \"<class> <hard> <soft> <seconds>\", \
             repeated per class, such as \"pubsub 32mb 8mb 60\")"
        ));
    }
    for limit in words.chunks(4) {
        let class = limit[0];
        if !["normal", "replica", "slave", "pubsub"]
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
        {
            return Err(format!(
                "{class:?} is not a client class (expected normal, replica or pubsub)"
            ));
        }
        for size in &limit[1..3] {
            if parse_memory(size).is_none_or(|bytes| bytes > u128::from(u64::MAX)) {
                return Err(format!(
                    "{size:?} is not a memory size (expected bytes or a number with k, kb, m, mb, \
                     g or gb)"
                ));
            }
        }
        let seconds = limit[3].strip_prefix('+').unwrap_or(limit[3]);
        let valid_seconds = !seconds.is_empty()
            && seconds.len() <= 10
            && seconds.bytes().all(|b| b.is_ascii_digit())
            && seconds
                .parse::<i64>()
                .is_ok_and(|n| n <= i64::from(i32::MAX));
        if !valid_seconds {
            return Err(format!("{:?} is not a number of seconds", limit[3]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
