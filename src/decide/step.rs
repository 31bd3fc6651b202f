//! One step's decision (the NetworkPolicy, then the credentials and the verdict of a spec to
//! drive, or what to do when no spec is safe to run), the verdict alone (asked by `diff` too),
//! which findings to tell, and when to look again.
//!
//! Pure, like the rest of `decide`: the instance actor observes, calls these and performs.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::replication::{ReplicationLimits, ReplicationView};
use super::replication_act::{ReplicationFacts, ReplicationPlan, replication_step};
use super::routing::{RoleServicesAct, RoleServicesView, role_services};
use super::{
    Act, AuthStep, AuthView, Checks, ChecksView, Deadlines, Decision, Desired, Facts, Notice,
    PolicyAct, PolicyStep, PolicyView, ServicesAct, Snapshot, StatusView, act, applied, auth_step,
    checks, decide, finished, network_step, overdue, pending_change, recorded_status,
    rollout_complete, service_step, services_act,
};
use crate::crd::{RedisInstance, RedisInstanceStatus, RolloutRecord};
use crate::resources::{CachedService, CachedStatefulSet};
use crate::status::{condition, find_condition};

/// The decision for a snapshot and everything carrying it out takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    /// The next thing to do.
    pub decision: Decision,
    /// What doing it writes and tells.
    pub act: Act<'a>,
    /// A held decision in words, for `status.pendingChange` (see [`pending_change`]).
    pub pending: Option<String>,
}

/// What a step with a spec to drive decides besides the NetworkPolicy, in the order it is
/// performed.
#[derive(Debug, Clone, PartialEq)]
pub struct Drive<'a> {
    /// The credentials, first: the pods mount the ACL Secret, and everything after logs in
    /// with the operator's user.
    pub auth: AuthStep,
    /// The next thing to do with the instance's objects, and its act.
    pub verdict: Verdict<'a>,
    /// The checks at rest, decided exactly when the verdict writes nothing.
    pub checks: Option<Checks<'a>>,
    /// A replicated instance's replication, decided only when the verdict writes nothing.
    pub replication: Option<Replication<'a>>,
}

/// What a replicated instance's step reads of replication: the role Services, and the pods
/// with the prober's latest usable probes (observed outside the step).
#[derive(Clone, Copy)]
pub struct ReplicationInputs<'v, 'a> {
    /// The role Services as the cache and the actor's writes show them.
    pub services: &'v RoleServicesView<'a>,
    /// The pods and what replication remembers; its `paused` is set from the verdict.
    pub view: &'v ReplicationView<'v>,
    /// The bounds from `spec.replication`.
    pub limits: &'v ReplicationLimits,
    /// What carrying out the step reads.
    pub facts: &'v ReplicationFacts<'v>,
}

/// The replication part of a step, in the order it is performed.
#[derive(Debug, Clone, PartialEq)]
pub enum Replication<'a> {
    /// Delete `<name>-primary` of earlier versions; nothing else this step.
    RetireLegacy(&'a CachedService),
    /// Apply `<name>-replicas` (over the one seen, if any); nothing else this step.
    ApplyReplicas {
        /// The role Service the spec asks for.
        desired: &'a Service,
        /// The one the decision was taken over.
        over: Option<&'a CachedService>,
    },
    /// The pods' replication step and its act.
    Pods {
        /// The role Service this actor wrote shows in the cache: forget the write.
        forget_written: bool,
        /// The step and its act.
        plan: Box<ReplicationPlan>,
    },
}

/// What a step reads of a spec safe to run (`auth` is `None` when no credentials were read:
/// `spec.auth` off).
#[derive(Clone, Copy)]
pub struct Planned<'v, 'a> {
    /// The credentials' Secrets and memory.
    pub auth: Option<&'v AuthView<'v>>,
    /// What the plan's spec builds.
    pub want: &'v Desired<'a>,
    /// The caches and the recalled memory.
    pub seen: &'v Snapshot<'a>,
    /// The deadlines.
    pub deadlines: &'v Deadlines,
    /// The facts behind the act's form and reasons.
    pub facts: &'v Facts<'v>,
    /// A replicated instance's replication; `None` for one that is not replicated.
    pub replication: Option<&'v ReplicationInputs<'v, 'a>>,
    /// What the checks at rest read.
    pub checks: &'v ChecksView<'v>,
    /// What the status is derived from, for the status a restart's record write stores.
    pub status: &'v StatusView<'v>,
}

/// What a step drives: a spec known to be safe to run, or nothing (the current spec is
/// invalid and no earlier one is known to be safe).
#[derive(Clone, Copy)]
pub enum Course<'v, 'a> {
    /// A spec to drive the instance to.
    Planned(Planned<'v, 'a>),
    /// Nothing safe to run.
    Unplanned(Unplanned<'v, 'a>),
}

/// The one decision of a step, in the order it is performed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<'a> {
    /// Drop the remembered NetworkPolicy write before performing (see [`PolicyStep`]).
    pub forget_policy: bool,
    /// The step's writes.
    pub act: StepAct<'a>,
}

impl Step<'_> {
    /// Whether the step's report writes the status derived after performing: only when the
    /// step writes nothing else to the instance's objects (its checks at rest and replication
    /// may still run). A step that writes takes the next one at once, which reports what it
    /// finds; a restart's record write carries its own status.
    pub fn reports_status(&self) -> bool {
        match &self.act {
            StepAct::Policy(_) => false,
            StepAct::Hold(act) => matches!(act, HoldAct::Hold),
            StepAct::Drive(drive) => drive.checks.is_some(),
        }
    }
}

/// What a step performs: the NetworkPolicy write alone, or the rest of the step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAct<'a> {
    /// Write the NetworkPolicy (never [`PolicyAct::Keep`]); nothing else this step, so that
    /// no pod runs without it.
    Policy(PolicyAct<'a>),
    /// Nothing safe to run: what [`hold_act`] names.
    Hold(HoldAct<'a>),
    /// A spec to drive to.
    Drive(Box<Drive<'a>>),
}

/// Decides a step: the one call of the instance actor's decide phase. The NetworkPolicy comes
/// first, from the current spec even when it is invalid; a write of it is all the step does.
pub fn step<'a>(policy: &PolicyView<'a>, course: &Course<'_, 'a>) -> Step<'a> {
    let PolicyStep { act, forget } = network_step(policy);
    let act = match (act, course) {
        (PolicyAct::Keep, Course::Planned(planned)) => {
            let verdict = verdict(
                planned.want,
                planned.seen,
                planned.deadlines,
                planned.facts,
                planned.status,
            );
            // Replication waits while the instance's objects are written: its Redis commands
            // come after the step's checks at rest, and the step's report writes its status
            // record (see [`Replication`]).
            let replication = planned
                .replication
                .filter(|_| !verdict.act.is_write())
                .map(|inputs| replication(inputs, matches!(verdict.decision, Decision::Held(_))));
            let checks = (!verdict.act.is_write()).then(|| {
                let seen = planned.seen;
                checks(
                    &verdict.decision,
                    seen.rollout,
                    seen.now,
                    planned.deadlines,
                    planned.checks,
                )
            });
            StepAct::Drive(Box::new(Drive {
                auth: planned.auth.map_or(AuthStep::Off, auth_step),
                verdict,
                checks,
                replication,
            }))
        }
        (PolicyAct::Keep, Course::Unplanned(unplanned)) => StepAct::Hold(hold_act(unplanned)),
        (write, _) => StepAct::Policy(write),
    };
    Step {
        forget_policy: forget,
        act,
    }
}

/// Decides replication: a role Service write first, then the pods' step. `held`: the verdict
/// holds a change, and replication makes no planned role change nor replaces a pod.
fn replication<'a>(inputs: &ReplicationInputs<'_, 'a>, held: bool) -> Replication<'a> {
    let forget_written = match role_services(inputs.services) {
        RoleServicesAct::Keep { forget_written } => forget_written,
        RoleServicesAct::RetireLegacy(old) => return Replication::RetireLegacy(old),
        RoleServicesAct::ApplyReplicas { desired, over } => {
            return Replication::ApplyReplicas { desired, over };
        }
    };
    let view = ReplicationView {
        paused: held,
        ..*inputs.view
    };
    Replication::Pods {
        forget_written,
        plan: Box::new(replication_step(&view, inputs.limits, inputs.facts)),
    }
}

/// Decides the next step and its act: the one function both the instance actor and
/// `redis-operator diff` ask.
pub fn verdict<'a>(
    want: &Desired<'a>,
    seen: &Snapshot<'a>,
    deadlines: &Deadlines,
    facts: &Facts<'_>,
    status: &StatusView<'_>,
) -> Verdict<'a> {
    let decision = decide(want, seen, deadlines);
    let act = act(&decision, want, seen, facts, status);
    let pending = match &decision {
        Decision::Held(held) => Some(pending_change(
            held,
            seen.config_text,
            want.config_text,
            want.hash,
            want.strategy,
        )),
        _ => None,
    };
    Verdict {
        decision,
        act,
        pending,
    }
}

/// Annotation that pauses an instance like `spec.paused`, for tools that only label and
/// annotate.
pub const PAUSED_ANNOTATION: &str = "redis.github.com/paused";

/// `spec.paused`, or the pause annotation set to anything but "false".
pub fn paused(instance: &RedisInstance) -> bool {
    instance.spec.paused
        || instance
            .annotations()
            .get(PAUSED_ANNOTATION)
            .is_some_and(|v| v != "false")
}

/// What the caches show of an instance whose spec holds nothing known to be safe to run.
#[derive(Debug, Clone, Copy)]
pub struct Unplanned<'v, 'a> {
    /// The Service `<name>` the current spec builds.
    pub desired_service: &'a Service,
    /// The headless Service the current spec builds.
    pub desired_headless: &'a Service,
    /// The restart in flight, from status.
    pub record: Option<&'a RolloutRecord>,
    /// The StatefulSet, if any.
    pub statefulset: Option<&'a CachedStatefulSet>,
    /// The Service `<name>`, if any.
    pub service: Option<&'a CachedService>,
    /// The headless Service, if any.
    pub headless: Option<&'a CachedService>,
    /// The actor deleted the headless `<name>` to create it as ClusterIP.
    pub migrated: bool,
    /// What the status is derived from, for the status closing the record.
    pub status: &'v StatusView<'v>,
}

/// What an instance with nothing safe to run does.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldAct<'a> {
    /// The pods have finished the recorded restart: close the record, so that no finished
    /// rollout stays recorded.
    FinishRestart {
        /// The record.
        record: &'a RolloutRecord,
        /// The status without it.
        status: Box<RedisInstanceStatus>,
        /// `RestartCompleted`.
        event: Notice,
    },
    /// Repair the Services.
    Services {
        /// The decision's name, for metrics.
        decided: &'static str,
        /// The write.
        act: ServicesAct<'a>,
        /// The Service and the headless Service the current spec builds.
        desired: (&'a Service, &'a Service),
    },
    /// Touch nothing; report what runs.
    Hold,
}

/// What to do when no spec is known to be safe to run. The Services depend on no directive, so ones that ran before are repaired
/// whatever the config (an operator restarted on an invalid spec knows no other); nothing is
/// created for an instance that never ran.
pub fn hold_act<'a>(seen: &Unplanned<'_, 'a>) -> HoldAct<'a> {
    let (service, headless) = (seen.desired_service, seen.desired_headless);
    let finished_record = seen.record.filter(|r| {
        seen.statefulset
            .is_some_and(|sts| applied(r, sts) && rollout_complete(sts))
    });
    if let Some(record) = finished_record {
        return HoldAct::FinishRestart {
            record,
            status: Box::new(recorded_status(seen.status, None, false)),
            event: finished(record),
        };
    }
    let Some(sts) = seen.statefulset else {
        return HoldAct::Hold;
    };
    let write = service_step(service, headless, seen.service, seen.headless, Some(sts))
        .filter(Decision::is_write);
    let services = write.and_then(|decision| {
        let act = services_act(
            &decision,
            service,
            headless,
            (seen.service, seen.headless),
            true,
            seen.migrated,
            seen.status.now.0,
        )?;
        Some(HoldAct::Services {
            decided: decision.name(),
            act,
            desired: (service, headless),
        })
    });
    services.unwrap_or(HoldAct::Hold)
}

/// The restart in flight to tell as overdue: past its progress deadline, not held by a pause
/// (a held restart is not stuck), and not told yet (`told`: the start of the one told last).
pub fn overdue_to_tell<'a>(
    record: Option<&'a RolloutRecord>,
    held: bool,
    now: Timestamp,
    deadlines: &Deadlines,
    told: Option<Timestamp>,
) -> Option<&'a RolloutRecord> {
    record.filter(|r| !held && overdue(r, now, deadlines.progress) && told != Some(r.started_at.0))
}

/// Whether a refused spec of `generation` is still to be told: not by this actor
/// (`told_generation`), nor, as the stored status shows, before an operator restart.
pub fn refusal_to_tell(
    status: Option<&RedisInstanceStatus>,
    generation: Option<i64>,
    told_generation: Option<i64>,
) -> bool {
    let in_status = status.is_some_and(|s| {
        s.observed_generation == generation
            && find_condition(s, condition::CONFIG_VALID)
                .is_some_and(|c| c.reason == "InvalidConfig")
    });
    !in_status && told_generation != generation
}

/// When a step that wrote nothing looks again, each `Duration::MAX` when it has no reason to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakes {
    /// Left of the settle wait, when the decision waits for edits to settle: that alone counts.
    pub settle: Option<Duration>,
    /// The restart's progress deadline.
    pub progress: Duration,
    /// The first unready pod's readiness deadline.
    pub pod_deadline: Duration,
    /// The next live check.
    pub live: Duration,
    /// The next replication probe.
    pub replication: Duration,
    /// The credentials step's retry.
    pub auth: Duration,
    /// The TLS Secret's reread or reload.
    pub tls: Duration,
}

impl Default for Wakes {
    fn default() -> Self {
        Self {
            settle: None,
            progress: Duration::MAX,
            pod_deadline: Duration::MAX,
            live: Duration::MAX,
            replication: Duration::MAX,
            auth: Duration::MAX,
            tls: Duration::MAX,
        }
    }
}

/// The soonest of `wakes`, or the settle wait's end when the step waits for edits to settle.
pub fn next_wake(wakes: &Wakes) -> Duration {
    if let Some(left) = wakes.settle {
        return left;
    }
    [
        wakes.progress,
        wakes.pod_deadline,
        wakes.live,
        wakes.replication,
        wakes.auth,
        wakes.tls,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::MAX)
}
