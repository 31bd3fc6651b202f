//! The Redis 7.0 directive table that validation checks names and values against.
//!
//! Facts (names, aliases, value types, ranges, enum values, flags) come from the
//! `static_configs[]` table in Redis's `src/config.c`, the directives `loadServerConfigFromString`
//! handles itself, and `CONFIG GET *` / `CONFIG SET` on Debian's redis-server 7.0.15.
//! `tests/directives_match_redis.rs` checks this table against a live server.
//! This module holds only what Redis accepts; which directives the operator refuses is
//! policy and lives in `validate.rs`.

/// How a directive's value is written after its name in redis.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `yes` or `no`, case-insensitive.
    Bool,
    /// A decimal integer in `min..=max`: an optional `-`, no `+`, no leading zeros, no spaces.
    Int { min: i64, max: i64 },
    /// An octal integer in `0..=max` (only `unixsocketperm`).
    Octal { max: u32 },
    /// A size in bytes in `min..=max`: digits with an optional unit `b`, `k` (1000), `kb` (1024),
    /// `m`, `mb`, `g` or `gb`, case-insensitive. With `percent`, `N%` (of `maxmemory`) for
    /// `N` in `0..=100` is accepted too (only `maxmemory-clients`).
    Memory { min: u64, max: u64, percent: bool },
    /// Exactly one of these words, case-insensitive.
    Enum(&'static [&'static str]),
    /// One or more of these words separated by spaces, case-insensitive, with at most one
    /// of `exclusive` (`shutdown-on-sigint`/`-sigterm`: `save` and `nosave` conflict).
    Flags {
        values: &'static [&'static str],
        exclusive: &'static [&'static str],
    },
    /// Free text, with the extra rule Redis applies to it.
    Text(TextRule),
    /// A value with its own syntax.
    Special(Special),
    /// Accepted for compatibility and ignored: Redis 7.0 reads any single value and drops it.
    Ignored { replacement: Option<&'static str> },
}

/// Extra rules Redis applies to some text values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    /// Anything, including the empty string.
    Any,
    /// A file name without `/`; empty is allowed (`dbfilename`).
    FileName,
    /// A file name without `/`, not empty (`appendfilename`, `appenddirname`).
    NonEmptyFileName,
    /// Letters, digits, `-` and `.`, shorter than 256 bytes (`cluster-announce-hostname`).
    Hostname,
    /// `{variable}` placeholders from a fixed set, expanding to something non-blank
    /// (`proc-title-template`).
    ProcTitleTemplate,
}

/// Directives whose value has a syntax of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `<seconds> <changes>` pairs (seconds >= 1, changes >= 0), or `""` for no snapshots.
    Save,
    /// `<class> <hard> <soft> <seconds>` repeated; class is normal, replica (slave) or pubsub,
    /// hard and soft are memory sizes.
    ClientOutputBufferLimit,
    /// Event class letters from `Ag$lshzxeKEtmdn`, case-sensitive; `""` disables notifications.
    NotifyKeyspaceEvents,
    /// Three integers in `-2000..=2000`: master, replica, background child.
    OomScoreAdjValues,
    /// Percentiles in `0..=100` separated by spaces, or `""` for none.
    LatencyPercentiles,
    /// Up to 16 addresses separated by spaces (a leading `-` marks one as optional).
    Bind,
    /// `<host> <port>` or `no one`.
    ReplicaOf,
    /// A directory Redis changes into at startup.
    Dir,
    /// Config-file only: a path (or glob) of another config file.
    Include,
    /// Config-file only: `<command> <new-name>`.
    RenameCommand,
    /// Config-file only: `<username> <acl rules...>`.
    User,
    /// Config-file only: `<path> [args...]`.
    LoadModule,
    /// Config-file only, in sentinel mode: `<sentinel sub-directive...>`.
    Sentinel,
}

/// When a directive can change, from Redis's config flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `CONFIG SET` may change it at runtime.
    Mutable,
    /// `IMMUTABLE_CONFIG`: only the config file sets it; a change needs a restart.
    Immutable,
    /// `PROTECTED_CONFIG`: `CONFIG SET` refuses it unless `enable-protected-configs` allows it.
    Protected,
    /// Not in the runtime table at all: only the config file understands it, and
    /// `CONFIG GET`/`CONFIG SET` call it unknown.
    FileOnly,
}

/// One directive Redis 7.0 accepts in redis.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive {
    /// The primary, lowercase name.
    pub name: &'static str,
    /// Other names for the same directive (mostly the pre-5.0 `slave` spellings and the
    /// pre-7.0 `ziplist` ones).
    pub aliases: &'static [&'static str],
    /// How its value is written.
    pub kind: Kind,
    /// When it can change.
    pub access: Access,
    /// `HIDDEN_CONFIG`: a testing knob that `CONFIG GET *` does not list.
    pub hidden: bool,
}

impl Directive {
    /// The primary name followed by the aliases.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    const fn alias(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    const fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }
}

/// Looks a directive up by its name or an alias, ignoring ASCII case as Redis does.
pub fn lookup(name: &str) -> Option<&'static Directive> {
    DIRECTIVES
        .iter()
        .find(|d| d.names().any(|n| n.eq_ignore_ascii_case(name)))
}

// Bounds as Redis writes them, for a 64-bit Linux build (long = long long = ssize_t = 64 bits).
const INT_MIN: i64 = i32::MIN as i64;
const INT_MAX: i64 = i32::MAX as i64;
const UINT_MAX: i64 = u32::MAX as i64;
const LONG_MAX: i64 = i64::MAX;
const LONG_MAX_U: u64 = i64::MAX as u64;
const MB: u64 = 1024 * 1024;

const PROTECTED_ACTION: &[&str] = &["no", "yes", "local"];

const fn entry(name: &'static str, kind: Kind, access: Access) -> Directive {
    Directive {
        name,
        aliases: &[],
        kind,
        access,
        hidden: false,
    }
}
const fn mutable(name: &'static str, kind: Kind) -> Directive {
    entry(name, kind, Access::Mutable)
}
const fn immutable(name: &'static str, kind: Kind) -> Directive {
    entry(name, kind, Access::Immutable)
}
const fn file_only(name: &'static str, kind: Kind) -> Directive {
    entry(name, kind, Access::FileOnly)
}
const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}
const fn mem(min: u64, max: u64) -> Kind {
    Kind::Memory {
        min,
        max,
        percent: false,
    }
}
const fn text() -> Kind {
    Kind::Text(TextRule::Any)
}
const BOOL: Kind = Kind::Bool;

/// Every directive Redis 7.0 reads from redis.conf, sorted by primary name.
pub static DIRECTIVES: &[Directive] = &[
    mutable(
        "acl-pubsub-default",
        Kind::Enum(&["allchannels", "resetchannels"]),
    ),
    immutable("aclfile", text()),
    mutable("acllog-max-len", int(0, LONG_MAX)),
    mutable("active-defrag-cycle-max", int(1, 99)),
    mutable("active-defrag-cycle-min", int(1, 99)),
    mutable("active-defrag-ignore-bytes", mem(1, LONG_MAX_U)),
    mutable("active-defrag-max-scan-fields", int(1, LONG_MAX)),
    mutable("active-defrag-threshold-lower", int(0, 1000)),
    mutable("active-defrag-threshold-upper", int(0, 1000)),
    mutable("active-expire-effort", int(1, 10)),
    mutable("activedefrag", BOOL),
    mutable("activerehashing", BOOL),
    immutable("always-show-logo", BOOL),
    mutable("aof-disable-auto-gc", BOOL),
    mutable("aof-load-truncated", BOOL),
    mutable("aof-rewrite-incremental-fsync", BOOL),
    mutable("aof-timestamp-enabled", BOOL),
    mutable("aof-use-rdb-preamble", BOOL),
    immutable("aof_rewrite_cpulist", text()),
    immutable("appenddirname", Kind::Text(TextRule::NonEmptyFileName)),
    immutable("appendfilename", Kind::Text(TextRule::NonEmptyFileName)),
    mutable("appendfsync", Kind::Enum(&["everysec", "always", "no"])),
    mutable("appendonly", BOOL),
    mutable("auto-aof-rewrite-min-size", mem(0, LONG_MAX_U)),
    mutable("auto-aof-rewrite-percentage", int(0, INT_MAX)),
    immutable("bgsave_cpulist", text()),
    mutable("bind", Kind::Special(Special::Bind)),
    mutable("bind-source-addr", text()),
    immutable("bio_cpulist", text()),
    mutable("busy-reply-threshold", int(0, LONG_MAX)).alias(&["lua-time-limit"]),
    mutable(
        "client-output-buffer-limit",
        Kind::Special(Special::ClientOutputBufferLimit),
    ),
    mutable("client-query-buffer-limit", mem(MB, LONG_MAX_U)),
    mutable("cluster-allow-pubsubshard-when-down", BOOL),
    mutable("cluster-allow-reads-when-down", BOOL),
    mutable("cluster-allow-replica-migration", BOOL),
    mutable("cluster-announce-bus-port", int(0, 65535)),
    mutable("cluster-announce-hostname", Kind::Text(TextRule::Hostname)),
    mutable("cluster-announce-ip", text()),
    mutable("cluster-announce-port", int(0, 65535)),
    mutable("cluster-announce-tls-port", int(0, 65535)),
    immutable("cluster-config-file", text()),
    immutable("cluster-enabled", BOOL),
    mutable("cluster-link-sendbuf-limit", mem(0, u64::MAX)),
    mutable("cluster-migration-barrier", int(0, INT_MAX)),
    mutable("cluster-node-timeout", int(0, LONG_MAX)),
    immutable("cluster-port", int(0, 65535)),
    mutable(
        "cluster-preferred-endpoint-type",
        Kind::Enum(&["ip", "hostname", "unknown-endpoint"]),
    ),
    mutable("cluster-replica-no-failover", BOOL).alias(&["cluster-slave-no-failover"]),
    mutable("cluster-replica-validity-factor", int(0, INT_MAX))
        .alias(&["cluster-slave-validity-factor"]),
    mutable("cluster-require-full-coverage", BOOL),
    mutable("crash-log-enabled", BOOL),
    mutable("crash-memcheck-enabled", BOOL),
    immutable("daemonize", BOOL),
    immutable("databases", int(1, INT_MAX)),
    entry(
        "dbfilename",
        Kind::Text(TextRule::FileName),
        Access::Protected,
    ),
    entry("dir", Kind::Special(Special::Dir), Access::Protected),
    immutable("disable-thp", BOOL),
    mutable("dynamic-hz", BOOL),
    immutable("enable-debug-command", Kind::Enum(PROTECTED_ACTION)),
    immutable("enable-module-command", Kind::Enum(PROTECTED_ACTION)),
    immutable("enable-protected-configs", Kind::Enum(PROTECTED_ACTION)),
    mutable("hash-max-listpack-entries", int(0, LONG_MAX)).alias(&["hash-max-ziplist-entries"]),
    mutable("hash-max-listpack-value", mem(0, LONG_MAX_U)).alias(&["hash-max-ziplist-value"]),
    mutable("hll-sparse-max-bytes", mem(0, LONG_MAX_U)),
    // Redis accepts any value and clamps it to 1..=500 when applying it.
    mutable("hz", int(0, INT_MAX)),
    mutable("ignore-warnings", text()),
    file_only("include", Kind::Special(Special::Include)),
    immutable("io-threads", int(1, 128)),
    immutable("io-threads-do-reads", BOOL),
    mutable("jemalloc-bg-thread", BOOL),
    mutable("key-load-delay", int(INT_MIN, INT_MAX)).hidden(),
    mutable("latency-monitor-threshold", int(0, LONG_MAX)),
    mutable("latency-tracking", BOOL),
    mutable(
        "latency-tracking-info-percentiles",
        Kind::Special(Special::LatencyPercentiles),
    ),
    mutable("lazyfree-lazy-eviction", BOOL),
    mutable("lazyfree-lazy-expire", BOOL),
    mutable("lazyfree-lazy-server-del", BOOL),
    mutable("lazyfree-lazy-user-del", BOOL),
    mutable("lazyfree-lazy-user-flush", BOOL),
    mutable("lfu-decay-time", int(0, INT_MAX)),
    mutable("lfu-log-factor", int(0, INT_MAX)),
    mutable("list-compress-depth", int(0, INT_MAX)),
    mutable("list-max-listpack-size", int(INT_MIN, INT_MAX)).alias(&["list-max-ziplist-size"]),
    file_only(
        "list-max-ziplist-entries",
        Kind::Ignored {
            replacement: Some("list-max-listpack-size"),
        },
    ),
    file_only(
        "list-max-ziplist-value",
        Kind::Ignored {
            replacement: Some("list-max-listpack-size"),
        },
    ),
    mutable("loading-process-events-interval-bytes", int(1024, INT_MAX)).hidden(),
    file_only("loadmodule", Kind::Special(Special::LoadModule)),
    immutable("logfile", text()),
    mutable(
        "loglevel",
        Kind::Enum(&["debug", "verbose", "notice", "warning"]),
    ),
    file_only(
        "lua-replicate-commands",
        Kind::Ignored { replacement: None },
    ),
    mutable("masterauth", text()),
    mutable("masteruser", text()),
    mutable("maxclients", int(1, UINT_MAX)),
    mutable("maxmemory", mem(0, u64::MAX)),
    mutable(
        "maxmemory-clients",
        Kind::Memory {
            min: 0,
            max: LONG_MAX_U,
            percent: true,
        },
    ),
    mutable("maxmemory-eviction-tenacity", int(0, 100)),
    mutable(
        "maxmemory-policy",
        Kind::Enum(&[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction",
        ]),
    ),
    mutable("maxmemory-samples", int(1, INT_MAX)),
    mutable("min-replicas-max-lag", int(0, INT_MAX)).alias(&["min-slaves-max-lag"]),
    mutable("min-replicas-to-write", int(0, INT_MAX)).alias(&["min-slaves-to-write"]),
    mutable("no-appendfsync-on-rewrite", BOOL),
    mutable(
        "notify-keyspace-events",
        Kind::Special(Special::NotifyKeyspaceEvents),
    ),
    mutable(
        "oom-score-adj",
        Kind::Enum(&["no", "yes", "relative", "absolute"]),
    ),
    mutable(
        "oom-score-adj-values",
        Kind::Special(Special::OomScoreAdjValues),
    ),
    immutable("pidfile", text()),
    mutable("port", int(0, 65535)),
    mutable(
        "proc-title-template",
        Kind::Text(TextRule::ProcTitleTemplate),
    ),
    mutable(
        "propagation-error-behavior",
        Kind::Enum(&["ignore", "panic", "panic-on-replicas"]),
    ),
    mutable("protected-mode", BOOL),
    mutable("proto-max-bulk-len", mem(MB, LONG_MAX_U)),
    mutable("rdb-del-sync-files", BOOL),
    mutable("rdb-key-save-delay", int(INT_MIN, INT_MAX)).hidden(),
    mutable("rdb-save-incremental-fsync", BOOL),
    immutable("rdbchecksum", BOOL),
    mutable("rdbcompression", BOOL),
    file_only("rename-command", Kind::Special(Special::RenameCommand)),
    mutable("repl-backlog-size", mem(1, LONG_MAX_U)),
    mutable("repl-backlog-ttl", int(0, LONG_MAX)),
    mutable("repl-disable-tcp-nodelay", BOOL),
    mutable(
        "repl-diskless-load",
        Kind::Enum(&["disabled", "on-empty-db", "swapdb"]),
    ),
    mutable("repl-diskless-sync", BOOL),
    mutable("repl-diskless-sync-delay", int(0, INT_MAX)),
    mutable("repl-diskless-sync-max-replicas", int(0, INT_MAX)),
    mutable("repl-ping-replica-period", int(1, INT_MAX)).alias(&["repl-ping-slave-period"]),
    mutable("repl-timeout", int(1, INT_MAX)),
    mutable("replica-announce-ip", text()).alias(&["slave-announce-ip"]),
    mutable("replica-announce-port", int(0, 65535)).alias(&["slave-announce-port"]),
    mutable("replica-announced", BOOL),
    mutable("replica-ignore-disk-write-errors", BOOL),
    mutable("replica-ignore-maxmemory", BOOL).alias(&["slave-ignore-maxmemory"]),
    mutable("replica-lazy-flush", BOOL).alias(&["slave-lazy-flush"]),
    mutable("replica-priority", int(0, INT_MAX)).alias(&["slave-priority"]),
    mutable("replica-read-only", BOOL).alias(&["slave-read-only"]),
    mutable("replica-serve-stale-data", BOOL).alias(&["slave-serve-stale-data"]),
    immutable("replicaof", Kind::Special(Special::ReplicaOf)).alias(&["slaveof"]),
    mutable("requirepass", text()),
    mutable(
        "sanitize-dump-payload",
        Kind::Enum(&["no", "yes", "clients"]),
    ),
    mutable("save", Kind::Special(Special::Save)),
    file_only("sentinel", Kind::Special(Special::Sentinel)),
    immutable("server_cpulist", text()),
    mutable("set-max-intset-entries", int(0, LONG_MAX)),
    immutable("set-proc-title", BOOL),
    mutable("shutdown-on-sigint", SHUTDOWN_FLAGS),
    mutable("shutdown-on-sigterm", SHUTDOWN_FLAGS),
    mutable("shutdown-timeout", int(0, INT_MAX)),
    mutable("slowlog-log-slower-than", int(-1, LONG_MAX)),
    mutable("slowlog-max-len", int(0, LONG_MAX)),
    immutable("socket-mark-id", int(0, UINT_MAX)),
    mutable("stop-writes-on-bgsave-error", BOOL),
    mutable("stream-node-max-bytes", mem(0, LONG_MAX_U)),
    mutable("stream-node-max-entries", int(0, LONG_MAX)),
    immutable(
        "supervised",
        Kind::Enum(&["upstart", "systemd", "auto", "no"]),
    ),
    immutable("syslog-enabled", BOOL),
    immutable(
        "syslog-facility",
        Kind::Enum(&[
            "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
        ]),
    ),
    immutable("syslog-ident", text()),
    immutable("tcp-backlog", int(0, INT_MAX)),
    mutable("tcp-keepalive", int(0, INT_MAX)),
    mutable("timeout", int(0, INT_MAX)),
    // The tls-* directives exist only in builds with TLS (BUILD_TLS=yes), which the official
    // images and Debian's package both are.
    mutable("tls-auth-clients", Kind::Enum(&["no", "yes", "optional"])),
    mutable("tls-ca-cert-dir", text()),
    mutable("tls-ca-cert-file", text()),
    mutable("tls-cert-file", text()),
    mutable("tls-ciphers", text()),
    mutable("tls-ciphersuites", text()),
    mutable("tls-client-cert-file", text()),
    mutable("tls-client-key-file", text()),
    mutable("tls-client-key-file-pass", text()),
    mutable("tls-cluster", BOOL),
    mutable("tls-dh-params-file", text()),
    mutable("tls-key-file", text()),
    mutable("tls-key-file-pass", text()),
    mutable("tls-port", int(0, 65535)),
    mutable("tls-prefer-server-ciphers", BOOL),
    mutable("tls-protocols", text()),
    mutable("tls-replication", BOOL),
    mutable("tls-session-cache-size", int(0, INT_MAX)),
    mutable("tls-session-cache-timeout", int(0, INT_MAX)),
    mutable("tls-session-caching", BOOL),
    mutable("tracking-table-max-keys", int(0, LONG_MAX)),
    immutable("unixsocket", text()),
    immutable("unixsocketperm", Kind::Octal { max: 0o777 }),
    mutable("use-exit-on-panic", BOOL).hidden(),
    file_only("user", Kind::Special(Special::User)),
    mutable("watchdog-period", int(0, INT_MAX)).hidden(),
    mutable("zset-max-listpack-entries", int(0, LONG_MAX)).alias(&["zset-max-ziplist-entries"]),
    mutable("zset-max-listpack-value", mem(0, LONG_MAX_U)).alias(&["zset-max-ziplist-value"]),
];

/// What Redis does on SIGINT/SIGTERM: `default`, or a combination of save/nosave, now, force.
const SHUTDOWN_FLAGS: Kind = Kind::Flags {
    values: &["default", "save", "nosave", "now", "force"],
    exclusive: &["save", "nosave"],
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn table_is_sorted_lowercase_and_unique() {
        for pair in DIRECTIVES.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} sorts after {}",
                pair[0].name,
                pair[1].name
            );
        }
        let mut seen = BTreeSet::new();
        for name in DIRECTIVES.iter().flat_map(Directive::names) {
            assert_eq!(name, name.to_ascii_lowercase(), "{name} is not lowercase");
            assert!(seen.insert(name), "{name} appears twice");
        }
    }

    #[test]
    fn lookup_ignores_case_and_resolves_aliases() {
        assert_eq!(lookup("maxmemory").unwrap().name, "maxmemory");
        assert_eq!(lookup("MaxMemory-Policy").unwrap().name, "maxmemory-policy");
        assert_eq!(lookup("slaveof").unwrap().name, "replicaof");
        assert_eq!(
            lookup("hash-max-ziplist-entries").unwrap().name,
            "hash-max-listpack-entries"
        );
        assert_eq!(
            lookup("lua-time-limit").unwrap().name,
            "busy-reply-threshold"
        );
        assert!(lookup("maxmemory-polcy").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn table_has_every_redis_7_0_directive() {
        // 173 visible primary names + 5 hidden + 5 config-file-only + 3 ignored = 186;
        // with the 19 aliases, `CONFIG GET *` on 7.0.15 lists 192 names.
        assert_eq!(DIRECTIVES.len(), 186);
        let aliases: usize = DIRECTIVES.iter().map(|d| d.aliases.len()).sum();
        assert_eq!(aliases, 19);
        let listed = DIRECTIVES
            .iter()
            .filter(|d| !d.hidden && d.access != Access::FileOnly)
            .flat_map(Directive::names)
            .count();
        assert_eq!(listed, 192);
    }

    #[test]
    fn mutability_flags_match_redis() {
        // The immutable set Redis 7.0.15 reports ("can't set immutable config").
        let immutable: BTreeSet<_> = DIRECTIVES
            .iter()
            .filter(|d| d.access == Access::Immutable)
            .map(|d| d.name)
            .collect();
        let expected: BTreeSet<_> = [
            "aclfile",
            "always-show-logo",
            "aof_rewrite_cpulist",
            "appenddirname",
            "appendfilename",
            "bgsave_cpulist",
            "bio_cpulist",
            "cluster-config-file",
            "cluster-enabled",
            "cluster-port",
            "daemonize",
            "databases",
            "disable-thp",
            "enable-debug-command",
            "enable-module-command",
            "enable-protected-configs",
            "io-threads",
            "io-threads-do-reads",
            "logfile",
            "pidfile",
            "rdbchecksum",
            "replicaof",
            "server_cpulist",
            "set-proc-title",
            "socket-mark-id",
            "supervised",
            "syslog-enabled",
            "syslog-facility",
            "syslog-ident",
            "tcp-backlog",
            "unixsocket",
            "unixsocketperm",
        ]
        .into_iter()
        .collect();
        assert_eq!(immutable, expected);
        assert_eq!(lookup("dir").unwrap().access, Access::Protected);
        assert_eq!(lookup("dbfilename").unwrap().access, Access::Protected);
        assert_eq!(lookup("include").unwrap().access, Access::FileOnly);
    }
}
