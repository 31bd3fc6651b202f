//! Which spec the pods run: validation, rejection, never-ready, halt and recall, a test each.

use super::*;
use crate::crd::{ConfigUpdate, OnFailure};
use crate::decide::HALTED_REASON;
use crate::decide::pods_fixtures::pod;
use crate::decide::pods_fixtures::{record, t};
use crate::resources::fixtures::instance;
use crate::status::fixtures::failing;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// An unready pod on `hash`, created at `created` by the API server's clock.
fn unready(hash: &str, created: i64) -> Arc<CachedPod> {
    let mut p = CachedPod::clone(&pod("redis-example-0", hash, "rev-b", false, None));
    p.metadata.creation_timestamp = Some(Time(t(created)));
    p.metadata.uid = Some(format!("uid-{created}"));
    Arc::new(p)
}

/// The operator's monotonic clock, `secs` into a test.
fn at(secs: u64) -> Instant {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *START + Duration::from_secs(secs)
}

/// One step's look at the pods, at `secs` on the operator's clock, as the actor takes it: no
/// pod at its deadline is loading.
fn look(
    memory: &mut SpecMemory,
    pods: &[Arc<CachedPod>],
    record: Option<&RolloutRecord>,
    secs: u64,
) -> PodFindings {
    memory.due_for_loading(pods, record, at(secs));
    memory.judge_pods(pods, record, &[], at(secs))
}

/// A memory that saw `old` converge, then accepted `new`.
fn moved_on(old: RedisInstance, new: RedisInstance) -> (SpecMemory, String) {
    let mut memory = SpecMemory::default();
    memory.accept(&Arc::new(old));
    let spec = memory.drive(false).unwrap();
    memory.converged(&spec);
    memory.accept(&Arc::new(new.clone()));
    (memory, hashes_of(&new).0)
}

#[test]
fn remembered_specs_follow_the_cache_copy_but_keep_their_own_spec() {
    let mut first = instance(&[("maxmemory", "100mb")]);
    first.metadata.generation = Some(1);
    let mut memory = SpecMemory::default();
    memory.accept(&Arc::new(first.clone()));
    let spec = memory.drive(false).unwrap();
    memory.converged(&spec);
    // A status write: same spec, new copy in the cache.
    let restatused = Arc::new(first.clone());
    memory.follow(&restatused);
    assert!(Arc::ptr_eq(memory.last_good.as_ref().unwrap(), &restatused));
    assert!(Arc::ptr_eq(
        memory.last_healthy.as_ref().unwrap(),
        &restatused
    ));
    // A new spec: the last healthy one is remembered as it was.
    let mut second = instance(&[("maxmemory", "200mb")]);
    second.metadata.generation = Some(2);
    let second = Arc::new(second);
    memory.accept(&second);
    assert!(Arc::ptr_eq(memory.last_good.as_ref().unwrap(), &second));
    assert!(Arc::ptr_eq(
        memory.last_healthy.as_ref().unwrap(),
        &restatused
    ));
}

#[test]
fn a_never_ready_pod_counts_only_during_a_restart_onto_its_config() {
    let (mut memory, hash) = moved_on(
        instance(&[("maxmemory", "100mb")]),
        instance(&[("maxmemory", "200mb")]),
    );
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, None, 0);
    let found = look(&mut memory, &pods, None, 500);
    assert!(found.failure.is_none(), "no restart in flight");
    let restart = record(&hash);
    look(&mut memory, &pods, Some(&restart), 500);
    let found = look(&mut memory, &pods, Some(&restart), 600);
    assert!(
        found.failure.is_none(),
        "within the deadline of when it was first seen"
    );
    let old = [unready(&hash, -300)];
    look(&mut memory, &old, Some(&restart), 600);
    let found = look(&mut memory, &old, Some(&restart), 900);
    assert!(found.failure.is_none(), "created before the restart");
    look(&mut memory, &pods, Some(&restart), 900);
    let found = look(&mut memory, &pods, Some(&restart), 1021);
    let (failure, outcome) = found.failure.unwrap();
    assert_eq!(outcome, Outcome::RolledBack);
    assert!(
        failure.message.contains("rolling back to config"),
        "{}",
        failure.message
    );
    let spec = memory.drive(false).unwrap();
    assert_eq!(spec.spec.config["maxmemory"], "100mb", "back to what ran");
}

/// The API server's clock and the operator's differ: the pod was created a minute before
/// the restart by the operator's clock, or long after; either way it is judged by how long
/// the operator has seen it unready.
#[test]
fn clock_skew_neither_hides_nor_hastens_a_never_ready_pod() {
    for created in [-60, 0, 3, 30] {
        let (mut memory, hash) = moved_on(
            instance(&[("maxmemory", "100mb")]),
            instance(&[("maxmemory", "200mb")]),
        );
        let pods = [unready(&hash, created)];
        let restart = record(&hash);
        look(&mut memory, &pods, Some(&restart), 0);
        let found = look(&mut memory, &pods, Some(&restart), 119);
        assert!(found.failure.is_none(), "created at {created}");
        let found = look(&mut memory, &pods, Some(&restart), 121);
        assert!(found.failure.is_some(), "created at {created}");
    }
}

/// A pod still loading a large dataset is unready, but not failing: each time it is found
/// loading at its deadline, the deadline counts again; once it stops loading and still is
/// not ready, the next deadline finds it.
#[test]
fn a_pod_loading_its_data_is_asked_at_its_deadline_and_given_another() {
    let (mut memory, hash) = moved_on(
        instance(&[("maxmemory", "100mb")]),
        instance(&[("maxmemory", "200mb")]),
    );
    let pods = [unready(&hash, 1)];
    let restart = record(&hash);
    let due = memory.due_for_loading(&pods, Some(&restart), at(0));
    assert!(due.is_empty());
    assert!(
        memory
            .at_deadline(&pods, Some(&restart), at(119))
            .is_empty()
    );
    assert!(memory.at_deadline(&pods, None, at(121)).is_empty());
    let due = memory.due_for_loading(&pods, Some(&restart), at(121));
    assert_eq!(due.len(), 1);
    let loading = [due[0].as_ref()];
    let found = memory.judge_pods(&pods, Some(&restart), &loading, at(121));
    assert!(found.failure.is_none(), "loading at its deadline");
    let found = look(&mut memory, &pods, Some(&restart), 240);
    assert!(found.failure.is_none(), "loading is progress");
    let found = look(&mut memory, &pods, Some(&restart), 242);
    assert!(
        found.failure.is_some(),
        "done loading and still unready a deadline later"
    );
}

#[test]
fn halt_stays_until_the_spec_or_the_restart_moves_on() {
    let mut new = instance(&[("maxmemory", "200mb")]);
    new.spec.rollout.on_failure = OnFailure::Halt;
    let (mut memory, hash) = moved_on(instance(&[("maxmemory", "100mb")]), new.clone());
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, Some(&record(&hash)), 0);
    let found = look(&mut memory, &pods, Some(&record(&hash)), 200);
    assert_eq!(found.failure.unwrap().1, Outcome::Halted);
    assert_eq!(
        hashes_of(&memory.drive(false).unwrap()).0,
        hash,
        "no rollback"
    );
    memory.forget_halt(Some(&hash));
    let found = look(&mut memory, &pods, Some(&record(&hash)), 300);
    assert!(
        memory.halted().is_some() && found.failure.is_none(),
        "found once"
    );
    memory.forget_halt(Some("another"));
    assert!(memory.halted().is_none());
}

/// An operator restarted while a rollout is halted: the halt is read back from status, so
/// the failure is neither found nor told again.
#[test]
fn a_halt_recorded_in_status_is_recalled_by_a_restarted_operator() {
    let mut halted = instance(&[("maxmemory", "200mb")]);
    halted.spec.rollout.on_failure = OnFailure::Halt;
    let hash = hashes_of(&halted).0;
    let status = crate::crd::RedisInstanceStatus {
        rollout: Some(record(&hash)),
        ..Default::default()
    };
    halted.status = Some(failing(
        status,
        crate::status::condition::PROGRESSING,
        HALTED_REASON,
        "pod redis-example-0 is still not ready; rollout halted",
    ));
    let mut memory = SpecMemory::default();
    memory.accept(&Arc::new(halted));
    assert_eq!(
        memory.halted().map(|h| h.hash.as_str()),
        Some(hash.as_str())
    );
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, Some(&record(&hash)), 0);
    let found = look(&mut memory, &pods, Some(&record(&hash)), 500);
    assert!(found.failure.is_none(), "not counted again");
    let (failure, recalled) = memory.recalled().expect("a recalled halt");
    assert_eq!(failure.hash, hash);
    assert_eq!(recalled.event_reason(), HALTED_REASON);
    let mut other = instance(&[("maxmemory", "300mb")]);
    other.spec.rollout.on_failure = OnFailure::Halt;
    memory.accept(&Arc::new(other));
    assert!(memory.halted().is_none(), "a new spec ends the halt");
}

#[test]
fn with_nothing_that_ran_a_never_ready_config_is_halted_not_rolled_back() {
    let mut memory = SpecMemory::default();
    let new = instance(&[("maxmemory", "200mb")]);
    memory.accept(&Arc::new(new.clone()));
    let hash = hashes_of(&new).0;
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, Some(&record(&hash)), 0);
    let found = look(&mut memory, &pods, Some(&record(&hash)), 200);
    assert_eq!(found.failure.unwrap().1, Outcome::Halted);
    assert!(
        memory.drive(false).is_some(),
        "the pods are left on the config, not held"
    );
}

/// A failure recorded in status is recalled with the Event its finder told, which the
/// restarted operator may owe; a new spec forgets it.
#[test]
fn a_rejection_recorded_in_status_is_recalled_with_the_event_that_told_it() {
    for (condition_reason, event_reason) in [
        ("NeverReady", "RolloutRolledBack"),
        ("RedisRejectedConfig", "RedisRejectedConfig"),
    ] {
        let mut failed = instance(&[("maxmemory", "200mb")]);
        let (hash, spec_hash) = hashes_of(&failed);
        let status = crate::crd::RedisInstanceStatus {
            rejected_config_hash: Some(spec_hash),
            rollout: Some(record("older")),
            ..Default::default()
        };
        failed.status = Some(failing(
            status,
            crate::status::condition::CONFIG_VALID,
            condition_reason,
            "pod redis-example-0 never became ready",
        ));
        let mut memory = SpecMemory::default();
        memory.accept(&Arc::new(failed));
        let (failure, recalled) = memory.recalled().expect("a recalled rejection");
        assert_eq!(failure.hash, hash);
        assert_eq!(recalled.event_reason(), event_reason);
        assert_eq!(failure.message, "pod redis-example-0 never became ready");
        memory.accept(&Arc::new(instance(&[("maxmemory", "300mb")])));
        assert!(memory.recalled().is_none(), "a new spec forgets it");
    }
}

/// An operator restarted mid-rollout knows the spec that ran from status alone: a
/// never-ready rollout still rolls back to it (not halted for want of a memory), and the
/// recorded copy holds no password.
#[test]
fn a_restarted_operator_rolls_back_to_the_healthy_spec_recorded_in_status() {
    let mut healthy = SpecMemory::default();
    let old = Arc::new(instance(&[("maxmemory", "100mb"), ("requirepass", "pw")]));
    healthy.last_good = Some(old.clone());
    healthy.converged(&healthy.drive(false).unwrap());
    let recorded = healthy.healthy_spec().unwrap();
    assert!(!recorded.contains("pw"), "{recorded}");

    let mut new = instance(&[("maxmemory", "200mb")]);
    let hash = hashes_of(&new).0;
    new.status = Some(crate::crd::RedisInstanceStatus {
        config_hash: Some(hashes_of(&old).0),
        rollout: Some(record(&hash)),
        healthy_spec: Some(recorded.clone()),
        ..Default::default()
    });
    let mut memory = SpecMemory::default();
    assert!(memory.accept(&Arc::new(new)).is_empty());
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, Some(&record(&hash)), 0);
    let found = look(&mut memory, &pods, Some(&record(&hash)), 200);
    assert_eq!(found.failure.unwrap().1, Outcome::RolledBack);
    assert!(
        memory.recalled().is_none(),
        "found by this actor, not recalled"
    );
    let spec = memory.drive(true).unwrap();
    assert_eq!(spec.spec.config["maxmemory"], "100mb");
    assert_eq!(hashes_of(&spec).0, hashes_of(&old).0, "the same file ran");
    assert_eq!(memory.healthy_spec().unwrap(), recorded);
}

/// A restarted operator on a refused spec keeps the objects on the recorded healthy spec
/// at rest, and touches nothing while a restart it no longer knows the memory of is in
/// flight.
#[test]
fn on_a_refused_spec_the_recorded_healthy_one_is_kept_only_at_rest() {
    let ran = instance(&[("maxmemory", "100mb")]);
    let mut healthy = SpecMemory::default();
    healthy.accept(&Arc::new(ran.clone()));
    healthy.converged(&healthy.drive(false).unwrap());
    let mut refused = instance(&[("maxmemory", "lots")]);
    refused.status = Some(crate::crd::RedisInstanceStatus {
        healthy_spec: healthy.healthy_spec(),
        ..Default::default()
    });
    let mut memory = SpecMemory::default();
    assert!(!memory.accept(&Arc::new(refused)).is_empty());
    assert_eq!(
        hashes_of(&memory.drive(false).unwrap()).0,
        hashes_of(&ran).0
    );
    assert!(memory.drive(true).is_none());
}

/// The operator that saw a valid spec refused by the next edit records the valid one; a
/// restarted operator keeps driving to it (a restart in flight included), as that one did.
/// A record that no longer passes validation is no memory.
#[test]
fn on_a_refused_spec_the_recorded_valid_one_is_still_driven_to() {
    let valid = instance(&[("maxmemory", "200mb"), ("requirepass", "pw")]);
    let mut refused = instance(&[("maxmemory", "lots")]);
    refused.metadata.generation = Some(3);
    // Set rather than accepted: the spec's rules refuse a password in spec.config, which an
    // instance of an earlier version may have run with.
    let mut before = SpecMemory {
        last_good: Some(Arc::new(valid.clone())),
        ..SpecMemory::default()
    };
    assert_eq!(
        before.valid_spec(&valid),
        None,
        "a valid spec is not recorded twice"
    );
    assert!(!before.accept(&Arc::new(refused.clone())).is_empty());
    let recorded = before.valid_spec(&refused).unwrap();
    assert!(!recorded.contains("pw"), "{recorded}");

    refused.status = Some(crate::crd::RedisInstanceStatus {
        valid_spec: Some(recorded.clone()),
        ..Default::default()
    });
    let mut after = SpecMemory::default();
    assert!(!after.accept(&Arc::new(refused.clone())).is_empty());
    let spec = after
        .drive(true)
        .expect("driven to the valid spec mid-restart");
    assert_eq!(spec.spec.config["maxmemory"], "200mb");
    assert_eq!(after.valid_spec(&refused).unwrap(), recorded);

    let mut edited = refused;
    edited.status = Some(crate::crd::RedisInstanceStatus {
        valid_spec: Some(recorded.replace("200mb", "lots")),
        ..Default::default()
    });
    let mut fresh = SpecMemory::default();
    assert!(!fresh.accept(&Arc::new(edited)).is_empty());
    assert!(fresh.drive(true).is_none());
}

#[test]
fn under_live_an_edit_of_live_directives_alone_still_clears_a_rejection() {
    let live = |pairs: &[(&str, &str)]| {
        let mut i = instance(pairs);
        i.spec.config_update = ConfigUpdate::Live;
        i
    };
    let (mut memory, hash) = moved_on(
        live(&[("databases", "16"), ("maxmemory", "100mb")]),
        live(&[("databases", "8"), ("maxmemory", "100mb")]),
    );
    let pods = [unready(&hash, 1)];
    look(&mut memory, &pods, Some(&record(&hash)), 0);
    look(&mut memory, &pods, Some(&record(&hash)), 200);
    assert!(memory.rejection().is_some());
    let fixed = live(&[("databases", "8"), ("maxmemory", "150mb")]);
    assert_eq!(hashes_of(&fixed).0, hash, "same template hash");
    memory.accept(&Arc::new(fixed));
    assert!(memory.rejection().is_none(), "a new spec.config is tried");
}
