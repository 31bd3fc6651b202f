//! The metrics actor: owns the Prometheus registry and renders it for `/metrics`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

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
    /// The StatefulSet's hash annotation differed from the desired hash.
    HashMismatch(InstanceKey),
    /// A spec was refused by validation.
    InvalidConfig(InstanceKey),
    /// A reconcile step failed; `reason` is a fixed short string.
    ReconcileError {
        /// The instance.
        key: InstanceKey,
        /// Bounded label value.
        reason: &'static str,
    },
    /// Ready replicas now.
    ReadyReplicas(InstanceKey, i64),
    /// The instance is gone: drop its series so dashboards do not show ghosts.
    Forget(InstanceKey),
    /// Render the registry in the Prometheus text format.
    Render(RpcReplyPort<String>),
}

/// Per-instance families with labels beyond namespace and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Restarts,
    Errors,
    DriftRepairs,
}

/// The metric families the operator exports.
pub struct MetricsState {
    registry: Registry,
    restarts: IntCounterVec,
    hash_mismatches: IntCounterVec,
    invalid_configs: IntCounterVec,
    errors: IntCounterVec,
    ready_replicas: IntGaugeVec,
    restart_seconds: HistogramVec,
    drift_repairs: IntCounterVec,
    /// Values of the labels after namespace and instance, per family and instance, so
    /// [`MetricsState::forget`] removes exactly the series an instance had.
    extra_labels: HashMap<InstanceKey, HashSet<(Family, [&'static str; 2])>>,
}

impl MetricsState {
    /// Creates and registers every family.
    pub fn register(registry: Registry) -> Result<Self, prometheus::Error> {
        let per_instance = ["namespace", "instance"];
        let restarts = IntCounterVec::new(
            Opts::new(
                "redis_operator_restarts_total",
                "Restarts of an instance's pods started by the operator, by strategy and reason",
            ),
            &["namespace", "instance", "strategy", "reason"],
        )?;
        let drift_repairs = IntCounterVec::new(
            Opts::new(
                "redis_operator_drift_repairs_total",
                "Objects the operator owns found changed by hand and put back, by kind",
            ),
            &["namespace", "instance", "kind"],
        )?;
        let hash_mismatches = IntCounterVec::new(
            Opts::new(
                "redis_operator_config_hash_mismatches_total",
                "Times the StatefulSet's config-hash annotation differed from the desired hash",
            ),
            &per_instance,
        )?;
        let invalid_configs = IntCounterVec::new(
            Opts::new(
                "redis_operator_invalid_configs_total",
                "Specs refused by config validation",
            ),
            &per_instance,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "redis_operator_reconcile_errors_total",
                "Failed reconcile steps, by reason",
            ),
            &["namespace", "instance", "reason"],
        )?;
        let ready_replicas = IntGaugeVec::new(
            Opts::new(
                "redis_operator_ready_replicas",
                "Ready Redis pods per instance",
            ),
            &per_instance,
        )?;
        let restart_seconds = HistogramVec::new(
            HistogramOpts::new(
                "redis_operator_restart_duration_seconds",
                "Time from a restart decision until every replica runs the new config and is ready",
            )
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["strategy"],
        )?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(hash_mismatches.clone()))?;
        registry.register(Box::new(invalid_configs.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(ready_replicas.clone()))?;
        registry.register(Box::new(restart_seconds.clone()))?;
        registry.register(Box::new(drift_repairs.clone()))?;
        Ok(Self {
            registry,
            restarts,
            hash_mismatches,
            invalid_configs,
            errors,
            ready_replicas,
            restart_seconds,
            drift_repairs,
            extra_labels: HashMap::new(),
        })
    }

    fn record(&mut self, msg: MetricsMsg) {
        match msg {
            MetricsMsg::Restarted {
                key,
                strategy,
                reason,
            } => {
                self.restarts
                    .with_label_values(&[&key.namespace, &key.name, strategy, reason])
                    .inc();
                self.remember(key, Family::Restarts, [strategy, reason]);
            }
            MetricsMsg::DriftRepaired { key, kind } => {
                self.drift_repairs
                    .with_label_values(&[&key.namespace, &key.name, kind])
                    .inc();
                self.remember(key, Family::DriftRepairs, [kind, ""]);
            }
            MetricsMsg::RestartCompleted { strategy, took, .. } => {
                self.restart_seconds
                    .with_label_values(&[strategy])
                    .observe(took.as_secs_f64());
            }
            MetricsMsg::HashMismatch(key) => {
                self.hash_mismatches
                    .with_label_values(&[&key.namespace, &key.name])
                    .inc();
            }
            MetricsMsg::InvalidConfig(key) => {
                self.invalid_configs
                    .with_label_values(&[&key.namespace, &key.name])
                    .inc();
            }
            MetricsMsg::ReconcileError { key, reason } => {
                self.errors
                    .with_label_values(&[&key.namespace, &key.name, reason])
                    .inc();
                self.remember(key, Family::Errors, [reason, ""]);
            }
            MetricsMsg::ReadyReplicas(key, n) => {
                self.ready_replicas
                    .with_label_values(&[&key.namespace, &key.name])
                    .set(n);
            }
            MetricsMsg::Forget(key) => self.forget(&key),
            MetricsMsg::Render(reply) => {
                // The caller may have timed out and gone; nothing to do then.
                let _ = reply.send(self.render());
            }
        }
    }

    /// Removal errors only mean the series never existed.
    fn forget(&mut self, key: &InstanceKey) {
        let pair = [key.namespace.as_str(), key.name.as_str()];
        let _ = self.hash_mismatches.remove_label_values(&pair);
        let _ = self.invalid_configs.remove_label_values(&pair);
        let _ = self.ready_replicas.remove_label_values(&pair);
        for (family, [a, b]) in self.extra_labels.remove(key).unwrap_or_default() {
            let _ = match family {
                Family::Restarts => self.restarts.remove_label_values(&[pair[0], pair[1], a, b]),
                Family::Errors => self.errors.remove_label_values(&[pair[0], pair[1], a]),
                Family::DriftRepairs => self
                    .drift_repairs
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
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> InstanceKey {
        InstanceKey {
            namespace: "ns".into(),
            name: "redis-example".into(),
        }
    }

    #[tokio::test]
    async fn counts_restarts_and_mismatches_and_forgets_instances() {
        let (actor, handle) = Actor::spawn(None, MetricsActor, Registry::new())
            .await
            .unwrap();
        actor
            .send_message(MetricsMsg::Restarted {
                key: key(),
                strategy: "Recreate",
                reason: "ConfigChanged",
            })
            .unwrap();
        actor.send_message(MetricsMsg::HashMismatch(key())).unwrap();
        actor.send_message(MetricsMsg::HashMismatch(key())).unwrap();
        let text = ractor::call_t!(actor, MetricsMsg::Render, 1000).unwrap();
        assert!(text.contains(
            r#"redis_operator_restarts_total{instance="redis-example",namespace="ns",reason="ConfigChanged",strategy="Recreate"} 1"#
        ));
        assert!(text.contains(r#"redis_operator_config_hash_mismatches_total{instance="redis-example",namespace="ns"} 2"#));

        actor.send_message(MetricsMsg::Forget(key())).unwrap();
        let text = ractor::call_t!(actor, MetricsMsg::Render, 1000).unwrap();
        assert!(!text.contains("redis-example"));
        actor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn every_metric_on_the_dashboard_is_exported() {
        let (actor, handle) = Actor::spawn(None, MetricsActor, Registry::new())
            .await
            .unwrap();
        for msg in [
            MetricsMsg::Restarted {
                key: key(),
                strategy: "RollingUpdate",
                reason: "ConfigChanged",
            },
            MetricsMsg::DriftRepaired {
                key: key(),
                kind: "Service",
            },
            MetricsMsg::RestartCompleted {
                key: key(),
                strategy: "RollingUpdate",
                took: Duration::from_secs(3),
            },
            MetricsMsg::HashMismatch(key()),
            MetricsMsg::InvalidConfig(key()),
            MetricsMsg::ReconcileError {
                key: key(),
                reason: "ApplyFailed",
            },
            MetricsMsg::ReadyReplicas(key(), 1),
        ] {
            actor.send_message(msg).unwrap();
        }
        let exported = ractor::call_t!(actor, MetricsMsg::Render, 1000).unwrap();
        let dashboard = include_str!("../../dashboards/redis-operator.json");
        let mut used = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("redis_operator_"))
            .collect::<Vec<_>>();
        used.sort_unstable();
        used.dedup();
        assert!(
            used.len() >= 5,
            "the dashboard should chart the operator's metrics: {used:?}"
        );
        for name in used {
            assert!(
                exported.contains(&format!("\n{name}")),
                "dashboard uses {name}, which /metrics does not export"
            );
        }
        actor.stop(None);
        handle.await.unwrap();
    }
}
