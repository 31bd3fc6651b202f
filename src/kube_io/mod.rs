//! The few Kubernetes API calls the operator makes, in one place: all of them writes, each
//! through the shared [`Limiter`]. Reads come from the watch caches.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use crate::crd::{RedisInstance, RedisInstanceStatus};
use crate::events::EventPoster;
use crate::limiter::Limiter;
use crate::resources::{
    CONFIG_HASH_ANNOTATION, CONFIG_VOLUME, CachedConfigMap, CachedPod, CachedService,
    CachedStatefulSet, MANAGER, RESTARTED_AT_ANNOTATION,
};

/// Failures talking to the API server, by what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Server-side apply failed.
    #[error("failed to apply {kind} {name}: {source}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an object failed.
    #[error("failed to delete {kind} {name}: {source}")]
    Delete {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading objects failed.
    #[error("failed to read {kind} of {name}: {source}")]
    Read {
        /// Kind of the objects.
        kind: &'static str,
        /// What they belong to.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// This process does not surely hold the leader Lease, so it does not write.
    #[error(transparent)]
    NotLeader(#[from] crate::limiter::NotLeader),
    /// A pod's Redis could not be reached for a live config change (not an API error, but a
    /// step that failed the same way: retried with backoff).
    #[error(transparent)]
    Live(#[from] crate::live::pods::Error),
    /// The status could not be turned into JSON; nothing was written.
    #[error("failed to serialize the status of {name}: {source}")]
    Serialize {
        /// The instance.
        name: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The OS gave no random bytes for a password; nothing was created.
    #[error("failed to generate a password: {0}")]
    NoRandomness(String),
    /// Writing the instance's status failed.
    #[error("failed to update status of {name}: {source}")]
    Status {
        /// The instance.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply { .. } if self.is_conflict() => "Conflict",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Read { .. } => "ReadFailed",
            Error::Status { .. } if self.is_conflict() => "Conflict",
            Error::Status { .. } | Error::Serialize { .. } => "StatusUpdateFailed",
            Error::NotLeader(_) | Error::Live(crate::live::pods::Error::NotLeader(_)) => {
                "NotLeader"
            }
            Error::Live(_) => "RedisUnreachable",
            Error::NoRandomness(_) => "NoRandomness",
        }
    }

    fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            Error::Apply { source, .. }
            | Error::Delete { source, .. }
            | Error::Read { source, .. }
            | Error::Status { source, .. } => match source {
                kube::Error::Api(status) => Some(status),
                _ => None,
            },
            Error::NotLeader(_)
            | Error::Live(_)
            | Error::Serialize { .. }
            | Error::NoRandomness(_) => None,
        }
    }

    /// The object changed since the cache showed it (or the uid it was decided for is gone):
    /// routine, taken again from a fresh look.
    pub fn is_conflict(&self) -> bool {
        self.api_status()
            .is_some_and(|s| s.code == 409 || replaced_since_seen(s))
    }

    /// Whether the apiserver refused the object itself (a retry with the same input fails too).
    pub fn is_invalid(&self) -> bool {
        self.api_status()
            .is_some_and(|s| s.code == 422 && !replaced_since_seen(s))
    }

    /// The instance's namespace is being deleted, so nothing new may be created in it: the
    /// instance goes with it, and retrying or warning would only be noise.
    pub fn is_namespace_terminating(&self) -> bool {
        self.api_status().is_some_and(|s| {
            s.code == 403
                && s.details
                    .as_ref()
                    .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
        })
    }
}

/// A patch carrying the uid of the object it was decided for met another object of that name
/// (deleted and created again since): the API server answers 422, `metadata.uid` being
/// immutable, where a resourceVersion or a delete's precondition gets 409. A conflict, not a
/// refusal of the object.
fn replaced_since_seen(status: &kube::core::Status) -> bool {
    status.code == 422
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.field == "metadata.uid"))
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Makes a write of `desired` hold only over the object the decision saw: its uid and
/// resourceVersion, when one was seen and is not being deleted. One written since (by a new
/// leader, say, while this write was delayed on its way) or deleted and created again under
/// its name then makes the write a conflict (see [`Error::is_conflict`]) instead of being
/// overwritten by a late write. Nothing seen: a creation, which carries neither.
///
/// For the objects only the operator and people write: a StatefulSet's version also moves
/// with every status its controller writes.
pub fn over_seen(desired: &mut ObjectMeta, seen: Option<&ObjectMeta>) {
    let seen = seen.filter(|meta| meta.deletion_timestamp.is_none());
    desired.uid = seen.and_then(|meta| meta.uid.clone());
    desired.resource_version = seen.and_then(|meta| meta.resource_version.clone());
}

/// API access scoped to one instance's namespace.
#[derive(Clone)]
pub struct InstanceApi {
    client: Client,
    namespace: String,
    events: EventPoster,
    limiter: Limiter,
    held: telling::HeldEvents,
    /// The Events of facts this actor told most recently, newest last.
    told: Arc<Mutex<Vec<String>>>,
}

/// The status as a merge patch: absent optional fields become `null`, so a merge patch clears
/// them instead of leaving an old value behind. It carries the uid and resourceVersion the
/// status was derived from, so the API server refuses it (409) if the instance changed since,
/// or is another object of the same name: a lagging cache, a deposed leader or an actor of a
/// deleted instance can then never overwrite a newer restart record or count one twice.
fn status_patch(
    instance: &RedisInstance,
    status: &RedisInstanceStatus,
) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(status)?;
    if let Some(fields) = value.as_object_mut() {
        for key in [
            "observedGeneration",
            "configHash",
            "shortHash",
            "lastRestartTime",
            "rejectedConfigHash",
            "liveConfigHash",
            "refusedLiveConfigHash",
            "pendingChange",
            "rollout",
            "statefulSetGeneration",
            "replication",
            "aclHash",
            "healthySpec",
            "validSpec",
            "phase",
            "conditions",
        ] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
        // A merge patch merges nested objects too: a cleared switchover must be said.
        if let Some(replication) = fields
            .get_mut("replication")
            .and_then(|r| r.as_object_mut())
        {
            for key in ["primary", "switchover", "switchoverFailed", "pods"] {
                replication.entry(key).or_insert(serde_json::Value::Null);
            }
        }
    }
    Ok(json!({
        "metadata": {
            "uid": instance.metadata.uid,
            "resourceVersion": instance.metadata.resource_version,
        },
        "status": value,
    }))
}

/// A merge patch of one key of one metadata map (`annotations` or `labels`); a `None` value
/// is `null`, which removes the key. The uid makes it a precondition: the API server refuses
/// the patch for another object of the same name.
fn metadata_patch(
    uid: Option<String>,
    map: &str,
    key: &str,
    value: Option<&str>,
) -> serde_json::Value {
    json!({ "metadata": { "uid": uid, map: { key: value } } })
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

impl InstanceApi {
    /// API access for objects in `namespace`, publishing Events through `events`.
    pub fn new(client: Client, namespace: &str, events: EventPoster, limiter: Limiter) -> Self {
        Self {
            events,
            client,
            namespace: namespace.to_owned(),
            limiter,
            held: telling::HeldEvents::default(),
            told: Arc::default(),
        }
    }

    /// The gate every write passes, Redis commands that change state included.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Waits for this instance's turn to take a step; see [`Limiter::step`].
    pub async fn step_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.limiter.step().await
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies an object the operator owns, taking over conflicting fields.
    pub async fn apply<K>(&self, kind: &'static str, obj: &K) -> Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        let name = obj.name_any();
        let _permit = self.limiter.write(kind).await?;
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|source| Error::Apply { kind, name, source })
    }

    /// Deletes the StatefulSet with `propagationPolicy: Orphan`: its pods and claims stay, so
    /// no claim is collected whatever `persistentVolumeClaimRetentionPolicy` says (with
    /// `whenDeleted: Delete` the StatefulSet owns them). The pods are deleted by the caller once
    /// the StatefulSet is gone. Finalizers are left alone: Orphan needs none removed, and one
    /// someone else put there is theirs, so the deletion waits for them. The uid precondition
    /// makes a stale cache harmless: a StatefulSet someone recreated meanwhile is not deleted
    /// by mistake. Returns the object as it is being deleted; `None` when it is already gone.
    pub async fn delete_statefulset(
        &self,
        live: &CachedStatefulSet,
    ) -> Result<Option<CachedStatefulSet>> {
        let name = live.name_any();
        let mut params = DeleteParams::orphan();
        params.preconditions = Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        });
        let _permit = self.limiter.write("StatefulSet").await?;
        match self.api::<CachedStatefulSet>().delete(&name, &params).await {
            Ok(either) => Ok(either.left()),
            Err(err) if not_found(&err) => Ok(None),
            Err(source) => Err(Error::Delete {
                kind: "StatefulSet",
                name,
                source,
            }),
        }
    }

    /// Deletes the very Service that was seen (uid precondition); gone already is done.
    pub async fn delete_service(&self, live: &CachedService) -> Result<()> {
        self.delete_as_seen::<Service>("Service", &live.name_any(), live.uid(), None)
            .await
    }

    /// Deletes a revision ConfigMap only as it was seen (uid and resourceVersion
    /// preconditions): one recreated or written meanwhile stays; gone already is done.
    pub async fn delete_config_map(&self, live: &CachedConfigMap) -> Result<()> {
        self.delete_as_seen::<ConfigMap>(
            "ConfigMap",
            &live.name_any(),
            live.uid(),
            live.resource_version(),
        )
        .await
    }

    /// Deletes the object of `kind` named `name` only if it is still the one of `uid` (one
    /// someone recreated meanwhile stays) and, with `resource_version`, unchanged since; already
    /// gone counts as done.
    async fn delete_as_seen<K>(
        &self,
        kind: &'static str,
        name: &str,
        uid: Option<String>,
        resource_version: Option<String>,
    ) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version,
            }),
            ..DeleteParams::default()
        };
        let _permit = self.limiter.write(kind).await?;
        match self.api::<K>().delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Ok(()),
            Err(source) => Err(Error::Delete {
                kind,
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Sets the pod template's config hash and restart marker (removing the marker when
    /// `None`) and the ConfigMap its config volume mounts, and nothing else, with a strategic
    /// merge patch (which merges the volume list by name). With `seen`'s uid and
    /// resourceVersion, only on the StatefulSet of that uid, unchanged since (see
    /// [`Error::is_conflict`]).
    pub async fn set_restart_annotations(
        &self,
        name: &str,
        (hash, marker): (&str, Option<&str>),
        config_map: &str,
        (uid, version): (Option<&str>, Option<&str>),
    ) -> Result<CachedStatefulSet> {
        let seen = json!({ "uid": uid, "resourceVersion": version });
        let patch = json!({ "metadata": seen, "spec": { "template": {
            "metadata": { "annotations": {
                CONFIG_HASH_ANNOTATION: hash,
                RESTARTED_AT_ANNOTATION: marker,
            }},
            "spec": { "volumes": [{ "name": CONFIG_VOLUME, "configMap": { "name": config_map } }] },
        }}});
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let _permit = self.limiter.write("StatefulSet").await?;
        self.api::<CachedStatefulSet>()
            .patch(name, &params, &Patch::Strategic(&patch))
            .await
            .map_err(|source| Error::Apply {
                kind: "StatefulSet",
                name: name.to_owned(),
                source,
            })
    }

    /// Deletes the NetworkPolicy that was seen (uid precondition, so one someone recreated
    /// meanwhile stays); already gone counts as done.
    pub async fn delete_network_policy(
        &self,
        live: &crate::resources::CachedNetworkPolicy,
    ) -> Result<()> {
        self.delete_as_seen::<NetworkPolicy>("NetworkPolicy", &live.name_any(), live.uid(), None)
            .await
    }

    /// Deletes a pod (gracefully), only the very pod that was seen (uid precondition).
    pub async fn delete_pod(&self, pod: &CachedPod) -> Result<()> {
        let name = pod.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let _permit = self.limiter.write("Pod").await?;
        match self.api::<Pod>().delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Ok(()),
            Err(source) => Err(Error::Delete {
                kind: "Pod",
                name,
                source,
            }),
        }
    }

    /// Sets one annotation of the very ConfigMap that was seen (the uid in the patch is a
    /// precondition) with a merge patch, leaving its data and every other field alone.
    pub async fn annotate_config_map(
        &self,
        live: &CachedConfigMap,
        key: &str,
        value: &str,
    ) -> Result<CachedConfigMap> {
        self.merge_metadata_as_seen::<CachedConfigMap>(
            "ConfigMap",
            live.name_any(),
            live.uid(),
            "annotations",
            key,
            Some(value),
        )
        .await
    }

    /// Sets (or removes, with `None`) one label of the very pod that was seen: the uid in the
    /// patch is a precondition, so a pod recreated under the same name is not labelled by
    /// mistake.
    pub async fn label_pod(&self, pod: &CachedPod, key: &str, value: Option<&str>) -> Result<()> {
        self.merge_metadata_as_seen::<Pod>("Pod", pod.name_any(), pod.uid(), "labels", key, value)
            .await
            .map(|_| ())
    }

    /// Sets (or removes, with `None`) one key of one metadata map of the object of `kind`
    /// named `name`, only if it is still the one of `uid`, with the [`metadata_patch`].
    async fn merge_metadata_as_seen<K>(
        &self,
        kind: &'static str,
        name: String,
        uid: Option<String>,
        map: &'static str,
        key: &str,
        value: Option<&str>,
    ) -> Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let patch = metadata_patch(uid, map, key, value);
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let _permit = self.limiter.write(kind).await?;
        self.api::<K>()
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Apply { kind, name, source })
    }

    /// The addresses a Service's EndpointSlices list as ready: who its clients can still reach.
    /// A read, so it passes no write gate.
    pub async fn ready_endpoints(&self, service: &str) -> Result<Vec<String>> {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let params = kube::api::ListParams::default()
            .labels(&format!("kubernetes.io/service-name={service}"));
        let slices = self
            .api::<EndpointSlice>()
            .list(&params)
            .await
            .map_err(|source| Error::Read {
                kind: "EndpointSlice",
                name: service.to_owned(),
                source,
            })?;
        Ok(slices
            .items
            .iter()
            .flat_map(|slice| slice.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().is_none_or(|c| c.ready != Some(false)))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect())
    }

    /// A Secret of the instance's namespace, `None` when there is none. Read on demand, never
    /// cached: only the Secrets an instance references are read.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>> {
        self.api::<Secret>()
            .get_opt(name)
            .await
            .map_err(|source| Error::Read {
                kind: "Secret",
                name: name.to_owned(),
                source,
            })
    }

    /// Creates a Secret the operator owns; `None` when one of that name already exists (it is
    /// then read again, never overwritten: it may hold a password clients already use).
    pub async fn create_secret(&self, secret: &Secret) -> Result<Option<Secret>> {
        let name = secret.name_any();
        let _permit = self.limiter.write("Secret").await?;
        match self
            .api::<Secret>()
            .create(&PostParams::default(), secret)
            .await
        {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(Error::Apply {
                kind: "Secret",
                name,
                source,
            }),
        }
    }

    /// Replaces the status subresource; returns the instance as stored after the write.
    pub async fn write_status(
        &self,
        instance: &RedisInstance,
        status: &RedisInstanceStatus,
    ) -> Result<RedisInstance> {
        let name = instance.name_any();
        let patch = status_patch(instance, status).map_err(|source| Error::Serialize {
            name: name.clone(),
            source,
        })?;
        let _permit = self.limiter.write("Status").await?;
        self.api::<RedisInstance>()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Status { name, source })
    }
}

mod telling;

#[cfg(test)]
mod tests;
