//! The metric families the metrics actor owns, with their names, help texts and buckets.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Label names of the per-instance series.
const PER_INSTANCE: [&str; 2] = ["namespace", "instance"];

/// Every family the actor writes; registered once.
pub(super) struct Families {
    pub restarts: IntCounterVec,
    pub last_restart: GaugeVec,
    pub hash_mismatches: IntCounterVec,
    pub invalid_configs: IntCounterVec,
    pub config_invalid: IntGaugeVec,
    pub mismatched: IntGaugeVec,
    pub restarting: IntGaugeVec,
    pub errors: IntCounterVec,
    pub ready_replicas: IntGaugeVec,
    pub desired_replicas: IntGaugeVec,
    pub drift_repairs: IntCounterVec,
    pub live_changes: IntCounterVec,
    pub rollout_failures: IntCounterVec,
    pub rollout_seconds: HistogramVec,
    pub step_seconds: HistogramVec,
    pub live_actors: IntGauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), &PER_INSTANCE)
}

impl Families {
    /// Creates every family and registers it, with build info and (on Linux) the process
    /// collector's RSS, CPU and open-fd series.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let families = Self {
            restarts: counter(
                "redis_operator_restarts_total",
                "Restarts of an instance's pods started by the operator, by strategy and reason",
                &["namespace", "instance", "strategy", "reason"],
            )?,
            last_restart: GaugeVec::new(
                Opts::new(
                    "redis_operator_last_restart_timestamp_seconds",
                    "Unix time at which the operator last started a restart of the instance's pods",
                ),
                &PER_INSTANCE,
            )?,
            hash_mismatches: counter(
                "redis_operator_config_hash_mismatches_total",
                "Times a difference from the desired config was observed, by kind: \
                 ConfigMapMissing, ConfigMapDiffers (content), AnnotationDiffers \
                 (the StatefulSet's config-hash annotation); each counted once when it appears",
                &["namespace", "instance", "kind"],
            )?,
            invalid_configs: counter(
                "redis_operator_invalid_configs_total",
                "Configs refused, by validation or by Redis itself at start-up",
                &PER_INSTANCE,
            )?,
            config_invalid: gauge(
                "redis_operator_config_invalid",
                "1 while the instance's spec.config is refused and its pods keep the last good config",
            )?,
            mismatched: gauge(
                "redis_operator_config_mismatched",
                "1 while the running objects differ from the desired config (any mismatch kind)",
            )?,
            restarting: gauge(
                "redis_operator_restart_in_progress",
                "1 while a restart of the instance's pods is recorded in its status and not finished",
            )?,
            errors: counter(
                "redis_operator_reconcile_errors_total",
                "Failed reconcile steps, by category",
                &["namespace", "instance", "category"],
            )?,
            ready_replicas: gauge(
                "redis_operator_ready_replicas",
                "Ready Redis pods per instance",
            )?,
            desired_replicas: gauge(
                "redis_operator_desired_replicas",
                "Redis pods the instance's spec asks for",
            )?,
            drift_repairs: counter(
                "redis_operator_drift_repairs_total",
                "Objects the operator owns found changed by hand and put back, by kind",
                &["namespace", "instance", "kind"],
            )?,
            live_changes: counter(
                "redis_operator_live_config_changes_total",
                "Live config changes (configUpdate: Live) by outcome: Applied to every pod without \
                 a restart, or Refused by Redis and set back on every pod",
                &["namespace", "instance", "outcome"],
            )?,
            rollout_failures: counter(
                "redis_operator_rollout_failures_total",
                "Restarts whose pods refused the new config or never became ready, by what \
                 followed: RolledBack to the last config that ran, or Halted",
                &["namespace", "instance", "action"],
            )?,
            rollout_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "redis_operator_rollout_duration_seconds",
                    "Time from a restart decision until every replica runs the new config and is ready",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ]),
                &["strategy"],
            )?,
            step_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "redis_operator_reconcile_step_duration_seconds",
                    "Time one instance actor step took, from reading the caches to its last write, by decision",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["decision"],
            )?,
            live_actors: IntGauge::new(
                "redis_operator_instance_actors",
                "Instance actors running, one per RedisInstance",
            )?,
        };
        registry.register(Box::new(families.restarts.clone()))?;
        registry.register(Box::new(families.last_restart.clone()))?;
        registry.register(Box::new(families.hash_mismatches.clone()))?;
        registry.register(Box::new(families.invalid_configs.clone()))?;
        registry.register(Box::new(families.config_invalid.clone()))?;
        registry.register(Box::new(families.mismatched.clone()))?;
        registry.register(Box::new(families.restarting.clone()))?;
        registry.register(Box::new(families.errors.clone()))?;
        registry.register(Box::new(families.ready_replicas.clone()))?;
        registry.register(Box::new(families.desired_replicas.clone()))?;
        registry.register(Box::new(families.drift_repairs.clone()))?;
        registry.register(Box::new(families.live_changes.clone()))?;
        registry.register(Box::new(families.rollout_failures.clone()))?;
        registry.register(Box::new(families.rollout_seconds.clone()))?;
        registry.register(Box::new(families.step_seconds.clone()))?;
        registry.register(Box::new(families.live_actors.clone()))?;
        register_build_info(registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(families)
    }
}

fn register_build_info(registry: &Registry) -> Result<(), prometheus::Error> {
    let info = Gauge::with_opts(
        Opts::new(
            "redis_operator_build_info",
            "Always 1; its labels say which build of the operator runs",
        )
        .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    info.set(1.0);
    registry.register(Box::new(info))
}
