//! Checks the directive table, the validator, live config and the operator's loading probe
//! against a real redis-server 7.0.
//!
//! Needs `redis-server` and `redis-cli` 7.0.x on PATH (Debian: `apt-get install redis-server
//! redis-tools`); without them the tests fail rather than skip, so a green run always means
//! the table was compared with a live server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis_operator::config::directives::{self, Access, DIRECTIVES, Directive, Kind, Special};
use redis_operator::config::render::render;
use redis_operator::config::validate::{refusal, validate};
use redis_operator::crd::ConfigUpdate;
use redis_operator::live::normalize::same;
use redis_operator::live::{is_live, split};

/// How long a throwaway server may take to answer PING, or to exit after reading its config.
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs a tool from the Redis packages, failing with an install hint when it is missing.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}); these tests compare the directive table with a real \
             Redis 7.0: install it with `apt-get install -y redis-server redis-tools`"
            )
        })
}

fn assert_redis_7_0() {
    let version = String::from_utf8_lossy(&run("redis-server", &["--version"]).stdout).into_owned();
    assert!(
        version.contains("v=7.0."),
        "the directive table describes Redis 7.0, but redis-server reports: {version}"
    );
}

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("redis-operator-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A throwaway redis-server on a loopback port, killed on drop (also when a test panics).
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Server::start`] with more arguments.
    fn start_with(dir: &Path, args: &[&str]) -> Self {
        // The OS hands out a free port; closing the listener frees it for Redis.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        spawn_redis(dir, "127.0.0.1", port, args)
    }

    fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run("redis-cli", &all).stdout).into_owned()
    }

    /// `CONFIG GET <pattern>` as name -> value.
    fn config_get(&self, pattern: &str) -> BTreeMap<String, String> {
        let reply = self.cli(&["config", "get", pattern]);
        // redis-cli prints an empty reply as one blank line.
        if reply.trim().is_empty() {
            return BTreeMap::new();
        }
        let lines: Vec<&str> = reply.lines().collect();
        assert!(
            lines.len().is_multiple_of(2),
            "odd CONFIG GET reply: {reply}"
        );
        lines
            .chunks(2)
            .map(|p| (p[0].to_owned(), p[1].to_owned()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_name_redis_reports_is_in_the_table_and_back() {
    let scratch = Scratch::new("names");
    let server = Server::start(scratch.path());
    let reported = server.config_get("*");

    let unknown: Vec<_> = reported
        .keys()
        .filter(|n| directives::lookup(n).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "Redis reports directives the table lacks: {unknown:?}"
    );

    // The other way round: every name the table says CONFIG GET lists is listed, hidden ones
    // answer an exact CONFIG GET, and config-file-only ones are not in the runtime table.
    let mut wrong = Vec::new();
    for directive in DIRECTIVES {
        for name in directive.names() {
            let listed = reported.contains_key(name);
            let exact = !server.config_get(name).is_empty();
            let expected = match (directive.access, directive.hidden) {
                (Access::FileOnly, _) => (false, false),
                (_, true) => (false, true),
                _ => (true, true),
            };
            if (listed, exact) != expected {
                wrong.push(format!(
                    "{name}: listed={listed} exact={exact}, table says {expected:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "table and Redis disagree:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn redis_own_values_pass_validation() {
    let scratch = Scratch::new("values");
    let server = Server::start(scratch.path());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, value) in server.config_get("*") {
        // Unknown names fail every_name_redis_reports_is_in_the_table_and_back.
        let Some(directive) = directives::lookup(&name) else {
            continue;
        };
        if refusal(directive).is_some() {
            continue;
        }
        checked += 1;
        let config = BTreeMap::from([(name.clone(), value.clone())]);
        for violation in validate(&config) {
            failures.push(format!("{name} {value:?}: {}", violation.reason));
        }
    }
    assert!(checked > 100, "only {checked} directives checked");
    assert!(
        failures.is_empty(),
        "Redis's own values fail validation:\n{}",
        failures.join("\n")
    );
}

#[test]
fn mutability_matches_config_set() {
    let scratch = Scratch::new("mutability");
    let server = Server::start(scratch.path());
    let mut wrong = Vec::new();
    for (name, value) in server.config_get("*") {
        // Unknown names fail every_name_redis_reports_is_in_the_table_and_back.
        let Some(directive) = directives::lookup(&name) else {
            continue;
        };
        // Setting the current value changes nothing, but Redis checks the flags first.
        let reply = server.cli(&["config", "set", &name, &value]);
        let access = if reply.contains("immutable") {
            Access::Immutable
        } else if reply.contains("protected") {
            Access::Protected
        } else {
            Access::Mutable
        };
        if access != directive.access {
            wrong.push(format!(
                "{name}: CONFIG SET says {access:?} ({}), table says {:?}",
                reply.trim(),
                directive.access
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "mutability differs:\n{}",
        wrong.join("\n")
    );
}

/// Whether redis-server accepts a config file with this one user directive, rendered exactly as
/// the operator renders it. The server gets `port 0` so it exits right after reading the file.
fn redis_accepts(scratch: &Path, name: &str, value: &str) -> Result<(), String> {
    let rendered = render(&BTreeMap::from([(name.to_owned(), value.to_owned())])).text;
    // Drop the operator's dir and listen address: this server must not touch /data or a port.
    let mut text: String = rendered
        .lines()
        .filter(|l| !["dir ", "port ", "bind "].iter().any(|p| l.starts_with(p)))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("dir {}\nport 0\n", scratch.display()));
    let file = scratch.join("redis.conf");
    fs::write(&file, &text).expect("write redis.conf");

    // Output goes to a file: Redis prints its fatal error to stderr, its log to stdout.
    let log = scratch.join("startup.log");
    let out = fs::File::create(&log).expect("create startup log");
    let err = out.try_clone().expect("clone startup log");
    let mut child = Command::new("redis-server")
        .arg(&file)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn redis-server");
    let started = Instant::now();
    while child.try_wait().expect("wait for redis-server").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server kept running with:\n{text}");
        }
        thread::sleep(Duration::from_millis(2));
    }
    let output = fs::read_to_string(&log).expect("read startup log");
    if output.contains("FATAL CONFIG FILE ERROR") {
        Err(output.lines().last().unwrap_or_default().to_owned())
    } else if output.contains("Configured to not listen anywhere") {
        Ok(())
    } else {
        panic!("redis-server neither refused nor loaded:\n{text}\n---\n{output}");
    }
}

/// Values just inside and just outside every numeric range users may set.
fn boundary_values(directive: &Directive) -> Vec<String> {
    let (min, max): (i128, i128) = match directive.kind {
        Kind::Int { min, max } => (min.into(), max.into()),
        Kind::Memory { min, max, .. } => (min.into(), max.into()),
        _ => return vec![],
    };
    let mut values = vec![min, max, max + 1];
    if matches!(directive.kind, Kind::Int { .. }) || min > 0 {
        values.push(min - 1);
    }
    if max == i128::from(u64::MAX) {
        // Redis wraps sizes past 2^64 instead of refusing them; the validator refuses them
        // on purpose (unit-tested), so there is nothing to agree on.
        values.retain(|v| *v != max + 1);
    }
    values.iter().map(ToString::to_string).collect()
}

/// Values of every other kind, valid and not, where the validator must agree with Redis.
const SAMPLES: &[(&str, &[&str])] = &[
    ("appendonly", &["yes", "YES", "no", "1", "true", ""]),
    (
        "maxmemory-policy",
        &["allkeys-lru", "ALLKEYS-LFU", "noeviction", "", "lru"],
    ),
    ("timeout", &["01", "+1", "-0", "1.0", "", "0x10", "1k"]),
    (
        "maxmemory",
        &[
            "100mb", "100MB", "1gb", "1G", "512k", "1b", "007", "1.5gb", "-1", "+5", "5 mb", "10zb",
        ],
    ),
    (
        "maxmemory-clients",
        &["10%", "0%", "100%", "101%", "-5%", "%", "10 %", "5gb"],
    ),
    (
        "shutdown-on-sigterm",
        &[
            "default",
            "save now",
            "NOW",
            "now force",
            "save nosave",
            "bogus",
            "",
        ],
    ),
    (
        "save",
        &[
            "",
            "  ",
            "900 1",
            "900 1 300 10 60 10000",
            "900",
            "0 1",
            "900 -1",
            "900 1 300",
            "900 1x",
        ],
    ),
    (
        "client-output-buffer-limit",
        &[
            "normal 0 0 0",
            "replica 256mb 64mb 60",
            "slave 1 1 1",
            "pubsub 32mb 8mb 60 normal 0 0 0",
            "master 0 0 0",
            "",
            "normal 0 0",
            "normal 0 0 -1",
            "normal 1x 0 0",
        ],
    ),
    ("notify-keyspace-events", &["", "KEA", "Ex", "q", "kea"]),
    (
        "oom-score-adj-values",
        &["0 200 800", "-2000 0 2000", "0 200", "0 200 3000", "a b c"],
    ),
    (
        "latency-tracking-info-percentiles",
        &["", "50 99 99.9", "100", "1e1", "101", "abc", "nan"],
    ),
    ("dbfilename", &["cache.rdb", "", "a/b"]),
    ("appendfilename", &["cache.aof", "", "a/b"]),
    ("appenddirname", &["aof", ""]),
    (
        "proc-title-template",
        &[
            "{title} {listen-addr} {server-mode}",
            "{{title}} x",
            "x }",
            "{port}",
            "{title}",
            "{unixsocket}",
            "{foo} x",
            "x {",
            "",
        ],
    ),
    ("requirepass", &["", "with space", "quo\"te", "back\\slash"]),
    ("oom-score-adj", &["relative", "absolute", "sometimes"]),
    ("hash-max-ziplist-entries", &["256", "-1"]),
];

#[test]
fn validator_agrees_with_redis_on_values() {
    assert_redis_7_0();
    let scratch = Scratch::new("agree");
    let mut cases: Vec<(String, String)> = DIRECTIVES
        .iter()
        .filter(|d| refusal(d).is_none())
        .flat_map(|d| {
            boundary_values(d)
                .into_iter()
                .map(|v| (d.name.to_owned(), v))
        })
        .collect();
    cases.extend(
        SAMPLES.iter().flat_map(|(name, values)| {
            values.iter().map(|v| ((*name).to_owned(), (*v).to_owned()))
        }),
    );
    assert!(cases.len() > 300, "only {} cases", cases.len());

    let mut disagreements = Vec::new();
    for (name, value) in &cases {
        let ours = validate(&BTreeMap::from([(name.clone(), value.clone())]));
        let theirs = redis_accepts(scratch.path(), name, value);
        match (ours.first(), theirs) {
            (None, Ok(())) | (Some(_), Err(_)) => {}
            (None, Err(redis)) => {
                disagreements.push(format!("{name} {value:?}: valid here, Redis says {redis}"))
            }
            (Some(v), Ok(())) => disagreements.push(format!(
                "{name} {value:?}: Redis accepts, here {}",
                v.reason
            )),
        }
    }
    assert!(
        disagreements.is_empty(),
        "validator and Redis disagree:\n{}",
        disagreements.join("\n")
    );
}

/// Values to `CONFIG SET` for live directives, in the spellings users write and Redis rewrites:
/// units, upper case, runs of spaces, the `replica` class, `+` and leading zeros, numbers Redis
/// clamps, and values that read back as a synonym. Every text, flag and special directive needs
/// an entry; booleans, integers, enums and sizes without one get [`default_sample`].
///
/// Values chosen so the sandbox can apply them:
///
/// | directive | left out | why |
/// |---|---|---|
/// | activedefrag | yes | Debian builds against the system jemalloc, which lacks the defrag hint: CONFIG SET answers "Active defragmentation cannot be enabled" |
/// | oom-score-adj | absolute | sets oom_score_adj to 0, which an unprivileged process started with a raised score may not do |
/// | oom-score-adj-values | negative values | same: lowering the score needs CAP_SYS_RESOURCE |
/// | maxclients | large values | needs more file descriptors than the sandbox's limit allows |
///
/// Live directives refused by validation (`bind`, `port`, `cluster-*`, `tls-*`, hidden test
/// knobs) never reach a pod and are not set here.
const LIVE_SAMPLES: &[(&str, &[&str])] = &[
    ("activedefrag", &["NO"]),
    ("active-defrag-ignore-bytes", &["100mb"]),
    ("auto-aof-rewrite-min-size", &["64MB"]),
    ("bind-source-addr", &["127.0.0.1", ""]),
    (
        "client-output-buffer-limit",
        &[
            "replica 256mb 64mb 60",
            "Replica 64k 0 +60",
            "normal 1gb 512mb 0  pubsub 32MB 8mb 60",
            "slave 1mb 1mb 1 slave 2mb 2mb 2",
        ],
    ),
    ("client-query-buffer-limit", &["100mb", "1gb"]),
    ("hash-max-listpack-value", &["64k"]),
    ("hll-sparse-max-bytes", &["3kb"]),
    ("hz", &["20", "1000", "0"]),
    ("ignore-warnings", &["ARM64-COW-BUG"]),
    (
        "latency-tracking-info-percentiles",
        &["50 99 99.9", "99.90  1e1", ""],
    ),
    ("list-max-listpack-size", &["-1", "64"]),
    ("loglevel", &["WARNING"]),
    ("maxclients", &["128"]),
    ("maxmemory", &["100mb", "1gb", "1G", "64k", "0"]),
    ("maxmemory-clients", &["10%", "0%", "64kb", "100%", "0"]),
    (
        "maxmemory-policy",
        &["ALLKEYS-LRU", "Volatile-LFU", "noeviction"],
    ),
    (
        "notify-keyspace-events",
        &["KEA", "g$lshzxetdKE", "Ex", "Kxn", ""],
    ),
    ("oom-score-adj", &["RELATIVE", "Yes", "no"]),
    ("oom-score-adj-values", &["0  300   900", "0 200 800"]),
    (
        "proc-title-template",
        &["{title}  {listen-addr} {server-mode}", "{title} {port}"],
    ),
    ("proto-max-bulk-len", &["1gb", "512mb"]),
    ("repl-backlog-size", &["64mb", "1k", "20KB"]),
    (
        "save",
        &[
            "900 1  300 10",
            "+3600 01",
            "  ",
            "3600 1 300 100 60 10000",
            "",
        ],
    ),
    (
        "shutdown-on-sigint",
        &["NOW force", "save  now", "default now", "default"],
    ),
    (
        "shutdown-on-sigterm",
        &["nosave", "now now", "save default", "default"],
    ),
    ("stream-node-max-bytes", &["4kb"]),
    ("zset-max-listpack-value", &["64KB"]),
];

/// Samples for directives the operator restarts for, where no default fits.
const RESTART_SAMPLES: &[(&str, &[&str])] = &[
    ("aof_rewrite_cpulist", &["0"]),
    ("appenddirname", &["aof"]),
    ("appendfilename", &["cache.aof"]),
    ("bgsave_cpulist", &["0"]),
    ("bio_cpulist", &["0"]),
    ("dbfilename", &["cache.rdb"]),
    ("server_cpulist", &["0"]),
    ("syslog-ident", &["redis-test"]),
];

/// A value other than `current` for the kinds where one is easy to pick: the other boolean
/// and an enum word in upper case, the next integer, a size with a unit.
fn default_sample(directive: &Directive, current: &str) -> Option<String> {
    match directive.kind {
        Kind::Bool => Some(if current == "yes" { "NO" } else { "YES" }.to_owned()),
        Kind::Enum(words) => words
            .iter()
            .find(|w| !w.eq_ignore_ascii_case(current))
            .map(|w| w.to_ascii_uppercase()),
        Kind::Int { min, max } => {
            let now: i64 = current.parse().ok()?;
            let next = if now < max { now + 1 } else { now - 1 };
            Some(next.clamp(min, max).to_string())
        }
        Kind::Memory { min, max, .. } => (min..=max)
            .contains(&(100 << 20))
            .then(|| "100mb".to_owned()),
        _ => None,
    }
}

/// The samples for a directive: from `table`, or one from [`default_sample`].
fn samples(table: &[(&str, &[&str])], directive: &Directive, current: &str) -> Vec<String> {
    match table.iter().find(|(name, _)| *name == directive.name) {
        Some((_, values)) => values.iter().map(|v| (*v).to_owned()).collect(),
        None => default_sample(directive, current).into_iter().collect(),
    }
}

/// The directive's samples that validation accepts; a missing or invalid sample is a failure.
fn valid_samples(
    table: &[(&str, &[&str])],
    table_name: &str,
    directive: &Directive,
    current: &str,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let name = directive.name;
    let values = samples(table, directive, current);
    if values.is_empty() {
        failures.push(format!("{name}: no sample; add one to {table_name}"));
    }
    values
        .into_iter()
        .filter(|sample| {
            let config = BTreeMap::from([(name.to_owned(), sample.clone())]);
            match validate(&config).first() {
                Some(v) => {
                    failures.push(format!(
                        "{name} {sample:?}: sample is invalid: {}",
                        v.reason
                    ));
                    false
                }
                None => true,
            }
        })
        .collect()
}

/// Kinds `same` claims to compare: for these, "cannot tell" is a failure too.
fn compared(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Octal { .. }
            | Kind::Ignored { .. }
            | Kind::Special(
                Special::LatencyPercentiles
                    | Special::Bind
                    | Special::ReplicaOf
                    | Special::Dir
                    | Special::Include
                    | Special::RenameCommand
                    | Special::User
                    | Special::LoadModule
                    | Special::Sentinel
            )
    )
}

#[test]
fn live_values_set_on_redis_read_back_as_the_same() {
    let scratch = Scratch::new("live");
    let server = Server::start(scratch.path());
    let mut failures = Vec::new();
    let mut checked = BTreeSet::new();
    for directive in DIRECTIVES.iter().filter(|d| is_live(d.name)) {
        let name = directive.name;
        // Validation refuses it, so no spec carries it to a pod.
        if refusal(directive).is_some() {
            continue;
        }
        checked.insert(name);
        let Some(current) = server.config_get(name).remove(name) else {
            failures.push(format!("{name}: CONFIG GET does not answer"));
            continue;
        };
        for sample in valid_samples(
            LIVE_SAMPLES,
            "LIVE_SAMPLES",
            directive,
            &current,
            &mut failures,
        ) {
            let config = BTreeMap::from([(name.to_owned(), sample.clone())]);
            // What the operator sends: the value as `split` keeps it for CONFIG SET.
            let Some(sent) = split(&config, ConfigUpdate::Live).live.remove(name) else {
                failures.push(format!("{name}: split does not treat it as live"));
                continue;
            };
            let reply = server.cli(&["config", "set", name, &sent]);
            if reply.trim() != "OK" {
                failures.push(format!(
                    "{name} {sent:?}: CONFIG SET answers {}",
                    reply.trim()
                ));
                continue;
            }
            let got = server.config_get(name).remove(name).unwrap_or_default();
            // The operator compares the value it sent; users read the one they wrote.
            for wanted in [&sample, &sent] {
                let verdict = same(name, wanted, &got);
                let fine = match verdict {
                    Some(true) => true,
                    None => !compared(directive.kind),
                    Some(false) => false,
                };
                if !fine {
                    failures.push(format!(
                        "{name}: CONFIG SET {sent:?} reads back {got:?}, same({wanted:?}) = \
                         {verdict:?}"
                    ));
                }
            }
        }
    }
    for (name, _) in LIVE_SAMPLES {
        if !checked.contains(name) {
            failures.push(format!(
                "{name}: in LIVE_SAMPLES but not a live, valid directive"
            ));
        }
    }
    assert!(
        checked.len() > 90,
        "only {} directives checked",
        checked.len()
    );
    assert!(
        failures.is_empty(),
        "live values and Redis disagree:\n{}",
        failures.join("\n")
    );
}

/// Directives Redis changes at runtime that the operator never sends live: `requirepass`, which
/// is not rendered at all (the users' passwords live in the ACL file).
const LIVE_IN_REDIS_RESTART_HERE: &[&str] = &["requirepass"];

#[test]
fn config_set_refuses_what_the_operator_restarts_for() {
    let scratch = Scratch::new("restart");
    let server = Server::start(scratch.path());
    let mut failures = Vec::new();
    let mut checked = BTreeSet::new();
    for directive in DIRECTIVES.iter().filter(|d| !is_live(d.name)) {
        let name = directive.name;
        if refusal(directive).is_some() {
            continue;
        }
        if LIVE_IN_REDIS_RESTART_HERE.contains(&name) {
            // Not set here: it would lock this client out. mutability_matches_config_set checks
            // that Redis takes it.
            assert_eq!(directive.access, Access::Mutable, "{name}");
            continue;
        }
        checked.insert(name);
        let before = server.config_get(name).remove(name).unwrap_or_default();
        for sample in valid_samples(
            RESTART_SAMPLES,
            "RESTART_SAMPLES",
            directive,
            &before,
            &mut failures,
        ) {
            let reply = server.cli(&["config", "set", name, &sample]);
            let refused = reply.contains("can't set immutable config")
                || reply.contains("can't set protected config");
            let after = server.config_get(name).remove(name).unwrap_or_default();
            if !refused || after != before {
                failures.push(format!(
                    "{name} {sample:?}: CONFIG SET answers {}, value {before:?} -> {after:?}",
                    reply.trim()
                ));
            }
        }
    }
    for (name, _) in RESTART_SAMPLES {
        if !checked.contains(name) {
            failures.push(format!("{name}: in RESTART_SAMPLES but live or refused"));
        }
    }
    // databases, io-threads and dbfilename at least.
    for name in ["databases", "io-threads", "dbfilename"] {
        assert!(checked.contains(name), "{name} not checked");
    }
    assert!(
        failures.is_empty(),
        "Redis takes at runtime what the operator restarts for:\n{}",
        failures.join("\n")
    );
}

/// Starts `redis-server` with `args` on `host:port` (killed on drop) and waits until it
/// answers at all: `PONG`, or `LOADING` while it reads its data.
fn spawn_redis(dir: &Path, host: &str, port: u16, args: &[&str]) -> Server {
    assert_redis_7_0();
    let log = fs::File::create(dir.join(format!("redis-{host}.log"))).expect("create log");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", host, "--save", ""])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let server = Server { child, port };
    let started = Instant::now();
    loop {
        let reply = run("redis-cli", &["-h", host, "-p", &port.to_string(), "ping"]);
        let text = String::from_utf8_lossy(&reply.stdout);
        if text.starts_with("PONG") || text.starts_with("LOADING") {
            return server;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "redis-server on {host}:{port}: {text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The operator's question to a pod at its readiness deadline, asked of a real server while
/// it loads a dataset (slowed down per key) and after: loading, then not.
#[tokio::test]
async fn a_server_loading_its_data_is_told_apart_from_one_that_serves() {
    let scratch = Scratch::new("loading");
    let writer = Server::start_with(scratch.path(), &["--enable-debug-command", "yes"]);
    assert_eq!(writer.cli(&["debug", "populate", "20000"]).trim(), "OK");
    assert_eq!(writer.cli(&["save"]).trim(), "OK");
    drop(writer);

    // The operator dials a pod's IP on the Redis port: a loopback address of its own here.
    let host = "127.0.0.86";
    // Slowed per key, and answering other clients every KiB read rather than every 2 MiB.
    let slow = [
        "--key-load-delay",
        "100",
        "--loading-process-events-interval-bytes",
        "1024",
    ];
    let loader = spawn_redis(scratch.path(), host, 6379, &slow);
    let pod = redis_operator::live::pods::PodAddress {
        pod: "loading-0".into(),
        ip: Some(host.into()),
        tls: None,
    };
    let first = redis_operator::live::pods::loading(&pod, None).await;
    let started = Instant::now();
    let mut after = first.as_ref().ok().copied();
    while after == Some(true) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = redis_operator::live::pods::loading(&pod, None).await.ok();
    }
    drop(loader);
    assert!(
        matches!(first, Ok(true)),
        "asked while loading 20,000 keys at 100 µs each: {first:?}"
    );
    assert_eq!(after, Some(false), "once loaded it serves");
}
