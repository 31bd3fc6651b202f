//! The fault suite: what users and clusters do to an instance, on the local cluster with real
//! Redis. Each case holds the recorded restart count against the pods' real restarts (by uid),
//! and checks that data written before the fault is still there.

mod common;
mod e2e;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use redis_operator::config::validate::validate;
use redis_operator::crd::{RedisInstance, RestartStrategy};
use redis_operator::resources::image_of;
use serde_json::json;

use common::{TestNamespace, ready_pod, redis_cli, uid, wait_for};
use e2e::*;

const NAME: &str = "redis-example";
const CONFIG_HASH: &str = "redis.github.com/config-hash";

/// The example instance, Ready, with a key written to its Redis.
async fn running(ns: &TestNamespace, strategy: RestartStrategy) -> RedisInstance {
    let mut instance = example("redis-example.yaml");
    instance.spec.restart_strategy = strategy;
    apply_instance(ns, &instance).await.unwrap();
    wait_ready(ns, NAME, None, Duration::from_secs(180)).await;
    let pod = ready_pod(ns, &format!("{NAME}-0")).await;
    assert_eq!(
        redis_cli(&pod, &["SET", "before-the-fault", "kept"]).await,
        "OK"
    );
    instance
}

async fn assert_data_kept(ns: &TestNamespace) {
    let pod = ready_pod(ns, &format!("{NAME}-0")).await;
    assert_eq!(redis_cli(&pod, &["GET", "before-the-fault"]).await, "kept");
}

/// `kubectl delete service redis-example`, then waits until a new one stands in its place.
async fn delete_service_and_wait_until_back(ns: &TestNamespace) {
    let old = ns.api::<Service>().get(NAME).await.unwrap();
    ns.api::<Service>()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the Service back", || async {
        match ns
            .api::<Service>()
            .get_opt(NAME)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(svc) if uid(&svc) != uid(&old) => Ok(()),
            other => Err(format!("{:?}", other.map(|s| uid(&s)))),
        }
    })
    .await;
}

async fn statefulset(ns: &TestNamespace) -> StatefulSet {
    ns.api::<StatefulSet>().get(NAME).await.unwrap()
}

/// `kubectl scale statefulset redis-example --replicas=<replicas>`, then waits until the
/// operator has put the spec's one replica back.
async fn scale_by_hand_and_wait_until_put_back(ns: &TestNamespace, replicas: i32) {
    ns.api::<StatefulSet>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "replicas put back to 1",
        || async {
            match statefulset(ns).await.spec.replicas {
                Some(1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_scaling_and_a_deleted_service_are_repaired_from_the_watch() {
    let (_client, ns, operator) = setup("drift", &[]).await;
    running(&ns, RestartStrategy::RollingUpdate).await;
    let history = PodHistory::start(&ns).await;

    scale_by_hand_and_wait_until_put_back(&ns, 3).await;

    delete_service_and_wait_until_back(&ns).await;

    let ri = wait_restarts(&ns, NAME, 0).await;
    assert_eq!(ri.status.unwrap().restarts, 0);
    // Events are posted beside the repairs, not before them.
    assert!(event_count_once(&ns, NAME, "DriftRepaired", 2).await >= 2);
    let metrics = operator.metrics().await;
    for kind in ["Service", "StatefulSetSpec"] {
        let series = format!(
            "redis_operator_drift_repairs_total{{instance=\"{NAME}\",kind=\"{kind}\",namespace=\"{}\"}}",
            ns.name
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }

    // An operator killed between a repair and its Event (here: the Events deleted, as if they
    // had never got through): the one taking over tells each repair from the mark it left on
    // the object it put back, once.
    let told = event_count(&ns, NAME, "DriftRepaired").await;
    delete_events(&ns, NAME, "DriftRepaired").await;
    operator.kill();
    let operator = Operator::start(&ns.name);
    // The killed one's Lease lapses first (15 s).
    let leading = "acquired the lease; acting on instances";
    operator.wait_for_passes(1, Some(leading)).await;
    assert_eq!(
        event_count_once(&ns, NAME, "DriftRepaired", told).await,
        told
    );
    assert_eq!(event_count(&ns, NAME, "DriftRepaired").await, told);

    assert_eq!(
        history.restarts().await.get("redis-example-0"),
        Some(&0),
        "pod 0 untouched"
    );
    assert_data_kept(&ns).await;
}

/// An operator started on an invalid spec keeps the objects on the healthy spec recorded in
/// status: a deleted Service or StatefulSet is put back, and the pod keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_on_an_invalid_spec_deleted_objects_are_still_repaired() {
    let (_client, ns, operator) = setup("invalid-restart", &[]).await;
    let mut instance = running(&ns, RestartStrategy::RollingUpdate).await;
    let healthy_hash = redis_operator::config::rendered(&instance).hash;
    let history = PodHistory::start(&ns).await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "lots".into());
    apply_instance(&ns, &instance).await.unwrap();
    wait_for(Duration::from_secs(30), "the spec refused", || async {
        let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
        match ri.status.and_then(|s| s.phase) {
            Some(phase) if phase.as_str() == "Invalid" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(operator.stop().success(), "a clean stop on SIGTERM");
    let _restarted = Operator::start(&ns.name);

    delete_service_and_wait_until_back(&ns).await;
    // Put back from the healthy spec.
    scale_by_hand_and_wait_until_put_back(&ns, 2).await;
    // The Service and the scale, each told.
    assert!(event_count_once(&ns, NAME, "DriftRepaired", 2).await >= 2);
    // Deleted with its pod left running (as `kubectl delete --cascade=orphan` does).
    let old = statefulset(&ns).await.uid();
    let orphan = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    ns.api::<StatefulSet>().delete(NAME, &orphan).await.unwrap();
    wait_for(Duration::from_secs(60), "the StatefulSet recreated", || {
        let (api, old, want) = (ns.api::<StatefulSet>(), old.clone(), healthy_hash.clone());
        async move {
            let sts = api.get_opt(NAME).await.map_err(|e| e.to_string())?;
            let sts = sts.ok_or("not yet")?;
            let hash = sts
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref()?.get(CONFIG_HASH).cloned());
            match (sts.uid() != old, hash) {
                (true, Some(h)) if h == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(
        history.restarts().await.get("redis-example-0"),
        Some(&0),
        "the pod keeps running its last good config"
    );
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_changes_by_hand_or_through_the_spec_are_counted_restarts() {
    let (_client, ns, operator) = setup("image", &[]).await;
    let mut instance = running(&ns, RestartStrategy::RollingUpdate).await;
    let history = PodHistory::start(&ns).await;

    // kubectl set image statefulset/redis-example redis=redis:6.2: put back, by a restart.
    ns.api::<StatefulSet>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "redis:6.2"
                }]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    wait_restarts(&ns, NAME, 1).await;
    assert_eq!(image_of(&statefulset(&ns).await.spec), Some("redis:7.0"));
    assert_eq!(event_count_once(&ns, NAME, "DriftRepaired", 1).await, 1);

    // A new image through the spec: a restart too, with its reason.
    instance.spec.image = "redis:7.2".into();
    apply_instance(&ns, &instance).await.unwrap();
    wait_restarts(&ns, NAME, 2).await;
    assert_eq!(image_of(&statefulset(&ns).await.spec), Some("redis:7.2"));

    assert_eq!(event_count_once(&ns, NAME, "RestartStarted", 2).await, 2);
    let notes: Vec<_> = instance_events(&ns, NAME)
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "RestartStarted")
        .map(|(_, _, note)| note)
        .collect();
    assert!(
        notes.iter().all(|n| n.starts_with("ImageChanged")),
        "{notes:?}"
    );
    assert_eq!(
        event_count(&ns, NAME, "DriftRepaired").await,
        1,
        "a change made in the spec is not drift"
    );
    // The hand edit may itself have replaced the pod once before the repair.
    let real = history.restarts().await["redis-example-0"];
    assert!((2..=3).contains(&real), "pod 0 restarted {real} times");
    assert_data_kept(&ns).await;

    // A hash annotation edited by hand to text whose 12th byte falls inside a character: put
    // back by a restart, with no actor failing on it.
    let hash = config_map_and_hash(&ns, NAME).await.1.unwrap();
    ns.api::<StatefulSet>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "redis.github.com/config-hash": "abcdefghijké€ by hand"
            }}}}})),
        )
        .await
        .unwrap();
    wait_restarts(&ns, NAME, 3).await;
    assert_eq!(config_map_and_hash(&ns, NAME).await.1, Some(hash));
    let failed: Vec<_> = operator
        .log_lines()
        .into_iter()
        .filter(|line| line.to_string().contains("instance actor failed"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_stuck_on_an_unrunnable_image_is_replaced_once_the_image_is_fixed() {
    let (_client, ns, _operator) = setup("stuck", &["--progress-deadline", "10"]).await;
    let mut instance = example("redis-example.yaml");
    instance.spec.image = "nginx:1.27".into();
    apply_instance(&ns, &instance).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the pod to wait on its image",
        || async {
            let pod = ns
                .api::<Pod>()
                .get_opt("redis-example-0")
                .await
                .map_err(|e| e.to_string())?;
            let waiting = pod
                .as_ref()
                .and_then(|p| {
                    p.status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .first()?
                        .state
                        .clone()
                })
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason);
            match waiting.as_deref() {
                Some("ImageNotSupported") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // The StatefulSet controller never replaces an unready pod; the operator does, after the
    // deadline, so the fix reaches the pod.
    instance.spec.image = "redis:7.0".into();
    apply_instance(&ns, &instance).await.unwrap();
    wait_restarts(&ns, NAME, 1).await;
    assert_eq!(event_count_once(&ns, NAME, "PodReplaced", 1).await, 1);
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(redis_cli(&pod, &["PING"]).await, "PONG");
}

/// Edits the config of a Recreate instance, stops the operator (`kill`: SIGKILL, else SIGTERM)
/// as soon as the old StatefulSet is being deleted, and starts another one.
async fn operator_stopped_mid_recreate(kill: bool, prefix: &str) {
    let (_client, ns, operator) = setup(prefix, &[]).await;
    let mut instance = running(&ns, RestartStrategy::Recreate).await;
    let history = PodHistory::start(&ns).await;
    let old = statefulset(&ns).await;

    instance
        .spec
        .config
        .insert("maxmemory".into(), "150mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    wait_for(Duration::from_secs(30), "the Recreate delete", || async {
        let sts = ns
            .api::<StatefulSet>()
            .get_opt(NAME)
            .await
            .map_err(|e| e.to_string())?;
        match sts {
            Some(s) if uid(&s) == uid(&old) && s.metadata.deletion_timestamp.is_none() => {
                Err("not deleted yet".into())
            }
            _ => Ok(()),
        }
    })
    .await;
    if kill {
        operator.kill();
    } else {
        assert!(operator.stop().success());
    }
    let _operator = Operator::start(&ns.name);

    let hash = redis_operator::config::rendered(&instance).hash;
    let ri = wait_ready(&ns, NAME, Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(
        ri.status.unwrap().restarts,
        1,
        "the restart is recorded once"
    );
    // Told in the background, RestartCompleted can reach the API server after the status
    // write that made the instance Ready.
    assert_eq!(event_count_once(&ns, NAME, "RestartStarted", 1).await, 1);
    assert_eq!(event_count_once(&ns, NAME, "RestartCompleted", 1).await, 1);
    assert_eq!(
        history.restarts().await["redis-example-0"],
        1,
        "the pod restarted once"
    );
    assert_ne!(uid(&statefulset(&ns).await), uid(&old));
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_right_after_the_recreate_delete_records_the_restart_once() {
    operator_stopped_mid_recreate(true, "killed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_stopped_right_after_the_recreate_delete_records_the_restart_once() {
    operator_stopped_mid_recreate(false, "stopped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_and_keys_the_operator_cannot_run_are_refused_at_admission() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "admission").await;
    let api = ns.api::<RedisInstance>();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let refusal = |name: &str, key: &str| {
        let mut instance = example("redis-example.yaml");
        instance.metadata.name = Some(name.into());
        instance.spec.config.insert(key.into(), "0".into());
        let api = api.clone();
        let dry_run = dry_run.clone();
        async move {
            match api.create(&dry_run, &instance).await {
                Ok(_) => None,
                Err(kube::Error::Api(status)) => Some(status.message),
                Err(other) => panic!("{other}"),
            }
        }
    };
    let dotted = refusal("my.redis", "hz").await.expect("a dot is refused");
    assert!(dotted.contains("DNS label"), "{dotted}");
    let long = refusal(&"r".repeat(53), "hz")
        .await
        .expect("53 characters are refused");
    assert!(long.contains("at most 52"), "{long}");
    assert_eq!(
        refusal(&"r".repeat(52), "hz").await,
        None,
        "52 characters fit"
    );
    let upper = refusal("upper", "MAXMEMORY")
        .await
        .expect("upper case is refused");
    assert!(upper.contains("\"MAXMEMORY\""), "the key is named: {upper}");
    for key in [
        "server_cpulist",
        "bio_cpulist",
        "bgsave_cpulist",
        "aof_rewrite_cpulist",
    ] {
        assert_eq!(
            refusal("cpulist", key).await,
            None,
            "{key} is a Redis 7.0 directive"
        );
        let config = [(key.to_owned(), "0".to_owned())].into();
        assert!(
            validate(&config).is_empty(),
            "{key}: {:?}",
            validate(&config)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_operator_stands_by_and_takes_over_when_the_leader_dies() {
    let (_client, ns, first) = setup("leader", &[]).await;
    let mut instance = running(&ns, RestartStrategy::Recreate).await;
    let second = Operator::start(&ns.name);
    second.wait_standby().await;
    let standby = second.get("/readyz").await;
    assert!(standby.starts_with("ok: standby"), "{standby}");
    assert_eq!(first.get("/readyz").await.trim(), "ok");
    assert_eq!(event_count(&ns, "redis-operator", "Standby").await, 1);
    let history = PodHistory::start(&ns).await;

    // Two operators watch the same namespace: still one restart per edit, one Event each.
    for memory in ["110mb", "120mb"] {
        instance
            .spec
            .config
            .insert("maxmemory".into(), memory.into());
        apply_instance(&ns, &instance).await.unwrap();
        wait_ready(
            &ns,
            NAME,
            Some(&redis_operator::config::rendered(&instance).hash),
            Duration::from_secs(180),
        )
        .await;
    }
    assert_eq!(
        wait_restarts(&ns, NAME, 2).await.status.unwrap().restarts,
        2
    );
    assert_eq!(history.restarts().await["redis-example-0"], 2);
    assert_eq!(event_count_once(&ns, NAME, "RestartStarted", 2).await, 2);
    assert!(
        !second
            .log_lines()
            .iter()
            .any(|l| l["message"] == "ConfigMap was updated or StatefulSet needs restart"),
        "the standby acted"
    );

    // The leader dies without releasing the Lease: the standby takes over once it expires.
    first.kill();
    wait_for(
        Duration::from_secs(40),
        "the standby to take over",
        || async {
            match second.get("/readyz").await.trim() {
                "ok" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    )
    .await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "130mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let hash = redis_operator::config::rendered(&instance).hash;
    wait_ready(&ns, NAME, Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(
        wait_restarts(&ns, NAME, 3).await.status.unwrap().restarts,
        3
    );
    assert_eq!(history.restarts().await["redis-example-0"], 3);
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storm_of_edits_under_recreate_costs_at_most_two_restarts() {
    let (_client, ns, _operator) = setup("storm", &[]).await;
    let mut instance = running(&ns, RestartStrategy::Recreate).await;
    let history = PodHistory::start(&ns).await;
    // Twenty edits, two a second: longer than one restart takes.
    for step in 1..=20 {
        instance
            .spec
            .config
            .insert("maxmemory".into(), format!("{}mb", 100 + step));
        apply_instance(&ns, &instance).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let hash = redis_operator::config::rendered(&instance).hash;
    let ready = wait_ready(&ns, NAME, Some(&hash), Duration::from_secs(180)).await;
    let recorded = ready.status.unwrap().restarts;
    let real = history.restarts().await["redis-example-0"] as i64;
    assert!((1..=2).contains(&recorded), "{recorded} restarts recorded");
    assert_eq!(
        real, recorded,
        "the pod restarted {real} times, status says {recorded}"
    );
    assert_eq!(
        event_count_once(&ns, NAME, "RestartStarted", recorded).await,
        recorded
    );
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "125829120");
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_map_edited_by_hand_is_restored_and_the_pods_restarted() {
    let (_client, ns, _operator) = setup("cmdrift", &[]).await;
    let instance = running(&ns, RestartStrategy::RollingUpdate).await;
    let history = PodHistory::start(&ns).await;
    let name = format!("{NAME}-config");
    ns.api::<ConfigMap>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"redis.conf": "maxmemory 1mb\n"}})),
        )
        .await
        .unwrap();
    // The spec's rules: the ConfigMap's content differs from the desired config, so it is
    // rewritten and the pods restart onto it.
    wait_restarts(&ns, NAME, 1).await;
    let text = ns
        .api::<ConfigMap>()
        .get(&name)
        .await
        .unwrap()
        .data
        .unwrap()["redis.conf"]
        .clone();
    assert_eq!(text, redis_operator::config::rendered(&instance).text);
    assert_eq!(history.restarts().await["redis-example-0"], 1);
    assert_eq!(event_count_once(&ns, NAME, "DriftRepaired", 1).await, 1);
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "104857600");
    assert_data_kept(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_finds_its_lease_taken_stops_at_once() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (_client, ns, mut operator) = setup("lost", &[]).await;
    running(&ns, RestartStrategy::RollingUpdate).await;
    // Someone else writes the Lease as its holder (as a second install that took it over would).
    ns.api::<Lease>()
        .patch(
            "redis-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "intruder"}})),
        )
        .await
        .unwrap();
    let status = wait_for(Duration::from_secs(30), "the operator to stop", || {
        let exited = operator.exited();
        async move { exited.ok_or_else(|| "still running".to_owned()) }
    })
    .await;
    assert!(!status.success(), "a lost lease is a failure: {status}");
    let log = std::fs::read_to_string(&operator.log_path).unwrap();
    assert!(
        log.contains("lost the leader lease to another operator"),
        "{log}"
    );
}

/// The pid of the pod's redis-server: the node agent's container id is `node-agent://<pid>`.
fn redis_server_pid(pod: &Pod) -> u32 {
    let pid: u32 = common::container_pid(pod).parse().expect("a pid");
    // Redis rewrites its title: "/usr/bin/redis-server *:6379".
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains("redis-server"),
        "pid {pid} of pod {} runs {cmdline:?}, not redis-server",
        uid(pod)
    );
    pid
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// A crash of a pod that runs a new config (here SIGKILL, as an out-of-memory kill would be)
/// says nothing against that config: the kubelet restarts the container and the rollout
/// finishes on the new config, with no rollback.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_off_crash_on_a_new_config_is_restarted_not_rolled_back() {
    let (_client, ns, _operator) = setup("oneoff", &[]).await;
    // Three pods, so that the rollout is still under way when the first new pod crashes.
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 3;
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(240)).await;

    instance
        .spec
        .config
        .insert("maxmemory".into(), "200mb".into());
    let new_hash = redis_operator::config::rendered(&instance).hash;
    apply_instance(&ns, &instance).await.unwrap();
    // The highest ordinal goes first.
    let last = format!("{NAME}-2");
    let pod = wait_for(
        Duration::from_secs(120),
        "pod 2 to run the new config and be ready",
        || {
            let (api, last, new_hash) = (ns.api::<Pod>(), &last, &new_hash);
            async move {
                let pod = api.get(last).await.map_err(|e| e.to_string())?;
                let hash = pod.annotations().get("redis.github.com/config-hash");
                if hash == Some(new_hash) && common::is_ready(&pod) {
                    Ok(pod)
                } else {
                    Err(format!("hash {hash:?}: {}", common::describe(&pod)))
                }
            }
        },
    )
    .await;
    let pid = redis_server_pid(&pod);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");

    // The same pod, restarted in place; its last run was killed by the signal.
    let restarted = wait_for(
        Duration::from_secs(60),
        "pod 2 restarted in place after the kill",
        || {
            let (api, last, pod) = (ns.api::<Pod>(), &last, &pod);
            async move {
                let now = api.get(last).await.map_err(|e| e.to_string())?;
                if uid(&now) == uid(pod) && restart_count(&now) >= 1 {
                    Ok(now)
                } else {
                    Err(common::describe(&now))
                }
            }
        },
    )
    .await;
    let terminated = restarted
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("no last state: {}", common::describe(&restarted)));
    assert_eq!(terminated.exit_code, 137, "{terminated:?}");
    let message = terminated.message.unwrap_or_default();
    assert!(
        !message.contains("FATAL CONFIG FILE ERROR"),
        "the killed run's output: {message}"
    );

    let ri = wait_ready(&ns, NAME, Some(&new_hash), Duration::from_secs(180)).await;
    let status = ri.status.unwrap();
    assert_eq!(status.rejected_config_hash, None, "{status:?}");
    assert_eq!(
        status.config_hash.as_deref(),
        Some(new_hash.as_str()),
        "still on the new config"
    );
    assert_eq!(event_count(&ns, NAME, "RedisRejectedConfig").await, 0);
    for pod in pods(&ns, NAME).await {
        assert_eq!(
            pod.annotations().get("redis.github.com/config-hash"),
            Some(&new_hash),
            "{}",
            pod.name_any()
        );
        assert_eq!(config_get(&pod, "maxmemory").await, "209715200");
    }
}

/// A ConfigMap deleted and created again under its name between the cache's view and the
/// operator's write: the write, carrying the uid it was decided for, is refused, and the
/// operator takes the refusal for what it is (a conflict: look again), not for a final
/// refusal of the object. The API server answers this one with 422, not 409. The same for the
/// NetworkPolicy, the role Service and a revision ConfigMap.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_for_an_object_replaced_since_it_was_seen_is_a_conflict() {
    use redis_operator::resources::CachedConfigMap;
    let client = common::client().await;
    let ns = TestNamespace::create(&client, "replaced").await;
    let configmaps = ns.api::<ConfigMap>();
    let make = || {
        serde_json::from_value::<ConfigMap>(json!({
            "metadata": { "name": "replaced" },
            "data": { "redis.conf": "maxmemory 100mb\n" }
        }))
        .unwrap()
    };
    let first = configmaps
        .create(&PostParams::default(), &make())
        .await
        .unwrap();
    let seen = CachedConfigMap::from(&first);
    configmaps
        .delete("replaced", &DeleteParams::default())
        .await
        .unwrap();
    let second = configmaps
        .create(&PostParams::default(), &make())
        .await
        .unwrap();
    assert_ne!(first.uid(), second.uid());

    let api = unfenced_api(client, &ns, "replaced-test");
    let error = api
        .annotate_config_map(&seen, "redis.github.com/probe", "1")
        .await
        .expect_err("the new ConfigMap is not the one seen");
    assert!(error.is_conflict(), "{error:?}");
    assert!(!error.is_invalid(), "{error:?}");
    // The same for a server-side apply carrying the uid seen, as a template write does.
    let mut stale = make();
    stale.metadata.uid = first.uid();
    stale.metadata.namespace = Some(ns.name.clone());
    let applied = api.apply("ConfigMap", &stale).await;
    let error = applied.expect_err("the new ConfigMap is not the one seen");
    assert!(error.is_conflict(), "{error:?}");
    let now = configmaps.get("replaced").await.unwrap();
    assert!(
        !now.annotations().contains_key("redis.github.com/probe"),
        "{now:?}"
    );

    // The NetworkPolicy, the role Service and a revision ConfigMap as the operator builds and
    // writes them: over the object first seen, after it was replaced.
    let mut instance = example("redis-example.yaml");
    instance.metadata.namespace = Some(ns.name.clone());
    instance.metadata.uid = Some("not-in-this-cluster".into());
    let policy = redis_operator::resources::network_policy(&instance, None);
    refused_over_a_replaced_object(&api, ns.api(), "NetworkPolicy", policy).await;
    let replicas = redis_operator::resources::replicas_service(&instance);
    refused_over_a_replaced_object(&api, ns.api(), "Service", replicas).await;
    let rendered = redis_operator::config::render::render(&instance.spec.config);
    let revision =
        redis_operator::resources::revision_config_map(&instance, &rendered, &rendered.hash);
    refused_over_a_replaced_object(&api, ns.api(), "ConfigMap", revision).await;
}

/// The operator's API access to `ns`, its writes unfenced, its Events posted as `controller`.
fn unfenced_api(
    client: kube::Client,
    ns: &TestNamespace,
    controller: &str,
) -> redis_operator::kube_io::InstanceApi {
    use redis_operator::limiter::{Limiter, Limits};
    let reporter = kube::runtime::events::Reporter {
        controller: controller.into(),
        instance: None,
    };
    let events = redis_operator::events::EventPoster::new(client.clone(), reporter);
    let limiter = Limiter::unfenced(Limits::default());
    redis_operator::kube_io::InstanceApi::new(client, &ns.name, events, limiter)
}

/// Creates `object`, deletes it and creates it again, then writes it as the operator does
/// over the first one seen (`over_seen`): the write must be a conflict.
async fn refused_over_a_replaced_object<K>(
    api: &redis_operator::kube_io::InstanceApi,
    objects: kube::Api<K>,
    kind: &'static str,
    mut object: K,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    // Its owner is not in this namespace: the garbage collector would delete it meanwhile.
    object.meta_mut().owner_references = None;
    let name = object.name_any();
    let first = objects
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    objects
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let second = objects
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    assert_ne!(first.uid(), second.uid(), "{kind} {name}");
    redis_operator::kube_io::over_seen(object.meta_mut(), Some(first.meta()));
    let error = api
        .apply(kind, &object)
        .await
        .expect_err("the object written over is not the one seen");
    assert!(error.is_conflict(), "{kind} {name}: {error:?}");
}

/// A status write that lands late, as a deposed leader's in flight or a lagging cache's would:
/// the status was decided from a copy of the instance that another writer has changed since.
/// The API server refuses it (the write carries the resourceVersion and uid it was decided
/// from), so it cannot overwrite the newer restart record or count a restart twice. A write
/// decided from the copy the refusal sends the operator back to read lands. An instance
/// deleted and created again under its name refuses a write decided for the first one.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_write_decided_from_an_older_copy_is_refused() {
    use redis_operator::crd::RedisInstanceStatus;
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "late-status").await;
    let instances = ns.api::<RedisInstance>();
    let mut instance = example("redis-example.yaml");
    instance.metadata.namespace = Some(ns.name.clone());
    let decided_from = instances
        .create(&PostParams::default(), &instance)
        .await
        .unwrap();
    let api = unfenced_api(client, &ns, "late-status-test");
    let counted = |restarts: i64, hash: &str| RedisInstanceStatus {
        restarts,
        config_hash: Some(hash.to_owned()),
        ..RedisInstanceStatus::default()
    };

    // The new leader, deciding from the same copy, writes first.
    let newer = api
        .write_status(&decided_from, &counted(1, "newer"))
        .await
        .expect("the first write over this copy lands");
    // The deposed leader's write, decided from that copy, arrives after it.
    let error = api
        .write_status(&decided_from, &counted(2, "deposed"))
        .await
        .expect_err("a write decided from an older copy must not land");
    assert!(error.is_conflict(), "{error:?}");
    let stored = instances.get(NAME).await.unwrap();
    assert_eq!(stored.status, Some(counted(1, "newer")), "overwritten");
    // Looking again, as a conflict makes the operator do, and deciding from what it reads.
    assert_eq!(stored.resource_version(), newer.resource_version());
    api.write_status(&stored, &counted(2, "looked-again"))
        .await
        .expect("a write decided from the current copy lands");

    // Deleted and created again: a write decided for the first instance must not land.
    let first = instances.get(NAME).await.unwrap();
    instances
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    let second = instances
        .create(&PostParams::default(), &instance)
        .await
        .unwrap();
    assert_ne!(first.uid(), second.uid());
    let error = api
        .write_status(&first, &counted(3, "deleted"))
        .await
        .expect_err("a write for a deleted instance must not land on its successor");
    assert!(error.is_conflict(), "{error:?}");
    let stored = instances.get(NAME).await.unwrap();
    assert_eq!(stored.uid(), second.uid());
    assert_eq!(stored.status.unwrap_or_default().restarts, 0);
}
