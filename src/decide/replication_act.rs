//! What a replication step records in status, tells as an Event, counts, and when it probes again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Notice;
use super::replication::{
    ReplicaPod, ReplicationLimits, ReplicationStep, ReplicationView, ReplicationWait,
    decide_replication,
};
use super::{applied, rollout_complete};
use crate::crd::{
    RedisInstance, ReplicaPodStatus, ReplicationStatus, RolloutRecord, SwitchoverFailure,
    SwitchoverRecord,
};
use crate::replication::{Role, awaiting_role};
use crate::resources::CachedStatefulSet;

/// How often a replicated instance's pods are probed: quickly while something is in motion,
/// and at rest often enough that a primary that stops answering is replaced within seconds.
pub const BUSY_PROBE: Duration = Duration::from_millis(500);
/// At rest.
pub const IDLE_PROBE: Duration = Duration::from_secs(2);
/// While the switchover target waits to be routed to: `FAILOVER` goes out soon after it is.
pub const ROUTING_PROBE: Duration = Duration::from_millis(100);
/// While the pod to replace leaves the endpoints of the Services clients write through.
pub const DELISTING_PROBE: Duration = Duration::from_millis(250);
/// After a Redis command failed: soon, as the pods' state is what the next probe reads.
pub const COMMAND_RETRY: Duration = Duration::from_secs(1);

/// What carrying out a replication step reads besides the step itself.
#[derive(Debug, Clone)]
pub struct ReplicationFacts<'a> {
    /// The replication status as the cache shows it.
    pub status: &'a ReplicationStatus,
    /// Each pod's role and link from this step's probes (see [`summarize`]).
    pub summary: Vec<ReplicaPodStatus>,
    /// The first election of an instance the user agreed to convert (see [`converting`]).
    pub converting: bool,
    /// Config hash of the restart in flight.
    pub rollout_hash: Option<&'a str>,
    /// A restart is in flight and the template carries it.
    pub rolling: bool,
    /// Now, by the wall clock: when a switchover is recorded as started.
    pub now: Timestamp,
}

/// How an election is told in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The recorded primary was lost.
    Failover,
    /// The first primary of an instance that ran as unrelated servers.
    Conversion,
    /// The first primary.
    First,
}

/// Everything carrying out a replication step writes and tells, in the order performed: the
/// role change counted, the status written, then the Event.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationAct {
    /// The role change to count (`Planned` or `Unplanned`).
    pub role_change: Option<&'static str>,
    /// The replication status to write; `None`: nothing to write.
    pub status: Option<ReplicationStatus>,
    /// An election, and how it is logged.
    pub election: Option<Election>,
    /// The Event to post once the status is written.
    pub notice: Option<Notice>,
    /// The switchover recorded in status, `(from, to)`: the ends the commands and labels name.
    pub switchover: Option<(String, String)>,
    /// Forget the `FAILOVER` this process sent: the switchover it belonged to is over.
    pub forget_sent: bool,
    /// Probe again after this once performed; `None`: take the next step now.
    pub wake: Option<Duration>,
    /// Decide again after this even when no probe changes what the pods show: the wait is on
    /// time or on the endpoints, which the prober does not watch; `None`: when a probe does.
    pub decide_again: Option<Duration>,
    /// The step changes a pod's role in Redis: the next decision waits for a probe taken after
    /// it, not one that may show the role before.
    pub role_written: bool,
}

/// How the prober goes on after an act: how often it probes, and whether a round is wanted
/// at once, which then starts a step whatever it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probing {
    /// The prober's period.
    pub every: Duration,
    /// A round at once: the act waits for a probe, or changed a role in Redis (a probe sent
    /// before it may not show the change).
    pub at_once: bool,
}

impl ReplicationAct {
    /// How the prober goes on once this act is performed: at the act's wake (quickly when it
    /// names none, or asks for a probe at once).
    pub fn probing(&self) -> Probing {
        Probing {
            every: self.wake.filter(|d| !d.is_zero()).unwrap_or(BUSY_PROBE),
            at_once: self.wake == Some(Duration::ZERO) || self.role_written,
        }
    }

    /// When the step that performed this act looks again: `None` at once (it wrote), else
    /// after the duration (`Duration::MAX`: when a probe or a watch event changes something).
    pub fn next_step(&self) -> Option<Duration> {
        self.wake
            .map(|_| self.decide_again.unwrap_or(Duration::MAX))
    }
}

/// The replication step and how it is carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationPlan {
    /// The next step.
    pub step: ReplicationStep,
    /// What performing it writes and tells.
    pub act: ReplicationAct,
}

/// Decides a replicated instance's replication step and its act: the one call of the
/// replication phase.
pub fn replication_step(
    view: &ReplicationView,
    limits: &ReplicationLimits,
    facts: &ReplicationFacts,
) -> ReplicationPlan {
    let step = decide_replication(view, limits);
    let act = replication_act(&step, facts);
    ReplicationPlan { step, act }
}

/// What carrying out `step` writes and tells.
pub fn replication_act(step: &ReplicationStep, facts: &ReplicationFacts) -> ReplicationAct {
    let status = facts.status;
    let recorded = status
        .switchover
        .as_ref()
        .map(|sw| (sw.from.clone(), sw.to.clone()));
    let mut act = ReplicationAct {
        role_change: None,
        status: None,
        election: None,
        notice: None,
        switchover: recorded,
        forget_sent: false,
        wake: None,
        decide_again: None,
        role_written: false,
    };
    let with_pods = |mut next: ReplicationStatus| {
        next.pods = facts.summary.clone();
        Some(next)
    };
    match step {
        ReplicationStep::Elect { pod, lost } => {
            let mut next = status.clone();
            let old = next.primary.replace(pod.clone());
            if *lost {
                next.role_changes += 1;
                next.failovers += 1;
                act.role_change = Some("Unplanned");
            }
            act.status = with_pods(next);
            let (election, notice) = elected(pod, old.as_deref(), *lost, facts.converting);
            act.election = Some(election);
            act.notice = Some(notice);
        }
        ReplicationStep::Promote { .. } | ReplicationStep::Follow { .. } => act.role_written = true,
        // The pod's watch event usually brings the next step first.
        ReplicationStep::Label { .. } => {
            act.wake = Some(BUSY_PROBE);
            act.decide_again = Some(BUSY_PROBE);
        }
        ReplicationStep::BeginSwitchover { from, to } => {
            let mut next = status.clone();
            next.switchover = Some(SwitchoverRecord {
                from: from.clone(),
                to: to.clone(),
                started_at: Time(facts.now),
            });
            act.status = with_pods(next);
        }
        // Awaited by the perform rather than probed on a timer: probed again at once, and the
        // next decision waits for that probe.
        ReplicationStep::Switchover { .. } => {
            act.wake = Some(Duration::ZERO);
            act.role_written = true;
        }
        ReplicationStep::FinishSwitchover { to } => {
            let mut next = status.clone();
            let from = next.switchover.take().map(|sw| sw.from).unwrap_or_default();
            next.primary = Some(to.clone());
            next.role_changes += 1;
            act.role_change = Some("Planned");
            act.status = with_pods(next);
            act.forget_sent = true;
            let note = format!("switched the primary role from {from} to {to}");
            act.notice = Some(Notice::normal("Switchover", "Switchover", note));
            act.switchover = Some((from, to.clone()));
        }
        ReplicationStep::AbortSwitchover { message } => {
            let mut next = status.clone();
            next.switchover = None;
            next.switchover_failed = facts.rollout_hash.map(|hash| SwitchoverFailure {
                config_hash: hash.to_owned(),
                message: message.clone(),
            });
            act.status = with_pods(next);
            act.forget_sent = true;
            act.notice = Some(warning("SwitchoverFailed", "Switchover", message.clone()));
        }
        ReplicationStep::ReplacePod { .. } => {
            act.wake = Some(BUSY_PROBE);
            act.decide_again = Some(BUSY_PROBE);
        }
        ReplicationStep::Wait(ReplicationWait::Routing) => {
            act.wake = Some(ROUTING_PROBE);
            act.decide_again = Some(ROUTING_PROBE);
        }
        ReplicationStep::Wait(ReplicationWait::Delisting) => {
            act.wake = Some(DELISTING_PROBE);
            act.decide_again = Some(DELISTING_PROBE);
        }
        // Nothing written from a summary with pods not yet probed: probed at once instead.
        ReplicationStep::Wait(ReplicationWait::Probes) => act.wake = Some(Duration::ZERO),
        ReplicationStep::Wait(_) | ReplicationStep::Idle => {
            if status.pods != facts.summary {
                act.status = with_pods(status.clone());
            }
            let idle = matches!(step, ReplicationStep::Idle) && !facts.rolling;
            act.wake = Some(if idle { IDLE_PROBE } else { BUSY_PROBE });
        }
    }
    act
}

/// How a new primary is logged and told: a failover and a conversion as Warnings (data moves
/// or is replaced), a first election as a Normal Event.
fn elected(pod: &str, old: Option<&str>, lost: bool, converting: bool) -> (Election, Notice) {
    if lost {
        let note = format!(
            "primary {} lost; promoting {pod}, the replica furthest ahead",
            old.unwrap_or_default()
        );
        (Election::Failover, warning("Failover", "Promote", note))
    } else if converting {
        // Told before any pod follows the primary, which replaces its data.
        let note = format!(
            "converting to replication: {pod} is the primary and keeps its data; every other pod's own data is now replaced by a copy of it"
        );
        let notice = warning("ReplicationConversion", "Promote", note);
        (Election::Conversion, notice)
    } else {
        let note = format!("{pod} is the primary; the other pods replicate it");
        let notice = Notice::normal("PrimaryElected", "Promote", note);
        (Election::First, notice)
    }
}

/// A Warning that happens again whenever it is told.
fn warning(reason: &'static str, action: &'static str, note: String) -> Notice {
    Notice {
        warning: true,
        reason,
        action,
        note,
        fact: None,
    }
}

/// Each pod's role and link for status, and the lag of a replica further behind than `bound`,
/// in whole MiB: the exact lag changes with every write, so it is left to metrics, and status
/// is written only when a replica falls behind, catches up, or moves by a MiB.
pub fn summarize(
    pods: &[ReplicaPod],
    lags: &BTreeMap<String, i64>,
    bound: i64,
) -> Vec<ReplicaPodStatus> {
    const MIB: i64 = 1024 * 1024;
    pods.iter()
        .filter(|p| !p.deleting)
        .map(|p| {
            let (role, link) = match p.probe {
                None => ("unreachable", None),
                Some(r) if r.role == Role::Primary => ("primary", None),
                Some(r) if awaiting_role(r) => ("unassigned", None),
                Some(r) => (
                    "replica",
                    Some(if r.syncing {
                        "syncing"
                    } else if r.link_up {
                        "up"
                    } else {
                        "down"
                    }),
                ),
            };
            ReplicaPodStatus {
                name: p.name.to_owned(),
                role: role.to_owned(),
                link: link.map(str::to_owned),
                lag_bytes: lags
                    .get(p.name)
                    .filter(|lag| **lag > bound)
                    .map(|lag| lag / MIB * MIB),
            }
        })
        .collect()
}

/// The first election of an instance the user agreed to convert: it ran before with several
/// pods, each with data of its own.
pub fn converting(instance: &RedisInstance) -> bool {
    instance
        .annotations()
        .get(crate::resources::CONVERT_ANNOTATION)
        .is_some_and(|v| v == "true")
        && instance
            .status
            .as_ref()
            .is_some_and(|s| s.config_hash.is_some() && s.ready_replicas >= 2)
}

/// The restart in flight is the one whose switchover failed.
pub fn failed_here(status: &ReplicationStatus, rollout_hash: Option<&str>) -> bool {
    status
        .switchover_failed
        .as_ref()
        .is_some_and(|f| Some(f.config_hash.as_str()) == rollout_hash)
}

/// A restart of a replicated instance is the operator's to carry out: the template carries
/// the record and not every pod runs it yet.
pub fn rolling(record: Option<&RolloutRecord>, statefulset: Option<&CachedStatefulSet>) -> bool {
    match (record, statefulset) {
        (Some(record), Some(sts)) => applied(record, sts) && !rollout_complete(sts),
        _ => false,
    }
}

#[cfg(test)]
#[path = "replication_act_tests.rs"]
mod tests;
