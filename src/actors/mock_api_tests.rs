//! The instance actor against a scripted API server: what it writes, and what it must not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use kube::client::Body;
use kube::runtime::events::Reporter;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};

use super::instance::{InstanceArgs, InstanceMsg, RedisInstanceActor, Timings};
use super::metrics::{InstanceKey, MetricsActor};
use crate::config::render::render;
use crate::crd::RedisInstance;
use crate::kube_io::InstanceApi;
use crate::resources::{config_map, fixtures, service, statefulset};

type Log = Arc<Mutex<Vec<(Method, String, Value)>>>;

/// Serves the live state of a healthy, converged instance and records every request; `stored`
/// is the RedisInstance as the API server has it now.
fn scripted_api(instance: &RedisInstance, stored: Arc<Mutex<Value>>, log: Log) -> kube::Client {
    scripted_api_with_conflicts(instance, stored, log, Arc::default())
}

/// Like [`scripted_api`], but the first `conflicts` StatefulSet writes get 409 Conflict.
fn scripted_api_with_conflicts(
    instance: &RedisInstance,
    stored: Arc<Mutex<Value>>,
    log: Log,
    conflicts: Arc<AtomicUsize>,
) -> kube::Client {
    let rendered = render(&instance.spec.config);
    let cm = serde_json::to_value(config_map(instance, &rendered)).unwrap();
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
    let sts = serde_json::to_value(sts).unwrap();
    let svc = serde_json::to_value(service(instance)).unwrap();
    let instance_json = serde_json::to_value(instance).unwrap();
    let service = tower::service_fn(move |req: Request<Body>| {
        let log = log.clone();
        let (cm, sts, svc, instance_json) =
            (cm.clone(), sts.clone(), svc.clone(), instance_json.clone());
        let stored = stored.lock().unwrap().clone();
        let conflicts = conflicts.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            log.lock()
                .unwrap()
                .push((parts.method.clone(), path.clone(), sent.clone()));
            let conflict = parts.method == Method::PATCH
                && path.ends_with("/statefulsets/redis-example")
                && conflicts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            let (status, reply) = match (parts.method.clone(), path.as_str()) {
                _ if conflict => (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict", "message": "the object has been modified"}),
                ),
                (_, p) if p.ends_with("/configmaps/redis-example-config") => (StatusCode::OK, cm),
                (_, p) if p.ends_with("/statefulsets/redis-example") => (StatusCode::OK, sts),
                (_, p) if p.ends_with("/services/redis-example") => (StatusCode::OK, svc),
                (Method::GET, p) if p.ends_with("/persistentvolumeclaims") => (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": []}),
                ),
                (_, p) if p.ends_with("/status") => (StatusCode::OK, instance_json),
                (Method::GET, p) if p.ends_with("/redisinstances/redis-example") => {
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
        api: InstanceApi::new(client, "team-a", reporter),
        metrics,
        snapshots: Default::default(),
        timings,
    };
    Actor::spawn(None, RedisInstanceActor, args).await.unwrap()
}

fn converged_instance() -> RedisInstance {
    let mut good = fixtures::instance(&[("maxmemory", "100mb")]);
    good.metadata.generation = Some(1);
    good
}

#[tokio::test]
async fn refused_edit_writes_only_status_and_an_event() {
    let good = converged_instance();
    let log = Log::default();
    let stored = Arc::new(Mutex::new(serde_json::to_value(&good).unwrap()));
    let client = scripted_api(&good, stored.clone(), log.clone());
    let (actor, handle) = spawn_instance_actor(client, Timings::default()).await;

    // A fresh actor facing a converged instance: one idempotent apply, no restart.
    actor
        .send_message(InstanceMsg::Spec(Arc::new(good.clone())))
        .unwrap();
    wait_until(&log, "the first status write", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    assert_eq!(
        writes_to(&log, "/statefulsets").len(),
        1,
        "only the idempotent re-apply"
    );
    assert!(writes_to(&log, "/configmaps").is_empty());
    log.lock().unwrap().clear();

    // An invalid edit: refused with an Event and a status, nothing else written.
    let mut bad = good.clone();
    bad.metadata.generation = Some(2);
    bad.spec.config.insert("maxmemory".into(), "lots".into());
    *stored.lock().unwrap() = serde_json::to_value(&bad).unwrap();
    actor
        .send_message(InstanceMsg::Spec(Arc::new(bad)))
        .unwrap();
    wait_until(&log, "the refusal's status write", |reqs| {
        reqs.iter().any(|(_, p, body)| {
            p.ends_with("/status") && body.to_string().contains("\"reason\":\"InvalidConfig\"")
        })
    })
    .await;
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
    assert!(
        writes_to(&log, "/statefulsets").is_empty(),
        "a refused edit must not touch the StatefulSet"
    );
    assert!(
        writes_to(&log, "/configmaps").is_empty(),
        "a refused edit must not touch the ConfigMap"
    );
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn conflicts_are_retried_with_backoff() {
    let good = converged_instance();
    let log = Log::default();
    let stored = Arc::new(Mutex::new(serde_json::to_value(&good).unwrap()));
    let conflicts = Arc::new(AtomicUsize::new(3));
    let client = scripted_api_with_conflicts(&good, stored, log.clone(), conflicts.clone());
    let timings = Timings {
        max_backoff: Duration::from_millis(50),
        ..Timings::default()
    };
    let (actor, handle) = spawn_instance_actor(client, timings).await;

    actor
        .send_message(InstanceMsg::Spec(Arc::new(good)))
        .unwrap();
    wait_until(&log, "a status write after the retries", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    assert_eq!(
        conflicts.load(Ordering::SeqCst),
        0,
        "both conflicts were served"
    );
    assert_eq!(
        writes_to(&log, "/statefulsets").len(),
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
    assert_eq!(events[0]["reason"], "ApplyFailed");
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn bursts_of_events_leave_one_timer_behind() {
    let good = converged_instance();
    let log = Log::default();
    let stored = Arc::new(Mutex::new(serde_json::to_value(&good).unwrap()));
    let client = scripted_api(&good, stored, log.clone());
    let period = Duration::from_millis(50);
    let timings = Timings {
        progress_poll: period,
        resync: period,
        ..Timings::default()
    };
    let (actor, handle) = spawn_instance_actor(client, timings).await;
    actor
        .send_message(InstanceMsg::Spec(Arc::new(good)))
        .unwrap();
    wait_until(&log, "the first status write", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    // Spaced out, so each event runs its own step while a tick is pending.
    for _ in 0..30 {
        actor.send_message(InstanceMsg::OwnedChanged).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One timer gives about one pass per period (10 here); a timer left behind per event would
    // give about 30 times as many.
    let passes = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| *m == Method::GET && p.ends_with("/redisinstances/redis-example"))
        .count();
    assert!(passes <= 30, "{passes} passes in 500ms with a 50ms period");
    actor.stop(None);
    handle.await.unwrap();
}
