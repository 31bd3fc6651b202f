//! A replicated instance's pods are probed outside its steps: while another holds every step
//! permit, its pods' Redis is still dialled.

use std::sync::atomic::AtomicUsize;

use tokio::net::TcpListener;

use super::*;

/// A loopback address no other test listens on, standing in for the pod's Redis: it only
/// counts the connections made to it.
const POD_IP: &str = "127.0.0.86";

async fn connections_counted(count: Arc<AtomicUsize>) -> JoinHandle<()> {
    let port = u16::try_from(crate::config::render::REDIS_PORT).unwrap();
    let listener = TcpListener::bind((POD_IP, port)).await.expect("bind");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    })
}

async fn connections_above(count: &AtomicUsize, seen: usize, what: &str) -> usize {
    for _ in 0..200 {
        let now = count.load(Ordering::SeqCst);
        if now > seen {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_pods_are_probed_while_every_step_permit_is_held_elsewhere() {
    let count = Arc::new(AtomicUsize::new(0));
    let listening = connections_counted(count.clone()).await;
    let mut instance = converged_instance();
    instance.spec.replicas = 2;
    let log = Log::default();
    let client = scripted_api(&instance, log.clone(), Arc::default());
    let (mut stores, mut watches) = converged_caches_and_watches(&instance);
    // The role Services already there, so that a step has nothing of them to write.
    let (services, mut writer) = crate::actors::cache::store();
    for svc in [
        service(&instance),
        headless_service(&instance),
        crate::resources::replicas_service(&instance),
    ] {
        writer.apply_watcher_event(&watcher::Event::Apply(CachedService::from(&svc)));
    }
    stores.services = services;
    let mut pod = stores.pods.state()[0].as_ref().clone();
    if let Some(status) = pod.status.as_mut() {
        status.pod_ip = Some(POD_IP.into());
    }
    watches
        .pods
        .apply_watcher_event(&watcher::Event::Apply(pod));
    // One step at a time, so that holding one permit holds every step.
    let limiter = Limiter::unfenced(Limits {
        steps: 1,
        ..Limits::default()
    });
    let args = instance_args(
        client,
        Arc::new(stores),
        limiter.clone(),
        Timings::default(),
        Snapshots::default(),
        None,
    )
    .await;
    let (actor, handle) = Actor::spawn(None, RedisInstanceActor, args).await.unwrap();
    actor.send_message(InstanceMsg::Changed).unwrap();
    connections_above(&count, 0, "the first probe").await;
    let held = tokio::time::timeout(Duration::from_secs(10), limiter.step())
        .await
        .expect("the actor gives its step permit back");
    let before = count.load(Ordering::SeqCst);
    connections_above(&count, before, "a probe while no step can run").await;
    drop(held);
    actor.stop(None);
    handle.await.unwrap();
    listening.abort();
}
