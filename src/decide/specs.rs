//! Which spec the pods should run, and which valid config is failing on them: the memory of
//! specs and failures an instance's steps carry, and the rules that update it. The newest spec
//! that passed validation is driven to, unless redis-server itself refused its config, in
//! which case the last one that ran. No I/O: the actor observes, calls these, and performs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::render::render;
use crate::config::validate::Violation;
use crate::crd::{RedisInstance, RedisInstanceSpec, RolloutRecord};
use crate::decide::{
    Crash, DriveTo, Outcome, REJECTION_REASONS, Recalled, RecordedFailure, Specs, crashed_pod,
    drive_to, never_ready, never_ready_outcome, recorded_halt, recorded_rejection, refusal,
    unready_on, watch_for_failure,
};
use crate::live;
use crate::resources::CachedPod;

/// The template hash of a spec (what its pods carry), and the hash of its whole rendered file
/// (what changes with any edit of `spec.config`).
pub fn hashes_of(instance: &RedisInstance) -> (String, String) {
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

impl Rejection {
    /// The failure of config (`hash`, `spec_hash`) as status recorded it.
    fn recorded(hash: &str, spec_hash: &str, recorded: RecordedFailure) -> Self {
        Rejection {
            hash: hash.to_owned(),
            spec_hash: spec_hash.to_owned(),
            reason: recorded.reason,
            message: recorded.message,
        }
    }
}

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

/// `instance`'s spec as status records it: JSON, credential directives left out.
fn recordable(instance: &RedisInstance) -> Option<String> {
    let mut spec: RedisInstanceSpec = instance.spec.clone();
    spec.config
        .retain(|key, _| !crate::auth::is_secret_directive(key));
    serde_json::to_string(&spec).ok()
}

/// Whether two copies of an instance hold the same spec, so either may stand for the other.
fn same_spec(a: &RedisInstance, b: &RedisInstance) -> bool {
    a.metadata.uid == b.metadata.uid
        && a.metadata.generation == b.metadata.generation
        && a.spec == b.spec
}

/// An instance's memory of specs and failures, kept by its actor from step to step.
#[derive(Default)]
pub struct SpecMemory {
    /// Newest spec that passed validation: what the pods keep running when an edit is refused.
    last_good: Option<Arc<RedisInstance>>,
    /// Newest spec whose config completed a rollout: where a refused config rolls back to.
    last_healthy: Option<Arc<RedisInstance>>,
    /// Boxed, like the three below: set only while a config fails, and every actor holds
    /// these fields inline.
    rejected: Option<Box<Rejection>>,
    /// A rollout halted on this config (`onFailure: Halt`).
    halted: Option<Box<Rejection>>,
    /// The failure was recalled from status rather than found by this actor: how its finder
    /// told it, which this actor may tell again.
    recalled: Option<Recalled>,
    /// When this actor first saw each unready pod of the restart in flight (by uid), on its
    /// own monotonic clock: how long a pod has been unready is then measured without
    /// comparing two machines' wall clocks. A restarted operator starts counting again, which
    /// can only make it judge later, never wrongly.
    unready_since: HashMap<String, Instant>,
}

impl SpecMemory {
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

    /// Whether both the last valid and the last healthy spec it remembers are `current`'s, as
    /// a fresh actor's would be once `current` converged.
    pub fn settled_on(&self, current: &RedisInstance) -> bool {
        [&self.last_good, &self.last_healthy]
            .into_iter()
            .all(|kept| kept.as_deref().is_some_and(|k| same_spec(k, current)))
    }

    /// A failure found or recalled, or unready pods being timed.
    pub fn remembers_failure(&self) -> bool {
        self.rejected.is_some()
            || self.halted.is_some()
            || self.recalled.is_some()
            || !self.unready_since.is_empty()
    }

    /// Validates the newest spec, keeps it when valid, and returns what is wrong with it.
    /// A rejection recorded in status is recalled, so a restarted operator does not roll the
    /// refused config out again; a different config clears it.
    pub fn accept(&mut self, current: &Arc<RedisInstance>) -> Vec<Violation> {
        let violations = crate::config::violations(current);
        if violations.is_empty() {
            self.last_good = Some(current.clone());
        } else if self.last_good.is_none() {
            self.recall_valid(current);
        }
        self.follow(current);
        self.recall_healthy(current);
        if let Some(good) = &self.last_good {
            let (hash, spec_hash) = hashes_of(good);
            let status = current.status.as_ref();
            // A halt recorded in status is recalled, so a restarted operator keeps the rollout
            // halted instead of finding the failure, and telling and counting it, again.
            if self.halted.is_none()
                && let Some(halt) = recorded_halt(status, &hash)
            {
                self.recalled = Some(halt.told);
                self.halted = Some(Box::new(Rejection::recorded(&hash, &spec_hash, halt)));
            }
            if self.rejected.is_none()
                && let Some(rejection) = recorded_rejection(status, &hash, &spec_hash)
            {
                self.recalled = Some(rejection.told);
                self.rejected = Some(Box::new(Rejection::recorded(&hash, &spec_hash, rejection)));
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
    fn note_unready(
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
    fn note_loading(&mut self, pod: &CachedPod, now: Instant) {
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
        recordable(self.last_healthy.as_deref()?)
    }

    /// The spec to record as the newest valid one while `current` is refused (as
    /// [`Self::healthy_spec`], credentials left out); `None` while `current` is valid, so a
    /// valid instance's status carries no second copy of its spec.
    pub fn valid_spec(&self, current: &RedisInstance) -> Option<String> {
        let good = self.last_good.as_deref()?;
        (!same_spec(good, current))
            .then(|| recordable(good))
            .flatten()
    }

    /// The newest valid spec recorded in status stands in for the one a restarted operator,
    /// finding the current spec refused, has not seen: it drives the pods to it, as the
    /// operator that recorded it did. One that does not parse or no longer passes
    /// validation (edited by hand, or from another version) is no target.
    fn recall_valid(&mut self, current: &RedisInstance) {
        let recorded = current
            .status
            .as_ref()
            .and_then(|s| s.valid_spec.as_deref());
        let Some(spec) = recorded.and_then(|json| serde_json::from_str(json).ok()) else {
            return;
        };
        let recalled = RedisInstance {
            metadata: current.metadata.clone(),
            spec,
            status: None,
        };
        if crate::config::violations(&recalled).is_empty() {
            self.last_good = Some(Arc::new(recalled));
        }
    }

    /// Looks for the newest valid config failing on the pods: a pod on it exited with Redis's
    /// config-file error, or, while `record` restarts the pods onto it, one of the pods it
    /// started is not ready in time. Returns what it found, which it also remembers.
    fn detect_rejection(
        &mut self,
        pods: &[Arc<CachedPod>],
        record: Option<&RolloutRecord>,
        now: Instant,
    ) -> PodFindings {
        let none = PodFindings::default();
        let Some(good) = self.last_good.clone() else {
            return none;
        };
        let (hash, spec_hash) = hashes_of(&good);
        let healthy = self.last_healthy.as_deref().map(|h| hashes_of(h).0);
        let known_failure = self.rejected.is_some() || self.halted.is_some();
        if !watch_for_failure(known_failure, healthy.as_deref(), &hash) {
            return none;
        }
        let Some(crash) = crashed_pod(pods, &hash) else {
            let Some(record) = record.filter(|r| r.config_hash == hash) else {
                return none;
            };
            let failing = Failing {
                good: &good,
                hash: &hash,
                spec_hash: &spec_hash,
                healthy: healthy.as_deref(),
            };
            return PodFindings {
                failure: self.detect_never_ready(&failing, pods, record, now),
                ..none
            };
        };
        let message = refusal(&hash, &crash, healthy.as_deref());
        let rejection = Rejection {
            hash,
            spec_hash,
            reason: REJECTION_REASONS[0],
            message,
        };
        self.rejected = Some(Box::new(rejection.clone()));
        self.recalled = None;
        PodFindings {
            rejection: Some((rejection, crash)),
            ..none
        }
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
    ) -> Option<(Rejection, Outcome)> {
        let rollout = &failing.good.spec.rollout;
        let deadline = readiness_deadline(failing.good);
        let since = record.started_at.0;
        let pod = never_ready(pods, failing.hash, since, deadline, |p| {
            self.unready_for(p, now)
        })?;
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
            Outcome::Halted => self.halted = Some(Box::new(rejection.clone())),
            Outcome::RolledBack => self.rejected = Some(Box::new(rejection.clone())),
        }
        self.recalled = None;
        Some((rejection, outcome))
    }

    /// The failure recalled from status, with how it was told.
    pub fn recalled(&self) -> Option<(&Rejection, Recalled)> {
        let failure = self.halted.as_deref().or(self.rejected.as_deref())?;
        Some((failure, self.recalled?))
    }

    /// The rollout halted on this config, if any.
    pub fn halted(&self) -> Option<&Rejection> {
        self.halted.as_deref()
    }

    /// A halt is over once the restart in flight targets another config (or none): a new
    /// spec replaced it.
    pub fn forget_halt(&mut self, record_hash: Option<&str>) {
        if self.halted.as_ref().map(|h| h.hash.as_str()) != record_hash {
            self.halted = None;
        }
    }

    /// The config Redis refused, if any.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejected.as_deref()
    }

    /// The spec to drive the pods to; `None` when none is known to be safe: then touch
    /// nothing. A refused spec seen first by this actor leaves the healthy one recorded in
    /// status, but only at rest: a restart in flight was driving to a spec no longer known.
    pub fn drive(&self, rollout_recorded: bool) -> Option<Arc<RedisInstance>> {
        let valid_hash = self.last_good.as_deref().map(|good| hashes_of(good).1);
        let specs = Specs {
            valid: valid_hash.as_deref(),
            rejected: self.rejected.as_ref().map(|r| r.spec_hash.as_str()),
            healthy: self.last_healthy.is_some(),
            rollout_recorded,
        };
        match drive_to(&specs) {
            DriveTo::Valid => self.last_good.clone(),
            DriveTo::Healthy => self.last_healthy.clone(),
            DriveTo::Hold => None,
        }
    }

    /// Every pod runs `spec` and is ready: it is what a refused config rolls back to.
    pub fn converged(&mut self, spec: &Arc<RedisInstance>) {
        self.last_healthy = Some(spec.clone());
    }

    /// The first look of a step at the pods: notes which pods of the restart in flight are
    /// unready, and returns those at their readiness deadline, whose Redis is to be asked
    /// whether it is still loading its data before [`SpecMemory::judge_pods`].
    pub fn due_for_loading<'a>(
        &mut self,
        pods: &'a [Arc<CachedPod>],
        record: Option<&'a RolloutRecord>,
        now: Instant,
    ) -> Vec<&'a Arc<CachedPod>> {
        self.note_unready(pods, record, now);
        self.at_deadline(pods, record, now)
    }

    /// Judges the pods: those `loading` their data get another readiness deadline, then a
    /// valid config failing on them is looked for. Returns what was found this step, each
    /// failure once, and the failure recalled from status while a restart is in flight.
    pub fn judge_pods(
        &mut self,
        pods: &[Arc<CachedPod>],
        record: Option<&RolloutRecord>,
        loading: &[&CachedPod],
        now: Instant,
    ) -> PodFindings {
        for pod in loading {
            self.note_loading(pod, now);
        }
        // Found first: a failure found afresh replaces the one recalled from status.
        let found = self.detect_rejection(pods, record, now);
        PodFindings {
            recalled: self
                .recalled()
                .filter(|_| record.is_some())
                .map(|(failure, told)| (failure.clone(), told)),
            ..found
        }
    }
}

/// What judging the pods found this step (see [`SpecMemory::judge_pods`]).
#[derive(Default)]
pub struct PodFindings {
    /// Redis refused the newest valid config.
    pub rejection: Option<(Rejection, Crash)>,
    /// A restart's pod never became ready.
    pub failure: Option<(Rejection, Outcome)>,
    /// The failure recalled from status, and how its finder told it.
    pub recalled: Option<(Rejection, Recalled)>,
}

#[cfg(test)]
#[path = "specs_tests.rs"]
mod tests;
