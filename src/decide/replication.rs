//! Replication decisions of a multi-pod instance: which pod is the primary, who follows it,
//! which pod a restart replaces next, and when the primary role moves.
//!
//! Pure, like the rest of `decide`: the inputs are the pods as the caches show them, what each
//! pod's Redis says (`INFO replication`), and the primary and switchover recorded in status.
//! Every role change is recorded before it is made, so a new leader continues it instead of
//! taking another.

use std::collections::BTreeMap;
use std::time::Duration;

use super::routing::Listing;
use crate::crd::ReplicationStatus;
use crate::replication::{FailoverState, PodReplication, Role, awaiting_role};

/// One pod of the instance.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaPod<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Its StatefulSet ordinal.
    pub ordinal: i32,
    /// Its IP.
    pub ip: Option<&'a str>,
    /// Being deleted.
    pub deleting: bool,
    /// Passes its readiness probe.
    pub ready: bool,
    /// Runs the StatefulSet's update revision.
    pub up_to_date: bool,
    /// Its `redis.github.com/role` label.
    pub role_label: Option<&'a str>,
    /// What its Redis says; `None` when it did not answer.
    pub probe: Option<&'a PodReplication>,
    /// A probe of this pod as it is now, taken after the operator's last role write, is in
    /// `probe` (see [`super::probes::usable`]); `false`: not yet probed, nothing is decided.
    pub probed: bool,
}

/// What replication decisions look at.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationView<'a> {
    /// Pods by ordinal.
    pub pods: &'a [ReplicaPod<'a>],
    /// Pods the spec asks for.
    pub replicas: i32,
    /// The primary and switchover in status.
    pub status: Option<&'a ReplicationStatus>,
    /// A restart is in flight and the template carries it: replace the old pods in order.
    pub rolling: bool,
    /// How long the recorded primary has not answered, by the operator's clock.
    pub primary_silent_for: Option<Duration>,
    /// This process sent the recorded switchover's `FAILOVER`.
    pub switchover_sent: bool,
    /// Each replica's lag behind the primary at the last probe that saw the primary answer.
    pub last_lag: &'a BTreeMap<String, i64>,
    /// `spec.paused`: no planned role change and no pod replaced.
    pub paused: bool,
    /// The restart in flight already failed its switchover: it halts before another.
    pub switchover_halted: bool,
    /// Where the recorded switchover's target stands in the Services clients write through,
    /// once it carries the primary label; `None` before.
    pub routing: Option<Routing>,
    /// What the endpoints of the Services clients write through list; `None`: not read (see
    /// [`super::routing::reads_listing`]), and then no pod with an IP is replaced.
    pub listing: Option<&'a Listing>,
}

/// How long, by the operator's clock, a switchover target has been labelled primary, and
/// listed ready in the endpoints of every Service clients write through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    /// Since the operator saw it labelled.
    pub labelled_for: Duration,
    /// Since every such Service lists it; `None` while one does not.
    pub listed_for: Option<Duration>,
}

/// Bounds of the decisions.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationLimits {
    /// A primary that does not answer this long is lost.
    pub failover_after: Duration,
    /// A replica further behind than this is not promoted when the primary is lost, nor
    /// switched to, nor is a pod replaced while one is.
    pub max_lag_bytes: i64,
    /// `FAILOVER`'s own timeout; a switchover not done by then (plus slack) failed.
    pub switchover_timeout: Duration,
    /// When the primary is lost, promote a replica last seen past `max_lag_bytes` rather
    /// than none.
    pub failover_to_lagging: bool,
    /// How long an endpoint change takes to reach every node's service proxy (kube-proxy
    /// applies changes at most once per its min sync period, 1 s by default): the switchover
    /// target is routed to this long before it takes the role.
    pub route_settle: Duration,
    /// A switchover target the Services do not list this long after it was labelled (it is
    /// not ready, or the endpoints controller is down) is given up: the primary stays.
    pub route_bound: Duration,
}

impl Default for ReplicationLimits {
    fn default() -> Self {
        Self {
            failover_after: Duration::from_secs(3),
            max_lag_bytes: 1024 * 1024,
            switchover_timeout: Duration::from_secs(5),
            failover_to_lagging: false,
            route_settle: Duration::from_millis(1200),
            route_bound: Duration::from_secs(30),
        }
    }
}

impl ReplicationLimits {
    /// The limits `spec.replication` asks for.
    pub fn from_spec(spec: &crate::crd::ReplicationSpec) -> Self {
        Self {
            max_lag_bytes: spec.max_lag_bytes,
            switchover_timeout: Duration::from_secs(
                spec.switchover_timeout_seconds
                    .clamp(1, 60)
                    .unsigned_abs()
                    .into(),
            ),
            failover_to_lagging: spec.failover_to_lagging_replica,
            ..Self::default()
        }
    }
}

/// The next replication step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationStep {
    /// Record `pod` as the primary before promoting it; `lost` says the old primary was lost
    /// (a failover), as opposed to the first election.
    Elect { pod: String, lost: bool },
    /// `REPLICAOF NO ONE` on the recorded primary.
    Promote { pod: String },
    /// `REPLICAOF <primary_ip>` on a pod that follows nothing or someone else.
    Follow { pod: String, primary_ip: String },
    /// Set (or remove) a pod's role label.
    Label { pod: String, role: Option<Role> },
    /// Record a planned switchover before sending it.
    BeginSwitchover { from: String, to: String },
    /// `FAILOVER TO <to_ip>` on the primary `from`.
    Switchover { from: String, to_ip: String },
    /// The target took over: record it as the primary.
    FinishSwitchover { to: String },
    /// The switchover did not happen in time; the primary stayed: record why and stop.
    AbortSwitchover { message: String },
    /// Replace the next pod of a restart (delete it; the StatefulSet makes it anew).
    ReplacePod { pod: String },
    /// Nothing to do until pods or their links change.
    Wait(ReplicationWait),
    /// Converged.
    Idle,
}

/// What a replication `Wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationWait {
    /// The recorded primary does not answer, for less than the failover bound.
    PrimarySilent,
    /// The recorded primary's pod is being deleted and its Redis still answers.
    PrimaryLeaving,
    /// No pod can become the primary: none answers with usable data.
    NoCandidate,
    /// Replicas to link up and catch up before the next pod is replaced.
    Sync,
    /// A `FAILOVER` in progress.
    Switchover,
    /// The switchover target to be routed to by every node before `FAILOVER` is sent.
    Routing,
    /// The replaced pod to come back.
    Pods,
    /// The pod to replace to leave the endpoints of the Services clients write through (it
    /// was the primary until the switchover): cut earlier, its clients would reconnect to it.
    Delisting,
    /// A fixed spec, after a failed switchover.
    Halted,
    /// A pod not yet probed: new, replaced, or not since the operator's last role write.
    Probes,
}

impl ReplicationStep {
    /// Fixed name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ReplicationStep::Elect { .. } => "Elect",
            ReplicationStep::Promote { .. } => "Promote",
            ReplicationStep::Follow { .. } => "Follow",
            ReplicationStep::Label { .. } => "Label",
            ReplicationStep::BeginSwitchover { .. } => "BeginSwitchover",
            ReplicationStep::Switchover { .. } => "Switchover",
            ReplicationStep::FinishSwitchover { .. } => "FinishSwitchover",
            ReplicationStep::AbortSwitchover { .. } => "AbortSwitchover",
            ReplicationStep::ReplacePod { .. } => "ReplacePod",
            ReplicationStep::Wait(_) => "Wait",
            ReplicationStep::Idle => "Idle",
        }
    }
}

fn is_primary(pod: &ReplicaPod) -> bool {
    pod.probe.is_some_and(|p| p.role == Role::Primary)
}

/// A replica that follows `ip` with its link up and its initial copy done.
fn synced_to(pod: &ReplicaPod, ip: &str) -> bool {
    pod.probe.is_some_and(|p| {
        p.role == Role::Replica && p.primary_host.as_deref() == Some(ip) && p.link_up && !p.syncing
    })
}

/// Bytes `pod` is behind `primary`, as their offsets show.
fn lag(pod: &ReplicaPod, primary: &ReplicaPod) -> Option<i64> {
    let (p, r) = (primary.probe?, pod.probe?);
    (p.replid == r.replid || r.replid.is_empty()).then_some((p.offset - r.offset).max(0))
}

/// Decides the next replication step of a multi-pod instance.
pub fn decide_replication(view: &ReplicationView, limits: &ReplicationLimits) -> ReplicationStep {
    // Decided on an answer older than the pod or than the last role write, a step could
    // undo or repeat what was just done: it waits for the prober instead.
    if view.pods.iter().any(|p| !p.probed) {
        return ReplicationStep::Wait(ReplicationWait::Probes);
    }
    let live: Vec<&ReplicaPod> = view.pods.iter().filter(|p| !p.deleting).collect();
    let find = |name: &str| live.iter().copied().find(|p| p.name == name);
    let recorded = view.status.and_then(|s| s.primary.as_deref());

    if let Some(sw) = view.status.and_then(|s| s.switchover.as_ref()) {
        let (from, to) = (find(&sw.from), find(&sw.to));
        if to.is_some_and(is_primary) {
            return ReplicationStep::FinishSwitchover { to: sw.to.clone() };
        }
        match (from, to) {
            (Some(from), Some(to)) if is_primary(from) => {
                let failing_over = from
                    .probe
                    .is_some_and(|p| p.failover != FailoverState::None);
                if failing_over {
                    return ReplicationStep::Wait(ReplicationWait::Switchover);
                }
                // Sent by this process and over: it failed. Recorded by another leader that
                // may never have sent it: this one sends it once; only one can succeed.
                if view.switchover_sent {
                    return ReplicationStep::AbortSwitchover {
                        message: format!(
                            "switchover from {} to {} did not complete within {}s; {} stays the primary",
                            sw.from,
                            sw.to,
                            limits.switchover_timeout.as_secs(),
                            sw.from
                        ),
                    };
                }
                // The target joins the primary's Service before it takes the role, so that
                // clients refused by the old primary reach it at once rather than after the
                // service proxies' next sync; until `FAILOVER`, writes reaching it are refused
                // (`-READONLY`), as they are on the old primary after it.
                if to.role_label != Some(Role::Primary.as_str()) {
                    return ReplicationStep::Label {
                        pod: sw.to.clone(),
                        role: Some(Role::Primary),
                    };
                }
                let routing = view.routing.unwrap_or(Routing {
                    labelled_for: Duration::ZERO,
                    listed_for: None,
                });
                match routing.listed_for {
                    Some(listed) if listed >= limits.route_settle => {}
                    None if routing.labelled_for > limits.route_bound => {
                        return ReplicationStep::AbortSwitchover {
                            message: format!(
                                "switchover from {} to {}: the primary's Service did not list {} within {}s of its label; {} stays the primary",
                                sw.from,
                                sw.to,
                                sw.to,
                                limits.route_bound.as_secs(),
                                sw.from
                            ),
                        };
                    }
                    _ => return ReplicationStep::Wait(ReplicationWait::Routing),
                }
                if let Some(ip) = to.ip {
                    return ReplicationStep::Switchover {
                        from: sw.from.clone(),
                        to_ip: ip.to_owned(),
                    };
                }
                return ReplicationStep::Wait(ReplicationWait::Pods);
            }
            _ => {
                // A pod of the switchover is gone or not answering: the primary-loss rules
                // below decide, once the switchover record is cleared.
                return ReplicationStep::AbortSwitchover {
                    message: format!(
                        "switchover from {} to {} interrupted: a pod stopped answering",
                        sw.from, sw.to
                    ),
                };
            }
        }
    }

    let Some(primary) = current_primary(view, limits, &live, recorded) else {
        return elect(view, limits, &live, recorded);
    };
    let primary = match primary {
        Health::Serving(p) => p,
        Health::Decided(step) => return step,
    };
    let Some(primary_ip) = primary.ip else {
        return ReplicationStep::Wait(ReplicationWait::Pods);
    };

    // Every other answering pod follows the primary: a second primary (an old one that came
    // back, or one promoted by hand) is turned into a replica before anything else.
    for pod in &live {
        if pod.name == primary.name {
            continue;
        }
        let Some(probe) = pod.probe else { continue };
        let follows =
            probe.role == Role::Replica && probe.primary_host.as_deref() == Some(primary_ip);
        if !follows {
            return ReplicationStep::Follow {
                pod: pod.name.to_owned(),
                primary_ip: primary_ip.to_owned(),
            };
        }
    }

    // Labels: a wrong primary label goes first, so that outside a switchover the primary
    // Service never selects two pods.
    for pod in &live {
        if pod.name != primary.name && pod.role_label == Some(Role::Primary.as_str()) {
            let follows = pod.probe.is_some_and(|p| p.role == Role::Replica);
            return ReplicationStep::Label {
                pod: pod.name.to_owned(),
                role: follows.then_some(Role::Replica),
            };
        }
    }
    if primary.role_label != Some(Role::Primary.as_str()) {
        return ReplicationStep::Label {
            pod: primary.name.to_owned(),
            role: Some(Role::Primary),
        };
    }
    for pod in &live {
        let follows = pod.probe.is_some_and(|p| p.role == Role::Replica);
        if pod.name != primary.name && follows && pod.role_label != Some(Role::Replica.as_str()) {
            return ReplicationStep::Label {
                pod: pod.name.to_owned(),
                role: Some(Role::Replica),
            };
        }
    }

    if view.paused {
        return ReplicationStep::Idle;
    }
    // A scale-down removes the highest ordinals: the primary moves off them first.
    let leaving = primary.ordinal >= view.replicas;
    if view.rolling || leaving {
        return next_replacement(view, limits, &live, primary, primary_ip, leaving);
    }
    ReplicationStep::Idle
}

enum Health<'a> {
    Serving(&'a ReplicaPod<'a>),
    Decided(ReplicationStep),
}

/// The recorded primary's state: serving, or the step it needs; `None` when it is lost.
fn current_primary<'a>(
    view: &ReplicationView,
    limits: &ReplicationLimits,
    live: &[&'a ReplicaPod<'a>],
    recorded: Option<&str>,
) -> Option<Health<'a>> {
    if let Some(leaving) = view
        .pods
        .iter()
        .find(|p| p.deleting && Some(p.name) == recorded)
    {
        // A primary shutting down pauses writes until its replicas have them all, then exits;
        // promoting a replica while it still answers would let it take writes the new primary
        // never sees. Once it is gone, nothing is waited for.
        let answering = leaving.probe.is_some_and(|p| p.role == Role::Primary);
        return answering.then_some(Health::Decided(ReplicationStep::Wait(
            ReplicationWait::PrimaryLeaving,
        )));
    }
    let pod = live.iter().copied().find(|p| Some(p.name) == recorded)?;
    let probe = match pod.probe {
        Some(probe) => probe,
        None => {
            let silent = view.primary_silent_for.unwrap_or_default();
            return (silent < limits.failover_after).then_some(Health::Decided(
                ReplicationStep::Wait(ReplicationWait::PrimarySilent),
            ));
        }
    };
    match probe.role {
        Role::Primary => Some(Health::Serving(pod)),
        // Restarted: its data may be older than a replica's, which wins if there is one.
        Role::Replica if awaiting_role(probe) => candidate(view, limits, live, Some(pod.name))
            .is_none()
            .then(|| {
                Health::Decided(ReplicationStep::Promote {
                    pod: pod.name.to_owned(),
                })
            }),
        // Elected and not promoted yet (or demoted by hand): it is the primary by record.
        Role::Replica => Some(Health::Decided(ReplicationStep::Promote {
            pod: pod.name.to_owned(),
        })),
    }
}

/// The replica to promote when the primary is lost: one that followed it with its initial
/// copy done and, as last seen, not too far behind; the one furthest ahead.
fn candidate<'a>(
    view: &ReplicationView,
    limits: &ReplicationLimits,
    live: &[&'a ReplicaPod<'a>],
    except: Option<&str>,
) -> Option<&'a ReplicaPod<'a>> {
    let usable: Vec<&ReplicaPod> = live
        .iter()
        .copied()
        .filter(|p| Some(p.name) != except)
        .filter(|p| {
            p.probe
                .is_some_and(|r| r.role == Role::Replica && !awaiting_role(r) && !r.syncing)
        })
        .collect();
    let furthest = |pods: Vec<&'a ReplicaPod<'a>>| {
        pods.into_iter()
            .max_by_key(|p| (p.probe.map_or(0, |r| r.offset), -p.ordinal))
    };
    let close = usable
        .iter()
        .copied()
        .filter(|p| {
            view.last_lag
                .get(p.name)
                .is_none_or(|lag| *lag <= limits.max_lag_bytes)
        })
        .collect();
    match furthest(close) {
        None if limits.failover_to_lagging => furthest(usable),
        found => found,
    }
}

/// No primary serves: the first election (ordinal 0, which holds the data of an instance that
/// ran as one pod), or a failover to the replica furthest ahead.
fn elect(
    view: &ReplicationView,
    limits: &ReplicationLimits,
    live: &[&ReplicaPod],
    recorded: Option<&str>,
) -> ReplicationStep {
    if let Some(best) = candidate(view, limits, live, recorded) {
        return ReplicationStep::Elect {
            pod: best.name.to_owned(),
            lost: recorded.is_some(),
        };
    }
    if recorded.is_none()
        && let Some(first) = live.iter().find(|p| p.ordinal == 0 && p.probe.is_some())
    {
        return ReplicationStep::Elect {
            pod: first.name.to_owned(),
            lost: false,
        };
    }
    ReplicationStep::Wait(ReplicationWait::NoCandidate)
}

/// A restart of a replicated instance: replicas first, one at a time, each only once every
/// replica is linked and caught up; then one switchover to a replaced replica; then the old
/// primary, now a replica.
fn next_replacement(
    view: &ReplicationView,
    limits: &ReplicationLimits,
    live: &[&ReplicaPod],
    primary: &ReplicaPod,
    primary_ip: &str,
    leaving: bool,
) -> ReplicationStep {
    // Every pod the spec asks for must be there: a replaced pod is gone from the cache for a
    // moment before the StatefulSet controller creates it again, and the pods left would look
    // like a finished round of replacements.
    let present = live.iter().filter(|p| p.ordinal < view.replicas).count();
    let wanted = usize::try_from(view.replicas).unwrap_or(0);
    if live.len() < view.pods.len() || present < wanted || live.iter().any(|p| !p.ready) {
        return ReplicationStep::Wait(ReplicationWait::Pods);
    }
    let behind = |p: &ReplicaPod| lag(p, primary).is_none_or(|l| l > limits.max_lag_bytes);
    let replicas: Vec<&&ReplicaPod> = live.iter().filter(|p| p.name != primary.name).collect();
    if replicas
        .iter()
        .any(|p| !synced_to(p, primary_ip) || behind(p))
    {
        return ReplicationStep::Wait(ReplicationWait::Sync);
    }
    if view.rolling
        && let Some(old) = replicas
            .iter()
            .filter(|p| !p.up_to_date)
            .max_by_key(|p| p.ordinal)
    {
        return replace(view, old);
    }
    if (view.rolling && !primary.up_to_date) || leaving {
        if view.switchover_halted {
            return ReplicationStep::Wait(ReplicationWait::Halted);
        }
        let target = replicas
            .iter()
            .filter(|p| p.up_to_date && p.ordinal < view.replicas)
            .max_by_key(|p| (p.probe.map_or(0, |r| r.offset), -p.ordinal));
        if let Some(to) = target {
            return ReplicationStep::BeginSwitchover {
                from: primary.name.to_owned(),
                to: to.name.to_owned(),
            };
        }
    }
    ReplicationStep::Wait(ReplicationWait::Pods)
}

/// Replaces `pod`, once no Service clients write through lists it.
fn replace(view: &ReplicationView, pod: &ReplicaPod) -> ReplicationStep {
    let listed = pod
        .ip
        .is_some_and(|ip| view.listing.is_none_or(|l| l.anywhere(ip)));
    match listed {
        true => ReplicationStep::Wait(ReplicationWait::Delisting),
        false => ReplicationStep::ReplacePod {
            pod: pod.name.to_owned(),
        },
    }
}

#[cfg(test)]
#[path = "replication_tests.rs"]
pub(super) mod tests;
