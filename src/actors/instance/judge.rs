//! The first look of a step: the newest spec validated, and a valid config failing on the
//! pods (refused by Redis, never ready) found, each to be told once by the report.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use tracing::warn;

use super::observe::Observed;
use super::target::{self, Outcome, Rejection, Target};
use super::tls::TlsMemory;
use crate::auth::Access;
use crate::crd::RolloutRecord;
use crate::decide::{Crash, refusal_message, refusal_to_tell};
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
    pub recalled: Option<(Rejection, target::Recalled)>,
}

/// What judging a step works with: the actor's memory of specs and failures, which it
/// updates, what was told already, and how to ask the pods whether they are still loading.
pub(super) struct Judging<'a> {
    pub target: &'a mut Target,
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
    let violations = judging.target.accept(current);
    let told = judging.refused_generation;
    let generation = current.metadata.generation;
    let refused = (!violations.is_empty()
        && refusal_to_tell(current.status.as_ref(), generation, told))
    .then(|| refusal_message(&violations, judging.running_hash));
    if let Some(message) = &refused {
        warn!(generation, violations = %message, "config refused");
    }
    let record = current.status.as_ref().and_then(|s| s.rollout.as_ref());
    judging.target.note_unready(&seen.pods, record, clock);
    for pod in loading(&judging, &seen.pods, record, clock).await {
        judging.target.note_loading(&pod, clock);
    }
    judging.target.detect_rejection(&seen.pods, record, clock);
    let rejection = judging.target.take_fresh_rejection();
    if let Some((rejection, crash)) = &rejection {
        warn!(pod = %crash.pod, exit_code = crash.exit_code,
            hash = %rejection.hash, "Redis rejected the config");
    }
    let failure = judging.target.take_fresh_failure();
    if let Some((failure, outcome)) = &failure {
        let action = match outcome {
            Outcome::RolledBack => "RolledBack",
            Outcome::Halted => "Halted",
        };
        warn!(hash = %failure.hash, action, detail = %failure.message, "rollout failed");
    }
    let recalled = judging.target.recalled().filter(|_| record.is_some());
    Findings {
        refused,
        rejection,
        failure,
        resumed: record.cloned(),
        recalled: recalled.map(|(failure, reason)| (failure.clone(), reason)),
    }
}

/// The pods at their readiness deadline whose Redis is still loading its data (asked all at
/// once, 1 s each at most; a pod that does not answer is not loading).
async fn loading(
    judging: &Judging<'_>,
    pods: &[Arc<CachedPod>],
    record: Option<&RolloutRecord>,
    now: Instant,
) -> Vec<Arc<CachedPod>> {
    let due = judging.target.at_deadline(pods, record, now);
    let asked = futures::future::join_all(due.iter().map(|pod| async {
        let address = crate::live::pods::PodAddress {
            pod: pod.name_any(),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            tls: judging.tls.for_pod(pod),
        };
        let login = judging.access.login.as_ref();
        crate::live::pods::loading(&address, login).await
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
