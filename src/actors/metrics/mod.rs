//! The metrics actor: owns the Prometheus registry and renders it for `/metrics`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use families::Families;

mod families;
#[cfg(test)]
mod tests;

/// Which instance a sample belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// The instance is gone: drop its series so dashboards do not show ghosts.
    Forget(InstanceKey),
    /// Render the registry in the Prometheus text format, or say why it could not be.
    Render(RpcReplyPort<Result<String, String>>),
}

/// The kinds of [`MetricsMsg::HashMismatch`].
pub const MISMATCH_KINDS: [&str; 3] = ["ConfigMapMissing", "ConfigMapDiffers", "AnnotationDiffers"];

/// Per-instance families with labels beyond namespace and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Restarts,
    Errors,
    DriftRepairs,
    HashMismatches,
    LiveChanges,
    RolloutFailures,
}

/// The registry and the families the operator exports.
pub struct MetricsState {
    registry: Registry,
    families: Families,
    /// Values of the labels after namespace and instance, per family and instance, so
    /// [`MetricsState::forget`] removes exactly the series an instance had.
    extra_labels: HashMap<InstanceKey, HashSet<(Family, [&'static str; 2])>>,
}

impl MetricsState {
    /// Creates and registers every family.
    pub fn register(registry: Registry) -> Result<Self, prometheus::Error> {
        let families = Families::register(&registry)?;
        Ok(Self {
            registry,
            families,
            extra_labels: HashMap::new(),
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
                f.restarts
                    .with_label_values(&[&key.namespace, &key.name, strategy, reason])
                    .inc();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                f.last_restart
                    .with_label_values(&[&key.namespace, &key.name])
                    .set(now.as_secs_f64());
                self.remember(key, Family::Restarts, [strategy, reason]);
            }
            MetricsMsg::DriftRepaired { key, kind } => {
                f.drift_repairs
                    .with_label_values(&[&key.namespace, &key.name, kind])
                    .inc();
                self.remember(key, Family::DriftRepairs, [kind, ""]);
            }
            MetricsMsg::RestartCompleted { strategy, took, .. } => {
                f.rollout_seconds
                    .with_label_values(&[strategy])
                    .observe(took.as_secs_f64());
            }
            MetricsMsg::HashMismatch { key, kind } => {
                f.hash_mismatches
                    .with_label_values(&[&key.namespace, &key.name, kind])
                    .inc();
                self.remember(key, Family::HashMismatches, [kind, ""]);
            }
            MetricsMsg::InvalidConfig(key) => {
                f.invalid_configs
                    .with_label_values(&[&key.namespace, &key.name])
                    .inc();
            }
            MetricsMsg::LiveChange { key, outcome } => {
                f.live_changes
                    .with_label_values(&[&key.namespace, &key.name, outcome])
                    .inc();
                self.remember(key, Family::LiveChanges, [outcome, ""]);
            }
            MetricsMsg::RolloutFailed { key, action } => {
                f.rollout_failures
                    .with_label_values(&[&key.namespace, &key.name, action])
                    .inc();
                self.remember(key, Family::RolloutFailures, [action, ""]);
            }
            MetricsMsg::ReconcileError { key, category } => {
                f.errors
                    .with_label_values(&[&key.namespace, &key.name, category])
                    .inc();
                self.remember(key, Family::Errors, [category, ""]);
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
                let pair = [key.namespace.as_str(), key.name.as_str()];
                f.ready_replicas
                    .with_label_values(&pair)
                    .set(i64::from(ready));
                f.desired_replicas
                    .with_label_values(&pair)
                    .set(i64::from(desired));
                f.config_invalid
                    .with_label_values(&pair)
                    .set(i64::from(config_invalid));
                f.mismatched
                    .with_label_values(&pair)
                    .set(i64::from(mismatched));
                f.restarting
                    .with_label_values(&pair)
                    .set(i64::from(restarting));
                // Created at 0, so that `increase()` and `rate()` see the first restart and
                // the first mismatch of each kind.
                f.restarts
                    .with_label_values(&[pair[0], pair[1], strategy, "ConfigChanged"]);
                f.rollout_seconds.with_label_values(&[strategy]);
                for kind in MISMATCH_KINDS {
                    f.hash_mismatches
                        .with_label_values(&[pair[0], pair[1], kind]);
                }
                for kind in MISMATCH_KINDS {
                    self.remember(key.clone(), Family::HashMismatches, [kind, ""]);
                }
                self.remember(key, Family::Restarts, [strategy, "ConfigChanged"]);
            }
            MetricsMsg::StepTook { decision, took } => {
                f.step_seconds
                    .with_label_values(&[decision])
                    .observe(took.as_secs_f64());
            }
            MetricsMsg::ActorStarted => f.live_actors.inc(),
            MetricsMsg::ActorStopped => f.live_actors.dec(),
            MetricsMsg::Forget(key) => self.forget(&key),
            MetricsMsg::Render(reply) => {
                // The caller may have timed out and gone; nothing to do then.
                let _ = reply.send(self.render());
            }
        }
    }

    /// Removal errors only mean the series never existed.
    fn forget(&mut self, key: &InstanceKey) {
        let f = &self.families;
        let pair = [key.namespace.as_str(), key.name.as_str()];
        let _ = f.invalid_configs.remove_label_values(&pair);
        let _ = f.config_invalid.remove_label_values(&pair);
        let _ = f.mismatched.remove_label_values(&pair);
        let _ = f.restarting.remove_label_values(&pair);
        let _ = f.ready_replicas.remove_label_values(&pair);
        let _ = f.desired_replicas.remove_label_values(&pair);
        let _ = f.last_restart.remove_label_values(&pair);
        for (family, [a, b]) in self.extra_labels.remove(key).unwrap_or_default() {
            let _ = match family {
                Family::Restarts => f.restarts.remove_label_values(&[pair[0], pair[1], a, b]),
                Family::Errors => f.errors.remove_label_values(&[pair[0], pair[1], a]),
                Family::DriftRepairs => f.drift_repairs.remove_label_values(&[pair[0], pair[1], a]),
                Family::HashMismatches => f
                    .hash_mismatches
                    .remove_label_values(&[pair[0], pair[1], a]),
                Family::LiveChanges => f.live_changes.remove_label_values(&[pair[0], pair[1], a]),
                Family::RolloutFailures => f
                    .rollout_failures
                    .remove_label_values(&[pair[0], pair[1], a]),
            };
        }
    }

    fn remember(&mut self, key: InstanceKey, family: Family, labels: [&'static str; 2]) {
        self.extra_labels
            .entry(key)
            .or_default()
            .insert((family, labels));
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| format!("encoding metrics: {e}"))?;
        String::from_utf8(buf).map_err(|e| format!("metrics are not UTF-8: {e}"))
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
