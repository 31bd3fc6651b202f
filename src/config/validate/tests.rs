//! Validation of `spec.config`, one row per directive rule: what passes, what is refused and why.

use super::*;
use crate::config::render;

use crate::config::config_of as config;

/// The reason for a single directive, or `None` when it is valid.
fn reason(name: &str, value: &str) -> Option<String> {
    let mut violations = validate(&config(&[(name, value)]));
    assert!(violations.len() <= 1);
    violations.pop().map(|v| v.reason)
}

fn accepts(name: &str, values: &[&str]) {
    for value in values {
        assert_eq!(
            reason(name, value),
            None,
            "{name} {value:?} should be valid"
        );
    }
}

fn rejects(name: &str, values: &[&str]) {
    for value in values {
        assert!(
            reason(name, value).is_some(),
            "{name} {value:?} should be refused"
        );
    }
}

#[test]
fn spec_examples_are_valid() {
    let first = config(&[
        ("maxmemory", "100mb"),
        ("maxmemory-policy", "allkeys-lru"),
        ("appendonly", "yes"),
    ]);
    assert_eq!(validate(&first), vec![]);
    let second = config(&[
        ("maxmemory", "200mb"),
        ("maxmemory-policy", "allkeys-lfu"),
        ("appendonly", "yes"),
        ("save", "900 1 300 10 60 10000"),
    ]);
    assert_eq!(validate(&second), vec![]);
    assert_eq!(validate(&BTreeMap::new()), vec![]);
}

#[test]
fn bool_values() {
    accepts("appendonly", &["yes", "no", "YES", "No"]);
    rejects("appendonly", &["", "true", "1", "y", "yes "]);
    assert_eq!(
        reason("appendonly", "maybe").unwrap(),
        "\"maybe\" is not yes or no"
    );
}

#[test]
fn int_values() {
    accepts("timeout", &["0", "300", "2147483647"]);
    accepts("slowlog-log-slower-than", &["-1", "10000"]);
    accepts("list-max-listpack-size", &["-2", "-2147483648", "128"]);
    rejects(
        "timeout",
        &[
            "",
            "+1",
            "01",
            "-0",
            "1.0",
            " 1",
            "0x10",
            "1k",
            "99999999999999999999999999999999999",
        ],
    );
    rejects("slowlog-log-slower-than", &["-2"]);
    assert_eq!(
        reason("maxmemory-eviction-tenacity", "300").unwrap(),
        "\"300\" is out of range 0..=100"
    );
    assert_eq!(reason("hz", "ten").unwrap(), "\"ten\" is not an integer");
}

#[test]
fn memory_values() {
    accepts(
        "maxmemory",
        &[
            "0",
            "100mb",
            "100MB",
            "1gb",
            "1G",
            "512k",
            "1024",
            "1b",
            "007",
            "18446744073709551615",
        ],
    );
    // Redis reads "" and "mb" as 0 and wraps huge sizes; both are refused as mistakes.
    rejects(
        "maxmemory",
        &[
            "",
            "mb",
            "1.5gb",
            "-1",
            "+5",
            "5 mb",
            "10zb",
            "1tb",
            "18446744073709551616",
            "20000000000gb",
        ],
    );
    assert_eq!(
        reason("maxmemory", "10zb").unwrap(),
        "\"10zb\" is not a memory size (expected bytes or a number with k, kb, m, mb, g or gb)"
    );
    assert_eq!(
        reason("proto-max-bulk-len", "512kb").unwrap(),
        "\"512kb\" is out of range 1mb..=9223372036854775807"
    );
    accepts("proto-max-bulk-len", &["1mb", "1048576"]);
    rejects("repl-backlog-size", &["0"]);
}

#[test]
fn percentages_only_where_redis_takes_them() {
    accepts(
        "maxmemory-clients",
        &["10%", "0%", "100%", "5gb", "9223372036854775807"],
    );
    rejects(
        "maxmemory-clients",
        &["101%", "-5%", "%", "010%", "10 %", "9223372036854775808"],
    );
    assert_eq!(
        reason("maxmemory-clients", "101%").unwrap(),
        "\"101%\" is out of range 0%..=100%"
    );
    rejects("maxmemory", &["10%"]);
}

#[test]
fn enum_values() {
    accepts(
        "maxmemory-policy",
        &["allkeys-lru", "ALLKEYS-LFU", "noeviction"],
    );
    rejects("maxmemory-policy", &["", "lru", "allkeys-lru "]);
    assert_eq!(
        reason("maxmemory-policy", "foo").unwrap(),
        "\"foo\" is not one of volatile-lru, volatile-lfu, volatile-random, volatile-ttl, \
         allkeys-lru, allkeys-lfu, allkeys-random, noeviction"
    );
    accepts("appendfsync", &["always", "everysec", "no"]);
    accepts("loglevel", &["debug", "warning"]);
    // "nothing" arrived in 7.2.
    rejects("loglevel", &["nothing"]);
}

#[test]
fn multi_flag_enums() {
    accepts(
        "shutdown-on-sigterm",
        &["default", "save now", "NOW", "now force", "default save"],
    );
    rejects("shutdown-on-sigterm", &["", "bogus", "save bogus"]);
    assert_eq!(
        reason("shutdown-on-sigint", "save nosave").unwrap(),
        "save and nosave cannot be combined"
    );
}

#[test]
fn text_values() {
    accepts("requirepass", &["", "s3cret", "with space", "quote\"d"]);
    accepts("dbfilename", &["dump.rdb", ""]);
    rejects("dbfilename", &["a/b"]);
    accepts("appendfilename", &["appendonly.aof"]);
    rejects("appendfilename", &["", "dir/x.aof"]);
    rejects("appenddirname", &[""]);
    accepts(
        "proc-title-template",
        &[
            "{title} {listen-addr} {server-mode}",
            "{{title}} x",
            "x }",
            "{port}",
            "a{title}",
        ],
    );
    rejects(
        "proc-title-template",
        &[
            "",
            "   ",
            "{title}",
            "{title} ",
            "{unixsocket}",
            "{foo} x",
            "x {",
            "{TITLE} x",
        ],
    );
}

#[test]
fn save_values() {
    accepts(
        "save",
        &[
            "",
            "  ",
            "900 1",
            "900 1 300 10",
            "900  1",
            " 900 1 ",
            "+900 1",
            "900 01",
        ],
    );
    rejects(
        "save",
        &["900", "0 1", "900 -1", "900 1 300", "900 1x", "\"\""],
    );
}

#[test]
fn client_output_buffer_limit_values() {
    accepts(
        "client-output-buffer-limit",
        &[
            "normal 0 0 0",
            "replica 256mb 64mb 60",
            "slave 1 1 1",
            "NORMAL 0 0 0",
            "pubsub 32mb 8mb 60 normal 0 0 0",
        ],
    );
    rejects(
        "client-output-buffer-limit",
        &["", "normal 0 0", "normal 0 0 -1", "normal 1x 0 0"],
    );
    assert_eq!(
        reason("client-output-buffer-limit", "master 0 0 0").unwrap(),
        "\"master\" is not a client class (expected normal, replica or pubsub)"
    );
}

#[test]
fn other_special_values() {
    accepts(
        "notify-keyspace-events",
        &["", "KEA", "Ex", "Kg$lshzxetmdn"],
    );
    rejects("notify-keyspace-events", &["q", "kea"]);
    accepts("oom-score-adj-values", &["0 200 800", "-2000 0 2000"]);
    rejects(
        "oom-score-adj-values",
        &["", "0 200", "0 200 3000", "a b c", "0 200 800 1"],
    );
    accepts(
        "latency-tracking-info-percentiles",
        &["", "50 99 99.9", "0", "100", "1e1"],
    );
    rejects(
        "latency-tracking-info-percentiles",
        &["101", "-1", "abc", "nan", "inf"],
    );
}

#[test]
fn control_characters_are_refused() {
    for value in ["100mb\nport 1", "a\tb", "\r", "x\u{0}"] {
        assert_eq!(
            reason("requirepass", value).unwrap(),
            "contains a control character (values must be one line of printable text)"
        );
    }
}

#[test]
fn operator_owned_and_unsupported_are_refused() {
    for name in OPERATOR_OWNED {
        assert_eq!(reason(name, "x").unwrap(), "set by the operator", "{name}");
    }
    for name in [
        "logfile",
        "pidfile",
        "supervised",
        "unixsocket",
        "unixsocketperm",
        "include",
        "aclfile",
        "loadmodule",
        "rename-command",
        "user",
        "enable-protected-configs",
        "replicaof",
        "slaveof",
        "replica-announce-ip",
        "slave-read-only",
        "sentinel",
        "cluster-enabled",
        "cluster-announce-ip",
        "tls-port",
        "tls-cert-file",
        "tls-replication",
        "tls-auth-clients",
        "tls-key-file-pass",
        "masterauth",
        "masteruser",
        "key-load-delay",
        "use-exit-on-panic",
    ] {
        let why = reason(name, "x").unwrap_or_default();
        assert!(why.starts_with("not supported: "), "{name}: {why}");
    }
    assert_eq!(
        reason("list-max-ziplist-entries", "512").unwrap(),
        "has no effect in Redis 7.0; use list-max-listpack-size"
    );
}

#[test]
fn tls_tuning_is_the_users_and_the_rest_points_to_spec_tls() {
    accepts("tls-session-caching", &["no"]);
    accepts("tls-session-cache-size", &["1000"]);
    accepts("tls-prefer-server-ciphers", &["yes"]);
    for name in [
        "tls-port",
        "tls-ca-cert-file",
        "tls-protocols",
        "tls-cluster",
    ] {
        assert_eq!(
            reason(name, "x").unwrap(),
            "not supported: set spec.tls instead; the operator renders the TLS directives from it",
            "{name}"
        );
    }
}

#[test]
fn operator_owned_matches_what_render_writes() {
    let text = render::render(&BTreeMap::new()).text;
    for name in OPERATOR_OWNED {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} not rendered"
        );
    }
}

#[test]
fn allowed_directives_users_commonly_set() {
    let config = config(&[
        ("protected-mode", "yes"),
        ("requirepass", "s3cret"),
        ("dbfilename", "cache.rdb"),
        ("appendfilename", "cache.aof"),
        ("appenddirname", "aof"),
        ("syslog-enabled", "yes"),
        ("databases", "4"),
        ("io-threads", "4"),
        ("hash-max-ziplist-entries", "256"),
        ("enable-debug-command", "local"),
        ("activedefrag", "yes"),
    ]);
    assert_eq!(validate(&config), vec![]);
}

#[test]
fn unknown_directives_get_a_suggestion_when_close() {
    assert_eq!(
        reason("maxmemory-polcy", "allkeys-lru").unwrap(),
        "unknown directive (did you mean maxmemory-policy?)"
    );
    assert_eq!(
        reason("maxmemory_policy", "allkeys-lru").unwrap(),
        "unknown directive (did you mean maxmemory-policy?)"
    );
    assert_eq!(
        reason("appendonli", "yes").unwrap(),
        "unknown directive (did you mean appendonly?)"
    );
    assert_eq!(reason("frobnicate", "1").unwrap(), "unknown directive");
    assert_eq!(reason("", "1").unwrap(), "unknown directive");
}

#[test]
fn names_match_case_insensitively_but_duplicates_are_refused() {
    assert_eq!(validate(&config(&[("MAXMEMORY", "1gb")])), vec![]);
    let violations = validate(&config(&[("Maxmemory", "1gb"), ("maxmemory", "2gb")]));
    assert_eq!(
        violations,
        vec![Violation {
            directive: "maxmemory".into(),
            reason: "duplicate of Maxmemory (directive names are case-insensitive)".into(),
        }]
    );
    let violations = validate(&config(&[
        ("hash-max-listpack-entries", "1"),
        ("hash-max-ziplist-entries", "2"),
    ]));
    assert_eq!(violations.len(), 1);
    assert_eq!(
        violations[0].to_string(),
        "hash-max-ziplist-entries: same directive as hash-max-listpack-entries \
         (both name hash-max-listpack-entries); set only one"
    );
}

#[test]
fn reports_every_violation_in_key_order() {
    let violations = validate(&config(&[
        ("port", "6380"),
        ("appendonly", "sure"),
        ("maxmemory", "10zb"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxmemory-polcy", "x"),
    ]));
    let directives: Vec<_> = violations.iter().map(|v| v.directive.as_str()).collect();
    assert_eq!(
        directives,
        ["appendonly", "maxmemory", "maxmemory-polcy", "port"]
    );
    assert_eq!(violations[3].to_string(), "port: set by the operator");
}

#[test]
fn edit_distance_counts_single_edits() {
    assert_eq!(edit_distance("", ""), 0);
    assert_eq!(edit_distance("abc", "abc"), 0);
    assert_eq!(edit_distance("abc", "abd"), 1);
    assert_eq!(edit_distance("abc", "ab"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
