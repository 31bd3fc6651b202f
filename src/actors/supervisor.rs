//! The supervisor: watches RedisInstances and their objects, keeps one instance actor per
//! instance, routes events to it, and respawns a failed actor with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use super::instance::{InstanceArgs, InstanceMsg, RedisInstanceActor, Snapshots, Stores, Timings};
use super::metrics::{InstanceKey, MetricsMsg};
use crate::crd::RedisInstance;
use crate::kube_io::InstanceApi;
use crate::limiter::Limiter;
use crate::resources::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER};

/// Everything the supervisor is started with.
pub struct SupervisorArgs {
    /// API client.
    pub client: Client,
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// The metrics actor.
    pub metrics: ActorRef<MetricsMsg>,
    /// Shared view for the HTTP side.
    pub snapshots: Snapshots,
    /// Passed to every instance actor.
    pub timings: Timings,
    /// Set once the first full list of RedisInstances has been routed (for `/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Identity on published Events.
    pub reporter: Reporter,
    /// Shared by every instance's writes.
    pub limiter: Limiter,
}

/// Messages the supervisor handles; the watch tasks send the first two.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// An event from the RedisInstance watcher.
    Instance(Box<watcher::Event<RedisInstance>>),
    /// An object labelled with this instance changed or was deleted (already in the caches).
    Owned(InstanceKey),
    /// A watch of owned objects re-listed: its cache was replaced as a whole.
    OwnedRelisted,
    /// Try again to start the actor of an instance whose actor failed.
    Respawn(InstanceKey),
}

/// The supervisor's memory.
pub struct SupervisorState {
    args: SupervisorArgs,
    actors: HashMap<InstanceKey, ActorRef<InstanceMsg>>,
    children: HashMap<ActorId, InstanceKey>,
    /// Generation last routed per instance: status-only updates (the operator's own status
    /// writes among them) start no step.
    instances: HashMap<InstanceKey, Option<i64>>,
    stores: Stores,
    /// Keys seen since the watcher's last (re)list began.
    relisting: Option<HashSet<InstanceKey>>,
    failures: HashMap<InstanceKey, u32>,
    watch_tasks: Vec<JoinHandle<()>>,
}

/// See the module docs.
pub struct SupervisorActor;

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (stores, watch_tasks) = start_watches(&myself, &args.client, args.namespace.as_deref());
        Ok(SupervisorState {
            args,
            actors: HashMap::new(),
            children: HashMap::new(),
            instances: HashMap::new(),
            stores,
            relisting: None,
            failures: HashMap::new(),
            watch_tasks,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Instance(event) => on_instance_event(&myself, state, *event).await,
            SupervisorMsg::Owned(key) => {
                if let Some(actor) = state.actors.get(&key) {
                    let _ = actor.send_message(InstanceMsg::Changed);
                }
            }
            SupervisorMsg::OwnedRelisted => {
                for actor in state.actors.values() {
                    let _ = actor.send_message(InstanceMsg::Changed);
                }
            }
            SupervisorMsg::Respawn(key) => {
                if state.instances.contains_key(&key) {
                    ensure_actor(&myself, state, &key).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden because the default stops the supervisor whenever any child ends.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(key) = state.children.remove(&cell.get_id()) {
                    remove_if_current(state, &key, &cell);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(key) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                if !remove_if_current(state, &key, &cell) {
                    // A newer actor already serves this key (deleted and recreated instance).
                    return Ok(());
                }
                let failures = state.failures.entry(key.clone()).or_insert(0);
                *failures += 1;
                let delay = Duration::from_secs(1u64 << (*failures).min(6));
                error!(namespace = %key.namespace, instance = %key.name, error = %err,
                    respawn_in_secs = delay.as_secs(), "instance actor failed");
                if state.instances.contains_key(&key) {
                    myself.send_after(delay, move || SupervisorMsg::Respawn(key));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.watch_tasks.drain(..) {
            task.abort();
        }
        // Each child finishes the step it is in (every step is a safe point), then stops.
        myself
            .stop_children_and_wait(
                Some("operator shutting down".into()),
                Some(Duration::from_secs(20)),
            )
            .await;
        Ok(())
    }
}

async fn on_instance_event(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    event: watcher::Event<RedisInstance>,
) {
    match event {
        watcher::Event::Init => state.relisting = Some(HashSet::new()),
        watcher::Event::InitApply(instance) => {
            // The cache shows a (re)list only once it is complete: its steps wait for InitDone.
            let key = key_of(&instance);
            if let Some(seen) = state.relisting.as_mut() {
                seen.insert(key.clone());
            }
            state
                .instances
                .insert(key.clone(), instance.metadata.generation);
        }
        watcher::Event::Apply(instance) => {
            let key = key_of(&instance);
            let generation = instance.metadata.generation;
            let known = state.instances.insert(key.clone(), generation);
            let spec_changed = known != Some(generation);
            if spec_changed || instance.metadata.deletion_timestamp.is_some() {
                ensure_actor(myself, state, &key).await;
            }
        }
        watcher::Event::Delete(instance) => forget(state, &key_of(&instance)),
        watcher::Event::InitDone => {
            // Instances deleted while the watch was down never sent a Delete.
            if let Some(seen) = state.relisting.take() {
                let gone: Vec<_> = state
                    .instances
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    forget(state, &key);
                }
            }
            // Every instance takes one step from the fresh cache: the operator's resync.
            let keys: Vec<_> = state.instances.keys().cloned().collect();
            for key in keys {
                ensure_actor(myself, state, &key).await;
            }
            if !state.args.ready.swap(true, Ordering::SeqCst) {
                info!(
                    instances = state.instances.len(),
                    "initial list of RedisInstances routed"
                );
            }
        }
    }
}

/// Starts the instance's actor if it has none, and wakes it.
async fn ensure_actor(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    key: &InstanceKey,
) {
    if !state.actors.contains_key(key) {
        let args = InstanceArgs {
            key: key.clone(),
            api: InstanceApi::new(
                state.args.client.clone(),
                &key.namespace,
                state.args.reporter.clone(),
                state.args.limiter.clone(),
            ),
            stores: state.stores.clone(),
            metrics: state.args.metrics.clone(),
            snapshots: state.args.snapshots.clone(),
            timings: state.args.timings,
        };
        match Actor::spawn_linked(None, RedisInstanceActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                info!(namespace = %key.namespace, instance = %key.name, "instance actor started");
                state.children.insert(actor.get_id(), key.clone());
                state.actors.insert(key.clone(), actor);
            }
            Err(err) => {
                warn!(namespace = %key.namespace, instance = %key.name, error = %err, "failed to start instance actor; retrying");
                let key = key.clone();
                myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Respawn(key));
                return;
            }
        }
    }
    if let Some(actor) = state.actors.get(key) {
        let _ = actor.send_message(InstanceMsg::Changed);
    }
}

/// Drops `key`'s actor only if it is the one that ended: when an instance is deleted and
/// created again quickly, the old actor's end must not unregister the new one.
fn remove_if_current(
    state: &mut SupervisorState,
    key: &InstanceKey,
    ended: &ractor::ActorCell,
) -> bool {
    let current = state
        .actors
        .get(key)
        .is_some_and(|a| a.get_id() == ended.get_id());
    if current {
        state.actors.remove(key);
    }
    current
}

/// The instance is gone: stop its actor (owned objects go with the garbage collector).
fn forget(state: &mut SupervisorState, key: &InstanceKey) {
    state.instances.remove(key);
    state.failures.remove(key);
    state.args.snapshots.remove(key);
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::Forget(key.clone()));
    if let Some(actor) = state.actors.remove(key) {
        state.children.remove(&actor.get_id());
        info!(namespace = %key.namespace, instance = %key.name, "instance deleted; stopping its actor");
        actor.stop(Some("instance deleted".into()));
    }
}

fn key_of<K: Resource>(obj: &K) -> InstanceKey {
    InstanceKey {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
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

/// Watches one kind the operator owns into a cache, and routes each change to the instance
/// named by the object's label. Managed fields are dropped: nothing reads them, and they are
/// much of an object's size.
fn watch_owned<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    to: ActorRef<SupervisorMsg>,
    kind: &'static str,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .modify(move |obj: &mut K| {
            obj.meta_mut().managed_fields = None;
            trim(obj);
        })
        .reflect(writer)
        .default_backoff();
    (reader, forward(kind, owned_events(stream), to))
}

/// Stores an object as it comes.
fn keep<K>(_: &mut K) {}

fn start_watches(
    myself: &ActorRef<SupervisorMsg>,
    client: &Client,
    namespace: Option<&str>,
) -> (Stores, Vec<JoinHandle<()>>) {
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let (config_maps, cm_task) = watch_owned::<ConfigMap>(
        api(client, namespace),
        owned.clone(),
        keep,
        myself.clone(),
        "ConfigMap",
    );
    let (statefulsets, sts_task) = watch_owned::<StatefulSet>(
        api(client, namespace),
        owned.clone(),
        keep,
        myself.clone(),
        "StatefulSet",
    );
    let (services, svc_task) = watch_owned::<Service>(
        api(client, namespace),
        owned.clone(),
        keep,
        myself.clone(),
        "Service",
    );
    // The decisions read a pod's metadata and status only; its spec is most of its size.
    let (pods, pod_task) = watch_owned::<Pod>(
        api(client, namespace),
        owned.clone(),
        |pod| pod.spec = None,
        myself.clone(),
        "Pod",
    );
    let (claims, claim_task) = watch_owned::<PartialObjectMeta<PersistentVolumeClaim>>(
        api(client, namespace),
        owned,
        keep,
        myself.clone(),
        "PersistentVolumeClaim",
    );
    let (instances, instance_writer) = reflector::store();
    let stores = Stores {
        instances,
        config_maps,
        statefulsets,
        services,
        pods,
        claims,
    };
    let instance_stream = watcher(
        api::<RedisInstance>(client, namespace),
        watcher::Config::default(),
    )
    .modify(|ri: &mut RedisInstance| ri.metadata.managed_fields = None)
    .reflect(instance_writer)
    .default_backoff()
    .map(|event| event.map(|e| SupervisorMsg::Instance(Box::new(e))));
    let gate = stores.clone();
    let to = myself.clone();
    // Instances are routed only once every owned cache holds its first list: a step taken
    // before would see no StatefulSet and create one that exists.
    let instance_task = ractor::concurrency::spawn(async move {
        let _ = futures::join!(
            gate.config_maps.wait_until_ready(),
            gate.statefulsets.wait_until_ready(),
            gate.services.wait_until_ready(),
            gate.pods.wait_until_ready(),
            gate.claims.wait_until_ready(),
        );
        pump("RedisInstance", instance_stream, to).await;
    });
    (
        stores,
        vec![
            cm_task,
            sts_task,
            svc_task,
            pod_task,
            claim_task,
            instance_task,
        ],
    )
}

/// Maps owned-object events to the instance they belong to, by label.
fn owned_events<S, K>(stream: S) -> impl Stream<Item = Result<SupervisorMsg, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Resource + Send,
{
    stream.filter_map(|event| async move {
        let obj = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => obj,
            // A relist's objects reach the cache together, at its end.
            Ok(watcher::Event::InitDone) => return Some(Ok(SupervisorMsg::OwnedRelisted)),
            Ok(_) => return None,
            Err(err) => return Some(Err(err)),
        };
        let name = obj.labels().get(INSTANCE_LABEL)?.clone();
        Some(Ok(SupervisorMsg::Owned(InstanceKey {
            namespace: obj.namespace().unwrap_or_default(),
            name,
        })))
    })
}

fn forward<S>(what: &'static str, stream: S, to: ActorRef<SupervisorMsg>) -> JoinHandle<()>
where
    S: Stream<Item = Result<SupervisorMsg, watcher::Error>> + Send + 'static,
{
    ractor::concurrency::spawn(pump(what, stream, to))
}

/// Sends each event to the supervisor until it stops.
async fn pump<S>(what: &'static str, stream: S, to: ActorRef<SupervisorMsg>)
where
    S: Stream<Item = Result<SupervisorMsg, watcher::Error>> + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(msg) => {
                if to.send_message(msg).is_err() {
                    return;
                }
            }
            // The backoff retries; say so, since a lasting failure (RBAC, missing CRD) needs a person.
            Err(err) => {
                warn!(watch = what, error = %err, "watch failed; retrying with backoff")
            }
        }
    }
}
