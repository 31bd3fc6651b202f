//! What the actor does with each round of its prober: remembers it, with the primary's
//! silence and the replicas' lag, counts it, and says whether a step is to decide on it.

use std::time::Instant;

use super::super::InstanceState;
use super::ReplicationMemory;
use crate::actors::metrics::MetricsMsg;
use crate::crd::ReplicationStatus;
use crate::decide::probes::{self, PodProbe};
use crate::replication::Role;

/// A round from the prober: remembered, with how long the recorded primary has been silent
/// and each replica's lag. `true`: a step is to decide on it (it changes what a decision
/// sees, a step waits for it, or the primary is silent and its silence grows).
pub(in super::super) fn probed(state: &mut InstanceState, round: Vec<PodProbe>) -> bool {
    // Sent before the prober was stopped: not to be decided on by a prober started later.
    if !state.replication.probing() {
        return false;
    }
    let Some(instance) = super::super::observe::cached_instance(state) else {
        return false;
    };
    let status = instance
        .status
        .as_ref()
        .and_then(|s| s.replication.clone())
        .unwrap_or_default();
    let bound = instance.spec.replication.max_lag_bytes;
    let memory = &mut state.replication;
    let previous = std::mem::take(&mut memory.probes);
    remember(memory, &status, &round);
    let silent = memory.primary_silent_since.is_some();
    let starts = probes::starts_step(&previous, &round, bound, memory.awaiting_probe, silent);
    memory.probes = round;
    send_metrics(state);
    starts
}

/// The primaries found and each replica's lag, for metrics.
fn send_metrics(state: &InstanceState) {
    let memory = &state.replication;
    let primaries = memory
        .probes
        .iter()
        .filter(|p| p.answer.as_ref().is_some_and(|r| r.role == Role::Primary))
        .count();
    let _ = state.args.metrics.send_message(MetricsMsg::Replication {
        key: state.args.key.clone(),
        primaries: u32::try_from(primaries).unwrap_or(u32::MAX),
        lags: memory
            .last_lag
            .iter()
            .map(|(pod, lag)| (pod.clone(), *lag))
            .collect(),
    });
}

/// Notes when the recorded primary was first seen not answering (when the round came, as
/// when the step probed it itself) and how far behind each replica is.
fn remember(memory: &mut ReplicationMemory, status: &ReplicationStatus, round: &[PodProbe]) {
    let Some(name) = status.primary.as_deref() else {
        memory.primary_silent_since = None;
        return;
    };
    let primary = round.iter().find(|p| p.pod == name);
    match primary.and_then(|p| p.answer.as_ref()) {
        Some(probe) if probe.role == Role::Primary => {
            memory.primary_silent_since = None;
            memory.last_lag = round
                .iter()
                .filter_map(|p| {
                    let r = p.answer.as_ref()?;
                    (r.role == Role::Replica && r.replid == probe.replid)
                        .then(|| (p.pod.clone(), (probe.offset - r.offset).max(0)))
                })
                .collect();
        }
        _ => {
            let fresh = memory
                .primary_silent_since
                .as_ref()
                .is_none_or(|(n, _)| n != name);
            if fresh {
                memory.primary_silent_since = Some((name.to_owned(), Instant::now()));
            }
        }
    }
}
