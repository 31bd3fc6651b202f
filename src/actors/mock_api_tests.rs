//! The instance actor against watch caches it is handed and a scripted API server that records
//! every request: what it writes, and what it must not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodCondition, PodStatus};
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};

use super::instance::{InstanceArgs, InstanceMsg, RedisInstanceActor, Stores, Timings};
use super::metrics::{InstanceKey, MetricsActor};
use crate::config::render::render;
use crate::crd::RedisInstance;
use crate::kube_io::InstanceApi;
use crate::limiter::{Limiter, Limits};
use crate::resources::{adoption_ref, config_map, fixtures, service, statefulset};

type Log = Arc<Mutex<Vec<(Method, String, Value)>>>;

/// Records every request. A status patch answers with `instance` carrying the sent status; the
/// first `conflicts` status patches get 409 Conflict.
fn scripted_api(instance: &RedisInstance, log: Log, conflicts: Arc<AtomicUsize>) -> kube::Client {
    let instance_json = serde_json::to_value(instance).unwrap();
    let service = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        let instance_json = instance_json.clone();
        let conflicts = conflicts.clone();
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
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict", "message": "the object has been modified"}),
                ),
                (Method::PATCH, p) if p.ends_with("/status") => {
                    let mut stored = instance_json;
                    stored["status"] = sent["status"].clone();
                    stored["metadata"]["resourceVersion"] = json!("100");
                    (StatusCode::OK, stored)
                }
                (Method::POST, p) if p.ends_with("/events") => (StatusCode::CREATED, sent),
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

/// Caches holding a converged instance, and the writer of its RedisInstance cache, to play
/// the watch.
fn converged_caches(instance: &RedisInstance) -> (Stores, Writer<RedisInstance>) {
    fn cache<K>(objects: Vec<K>) -> (reflector::Store<K>, Writer<K>)
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (reader, mut writer) = reflector::store();
        for obj in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(obj));
        }
        (reader, writer)
    }
    let rendered = render(&instance.spec.config);
    let mut sts: StatefulSet = statefulset(instance, &rendered.hash, None);
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
    let mut pod = Pod::default();
    pod.metadata.name = Some("redis-example-0".into());
    pod.metadata.namespace = instance.namespace();
    pod.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    let mut claim = PartialObjectMeta::<PersistentVolumeClaim>::default();
    claim.metadata.name = Some("data-redis-example-0".into());
    claim.metadata.namespace = instance.namespace();
    claim.metadata.owner_references = Some(vec![adoption_ref(instance)]);
    let (instances, writer) = cache(vec![instance.clone()]);
    let stores = Stores {
        instances,
        config_maps: cache(vec![config_map(instance, &rendered)]).0,
        statefulsets: cache(vec![sts]).0,
        services: cache(vec![service(instance)]).0,
        pods: cache(vec![pod]).0,
        claims: cache(vec![claim]).0,
    };
    (stores, writer)
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
    let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let args = InstanceArgs {
        key: InstanceKey {
            namespace: "team-a".into(),
            name: "redis-example".into(),
        },
        api: InstanceApi::new(
            client.clone(),
            "team-a",
            Recorder::new(client, reporter),
            Limiter::unfenced(Limits::default()),
        ),
        stores,
        metrics,
        snapshots: Default::default(),
        timings,
    };
    Actor::spawn(None, RedisInstanceActor, args).await.unwrap()
}

fn converged_instance() -> RedisInstance {
    let mut good = fixtures::instance(&[("maxmemory", "100mb")]);
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

#[tokio::test]
async fn conflicts_are_retried_with_backoff() {
    let good = converged_instance();
    let log = Log::default();
    let conflicts = Arc::new(AtomicUsize::new(3));
    let client = scripted_api(&good, log.clone(), conflicts.clone());
    let (stores, _watch) = converged_caches(&good);
    let timings = Timings {
        max_backoff: Duration::from_millis(50),
        ..Timings::default()
    };
    let (actor, handle) = spawn_instance_actor(client, stores, timings).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "a status write after the retries", |reqs| {
        reqs.iter()
            .filter(|(_, p, _)| p.ends_with("/status"))
            .count()
            == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        conflicts.load(Ordering::SeqCst),
        0,
        "all conflicts were served"
    );
    assert_eq!(
        writes_to(&log, "/status").len(),
        4,
        "three refused writes, then one that went through"
    );
    let events: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| *m == Method::POST && p.ends_with("/events"))
        .map(|(_, _, body)| body.clone())
        .collect();
    assert_eq!(
        events.len(),
        1,
        "one Warning after the third failure in a row: {events:?}"
    );
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "StatusUpdateFailed");
    actor.stop(None);
    handle.await.unwrap();
}
