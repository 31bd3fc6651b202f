//! Per-instance series as plain numbers written as text: a prometheus `*Vec` child costs ~600 B.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::InstanceKey;

/// A per-instance counter family; its labels beyond namespace and instance are
/// [`Counter::labels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Counter {
    Restarts,
    HashMismatches,
    InvalidConfigs,
    Errors,
    DriftRepairs,
    LiveChanges,
    RolloutFailures,
    RoleChanges,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Self::Restarts => "redis_operator_restarts_total",
            Self::HashMismatches => "redis_operator_config_hash_mismatches_total",
            Self::InvalidConfigs => "redis_operator_invalid_configs_total",
            Self::Errors => "redis_operator_reconcile_errors_total",
            Self::DriftRepairs => "redis_operator_drift_repairs_total",
            Self::LiveChanges => "redis_operator_live_config_changes_total",
            Self::RolloutFailures => "redis_operator_rollout_failures_total",
            Self::RoleChanges => "redis_operator_role_changes_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::Restarts => {
                "Restarts of an instance's pods started by the operator, by strategy and reason"
            }
            Self::HashMismatches => {
                "Times a difference from the desired config was observed, by kind: \
                 ConfigMapMissing, ConfigMapDiffers (content), AnnotationDiffers \
                 (the StatefulSet's config-hash annotation); each counted once when it appears"
            }
            Self::InvalidConfigs => "Configs refused, by validation or by Redis itself at start-up",
            Self::Errors => "Failed reconcile steps, by category",
            Self::DriftRepairs => {
                "Objects the operator owns found changed by hand and put back, by kind"
            }
            Self::LiveChanges => {
                "Live config changes (configUpdate: Live) by outcome: Applied to every pod without \
                 a restart, or Refused by Redis and set back on every pod"
            }
            Self::RolloutFailures => {
                "Restarts whose pods refused the new config or never became ready, by what \
                 followed: RolledBack to the last config that ran, or Halted"
            }
            Self::RoleChanges => {
                "Changes of a replicated instance's primary, by kind: Planned (a restart's \
                 switchover) or Unplanned (a failover after the primary was lost)"
            }
        }
    }

    /// Names of the values passed to [`Series::add`], in that order; alphabetical, so an
    /// instance's samples sort as the crate sorts them.
    fn labels(self) -> &'static [&'static str] {
        match self {
            Self::Restarts => &["reason", "strategy"],
            Self::HashMismatches | Self::DriftRepairs => &["kind"],
            Self::InvalidConfigs => &[],
            Self::Errors => &["category"],
            Self::LiveChanges => &["outcome"],
            Self::RolloutFailures => &["action"],
            Self::RoleChanges => &["kind"],
        }
    }
}

/// A per-instance gauge family.
#[derive(Debug, Clone, Copy)]
enum Gauge {
    ConfigInvalid,
    Mismatched,
    DesiredReplicas,
    LastRestart,
    ReadyReplicas,
    Restarting,
    Unreachable,
}

impl Gauge {
    fn name(self) -> &'static str {
        match self {
            Self::ConfigInvalid => "redis_operator_config_invalid",
            Self::Mismatched => "redis_operator_config_mismatched",
            Self::DesiredReplicas => "redis_operator_desired_replicas",
            Self::LastRestart => "redis_operator_last_restart_timestamp_seconds",
            Self::ReadyReplicas => "redis_operator_ready_replicas",
            Self::Restarting => "redis_operator_restart_in_progress",
            Self::Unreachable => "redis_operator_pods_unreachable",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::ConfigInvalid => {
                "1 while the instance's spec.config is refused and its pods keep the last good config"
            }
            Self::Mismatched => {
                "1 while the running objects differ from the desired config (any mismatch kind)"
            }
            Self::DesiredReplicas => "Redis pods the instance's spec asks for",
            Self::LastRestart => {
                "Unix time at which the operator last started a restart of the instance's pods"
            }
            Self::ReadyReplicas => "Ready Redis pods per instance",
            Self::Restarting => {
                "1 while a restart of the instance's pods is recorded in its status and not finished"
            }
            Self::Unreachable => {
                "Pods whose Redis the operator's last live config check could not reach or log in \
                 to; their live config is unchecked until they answer (0 without live checks)"
            }
        }
    }

    fn value(self, series: &Series) -> Option<f64> {
        let g = series.gauges;
        match self {
            Self::ConfigInvalid => g.map(|g| f64::from(g.config_invalid)),
            Self::Mismatched => g.map(|g| f64::from(g.mismatched)),
            Self::DesiredReplicas => g.map(|g| f64::from(g.desired)),
            Self::LastRestart => series.last_restart,
            Self::ReadyReplicas => g.map(|g| f64::from(g.ready)),
            Self::Restarting => g.map(|g| f64::from(g.restarting)),
            // 0, with the other gauges, until a live check counts: the alert then has a series
            // on every instance, and an instance without live checks reaches every pod it dials.
            Self::Unreachable => series.unreachable.or(g.map(|_| 0)).map(f64::from),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Family {
    Counter(Counter),
    Gauge(Gauge),
    /// Pods of a replicated instance that report the primary role.
    PrimaryPods,
    /// Each replica's lag behind the primary, by pod.
    ReplicationLag,
}

const PRIMARY_PODS: &str = "redis_operator_primary_pods";
const REPLICATION_LAG: &str = "redis_operator_replication_lag_bytes";

/// In the order of their names, as the registry writes its families.
const FAMILIES: [Family; 17] = [
    Family::Counter(Counter::HashMismatches),
    Family::Gauge(Gauge::ConfigInvalid),
    Family::Gauge(Gauge::Mismatched),
    Family::Gauge(Gauge::DesiredReplicas),
    Family::Counter(Counter::DriftRepairs),
    Family::Counter(Counter::InvalidConfigs),
    Family::Gauge(Gauge::LastRestart),
    Family::Counter(Counter::LiveChanges),
    Family::Gauge(Gauge::Unreachable),
    Family::PrimaryPods,
    Family::Gauge(Gauge::ReadyReplicas),
    Family::Counter(Counter::Errors),
    Family::ReplicationLag,
    Family::Gauge(Gauge::Restarting),
    Family::Counter(Counter::Restarts),
    Family::Counter(Counter::RoleChanges),
    Family::Counter(Counter::RolloutFailures),
];

/// What the last probe of a replicated instance's pods saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Replication {
    /// Pods that report the primary role.
    pub primaries: u32,
    /// Each replica's lag in bytes, by pod.
    pub lags: Vec<(String, i64)>,
}

/// What the last step saw; all five gauges appear together, on the first `Observed`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gauges {
    pub ready: i32,
    pub desired: i32,
    pub config_invalid: bool,
    pub mismatched: bool,
    pub restarting: bool,
}

#[derive(Debug)]
struct Count {
    counter: Counter,
    labels: [&'static str; 2],
    value: u64,
}

/// Every series of one instance.
#[derive(Debug, Default)]
pub(super) struct Series {
    pub gauges: Option<Gauges>,
    pub last_restart: Option<f64>,
    /// Pods the last live config check could not read; none before the first check.
    pub unreachable: Option<u32>,
    pub replication: Option<Replication>,
    /// Sorted by counter and labels, so each family's samples come out in a stable order.
    counts: Vec<Count>,
}

impl Series {
    /// Adds `by` to the counter with these label values (unused ones `""`); `by` 0 makes the
    /// series exist, so `increase()` sees its first count.
    pub fn add(&mut self, counter: Counter, labels: [&'static str; 2], by: u64) {
        let at = self
            .counts
            .binary_search_by(|c| (c.counter, c.labels).cmp(&(counter, labels)));
        match at {
            Ok(i) => self.counts[i].value += by,
            Err(i) => self.counts.insert(
                i,
                Count {
                    counter,
                    labels,
                    value: by,
                },
            ),
        }
    }
}

/// Fields in the alphabetical order of their label names, so the derived order sorts
/// samples as the prometheus crate does.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    instance: String,
    namespace: String,
}

impl From<InstanceKey> for Key {
    fn from(key: InstanceKey) -> Self {
        Self {
            instance: key.name,
            namespace: key.namespace,
        }
    }
}

/// The series of every instance, by instance.
#[derive(Debug, Default)]
pub(super) struct Instances(BTreeMap<Key, Series>);

impl Instances {
    pub fn series(&mut self, key: InstanceKey) -> &mut Series {
        self.0.entry(key.into()).or_default()
    }

    pub fn forget(&mut self, key: InstanceKey) {
        self.0.remove(&key.into());
    }

    /// Appends every family that has a sample, in the text exposition format.
    pub fn write_text(&self, out: &mut String) {
        for family in FAMILIES {
            let mut header = Some(family);
            for (key, series) in &self.0 {
                match family {
                    Family::Counter(counter) => {
                        for c in series.counts.iter().filter(|c| c.counter == counter) {
                            write_header(out, &mut header);
                            let names = counter.labels();
                            let extra = names.iter().copied().zip(c.labels);
                            write_sample(out, counter.name(), key, extra, c.value as f64);
                        }
                    }
                    Family::Gauge(gauge) => {
                        if let Some(value) = gauge.value(series) {
                            write_header(out, &mut header);
                            write_sample(out, gauge.name(), key, std::iter::empty(), value);
                        }
                    }
                    Family::PrimaryPods => {
                        if let Some(r) = &series.replication {
                            write_header(out, &mut header);
                            let value = f64::from(r.primaries);
                            write_sample(out, PRIMARY_PODS, key, std::iter::empty(), value);
                        }
                    }
                    Family::ReplicationLag => {
                        for (pod, lag) in series.replication.iter().flat_map(|r| &r.lags) {
                            write_header(out, &mut header);
                            let labels = std::iter::once(("pod", pod.as_str()));
                            write_sample(out, REPLICATION_LAG, key, labels, *lag as f64);
                        }
                    }
                }
            }
        }
    }
}

/// Writes HELP and TYPE the first time only, so a family without samples is left out.
fn write_header(out: &mut String, header: &mut Option<Family>) {
    let Some(family) = header.take() else { return };
    let (name, help, kind) = match family {
        Family::Counter(c) => (c.name(), c.help(), "counter"),
        Family::Gauge(g) => (g.name(), g.help(), "gauge"),
        Family::PrimaryPods => (
            PRIMARY_PODS,
            "Pods of a replicated instance whose Redis reports the primary role; \
             anything but 1 means no writes or two writable servers",
            "gauge",
        ),
        Family::ReplicationLag => (
            REPLICATION_LAG,
            "Bytes of the primary's replication stream a replica has not processed, by pod",
            "gauge",
        ),
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape(out, help, false);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Labels in the alphabetical order of their names; the value as the crate prints an `f64`.
fn write_sample<'a>(
    out: &mut String,
    name: &str,
    key: &'a Key,
    extra: impl Iterator<Item = (&'static str, &'a str)>,
    value: f64,
) {
    let mut labels = [("", ""); 4];
    labels[0] = ("instance", &key.instance);
    labels[1] = ("namespace", &key.namespace);
    let mut len = 2;
    for pair in extra {
        labels[len] = pair;
        len += 1;
    }
    let labels = &mut labels[..len];
    labels.sort_unstable_by_key(|(name, _)| *name);
    out.push_str(name);
    let mut separator = '{';
    for (name, value) in labels.iter() {
        out.push(separator);
        out.push_str(name);
        out.push_str("=\"");
        escape(out, value, true);
        out.push('"');
        separator = ',';
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, "}} {value}");
}

/// The text format's escapes: backslash and newline, and in label values the double quote.
fn escape(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}
