//! Safe rollouts on the local cluster with real Redis: a config the pods never become ready on
//! is halted after the first pod and rolled back (or left halted), a pod of the old revision
//! that restarts meanwhile starts on its own config, and `spec.paused` holds every change
//! until it is lifted.

mod common;
mod e2e;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use redis_operator::crd::{OnFailure, RedisInstance, RestartReason};
use serde_json::json;

use common::{TestNamespace, ready_pod, redis_cli, wait_for};
use e2e::*;

const NAME: &str = "redis-example";

/// `replicas` pods with a save point (so a restart keeps the data) and a key in database 3 of
/// each pod: written on the first primary, copied by the replicas.
async fn with_data_in_database_3(
    ns: &TestNamespace,
    replicas: i32,
    on_failure: OnFailure,
) -> RedisInstance {
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = replicas;
    instance.spec.config = [("save", "900 1"), ("databases", "16")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    instance.spec.rollout.progress_deadline_seconds = 15;
    instance.spec.rollout.on_failure = on_failure;
    apply_instance(ns, &instance).await.unwrap();
    wait_ready(ns, NAME, None, Duration::from_secs(180)).await;
    // With several pods, pod 0 is the first primary and the others copy its data.
    let primary = ready_pod(ns, &format!("{NAME}-0")).await;
    wait_for(Duration::from_secs(60), "a write on pod 0", || async {
        match common::try_pod_cli(&primary, &["-n", "3", "SET", "kept", "yes"]).await? {
            ok if ok == "OK" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    for ordinal in 1..replicas {
        let pod = ready_pod(ns, &format!("{NAME}-{ordinal}")).await;
        wait_for(Duration::from_secs(60), "the key replicated", || async {
            match common::try_pod_cli(&pod, &["-n", "3", "GET", "kept"]).await? {
                yes if yes == "yes" => Ok(()),
                other => Err(other),
            }
        })
        .await;
    }
    instance
}

/// Lowering `databases` below a database that holds data passes validation, but Redis exits
/// at start-up ("Data file was created with a Redis server configured to handle more than 1
/// databases"), so the new pod never becomes ready: only the data tells, not the config.
async fn lower_databases(ns: &TestNamespace, instance: &mut RedisInstance) {
    instance.spec.config.insert("databases".into(), "1".into());
    apply_instance(ns, instance).await.unwrap();
}

async fn status_where(
    ns: &TestNamespace,
    what: &str,
    ok: impl Fn(&RedisInstance) -> bool + Clone,
) -> RedisInstance {
    instance_where(ns, NAME, what, Duration::from_secs(180), ok).await
}

/// Sets (`Some`) or removes (`None`) the pause annotation, and nothing else.
async fn pause_by_annotation(ns: &TestNamespace, value: Option<&str>) {
    let patch = json!({ "metadata": { "annotations": { "redis.github.com/paused": value } } });
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

fn condition(
    ri: &RedisInstance,
    kind: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ri.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .cloned()
}

fn condition_reason(ri: &RedisInstance, kind: &str) -> Option<String> {
    condition(ri, kind).map(|c| c.reason)
}

async fn data_kept(pod: &Pod) {
    assert_eq!(redis_cli(pod, &["-n", "3", "GET", "kept"]).await, "yes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_never_ready_is_halted_after_one_pod_and_rolled_back() {
    // The operator's clock runs 5 minutes ahead of the API server's, which sets the pods'
    // creation times: the operator reads the server's time from its responses, so it still tells
    // the restart's pods by their creation time, and judges them by how long it has seen them
    // unready on its own monotonic clock.
    let (_client, ns, first) = setup_skewed("rollback", &[], "+300s").await;
    let mut instance = with_data_in_database_3(&ns, 3, OnFailure::Rollback).await;
    let history = PodHistory::start(&ns).await;
    // Watched rather than polled: the rollback's record lives for a few seconds.
    let api = ns.api::<RedisInstance>();
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut updates = Box::pin(kube::runtime::watcher(api.clone(), config).applied_objects());
    lower_databases(&ns, &mut instance).await;

    // The operator is killed mid-rollback; the next one finishes it from what status holds,
    // with no second Event, count or restart.
    tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(ri) = updates.next().await {
            let reason = ri.ok().and_then(|ri| Some(ri.status?.rollout?.reason));
            if reason == Some(RestartReason::RolledBack) {
                return;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("a rollback recorded within 180 s");
    // The metrics actor counts the restart a moment after its record is written.
    let counted = wait_for(Duration::from_secs(10), "the rollback counted", || async {
        let metrics = first.metrics().await;
        let restart = metrics.lines().any(|l| {
            l.starts_with("redis_operator_restarts_total")
                && l.contains("reason=\"RolledBack\"")
                && l.ends_with(" 1")
        });
        restart
            .then_some(metrics)
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    // Both Events of the rollback are posted by the first operator; the Warning is then
    // deleted, as if the operator had died before it got through. The next operator owes it
    // and tells it again; the RestartStarted it also tells again is turned away by its name.
    assert_eq!(event_count_once(&ns, NAME, "RolloutRolledBack", 1).await, 1);
    wait_for(
        Duration::from_secs(10),
        "the rollback's RestartStarted",
        || async {
            match rollback_started_events(&ns).await {
                1 => Ok(()),
                n => Err(format!("{n}")),
            }
        },
    )
    .await;
    first.kill();
    delete_events(&ns, NAME, "RolloutRolledBack").await;
    let recorded = api.get(NAME).await.unwrap().status.unwrap_or_default();
    assert!(
        recorded.rollout.is_some(),
        "killed before the rollback finished: {recorded:?}"
    );
    assert!(
        counted
            .lines()
            .any(|l| l.starts_with("redis_operator_rollout_failures_total")
                && l.contains("action=\"RolledBack\"")
                && l.ends_with(" 1")),
        "{counted}"
    );
    let operator = Operator::start_skewed(&ns.name, &[], "+300s");

    let ri = status_where(&ns, "the rollback to finish", |ri| {
        let status = ri.status.clone().unwrap_or_default();
        status.restarts == 2
            && status.rollout.is_none()
            && status.ready_replicas == 3
            && condition_reason(ri, "ConfigValid").as_deref() == Some("NeverReady")
    })
    .await;
    let restarts = history.restarts().await;
    assert_eq!(
        restarts.get(&format!("{NAME}-2")),
        Some(&2),
        "to the new config and back: {restarts:?}"
    );
    assert_eq!(restarts.get(&format!("{NAME}-1")), Some(&0), "{restarts:?}");
    assert_eq!(restarts.get(&format!("{NAME}-0")), Some(&0), "{restarts:?}");
    let status = ri.status.unwrap();
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ConfigValid")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("redis-example-2 is still not ready 15s after"),
        "{message}"
    );
    assert!(message.contains("rolling back to config"), "{message}");
    assert_eq!(event_count_once(&ns, NAME, "RolloutRolledBack", 1).await, 1);
    assert_eq!(rollback_started_events(&ns).await, 1);
    let mut mounted = BTreeSet::new();
    for ordinal in 0..3 {
        let pod = ready_pod(&ns, &format!("{NAME}-{ordinal}")).await;
        assert_eq!(config_get(&pod, "databases").await, "16");
        data_kept(&pod).await;
        mounted.insert(mounted_config_map(&pod));
    }
    // Every pod is back on the revision that ran; the refused one's ConfigMap is collected.
    let mounted: Vec<&str> = mounted.iter().map(String::as_str).collect();
    assert_eq!(mounted.len(), 1, "{mounted:?}");
    wait_revision_config_maps(&ns, NAME, &mounted).await;
    let metrics = operator.metrics().await;
    let counted_again: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("RolledBack") && !l.starts_with('#') && !l.ends_with(" 0"))
        .collect();
    assert!(counted_again.is_empty(), "{counted_again:?}");
    // What the stuck-rollout alert reads: the rollback finished by the second operator leaves
    // no restart in progress.
    let in_progress: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("redis_operator_restart_in_progress{"))
        .collect();
    assert!(
        !in_progress.is_empty() && in_progress.iter().all(|l| l.ends_with(" 0")),
        "{in_progress:?}"
    );
}

/// `RestartStarted` Events of a rollback, counting repeats.
async fn rollback_started_events(ns: &TestNamespace) -> i64 {
    events_about(ns, NAME)
        .await
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("RestartStarted")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.starts_with("RolledBack:"))
        })
        .map(|e| e.series.map_or(1, |s| i64::from(s.count)))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn under_halt_the_rollout_stops_after_one_pod_until_the_spec_is_fixed() {
    // A short whole-restart deadline, so the check below also covers what happens past it.
    let (_client, ns, _operator) = setup("halt", &["--progress-deadline", "20"]).await;
    let mut instance = with_data_in_database_3(&ns, 2, OnFailure::Halt).await;
    let history = PodHistory::start(&ns).await;
    lower_databases(&ns, &mut instance).await;

    let ri = status_where(&ns, "the rollout to halt", |ri| {
        ri.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) == Some("Halted")
    })
    .await;
    assert_eq!(
        condition_reason(&ri, "Progressing").as_deref(),
        Some("RolloutHalted")
    );
    assert_eq!(event_count_once(&ns, NAME, "RolloutHalted", 1).await, 1);
    old_revision_restarts_on_its_own_config(&ns, &instance).await;
    // Still halted past --progress-deadline: nothing more is replaced, nothing rolled back.
    let started = ri
        .status
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap()
        .started_at
        .0;
    let past = started
        .checked_add(std::time::Duration::from_secs(25))
        .unwrap()
        .duration_since(k8s_openapi::jiff::Timestamp::now());
    tokio::time::sleep(past.unsigned_abs().min(Duration::from_secs(25))).await;
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    assert_eq!(
        ri.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()),
        Some("Halted")
    );
    let restarts = history.restarts().await;
    assert_eq!(restarts.get(&format!("{NAME}-0")), Some(&0), "{restarts:?}");
    assert_eq!(restarts.get(&format!("{NAME}-1")), Some(&1), "{restarts:?}");
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    assert!(
        ri.status.unwrap().rollout.is_some(),
        "the restart stays recorded while halted"
    );

    // The fix is a new spec: the pods go to it, and the untouched pod stays untouched.
    instance.spec.config.insert("databases".into(), "16".into());
    apply_instance(&ns, &instance).await.unwrap();
    wait_restarts(&ns, NAME, 2).await;
    let restarts = history.restarts().await;
    assert_eq!(restarts.get(&format!("{NAME}-0")), Some(&0), "{restarts:?}");
    for ordinal in 0..2 {
        data_kept(&ready_pod(&ns, &format!("{NAME}-{ordinal}")).await).await;
    }
    // The fix is the config pod 0 ran all along: its revision's ConfigMap is the only one
    // left, owned by the instance (so it goes with it).
    let kept = mounted_config_map(&ready_pod(&ns, &format!("{NAME}-0")).await);
    wait_revision_config_maps(&ns, NAME, &[kept.as_str()]).await;
    let instance_uid = ns.api::<RedisInstance>().get(NAME).await.unwrap().uid();
    let owners = ns
        .api::<ConfigMap>()
        .get(&kept)
        .await
        .unwrap()
        .owner_references()
        .to_vec();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (Some(owners[0].uid.clone()), owners[0].controller),
        (instance_uid, Some(true))
    );
}

/// Mid-rollout, halted: pod 0 runs the old revision, pod 1 the new one, each from its own
/// revision's ConfigMap, while `<name>-config` already holds the new config. Redis in pod 0
/// exits (SHUTDOWN saves its data first) and the kubelet restarts it in place: it starts on
/// its own revision's file, so the config being rolled out (`databases 1`, which cannot load
/// the data in database 3) does not take it down too.
async fn old_revision_restarts_on_its_own_config(ns: &TestNamespace, instance: &RedisInstance) {
    let old_pod = ready_pod(ns, &format!("{NAME}-0")).await;
    let new_pod = ns.api::<Pod>().get(&format!("{NAME}-1")).await.unwrap();
    let (old_cm, new_cm) = (mounted_config_map(&old_pod), mounted_config_map(&new_pod));
    assert_ne!(old_cm, new_cm);
    assert!(
        config_map_text(ns, &old_cm)
            .await
            .contains("databases 16\n")
    );
    assert!(config_map_text(ns, &new_cm).await.contains("databases 1\n"));
    let (shared, _) = config_map_and_hash(ns, NAME).await;
    assert!(shared.contains("databases 1\n"), "{shared}");
    assert_eq!(instance.spec.config["databases"], "1");

    let _ = common::try_pod_cli(&old_pod, &["SHUTDOWN"]).await;
    let restarted = wait_for(
        Duration::from_secs(120),
        "pod 0 restarted in place and ready",
        || {
            let (api, old) = (ns.api::<Pod>(), &old_pod);
            async move {
                let now = api.get(&old.name_any()).await.map_err(|e| e.to_string())?;
                let restarts = now
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .map_or(0, |c| c.restart_count);
                if now.uid() == old.uid() && restarts >= 1 && common::is_ready(&now) {
                    Ok(now)
                } else {
                    Err(common::describe(&now))
                }
            }
        },
    )
    .await;
    assert_eq!(config_get(&restarted, "databases").await, "16");
    data_kept(&restarted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_a_change_and_shows_it_until_resumed() {
    // A settle time long enough for the wait after a restart to be seen in status.
    let (_client, ns, _operator) = setup("pause", &["--settle-seconds", "10"]).await;
    let mut instance = example("redis-example.yaml");
    apply_instance(&ns, &instance).await.unwrap();
    let ready = wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let hash = ready.status.unwrap().config_hash;
    let history = PodHistory::start(&ns).await;
    let (text_before, _) = config_map_and_hash(&ns, NAME).await;

    // Paused by annotation first, then by the spec field.
    let api = ns.api::<RedisInstance>();
    pause_by_annotation(&ns, Some("true")).await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "64mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let paused = status_where(&ns, "the change to be held", |ri| {
        let status = ri.status.clone().unwrap_or_default();
        status.phase.map(|p| p.as_str()) == Some("Paused")
            && status.observed_generation == ri.metadata.generation
    })
    .await;
    let pending = paused.status.unwrap().pending_change.unwrap();
    assert!(
        pending.contains("restart (ConfigChanged, RollingUpdate)"),
        "{pending}"
    );
    assert!(pending.contains("maxmemory"), "{pending}");
    instance.spec.paused = true;
    apply_instance(&ns, &instance).await.unwrap();
    pause_by_annotation(&ns, None).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = api.get(NAME).await.unwrap().status.unwrap();
    assert_eq!(held.phase.map(|p| p.as_str()), Some("Paused"));
    assert_eq!(held.config_hash, hash);
    assert_eq!(
        config_map_and_hash(&ns, NAME).await.0,
        text_before,
        "the ConfigMap waits too"
    );
    assert!(history.restarts().await.values().all(|n| *n == 0));

    instance.spec.paused = false;
    apply_instance(&ns, &instance).await.unwrap();
    let resumed = wait_restarts(&ns, NAME, 1).await.status.unwrap();
    assert_eq!(resumed.pending_change, None);
    let pod = ready_pod(&ns, &format!("{NAME}-0")).await;
    assert_eq!(config_get(&pod, "maxmemory").await, "67108864");

    // An edit right after a restart waits for the spec to settle, and status says so: a gate
    // on Progressing does not pass while the pods still run the config before it.
    instance
        .spec
        .config
        .insert("maxmemory".into(), "96mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let settling = status_where(&ns, "the edit to wait for the spec to settle", |ri| {
        let seen = ri.status.as_ref().map(|s| s.observed_generation);
        seen == Some(ri.metadata.generation)
            && condition_reason(ri, "Progressing").as_deref() == Some("Settling")
    })
    .await;
    assert_eq!(
        condition(&settling, "Progressing")
            .map(|c| c.status)
            .as_deref(),
        Some("True")
    );
    assert_eq!(settling.status.unwrap().config_hash, resumed.config_hash);
    wait_restarts(&ns, NAME, 2).await;
    let pod = ready_pod(&ns, &format!("{NAME}-0")).await;
    assert_eq!(config_get(&pod, "maxmemory").await, "100663296");

    // The annotation alone, added and removed with no spec edit, pauses and resumes.
    pause_by_annotation(&ns, Some("true")).await;
    // A hand edit of the ConfigMap is a restart the pause must hold.
    let cm_api = ns.api::<k8s_openapi::api::core::v1::ConfigMap>();
    let edited_text = config_map_and_hash(&ns, NAME).await.0 + "\n# edited by hand\n";
    cm_api
        .patch(
            &format!("{NAME}-config"),
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "redis.conf": edited_text } })),
        )
        .await
        .unwrap();
    let held = status_where(&ns, "the hand edit to be held", |ri| {
        ri.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) == Some("Paused")
    })
    .await;
    assert_eq!(
        condition_reason(&held, "Progressing").as_deref(),
        Some("Paused")
    );
    assert_eq!(
        condition(&held, "Progressing").map(|c| c.status).as_deref(),
        Some("True")
    );
    pause_by_annotation(&ns, None).await;
    let resumed = wait_restarts(&ns, NAME, 3).await;
    assert_eq!(resumed.status.unwrap().pending_change, None);
    assert_ne!(
        config_map_and_hash(&ns, NAME).await.0,
        edited_text,
        "the hand edit was put back once the annotation went"
    );
}

/// A fix made while the config being rolled out crash-loops goes out at once: neither the
/// instance's readiness deadline nor the operator's `--progress-deadline` (both far off here)
/// is waited for, and nothing is rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_fix_made_while_the_new_config_crashes_goes_out_at_once() {
    let (_client, ns, _operator) = setup("fixed", &["--progress-deadline", "600"]).await;
    let mut instance = with_data_in_database_3(&ns, 1, OnFailure::Rollback).await;
    instance.spec.rollout.progress_deadline_seconds = 600;
    lower_databases(&ns, &mut instance).await;
    let pod_name = format!("{NAME}-0");
    wait_for(
        Duration::from_secs(120),
        "the new config's pod to crash",
        || async {
            let pod = ns
                .api::<Pod>()
                .get(&pod_name)
                .await
                .map_err(|e| e.to_string())?;
            let statuses = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            let crashed = statuses.iter().any(|c| {
                [&c.state, &c.last_state]
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.terminated.as_ref())
                    .any(|t| t.exit_code != 0)
            });
            crashed.then_some(()).ok_or_else(|| format!("{statuses:?}"))
        },
    )
    .await;

    instance.spec.config.insert("databases".into(), "4".into());
    apply_instance(&ns, &instance).await.unwrap();
    // status_where gives up after 180 s, well before either deadline.
    let ri = status_where(&ns, "the fix to be rolled out", |ri| {
        let status = ri.status.clone().unwrap_or_default();
        status.rollout.is_none()
            && status.ready_replicas == 1
            && status.observed_generation == ri.metadata.generation
    })
    .await;
    let pod = ready_pod(&ns, &pod_name).await;
    assert_eq!(config_get(&pod, "databases").await, "4");
    data_kept(&pod).await;
    // Two restarts counted: to the config that crashed, and the one that superseded it.
    let status = ri.status.unwrap();
    assert_eq!(status.restarts, 2, "{status:?}");
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Running"));
    assert_eq!(event_count(&ns, NAME, "RolloutRolledBack").await, 0);
    assert_eq!(event_count(&ns, NAME, "RolloutHalted").await, 0);
}

/// An operator killed with a restart in flight and the spec refused since: the next one
/// recalls the valid spec the restart drives to from status, and judges it as the first would
/// have: never ready, so rolled back to the healthy spec (before, it held everything and the
/// pod crash-looped until the spec was fixed).
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_operator_on_a_refused_spec_still_judges_the_restart_in_flight() {
    let (_client, ns, first) = setup("inflight", &[]).await;
    let mut instance = with_data_in_database_3(&ns, 1, OnFailure::Rollback).await;
    // Long enough for the first operator to be gone before it judges the restart.
    instance.spec.rollout.progress_deadline_seconds = 30;
    lower_databases(&ns, &mut instance).await;
    status_where(&ns, "the restart recorded", |ri| {
        let record = ri.status.as_ref().and_then(|s| s.rollout.as_ref());
        record.is_some_and(|r| r.reason == RestartReason::ConfigChanged)
    })
    .await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "lots".into());
    apply_instance(&ns, &instance).await.unwrap();
    let refused = status_where(
        &ns,
        "the valid spec recorded beside the refused one",
        |ri| {
            let status = ri.status.clone().unwrap_or_default();
            status.phase.map(|p| p.as_str()) == Some("Invalid") && status.valid_spec.is_some()
        },
    )
    .await;
    let recorded = refused.status.unwrap();
    assert!(
        recorded.valid_spec.unwrap().contains("\"databases\":\"1\""),
        "the restart's spec, not the refused one"
    );
    let record = recorded.rollout.expect("still in flight");
    assert_eq!(record.reason, RestartReason::ConfigChanged);
    first.kill();
    let _next = Operator::start(&ns.name);

    let ri = status_where(&ns, "the restart judged and rolled back", |ri| {
        let status = ri.status.clone().unwrap_or_default();
        status.rollout.is_none()
            && status.ready_replicas == 1
            && condition_reason(ri, "ConfigValid").as_deref() == Some("InvalidConfig")
    })
    .await;
    let status = ri.status.unwrap();
    assert_eq!(
        status.restarts, 2,
        "to the restart's config and back: {status:?}"
    );
    let pod = ready_pod(&ns, &format!("{NAME}-0")).await;
    assert_eq!(config_get(&pod, "databases").await, "16");
    data_kept(&pod).await;
}
