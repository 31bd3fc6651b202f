//! The metric families kept in the prometheus registry: histograms, counts and process series.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntGauge, Opts, Registry};

/// The families that are not per instance; registered once.
pub(super) struct Families {
    pub rollout_seconds: HistogramVec,
    pub step_seconds: HistogramVec,
    pub live_actors: IntGauge,
    pub hibernated_actors: IntGauge,
}

impl Families {
    /// Creates every family and registers it, with build info and (on Linux) the process
    /// collector's RSS, CPU and open-fd series.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let families = Self {
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
                "Instance actors running, one per RedisInstance whose actor does not hibernate",
            )?,
            hibernated_actors: IntGauge::new(
                "redis_operator_instance_actors_hibernated",
                "RedisInstances at rest whose actor hibernates; the next event for one starts it again",
            )?,
        };
        registry.register(Box::new(families.rollout_seconds.clone()))?;
        registry.register(Box::new(families.step_seconds.clone()))?;
        registry.register(Box::new(families.live_actors.clone()))?;
        registry.register(Box::new(families.hibernated_actors.clone()))?;
        crate::stages::register(registry)?;
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
