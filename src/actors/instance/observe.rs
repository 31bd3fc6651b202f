//! Reads one instance's objects from the watch caches, preferring the operator's own writes
//! until the caches have caught up with them, so a pass never acts on a state it already changed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::{Resource, ResourceExt};

use super::InstanceState;
use crate::actors::cache::Cache;
use crate::crd::RedisInstance;
use crate::resources::{
    CachedConfigMap, CachedPod, CachedService, CachedStatefulSet, config_map_name,
};

/// Readers of the supervisor's watch caches; cheap to clone.
#[derive(Clone)]
pub struct Stores {
    /// RedisInstances.
    pub instances: Cache<RedisInstance>,
    /// ConfigMaps the operator manages.
    pub config_maps: Cache<CachedConfigMap>,
    /// Which of them are revision ConfigMaps, by instance.
    pub revisions: crate::actors::revision_index::RevisionIndex,
    /// StatefulSets the operator manages.
    pub statefulsets: Cache<CachedStatefulSet>,
    /// Services the operator manages.
    pub services: Cache<CachedService>,
    /// Pods of managed StatefulSets (status and metadata only).
    pub pods: Cache<CachedPod>,
    /// NetworkPolicies the operator manages.
    pub network_policies: Cache<crate::resources::CachedNetworkPolicy>,
    /// How far each watch has come.
    pub versions: Arc<Versions>,
    /// The Secrets the operator owns (`<name>-auth`, `<name>-acl`, `<name>-operator`).
    pub secrets: Cache<crate::resources::CachedSecret>,
    /// Every Secret's resourceVersion, from the metadata watch.
    pub secret_versions: crate::actors::watches::SecretVersions,
}

impl Stores {
    /// A Secret's resourceVersion as the metadata watch last saw it.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secret_versions
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|v| v.clone())
    }
}

/// The highest resourceVersion each watch of owned objects has delivered. A watch delivers a
/// kind's changes in order, so once it has passed the version of a write, the cache shows that
/// write or something newer, a deletion included.
#[derive(Debug, Default)]
pub struct Versions {
    /// ConfigMaps.
    pub config_maps: AtomicU64,
    /// StatefulSets.
    pub statefulsets: AtomicU64,
    /// Services.
    pub services: AtomicU64,
    /// Secrets the operator owns.
    pub secrets: AtomicU64,
}

impl Versions {
    /// Notes that a watch delivered `obj`.
    pub fn saw<K: Resource>(seen: &AtomicU64, obj: &K) {
        if let Some(v) = version(obj) {
            seen.fetch_max(v, Ordering::Relaxed);
        }
    }
}

/// The operator's own writes whose watch events may not have arrived yet.
#[derive(Default)]
pub struct Written {
    /// The instance as returned by the last status write.
    pub instance: Option<Arc<RedisInstance>>,
    /// The last ConfigMap written.
    pub config_map: Option<Arc<CachedConfigMap>>,
    /// The last revision ConfigMap written.
    pub revision: Option<Arc<CachedConfigMap>>,
    /// Uids of revision ConfigMaps deleted whose deletion the cache may not show yet.
    pub deleted_revisions: HashSet<String>,
    /// The last StatefulSet applied or deleted.
    pub statefulset: Option<Arc<CachedStatefulSet>>,
    /// The last Service `<name>` applied or deleted.
    pub service: Option<Arc<CachedService>>,
    /// The last headless Service applied.
    pub headless: Option<Arc<CachedService>>,
    /// Uids of pods deleted whose deletion the cache may not show yet.
    pub deleted_pods: HashSet<String>,
    /// The last NetworkPolicy write, until the cache shows it.
    pub network_policy: Option<super::network::PolicyWrite>,
}

impl Written {
    /// Holds a write of its own that the caches may not show yet.
    pub fn holds_any(&self) -> bool {
        self.instance.is_some()
            || self.config_map.is_some()
            || self.revision.is_some()
            || !self.deleted_revisions.is_empty()
            || self.statefulset.is_some()
            || self.service.is_some()
            || self.headless.is_some()
            || !self.deleted_pods.is_empty()
            || self.network_policy.is_some()
    }
}

/// One instance as the caches show it.
pub struct Observed {
    /// The instance itself, status included.
    pub instance: Arc<RedisInstance>,
    /// `redis.conf` of its ConfigMap.
    pub config_text: Option<String>,
    /// The mark the last live change left on that ConfigMap (see
    /// [`crate::decide::APPLIED_LIVE_ANNOTATION`]).
    pub live_mark: Option<String>,
    /// That ConfigMap, `<name>-config`, as the caches (or the actor's own last write) show it.
    pub config_map: Option<Arc<CachedConfigMap>>,
    /// Its StatefulSet.
    pub statefulset: Option<Arc<CachedStatefulSet>>,
    /// Its Service `<name>`.
    pub service: Option<Arc<CachedService>>,
    /// Its headless Service.
    pub headless: Option<Arc<CachedService>>,
    /// Its pods, by ordinal.
    pub pods: Vec<Arc<CachedPod>>,
    /// Its revision ConfigMaps.
    pub revisions: Vec<Arc<CachedConfigMap>>,
    /// Its NetworkPolicy, as the cache shows it (the actor's own write is remembered apart:
    /// the NetworkPolicy decision reads both).
    pub network_policy: Option<Arc<crate::resources::CachedNetworkPolicy>>,
}

/// resourceVersions are etcd revisions in practice; when one is not a number, trust the cache.
fn version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// The cached object, or the written one while the cache is behind it. `watched` is how far
/// the kind's watch has come: once past the write, the cache is trusted, even where it shows
/// nothing (someone deleted the object before the cache saw it written).
pub(super) fn newest<K: Resource>(
    cached: Option<Arc<K>>,
    written: &mut Option<Arc<K>>,
    watched: Option<&AtomicU64>,
) -> Option<Arc<K>> {
    let Some(mine) = written.clone() else {
        return cached;
    };
    let deleting = mine.meta().deletion_timestamp.is_some();
    let caught_up = watched.is_some_and(|seen| {
        version(mine.as_ref()).is_some_and(|v| seen.load(Ordering::Relaxed) >= v)
    });
    let behind = !caught_up
        && match &cached {
            // Not in the cache: either our create is not seen yet, or our delete already is.
            None => !deleting,
            Some(theirs) => match (version(theirs.as_ref()), version(mine.as_ref())) {
                (Some(c), Some(w)) => c < w,
                _ => false,
            },
        };
    if behind {
        Some(mine)
    } else {
        *written = None;
        cached
    }
}

pub(super) fn lookup<K: Resource>(store: &Cache<K>, namespace: &str, name: &str) -> Option<Arc<K>> {
    store.get(namespace, name)
}

/// Objects named `<prefix>-<ordinal>`: every ordinal below `at_least`, and on past it while
/// they keep existing (a StatefulSet scaled up by hand, pods still terminating).
fn by_ordinal<K: Resource>(
    store: &Cache<K>,
    namespace: &str,
    prefix: &str,
    at_least: i32,
) -> Vec<Arc<K>> {
    let mut found = Vec::new();
    for ordinal in 0.. {
        match lookup(store, namespace, &format!("{prefix}-{ordinal}")) {
            Some(obj) => found.push(obj),
            None if ordinal >= at_least => break,
            None => {}
        }
    }
    found
}

/// Pods this actor deleted count as terminating until the cache says so; uids the cache no
/// longer shows are forgotten.
fn mark_deleted(pods: &mut [Arc<CachedPod>], deleted: &mut HashSet<String>) {
    if deleted.is_empty() {
        return;
    }
    let present: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    deleted.retain(|uid| present.contains(uid));
    for pod in pods.iter_mut() {
        let ours = pod.uid().is_some_and(|uid| deleted.contains(&uid));
        if ours && pod.metadata.deletion_timestamp.is_none() {
            let mut marked = CachedPod::clone(pod);
            marked.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
            *pod = Arc::new(marked);
        }
    }
}

/// The instance's revision ConfigMaps: the cached ones, this actor's last write while the cache
/// is behind it, and none it deleted.
fn revisions(
    stores: &Stores,
    written: &mut Written,
    namespace: &str,
    instance: &str,
) -> Vec<Arc<CachedConfigMap>> {
    let mut found: Vec<Arc<CachedConfigMap>> = stores
        .revisions
        .names(namespace, instance)
        .iter()
        .filter_map(|name| lookup(&stores.config_maps, namespace, name))
        .collect();
    if let Some(mine) = written.revision.clone() {
        let at = found
            .iter()
            .position(|cm| cm.metadata.name == mine.metadata.name);
        let cached = at.map(|i| found[i].clone());
        let newest = newest(
            cached,
            &mut written.revision,
            Some(&stores.versions.config_maps),
        );
        match (at, newest) {
            (Some(i), Some(cm)) => found[i] = cm,
            (None, Some(cm)) => found.push(cm),
            _ => {}
        }
    }
    let deleted = &mut written.deleted_revisions;
    if !deleted.is_empty() {
        let present: HashSet<String> = found.iter().filter_map(|cm| cm.uid()).collect();
        deleted.retain(|uid| present.contains(uid));
        found.retain(|cm| cm.uid().is_none_or(|uid| !deleted.contains(&uid)));
    }
    found
}

/// The cached instance, after dropping the copy this actor wrote once the cache holds it (or
/// a newer one).
pub fn seen_status(
    stores: &Stores,
    written: &mut Written,
    namespace: &str,
    name: &str,
) -> Option<Arc<RedisInstance>> {
    let cached = lookup(&stores.instances, namespace, name);
    if written.instance.is_some() {
        newest(cached.clone(), &mut written.instance, None);
    }
    cached
}

/// Reads the instance `namespace/name` and everything it owns; `None` once it is gone.
pub fn observe(
    stores: &Stores,
    written: &mut Written,
    namespace: &str,
    name: &str,
) -> Option<Observed> {
    let instance = newest(
        lookup(&stores.instances, namespace, name),
        &mut written.instance,
        None,
    )?;
    let versions = &stores.versions;
    let config_map = newest(
        lookup(&stores.config_maps, namespace, &config_map_name(&instance)),
        &mut written.config_map,
        Some(&versions.config_maps),
    );
    let statefulset = newest(
        lookup(&stores.statefulsets, namespace, name),
        &mut written.statefulset,
        Some(&versions.statefulsets),
    );
    let service = newest(
        lookup(&stores.services, namespace, name),
        &mut written.service,
        Some(&versions.services),
    );
    let headless = newest(
        lookup(
            &stores.services,
            namespace,
            &crate::resources::headless_service_name(&instance),
        ),
        &mut written.headless,
        Some(&versions.services),
    );
    let replicas = [
        Some(instance.spec.replicas),
        statefulset.as_ref().and_then(|s| s.spec.replicas),
        statefulset
            .as_ref()
            .and_then(|s| s.status.as_ref().map(|st| st.replicas)),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let mut pods = by_ordinal(&stores.pods, namespace, name, replicas);
    mark_deleted(&mut pods, &mut written.deleted_pods);
    let revisions = revisions(stores, written, namespace, name);
    let network_policy = lookup(&stores.network_policies, namespace, name);
    Some(Observed {
        network_policy,
        revisions,
        live_mark: config_map.as_ref().and_then(|cm| {
            let marks = cm.metadata.annotations.as_ref()?;
            marks.get(crate::decide::APPLIED_LIVE_ANNOTATION).cloned()
        }),
        config_text: config_map.as_ref().and_then(|cm| cm.config_text.clone()),
        config_map,
        instance,
        statefulset,
        service,
        headless,
        pods,
    })
}

/// The instance as the cache holds it, for Events about failed steps.
pub(super) fn cached_instance(state: &InstanceState) -> Option<Arc<RedisInstance>> {
    let key = &state.args.key;
    state.args.stores.instances.get(&key.namespace, &key.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn cm(version: &str) -> Arc<ConfigMap> {
        let mut cm = ConfigMap::default();
        cm.metadata.resource_version = Some(version.into());
        Arc::new(cm)
    }

    #[test]
    fn written_object_wins_until_the_cache_catches_up() {
        let mut written = Some(cm("7"));
        assert_eq!(
            newest(Some(cm("5")), &mut written, None)
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("7")
        );
        assert!(written.is_some());
        assert_eq!(
            newest(Some(cm("9")), &mut written, None)
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("9")
        );
        assert!(written.is_none(), "forgotten once the cache has it");
        let mut created = Some(cm("3"));
        assert!(
            newest(None, &mut created, None).is_some(),
            "a create not yet seen"
        );
    }

    #[test]
    fn a_deletion_seen_by_the_cache_means_gone() {
        let mut deleting = ConfigMap::default();
        deleting.metadata.resource_version = Some("8".into());
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut written = Some(Arc::new(deleting));
        assert!(newest(Some(cm("5")), &mut written, None).is_some());
        assert!(newest(None, &mut written, None).is_none());
    }

    #[test]
    fn once_the_watch_is_past_a_write_the_cache_is_trusted_even_when_empty() {
        let watched = AtomicU64::new(2);
        let mut created = Some(cm("3"));
        assert!(
            newest(None, &mut created, Some(&watched)).is_some(),
            "the watch has not delivered the create yet"
        );
        // Someone deleted it before the cache ever showed it: the watch delivers the
        // deletion (version 4), and the copy no longer hides that it is gone.
        watched.store(4, Ordering::Relaxed);
        assert!(newest(None, &mut created, Some(&watched)).is_none());
        assert!(created.is_none(), "forgotten");
    }
}
