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
    with_role_services(&mut stores, &instance);
    pod_changed(&stores, &mut watches, POD_IP, |_| {});
    let (actor, handle, limiter) = spawn_with_one_step(client, stores, Timings::default()).await;
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
