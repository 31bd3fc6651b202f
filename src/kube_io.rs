//! The few Kubernetes API calls the operator makes, in one place.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

use crate::crd::{RedisInstance, RedisInstanceStatus};
use crate::resources::{MANAGER, adoption_ref, selector_string};

/// Failures talking to the API server, by what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("failed to get {kind} {name}: {source}")]
    Get {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing objects failed.
    #[error("failed to list {kind}: {source}")]
    List {
        /// Kind listed.
        kind: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
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
    /// Deleting or un-finalizing an object failed.
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
            Error::Get { .. } => "GetFailed",
            Error::List { .. } => "ListFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status { .. } => "StatusUpdateFailed",
        }
    }

    /// Whether the apiserver refused the object itself (a retry with the same input fails too).
    pub fn is_invalid(&self) -> bool {
        let source = match self {
            Error::Get { source, .. }
            | Error::List { source, .. }
            | Error::Apply { source, .. }
            | Error::Delete { source, .. }
            | Error::Status { source, .. } => source,
        };
        matches!(source, kube::Error::Api(status) if status.code == 422)
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// API access scoped to one instance's namespace.
#[derive(Clone)]
pub struct InstanceApi {
    client: Client,
    namespace: String,
    recorder: Recorder,
}

/// The status as a merge patch: absent optional fields become `null`, so a merge patch clears
/// them instead of leaving an old value behind.
fn status_patch(status: &RedisInstanceStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for key in [
            "observedGeneration",
            "configHash",
            "shortHash",
            "lastRestartTime",
            "rejectedConfigHash",
            "phase",
            "conditions",
        ] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    value
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

impl InstanceApi {
    /// API access for objects in `namespace`, publishing Events as `reporter`.
    pub fn new(client: Client, namespace: &str, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.to_owned(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn get_opt<K>(&self, kind: &'static str, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        match self.api::<K>().get(name).await {
            Ok(obj) => Ok(Some(obj)),
            Err(err) if not_found(&err) => Ok(None),
            Err(source) => Err(Error::Get {
                kind,
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The ConfigMap, if it exists.
    pub async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>> {
        self.get_opt("ConfigMap", name).await
    }

    /// The StatefulSet, if it exists.
    pub async fn statefulset(&self, name: &str) -> Result<Option<StatefulSet>> {
        self.get_opt("StatefulSet", name).await
    }

    /// The Service, if it exists.
    pub async fn service(&self, name: &str) -> Result<Option<Service>> {
        self.get_opt("Service", name).await
    }

    /// The instance as stored now, if it still exists.
    pub async fn instance(&self, name: &str) -> Result<Option<RedisInstance>> {
        self.get_opt("RedisInstance", name).await
    }

    /// Pods of the instance, terminating ones included.
    pub async fn pods(&self, instance: &RedisInstance) -> Result<Vec<Pod>> {
        let params = ListParams::default().labels(&selector_string(instance));
        self.api::<Pod>()
            .list(&params)
            .await
            .map(|list| list.items)
            .map_err(|source| Error::List {
                kind: "Pod",
                source,
            })
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
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|source| Error::Apply { kind, name, source })
    }

    /// Applies the Service.
    pub async fn apply_service(&self, svc: &Service) -> Result<Service> {
        self.apply("Service", svc).await
    }

    /// Strips the StatefulSet's finalizers, then deletes it in the foreground, so the API keeps
    /// it until the garbage collector has removed its pods. Already gone counts as done.
    pub async fn delete_statefulset(&self, name: &str) -> Result<()> {
        let api = self.api::<StatefulSet>();
        let delete_err = |source| Error::Delete {
            kind: "StatefulSet",
            name: name.to_owned(),
            source,
        };
        let strip = json!({ "metadata": { "finalizers": null } });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&strip))
            .await
        {
            Ok(_) => {}
            Err(err) if not_found(&err) => return Ok(()),
            Err(err) => return Err(delete_err(err)),
        }
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Ok(()),
            Err(err) => Err(delete_err(err)),
        }
    }

    /// Deletes a pod (gracefully); already gone counts as done.
    pub async fn delete_pod(&self, name: &str) -> Result<()> {
        match self
            .api::<Pod>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Ok(()),
            Err(source) => Err(Error::Delete {
                kind: "Pod",
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Adds a non-controller owner reference to the instance on claims the StatefulSet
    /// controller created, so deleting the instance removes them and nothing is orphaned.
    pub async fn adopt_claims(&self, instance: &RedisInstance) -> Result<usize> {
        let api = self.api::<PersistentVolumeClaim>();
        let params = ListParams::default().labels(&selector_string(instance));
        let claims = api.list(&params).await.map_err(|source| Error::List {
            kind: "PersistentVolumeClaim",
            source,
        })?;
        let owner = adoption_ref(instance);
        let mut adopted = 0;
        for claim in claims {
            let mut refs = claim.metadata.owner_references.clone().unwrap_or_default();
            if refs.iter().any(|r| r.uid == owner.uid) {
                continue;
            }
            refs.push(owner.clone());
            let name = claim.name_any();
            // The resourceVersion makes this a compare-and-swap: a concurrent writer gives a
            // 409 and the next pass retries with fresh refs.
            let patch = json!({ "metadata": {
                "ownerReferences": refs,
                "resourceVersion": claim.resource_version(),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::Apply {
                    kind: "PersistentVolumeClaim",
                    name,
                    source,
                })?;
            adopted += 1;
        }
        Ok(adopted)
    }

    /// Replaces the status subresource.
    pub async fn write_status(
        &self,
        instance: &RedisInstance,
        status: &RedisInstanceStatus,
    ) -> Result<()> {
        let name = instance.name_any();
        let patch = json!({ "status": status_patch(status) });
        self.api::<RedisInstance>()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::Status { name, source })
    }

    /// Publishes an Event on the instance. Failures are logged, not returned: an Event is
    /// worth less than the step that caused it.
    pub async fn event(
        &self,
        instance: &RedisInstance,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &instance.object_ref(&()))
            .await
        {
            tracing::warn!(%error, reason, "failed to publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patch_clears_absent_fields() {
        let patch = status_patch(&RedisInstanceStatus {
            restarts: 2,
            ..RedisInstanceStatus::default()
        });
        assert_eq!(patch["restarts"], 2);
        assert!(patch["configHash"].is_null() && patch.get("configHash").is_some());
        assert!(patch.get("rejectedConfigHash").is_some());
    }
}
