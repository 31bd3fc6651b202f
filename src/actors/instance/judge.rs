//! The first look of a step: the newest spec validated, and a valid config failing on the
//! pods (refused by Redis, never ready) found, each to be told once by the report.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use tracing::warn;

use super::observe::Observed;
use super::tls::TlsMemory;
use crate::auth::Access;
use crate::crd::RolloutRecord;
use crate::decide::{
    Crash, Outcome, PodFindings, Recalled, Rejection, SpecMemory, refusal_message, refusal_to_tell,
};
use crate::resources::CachedPod;

/// What the spec and the pods were found to hold this step, each to be told once.
#[derive(Default)]
pub(super) struct Findings {
    /// The newest spec fails validation, not told yet: what a person reads.
    pub refused: Option<String>,
    /// Redis refused the newest valid config.
    pub rejection: Option<(Rejection, Crash)>,
    /// A restart's pod never became ready.
    pub failure: Option<(Rejection, Outcome)>,
    /// The restart in flight, whose Events are told again unless told already (see
    /// `report::retell`).
    pub resumed: Option<RolloutRecord>,
    /// With it, the failure recalled from status and how its finder told it.
    pub recalled: Option<(Rejection, Recalled)>,
}

/// What judging a step works with: the actor's memory of specs and failures, which it
/// updates, what was told already, and how to ask the pods whether they are still loading.
pub(super) struct Judging<'a> {
    pub specs: &'a mut SpecMemory,
    /// The generation whose refusal was told.
    pub refused_generation: Option<i64>,
    /// The config hash the pods run, as last seen, for the refusal's message.
    pub running_hash: Option<&'a str>,
    pub tls: &'a TlsMemory,
    pub access: &'a Access,
}

/// Validates the newest spec and looks for a valid config failing on the pods; what is found
/// for the first time is logged as it is found, and returned, to be told by the report.
pub(super) async fn judge(judging: Judging<'_>, seen: &Observed, clock: Instant) -> Findings {
    let current = &seen.instance;
    let violations = judging.specs.accept(current);
    let told = judging.refused_generation;
    let generation = current.metadata.generation;
    let refused = (!violations.is_empty()
        && refusal_to_tell(current.status.as_ref(), generation, told))
    .then(|| refusal_message(&violations, judging.running_hash));
    if let Some(message) = &refused {
        warn!(generation, violations = %message, "config refused");
    }
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    let due = judging.specs.due_for_loading(&seen.pods, record, clock);
    let loading = loading(judging.tls, judging.access, due).await;
    let loading: Vec<&CachedPod> = loading.iter().map(|pod| pod.as_ref()).collect();
    let PodFindings {
        rejection,
        failure,
        recalled,
    } = judging
        .specs
        .judge_pods(&seen.pods, record, &loading, clock);
    if let Some((rejection, crash)) = &rejection {
        warn!(pod = %crash.pod, exit_code = crash.exit_code,
            hash = %rejection.hash, "Redis rejected the config");
    }
    if let Some((failure, outcome)) = &failure {
        warn!(hash = %failure.hash, action = outcome.action(), detail = %failure.message, "rollout failed");
    }
    Findings {
        refused,
        rejection,
        failure,
        resumed: record.cloned(),
        recalled,
    }
}

/// The pods of `due` whose Redis is still loading its data (asked all at once, 1 s each at
/// most; a pod that does not answer is not loading).
async fn loading(
    tls: &TlsMemory,
    access: &Access,
    due: Vec<&Arc<CachedPod>>,
) -> Vec<Arc<CachedPod>> {
    let asked = futures::future::join_all(due.iter().map(|pod| async {
        let address = crate::live::pods::PodAddress {
            pod: pod.name_any(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            tls: tls.for_pod(pod),
        };
        crate::live::pods::loading(&address, access.login.as_ref()).await
    }))
    .await;
    due.into_iter()
        .zip(asked)
        .filter(|(pod, answer)| {
            let loading = matches!(answer, Ok(true));
            if loading {
                tracing::info!(pod = %pod.name_any(), "pod still loading its data: not counted as never ready");
            }
            loading
        })
        .map(|(pod, _)| pod.clone())
        .collect()
}
