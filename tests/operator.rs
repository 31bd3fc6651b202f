//! End-to-end tests of the operator on the local cluster: the spec's five test steps, both
//! restart strategies, rolling order, refused input, operator restarts, and cleanup.

mod common;
mod e2e;

use std::time::Duration;

use common::{TestNamespace, client, ready_pod, ready_pod_not, redis_cli, uid, wait_for};
use e2e::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use redis_operator::crd::{RedisInstance, RestartStrategy, Retention, RetentionPolicy};
use redis_operator::resources::config_map;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const SPEC_LOG_MESSAGES: [&str; 4] = [
    "ConfigMap configuration changed, updating",
    "Config hash comparison",
    "ConfigMap was updated or StatefulSet needs restart",
    "StatefulSet not found or needs recreation, creating new one",
];

async fn setup(prefix: &str) -> (kube::Client, TestNamespace, Operator) {
    setup_with(prefix, &[]).await
}

async fn setup_with(prefix: &str, flags: &[&str]) -> (kube::Client, TestNamespace, Operator) {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let operator = Operator::start_with(&ns.name, flags);
    (client, ns, operator)
}

/// Actors hibernate a second after they come to rest. No settle time: an actor that saw a
/// restart finish stays awake for the settle window after it (a minute and the settle time).
const HIBERNATE_SOON: [&str; 4] = ["--hibernate-after-seconds", "1", "--settle-seconds", "0"];

/// The spec's test steps with its two example manifests, under the given strategy; with
/// `hibernate`, the instance's actor hibernates between them (see [`hibernates_and_wakes`]).
async fn spec_walkthrough(prefix: &str, strategy: RestartStrategy, hibernate: bool) {
    let flags: &[&str] = if hibernate { &HIBERNATE_SOON } else { &[] };
    let (_client, ns, operator) = setup_with(prefix, flags).await;
    let mut first = example("redis-example.yaml");
    first.spec.restart_strategy = strategy;
    apply_instance(&ns, &first).await.unwrap();

    // Steps 1-2: deployed; ConfigMap and StatefulSet created; the hash is sha256sum of redis.conf.
    let ready = wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let (text, hash) = config_map_and_hash(&ns, "redis-example").await;
    assert_eq!(hash.as_deref(), Some(sha256sum(&text).as_str()));
    assert_eq!(ready.status.as_ref().unwrap().config_hash, hash);
    assert!(text.contains("maxmemory 100mb\n"), "{text}");
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "104857600");
    assert_eq!(
        redis_cli(&pod, &["SET", "written-before-restart", "kept"]).await,
        "OK"
    );
    let sts_before = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    let pvc_before = ns
        .api::<PersistentVolumeClaim>()
        .get("data-redis-example-0")
        .await
        .unwrap();
    if hibernate {
        hibernates_and_wakes(&ns, &operator).await;
    }

    // Steps 3-4: edit the config; the operator restarts the pod (once, as asserted below, even
    // when the edit reaches a hibernating instance).
    let mut second = example("redis-example-updated.yaml");
    second.spec.restart_strategy = strategy;
    apply_instance(&ns, &second).await.unwrap();
    let new_hash = redis_operator::config::rendered(&second).hash;
    let pod = ready_pod_not(&ns, "redis-example-0", Some(&uid(&pod))).await;
    let ready = wait_ready(&ns, "redis-example", Some(&new_hash), READY_TIMEOUT).await;
    let (text, hash) = config_map_and_hash(&ns, "redis-example").await;
    assert_eq!(hash.as_deref(), Some(sha256sum(&text).as_str()));
    assert_eq!(hash.as_deref(), Some(new_hash.as_str()));

    // Step 5: the running Redis has the new config, and the data survived.
    assert_eq!(config_get(&pod, "maxmemory").await, "209715200");
    assert_eq!(config_get(&pod, "maxmemory-policy").await, "allkeys-lfu");
    assert_eq!(config_get(&pod, "save").await, "900 1 300 10 60 10000");
    assert_eq!(
        redis_cli(&pod, &["GET", "written-before-restart"]).await,
        "kept"
    );

    let status = ready.status.unwrap();

    // What `kubectl get redisinstances` shows a person.
    let table = kubectl(&["get", "redisinstances", "-n", &ns.name]);
    let header: Vec<_> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "REPLICAS", "READY", "PHASE", "HASH", "RESTARTS", "PRIMARY", "AGE"
        ],
        "{table}"
    );
    let row: Vec<_> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        ["redis-example", "1", "1", "Running", &new_hash[..12], "1"],
        "{table}"
    );
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(status.last_restart_time.is_some());
    let sts_after = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    let pvc_after = ns
        .api::<PersistentVolumeClaim>()
        .get("data-redis-example-0")
        .await
        .unwrap();
    assert_eq!(
        pvc_before.uid(),
        pvc_after.uid(),
        "the data volume claim must be kept"
    );
    match strategy {
        RestartStrategy::Recreate => assert_ne!(
            sts_before.uid(),
            sts_after.uid(),
            "Recreate makes a new StatefulSet"
        ),
        RestartStrategy::RollingUpdate => assert_eq!(
            sts_before.uid(),
            sts_after.uid(),
            "RollingUpdate keeps the StatefulSet"
        ),
    }

    // The spec's log messages, word for word, with the fields users filter on.
    let lines = operator.log_lines();
    for message in SPEC_LOG_MESSAGES {
        let line = lines
            .iter()
            .find(|l| l["message"] == message && l["instance"] == "redis-example")
            .unwrap_or_else(|| {
                panic!("no log line {message:?} in {}", operator.log_path.display())
            });
        assert_eq!(line["namespace"], ns.name.as_str(), "{line}");
    }
    let restart_line = lines
        .iter()
        .find(|l| l["message"] == "ConfigMap was updated or StatefulSet needs restart")
        .unwrap();
    assert_eq!(restart_line["new_hash"], new_hash.as_str());
    assert_eq!(
        restart_line["old_hash"].as_str(),
        Some(sha256sum(&redis_operator::config::rendered(&first).text).as_str())
    );
    if hibernate {
        // The actor the edit woke kept running until the restart was complete.
        let restarting = lines
            .iter()
            .skip_while(|l| l["message"] != "ConfigMap was updated or StatefulSet needs restart")
            .take_while(|l| l["message"] != "restart complete");
        let hibernated = restarting
            .filter(|l| l["message"] == "instance actor hibernating")
            .count();
        assert_eq!(hibernated, 0, "{}", operator.log_path.display());
    }

    // Metrics and Events tell the same story.
    let metrics = operator.metrics().await;
    let restarts = format!(
        "redis_operator_restarts_total{{instance=\"redis-example\",namespace=\"{}\",reason=\"ConfigChanged\",strategy=\"{}\"}} 1",
        ns.name,
        strategy.as_str()
    );
    assert!(
        metrics.contains(&restarts),
        "missing {restarts} in\n{metrics}"
    );
    assert!(
        metrics.contains("redis_operator_config_hash_mismatches_total{"),
        "{metrics}"
    );
    for reason in ["RestartStarted", "RestartCompleted"] {
        assert!(event_count_once(&ns, "redis-example", reason, 1).await >= 1);
    }
}

/// The instance at rest: its actor hibernates, leaving its snapshot on `/instances`; a
/// hand-deleted Service is an event for it, which starts a new actor that creates the Service
/// again and hibernates in turn.
async fn hibernates_and_wakes(ns: &TestNamespace, operator: &Operator) {
    operator.wait_hibernated("redis-example", 1).await;
    wait_for(Duration::from_secs(30), "the actor gauges", || async {
        let metrics = operator.metrics().await;
        let gauges = [
            "redis_operator_instance_actors_hibernated 1",
            "redis_operator_instance_actors 0",
        ];
        match gauges.iter().all(|g| metrics.lines().any(|l| l == *g)) {
            true => Ok(()),
            false => Err(metrics),
        }
    })
    .await;
    let instances = operator.debug_get("/instances").await;
    assert!(instances.contains("redis-example"), "{instances}");

    let services = ns.api::<Service>();
    let deleted = services.get("redis-example").await.unwrap();
    services
        .delete("redis-example", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the Service created again",
        || async {
            match services.get_opt("redis-example").await {
                Ok(Some(service)) if service.uid() != deleted.uid() => Ok(()),
                other => Err(format!("{:?}", other.map(|s| s.map(|s| s.uid())))),
            }
        },
    )
    .await;
    let woken = operator.log_lines().into_iter().any(|l| {
        l["message"] == "instance actor started"
            && l["instance"] == "redis-example"
            && l["woken"] == true
    });
    assert!(woken, "no actor woken in {}", operator.log_path.display());
    operator.wait_hibernated("redis-example", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_example_rolling_update() {
    spec_walkthrough("rolling", RestartStrategy::RollingUpdate, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_example_recreate() {
    spec_walkthrough("recreate", RestartStrategy::Recreate, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_roll_highest_ordinal_first() {
    let (_client, ns, _operator) = setup("three").await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 3;
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let before: Vec<_> = pods(&ns, "redis-example").await.iter().map(uid).collect();
    assert_eq!(before.len(), 3);

    instance
        .spec
        .config
        .insert("maxmemory".into(), "150mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let new_hash = redis_operator::config::rendered(&instance).hash;
    // Record the order in which ordinals get a new pod.
    let order = std::sync::Mutex::new(Vec::new());
    wait_for(
        Duration::from_secs(300),
        "all three pods to be replaced",
        || {
            let ns = &ns;
            let before = &before;
            let order = &order;
            async move {
                let pods = pods(ns, "redis-example").await;
                let mut order = order.lock().unwrap();
                for pod in pods {
                    let ordinal: usize =
                        pod.name_any().rsplit('-').next().unwrap().parse().unwrap();
                    if uid(&pod) != before[ordinal] && !order.contains(&ordinal) {
                        order.push(ordinal);
                    }
                }
                if order.len() == 3 {
                    Ok(())
                } else {
                    Err(format!("replaced so far: {order:?}"))
                }
            }
        },
    )
    .await;
    let order = order.into_inner().unwrap();
    assert_eq!(
        order,
        [2, 1, 0],
        "StatefulSet rolling updates go from the highest ordinal down"
    );
    wait_ready(&ns, "redis-example", Some(&new_hash), READY_TIMEOUT).await;
    for pod in pods(&ns, "redis-example").await {
        assert_eq!(config_get(&pod, "maxmemory").await, "157286400");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_is_refused_and_the_pod_keeps_running() {
    let (_client, ns, operator) = setup("invalid").await;
    let good = example("redis-example.yaml");
    apply_instance(&ns, &good).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    let (good_text, good_hash) = config_map_and_hash(&ns, "redis-example").await;

    // What the schema can see is refused at admission.
    let mut negative = good.clone();
    negative.spec.replicas = -1;
    let err = apply_instance(&ns, &negative)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.replicas"), "{err}");
    let mut newline = good.clone();
    newline
        .spec
        .config
        .insert("maxmemory".into(), "100mb\nport 1".into());
    let err = apply_instance(&ns, &newline).await.unwrap_err().to_string();
    assert!(err.contains("spec.config"), "{err}");
    let mut bad_key = good.clone();
    bad_key.spec.config.insert("Max Memory".into(), "1".into());
    let err = apply_instance(&ns, &bad_key).await.unwrap_err().to_string();
    assert!(
        err.contains("config key \"Max Memory\" is not a redis.conf directive name"),
        "{err}"
    );
    let mut bad_size = good.clone();
    bad_size.spec.storage.size = "lots".into();
    let err = apply_instance(&ns, &bad_size)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.storage.size"), "{err}");
    let mut resized = good.clone();
    resized.spec.storage.size = "2Gi".into();
    let err = apply_instance(&ns, &resized).await.unwrap_err().to_string();
    assert!(
        err.contains("storage cannot change after creation"),
        "{err}"
    );

    // The rest is refused by the operator: condition, Warning Event, nothing restarted.
    let mut bad = good.clone();
    bad.spec.config.insert("maxmemory".into(), "lots".into());
    bad.spec.config.insert("daemonize".into(), "yes".into());
    apply_instance(&ns, &bad).await.unwrap();
    let api = ns.api::<RedisInstance>();
    let refused = wait_for(Duration::from_secs(60), "ConfigValid=False", || {
        let api = api.clone();
        async move {
            let ri = api.get("redis-example").await.map_err(|e| e.to_string())?;
            let status = ri.status.clone().unwrap_or_default();
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "ConfigValid" && c.status == "False")
                .map(|c| (c.message.clone(), status.phase))
                .ok_or_else(|| format!("{:?}", status.conditions))
        }
    })
    .await;
    assert!(
        refused
            .0
            .contains("maxmemory: \"lots\" is not a memory size"),
        "{}",
        refused.0
    );
    assert!(refused.0.contains("daemonize"), "{}", refused.0);
    assert_eq!(refused.1.map(|p| p.as_str()), Some("Invalid"));
    instance_events_once(&ns, "redis-example", |(t, r, n)| {
        t == "Warning" && r == "InvalidConfig" && n.contains("maxmemory")
    })
    .await;
    // Give a wrongly eager operator time to act: the step that refused the edit ends first.
    operator.wait_for_passes(1, Some("config refused")).await;
    let still = ns.api::<Pod>().get("redis-example-0").await.unwrap();
    assert_eq!(
        uid(&still),
        uid(&pod),
        "a refused config must not restart the pod"
    );
    assert_eq!(
        config_map_and_hash(&ns, "redis-example").await,
        (good_text, good_hash),
        "a refused config must leave the ConfigMap and the template hash alone"
    );
    assert_eq!(config_get(&pod, "maxmemory").await, "104857600");

    // A refusal longer than an Event's note may be (30 directives Redis does not know, as in a
    // pasted redis.conf) is still told, its note cut to what the API server takes.
    let mut long = bad.clone();
    for n in 0..30 {
        let directive = format!("no-such-directive-{n:02}");
        long.spec.config.insert(directive, "x".repeat(24));
    }
    apply_instance(&ns, &long).await.unwrap();
    instance_events_once(&ns, "redis-example", |(t, r, n)| {
        let cut = n.chars().count() <= 1024;
        t == "Warning" && r == "InvalidConfig" && n.contains("no-such-directive-00") && cut
    })
    .await;
    let message = wait_for(
        Duration::from_secs(60),
        "the long refusal on status",
        || {
            let api = api.clone();
            async move {
                let ri = api.get("redis-example").await.map_err(|e| e.to_string())?;
                let status = ri.status.unwrap_or_default();
                status
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "ConfigValid" && c.message.contains("no-such-directive"))
                    .map(|c| c.message)
                    .ok_or_else(|| "not yet".to_owned())
            }
        },
    )
    .await;
    assert!(
        message.chars().count() > 1024,
        "{} characters",
        message.len()
    );

    // A later valid edit goes through.
    let mut fixed = good.clone();
    fixed.spec.config.insert("maxmemory".into(), "120mb".into());
    apply_instance(&ns, &fixed).await.unwrap();
    let new_hash = redis_operator::config::rendered(&fixed).hash;
    let ri = wait_ready(&ns, "redis-example", Some(&new_hash), READY_TIMEOUT).await;
    let valid = ri
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ConfigValid")
        .unwrap();
    assert_eq!(valid.status, "True");
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "125829120");
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_restart_causes_no_pod_restart() {
    let (_client, ns, operator) = setup("restart-op").await;
    apply_instance(&ns, &example("redis-example.yaml"))
        .await
        .unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    let sts = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    assert!(
        operator.stop().success(),
        "SIGTERM should end the operator cleanly"
    );

    let operator = Operator::start(&ns.name);
    // Each instance takes one step when the new operator lists it.
    operator.wait_for_passes(1, None).await;
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let after = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    assert_eq!(
        after.metadata.generation, sts.metadata.generation,
        "the StatefulSet must not change"
    );
    let still = ns.api::<Pod>().get("redis-example-0").await.unwrap();
    assert_eq!(
        uid(&still),
        uid(&pod),
        "restarting the operator must not restart Redis"
    );
    let restarts = still.status.unwrap().container_statuses.unwrap()[0].restart_count;
    assert_eq!(restarts, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_killed_between_config_map_and_statefulset_converges() {
    let (_client, ns, operator) = setup("killed").await;
    let first = example("redis-example.yaml");
    let applied = apply_instance(&ns, &first).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    operator.kill();

    // Leave the cluster as a crash right after the ConfigMap write would: new ConfigMap,
    // StatefulSet still on the old hash.
    let second = example("redis-example-updated.yaml");
    let mut edited = apply_instance(&ns, &second).await.unwrap();
    edited.metadata.uid = applied.metadata.uid.clone();
    let rendered = redis_operator::config::rendered(&second);
    ns.api::<ConfigMap>()
        .patch(
            "redis-example-config",
            &PatchParams::apply("redis-operator").force(),
            &Patch::Apply(&config_map(&edited, &rendered)),
        )
        .await
        .unwrap();
    let (_, hash) = config_map_and_hash(&ns, "redis-example").await;
    assert_ne!(
        hash.as_deref(),
        Some(rendered.hash.as_str()),
        "the StatefulSet still has the old hash"
    );

    let _operator = Operator::start(&ns.name);
    let pod = ready_pod_not(&ns, "redis-example-0", Some(&uid(&pod))).await;
    wait_ready(&ns, "redis-example", Some(&rendered.hash), READY_TIMEOUT).await;
    assert_eq!(config_get(&pod, "maxmemory").await, "209715200");
}

/// How many objects of a kind match `selector` in the test namespace.
async fn count<K>(ns: &TestNamespace, selector: &ListParams) -> Result<usize, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = ns
        .api::<K>()
        .list(selector)
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.len())
}

const INSTANCE_SELECTOR: &str = "app.kubernetes.io/instance=redis-example";

/// Waits until the instance's ConfigMap, Service, StatefulSet and pods are gone; returns how
/// many of its claims are left then.
async fn wait_objects_gone(ns: &TestNamespace) -> usize {
    let selector = ListParams::default().labels(INSTANCE_SELECTOR);
    wait_for(
        Duration::from_secs(120),
        "the instance's objects to be gone",
        || {
            let selector = selector.clone();
            async move {
                let left = [
                    count::<ConfigMap>(ns, &selector).await?,
                    count::<Service>(ns, &selector).await?,
                    count::<StatefulSet>(ns, &selector).await?,
                    count::<Pod>(ns, &selector).await?,
                ];
                if left.iter().all(|n| *n == 0) {
                    count::<PersistentVolumeClaim>(ns, &selector).await
                } else {
                    Err(format!(
                        "left (configmaps, services, statefulsets, pods): {left:?}"
                    ))
                }
            }
        },
    )
    .await
}

/// Waits until the instance has no claim left.
async fn wait_claims_gone(ns: &TestNamespace) {
    let selector = ListParams::default().labels(INSTANCE_SELECTOR);
    wait_for(Duration::from_secs(120), "the claims to be gone", || {
        let selector = selector.clone();
        async move {
            match count::<PersistentVolumeClaim>(ns, &selector).await? {
                0 => Ok(()),
                n => Err(format!("{n} claims left")),
            }
        }
    })
    .await;
}

/// Waits until the StatefulSet controller has made StatefulSet `owner` an owner of the claim.
async fn wait_claim_owned_by(ns: &TestNamespace, owner: &str) -> PersistentVolumeClaim {
    let claims = ns.api::<PersistentVolumeClaim>();
    wait_for(
        Duration::from_secs(60),
        "the StatefulSet to own the data claim",
        || {
            let claims = claims.clone();
            async move {
                let claim = claims
                    .get("data-redis-example-0")
                    .await
                    .map_err(|e| e.to_string())?;
                let owned = claim
                    .owner_references()
                    .iter()
                    .any(|o| o.kind == "StatefulSet" && o.uid == owner);
                if owned {
                    Ok(claim)
                } else {
                    Err(format!("{:?}", claim.owner_references()))
                }
            }
        },
    )
    .await
}

fn deleted_with_the_instance() -> RetentionPolicy {
    RetentionPolicy {
        when_deleted: Retention::Delete,
        when_scaled: Retention::Retain,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_instance_keeps_its_claims_by_default() {
    let (_client, ns, _operator) = setup("delete").await;
    apply_instance(&ns, &example("redis-example.yaml"))
        .await
        .unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let claims = ns.api::<PersistentVolumeClaim>();
    let claim = claims.get("data-redis-example-0").await.unwrap();
    assert_eq!(
        claim.status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    let sts = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    let retention = sts.spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Retain"))
    );
    assert!(
        claim.owner_references().is_empty(),
        "nothing owns the claim: {:?}",
        claim.owner_references()
    );
    // Its ConfigMaps, `<name>-config` and the revision's one the pod mounts (immutable), are
    // owned by the instance: the garbage collector deletes them with it.
    let mounted = mounted_config_map(&ready_pod(&ns, "redis-example-0").await);
    let revisions = revision_config_maps(&ns, "redis-example").await;
    let names: Vec<String> = revisions.iter().map(|cm| cm.name_any()).collect();
    assert_eq!(names, std::slice::from_ref(&mounted));
    assert_eq!(revisions[0].immutable, Some(true));
    let instance = ns
        .api::<RedisInstance>()
        .get("redis-example")
        .await
        .unwrap();
    for name in ["redis-example-config", mounted.as_str()] {
        let cm = ns.api::<ConfigMap>().get(name).await.unwrap();
        let owner = cm.owner_references().first().map(|o| o.uid.clone());
        assert_eq!(owner, instance.uid(), "{name}");
    }

    ns.api::<RedisInstance>()
        .delete("redis-example", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(wait_objects_gone(&ns).await, 1, "the claim is kept");
    let kept = claims.get("data-redis-example-0").await.unwrap();
    assert_eq!(kept.uid(), claim.uid());
    assert_eq!(kept.status.unwrap().phase.as_deref(), Some("Bound"));

    // What docs/reference.md#data-claims tells a user to run to delete the data.
    kubectl(&["-n", &ns.name, "delete", "pvc", "-l", INSTANCE_SELECTOR]);
    wait_claims_gone(&ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_when_deleted_delete_the_claims_go_with_the_instance() {
    let (_client, ns, _operator) = setup("delete-claims").await;
    let mut instance = example("redis-example.yaml");
    instance.spec.storage.retention_policy = Some(deleted_with_the_instance());
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let sts = ns.api::<StatefulSet>().get("redis-example").await.unwrap();
    wait_claim_owned_by(&ns, &uid(&sts)).await;

    ns.api::<RedisInstance>()
        .delete("redis-example", &DeleteParams::background())
        .await
        .unwrap();
    wait_objects_gone(&ns).await;
    wait_claims_gone(&ns).await;
}

/// Takes a finalizer of someone else's off the StatefulSet when the test ends, pass or fail, so
/// that the namespace can be deleted.
struct ForeignFinalizer {
    namespace: String,
}

impl Drop for ForeignFinalizer {
    fn drop(&mut self) {
        let _ = kubectl_output(&[
            "-n",
            &self.namespace,
            "patch",
            "statefulset",
            "redis-example",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
}

/// With `whenDeleted: Delete` the StatefulSet owns its claims, so deleting it in the foreground
/// would delete the data. A Recreate deletes it orphaning them, leaves a finalizer someone else
/// put there in place and waits for it, then deletes the old pods itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_recreate_keeps_the_data_and_others_finalizers_with_when_deleted_delete() {
    let (_client, ns, operator) = setup("recreate-keep").await;
    let mut instance = example("redis-example.yaml");
    instance.spec.restart_strategy = RestartStrategy::Recreate;
    instance.spec.storage.retention_policy = Some(deleted_with_the_instance());
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let statefulsets = ns.api::<StatefulSet>();
    let sts_before = statefulsets.get("redis-example").await.unwrap();
    let claim = wait_claim_owned_by(&ns, &uid(&sts_before)).await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(
        redis_cli(&pod, &["SET", "written-before-recreate", "kept"]).await,
        "OK"
    );
    let _cleanup = ForeignFinalizer {
        namespace: ns.name.clone(),
    };
    statefulsets
        .patch(
            "redis-example",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["example.com/keep"]}})),
        )
        .await
        .unwrap();

    instance
        .spec
        .config
        .insert("maxmemory".into(), "110mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let new_hash = redis_operator::config::rendered(&instance).hash;

    // Deleted with its dependents orphaned (the garbage collector's `orphan` finalizer done),
    // and held by the foreign finalizer, which the operator leaves alone.
    wait_for(
        Duration::from_secs(60),
        "the StatefulSet to be deleting, held by the foreign finalizer alone",
        || {
            let statefulsets = statefulsets.clone();
            async move {
                let sts = statefulsets
                    .get("redis-example")
                    .await
                    .map_err(|e| e.to_string())?;
                let deleting = sts.metadata.deletion_timestamp.is_some();
                if deleting && sts.finalizers() == ["example.com/keep"] {
                    Ok(())
                } else {
                    Err(format!(
                        "deleting {deleting}, finalizers {:?}",
                        sts.finalizers()
                    ))
                }
            }
        },
    )
    .await;
    operator
        .wait_for_passes(
            2,
            Some("deleted the StatefulSet, orphaning its pods and claims"),
        )
        .await;
    let sts = statefulsets.get("redis-example").await.unwrap();
    assert_eq!(sts.finalizers(), ["example.com/keep"], "left in place");
    assert_eq!(uid(&sts), uid(&sts_before));
    let orphan = ns
        .api::<PersistentVolumeClaim>()
        .get("data-redis-example-0")
        .await
        .unwrap();
    assert_eq!(uid(&orphan), uid(&claim), "the claim is kept");
    assert!(
        orphan.owner_references().is_empty(),
        "orphaned: {:?}",
        orphan.owner_references()
    );
    let waiting = ns
        .api::<RedisInstance>()
        .get("redis-example")
        .await
        .unwrap();
    assert!(
        waiting.status.unwrap().rollout.is_some(),
        "the restart waits for the deletion"
    );

    // Its owner takes the finalizer off (only its own: the test fails if another is there).
    statefulsets
        .patch(
            "redis-example",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(serde_json::json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["example.com/keep"]},
                    {"op": "remove", "path": "/metadata/finalizers"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let finished = wait_restarts(&ns, "redis-example", 1).await;
    assert_eq!(
        finished.status.unwrap().config_hash.as_deref(),
        Some(new_hash.as_str())
    );
    let pod = ready_pod_not(&ns, "redis-example-0", Some(&uid(&pod))).await;
    assert_eq!(config_get(&pod, "maxmemory").await, "115343360");
    assert_eq!(
        redis_cli(&pod, &["GET", "written-before-recreate"]).await,
        "kept"
    );
    let sts_after = statefulsets.get("redis-example").await.unwrap();
    assert_ne!(uid(&sts_after), uid(&sts_before), "a new StatefulSet");
    let claim_after = wait_claim_owned_by(&ns, &uid(&sts_after)).await;
    assert_eq!(
        uid(&claim_after),
        uid(&claim),
        "the same claim, now the new StatefulSet's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_edits_during_a_recreate_end_in_one_restart_with_the_last_config() {
    let (_client, ns, operator) = setup("coalesce").await;
    let mut instance = example("redis-example.yaml");
    instance.spec.restart_strategy = RestartStrategy::Recreate;
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let history = PodHistory::start(&ns).await;

    for memory in ["110mb", "120mb", "130mb"] {
        instance
            .spec
            .config
            .insert("maxmemory".into(), memory.into());
        apply_instance(&ns, &instance).await.unwrap();
    }
    let last = redis_operator::config::rendered(&instance).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&last), READY_TIMEOUT).await;
    assert_eq!(
        ready.status.unwrap().restarts,
        1,
        "three quick edits, one restart"
    );
    assert_eq!(
        history.restarts().await.get("redis-example-0"),
        Some(&1),
        "the pod really restarted once"
    );
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "136314880");
    let restarts_logged = operator
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "ConfigMap was updated or StatefulSet needs restart")
        .count();
    assert_eq!(restarts_logged, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_redis_rejects_is_rolled_back_to_the_last_one_that_ran() {
    let (_client, ns, operator) = setup("rejected").await;
    let good = example("redis-example.yaml");
    apply_instance(&ns, &good).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let good_hash = redis_operator::config::rendered(&good).hash;
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(
        redis_cli(&pod, &["SET", "survives-the-rollback", "yes"]).await,
        "OK"
    );

    // Valid for Redis 7.0 in general, but the local node's redis-server (built against the
    // system jemalloc) exits at startup on it: a config only Redis itself can refuse.
    let mut rejected = good.clone();
    rejected
        .spec
        .config
        .insert("activedefrag".into(), "yes".into());
    rejected
        .spec
        .config
        .insert("maxmemory".into(), "300mb".into());
    apply_instance(&ns, &rejected).await.unwrap();

    let api = ns.api::<RedisInstance>();
    let message = wait_for(
        READY_TIMEOUT,
        "ConfigValid=False with reason RedisRejectedConfig",
        || {
            let api = api.clone();
            async move {
                let status = api
                    .get("redis-example")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "ConfigValid" && c.reason == "RedisRejectedConfig")
                    .map(|c| c.message.clone())
                    .ok_or_else(|| format!("{:?}", status.conditions))
            }
        },
    )
    .await;
    // Redis's own words, from the pod's termination message (FallbackToLogsOnError).
    let said = ">>> 'activedefrag yes': Active defragmentation cannot be enabled";
    assert!(message.contains(said), "quotes Redis's reason: {message}");
    assert!(message.contains("(exit code 1)"), "{message}");
    assert!(
        message.contains(&good_hash[..12]),
        "names the config it rolls back to: {message}"
    );

    // Rolled back: the pod runs the last good config again, with its data.
    let pod = wait_for(
        READY_TIMEOUT,
        "the pod to run the previous config again",
        || {
            let ns = &ns;
            let good_hash = &good_hash;
            async move {
                let (_, hash) = config_map_and_hash(ns, "redis-example").await;
                let pod = ns
                    .api::<Pod>()
                    .get_opt("redis-example-0")
                    .await
                    .map_err(|e| e.to_string())?;
                match pod {
                    Some(pod)
                        if hash.as_deref() == Some(good_hash.as_str())
                            && common::is_ready(&pod)
                            && pod.annotations().get("redis.github.com/config-hash")
                                == Some(good_hash) =>
                    {
                        Ok(pod)
                    }
                    other => Err(format!(
                        "template hash {hash:?}, pod {:?}",
                        other.map(|p| common::describe(&p))
                    )),
                }
            }
        },
    )
    .await;
    assert_eq!(config_get(&pod, "maxmemory").await, "104857600");
    assert_eq!(
        redis_cli(&pod, &["GET", "survives-the-rollback"]).await,
        "yes"
    );
    instance_events_once(&ns, "redis-example", |(t, r, note)| {
        t == "Warning" && r == "RedisRejectedConfig" && note.contains(said)
    })
    .await;

    // A restarted operator remembers the rejection (status.rejectedConfigHash) and does not
    // roll the refused config out again.
    assert!(operator.stop().success());
    let operator = Operator::start(&ns.name);
    operator.wait_for_passes(1, None).await;
    let still = ns.api::<Pod>().get("redis-example-0").await.unwrap();
    assert_eq!(
        uid(&still),
        uid(&pod),
        "the restarted operator must leave the rolled-back pod alone"
    );
    assert_eq!(
        config_map_and_hash(&ns, "redis-example").await.1.as_deref(),
        Some(good_hash.as_str())
    );

    // Fixing the spec goes through.
    let mut fixed = rejected.clone();
    fixed.spec.config.remove("activedefrag");
    apply_instance(&ns, &fixed).await.unwrap();
    wait_ready(
        &ns,
        "redis-example",
        Some(&redis_operator::config::rendered(&fixed).hash),
        READY_TIMEOUT,
    )
    .await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "314572800");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_edits_during_a_rolling_restart_costs_at_most_one_more_restart() {
    let (_client, ns, operator) = setup("burst").await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 3;
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, READY_TIMEOUT).await;
    let history = PodHistory::start(&ns).await;

    instance
        .spec
        .config
        .insert("maxmemory".into(), "110mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    // Three pods roll one at a time, each waiting for readiness: the burst lands mid-way.
    wait_for(
        Duration::from_secs(60),
        "the first restart to begin",
        || {
            let lines = operator.log_lines();
            async move {
                let began = lines
                    .iter()
                    .any(|l| l["message"] == "ConfigMap was updated or StatefulSet needs restart");
                if began { Ok(()) } else { Err("not yet".into()) }
            }
        },
    )
    .await;
    for memory in ["120mb", "130mb", "140mb", "150mb", "160mb"] {
        instance
            .spec
            .config
            .insert("maxmemory".into(), memory.into());
        apply_instance(&ns, &instance).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let last = redis_operator::config::rendered(&instance).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&last), Duration::from_secs(300)).await;
    let recorded = ready.status.unwrap().restarts;
    let reasons = event_reasons(&ns, "redis-example").await;
    assert!(
        (1..=2).contains(&recorded),
        "six edits, at most two restarts: {recorded}, {reasons:?}"
    );
    let real = history.restarts().await;
    assert_eq!(real.len(), 3, "{real:?}");
    for (pod, times) in &real {
        assert_eq!(
            *times as i64, recorded,
            "pod {pod} restarted {times} times, status says {recorded}: {real:?}"
        );
    }
    let started = event_count_once(&ns, "redis-example", "RestartStarted", recorded).await;
    assert_eq!(started, recorded, "{reasons:?}");
    for pod in pods(&ns, "redis-example").await {
        assert_eq!(
            config_get(&pod, "maxmemory").await,
            "167772160",
            "{}",
            pod.name_any()
        );
    }
}

/// The host directory behind a claim: the local PersistentVolume the node agent provisioned.
async fn claim_dir(client: &kube::Client, ns: &TestNamespace, claim: &str) -> std::path::PathBuf {
    let pvc = ns.api::<PersistentVolumeClaim>().get(claim).await.unwrap();
    let volume = pvc.spec.unwrap().volume_name.unwrap();
    let pv = kube::Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    let path = spec
        .local
        .map(|l| l.path)
        .or(spec.host_path.map(|h| h.path))
        .unwrap_or_else(|| panic!("{volume} is not a local volume"));
    path.into()
}

/// The Redis process as the node agent started it (its pid is the container ID): the redis
/// user's ids, fsGroup as its only supplementary group, no way to gain privileges, no
/// capabilities.
fn assert_runs_as_redis(pod: &Pod) {
    const REDIS: &str = "999";
    let pid = common::container_pid(pod);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("redis-server"),
        "pid {pid} is not redis-server: {cmdline:?}"
    );
    let process = common::ProcStatus::read(&pid);
    let (field, proc_status) = (|key: &str| process.field(key), &process.0);
    // Real, effective, saved and filesystem ids.
    assert_eq!(field("Uid:"), [REDIS; 4], "{proc_status}");
    assert_eq!(field("Gid:"), [REDIS; 4], "{proc_status}");
    assert_eq!(field("Groups:"), [REDIS], "fsGroup: {proc_status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{proc_status}");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{caps} {proc_status}");
    }
}

/// Owner and group of a file of the data volume.
fn owner(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_runs_as_the_redis_user_and_writes_its_data_even_after_root_did() {
    let (client, ns, _operator) = setup("nonroot").await;
    apply_instance(&ns, &example("redis-example.yaml"))
        .await
        .unwrap();
    wait_ready(&ns, "redis-example", None, Duration::from_secs(180)).await;
    let pod = ready_pod(&ns, "redis-example-0").await;
    assert_runs_as_redis(&pod);
    let data = claim_dir(&client, &ns, "data-redis-example-0").await;
    assert_eq!(redis_cli(&pod, &["SET", "before", "1"]).await, "OK");
    assert_eq!(redis_cli(&pod, &["SAVE"]).await, "OK");
    assert_eq!(owner(&data.join("dump.rdb")), (999, 999));

    // The volume as a Redis running as root (before this version) left it: everything root's,
    // nothing group-writable. The next pod's mount hands it to fsGroup again.
    let chown = std::process::Command::new("chown")
        .args(["-R", "0:0"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("dump.rdb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    ns.api::<Pod>()
        .delete("redis-example-0", &DeleteParams::default())
        .await
        .unwrap();
    let pod = ready_pod_not(&ns, "redis-example-0", Some(&uid(&pod))).await;
    assert_runs_as_redis(&pod);
    assert_eq!(redis_cli(&pod, &["GET", "before"]).await, "1");
    assert_eq!(redis_cli(&pod, &["SET", "after", "2"]).await, "OK");
    assert_eq!(redis_cli(&pod, &["SAVE"]).await, "OK");
    assert_eq!(owner(&data.join("dump.rdb")), (999, 999));
    assert_eq!(owner(&data).1, 999, "the volume's group is fsGroup");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o2070, 0o2070, "group-writable and setgid: {mode:o}");
}
