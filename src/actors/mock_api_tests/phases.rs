//! A step enters each of its phases once, in order, whatever it decides: a status write the
//! API server answers with a conflict, one at rest, a repair, a refused edit, and the step that
//! finds its instance gone.

use super::*;
use crate::actors::instance::Phase;

/// The phases every step so far entered, as the actor kept them.
async fn phases(actor: &ActorRef<InstanceMsg>) -> Vec<Vec<Phase>> {
    ractor::call!(actor, InstanceMsg::Phases).expect("the actor answers")
}

/// Asks again until `done` holds of the steps' phases, then returns them.
async fn phases_until(
    actor: &ActorRef<InstanceMsg>,
    what: &str,
    done: impl Fn(&[Vec<Phase>]) -> bool,
) -> Vec<Vec<Phase>> {
    for _ in 0..200 {
        let steps = phases(actor).await;
        if done(&steps) {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {:?}", phases(actor).await);
}

#[tokio::test]
async fn each_step_enters_observe_decide_perform_and_report_once_in_order() {
    use Phase::{Decide, Observe, Perform, Report};
    let whole = [Observe, Decide, Perform, Report];
    let good = converged_instance();
    let log = Log::default();
    // The first status write is answered with a conflict: that step fails in its report.
    let client = scripted_api(&good, log.clone(), Arc::new(AtomicUsize::new(1)));
    let (stores, mut watches) = converged_caches_and_watches(&good);
    let original = stores.statefulsets.state()[0].clone();
    let timings = Timings {
        max_backoff: Duration::from_millis(50),
        settle: Duration::ZERO,
        ..Timings::default()
    };
    let (actor, handle) = spawn_instance_actor(client, stores, timings).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_status_writes(&log, 2).await;
    let stored = last_status_written(&log, &good);
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Apply(stored.clone()));

    // The StatefulSet's labels taken off by hand: put back.
    let hash = crate::resources::config_hash_of(&original).expect("a hash");
    let mut drifted = live_statefulset(&good, hash);
    drifted.metadata.labels = None;
    drifted.metadata.resource_version = Some("30".into());
    watches
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(CachedStatefulSet::from(&drifted)));
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the StatefulSet's repair", |reqs| {
        reqs.iter()
            .any(|(m, p, _)| *m == Method::PATCH && p.contains("/statefulsets/"))
    })
    .await;

    // A refused edit: told, nothing written but status.
    let mut refused = stored;
    refused.metadata.generation = Some(3);
    refused.metadata.resource_version = Some("102".into());
    refused
        .spec
        .config
        .insert("maxmemory".into(), "lots".into());
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Apply(refused.clone()));
    actor.send_message(InstanceMsg::Changed).unwrap();
    wait_until(&log, "the refusal's Event", |reqs| {
        reqs.iter().any(|(_, p, body)| {
            p.ends_with("/events") && body.to_string().contains("InvalidConfig")
        })
    })
    .await;

    let before = requests(&log).len();
    let steps = phases_until(&actor, "the refusal's step to end", |steps| {
        steps.last().is_some_and(|last| last.len() == whole.len())
    })
    .await;
    for (n, phases) in steps.iter().enumerate() {
        assert_eq!(phases, &whole, "step {n} of {steps:?}");
    }
    // The steps above: the first step's status write refused, its retry, the repair, and the
    // refusal.
    let writes = requests(&log)[..before]
        .iter()
        .filter(|(m, _, _)| *m != Method::GET)
        .count();
    assert!(
        steps.len() >= 4 && writes >= 4,
        "{} steps, {writes} writes",
        steps.len()
    );
    actor.stop(None);
    handle.await.unwrap();
}

/// A step that finds no instance (deleted before its actor first stepped) observes that and
/// enters no other phase.
#[tokio::test]
async fn a_step_that_finds_its_instance_gone_only_observes() {
    let good = converged_instance();
    let log = Log::default();
    let client = scripted_api(&good, log.clone(), Arc::default());
    let (stores, mut watches) = converged_caches_and_watches(&good);
    watches
        .instances
        .apply_watcher_event(&watcher::Event::Delete(good.clone()));
    let (actor, handle) = spawn_instance_actor(client, stores, Timings::default()).await;
    actor.send_message(InstanceMsg::Changed).unwrap();
    let steps = phases_until(&actor, "the step", |steps| !steps.is_empty()).await;
    assert_eq!(steps, vec![vec![Phase::Observe]]);
    assert!(requests(&log).is_empty(), "{:?}", requests(&log));
    actor.stop(None);
    handle.await.unwrap();
}
