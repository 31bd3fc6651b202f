//! The supervisor's watches: one kube-runtime reflector per kind, feeding the caches the
//! instance actors read, and routing each change to the instance named by the object's label.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use ractor::ActorRef;
use ractor::concurrency::JoinHandle;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::cache::{self, Cache};
use super::instance::{Stores, Versions};
use super::metrics::InstanceKey;
use super::revision_index::RevisionIndex;
use super::supervisor::SupervisorMsg;
use crate::api_traffic::ApiTraffic;
use crate::crd::RedisInstance;
use crate::health::Health;
use crate::resources::{
    CachedConfigMap, CachedNetworkPolicy, CachedPod, CachedSecret, CachedService,
    CachedStatefulSet, INSTANCE_LABEL, InstanceLabelled, MANAGED_BY_LABEL, MANAGER,
    READY_CONDITION,
};

/// Retry delays of a failed watch: 250 ms doubling to 4 s, and back to 250 ms after any event.
/// Short, so that the operator resumes within seconds of an API server's return rather than
/// after a backoff grown during the outage.
struct WatchBackoff {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(4);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(LONGEST_RETRY);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// Where watch tasks report.
#[derive(Clone)]
struct Sink {
    to: ActorRef<SupervisorMsg>,
    health: Arc<Health>,
    traffic: ApiTraffic,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches one kind the operator owns into a cache. Managed fields and owner references are
/// dropped: nothing reads them (ownership is set on write, and the garbage collector reads it
/// from the API server), and managed fields are much of an object's size.
fn watch_owned<K>(
    client: &Client,
    namespace: Option<&str>,
    trim: fn(&mut K),
    progress: Option<(Arc<Versions>, Progress)>,
    sink: &Sink,
    kind: &'static str,
    follow: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Cache<K>, JoinHandle<()>)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + InstanceLabelled
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let (reader, mut writer) = cache::store();
    let stream = watcher(api::<K>(client, namespace), owned)
        .modify(move |obj: &mut K| {
            let meta = obj.meta_mut();
            meta.managed_fields = None;
            meta.owner_references = None;
            trim(obj);
        })
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply_watcher_event(event);
            }
        })
        .inspect(move |event| {
            if let Ok(event) = event {
                follow(event);
            }
        })
        // After the cache holds the object, so that a step that sees the watch past its
        // write also sees the cache that shows it.
        // A relist's objects reach the cache together at its end, and count from then.
        .inspect({
            let relisted = AtomicU64::new(0);
            move |event| {
                let (Some((versions, of_kind)), Ok(event)) = (&progress, event) else {
                    return;
                };
                let seen = of_kind(versions);
                match event {
                    watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                        Versions::saw(seen, obj);
                    }
                    watcher::Event::InitApply(obj) => Versions::saw(&relisted, obj),
                    watcher::Event::Init => relisted.store(0, Ordering::Relaxed),
                    watcher::Event::InitDone => {
                        seen.fetch_max(relisted.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                }
            }
        })
        .backoff(WatchBackoff::default());
    let task = ractor::concurrency::spawn(pump(kind, owned_events(stream), sink.clone()));
    (reader, task)
}

/// The resourceVersion of every Secret the operator may read, by namespace and name, as the
/// metadata watch last saw it: an actor reads a Secret again only when its version moved.
pub type SecretVersions = Arc<dashmap::DashMap<(String, String), String>>;

/// Watches every Secret's metadata only, so the data of Secrets the operator does not own stays
/// on the API server and out of this process's memory; a change gives a step to every instance
/// that references the Secret (see `auth::referenced_secrets`), which then reads it. The
/// Secrets it owns are cached by their own watch, like its other objects, as [`CachedSecret`]s.
fn watch_secrets(
    client: &Client,
    namespace: Option<&str>,
    versions: SecretVersions,
    sink: &Sink,
) -> JoinHandle<()> {
    let api = api::<PartialObjectMeta<Secret>>(client, namespace);
    let relisting = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let stream = watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .filter_map(move |event| {
            let versions = versions.clone();
            let relisting = relisting.clone();
            async move {
                // A relist's objects only record their versions: its end wakes every
                // instance anyway, and a message per Secret would scan every instance as often.
                let (obj, deleted, relisted) = match event {
                    Ok(watcher::Event::Apply(obj)) => (obj, false, false),
                    Ok(watcher::Event::InitApply(obj)) => (obj, false, true),
                    Ok(watcher::Event::Delete(obj)) => (obj, true, false),
                    Ok(watcher::Event::Init) => {
                        relisting.lock().expect("relisting lock").clear();
                        return None;
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Secrets deleted while the watch was down are gone from the relist.
                        let seen = std::mem::take(&mut *relisting.lock().expect("relisting lock"));
                        versions.retain(|key, _| seen.contains(key));
                        return Some(Ok(SupervisorMsg::WakeAll));
                    }
                    Err(err) => return Some(Err(err)),
                };
                let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                if relisted {
                    relisting
                        .lock()
                        .expect("relisting lock")
                        .insert(key.clone());
                }
                if deleted {
                    versions.remove(&key);
                } else {
                    versions.insert(key.clone(), obj.resource_version().unwrap_or_default());
                }
                // The Secrets the operator owns reach their instance through their own watch.
                let owned = obj.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER);
                if relisted || owned {
                    return None;
                }
                Some(Ok(SupervisorMsg::Secret(InstanceKey {
                    namespace: key.0,
                    name: key.1,
                })))
            }
        });
    ractor::concurrency::spawn(pump("SecretMetadata", stream, sink.clone()))
}

/// Which of the [`Versions`] a watch advances.
type Progress = fn(&Versions) -> &AtomicU64;

/// Stores an object as it comes.
fn keep<K>(_: &mut K) {}

/// Drops what the decisions never read of a pod (of its labels, `CachedPod` keeps only those
/// read): its conditions keep the one that tells readiness.
fn trim_pod(pod: &mut CachedPod) {
    let meta = &mut pod.metadata;
    meta.generate_name = None;
    meta.finalizers = None;
    if let Some(conditions) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        conditions.retain(|c| c.type_ == READY_CONDITION);
    }
}

/// The annotation `kubectl apply` leaves on what it applies: the whole object again, as JSON.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what is never read of a RedisInstance: its managed fields, and the copy of its spec
/// that `kubectl apply` keeps in an annotation (as large as the spec, per instance).
fn trim_instance(instance: &mut RedisInstance) {
    instance.metadata.managed_fields = None;
    if let Some(annotations) = instance.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Drops what is never read of a Secret the operator owns: its labels keep the one that routes
/// the event, and its annotations go.
fn trim_secret(secret: &mut CachedSecret) {
    secret.metadata.annotations = None;
    secret.labels.keep_only(INSTANCE_LABEL);
}

/// Starts every watch; returns the caches and the tasks (aborted when the supervisor stops).
pub fn start(
    to: &ActorRef<SupervisorMsg>,
    client: &Client,
    namespace: Option<&str>,
    health: Arc<Health>,
    traffic: ApiTraffic,
) -> (Stores, Vec<JoinHandle<()>>) {
    let sink = Sink {
        to: to.clone(),
        health,
        traffic,
    };
    let versions = Arc::new(Versions::default());
    let progress = |of_kind: Progress| Some((versions.clone(), of_kind));
    let revisions = RevisionIndex::default();
    let (config_maps, cm_task) = watch_owned::<CachedConfigMap>(
        client,
        namespace,
        keep,
        progress(|v| &v.config_maps),
        &sink,
        "ConfigMap",
        {
            let revisions = revisions.clone();
            move |event| revisions.follow(event)
        },
    );
    let (statefulsets, sts_task) = watch_owned::<CachedStatefulSet>(
        client,
        namespace,
        keep,
        progress(|v| &v.statefulsets),
        &sink,
        "StatefulSet",
        |_| {},
    );
    let (services, svc_task) = watch_owned::<CachedService>(
        client,
        namespace,
        keep,
        progress(|v| &v.services),
        &sink,
        "Service",
        |_| {},
    );
    let (pods, pod_task) =
        watch_owned::<CachedPod>(client, namespace, trim_pod, None, &sink, "Pod", |_| {});
    let (owned_secrets, owned_secret_task) = watch_owned::<CachedSecret>(
        client,
        namespace,
        trim_secret,
        progress(|v| &v.secrets),
        &sink,
        "Secret",
        |_| {},
    );
    let secret_versions = SecretVersions::default();
    let secret_task = watch_secrets(client, namespace, secret_versions.clone(), &sink);
    let (network_policies, np_task) = watch_owned::<CachedNetworkPolicy>(
        client,
        namespace,
        keep,
        None,
        &sink,
        "NetworkPolicy",
        |_| {},
    );
    let (instances, mut instance_writer) = cache::store();
    let stores = Stores {
        secrets: owned_secrets,
        secret_versions,
        instances,
        config_maps,
        revisions,
        statefulsets,
        services,
        pods,
        network_policies,
        versions,
    };
    let instance_stream = watcher(
        api::<RedisInstance>(client, namespace),
        watcher::Config::default(),
    )
    .modify(trim_instance)
    .inspect(move |event| {
        if let Ok(event) = event {
            instance_writer.apply_watcher_event(event);
        }
    })
    .backoff(WatchBackoff::default())
    .map(|event| event.map(|e| SupervisorMsg::Instance(Box::new(e), Instant::now())));
    let gate = stores.clone();
    // Instances are routed only once every owned cache holds its first list: a step taken
    // before would see no StatefulSet and create one that exists.
    let instance_task = ractor::concurrency::spawn(async move {
        let _ = futures::join!(
            gate.config_maps.wait_until_ready(),
            gate.statefulsets.wait_until_ready(),
            gate.services.wait_until_ready(),
            gate.pods.wait_until_ready(),
            gate.secrets.wait_until_ready(),
            gate.network_policies.wait_until_ready(),
        );
        pump("RedisInstance", instance_stream, sink).await;
    });
    let tasks = vec![
        cm_task,
        sts_task,
        svc_task,
        pod_task,
        owned_secret_task,
        secret_task,
        np_task,
        instance_task,
    ];
    (stores, tasks)
}

/// Maps owned-object events to the instance they belong to, by label.
fn owned_events<S, K>(stream: S) -> impl Stream<Item = Result<SupervisorMsg, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Resource + InstanceLabelled + Send,
{
    stream.filter_map(|event| async move {
        let obj = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => obj,
            // A relist's objects reach the cache together, at its end.
            Ok(watcher::Event::InitDone) => return Some(Ok(SupervisorMsg::WakeAll)),
            Ok(_) => return None,
            Err(err) => return Some(Err(err)),
        };
        let name = obj.instance_label()?.to_owned();
        Some(Ok(SupervisorMsg::Owned(
            InstanceKey {
                namespace: obj.namespace().unwrap_or_default(),
                name,
            },
            Instant::now(),
        )))
    })
}

/// Sends each event to the supervisor until it stops, and tells `/readyz` how the watch fares.
async fn pump<S>(kind: &'static str, stream: S, sink: Sink)
where
    S: Stream<Item = Result<SupervisorMsg, watcher::Error>> + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(msg) => {
                sink.health.watch_ok(kind);
                sink.traffic.watch_event(kind);
                if sink.to.send_message(msg).is_err() {
                    return;
                }
            }
            // The backoff retries; say so, since a lasting failure (RBAC, missing CRD) needs a person.
            Err(err) => {
                sink.health.watch_failed(kind);
                warn!(watch = kind, error = %err, "watch failed; retrying with backoff");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_stay_short_and_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<_> = backoff.by_ref().take(7).collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[6], LONGEST_RETRY);
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST_RETRY));
    }

    #[test]
    fn an_instance_is_cached_without_kubectls_copy_of_it() {
        let mut applied = crate::resources::fixtures::instance(&[("maxmemory", "100mb")]);
        let pause = (
            crate::decide::PAUSED_ANNOTATION.to_owned(),
            "true".to_owned(),
        );
        let copy = serde_json::to_string(&applied).unwrap();
        applied.metadata.annotations =
            Some([pause.clone(), (LAST_APPLIED_ANNOTATION.to_owned(), copy)].into());
        trim_instance(&mut applied);
        assert_eq!(
            applied.metadata.annotations,
            Some([pause].into()),
            "the annotations the operator reads stay"
        );
    }
}
