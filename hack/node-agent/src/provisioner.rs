//! Dynamic provisioning for the local StorageClass: a directory-backed PersistentVolume per
//! claim, pre-bound to it; deleted with its directory once the claim is gone.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::informer;

/// Annotation by which the PV binder leaves deletion of our volumes to us.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The pre-StorageClass-field way of naming a class, still honoured by the binder.
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
const RESYNC: Duration = Duration::from_secs(5);
/// Volumes created at once.
const PARALLEL_PROVISIONS: usize = 16;

pub struct Provisioner {
    pub client: Client,
    pub recorder: Recorder,
    /// The StorageClass served.
    pub class: String,
    /// The provisioner name that class names.
    pub name: String,
    /// The node its volumes are pinned to; `None` leaves them usable on any node.
    pub node: Option<String>,
    /// `<state>/volumes`: one directory per PV.
    pub volumes_dir: PathBuf,
    /// Also bind the claim to its new volume, as the PV controller's binder would. At 10,000
    /// claims that binder, one claim at a time with three writes each, binds a few claims a
    /// second; here the binding writes run in parallel and the binder finds nothing to do.
    pub bind_claims: bool,
}

fn class_of(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| pvc.annotations().get(BETA_CLASS).map(String::as_str))
}

fn needs_volume(pvc: &PersistentVolumeClaim, class: &str) -> bool {
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let unbound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    pvc.metadata.deletion_timestamp.is_none() && pending && unbound && class_of(pvc) == Some(class)
}

/// The PV for a claim: same size, modes and class, pre-bound through `claimRef`, a host
/// directory pinned to `node` when there is one.
pub fn volume_for(
    pvc: &PersistentVolumeClaim,
    provisioner: &str,
    reclaim_policy: &str,
    node: Option<&str>,
    path: &Path,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{}", pvc.uid().unwrap_or_default())),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.into(),
                provisioner.into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: storage.map(|s| BTreeMap::from([("storage".into(), s)])),
            access_modes: Some(
                spec.access_modes
                    .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            ),
            storage_class_name: class_of(pvc).map(Into::into),
            persistent_volume_reclaim_policy: Some(reclaim_policy.into()),
            volume_mode: Some(spec.volume_mode.unwrap_or_else(|| "Filesystem".into())),
            host_path: Some(HostPathVolumeSource {
                path: path.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.namespace(),
                name: Some(pvc.name_any()),
                uid: pvc.uid(),
                ..ObjectReference::default()
            }),
            node_affinity: node.map(|node| VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// Ours, released by its claim, and meant to be deleted.
fn deletable(pv: &PersistentVolume, provisioner: &str) -> bool {
    let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(provisioner);
    let released = matches!(
        pv.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Released" | "Failed")
    );
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    ours && released && delete && pv.metadata.deletion_timestamp.is_none()
}

impl Provisioner {
    pub async fn run(self, shutdown: CancellationToken) {
        let (claims, claim_changes) = informer::cache(
            Api::<PersistentVolumeClaim>::all(self.client.clone()),
            watcher::Config::default(),
        );
        let (volumes, volume_changes) = informer::cache(
            Api::<PersistentVolume>::all(self.client.clone()),
            watcher::Config::default(),
        );
        let mut changes = informer::merge(vec![claim_changes, volume_changes]);
        let mut ticker = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = changes.next() => {}
                _ = ticker.tick() => {}
            }
            // One pass covers every change already queued: with thousands of claims a pass
            // per watch event would be quadratic.
            while let Some(Some(())) = changes.next().now_or_never() {}
            let existing: HashSet<String> =
                volumes.state().iter().map(|pv| pv.name_any()).collect();
            let wanted = claims.state().into_iter().filter_map(|pvc| {
                let name = format!("pvc-{}", pvc.uid().unwrap_or_default());
                (needs_volume(&pvc, &self.class) && !existing.contains(&name))
                    .then_some((pvc, name))
            });
            // Claims are independent: several in flight keep up with a StatefulSet controller
            // that creates thousands.
            let this = &self;
            futures::stream::iter(wanted)
                .for_each_concurrent(PARALLEL_PROVISIONS, |(pvc, name)| async move {
                    this.provision(&pvc, &name).await;
                })
                .await;
            for pv in volumes.state() {
                if deletable(&pv, &self.name) {
                    self.delete(&pv).await;
                }
            }
        }
    }

    async fn provision(&self, pvc: &PersistentVolumeClaim, name: &str) {
        let path = self.volumes_dir.join(name);
        if let Err(error) = std::fs::create_dir_all(&path) {
            tracing::warn!(path = %path.display(), %error, "failed to create volume directory");
            return;
        }
        let class = Api::<StorageClass>::all(self.client.clone())
            .get_opt(&self.class)
            .await;
        let reclaim = match class {
            Ok(Some(class)) => class.reclaim_policy.unwrap_or_else(|| "Delete".into()),
            Ok(None) => "Delete".into(),
            Err(error) => {
                tracing::warn!(%error, "failed to read the storage class");
                return;
            }
        };
        let pv = volume_for(pvc, &self.name, &reclaim, self.node.as_deref(), &path);
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
        {
            Ok(_) => {
                if self.bind_claims
                    && let Err(error) = self.bind(pvc, &pv).await
                {
                    // The PV controller binds it in its own time.
                    tracing::warn!(pv = %name, %error, "failed to bind the claim; left to the binder");
                }
                tracing::info!(pv = %name, claim = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()), "provisioned volume");
                let event = Event {
                    type_: EventType::Normal,
                    reason: "ProvisioningSucceeded".into(),
                    note: Some(format!("Successfully provisioned volume {name}")),
                    action: "Provisioning".into(),
                    secondary: None,
                };
                if let Err(error) = self.recorder.publish(&event, &pvc.object_ref(&())).await {
                    tracing::debug!(%error, "failed to publish event");
                }
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(error) => tracing::warn!(pv = %name, %error, "failed to create persistent volume"),
        }
    }

    /// What the binder writes for a claim and its pre-bound volume: the volume's phase, the
    /// claim's `volumeName` and bind annotations, and the claim's phase, capacity and modes.
    async fn bind(&self, pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> kube::Result<()> {
        let namespace = pvc.namespace().unwrap_or_default();
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &namespace);
        let volumes = Api::<PersistentVolume>::all(self.client.clone());
        let spec = pv.spec.clone().unwrap_or_default();
        let merge = PatchParams::default();
        volumes
            .patch_status(
                &pv.name_any(),
                &merge,
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        claims
            .patch(
                &pvc.name_any(),
                &merge,
                &Patch::Merge(json!({
                    "metadata": {
                        "annotations": {
                            "pv.kubernetes.io/bind-completed": "yes",
                            "pv.kubernetes.io/bound-by-controller": "yes",
                        },
                    },
                    "spec": {"volumeName": pv.name_any()},
                })),
            )
            .await?;
        claims
            .patch_status(
                &pvc.name_any(),
                &merge,
                &Patch::Merge(json!({"status": {
                    "phase": "Bound",
                    "accessModes": spec.access_modes,
                    "capacity": spec.capacity,
                }})),
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, pv: &PersistentVolume) {
        let name = pv.name_any();
        let path = pv
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .map(|h| PathBuf::from(&h.path));
        // Only ever delete inside our own volumes directory.
        if let Some(path) = path.filter(|p| p.starts_with(&self.volumes_dir))
            && let Err(error) = std::fs::remove_dir_all(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pv = %name, %error, "failed to delete volume directory");
            return;
        }
        match Api::<PersistentVolume>::all(self.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => tracing::info!(pv = %name, "deleted released volume"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(error) => tracing::warn!(pv = %name, %error, "failed to delete persistent volume"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeStatus, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-redis-0".into()),
                namespace: Some("ns".into()),
                uid: Some("1234".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("standard".into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn provisions_only_pending_claims_of_our_class() {
        assert!(needs_volume(&claim(), "standard"));
        assert!(!needs_volume(&claim(), "fast"));
        let mut bound = claim();
        bound.spec.as_mut().unwrap().volume_name = Some("pvc-1234".into());
        assert!(!needs_volume(&bound, "standard"));
    }

    #[test]
    fn the_volume_is_pre_bound_and_sized_like_the_claim() {
        let pv = volume_for(
            &claim(),
            "local.redis-operator.dev/hostpath",
            "Delete",
            Some("local-node"),
            Path::new("/v/pvc-1234"),
        );
        assert_eq!(pv.name_any(), "pvc-1234");
        assert_eq!(
            pv.annotations()[PROVISIONED_BY],
            "local.redis-operator.dev/hostpath"
        );
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("1Gi".into()));
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(
            (
                claim_ref.namespace.as_deref(),
                claim_ref.name.as_deref(),
                claim_ref.uid.as_deref()
            ),
            (Some("ns"), Some("data-redis-0"), Some("1234"))
        );
        assert_eq!(spec.host_path.unwrap().path, "/v/pvc-1234");
        assert!(spec.node_affinity.is_some());
    }

    #[test]
    fn without_a_node_the_volume_has_no_affinity() {
        let pv = volume_for(&claim(), "p", "Delete", None, Path::new("/v/x"));
        assert!(pv.spec.unwrap().node_affinity.is_none());
    }

    #[test]
    fn deletes_only_our_released_volumes() {
        let mut pv = volume_for(&claim(), "p", "Delete", Some("n"), Path::new("/v/x"));
        assert!(!deletable(&pv, "p"));
        pv.status = Some(PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..PersistentVolumeStatus::default()
        });
        assert!(deletable(&pv, "p"));
        assert!(!deletable(&pv, "other"));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(!deletable(&pv, "p"));
    }
}
