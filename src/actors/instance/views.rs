//! What a step's decision is made on beside the caches: the actor's memory recalled for it,
//! the Secrets read, and the views built from them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;

use super::observe::Observed;
use super::plan::Plan;
use super::step::Run;
use super::{InstanceState, auth, live, network, tls};
use crate::crd::ConfigUpdate;
use crate::decide::{ChecksView, Deadlines, Desired, Facts, ServedView, Snapshot, paused};
use crate::kube_io;

/// What the actor's memory adds to the caches for this step's decision. Owned: performing the
/// decision changes the memory it came from.
pub(super) struct Remembered {
    /// The revision ConfigMap the plan's pods mount, and the spec's shared one.
    pub(super) revision: String,
    pub(super) shared: String,
    /// The config a rollout halted on, and the one Redis refused.
    pub(super) halted_hash: Option<String>,
    pub(super) rejected_hash: Option<String>,
    /// How much longer a following restart waits for edits to settle.
    pub(super) settle_left: Option<Duration>,
    /// Redis refused the plan's live directives.
    pub(super) live_refused: bool,
    /// A pod of the restart in flight is unready past its readiness deadline.
    pub(super) stalled: bool,
    /// When the first unready pod of the restart in flight reaches that deadline.
    pub(super) pod_deadline: Duration,
    /// The StatefulSet's generation after the operator's last write of it.
    pub(super) written_generation: Option<i64>,
    /// The actor deleted the headless `<name>` to create it as ClusterIP.
    pub(super) service_migrated: bool,
}

/// What a step's decision compares the caches with beside the plan's objects, and the copies
/// of the memory it reads: built once per step and owned here, as the decision borrows them.
pub(super) struct Wanted {
    /// The NetworkPolicy from the current spec, even when it is invalid: no pod runs without it.
    pub(super) policy: Option<NetworkPolicy>,
    /// The actor's last write of the NetworkPolicy, until the cache shows it.
    pub(super) policy_written: Option<network::PolicyWrite>,
    pub(super) deadlines: Deadlines,
    /// The TLS memory the checks read.
    pub(super) served: tls::Served,
}

impl Wanted {
    pub(super) fn of(state: &InstanceState, seen: &Observed) -> Self {
        Wanted {
            policy: network::desired(&seen.instance),
            policy_written: state.written.network_policy.clone(),
            deadlines: Deadlines {
                progress: state.args.timings.progress_deadline,
            },
            served: tls::Served::of(&state.tls),
        }
    }
}

/// What a step with a spec to drive reads beyond the caches, and the memory it recalls.
pub(super) struct Reads {
    /// The Secrets of the credentials; `None` with `spec.auth` off.
    pub(super) secrets: Option<auth::Secrets>,
    pub(super) recalled: Remembered,
}

impl Reads {
    /// Observes what the caches do not hold: the TLS Secret's material (read when it changed)
    /// and the Secrets of the credentials; and brings the memory the decision reads up to the
    /// plan's spec.
    pub(super) async fn of(
        state: &mut InstanceState,
        seen: &Observed,
        plan: &Plan,
        at: Instant,
    ) -> Result<Self, kube_io::Error> {
        tls::read_secret(&state.args, &mut state.tls, plan).await;
        let secrets = auth::read(&state.args, &mut state.auth, &plan.instance, seen).await?;
        let recalled = recall(state, seen, plan, at);
        Ok(Reads { secrets, recalled })
    }
}

/// What a step's decision is made on beside the caches.
// One lives on a step's stack while it runs: boxing the larger variant would only add an
// allocation to every step.
#[allow(clippy::large_enum_variant)]
pub(super) enum Views<'a> {
    /// A spec to drive to, seen through the step's reads.
    Planned(PlannedViews<'a>),
    /// No spec known to be safe to run: the Services of the current spec (`<name>` and the
    /// headless one), which depend on no directive, are all it builds.
    Unplanned(Box<(Service, Service)>),
}

impl<'a> Views<'a> {
    pub(super) fn of(
        state: &InstanceState,
        run: Run<'a>,
        reads: Option<&'a Reads>,
        wanted: &'a Wanted,
    ) -> Self {
        let Run {
            seen, plan, clocks, ..
        } = run;
        let Some((plan, reads)) = plan.zip(reads) else {
            let current = &seen.instance;
            let services = (
                crate::resources::service(current),
                crate::resources::headless_service(current),
            );
            return Views::Unplanned(Box::new(services));
        };
        let recalled = &reads.recalled;
        let served = wanted.served.view(plan, seen);
        Views::Planned(PlannedViews {
            want: desired(plan, recalled),
            snapshot: snapshot(seen, plan, recalled, clocks.now),
            facts: Facts {
                has_run: crate::status::has_run(&seen.instance),
                written_generation: recalled.written_generation,
                rejected_hash: recalled.rejected_hash.as_deref(),
                service_migrated: recalled.service_migrated,
            },
            checks: checks_view(state, seen, plan, recalled, served),
            served: &wanted.served,
        })
    }

    pub(super) fn planned(&self) -> Option<&PlannedViews<'a>> {
        match self {
            Views::Planned(views) => Some(views),
            Views::Unplanned(_) => None,
        }
    }
}

/// The views a spec to drive is decided on, built from the step's reads.
pub(super) struct PlannedViews<'a> {
    pub(super) want: Desired<'a>,
    pub(super) snapshot: Snapshot<'a>,
    /// The facts behind the act's form and reasons.
    pub(super) facts: Facts<'a>,
    pub(super) checks: ChecksView<'a>,
    /// The TLS memory the checks read (what they read of it is in `checks`).
    pub(super) served: &'a tls::Served,
}

/// Brings the memory the decision reads up to the current spec and takes what it needs; `at`
/// is the actor's clock, for how long pods have been unready.
pub(super) fn recall(
    state: &mut InstanceState,
    seen: &Observed,
    plan: &Plan,
    at: Instant,
) -> Remembered {
    let current = &seen.instance;
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    state.live.recall(current, plan);
    state
        .specs
        .forget_halt(record.map(|r| r.config_hash.as_str()));
    Remembered {
        revision: crate::resources::revision_of(&plan.instance, &plan.template_hash),
        shared: crate::resources::config_map_name(&plan.instance),
        halted_hash: state.specs.halted().map(|h| h.hash.clone()),
        rejected_hash: state.specs.rejection().map(|r| r.hash.clone()),
        settle_left: state.clock.settle_left(state.args.timings.settle),
        live_refused: state.live.refuses(plan),
        stalled: !state.specs.at_deadline(&seen.pods, record, at).is_empty(),
        pod_deadline: record.map_or(Duration::MAX, |r| {
            let deadline = plan.instance.spec.rollout.progress_deadline_seconds;
            let deadline = Duration::from_secs(deadline.max(0).unsigned_abs().into());
            crate::decide::pod_deadline_wake(&seen.pods, r, deadline, |p| {
                state.specs.unready_for(p, at)
            })
        }),
        written_generation: state
            .applied
            .statefulset_generation
            .or_else(|| current.status.as_ref()?.stateful_set_generation),
        service_migrated: state.applied.service_migrated,
    }
}

/// What the plan's spec builds.
fn desired<'a>(plan: &'a Plan, recalled: &'a Remembered) -> Desired<'a> {
    Desired {
        config_text: &plan.rendered.text,
        hash: &plan.template_hash,
        strategy: plan.instance.spec.restart_strategy,
        statefulset: &plan.statefulset,
        service: &plan.service,
        headless: &plan.headless,
        live: plan.instance.spec.config_update == ConfigUpdate::Live,
        revision: &recalled.revision,
        shared: &recalled.shared,
    }
}

/// The caches and the recalled memory, as the decision reads them.
fn snapshot<'a>(
    seen: &'a Observed,
    plan: &Plan,
    recalled: &'a Remembered,
    now: Timestamp,
) -> Snapshot<'a> {
    let current = &seen.instance;
    let status = current.status.as_ref();
    let replicated = crate::resources::replicated(&plan.instance);
    let halted_hash = recalled.halted_hash.as_deref();
    Snapshot {
        config_text: seen.config_text.as_deref(),
        statefulset: seen.statefulset.as_deref(),
        service: seen.service.as_deref(),
        headless: seen.headless.as_deref(),
        pods: &seen.pods,
        rollout: status.and_then(|s| s.rollout.as_ref()),
        settling: recalled.settle_left.is_some(),
        now,
        live_refused: recalled.live_refused,
        paused: paused(current),
        halted: halted_hash == Some(plan.template_hash.as_str()),
        failed_hash: recalled.rejected_hash.as_deref().or(halted_hash),
        stalled: recalled.stalled,
        revisions: &seen.revisions,
        primary: replicated
            .then(|| status?.replication.as_ref()?.primary.as_deref())
            .flatten(),
    }
}

/// What the checks at rest read of the memory (see [`crate::decide::checks`]).
fn checks_view<'a>(
    state: &InstanceState,
    seen: &Observed,
    plan: &Plan,
    recalled: &Remembered,
    served: ServedView<'a>,
) -> ChecksView<'a> {
    ChecksView {
        has_live: live::has_live(plan),
        live_every: state.args.timings.live_check,
        live_checked_ago: state.live.checked_at.map(|at| at.elapsed()),
        served,
        told_overdue: state.reported.overdue,
        ran_unconverted: crate::resources::unconverted(&seen.instance),
        replicated: crate::resources::replicated(&plan.instance),
        told_unconverted: state.reported.unconverted,
        pod_deadline: recalled.pod_deadline,
        settle_left: recalled.settle_left,
    }
}
