//! Which spec the pods should run: the newest one that passed validation, unless redis-server
//! itself refused its config, in which case the last one that ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};

use crate::config::render::{RenderedConfig, render, short_hash};
use crate::config::validate::{Violation, validate};
use crate::crd::{OnFailure, RedisInstance};
use crate::decide::{Crash, crashed_pod, never_ready};
use crate::live;
use crate::resources::{service, statefulset};

/// The desired objects of one spec.
pub struct Plan {
    /// The spec they are built from.
    pub instance: Arc<RedisInstance>,
    /// Its rendered config.
    pub rendered: RenderedConfig,
    /// The hash its pod template carries (see [`live::template_hash`]).
    pub template_hash: String,
    /// Its live directives by primary name (empty unless `configUpdate: Live`).
    pub live: BTreeMap<String, String>,
    /// Their hash.
    pub live_hash: String,
    /// Its StatefulSet, without a restart marker.
    pub statefulset: StatefulSet,
    /// Its Service.
    pub service: Service,
}

impl Plan {
    fn of(instance: Arc<RedisInstance>) -> Self {
        let rendered = render(&instance.spec.config);
        let template_hash = live::template_hash(&instance, &rendered);
        let live = live::split(&instance.spec.config, instance.spec.config_update).live;
        Self {
            statefulset: statefulset(&instance, &template_hash, None),
            service: service(&instance),
            live_hash: live::live_hash(&live),
            live,
            template_hash,
            rendered,
            instance,
        }
    }
}

/// The template hash of a spec.
fn hash_of(instance: &RedisInstance) -> String {
    live::template_hash(instance, &render(&instance.spec.config))
}

/// A config that passed validation but that the pods failed on: redis-server refused it, or
/// it never became ready.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Its template hash.
    pub hash: String,
    /// Condition reason and Event reason: `RedisRejectedConfig` or `NeverReady`.
    pub reason: &'static str,
    /// What the status condition and the Event say.
    pub message: String,
}

/// Condition reasons a rejection is recorded under, so a restarted operator recalls it.
pub const REJECTION_REASONS: [&str; 2] = ["RedisRejectedConfig", "NeverReady"];

/// What a failure found this step led to, to be reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pods go back to the last config that ran (or, with none, are left alone).
    RolledBack,
    /// No further pods are replaced (`onFailure: Halt`).
    Halted,
}

/// The actor's memory of specs.
#[derive(Default)]
pub struct Target {
    /// Newest spec that passed validation: what the pods keep running when an edit is refused.
    last_good: Option<Arc<RedisInstance>>,
    /// Newest spec whose config completed a rollout: where a refused config rolls back to.
    last_healthy: Option<Arc<RedisInstance>>,
    rejected: Option<Rejection>,
    /// A rollout halted on this config (`onFailure: Halt`).
    halted: Option<Rejection>,
    /// A crash that showed Redis refusing the config, found this step, to be reported once.
    fresh: Option<(Rejection, Crash)>,
    /// A never-ready rollout found this step, to be reported once.
    fresh_failure: Option<(Rejection, Outcome)>,
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
            let hash = hash_of(good);
            let status = current.status.as_ref();
            let recorded = status.and_then(|s| s.rejected_config_hash.as_deref());
            if self.rejected.is_none() && recorded == Some(hash.as_str()) {
                let recorded = status
                    .and_then(|s| {
                        crate::status::find_condition(s, crate::status::condition::CONFIG_VALID)
                    })
                    .and_then(|c| {
                        let reason = REJECTION_REASONS.into_iter().find(|r| *r == c.reason)?;
                        Some((reason, c.message.clone()))
                    });
                let (reason, message) = recorded.unwrap_or_else(|| {
                    (
                        REJECTION_REASONS[0],
                        format!(
                            "redis-server refused config {}; fix spec.config",
                            short_hash(&hash)
                        ),
                    )
                });
                self.rejected = Some(Rejection {
                    hash: hash.clone(),
                    reason,
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
    pub fn detect_rejection(&mut self, pods: &[Arc<Pod>], now: k8s_openapi::jiff::Timestamp) {
        let Some(good) = self.last_good.clone() else {
            return;
        };
        let hash = hash_of(&good);
        let healthy = self.last_healthy.as_deref().map(hash_of);
        if self.rejected.is_some()
            || self.halted.as_ref().is_some_and(|h| h.hash == hash)
            || healthy.as_deref() == Some(hash.as_str())
        {
            return;
        }
        let Some(crash) = crashed_pod(pods, &hash) else {
            self.detect_never_ready(&good, pods, &hash, healthy.as_deref(), now);
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
        let rejection = Rejection {
            hash,
            reason: REJECTION_REASONS[0],
            message,
        };
        self.rejected = Some(rejection.clone());
        self.fresh = Some((rejection, crash));
    }

    /// A pod on the newest config is still unready past `spec.rollout.progressDeadlineSeconds`:
    /// the rollout halts there, and rolls back unless `onFailure: Halt`.
    fn detect_never_ready(
        &mut self,
        good: &RedisInstance,
        pods: &[Arc<Pod>],
        hash: &str,
        healthy: Option<&str>,
        now: k8s_openapi::jiff::Timestamp,
    ) {
        let rollout = &good.spec.rollout;
        let deadline = Duration::from_secs(rollout.progress_deadline_seconds.into());
        let Some(pod) = never_ready(pods, hash, deadline, now) else {
            return;
        };
        let failed = format!(
            "pod {pod} is not ready {}s after it started on config {}",
            deadline.as_secs(),
            short_hash(hash)
        );
        let (outcome, message) = match (rollout.on_failure, healthy) {
            (OnFailure::Halt, _) => (
                Outcome::Halted,
                format!(
                    "{failed}; rollout halted (onFailure: Halt): no further pods are replaced until spec.config changes"
                ),
            ),
            (OnFailure::Rollback, Some(old)) => (
                Outcome::RolledBack,
                format!(
                    "{failed}; rolling back to config {}, the last one that ran. Fix spec.config",
                    short_hash(old)
                ),
            ),
            (OnFailure::Rollback, None) => (
                Outcome::RolledBack,
                format!(
                    "{failed}; no earlier config ran, so there is nothing to roll back to. Fix spec.config"
                ),
            ),
        };
        let rejection = Rejection {
            hash: hash.to_owned(),
            reason: "NeverReady",
            message,
        };
        match outcome {
            Outcome::Halted => self.halted = Some(rejection.clone()),
            Outcome::RolledBack => self.rejected = Some(rejection.clone()),
        }
        self.fresh_failure = Some((rejection, outcome));
    }

    /// The never-ready rollout found by the last [`Target::detect_rejection`], once.
    pub fn take_fresh_failure(&mut self) -> Option<(Rejection, Outcome)> {
        self.fresh_failure.take()
    }

    /// The rollout halted on this config, if any.
    pub fn halted(&self) -> Option<&Rejection> {
        self.halted.as_ref()
    }

    /// A halt is over once the restart in flight targets another config (or none): a new
    /// spec replaced it.
    pub fn forget_halt(&mut self, record_hash: Option<&str>) {
        if self.halted.as_ref().map(|h| h.hash.as_str()) != record_hash {
            self.halted = None;
        }
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
            Some(r) if r.hash == plan.template_hash => self.last_healthy.clone().map(Plan::of),
            _ => Some(plan),
        }
    }

    /// Every pod runs `plan` and is ready: it is what a refused config rolls back to.
    pub fn converged(&mut self, plan: &Plan) {
        self.last_healthy = Some(plan.instance.clone());
    }
}
