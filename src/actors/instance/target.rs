//! Which spec the pods should run: the newest one that passed validation, unless redis-server
//! itself refused its config, in which case the last one that ran.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;

use crate::config::render::{RenderedConfig, render, short_hash};
use crate::config::validate::Violation;
use crate::crd::{RedisInstance, RedisInstanceSpec, RolloutRecord};
pub use crate::decide::Outcome;
use crate::decide::{
    Crash, DriveTo, Specs, crashed_pod, drive_to, never_ready, never_ready_outcome, refusal,
    unready_on, watch_for_failure,
};
use crate::live;
use crate::resources::{CachedPod, headless_service, service, statefulset};

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
    /// Its Service `<name>`.
    pub service: Service,
    /// Its headless Service.
    pub headless: Service,
}

impl Plan {
    fn of(instance: Arc<RedisInstance>) -> Self {
        let rendered = render(&crate::config::effective(&instance));
        let template_hash = live::template_hash(&instance, &rendered);
        let live = live::split(
            &crate::config::effective(&instance),
            instance.spec.config_update,
        )
        .live;
        Self {
            statefulset: statefulset(&instance, &template_hash, None),
            service: service(&instance),
            headless: headless_service(&instance),
            live_hash: live::live_hash(&live),
            live,
            template_hash,
            rendered,
            instance,
        }
    }
}

/// The template hash of a spec (what its pods carry), and the hash of its whole rendered file
/// (what changes with any edit of `spec.config`).
fn hashes_of(instance: &RedisInstance) -> (String, String) {
    let rendered = render(&crate::config::effective(instance));
    (live::template_hash(instance, &rendered), rendered.hash)
}

/// A config that passed validation but that the pods failed on: redis-server refused it, or
/// it never became ready.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Its template hash, which the failed pods carry.
    pub hash: String,
    /// The hash of its whole file: a new `spec.config` (even one that only changes live
    /// directives) clears the rejection.
    pub spec_hash: String,
    /// Condition reason and Event reason: `RedisRejectedConfig` or `NeverReady`.
    pub reason: &'static str,
    /// What the status condition and the Event say.
    pub message: String,
}

/// The `Progressing` reason a halted rollout is recorded under, so a restarted operator
/// recalls it.
pub const HALTED_REASON: &str = "RolloutHalted";

/// A failure recorded in status, by the Warning its finder told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recalled {
    /// Never ready, rolled back.
    RolledBack,
    /// Never ready, halted.
    Halted,
    /// Refused by Redis.
    Rejected,
}

impl Recalled {
    /// The reason of the Warning that told it.
    pub fn event_reason(self) -> &'static str {
        match self {
            Recalled::RolledBack => "RolloutRolledBack",
            Recalled::Halted => HALTED_REASON,
            Recalled::Rejected => "RedisRejectedConfig",
        }
    }
}

/// Condition reasons a rejection is recorded under, so a restarted operator recalls it.
pub const REJECTION_REASONS: [&str; 2] = ["RedisRejectedConfig", "NeverReady"];

/// The config a restart is failing on.
struct Failing<'a> {
    good: &'a RedisInstance,
    hash: &'a str,
    spec_hash: &'a str,
    healthy: Option<&'a str>,
}

/// How long a pod the restart started may stay unready (not counting time spent loading).
fn readiness_deadline(spec: &RedisInstance) -> Duration {
    let seconds = spec.spec.rollout.progress_deadline_seconds.max(0);
    Duration::from_secs(seconds.unsigned_abs().into())
}

/// Whether two copies of an instance hold the same spec, so either may stand for the other.
fn same_spec(a: &RedisInstance, b: &RedisInstance) -> bool {
    a.metadata.uid == b.metadata.uid
        && a.metadata.generation == b.metadata.generation
        && a.spec == b.spec
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
    /// The failure was recalled from status rather than found by this actor: how its finder
    /// told it, which this actor may tell again.
    recalled: Option<Recalled>,
    /// When this actor first saw each unready pod of the restart in flight (by uid), on its
    /// own monotonic clock: how long a pod has been unready is then measured without
    /// comparing two machines' wall clocks. A restarted operator starts counting again, which
    /// can only make it judge later, never wrongly.
    unready_since: HashMap<String, Instant>,
}

impl Target {
    /// Points the remembered specs that equal `current`'s at the cache's copy: holding an
    /// older copy (older status) would keep it alive beside the cache's for as long as the
    /// actor remembers it.
    pub fn follow(&mut self, current: &Arc<RedisInstance>) {
        for kept in [&mut self.last_good, &mut self.last_healthy] {
            if let Some(spec) = kept.as_mut()
                && !Arc::ptr_eq(spec, current)
                && same_spec(spec, current)
            {
                *spec = current.clone();
            }
        }
    }

    /// Validates the newest spec, keeps it when valid, and returns what is wrong with it.
    /// A rejection recorded in status is recalled, so a restarted operator does not roll the
    /// refused config out again; a different config clears it.
    pub fn accept(&mut self, current: &Arc<RedisInstance>) -> Vec<Violation> {
        let violations = crate::config::violations(current);
        if violations.is_empty() {
            self.last_good = Some(current.clone());
        }
        self.follow(current);
        self.recall_healthy(current);
        if let Some(good) = &self.last_good {
            let (hash, spec_hash) = hashes_of(good);
            self.recall_halt(current, &hash, &spec_hash);
            let status = current.status.as_ref();
            let recorded = status.and_then(|s| s.rejected_config_hash.as_deref());
            if self.rejected.is_none() && recorded == Some(spec_hash.as_str()) {
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
                self.recalled = Some(match reason {
                    "NeverReady" => Recalled::RolledBack,
                    _ => Recalled::Rejected,
                });
                self.rejected = Some(Rejection {
                    hash,
                    spec_hash: spec_hash.clone(),
                    reason,
                    message,
                });
            }
            if self
                .rejected
                .as_ref()
                .is_some_and(|r| r.spec_hash != spec_hash)
            {
                self.rejected = None;
                self.recalled = None;
            }
            if self
                .halted
                .as_ref()
                .is_some_and(|r| r.spec_hash != spec_hash)
            {
                self.halted = None;
            }
        }
        violations
    }

    /// Notes the unready pods of the restart in flight, and forgets the others.
    pub fn note_unready(
        &mut self,
        pods: &[Arc<CachedPod>],
        record: Option<&RolloutRecord>,
        now: Instant,
    ) {
        let Some(record) = record else {
            self.unready_since.clear();
            return;
        };
        let unready: Vec<String> = unready_on(pods, &record.config_hash, record.started_at.0)
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        self.unready_since.retain(|uid, _| unready.contains(uid));
        for uid in unready {
            self.unready_since.entry(uid).or_insert(now);
        }
    }

    /// Unready pods of the restart in flight that have reached the readiness deadline of the
    /// config rolled out: before one counts as never ready, its Redis is asked whether it is
    /// still loading its data.
    pub fn at_deadline<'a>(
        &self,
        pods: &'a [Arc<CachedPod>],
        record: Option<&'a RolloutRecord>,
        now: Instant,
    ) -> Vec<&'a Arc<CachedPod>> {
        let (Some(record), Some(good)) = (record, self.last_good.as_deref()) else {
            return Vec::new();
        };
        let deadline = readiness_deadline(good);
        unready_on(pods, &record.config_hash, record.started_at.0)
            .filter(|p| self.unready_for(p, now).is_some_and(|d| d > deadline))
            .collect()
    }

    /// A pod whose Redis is loading its data is making progress: its readiness deadline
    /// counts again from `now`.
    pub fn note_loading(&mut self, pod: &CachedPod, now: Instant) {
        if let Some(since) = pod
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| self.unready_since.get_mut(uid))
        {
            *since = now;
        }
    }

    /// How long `pod` has been seen unready during the restart in flight.
    pub fn unready_for(&self, pod: &CachedPod, now: Instant) -> Option<Duration> {
        let since = self.unready_since.get(pod.metadata.uid.as_ref()?)?;
        Some(now.saturating_duration_since(*since))
    }

    /// The healthy spec recorded in status stands in for the one a restarted operator has not
    /// seen converge: it is where a failing config rolls back to.
    fn recall_healthy(&mut self, current: &RedisInstance) {
        if self.last_healthy.is_some() {
            return;
        }
        let recorded = current
            .status
            .as_ref()
            .and_then(|s| s.healthy_spec.as_deref());
        // One that does not parse (edited by hand, or from a later version) is no target.
        let spec = recorded.and_then(|json| serde_json::from_str(json).ok());
        self.last_healthy = spec.map(|spec| {
            Arc::new(RedisInstance {
                metadata: current.metadata.clone(),
                spec,
                status: None,
            })
        });
    }

    /// The spec to record as healthy in status: the last one that converged, without
    /// credential directives (an instance that ran with `requirepass` has moved it into a
    /// Secret already, see `auth::seed_password`).
    pub fn healthy_spec(&self) -> Option<String> {
        let mut spec: RedisInstanceSpec = self.last_healthy.as_ref()?.spec.clone();
        spec.config
            .retain(|key, _| !crate::auth::is_secret_directive(key));
        serde_json::to_string(&spec).ok()
    }

    /// A halt recorded in status (the restart still recorded, `Progressing` false with reason
    /// `RolloutHalted`) is recalled, so a restarted operator keeps the rollout halted instead
    /// of finding the failure, and telling and counting it, again.
    fn recall_halt(&mut self, current: &RedisInstance, hash: &str, spec_hash: &str) {
        if self.halted.is_some() {
            return;
        }
        let Some(status) = current.status.as_ref() else {
            return;
        };
        let on_this_config = status
            .rollout
            .as_ref()
            .is_some_and(|r| r.config_hash == hash);
        let halted = crate::status::find_condition(status, crate::status::condition::PROGRESSING)
            .filter(|c| c.reason == HALTED_REASON && on_this_config);
        if let Some(condition) = halted {
            self.recalled = Some(Recalled::Halted);
            self.halted = Some(Rejection {
                hash: hash.to_owned(),
                spec_hash: spec_hash.to_owned(),
                reason: "NeverReady",
                message: condition.message.clone(),
            });
        }
    }

    /// Looks for the newest valid config failing on the pods: a pod on it exited with Redis's
    /// config-file error, or, while `record` restarts the pods onto it, one of the pods it
    /// started is not ready in time.
    pub fn detect_rejection(
        &mut self,
        pods: &[Arc<CachedPod>],
        record: Option<&RolloutRecord>,
        now: Instant,
    ) {
        let Some(good) = self.last_good.clone() else {
            return;
        };
        let (hash, spec_hash) = hashes_of(&good);
        let healthy = self.last_healthy.as_deref().map(|h| hashes_of(h).0);
        let known_failure = self.rejected.is_some() || self.halted.is_some();
        if !watch_for_failure(known_failure, healthy.as_deref(), &hash) {
            return;
        }
        let Some(crash) = crashed_pod(pods, &hash) else {
            if let Some(record) = record.filter(|r| r.config_hash == hash) {
                let failing = Failing {
                    good: &good,
                    hash: &hash,
                    spec_hash: &spec_hash,
                    healthy: healthy.as_deref(),
                };
                self.detect_never_ready(&failing, pods, record, now);
            }
            return;
        };
        let message = refusal(&hash, &crash, healthy.as_deref());
        let rejection = Rejection {
            hash,
            spec_hash,
            reason: REJECTION_REASONS[0],
            message,
        };
        self.rejected = Some(rejection.clone());
        self.recalled = None;
        self.fresh = Some((rejection, crash));
    }

    /// A pod the restart started is still unready `spec.rollout.progressDeadlineSeconds` after
    /// it was created: the rollout halts there, and rolls back unless `onFailure: Halt` (or
    /// nothing ran before, so there is nothing to go back to).
    fn detect_never_ready(
        &mut self,
        failing: &Failing,
        pods: &[Arc<CachedPod>],
        record: &RolloutRecord,
        now: Instant,
    ) {
        let rollout = &failing.good.spec.rollout;
        let deadline = readiness_deadline(failing.good);
        let since = record.started_at.0;
        let Some(pod) = never_ready(pods, failing.hash, since, deadline, |p| {
            self.unready_for(p, now)
        }) else {
            return;
        };
        let (outcome, message) = never_ready_outcome(
            rollout.on_failure,
            failing.healthy,
            &pod,
            failing.hash,
            deadline.as_secs(),
        );
        let rejection = Rejection {
            hash: failing.hash.to_owned(),
            spec_hash: failing.spec_hash.to_owned(),
            reason: "NeverReady",
            message,
        };
        match outcome {
            Outcome::Halted => self.halted = Some(rejection.clone()),
            Outcome::RolledBack => self.rejected = Some(rejection.clone()),
        }
        self.recalled = None;
        self.fresh_failure = Some((rejection, outcome));
    }

    /// The failure recalled from status, with how it was told.
    pub fn recalled(&self) -> Option<(&Rejection, Recalled)> {
        let failure = self.halted.as_ref().or(self.rejected.as_ref())?;
        Some((failure, self.recalled?))
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

    /// What to drive the pods to; `None` when no spec is known to be safe: then touch nothing.
    /// A refused spec seen first by this actor leaves the healthy one recorded in status, but
    /// only at rest: a restart in flight was driving to a spec no longer known.
    pub fn plan(&self, rollout_recorded: bool) -> Option<Plan> {
        let valid = self.last_good.clone().map(Plan::of);
        let specs = Specs {
            valid: valid.as_ref().map(|plan| plan.rendered.hash.as_str()),
            rejected: self.rejected.as_ref().map(|r| r.spec_hash.as_str()),
            healthy: self.last_healthy.is_some(),
            rollout_recorded,
        };
        match drive_to(&specs) {
            DriveTo::Valid => valid,
            DriveTo::Healthy => self.last_healthy.clone().map(Plan::of),
            DriveTo::Hold => None,
        }
    }

    /// Every pod runs `plan` and is ready: it is what a refused config rolls back to.
    pub fn converged(&mut self, plan: &Plan) {
        self.last_healthy = Some(plan.instance.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConfigUpdate, OnFailure};
    use crate::decide::pods_fixtures::pod;
    use crate::decide::pods_fixtures::{record, t};
    use crate::resources::fixtures::instance;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// An unready pod on `hash`, created at `created` by the API server's clock.
    fn unready(hash: &str, created: i64) -> Arc<CachedPod> {
        let mut p = CachedPod::clone(&pod("redis-example-0", hash, "rev-b", false, None));
        p.metadata.creation_timestamp = Some(Time(t(created)));
        p.metadata.uid = Some(format!("uid-{created}"));
        Arc::new(p)
    }

    /// The operator's monotonic clock, `secs` into a test.
    fn at(secs: u64) -> Instant {
        static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
        *START + Duration::from_secs(secs)
    }

    /// One step's look at the pods, at `secs` on the operator's clock.
    fn look(
        target: &mut Target,
        pods: &[Arc<CachedPod>],
        record: Option<&RolloutRecord>,
        secs: u64,
    ) {
        target.note_unready(pods, record, at(secs));
        target.detect_rejection(pods, record, at(secs));
    }

    /// A target that saw `old` converge, then accepted `new`.
    fn moved_on(old: RedisInstance, new: RedisInstance) -> (Target, String) {
        let mut target = Target::default();
        target.accept(&Arc::new(old));
        let plan = target.plan(false).unwrap();
        target.converged(&plan);
        target.accept(&Arc::new(new.clone()));
        (target, hashes_of(&new).0)
    }

    #[test]
    fn remembered_specs_follow_the_cache_copy_but_keep_their_own_spec() {
        let mut first = instance(&[("maxmemory", "100mb")]);
        first.metadata.generation = Some(1);
        let mut target = Target::default();
        target.accept(&Arc::new(first.clone()));
        let plan = target.plan(false).unwrap();
        target.converged(&plan);
        // A status write: same spec, new copy in the cache.
        let restatused = Arc::new(first.clone());
        target.follow(&restatused);
        assert!(Arc::ptr_eq(target.last_good.as_ref().unwrap(), &restatused));
        assert!(Arc::ptr_eq(
            target.last_healthy.as_ref().unwrap(),
            &restatused
        ));
        // A new spec: the last healthy one is remembered as it was.
        let mut second = instance(&[("maxmemory", "200mb")]);
        second.metadata.generation = Some(2);
        let second = Arc::new(second);
        target.accept(&second);
        assert!(Arc::ptr_eq(target.last_good.as_ref().unwrap(), &second));
        assert!(Arc::ptr_eq(
            target.last_healthy.as_ref().unwrap(),
            &restatused
        ));
    }

    #[test]
    fn a_never_ready_pod_counts_only_during_a_restart_onto_its_config() {
        let (mut target, hash) = moved_on(
            instance(&[("maxmemory", "100mb")]),
            instance(&[("maxmemory", "200mb")]),
        );
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, None, 0);
        look(&mut target, &pods, None, 500);
        assert!(
            target.take_fresh_failure().is_none(),
            "no restart in flight"
        );
        let restart = record(&hash);
        look(&mut target, &pods, Some(&restart), 500);
        look(&mut target, &pods, Some(&restart), 600);
        assert!(
            target.take_fresh_failure().is_none(),
            "within the deadline of when it was first seen"
        );
        let old = [unready(&hash, -300)];
        look(&mut target, &old, Some(&restart), 600);
        look(&mut target, &old, Some(&restart), 900);
        assert!(
            target.take_fresh_failure().is_none(),
            "created before the restart"
        );
        look(&mut target, &pods, Some(&restart), 900);
        look(&mut target, &pods, Some(&restart), 1021);
        let (failure, outcome) = target.take_fresh_failure().unwrap();
        assert_eq!(outcome, Outcome::RolledBack);
        assert!(
            failure.message.contains("rolling back to config"),
            "{}",
            failure.message
        );
        let plan = target.plan(false).unwrap();
        assert_eq!(
            plan.instance.spec.config["maxmemory"], "100mb",
            "back to what ran"
        );
    }

    /// The API server's clock and the operator's differ: the pod was created a minute before
    /// the restart by the operator's clock, or long after; either way it is judged by how long
    /// the operator has seen it unready.
    #[test]
    fn clock_skew_neither_hides_nor_hastens_a_never_ready_pod() {
        for created in [-60, 0, 3, 30] {
            let (mut target, hash) = moved_on(
                instance(&[("maxmemory", "100mb")]),
                instance(&[("maxmemory", "200mb")]),
            );
            let pods = [unready(&hash, created)];
            let restart = record(&hash);
            look(&mut target, &pods, Some(&restart), 0);
            look(&mut target, &pods, Some(&restart), 119);
            assert!(
                target.take_fresh_failure().is_none(),
                "created at {created}"
            );
            look(&mut target, &pods, Some(&restart), 121);
            assert!(
                target.take_fresh_failure().is_some(),
                "created at {created}"
            );
        }
    }

    /// A pod still loading a large dataset is unready, but not failing: each time it is found
    /// loading at its deadline, the deadline counts again; once it stops loading and still is
    /// not ready, the next deadline finds it.
    #[test]
    fn a_pod_loading_its_data_is_asked_at_its_deadline_and_given_another() {
        let (mut target, hash) = moved_on(
            instance(&[("maxmemory", "100mb")]),
            instance(&[("maxmemory", "200mb")]),
        );
        let pods = [unready(&hash, 1)];
        let restart = record(&hash);
        target.note_unready(&pods, Some(&restart), at(0));
        assert!(
            target
                .at_deadline(&pods, Some(&restart), at(119))
                .is_empty()
        );
        assert!(target.at_deadline(&pods, None, at(121)).is_empty());
        let due = target.at_deadline(&pods, Some(&restart), at(121));
        assert_eq!(due.len(), 1);
        target.note_loading(due[0], at(121));
        look(&mut target, &pods, Some(&restart), 121);
        look(&mut target, &pods, Some(&restart), 240);
        assert!(target.take_fresh_failure().is_none(), "loading is progress");
        look(&mut target, &pods, Some(&restart), 242);
        assert!(
            target.take_fresh_failure().is_some(),
            "done loading and still unready a deadline later"
        );
    }

    #[test]
    fn halt_stays_until_the_spec_or_the_restart_moves_on() {
        let mut new = instance(&[("maxmemory", "200mb")]);
        new.spec.rollout.on_failure = OnFailure::Halt;
        let (mut target, hash) = moved_on(instance(&[("maxmemory", "100mb")]), new.clone());
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, Some(&record(&hash)), 0);
        look(&mut target, &pods, Some(&record(&hash)), 200);
        assert_eq!(target.take_fresh_failure().unwrap().1, Outcome::Halted);
        assert_eq!(
            target.plan(false).unwrap().template_hash,
            hash,
            "no rollback"
        );
        target.forget_halt(Some(&hash));
        look(&mut target, &pods, Some(&record(&hash)), 300);
        assert!(
            target.halted().is_some() && target.take_fresh_failure().is_none(),
            "found once"
        );
        target.forget_halt(Some("another"));
        assert!(target.halted().is_none());
    }

    /// An operator restarted while a rollout is halted: the halt is read back from status, so
    /// the failure is neither found nor told again.
    /// `status` with condition `kind` false for `reason`.
    fn with_false(
        mut status: crate::crd::RedisInstanceStatus,
        kind: &'static str,
        reason: &'static str,
        message: &str,
    ) -> crate::crd::RedisInstanceStatus {
        let condition = crate::status::ConditionValue::new(kind, false, reason, message);
        crate::status::set_condition(&mut status, condition, None, &Time(t(0)));
        status
    }

    #[test]
    fn a_halt_recorded_in_status_is_recalled_by_a_restarted_operator() {
        let mut halted = instance(&[("maxmemory", "200mb")]);
        halted.spec.rollout.on_failure = OnFailure::Halt;
        let hash = hashes_of(&halted).0;
        let status = crate::crd::RedisInstanceStatus {
            rollout: Some(record(&hash)),
            ..Default::default()
        };
        halted.status = Some(with_false(
            status,
            crate::status::condition::PROGRESSING,
            HALTED_REASON,
            "pod redis-example-0 is still not ready; rollout halted",
        ));
        let mut target = Target::default();
        target.accept(&Arc::new(halted));
        assert_eq!(
            target.halted().map(|h| h.hash.as_str()),
            Some(hash.as_str())
        );
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, Some(&record(&hash)), 0);
        look(&mut target, &pods, Some(&record(&hash)), 500);
        assert!(target.take_fresh_failure().is_none(), "not counted again");
        let (failure, recalled) = target.recalled().expect("a recalled halt");
        assert_eq!(failure.hash, hash);
        assert_eq!(recalled.event_reason(), HALTED_REASON);
        let mut other = instance(&[("maxmemory", "300mb")]);
        other.spec.rollout.on_failure = OnFailure::Halt;
        target.accept(&Arc::new(other));
        assert!(target.halted().is_none(), "a new spec ends the halt");
    }

    #[test]
    fn with_nothing_that_ran_a_never_ready_config_is_halted_not_rolled_back() {
        let mut target = Target::default();
        let new = instance(&[("maxmemory", "200mb")]);
        target.accept(&Arc::new(new.clone()));
        let hash = hashes_of(&new).0;
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, Some(&record(&hash)), 0);
        look(&mut target, &pods, Some(&record(&hash)), 200);
        assert_eq!(target.take_fresh_failure().unwrap().1, Outcome::Halted);
        assert!(
            target.plan(false).is_some(),
            "the pods are left on the config, not held"
        );
    }

    /// An operator restarted mid-rollout knows the spec that ran from status alone: a
    /// never-ready rollout still rolls back to it (not halted for want of a target), and the
    /// recorded copy holds no password.
    /// A failure recorded in status is recalled with the Event its finder told, which the
    /// restarted operator may owe; a new spec forgets it.
    #[test]
    fn a_rejection_recorded_in_status_is_recalled_with_the_event_that_told_it() {
        for (condition_reason, event_reason) in [
            ("NeverReady", "RolloutRolledBack"),
            ("RedisRejectedConfig", "RedisRejectedConfig"),
        ] {
            let mut failed = instance(&[("maxmemory", "200mb")]);
            let (hash, spec_hash) = hashes_of(&failed);
            let status = crate::crd::RedisInstanceStatus {
                rejected_config_hash: Some(spec_hash),
                rollout: Some(record("older")),
                ..Default::default()
            };
            failed.status = Some(with_false(
                status,
                crate::status::condition::CONFIG_VALID,
                condition_reason,
                "pod redis-example-0 never became ready",
            ));
            let mut target = Target::default();
            target.accept(&Arc::new(failed));
            let (failure, recalled) = target.recalled().expect("a recalled rejection");
            assert_eq!(failure.hash, hash);
            assert_eq!(recalled.event_reason(), event_reason);
            assert_eq!(failure.message, "pod redis-example-0 never became ready");
            target.accept(&Arc::new(instance(&[("maxmemory", "300mb")])));
            assert!(target.recalled().is_none(), "a new spec forgets it");
        }
    }

    #[test]
    fn a_restarted_operator_rolls_back_to_the_healthy_spec_recorded_in_status() {
        let mut healthy = Target::default();
        let old = Arc::new(instance(&[("maxmemory", "100mb"), ("requirepass", "pw")]));
        healthy.last_good = Some(old.clone());
        healthy.converged(&healthy.plan(false).unwrap());
        let recorded = healthy.healthy_spec().unwrap();
        assert!(!recorded.contains("pw"), "{recorded}");

        let mut new = instance(&[("maxmemory", "200mb")]);
        let hash = hashes_of(&new).0;
        new.status = Some(crate::crd::RedisInstanceStatus {
            config_hash: Some(hashes_of(&old).0),
            rollout: Some(record(&hash)),
            healthy_spec: Some(recorded.clone()),
            ..Default::default()
        });
        let mut target = Target::default();
        assert!(target.accept(&Arc::new(new)).is_empty());
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, Some(&record(&hash)), 0);
        look(&mut target, &pods, Some(&record(&hash)), 200);
        assert_eq!(target.take_fresh_failure().unwrap().1, Outcome::RolledBack);
        assert!(
            target.recalled().is_none(),
            "found by this actor, not recalled"
        );
        let plan = target.plan(true).unwrap();
        assert_eq!(plan.instance.spec.config["maxmemory"], "100mb");
        assert_eq!(plan.template_hash, hashes_of(&old).0, "the same file ran");
        assert_eq!(target.healthy_spec().unwrap(), recorded);
    }

    /// A restarted operator on a refused spec keeps the objects on the recorded healthy spec
    /// at rest, and touches nothing while a restart it no longer knows the target of is in
    /// flight.
    #[test]
    fn on_a_refused_spec_the_recorded_healthy_one_is_kept_only_at_rest() {
        let ran = instance(&[("maxmemory", "100mb")]);
        let mut healthy = Target::default();
        healthy.accept(&Arc::new(ran.clone()));
        healthy.converged(&healthy.plan(false).unwrap());
        let mut refused = instance(&[("maxmemory", "lots")]);
        refused.status = Some(crate::crd::RedisInstanceStatus {
            healthy_spec: healthy.healthy_spec(),
            ..Default::default()
        });
        let mut target = Target::default();
        assert!(!target.accept(&Arc::new(refused)).is_empty());
        assert_eq!(target.plan(false).unwrap().template_hash, hashes_of(&ran).0);
        assert!(target.plan(true).is_none());
    }

    #[test]
    fn under_live_an_edit_of_live_directives_alone_still_clears_a_rejection() {
        let live = |pairs: &[(&str, &str)]| {
            let mut i = instance(pairs);
            i.spec.config_update = ConfigUpdate::Live;
            i
        };
        let (mut target, hash) = moved_on(
            live(&[("databases", "16"), ("maxmemory", "100mb")]),
            live(&[("databases", "8"), ("maxmemory", "100mb")]),
        );
        let pods = [unready(&hash, 1)];
        look(&mut target, &pods, Some(&record(&hash)), 0);
        look(&mut target, &pods, Some(&record(&hash)), 200);
        assert!(target.rejection().is_some());
        let fixed = live(&[("databases", "8"), ("maxmemory", "150mb")]);
        assert_eq!(hashes_of(&fixed).0, hash, "same template hash");
        target.accept(&Arc::new(fixed));
        assert!(target.rejection().is_none(), "a new spec.config is tried");
    }
}
