//! The supervisor's respawn, on the real message path: a running supervisor whose instance
//! actor fails starts a new one after the backoff, a longer one after a second failure, and
//! none for an instance deleted meanwhile. The clock is tokio's paused one, so the backoffs
//! cost no test time and are measured exactly.

use super::*;
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use ractor::{ActorCell, ActorId};
use tokio::time::Instant;

/// A leading supervisor over the scripted API, whose watches only fail (their requests are
/// not scripted): the test routes the instance's events itself.
async fn spawn_supervisor(instance: &RedisInstance) -> ActorRef<SupervisorMsg> {
    let client = scripted_api(instance, Log::default(), Arc::default());
    let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
        .await
        .unwrap();
    let traffic = crate::api_traffic::ApiTraffic::register(&prometheus::Registry::new()).unwrap();
    let args = SupervisorArgs {
        client: client.clone(),
        writer: client,
        namespace: Some("team-a".into()),
        metrics,
        snapshots: Snapshots::default(),
        timings: Timings {
            hibernate_after: None,
            ..Timings::default()
        },
        health: Arc::default(),
        reporter: Reporter {
            controller: "test".into(),
            instance: None,
        },
        limiter: Limiter::unfenced(Limits::default()),
        regained: tokio::sync::watch::channel(0).1,
        traffic,
        logs: crate::telemetry::LogBuffers::default(),
        leading: true,
    };
    Actor::spawn(None, SupervisorActor, args).await.unwrap().0
}

fn route(supervisor: &ActorRef<SupervisorMsg>, event: watcher::Event<RedisInstance>) {
    let msg = SupervisorMsg::Instance(Box::new(event), std::time::Instant::now());
    supervisor.send_message(msg).unwrap();
}

/// The supervisor's one instance actor, once it is another than `not`: waited for a minute of
/// the paused clock at most.
async fn only_child(supervisor: &ActorRef<SupervisorMsg>, not: Option<ActorId>) -> ActorCell {
    for _ in 0..600 {
        let children = supervisor.get_children();
        if let [child] = children.as_slice()
            && Some(child.get_id()) != not
        {
            return child.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new instance actor: {:?}", supervisor.get_children());
}

/// Fails `actor` and returns when it did, on the paused clock.
fn fail(actor: &ActorCell) -> Instant {
    let failed = Instant::now();
    actor.send_message(InstanceMsg::Fail).unwrap();
    failed
}

#[tokio::test(start_paused = true)]
async fn a_failed_instance_actor_is_respawned_after_its_backoff_unless_its_instance_is_gone() {
    let instance = converged_instance();
    let supervisor = spawn_supervisor(&instance).await;
    route(&supervisor, watcher::Event::Apply(instance.clone()));
    let first = only_child(&supervisor, None).await;

    let failed = fail(&first);
    let second = only_child(&supervisor, Some(first.get_id())).await;
    let waited = failed.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2200)).contains(&waited),
        "first respawn after {waited:?}"
    );

    let failed = fail(&second);
    let third = only_child(&supervisor, Some(second.get_id())).await;
    let waited = failed.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_millis(4200)).contains(&waited),
        "second respawn after {waited:?}"
    );

    // Deleted while its respawn waits: the Respawn message finds an instance no longer known.
    fail(&third);
    route(&supervisor, watcher::Event::Delete(instance));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        supervisor.get_children().is_empty(),
        "an actor of a deleted instance was respawned: {:?}",
        supervisor.get_children()
    );
    supervisor.stop(None);
}
