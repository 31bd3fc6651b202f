//! Hibernation against the scripted API server: an actor at rest offers to hibernate, one
//! started fresh over the same caches asks nothing, and one with something pending stays.

use super::*;
use crate::actors::supervisor::SupervisorMsg;
use ractor::ActorId;
use tokio::sync::mpsc;

/// Stands in for the supervisor: passes on every offer to hibernate, as (actor, handled).
struct Offers;

impl Actor for Offers {
    type Msg = SupervisorMsg;
    type State = mpsc::UnboundedSender<(ActorId, u64)>;
    type Arguments = mpsc::UnboundedSender<(ActorId, u64)>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        offers: Self::Arguments,
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        Ok(offers)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        offers: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if let SupervisorMsg::AtRest { actor, handled, .. } = msg {
            let _ = offers.send((actor, handled));
        }
        Ok(())
    }
}

/// A stand-in supervisor and the offers it receives.
async fn offers() -> (
    ActorRef<SupervisorMsg>,
    mpsc::UnboundedReceiver<(ActorId, u64)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (supervisor, _) = Actor::spawn(None, Offers, tx).await.unwrap();
    (supervisor, rx)
}

/// The next offer, waited for a few seconds at most.
async fn next_offer(rx: &mut mpsc::UnboundedReceiver<(ActorId, u64)>) -> (ActorId, u64) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an offer to hibernate")
        .expect("the stand-in supervisor runs")
}

/// Waits a little and says whether no offer came meanwhile.
async fn no_offer(rx: &mut mpsc::UnboundedReceiver<(ActorId, u64)>) -> bool {
    tokio::time::sleep(Duration::from_millis(400)).await;
    rx.try_recv().is_err()
}

fn resting_soon(settle: Duration) -> Timings {
    Timings {
        hibernate_after: Some(Duration::from_millis(30)),
        settle,
        ..Timings::default()
    }
}

/// Plays the last status written back through the watch, as the supervisor routes it.
fn status_seen(log: &Log, good: &RedisInstance, watch: &mut Writer<RedisInstance>) {
    watch.apply_watcher_event(&watcher::Event::Apply(last_status_written(log, good)));
}

/// A converged instance: the actor stays while its status write is not in the cache (the same
/// status at an older version stands for a watch that has not delivered it yet), offers to
/// hibernate once it is, counting every message; a fresh actor started over the same caches
/// (as the supervisor does for the next event) makes no request at all and offers again.
#[tokio::test]
async fn a_converged_actor_hibernates_and_a_fresh_one_asks_nothing() {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (stores, mut watch) = converged_caches(&good);
    let stores = Arc::new(stores);
    let snapshots = Snapshots::default();
    let (supervisor, mut rx) = offers().await;
    let timings = resting_soon(Duration::from_secs(5));
    let (actor, handle) = spawn_instance_actor_with(
        client.clone(),
        stores.clone(),
        timings,
        snapshots.clone(),
        Some(supervisor.clone()),
    )
    .await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the first status write", |reqs| {
        reqs.iter().any(|(_, p, _)| p.ends_with("/status"))
    })
    .await;
    assert!(no_offer(&mut rx).await, "no status in the cache yet");
    let mut older = last_status_written(&log, &good);
    older.metadata.resource_version = Some("99".into());
    watch.apply_watcher_event(&watcher::Event::Apply(older));
    actor.send_message(InstanceMsg::StatusSeen).unwrap();
    assert!(
        no_offer(&mut rx).await,
        "its status write is not in the cache yet"
    );
    status_seen(&log, &good, &mut watch);
    actor.send_message(InstanceMsg::StatusSeen).unwrap();
    let (offered_by, handled) = next_offer(&mut rx).await;
    assert_eq!(offered_by, actor.get_id());
    assert_eq!(handled, 3, "Changed and two StatusSeen");
    assert_eq!(requests(&log).len(), 1, "{:#?}", requests(&log));

    // The supervisor takes the offer and stops it; the snapshot stays for /instances.
    actor.stop(Some("hibernating".into()));
    handle.await.unwrap();
    assert_eq!(
        snapshots.len(),
        1,
        "a hibernating instance keeps its snapshot"
    );

    let (fresh, handle) =
        spawn_instance_actor_with(client, stores, timings, snapshots, Some(supervisor)).await;
    fresh.send_message(InstanceMsg::Changed).unwrap();
    let (offered_by, handled) = next_offer(&mut rx).await;
    assert_eq!(offered_by, fresh.get_id());
    assert_eq!(handled, 1);
    assert_eq!(
        requests(&log).len(),
        1,
        "the fresh actor wrote, told or read nothing: {:#?}",
        requests(&log)
    );
    fresh.stop(None);
    handle.await.unwrap();
}

/// An actor whose status writes keep failing never offers: its retry timer is pending, and its
/// status is not in the cache (either keeps it; this does not tell which).
#[tokio::test]
async fn an_actor_retrying_does_not_hibernate() {
    let good = converged_instance();
    let log = Log::default();
    let client = failing_api(
        &good,
        log.clone(),
        Arc::new(AtomicUsize::new(usize::MAX)),
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    let (stores, _watch) = converged_caches(&good);
    let (supervisor, mut rx) = offers().await;
    let timings = Timings {
        max_backoff: Duration::from_millis(20),
        ..resting_soon(Duration::from_secs(5))
    };
    let (actor, handle) = spawn_instance_actor_with(
        client,
        Arc::new(stores),
        timings,
        Snapshots::default(),
        Some(supervisor),
    )
    .await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_status_writes(&log, 3).await;
    assert!(no_offer(&mut rx).await, "it offered while retrying");
    actor.stop(None);
    handle.await.unwrap();
}

/// An actor that has just seen a restart finish remembers it: an edit now would wait for
/// edits to settle, where a fresh actor would restart at once. It stays until the window has
/// passed; with no settle time there is no window.
#[tokio::test]
async fn an_actor_that_saw_a_restart_finish_waits_out_the_settle_window() {
    use crate::crd::{RestartReason, RolloutRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    for (settle, offers_soon) in [(Duration::from_secs(5), false), (Duration::ZERO, true)] {
        let mut restarting = converged_instance();
        restarting.status = Some(crate::crd::RedisInstanceStatus {
            observed_generation: Some(1),
            rollout: Some(RolloutRecord {
                config_hash: render(&restarting.spec.config).hash,
                restarted_at: None,
                strategy: RestartStrategy::RollingUpdate,
                reason: RestartReason::ConfigChanged,
                started_at: Time(k8s_openapi::jiff::Timestamp::now()),
            }),
            ..Default::default()
        });
        let log = Log::default();
        let client = scripted_api(&restarting, log.clone(), Arc::default());
        let (stores, mut watch) = converged_caches(&restarting);
        let (supervisor, mut rx) = offers().await;
        let (actor, handle) = spawn_instance_actor_with(
            client,
            Arc::new(stores),
            resting_soon(settle),
            Snapshots::default(),
            Some(supervisor),
        )
        .await;
        actor.send_message(InstanceMsg::Changed).unwrap();
        wait_until(&log, "the restart closed", |reqs| {
            reqs.iter().any(|(m, p, body)| {
                *m == Method::PATCH && p.ends_with("/status") && body["status"]["rollout"].is_null()
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        status_seen(&log, &restarting, &mut watch);
        actor.send_message(InstanceMsg::StatusSeen).unwrap();
        match offers_soon {
            true => {
                let (offered_by, _) = next_offer(&mut rx).await;
                assert_eq!(offered_by, actor.get_id());
            }
            false => assert!(no_offer(&mut rx).await, "offered within the settle window"),
        }
        actor.stop(None);
        handle.await.unwrap();
    }
}
