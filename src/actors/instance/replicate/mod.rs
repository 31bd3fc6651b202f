//! The replication part of a replicated instance's step. A prober outside the step probes the
//! pods ([`prober`]); the step's observe reads its latest usable round, the role Services, and
//! (only when the decision needs them) the endpoints of the Services clients write through;
//! `decide::step` decides replication with the rest of the step; [`perform()`] carries it out
//! in the step's perform phase and leaves its status record to the step's report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use ractor::ActorRef;

mod observation;
mod observe;
mod perform;
mod prober;
mod rounds;
mod routing;

pub(super) use observation::{Observation, Parts, observe};
pub(super) use perform::Recorded;
pub(super) use rounds::probed;

use observe::Reach;

use super::observe::Observed;
use super::observe::Written;
use super::tls::TlsMemory;
use super::{InstanceArgs, InstanceMsg};
use crate::auth::Access;
use crate::decide::Replication;
use crate::decide::probes::PodProbe;
use crate::decide::replication_act::{BUSY_PROBE, ReplicationPlan};
use crate::decide::routing::{RoleServicesAct, RoutingMemory};
use crate::kube_io;

/// What the actor remembers of replication between steps; the decisions that must survive a
/// leader change are in status instead.
#[derive(Default)]
pub struct ReplicationMemory {
    /// Since when the recorded primary has not answered, by the probes' clock.
    primary_silent_since: Option<(String, Instant)>,
    /// The switchover target whose `FAILOVER` this process sent.
    switchover_sent: Option<String>,
    /// Each replica's lag at the last probe that saw the primary.
    last_lag: BTreeMap<String, i64>,
    /// The switchover target on its way into the primary's Services.
    routing: Option<RoutingMemory>,
    /// Role Services this actor applied, until the cache shows them.
    services: std::collections::HashMap<String, std::sync::Arc<crate::resources::CachedService>>,
    /// The prober's latest round.
    probes: Vec<PodProbe>,
    /// When this actor's last command changing a pod's role was over: probes sent before then
    /// are not decided on.
    role_written: Option<Instant>,
    /// The last step waited for a probe: the next round starts a step whatever it shows.
    awaiting_probe: bool,
    /// What the last step asks of the prober; `None`: no prober (not replicated, or gone).
    wanted: Option<prober::Ask>,
    /// The prober, while the instance is replicated.
    prober: Option<prober::Prober>,
}

impl ReplicationMemory {
    /// Remembers nothing of the pods' roles.
    pub fn is_blank(&self) -> bool {
        self.primary_silent_since.is_none()
            && self.switchover_sent.is_none()
            && self.last_lag.is_empty()
            && self.routing.is_none()
            && self.probes.is_empty()
    }

    /// Holds role Services of its own writing that the cache does not show yet.
    pub fn holds_unseen_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// Forgets the `FAILOVER` this process sent, once status records the switchover's end.
    pub fn forget_switchover(&mut self) {
        self.switchover_sent = None;
    }

    /// A prober runs.
    fn probing(&self) -> bool {
        self.prober.is_some()
    }

    /// Ends the prober (the actor stops, or the instance is no longer replicated) and forgets
    /// its last round: a prober started again later is not to be preceded by old answers.
    pub fn stop_prober(&mut self) {
        self.wanted = None;
        self.prober = None;
        self.probes.clear();
    }
}

/// What the replication phase of a step reads and changes of the actor's memory.
pub(super) struct Replicating<'a> {
    pub args: &'a InstanceArgs,
    pub memory: &'a mut ReplicationMemory,
    /// The pods a replacement deleted, for the step's read of its own writes.
    pub written: &'a mut Written,
    /// How to reach and log in to the pods.
    pub tls: &'a TlsMemory,
    pub access: &'a Access,
}

/// Starts, updates or ends the prober as the last step asked: a task per replicated instance,
/// owned by its actor (dropped with it).
pub(super) fn sync_prober(myself: &ActorRef<InstanceMsg>, memory: &mut ReplicationMemory) {
    match (memory.wanted.clone(), &memory.prober) {
        (None, _) => memory.stop_prober(),
        (Some(ask), Some(prober)) => prober.ask(ask),
        (Some(ask), None) => memory.prober = Some(prober::Prober::start(myself.clone(), ask)),
    }
}

/// Tells the prober which pods the step saw and how to reach them, once the step's decision
/// has brought the credentials and TLS memory up to date; how often it probes stays as the
/// last replication step set it.
pub(super) fn ask_prober(state: Replicating<'_>, seen: &Observed) {
    let last = state.memory.wanted.as_ref();
    state.memory.wanted = Some(prober::Ask {
        pods: Reach::of(state.tls, seen).targets(),
        access: state.access.clone(),
        every: last.map_or(BUSY_PROBE, |a| a.every),
        now: last.map_or(0, |a| a.now),
    });
}

/// The replication decided, apart from the step's views: a role Service write names the
/// Service the observation holds.
pub(super) enum Decided {
    /// Delete the old `<name>-primary`.
    RetireLegacy,
    /// Apply `<name>-replicas` over the one it was decided over.
    ApplyReplicas {
        over: Option<Box<crate::resources::CachedService>>,
    },
    /// The pods' step.
    Pods {
        forget_written: bool,
        plan: Box<ReplicationPlan>,
    },
}

impl From<Replication<'_>> for Decided {
    fn from(decided: Replication<'_>) -> Self {
        match decided {
            Replication::RetireLegacy(_) => Decided::RetireLegacy,
            Replication::ApplyReplicas { over, .. } => Decided::ApplyReplicas {
                over: over.map(|svc| Box::new(svc.clone())),
            },
            Replication::Pods {
                forget_written,
                plan,
            } => Decided::Pods {
                forget_written,
                plan,
            },
        }
    }
}

/// Performs the replication decided. Its status record goes into `recorded`: the report
/// writes it with the rest of status, in the step's one status write. `Ok(None)`: it wrote;
/// `Ok(Some(d))`: look again in `d`.
pub(super) async fn perform(
    state: &mut Replicating<'_>,
    turn: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    seen: &Observed,
    observation: &Observation,
    decided: Decided,
    recorded: &mut Recorded,
) -> Result<Option<Duration>, kube_io::Error> {
    let replicas_name = observation.replicas.name_any();
    let memory = &mut *state.memory;
    let services = match &decided {
        Decided::RetireLegacy => observation
            .legacy
            .as_deref()
            .map(RoleServicesAct::RetireLegacy),
        Decided::ApplyReplicas { over } => Some(RoleServicesAct::ApplyReplicas {
            desired: &observation.replicas,
            over: over.as_deref(),
        }),
        Decided::Pods { .. } => None,
    };
    if let Some(act) = services {
        let api = &state.args.api;
        let wrote = routing::perform_services(api, memory, act, &replicas_name).await?;
        return Ok(wrote.unwrap_or(Some(Duration::MAX)));
    }
    let Decided::Pods {
        forget_written,
        plan: planned,
    } = decided
    else {
        return Ok(Some(Duration::MAX));
    };
    if forget_written {
        memory.services.remove(&replicas_name);
    }
    let ReplicationPlan { step, act } = *planned;
    tracing::debug!(step = step.name(), ?step, "replication step");
    let probing = act.probing();
    memory.awaiting_probe = probing.at_once;
    // The step's `ask_prober`, after this, names the pods and the login; a first step asks
    // here before it has.
    let ask = memory.wanted.get_or_insert_with(|| prober::Ask {
        pods: Vec::new(),
        access: state.access.clone(),
        every: BUSY_PROBE,
        now: 0,
    });
    ask.every = probing.every;
    if probing.at_once {
        ask.now += 1;
    }
    let reach = Reach::of(state.tls, seen);
    let views = observation.views(seen);
    let done = perform::Done {
        reach: &reach,
        views: &views,
        switchover_timeout: observation.limits.switchover_timeout,
    };
    let role_written = act.role_written;
    let performed = perform::perform(state, turn, &done, step, act, recorded).await;
    if role_written {
        // Once the command is over, whether it went through or not: a probe sent before
        // then may not show it. The round asked for at once is sent after the step.
        state.memory.role_written = Some(Instant::now());
    }
    performed
}
