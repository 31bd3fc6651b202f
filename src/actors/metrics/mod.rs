//! The metrics actor: owns the registry and the per-instance series; renders them for `/metrics`.

use std::time::Duration;

use prometheus::{Registry, TextEncoder};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use families::Families;
use per_instance::{Counter, Gauges, Instances};

mod families;
mod per_instance;
#[cfg(test)]
mod tests;

/// Which instance a sample belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// Namespace of the RedisInstance.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the other actors report.
#[derive(Debug)]
pub enum MetricsMsg {
    /// A restart of the pods began.
    Restarted {
        /// The instance.
        key: InstanceKey,
        /// `RollingUpdate` or `Recreate`.
        strategy: &'static str,
        /// Why: `ConfigChanged`, `ConfigMapChanged`, `ImageChanged`, `PodTemplateChanged`, `Superseded`.
        reason: &'static str,
    },
    /// Something the operator owns was changed by hand and put back.
    DriftRepaired {
        /// The instance.
        key: InstanceKey,
        /// What drifted: `Service`, `StatefulSetSpec`, `Image`, `PodTemplate`, `ConfigMap`.
        kind: &'static str,
    },
    /// A restart finished: every pod runs the new config and is ready.
    RestartCompleted {
        /// The instance.
        key: InstanceKey,
        /// `RollingUpdate` or `Recreate`.
        strategy: &'static str,
        /// From restart decision to all replicas ready.
        took: Duration,
    },
    /// A difference from the desired config appeared in the caches.
    HashMismatch {
        /// The instance.
        key: InstanceKey,
        /// One of [`MISMATCH_KINDS`].
        kind: &'static str,
    },
    /// A spec was refused, by validation or by Redis.
    InvalidConfig(InstanceKey),
    /// A live config change ended.
    LiveChange {
        /// The instance.
        key: InstanceKey,
        /// `Applied` or `Refused`.
        outcome: &'static str,
    },
    /// A live config check ended: how many pods it could not read (0: it read every pod).
    PodsUnreachable {
        /// The instance.
        key: InstanceKey,
        /// Pods that did not answer or refused the operator's login.
        pods: u32,
    },
    /// A restart failed (refused config, or a pod never ready).
    RolloutFailed {
        /// The instance.
        key: InstanceKey,
        /// `RolledBack` or `Halted`.
        action: &'static str,
    },
    /// A reconcile step failed.
    ReconcileError {
        /// The instance.
        key: InstanceKey,
        /// Fixed category (never an API server message).
        category: &'static str,
    },
    /// What the last step saw of the instance.
    Observed {
        /// The instance.
        key: InstanceKey,
        /// Ready pods.
        ready: i32,
        /// Pods the spec asks for.
        desired: i32,
        /// The spec is refused.
        config_invalid: bool,
        /// Some kind of mismatch with the desired config is present.
        mismatched: bool,
        /// A restart is recorded in status and not finished.
        restarting: bool,
        /// The spec's restart strategy, so its restart series exists (at 0) before the first
        /// restart and `increase()` sees that restart.
        strategy: &'static str,
    },
    /// What the last probe of a replicated instance's pods saw.
    Replication {
        /// The instance.
        key: InstanceKey,
        /// Pods that report the primary role.
        primaries: u32,
        /// Each replica's lag in bytes, by pod.
        lags: Vec<(String, i64)>,
    },
    /// The primary role moved to another pod.
    RoleChanged {
        /// The instance.
        key: InstanceKey,
        /// `Planned` (a switchover) or `Unplanned` (a failover).
        kind: &'static str,
    },
    /// One actor step ended.
    StepTook {
        /// What was decided (fixed names).
        decision: &'static str,
        /// Wall time of the step.
        took: Duration,
    },
    /// An instance actor started.
    ActorStarted,
    /// An instance actor stopped.
    ActorStopped,
    /// How many instances' actors hibernate now.
    Hibernated(usize),
    /// The instance is gone: drop its series so dashboards do not show ghosts.
    Forget(InstanceKey),
    /// Render the registry in the Prometheus text format, or say why it could not be.
    Render(RpcReplyPort<Result<String, String>>),
}

/// The kinds of [`MetricsMsg::HashMismatch`].
pub const MISMATCH_KINDS: [&str; 3] = ["ConfigMapMissing", "ConfigMapDiffers", "AnnotationDiffers"];

/// The registry, and the per-instance series kept beside it.
pub struct MetricsState {
    registry: Registry,
    families: Families,
    instances: Instances,
}

impl MetricsState {
    /// Creates and registers every family.
    pub fn register(registry: Registry) -> Result<Self, prometheus::Error> {
        let families = Families::register(&registry)?;
        Ok(Self {
            registry,
            families,
            instances: Instances::default(),
        })
    }

    fn record(&mut self, msg: MetricsMsg) {
        let f = &self.families;
        match msg {
            MetricsMsg::Restarted {
                key,
                strategy,
                reason,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let series = self.instances.series(key);
                series.add(Counter::Restarts, [reason, strategy], 1);
                series.last_restart = Some(now.as_secs_f64());
            }
            MetricsMsg::DriftRepaired { key, kind } => {
                self.count(key, Counter::DriftRepairs, kind);
            }
            MetricsMsg::RestartCompleted { strategy, took, .. } => {
                f.rollout_seconds
                    .with_label_values(&[strategy])
                    .observe(took.as_secs_f64());
            }
            MetricsMsg::HashMismatch { key, kind } => {
                self.count(key, Counter::HashMismatches, kind);
            }
            MetricsMsg::InvalidConfig(key) => self.count(key, Counter::InvalidConfigs, ""),
            MetricsMsg::LiveChange { key, outcome } => {
                self.count(key, Counter::LiveChanges, outcome);
            }
            MetricsMsg::PodsUnreachable { key, pods } => {
                self.instances.series(key).unreachable = Some(pods);
            }
            MetricsMsg::RolloutFailed { key, action } => {
                self.count(key, Counter::RolloutFailures, action);
            }
            MetricsMsg::ReconcileError { key, category } => {
                self.count(key, Counter::Errors, category);
            }
            MetricsMsg::Observed {
                key,
                ready,
                desired,
                config_invalid,
                mismatched,
                restarting,
                strategy,
            } => {
                f.rollout_seconds.with_label_values(&[strategy]);
                let series = self.instances.series(key);
                series.gauges = Some(Gauges {
                    ready,
                    desired,
                    config_invalid,
                    mismatched,
                    restarting,
                });
                // Created at 0, so that `increase()` and `rate()` see the first restart, the
                // first mismatch of each kind and the first refusal, and the dashboard shows 0
                // on a healthy instance. Error categories are left out: one series per category
                // and instance would cost more than the panel's `or vector(0)` does.
                series.add(Counter::Restarts, ["ConfigChanged", strategy], 0);
                for kind in MISMATCH_KINDS {
                    series.add(Counter::HashMismatches, [kind, ""], 0);
                }
                series.add(Counter::InvalidConfigs, ["", ""], 0);
            }
            MetricsMsg::Replication {
                key,
                primaries,
                lags,
            } => {
                let series = self.instances.series(key);
                if series.replication.is_none() {
                    // At 0, so that `increase()` sees the first role change of either kind.
                    for kind in ["Planned", "Unplanned"] {
                        series.add(Counter::RoleChanges, [kind, ""], 0);
                    }
                }
                series.replication = Some(per_instance::Replication { primaries, lags });
            }
            MetricsMsg::RoleChanged { key, kind } => self.count(key, Counter::RoleChanges, kind),
            MetricsMsg::StepTook { decision, took } => {
                f.step_seconds
                    .with_label_values(&[decision])
                    .observe(took.as_secs_f64());
            }
            MetricsMsg::ActorStarted => f.live_actors.inc(),
            MetricsMsg::ActorStopped => f.live_actors.dec(),
            MetricsMsg::Hibernated(count) => f
                .hibernated_actors
                .set(i64::try_from(count).unwrap_or(i64::MAX)),
            MetricsMsg::Forget(key) => self.instances.forget(key),
            MetricsMsg::Render(reply) => {
                // The caller may have timed out and gone; nothing to do then.
                let _ = reply.send(self.render());
            }
        }
    }

    fn count(&mut self, key: InstanceKey, counter: Counter, label: &'static str) {
        self.instances.series(key).add(counter, [label, ""], 1);
    }

    /// The registry in the Prometheus text exposition format, then the per-instance series.
    pub fn render(&self) -> Result<String, String> {
        let mut text = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|e| format!("encoding metrics: {e}"))?;
        self.instances.write_text(&mut text);
        Ok(text)
    }
}

/// Receives counts from the instance actors; answers render requests from the HTTP server.
pub struct MetricsActor;

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = Registry;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        registry: Registry,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(MetricsState::register(registry)?)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.record(msg);
        Ok(())
    }
}
