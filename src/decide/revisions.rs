//! The revision ConfigMaps: which one a template write mounts, when it must be written first,
//! and when one that nothing references any more is collected.
//!
//! A pod reads the ConfigMap its template revision names, so a pod of an older revision that
//! restarts mid-rollout starts on its own config. The order is what makes that hold: a
//! revision's ConfigMap is written before any template that names it, and deleted only once
//! the instance is at rest and neither the template nor any pod (terminating ones included)
//! names it. A pod started before revisions existed mounts the shared `<name>-config`; a write
//! that must not restart it keeps that mount, so an instance moves to revisions with its next
//! change of config hash, never because of the upgrade.

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::{Decision, Desired, Snapshot, pod_config_hash};
use crate::crd::RolloutRecord;
use crate::resources::{CachedConfigMap, CachedPod, CachedStatefulSet, config_map_of};

/// The config hash and restart marker a created StatefulSet carries: the recorded restart's;
/// with none, those of the pods a deleted StatefulSet left (pod 0's first), so the new one
/// adopts them as they run; with neither, the desired hash.
pub fn created_template<'a>(
    record: Option<&'a RolloutRecord>,
    pods: &'a [Arc<CachedPod>],
    want: &Desired<'a>,
) -> (&'a str, Option<&'a str>) {
    match (record, super::adopted_template(pods)) {
        (Some(r), _) => (r.config_hash.as_str(), r.restarted_at.as_deref()),
        (None, Some(adopted)) => adopted,
        (None, None) => (want.hash, None),
    }
}

/// The ConfigMap a template carrying `hash` mounts: the one the running pods on `hash` mount
/// when it is the shared `<name>-config` or that hash's revision, so that they are adopted or
/// rolled back to unchanged; otherwise the revision's own.
pub fn mount_for(want: &Desired, pods: &[Arc<CachedPod>], hash: &str) -> String {
    let revision = crate::resources::revision_config_map_name(instance_name(want), hash, want.live);
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| pod_config_hash(pod) == Some(hash))
        .filter_map(|pod| pod.config_map.as_deref())
        .find(|mount| *mount == want.shared || *mount == revision)
        .map_or(revision.clone(), str::to_owned)
}

/// The instance's name, which its StatefulSet carries.
pub(super) fn instance_name<'a>(want: &Desired<'a>) -> &'a str {
    want.statefulset
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
}

/// What the desired revision's ConfigMap needs before a template may name it (or an instance
/// at rest on it is left alone): written when missing or (under `Live`, after a live change)
/// different; deleted first when someone replaced the immutable one with other content.
/// `revisions` are the instance's revision ConfigMaps as the caches show them.
pub fn revision_fix(want: &Desired, revisions: &[Arc<CachedConfigMap>]) -> Option<Decision> {
    let desired = revisions
        .iter()
        .find(|cm| cm.metadata.name.as_deref() == Some(want.revision));
    match desired {
        None => Some(Decision::WriteRevision),
        Some(cm) if cm.config_text.as_deref() == Some(want.config_text) => None,
        Some(cm) if cm.immutable == Some(true) => {
            Some(Decision::DeleteRevisions(vec![cm.name_any()]))
        }
        Some(_) => Some(Decision::WriteRevision),
    }
}

/// Whether the next template write names the desired revision's ConfigMap: the write of the
/// restart `record` (the desired one when none is recorded yet), or the creation of a missing
/// StatefulSet.
pub fn next_template_names_revision(
    want: &Desired,
    statefulset: Option<&CachedStatefulSet>,
    record: Option<&RolloutRecord>,
    pods: &[Arc<CachedPod>],
) -> bool {
    let hash = match statefulset {
        Some(_) => record.map_or(want.hash, |r| r.config_hash.as_str()),
        None => created_template(record, pods, want).0,
    };
    hash == want.hash && mount_for(want, pods, hash) == want.revision
}

/// `step`, or what must come before it: the desired revision's ConfigMap before a template
/// names it, and, at rest, the collection of revision ConfigMaps nothing names.
pub fn before(step: Decision, want: &Desired, seen: &Snapshot) -> Decision {
    let fix = match &step {
        Decision::RollOut | Decision::CreateStatefulSet => {
            next_template_names_revision(want, seen.statefulset, seen.rollout, seen.pods)
                .then(|| revision_fix(want, seen.revisions))
        }
        Decision::RepairStatefulSet | Decision::Idle => seen
            .statefulset
            .is_some_and(|sts| config_map_of(sts) == Some(want.revision))
            .then(|| revision_fix(want, seen.revisions)),
        _ => None,
    };
    if let Some(first) = fix.flatten() {
        return first;
    }
    if step == Decision::Idle {
        let stale = unreferenced(want, seen);
        if !stale.is_empty() {
            return Decision::DeleteRevisions(stale);
        }
    }
    step
}

/// Revision ConfigMaps that neither the template nor any pod names, nor the desired revision.
/// Called at rest only: no restart recorded and the StatefulSet's rollout complete.
fn unreferenced(want: &Desired, seen: &Snapshot) -> Vec<String> {
    let mut named: HashSet<&str> = seen
        .pods
        .iter()
        .filter_map(|p| p.config_map.as_deref())
        .collect();
    named.extend(seen.statefulset.and_then(config_map_of));
    named.insert(want.revision);
    seen.revisions
        .iter()
        .filter(|cm| cm.metadata.deletion_timestamp.is_none())
        .map(|cm| cm.name_any())
        .filter(|name| !named.contains(name.as_str()))
        .collect()
}
