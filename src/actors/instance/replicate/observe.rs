//! What a replicated instance's step observes: how to reach each pod, what each pod's Redis said,
//! the role Services as the cache shows them, and (only when a decision needs it) what the
//! endpoints of the Services clients write through list.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use super::super::InstanceArgs;
use super::super::observe::Observed;
use super::super::tls::TlsMemory;
use super::prober::Target;
use crate::decide::is_ready;
use crate::decide::replication::ReplicaPod;
use crate::decide::routing::{self, Listing};
use crate::kube_io;
use crate::live::pods::PodAddress;
use crate::replication::PodReplication;
use crate::resources::{
    CachedPod, CachedService, REVISION_LABEL, ROLE_LABEL, legacy_primary_service_name,
};
use crate::tls::client::ClientTls;

/// How to reach each pod of the step: the pods as the cache shows them, and each one's TLS.
pub(super) struct Reach<'a> {
    pub(super) pods: Vec<&'a Arc<CachedPod>>,
    tls: BTreeMap<String, Option<Arc<ClientTls>>>,
}

impl<'a> Reach<'a> {
    pub(super) fn of(memory: &TlsMemory, seen: &'a Observed) -> Self {
        let pods: Vec<&Arc<CachedPod>> = seen.pods.iter().collect();
        let tls = pods
            .iter()
            .map(|p| (p.name_any(), memory.for_pod(p)))
            .collect();
        Reach { pods, tls }
    }

    /// The pod named `name`, if the cache shows it.
    pub(super) fn pod(&self, name: &str) -> Option<&'a Arc<CachedPod>> {
        self.pods.iter().find(|p| p.name_any() == name).copied()
    }

    /// Where `name`'s Redis listens.
    pub(super) fn address(&self, name: &str) -> PodAddress {
        PodAddress {
            pod: name.to_owned(),
            ip: self.pod(name).and_then(|p| pod_ip(p)).map(str::to_owned),
            tls: self.tls.get(name).cloned().flatten(),
        }
    }

    /// The pods to probe, as the prober reaches them.
    pub(super) fn targets(&self) -> Vec<Target> {
        self.pods
            .iter()
            .map(|pod| Target {
                address: self.address(&pod.name_any()),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// The pods as the replication decision reads them, with each one's usable answer (in the
/// order of the snapshot's pods; see [`crate::decide::probes::usable`]).
pub(super) fn views<'a>(
    seen: &'a Observed,
    answers: &'a [Option<Option<PodReplication>>],
) -> Vec<ReplicaPod<'a>> {
    let update_revision = seen
        .statefulset
        .as_deref()
        .and_then(|sts| sts.status.as_ref()?.update_revision.as_ref());
    seen.pods
        .iter()
        .zip(answers)
        .map(|(pod, answer)| ReplicaPod {
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            ordinal: ordinal(pod),
            ip: pod_ip(pod),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            ready: is_ready(pod),
            up_to_date: update_revision.is_some()
                && pod.labels.get(REVISION_LABEL) == update_revision.map(String::as_str),
            role_label: pod.labels.get(ROLE_LABEL),
            probe: answer.as_ref().and_then(Option::as_ref),
            probed: answer.is_some(),
        })
        .collect()
}

/// `<name>-primary` of earlier versions, as the cache shows it.
pub(super) fn legacy_service(args: &InstanceArgs, seen: &Observed) -> Option<Arc<CachedService>> {
    cached_service(args, &legacy_primary_service_name(&seen.instance))
}

/// A Service of the instance's namespace, as the cache shows it.
pub(super) fn cached_service(args: &InstanceArgs, name: &str) -> Option<Arc<CachedService>> {
    args.stores.services.get(&args.key.namespace, name)
}

/// The Services through which clients write to the primary (see
/// [`crate::decide::routing::write_services`]).
fn write_services(args: &InstanceArgs, seen: &Observed) -> Vec<String> {
    let legacy = legacy_service(args, seen);
    routing::write_services(
        &args.key.name,
        seen.service.as_deref(),
        &legacy_primary_service_name(&seen.instance),
        legacy.as_deref(),
    )
}

/// Reads the ready endpoints of every Service clients write through (EndpointSlices are not
/// cached: read from the API server, only when the decision needs them).
pub(super) async fn listing(
    args: &InstanceArgs,
    seen: &Observed,
) -> Result<Listing, kube_io::Error> {
    let mut services = Vec::new();
    for name in write_services(args, seen) {
        services.push(args.api.ready_endpoints(&name).await?);
    }
    Ok(Listing { services })
}

pub(super) fn pod_ip(pod: &CachedPod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
}

fn ordinal(pod: &CachedPod) -> i32 {
    pod.metadata
        .name
        .as_deref()
        .and_then(|n| n.rsplit_once('-'))
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or(-1)
}
