//! Which spec the pods should run: the newest one that passed validation, unless redis-server
//! itself refused its config, in which case the last one that ran.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};

use crate::config::render::{RenderedConfig, render, short_hash};
use crate::config::validate::{Violation, validate};
use crate::crd::RedisInstance;
use crate::decide::{Crash, crashed_pod};
use crate::resources::{service, statefulset};

/// The desired objects of one spec.
pub struct Plan {
    /// The spec they are built from.
    pub instance: Arc<RedisInstance>,
    /// Its rendered config.
    pub rendered: RenderedConfig,
    /// Its StatefulSet, without a restart marker.
    pub statefulset: StatefulSet,
    /// Its Service.
    pub service: Service,
}

impl Plan {
    fn of(instance: Arc<RedisInstance>) -> Self {
        let rendered = render(&instance.spec.config);
        Self {
            statefulset: statefulset(&instance, &rendered.hash, None),
            service: service(&instance),
            rendered,
            instance,
        }
    }
}

/// A config that passed validation but that redis-server refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Its hash.
    pub hash: String,
    /// What the status condition and the Event say.
    pub message: String,
}

/// The actor's memory of specs.
#[derive(Default)]
pub struct Target {
    /// Newest spec that passed validation: what the pods keep running when an edit is refused.
    last_good: Option<Arc<RedisInstance>>,
    /// Newest spec whose config completed a rollout: where a refused config rolls back to.
    last_healthy: Option<Arc<RedisInstance>>,
    rejected: Option<Rejection>,
    /// A rejection found this step, to be reported once.
    fresh: Option<(Rejection, Crash)>,
}

impl Target {
    /// Validates the newest spec, keeps it when valid, and returns what is wrong with it.
    /// A rejection recorded in status is recalled, so a restarted operator does not roll the
    /// refused config out again; a different config clears it.
    pub fn accept(&mut self, current: &Arc<RedisInstance>) -> Vec<Violation> {
        let violations = validate(&current.spec.config);
        if violations.is_empty() {
            self.last_good = Some(current.clone());
        }
        if let Some(good) = &self.last_good {
            let hash = render(&good.spec.config).hash;
            let status = current.status.as_ref();
            let recorded = status.and_then(|s| s.rejected_config_hash.as_deref());
            if self.rejected.is_none() && recorded == Some(hash.as_str()) {
                let message = status
                    .and_then(|s| {
                        crate::status::find_condition(s, crate::status::condition::CONFIG_VALID)
                    })
                    .filter(|c| c.reason == "RedisRejectedConfig")
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| {
                        format!(
                            "redis-server refused config {}; fix spec.config",
                            short_hash(&hash)
                        )
                    });
                self.rejected = Some(Rejection {
                    hash: hash.clone(),
                    message,
                });
            }
            if self.rejected.as_ref().is_some_and(|r| r.hash != hash) {
                self.rejected = None;
            }
        }
        violations
    }

    /// A pod running the newest valid config exited with an error: Redis refused that config.
    pub fn detect_rejection(&mut self, pods: &[Arc<Pod>]) {
        let Some(good) = &self.last_good else {
            return;
        };
        let hash = render(&good.spec.config).hash;
        let healthy = self
            .last_healthy
            .as_ref()
            .map(|h| render(&h.spec.config).hash);
        if self.rejected.is_some() || healthy.as_deref() == Some(hash.as_str()) {
            return;
        }
        let Some(crash) = crashed_pod(pods, &hash) else {
            return;
        };
        let outcome = match &healthy {
            Some(old) => format!(
                "rolling back to config {}, the last one that ran",
                short_hash(old)
            ),
            None => "no earlier config ran, so there is nothing to roll back to".to_owned(),
        };
        // `crashed_pod` returns only crashes whose message holds Redis's report.
        let said = crash.config_error().map_or_else(
            || "see the pod's log for Redis's reason".to_owned(),
            |e| format!("Redis said: {}: {}", e.line, e.reason),
        );
        let message = format!(
            "redis-server refused config {} in pod {} (exit code {}); {said}; {outcome}. \
             Fix spec.config",
            short_hash(&hash),
            crash.pod,
            crash.exit_code,
        );
        let rejection = Rejection { hash, message };
        self.rejected = Some(rejection.clone());
        self.fresh = Some((rejection, crash));
    }

    /// The rejection found by the last [`Target::detect_rejection`], once.
    pub fn take_fresh_rejection(&mut self) -> Option<(Rejection, Crash)> {
        self.fresh.take()
    }

    /// The config Redis refused, if any.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejected.as_ref()
    }

    /// What to drive the pods to; `None` when no spec is known to be safe (nothing valid seen
    /// since the operator started, or Redis refused the only one): then touch nothing.
    pub fn plan(&self) -> Option<Plan> {
        let good = self.last_good.clone()?;
        let plan = Plan::of(good);
        match &self.rejected {
            Some(r) if r.hash == plan.rendered.hash => self.last_healthy.clone().map(Plan::of),
            _ => Some(plan),
        }
    }

    /// Every pod runs `plan` and is ready: it is what a refused config rolls back to.
    pub fn converged(&mut self, plan: &Plan) {
        self.last_healthy = Some(plan.instance.clone());
    }
}
