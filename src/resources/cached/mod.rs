//! The objects the operator owns as its watch caches keep them: only what the decisions read.
//!
//! The k8s-openapi types are large before any field is set (a `Pod` 2.4 KB, a `StatefulSet`
//! 2.6 KB), and most of what they hold is never read here. At 10,000 instances the caches hold
//! 50,000 objects, so each kind has a type of its own, deserialised straight from the watch:
//! what it leaves out is never held, not even briefly. Cached objects are never written back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Implements `kube::Resource` for a namespaced cache type of a built-in kind, so that `Api`,
/// the watcher and the reflector store work with it as with the full type.
macro_rules! namespaced_resource {
    ($type:ty, $kind:literal, $group:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($kind)
            }

            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($group)
            }

            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed("v1")
            }

            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($plural)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mod config_map;
mod config_volume;
mod labels;
mod network_policy;
mod pod;
mod secret;
mod service;
mod statefulset;

pub use config_map::CachedConfigMap;
pub use labels::Labels;
pub use network_policy::CachedNetworkPolicy;
pub use pod::{
    CachedContainerState, CachedContainerStatus, CachedPod, CachedPodCondition, CachedPodStatus,
    READY_CONDITION,
};
pub use secret::CachedSecret;
pub use service::CachedService;
pub use statefulset::{
    CachedStatefulSet, CachedStatefulSetSpec, config_hash_of, config_map_of, image_in,
    restarted_at_of,
};

/// Metadata as the watches keep it: without managed fields, which nothing reads.
fn cached_metadata(metadata: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        managed_fields: None,
        ..metadata.clone()
    }
}

/// The label naming the instance an owned object belongs to, which routes its watch events.
pub trait InstanceLabelled {
    /// The instance's name, from the object's labels.
    fn instance_label(&self) -> Option<&str>;
}

macro_rules! instance_labelled {
    ($($type:ty),*) => {$(
        impl InstanceLabelled for $type {
            fn instance_label(&self) -> Option<&str> {
                self.labels.get(crate::resources::INSTANCE_LABEL)
            }
        }
    )*};
}

instance_labelled!(
    CachedConfigMap,
    CachedNetworkPolicy,
    CachedPod,
    CachedSecret,
    CachedService,
    CachedStatefulSet
);

/// Metadata as the watches keep it, and the labels moved out of it.
fn split_metadata(metadata: &ObjectMeta) -> (ObjectMeta, Labels) {
    let mut metadata = cached_metadata(metadata);
    let labels = Labels::take(&mut metadata);
    (metadata, labels)
}

/// A value as JSON text; `from_json` reads it back.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// The labels a cached kind keeps, as inherent methods: they shadow `ResourceExt::labels` (and
/// `annotations` for pods), which would read the metadata's, always empty in the cache, and
/// compile.
macro_rules! kept_labels {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// The labels the cache keeps (see the field).
            pub fn labels(&self) -> &Labels {
                &self.labels
            }
        }
    )*};
}

kept_labels!(
    CachedPod,
    CachedStatefulSet,
    CachedConfigMap,
    CachedNetworkPolicy,
    CachedSecret,
    CachedService
);

impl CachedPod {
    /// The annotations the cache keeps (see the field).
    pub fn annotations(&self) -> &Labels {
        &self.annotations
    }
}
