//! The instance actor's writes under failure, conflict and refusal, and the writes of a
//! Recreate and of the Services migration, against the scripted API server.

use super::*;

#[tokio::test]
async fn failures_are_retried_with_backoff_and_told_after_three() {
    let (log, left, actor, handle) =
        failing_status_writes(3, StatusCode::INTERNAL_SERVER_ERROR).await;
    wait_status_writes(&log, 4).await;
    assert_eq!(left.load(Ordering::SeqCst), 0, "all failures were served");
    assert_eq!(
        writes_to(&log, "/status").len(),
        4,
        "three refused writes, then one that went through"
    );
    let events = events_posted(&log);
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

/// A status write names the uid and resourceVersion it was derived from; a conflict is looked
/// at again, not told as a failure.
#[tokio::test]
async fn status_writes_are_preconditioned_and_conflicts_looked_at_again() {
    let (log, left, actor, handle) = failing_status_writes(3, StatusCode::CONFLICT).await;
    wait_status_writes(&log, 4).await;
    assert_eq!(left.load(Ordering::SeqCst), 0);
    let writes = status_bodies(&log);
    assert_eq!(
        writes.len(),
        4,
        "three conflicts, then one that went through"
    );
    for body in &writes {
        assert_eq!(body["metadata"]["resourceVersion"], "10", "{body}");
        assert!(body["metadata"]["uid"].is_string(), "{body}");
    }
    assert_eq!(
        events_posted(&log),
        Vec::<Value>::new(),
        "a conflict is routine"
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// A write the API server refuses as invalid (422) fails the same way every time: it is told
/// once and not retried until the spec changes.
#[tokio::test]
async fn an_invalid_write_is_told_once_and_not_retried() {
    let (log, _left, actor, handle) =
        failing_status_writes(usize::MAX, StatusCode::UNPROCESSABLE_ENTITY).await;
    wait_until(&log, "the refusal's Event", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::POST && p.ends_with("/events"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events_posted(&log);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "ApiRefused");
    let writes = status_bodies(&log);
    assert!(
        writes.len() <= 2,
        "the step's write and the one recording the refusal, no retries: {}",
        writes.len()
    );
    let recorded = &writes.last().unwrap()["status"]["conditions"];
    assert!(
        recorded.to_string().contains("\"reason\":\"ApiRefused\""),
        "{recorded}"
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// A Recreate restart: the StatefulSet is deleted with propagation Orphan and its uid, and no
/// finalizer is stripped (someone else's `example.com/keep` stays); the orphaned pod is deleted
/// (gracefully, by uid) only once the StatefulSet is gone; the ConfigMap and the new StatefulSet
/// are written only once the pod is gone. No claim is touched.
#[tokio::test]
async fn a_recreate_orphans_the_claims_and_deletes_the_pods_itself() {
    let old = converged_instance();
    let mut edited = old.clone();
    edited.spec.restart_strategy = RestartStrategy::Recreate;
    edited
        .spec
        .config
        .insert("maxmemory".into(), "200mb".into());
    edited.metadata.generation = Some(2);
    let log = Log::default();
    let client = scripted_api(&edited, log.clone(), Arc::default());
    let (stores, mut watches) = converged_caches_and_watches(&old);
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Apply(edited.clone()));
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();

    // The delete, then a wait for the StatefulSet to be gone: its finalizer holds it.
    wait_until(&log, "the StatefulSet's delete", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::DELETE && p.contains("/statefulsets/"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deletes: Vec<Value> = requests(&log)
        .into_iter()
        .filter(|(m, p, _)| *m == Method::DELETE && p.contains("/statefulsets/"))
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["propagationPolicy"], "Orphan", "{}", deletes[0]);
    assert_eq!(
        deletes[0]["preconditions"]["uid"], "sts-uid-1",
        "{}",
        deletes[0]
    );
    let sts_writes: Vec<_> = writes_to(&log, "/statefulsets/")
        .into_iter()
        .filter(|(m, _)| *m != Method::DELETE)
        .collect();
    assert!(
        sts_writes.is_empty(),
        "no finalizer stripped: {sts_writes:?}"
    );
    assert!(
        writes_to(&log, "/pods/").is_empty(),
        "pods wait for the StatefulSet"
    );
    assert!(writes_to(&log, "/persistentvolumeclaims").is_empty());

    // The StatefulSet is gone: its orphaned pod is deleted, once, and then awaited.
    let gone = live_statefulset(&old, "gone");
    watches
        .statefulsets
        .apply_watcher_event(&watcher::Event::Delete(CachedStatefulSet::from(&gone)));
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the orphaned pod's delete", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::DELETE && p.ends_with("/pods/redis-example-0"))
    })
    .await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pod_deletes: Vec<Value> = requests(&log)
        .into_iter()
        .filter(|(m, p, _)| *m == Method::DELETE && p.contains("/pods/"))
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(pod_deletes.len(), 1, "{pod_deletes:?}");
    assert_eq!(pod_deletes[0]["preconditions"]["uid"], "pod-uid-0");
    assert!(
        pod_deletes[0].get("gracePeriodSeconds").is_none(),
        "graceful: {}",
        pod_deletes[0]
    );
    assert!(
        writes_to(&log, "/configmaps/").is_empty() && writes_to(&log, "/statefulsets/").len() == 1,
        "nothing is created while a pod of the old config remains: {:#?}",
        requests(&log)
    );

    // The pod is gone: the new config, then the new StatefulSet.
    let mut pod = CachedPod::default();
    pod.metadata.name = Some("redis-example-0".into());
    pod.metadata.namespace = Some("team-a".into());
    watches
        .pods
        .apply_watcher_event(&watcher::Event::Delete(pod));
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the new StatefulSet", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::PATCH && p.contains("/statefulsets/"))
    })
    .await;
    let order: Vec<(Method, String)> = requests(&log)
        .into_iter()
        .filter(|(_, p, _)| !p.ends_with("/status") && !p.ends_with("/events"))
        .map(|(m, p, _)| (m, p))
        .collect();
    let kinds: Vec<String> = order
        .iter()
        .map(|(m, p)| format!("{m} {}", p.rsplit('/').nth(1).unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            "DELETE statefulsets",
            "DELETE pods",
            "PATCH configmaps",
            "PATCH configmaps",
            "PATCH statefulsets"
        ],
        "{order:#?}"
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// Before its migration, a StatefulSet that names the headless `<name>` of earlier versions is
/// still repaired (labels removed by hand), with the `serviceName` it has: the API server
/// refuses any other, as the field cannot change.
#[tokio::test]
async fn a_repair_before_the_migration_keeps_the_service_name_it_cannot_change() {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (stores, mut watches) = converged_caches_and_watches(&good);
    let mut earlier = live_statefulset(&good, &render(&good.spec.config).hash);
    earlier.spec.service_name = Some("redis-example".into());
    earlier.metadata.labels = None;
    earlier.metadata.resource_version = Some("2".into());
    watches
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(CachedStatefulSet::from(&earlier)));
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the StatefulSet's repair", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::PATCH && p.ends_with("/statefulsets/redis-example"))
    })
    .await;
    let repair = bodies(&log, Method::PATCH, "/statefulsets/redis-example")
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(repair["spec"]["serviceName"], "redis-example", "{repair}");
    assert!(repair["metadata"]["labels"].is_object(), "{repair}");
    actor.stop(None);
    handle.await.unwrap();
}

/// A NetworkPolicy changed by hand is applied back over the one seen: the write carries its
/// uid and resourceVersion, so that over one deleted and created again, or written again,
/// meanwhile it is a conflict instead.
#[tokio::test]
async fn a_network_policy_changed_by_hand_is_put_back_over_the_one_seen() {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (mut stores, _watch) = converged_caches(&good);
    let mut changed = desired_network_policy(&good);
    changed.metadata.uid = Some("np-uid-1".into());
    changed.metadata.resource_version = Some("1".into());
    if let Some(spec) = changed.spec.as_mut() {
        spec.ingress = None;
    }
    let (policies, mut writer) = crate::actors::cache::store();
    writer.apply_watcher_event(&watcher::Event::Apply(
        crate::resources::CachedNetworkPolicy::from(&changed),
    ));
    stores.network_policies = policies;
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the NetworkPolicy written", |reqs| {
        reqs.iter().any(|(_, p, _)| p.contains("/networkpolicies/"))
    })
    .await;
    let writes = bodies(&log, Method::PATCH, "/networkpolicies/redis-example");
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["metadata"]["uid"], "np-uid-1", "{}", writes[0]);
    assert_eq!(
        writes[0]["metadata"]["resourceVersion"], "1",
        "{}",
        writes[0]
    );
    assert!(writes[0]["spec"]["ingress"].is_array(), "{}", writes[0]);
    actor.stop(None);
    handle.await.unwrap();
}

/// A replicated instance's role Service `<name>-replicas` changed by hand is applied back
/// over the one seen, its uid and resourceVersion with the write.
#[tokio::test]
async fn a_role_service_changed_by_hand_is_put_back_over_the_one_seen() {
    let mut instance = converged_instance();
    instance.spec.replicas = 2;
    let log = Log::default();
    let client = scripted_api(&instance, log.clone(), Arc::default());
    let (mut stores, _watch) = converged_caches(&instance);
    let mut changed = crate::resources::replicas_service(&instance);
    changed.metadata.uid = Some("svc-uid-1".into());
    changed.metadata.resource_version = Some("1".into());
    if let Some(spec) = changed.spec.as_mut() {
        spec.selector = Some([("app".to_owned(), "other".to_owned())].into());
    }
    let (services, mut writer) = crate::actors::cache::store();
    for svc in [service(&instance), headless_service(&instance), changed] {
        writer.apply_watcher_event(&watcher::Event::Apply(CachedService::from(&svc)));
    }
    stores.services = services;
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the role Service written", |reqs| {
        reqs.iter()
            .any(|(_, p, _)| p.ends_with("/services/redis-example-replicas"))
    })
    .await;
    let writes = bodies(&log, Method::PATCH, "/services/redis-example-replicas");
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["metadata"]["uid"], "svc-uid-1", "{}", writes[0]);
    assert_eq!(
        writes[0]["metadata"]["resourceVersion"], "1",
        "{}",
        writes[0]
    );
    assert_ne!(
        writes[0]["spec"]["selector"]["app"], "other",
        "{}",
        writes[0]
    );
    actor.stop(None);
    handle.await.unwrap();
}
