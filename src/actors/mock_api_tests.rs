//! The instance actor against watch caches it is handed and a scripted API server that records
//! every request: what it writes, and what it must not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::{Cache, CacheWriter as Writer};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};

use super::instance::{InstanceArgs, InstanceMsg, RedisInstanceActor, Snapshots, Stores, Timings};
use super::metrics::{InstanceKey, MetricsActor, MetricsMsg};
use crate::config::render::render;
use crate::crd::{RedisInstance, RestartStrategy};
use crate::kube_io::InstanceApi;
use crate::limiter::{Limiter, Limits};
use crate::resources::{
    CachedConfigMap, CachedPod, CachedPodCondition, CachedPodStatus, CachedService,
    CachedStatefulSet, config_map, fixtures, headless_service, service, statefulset,
};

type Log = Arc<Mutex<Vec<(Method, String, Value)>>>;

/// Records every request. A status patch answers with `instance` carrying the sent status; the
/// first `conflicts` status patches get 409 Conflict. An apply answers with what was sent; a
/// StatefulSet delete with the StatefulSet marked as deleting (its finalizers kept); a pod
/// delete with success; a list of EndpointSlices with [`ROUTED_IP`] ready; a read of the TLS
/// Secret `permits::TLS_SECRET` with its test material.
fn scripted_api(instance: &RedisInstance, log: Log, conflicts: Arc<AtomicUsize>) -> kube::Client {
    failing_api(instance, log, conflicts, StatusCode::CONFLICT)
}

/// [`scripted_api`] whose first `failures` status patches fail with `code`.
fn failing_api(
    instance: &RedisInstance,
    log: Log,
    conflicts: Arc<AtomicUsize>,
    code: StatusCode,
) -> kube::Client {
    let instance_json = serde_json::to_value(instance).unwrap();
    let mut deleting = serde_json::to_value(live_statefulset(instance, "deleted")).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    deleting["metadata"]["resourceVersion"] = json!("150");
    let service = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        let instance_json = instance_json.clone();
        let conflicts = conflicts.clone();
        let deleting = deleting.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            log.lock()
                .unwrap()
                .push((parts.method.clone(), path.clone(), sent.clone()));
            let conflict = path.ends_with("/status")
                && conflicts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            let (status, reply) = match (parts.method.clone(), path.as_str()) {
                _ if conflict => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code.as_u16(), "reason": code.canonical_reason(), "message": "scripted failure"}),
                ),
                (Method::PATCH, p) if p.ends_with("/status") => {
                    let mut stored = instance_json;
                    stored["status"] = without_nulls(sent["status"].clone());
                    stored["metadata"]["resourceVersion"] = json!("100");
                    (StatusCode::OK, stored)
                }
                (Method::POST, p) if p.ends_with("/events") => (StatusCode::CREATED, sent),
                (Method::PATCH, p)
                    if [
                        "/configmaps/",
                        "/statefulsets/",
                        "/networkpolicies/",
                        "/services/",
                    ]
                    .iter()
                    .any(|kind| p.contains(kind)) =>
                {
                    let mut stored = sent;
                    stored["metadata"]["resourceVersion"] = json!("200");
                    (StatusCode::OK, stored)
                }
                (Method::GET, p) if p.ends_with(&format!("/secrets/{}", permits::TLS_SECRET)) => {
                    (StatusCode::OK, permits::tls_secret())
                }
                (Method::GET, p) if p.ends_with("/endpointslices") => {
                    (StatusCode::OK, endpoint_slices_listing(ROUTED_IP))
                }
                (Method::DELETE, p) if p.contains("/statefulsets/") => (StatusCode::OK, deleting),
                (Method::DELETE, p) if p.contains("/pods/") => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not scripted"}),
                ),
            };
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    kube::Client::new(service, "team-a")
}

/// The one ready address of every Service's EndpointSlices (a pod the tests give it).
const ROUTED_IP: &str = "127.0.0.90";

/// An EndpointSlice list with one slice, `ip` ready in it.
fn endpoint_slices_listing(ip: &str) -> Value {
    json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "items": [{
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "slice", "namespace": "team-a"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        }],
    })
}

/// A merge patch's object as the server stores it: a `null` removes the field (a list sent
/// as `null`, such as an empty replication summary, would not read back otherwise).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The StatefulSet of a converged instance as the cache shows it: a uid, a version, a
/// finalizer someone else put there, and a status saying the rollout is complete.
fn live_statefulset(instance: &RedisInstance, hash: &str) -> StatefulSet {
    let mut sts: StatefulSet = statefulset(instance, hash, None);
    sts.metadata.uid = Some("sts-uid-1".into());
    sts.metadata.resource_version = Some("1".into());
    sts.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    sts.metadata.generation = Some(1);
    sts.status = Some(StatefulSetStatus {
        observed_generation: Some(1),
        replicas: 1,
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        ..StatefulSetStatus::default()
    });
    sts
}

/// The instance's NetworkPolicy as the actor builds it.
fn desired_network_policy(
    instance: &RedisInstance,
) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    let namespace = super::instance::network::OPERATOR_NAMESPACE.as_deref();
    crate::resources::network_policy(instance, namespace)
}

/// The writers of the caches, to play the watches.
struct Watches {
    instances: Writer<RedisInstance>,
    statefulsets: Writer<CachedStatefulSet>,
    pods: Writer<CachedPod>,
}

/// Caches holding a converged instance, and the writer of its RedisInstance cache, to play
/// the watch.
fn converged_caches(instance: &RedisInstance) -> (Stores, Writer<RedisInstance>) {
    let (stores, watches) = converged_caches_and_watches(instance);
    (stores, watches.instances)
}

/// [`converged_caches`] with the writers of the StatefulSet and pod caches too.
fn converged_caches_and_watches(instance: &RedisInstance) -> (Stores, Watches) {
    fn cache<K>(objects: Vec<K>) -> (Cache<K>, Writer<K>)
    where
        K: Resource + Clone,
    {
        let (reader, mut writer) = super::cache::store();
        for obj in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(obj));
        }
        (reader, writer)
    }
    let rendered = render(&crate::config::effective(instance));
    // Under `configUpdate: Live` the pods carry the hash of the restart-class directives only.
    let template_hash = crate::live::template_hash(instance, &rendered);
    let sts = live_statefulset(instance, &template_hash);
    let mut pod = CachedPod::default();
    pod.metadata.name = Some("redis-example-0".into());
    pod.metadata.namespace = instance.namespace();
    pod.metadata.uid = Some("pod-uid-0".into());
    pod.metadata.resource_version = Some("1".into());
    pod.status = Some(CachedPodStatus {
        conditions: Some(vec![CachedPodCondition {
            type_: "Ready".into(),
            status: "True".into(),
        }]),
        ..CachedPodStatus::default()
    });
    let mut cm = config_map(instance, &rendered);
    cm.metadata.resource_version = Some("1".into());
    let mut revision = CachedConfigMap::from(&crate::resources::revision_config_map(
        instance,
        &rendered,
        &template_hash,
    ));
    revision.metadata.resource_version = Some("1".into());
    let revisions = crate::actors::revision_index::RevisionIndex::default();
    revisions.follow(&watcher::Event::Apply(revision.clone()));
    let (instances, instances_writer) = cache(vec![instance.clone()]);
    let (statefulsets, statefulsets_writer) = cache(vec![CachedStatefulSet::from(&sts)]);
    let (pods, pods_writer) = cache(vec![pod]);
    let stores = Stores {
        instances,
        config_maps: cache(vec![CachedConfigMap::from(&cm), revision]).0,
        revisions,
        statefulsets,
        services: cache(vec![
            CachedService::from(&service(instance)),
            CachedService::from(&headless_service(instance)),
        ])
        .0,
        pods,
        network_policies: cache(vec![crate::resources::CachedNetworkPolicy::from(
            &desired_network_policy(instance),
        )])
        .0,
        versions: Default::default(),
        secrets: cache(Vec::new()).0,
        secret_versions: Default::default(),
    };
    let watches = Watches {
        instances: instances_writer,
        statefulsets: statefulsets_writer,
        pods: pods_writer,
    };
    (stores, watches)
}

/// Puts the three Services of a replicated instance in `stores`, so that a step has none of
/// them to write.
fn with_role_services(stores: &mut Stores, instance: &RedisInstance) {
    let (services, mut writer) = super::cache::store();
    for svc in [
        service(instance),
        headless_service(instance),
        crate::resources::replicas_service(instance),
    ] {
        writer.apply_watcher_event(&watcher::Event::Apply(CachedService::from(&svc)));
    }
    stores.services = services;
}

/// Plays the watch event of the cached pod after `change`, at `ip`.
fn pod_changed(
    stores: &Stores,
    watches: &mut Watches,
    ip: &str,
    change: impl FnOnce(&mut CachedPod),
) {
    let mut pod = stores.pods.state()[0].as_ref().clone();
    if let Some(status) = pod.status.as_mut() {
        status.pod_ip = Some(ip.into());
    }
    change(&mut pod);
    watches
        .pods
        .apply_watcher_event(&watcher::Event::Apply(pod));
}

/// The instance's actor over `stores`, with one step permit and one pod check permit in all
/// (so that holding one holds every step or every check), and its limiter.
async fn spawn_with_one_step(
    client: kube::Client,
    stores: Stores,
    timings: Timings,
) -> (ActorRef<InstanceMsg>, JoinHandle<()>, Limiter) {
    let limiter = Limiter::unfenced(Limits {
        steps: 1,
        pod_checks: 1,
        ..Limits::default()
    });
    let args = instance_args(
        client,
        Arc::new(stores),
        limiter.clone(),
        timings,
        Snapshots::default(),
        None,
    )
    .await;
    let (actor, handle) = Actor::spawn(None, RedisInstanceActor, args).await.unwrap();
    (actor, handle, limiter)
}

/// The instance's actor with `args`, reporting to a metrics actor of its own, which the test
/// can render.
async fn spawn_rendering_metrics(
    mut args: InstanceArgs,
) -> (ActorRef<InstanceMsg>, JoinHandle<()>, ActorRef<MetricsMsg>) {
    let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
        .await
        .unwrap();
    args.metrics = metrics.clone();
    let (actor, handle) = Actor::spawn(None, RedisInstanceActor, args).await.unwrap();
    (actor, handle, metrics)
}

fn writes_to(log: &Log, kind: &str) -> Vec<(Method, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| *m != Method::GET && p.contains(kind))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect()
}

async fn wait_until(log: &Log, what: &str, check: impl Fn(&[(Method, String, Value)]) -> bool) {
    for _ in 0..200 {
        if check(&log.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "timed out waiting for {what}; requests: {:#?}",
        log.lock().unwrap()
    );
}

async fn spawn_instance_actor(
    client: kube::Client,
    stores: Stores,
    timings: Timings,
) -> (ActorRef<InstanceMsg>, JoinHandle<()>) {
    spawn_instance_actor_with(
        client,
        Arc::new(stores),
        timings,
        Snapshots::default(),
        None,
    )
    .await
}

async fn spawn_instance_actor_with(
    client: kube::Client,
    stores: Arc<Stores>,
    timings: Timings,
    snapshots: Snapshots,
    supervisor: Option<ActorRef<super::supervisor::SupervisorMsg>>,
) -> (ActorRef<InstanceMsg>, JoinHandle<()>) {
    let limiter = Limiter::unfenced(Limits::default());
    let args = instance_args(client, stores, limiter, timings, snapshots, supervisor).await;
    Actor::spawn(None, RedisInstanceActor, args).await.unwrap()
}

/// What the test instance's actor is started with, its writes going through `limiter`.
async fn instance_args(
    client: kube::Client,
    stores: Arc<Stores>,
    limiter: Limiter,
    timings: Timings,
    snapshots: Snapshots,
    supervisor: Option<ActorRef<super::supervisor::SupervisorMsg>>,
) -> InstanceArgs {
    let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    InstanceArgs {
        key: InstanceKey {
            namespace: "team-a".into(),
            name: "redis-example".into(),
        },
        api: InstanceApi::new(
            client.clone(),
            "team-a",
            crate::events::EventPoster::new(client, reporter),
            limiter,
        ),
        stores,
        metrics,
        snapshots,
        timings,
        supervisor,
    }
}

/// Auth is off: these tests are about the API writes of config changes, and a mocked API has
/// no Redis to give ACL users to.
fn converged_instance() -> RedisInstance {
    let mut good = fixtures::instance(&[("maxmemory", "100mb")]);
    good.spec.auth.disabled = true;
    good.metadata.generation = Some(1);
    good.metadata.resource_version = Some("10".into());
    good
}

/// The body of the last status patch, as the watch would deliver it back.
fn last_status_written(log: &Log, base: &RedisInstance) -> RedisInstance {
    let body = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(m, p, _)| *m == Method::PATCH && p.ends_with("/status"))
        .map(|(_, _, body)| body.clone())
        .expect("a status write");
    let mut stored = serde_json::to_value(base).unwrap();
    stored["status"] = body["status"].clone();
    stored["metadata"]["resourceVersion"] = json!("100");
    serde_json::from_value(stored).unwrap()
}

/// An actor for a converged instance, after its first step (which writes the status).
async fn first_step_of_a_converged_instance() -> (
    RedisInstance,
    Log,
    ActorRef<InstanceMsg>,
    JoinHandle<()>,
    Writer<RedisInstance>,
) {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (stores, watch) = converged_caches(&good);
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the first status write", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    (good, log, actor, handle, watch)
}

/// A step under way when its instance is deleted may put its snapshot and series back after
/// the supervisor dropped them: the actor drops them again when it stops.
#[tokio::test]
async fn a_deleted_instance_leaves_no_snapshot_or_series_behind() {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (stores, mut watch) = converged_caches(&good);
    let snapshots = Snapshots::default();
    let limiter = Limiter::unfenced(Limits::default());
    let stores = Arc::new(stores);
    let args = instance_args(
        client,
        stores,
        limiter,
        Timings::default(),
        snapshots.clone(),
        None,
    )
    .await;
    // Without a supervisor, only the actor's own end can forget the instance's series.
    let (actor, handle, metrics) = spawn_rendering_metrics(args).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the first status write", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    assert_eq!(snapshots.len(), 1, "the step published its snapshot");
    let series = || async {
        let text = ractor::call_t!(metrics, MetricsMsg::Render, 1000)
            .unwrap()
            .unwrap();
        text.lines()
            .filter(|l| l.contains(r#"instance="redis-example""#))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(!series().await.is_empty(), "the step published its series");
    watch.apply_watcher_event(&watcher::Event::Delete(good.clone()));
    actor.stop(Some("instance deleted".into()));
    handle.await.unwrap();
    assert!(snapshots.is_empty(), "a deleted instance left its snapshot");
    // Messages to the metrics actor are handled in order: the render follows the Forget.
    assert_eq!(
        series().await,
        Vec::<String>::new(),
        "a deleted instance left its series"
    );
}

/// An operator started after a rollback was recorded, on a spec whose config the pods never ran
/// (so no spec it knows is safe to run): the pods have finished the rollback, so the record is
/// closed, not left to keep the instance "restarting" until the spec changes.
#[tokio::test]
async fn a_finished_rollback_recorded_before_a_restart_is_closed() {
    use crate::crd::{RestartReason, RolloutRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let good = converged_instance();
    let (stores, mut watches) = converged_caches_and_watches(&good);
    let mut rejected = good.clone();
    rejected
        .spec
        .config
        .insert("maxmemory".into(), "200mb".into());
    rejected.metadata.generation = Some(2);
    let started = Time(k8s_openapi::jiff::Timestamp::now());
    rejected.status = Some(crate::crd::RedisInstanceStatus {
        observed_generation: Some(2),
        rejected_config_hash: Some(render(&rejected.spec.config).hash),
        rollout: Some(RolloutRecord {
            config_hash: render(&good.spec.config).hash,
            restarted_at: None,
            strategy: RestartStrategy::RollingUpdate,
            reason: RestartReason::RolledBack,
            started_at: started.clone(),
        }),
        conditions: vec![Condition {
            type_: "ConfigValid".into(),
            status: "False".into(),
            reason: "NeverReady".into(),
            message: "never ready; rolling back".into(),
            observed_generation: Some(2),
            last_transition_time: started,
        }],
        ..Default::default()
    });
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Apply(rejected.clone()));
    let log = Log::default();
    let client = scripted_api(&rejected, log.clone(), Arc::default());
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the record closed", |reqs| {
        reqs.iter().any(|(m, p, body)| {
            *m == Method::PATCH && p.ends_with("/status") && body["status"]["rollout"].is_null()
        })
    })
    .await;
    let events = events_posted(&log);
    assert!(
        events.iter().any(|e| e["reason"] == "RestartCompleted"),
        "{events:?}"
    );
    let others: Vec<_> = requests(&log)
        .into_iter()
        .filter(|(_, p, _)| !p.ends_with("/status") && !p.ends_with("/events"))
        .map(|(m, p, _)| (m, p))
        .collect();
    assert!(others.is_empty(), "nothing else is written: {others:?}");
    actor.stop(None);
    handle.await.unwrap();
}

/// A converged instance: the first step writes its status once; played back by the watch, the
/// status starts no further write, and neither do any number of events.
#[tokio::test]
async fn a_converged_instance_at_rest_makes_no_request() {
    let (good, log, actor, handle, mut watch) = first_step_of_a_converged_instance().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = log.lock().unwrap().len();
    assert_eq!(requests, 1, "{:#?}", log.lock().unwrap());
    watch.apply_watcher_event(&watcher::Event::Apply(last_status_written(&log, &good)));
    for _ in 0..30 {
        actor.send_message(InstanceMsg::Changed).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.lock().unwrap().len(), 1, "{:#?}", log.lock().unwrap());
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn refused_edit_writes_only_status_and_an_event() {
    let (good, log, actor, handle, mut watch) = first_step_of_a_converged_instance().await;
    let mut bad = last_status_written(&log, &good);
    log.lock().unwrap().clear();

    // An invalid edit: refused with an Event and a status, nothing else written.
    bad.metadata.generation = Some(2);
    bad.metadata.resource_version = Some("101".into());
    bad.spec.config.insert("maxmemory".into(), "lots".into());
    watch.apply_watcher_event(&watcher::Event::Apply(bad));
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the refusal's status write", |reqs| {
        reqs.iter().any(|(_, p, body)| {
            p.ends_with("/status") && body.to_string().contains("\"reason\":\"InvalidConfig\"")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = writes_to(&log, "/events");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = log
        .lock()
        .unwrap()
        .iter()
        .find(|(_, p, _)| p.ends_with("/events"))
        .unwrap()
        .2
        .clone();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidConfig");
    assert!(
        event["note"].as_str().unwrap().contains("maxmemory"),
        "{event}"
    );
    let others: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| !p.ends_with("/status") && !p.ends_with("/events"))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert!(
        others.is_empty(),
        "a refused edit writes nothing else: {others:?}"
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// An actor for a converged instance whose first `failures` status writes fail with `code`,
/// with retries capped at 50 ms.
async fn failing_status_writes(
    failures: usize,
    code: StatusCode,
) -> (Log, Arc<AtomicUsize>, ActorRef<InstanceMsg>, JoinHandle<()>) {
    let good = converged_instance();
    let log = Log::default();
    let left = Arc::new(AtomicUsize::new(failures));
    let client = failing_api(&good, log.clone(), left.clone(), code);
    let (stores, _watch) = converged_caches(&good);
    let timings = Timings {
        max_backoff: Duration::from_millis(50),
        ..Timings::default()
    };
    let (actor, handle) = spawn_instance_actor(client, stores, timings).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    (log, left, actor, handle)
}

/// Waits for `count` status writes, and a little longer to see that no more follow.
async fn wait_status_writes(log: &Log, count: usize) {
    wait_until(log, &format!("{count} status writes"), |reqs| {
        reqs.iter()
            .filter(|(_, p, _)| p.ends_with("/status"))
            .count()
            == count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Bodies of the requests so far made with `method` to a path ending in `suffix`.
fn bodies(log: &Log, method: Method, suffix: &str) -> Vec<Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| *m == method && p.ends_with(suffix))
        .map(|(_, _, body)| body.clone())
        .collect()
}

/// Bodies of the status writes so far.
fn status_bodies(log: &Log) -> Vec<Value> {
    bodies(log, Method::PATCH, "/status")
}

fn events_posted(log: &Log) -> Vec<Value> {
    bodies(log, Method::POST, "/events")
}

/// The requests so far, as (method, path, body).
fn requests(log: &Log) -> Vec<(Method, String, Value)> {
    log.lock().unwrap().clone()
}

mod permits;
mod phases;
mod probes;
mod respawn;
mod rest;
mod unanswered;
mod writes;
