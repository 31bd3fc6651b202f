//! Replicated instances on the local cluster with real Redis: one primary and its replicas; the
//! objects of an earlier version (the StatefulSet naming the headless `<name>`, writes through
//! `<name>-primary`) migrated with no pod restarted; a restart-class edit under a write load
//! sent through the primary's Service `<name>` and kube-proxy
//! (replicas first, one switchover, no acknowledged write lost); the primary's pod deleted
//! (the replica furthest ahead promoted, no write acknowledged by a replica lost, the old
//! primary back as a replica); the operator killed mid-switchover (no second one). And an
//! earlier 3-pod instance of unrelated servers: left so until the annotation agrees, then
//! converted (pod 0's data kept, the Event first); scale-downs removing the primary's pod (to
//! two pods, then to one). And `min-replicas-to-write`: a primary cut off from its replica
//! refuses writes within its lag bound, and the operator changes no role meanwhile.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use redis_operator::crd::{RedisInstance, ReplicationStatus};
use serde_json::json;

use common::{TestNamespace, pod_ip, redis_cli, wait_for};
use e2e::*;

const NAME: &str = "redis-example";
const ROLE: &str = "redis.github.com/role";

async fn replication(ns: &TestNamespace) -> ReplicationStatus {
    let ri = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    ri.status.and_then(|s| s.replication).unwrap_or_default()
}

/// Pods labelled with `role`.
async fn with_role(ns: &TestNamespace, role: &str) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(
            &ListParams::default()
                .labels(&format!("app.kubernetes.io/instance={NAME},{ROLE}={role}")),
        )
        .await
        .unwrap()
        .items
}

/// Waits until the instance runs one labelled primary (the recorded one) and `replicas - 1`
/// labelled replicas linked to it, with no restart or switchover in flight; returns the
/// primary's pod.
async fn settled(ns: &TestNamespace, replicas: usize) -> Pod {
    wait_for(
        Duration::from_secs(180),
        "one primary and linked replicas",
        || async {
            let ri = ns
                .api::<RedisInstance>()
                .get(NAME)
                .await
                .map_err(|e| e.to_string())?;
            let status = ri.status.clone().unwrap_or_default();
            let repl = status.replication.clone().unwrap_or_default();
            let primaries = with_role(ns, "primary").await;
            let replicas_now = with_role(ns, "replica").await;
            let [primary] = primaries.as_slice() else {
                return Err(format!(
                    "primaries {:?}",
                    primaries.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                ));
            };
            let linked = repl
                .pods
                .iter()
                .filter(|p| p.link.as_deref() == Some("up"))
                .count();
            let ok = status.rollout.is_none()
                && repl.switchover.is_none()
                && repl.primary.as_deref() == Some(primary.name_any().as_str())
                && replicas_now.len() == replicas - 1
                && linked == replicas - 1
                && status.phase.map(|p| p.as_str()) == Some("Running");
            if !ok {
                return Err(format!("{status:?}"));
            }
            let role = common::try_pod_cli(primary, &["ROLE"]).await?;
            if role.lines().next() != Some("master") {
                return Err(format!("{} says {role}", primary.name_any()));
            }
            Ok(primary.clone())
        },
    )
    .await
}

/// Writes unique keys through the `<name>` Service's ClusterIP, as a client in the
/// cluster would (kube-proxy routes it to the pod labelled primary), reconnecting on any error,
/// and keeps every key the server acknowledged: with `SET` returning OK, or with
/// `wait_replica`, only once `WAIT 1` says a replica has it.
struct Ledger {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ledger {
    async fn start(ns: &TestNamespace, prefix: &str, wait_replica: bool) -> Self {
        let svc: k8s_openapi::api::core::v1::Service = ns.api().get(NAME).await.unwrap();
        let ip = svc.spec.unwrap().cluster_ip.unwrap();
        let secret: k8s_openapi::api::core::v1::Secret =
            ns.api().get(&format!("{NAME}-auth")).await.unwrap();
        let password = String::from_utf8(secret.data.unwrap()["password"].0.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop2, acked2, prefix) = (stop.clone(), acked.clone(), prefix.to_owned());
        let task = tokio::spawn(async move {
            let client = redis::Client::open(format!("redis://:{password}@{ip}:6379")).unwrap();
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let Ok(mut conn) = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop2.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("{prefix}:{n}");
                    let set: redis::RedisResult<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(n)
                        .query_async(&mut conn)
                        .await;
                    if set.is_err() {
                        break;
                    }
                    if wait_replica {
                        let got: redis::RedisResult<i64> = redis::cmd("WAIT")
                            .arg(1)
                            .arg(1000)
                            .query_async(&mut conn)
                            .await;
                        if got.map_or(true, |replicas| replicas < 1) {
                            break;
                        }
                    }
                    acked2.lock().unwrap().push(key);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self { stop, acked, task }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Acknowledged keys the primary does not have.
async fn lost(primary: &Pod, keys: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for chunk in keys.chunks(500) {
        let mut args = vec!["MGET"];
        args.extend(chunk.iter().map(String::as_str));
        let out = redis_cli(primary, &args).await;
        let values: Vec<&str> = out.lines().collect();
        assert_eq!(
            values.len(),
            chunk.len(),
            "MGET answered {} values",
            values.len()
        );
        missing.extend(
            chunk
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_empty())
                .map(|(k, _)| k.clone()),
        );
    }
    missing
}

fn created(pod: &Pod) -> k8s_openapi::jiff::Timestamp {
    pod.metadata.creation_timestamp.as_ref().unwrap().0
}

/// Waits until the object `name` is gone.
async fn gone<K>(ns: &TestNamespace, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    wait_for(Duration::from_secs(30), name, || async {
        match ns.api::<K>().get_opt(name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// With no operator running, puts back the objects an earlier version ran this instance with:
/// the StatefulSet naming the headless Service `<name>` (deleted keeping its pods and created
/// again, the rest of it as it was, so it adopts them), `<name>` headless and selecting every
/// pod, `<name>-primary` for writes, no `<name>-headless`. Built with the current builders,
/// renamed: the earlier ones differed only in these names. The pods keep their hostname's
/// subdomain `<name>-headless`, which the migration does not look at.
async fn as_an_earlier_version_ran_it(ns: &TestNamespace) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::PostParams;
    use redis_operator::resources::{headless_service, service};
    let instance = ns.api::<RedisInstance>().get(NAME).await.unwrap();
    let live: StatefulSet = ns.api().get(NAME).await.unwrap();
    ns.api::<StatefulSet>()
        .delete(NAME, &DeleteParams::orphan())
        .await
        .unwrap();
    gone::<StatefulSet>(ns, NAME).await;
    let mut earlier = StatefulSet {
        metadata: kube::api::ObjectMeta {
            name: live.metadata.name.clone(),
            labels: live.metadata.labels.clone(),
            owner_references: live.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec: live.spec.clone(),
        status: None,
    };
    earlier.spec.service_name = Some(NAME.into());
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &earlier)
        .await
        .unwrap();
    ns.api::<Service>()
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    gone::<Service>(ns, NAME).await;
    let mut named_headless = headless_service(&instance);
    named_headless.metadata.name = Some(NAME.into());
    let mut primary = service(&instance);
    primary.metadata.name = Some(format!("{NAME}-primary"));
    for svc in [named_headless, primary] {
        ns.api::<Service>()
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    }
    ns.api::<Service>()
        .delete(&format!("{NAME}-headless"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the earlier StatefulSet owning every pod, all ready",
        || async {
            let sts: StatefulSet = ns.api().get(NAME).await.map_err(|e| e.to_string())?;
            let ready = sts.status.as_ref().and_then(|s| s.ready_replicas);
            let owned = pods(ns, NAME).await.iter().all(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == sts.metadata.uid.as_ref())
            });
            if owned && ready == Some(3) {
                Ok(())
            } else {
                Err(format!("owned {owned}, ready {ready:?}"))
            }
        },
    )
    .await;
}

/// Each pod's uid and its containers' restart counts.
async fn incarnations(ns: &TestNamespace) -> BTreeMap<String, (String, Vec<i32>)> {
    pods(ns, NAME)
        .await
        .iter()
        .map(|p| {
            let restarts = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .collect();
            (p.name_any(), (p.uid().unwrap(), restarts))
        })
        .collect()
}

#[tokio::test]
async fn three_pods_replicate_roll_out_with_one_switchover_and_fail_over_without_losing_writes() {
    let (_client, ns, operator) = setup("replication", &[]).await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 3;
    instance
        .spec
        .config
        .insert("appendonly".into(), "yes".into());
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let primary = settled(&ns, 3).await;
    assert_eq!(
        primary.name_any(),
        format!("{NAME}-0"),
        "the first election takes ordinal 0"
    );

    // Replication: a key written to the primary is read from both replicas; a replica refuses
    // writes.
    assert_eq!(redis_cli(&primary, &["SET", "hello", "world"]).await, "OK");
    for replica in with_role(&ns, "replica").await {
        wait_for(
            Duration::from_secs(30),
            "the key on the replica",
            || async {
                match common::try_pod_cli(&replica, &["GET", "hello"]).await? {
                    v if v == "world" => Ok(()),
                    v => Err(v),
                }
            },
        )
        .await;
        let refused = common::try_pod_cli(&replica, &["SET", "x", "1"]).await;
        assert!(
            refused
                .as_ref()
                .is_ok_and(|out| out.starts_with("READONLY"))
                || refused.is_err(),
            "{refused:?}"
        );
    }
    for (service, role) in [
        (NAME.to_owned(), "primary"),
        (format!("{NAME}-replicas"), "replica"),
    ] {
        let svc: k8s_openapi::api::core::v1::Service = ns.api().get(&service).await.unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap()[ROLE], role);
        assert_ne!(spec.cluster_ip.as_deref(), Some("None"), "{service}");
    }

    // An instance an earlier version ran: the operator migrates its Services and StatefulSet
    // without restarting a pod or losing a key.
    operator.stop();
    as_an_earlier_version_ran_it(&ns).await;
    assert_eq!(
        redis_cli(&primary, &["SET", "upgraded", "kept"]).await,
        "OK"
    );
    let before = incarnations(&ns).await;
    let restarts = ns
        .api::<RedisInstance>()
        .get(NAME)
        .await
        .unwrap()
        .status
        .unwrap()
        .restarts;
    let earlier: k8s_openapi::api::apps::v1::StatefulSet = ns.api().get(NAME).await.unwrap();
    let operator = Operator::start(&ns.name);
    let service_ip = wait_for(
        Duration::from_secs(90),
        "the StatefulSet naming <name>-headless, <name> a ClusterIP Service, no <name>-primary",
        || async {
            let sts: k8s_openapi::api::apps::v1::StatefulSet =
                ns.api().get(NAME).await.map_err(|e| e.to_string())?;
            let svc: k8s_openapi::api::core::v1::Service =
                ns.api().get(NAME).await.map_err(|e| e.to_string())?;
            let old_primary = ns
                .api::<k8s_openapi::api::core::v1::Service>()
                .get_opt(&format!("{NAME}-primary"))
                .await
                .map_err(|e| e.to_string())?;
            let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            let named = sts.spec.service_name.clone();
            if named.as_deref() == Some(&format!("{NAME}-headless"))
                && sts.metadata.uid != earlier.metadata.uid
                && !ip.is_empty()
                && ip != "None"
                && old_primary.is_none()
            {
                Ok(ip)
            } else {
                Err(format!(
                    "serviceName {named:?}, clusterIP {ip:?}, {NAME}-primary {}",
                    old_primary.is_some()
                ))
            }
        },
    )
    .await;
    let migrated = settled(&ns, 3).await;
    assert_eq!(migrated.name_any(), primary.name_any(), "no role change");
    assert_eq!(
        incarnations(&ns).await,
        before,
        "pods restarted by the migration"
    );
    assert!(
        before
            .values()
            .all(|(_, counts)| counts.iter().all(|n| *n == 0)),
        "{before:?}"
    );
    let status = ns
        .api::<RedisInstance>()
        .get(NAME)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.restarts, restarts, "no restart counted");
    assert_eq!(status.replication.unwrap().role_changes, 0);
    // Through the ClusterIP and kube-proxy, as a client in the cluster: the primary, its data.
    let password = common::generated_password(&primary).await;
    wait_for(
        Duration::from_secs(30),
        "the data through <name>'s ClusterIP",
        || async {
            let cli = |args| common::try_redis_cli_with(&service_ip, password.as_deref(), args);
            let role = cli(&["ROLE"]).await?;
            let kept = cli(&["GET", "upgraded"]).await?;
            let old = cli(&["GET", "hello"]).await?;
            match (role.lines().next(), kept.as_str(), old.as_str()) {
                (Some("master"), "kept", "world") => Ok(()),
                _ => Err(format!("{role:?} {kept:?} {old:?}")),
            }
        },
    )
    .await;
    let headless: k8s_openapi::api::core::v1::Service =
        ns.api().get(&format!("{NAME}-headless")).await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    for reason in ["ServicesMigrating", "ServicesMigrated"] {
        assert!(event_count_once(&ns, NAME, reason, 1).await >= 1);
    }

    // A restart-class edit under a write load: replicas first, one switchover, nothing lost.
    let before: BTreeMap<String, String> = pods(&ns, NAME)
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap()))
        .collect();
    let ledger = Ledger::start(&ns, "rollout", false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patch = json!({"spec": {"config": {"maxmemory": "120mb"}}});
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_restarts(&ns, NAME, 1).await;
    let new_primary = settled(&ns, 3).await;
    let acked = ledger.finish().await;
    assert!(
        acked.len() > 100,
        "the writer got only {} writes through",
        acked.len()
    );
    assert_eq!(
        lost(&new_primary, &acked).await,
        Vec::<String>::new(),
        "acknowledged writes lost in the rollout"
    );
    let repl = replication(&ns).await;
    assert_eq!(
        repl.role_changes, 1,
        "one role change per rollout: {repl:?}"
    );
    assert_ne!(new_primary.name_any(), primary.name_any());
    let after = pods(&ns, NAME).await;
    for pod in &after {
        assert_ne!(
            Some(&pod.uid().unwrap()),
            before.get(&pod.name_any()),
            "{} was not restarted",
            pod.name_any()
        );
    }
    let old_primary = after
        .iter()
        .find(|p| p.name_any() == primary.name_any())
        .unwrap();
    for pod in after.iter().filter(|p| p.name_any() != primary.name_any()) {
        assert!(
            created(pod) <= created(old_primary),
            "the old primary was replaced before {}",
            pod.name_any()
        );
    }
    assert_eq!(event_count_once(&ns, NAME, "Switchover", 1).await, 1);

    // The primary's pod deleted under a load acknowledged by a replica (WAIT 1).
    let ledger = Ledger::start(&ns, "kill", true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = new_primary.name_any();
    ns.api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let promoted = wait_for(Duration::from_secs(60), "a new primary", || async {
        let repl = replication(&ns).await;
        match repl.primary.clone() {
            Some(p) if p != victim && repl.failovers == 1 => Ok(p),
            _ => Err(format!("{repl:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let primary = settled(&ns, 3).await;
    let acked = ledger.finish().await;
    assert_eq!(primary.name_any(), promoted);
    assert!(
        acked.len() > 50,
        "the writer got only {} writes through",
        acked.len()
    );
    assert_eq!(
        lost(&primary, &acked).await,
        Vec::<String>::new(),
        "writes acknowledged by a replica lost"
    );
    // The old primary is back as a replica of the new one, serving none of its own writes.
    let returned = ns.api::<Pod>().get(&victim).await.unwrap();
    assert_eq!(
        returned.labels().get(ROLE).map(String::as_str),
        Some("replica")
    );
    let role = redis_cli(&returned, &["ROLE"]).await;
    let mut lines = role.lines();
    assert_eq!(lines.next(), Some("slave"), "{role}");
    assert_eq!(lines.next(), Some(pod_ip(&primary).as_str()), "{role}");
    assert_eq!(replication(&ns).await.role_changes, 2);

    // The operator killed while a switchover is recorded: the next one finishes it, and the
    // restart changes roles once.
    // Watched rather than polled: the record lives for about a second.
    let api = ns.api::<RedisInstance>();
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut updates = Box::pin(kube::runtime::watcher(api, config).applied_objects());
    let patch = json!({"spec": {"config": {"maxmemory": "130mb"}}});
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let switching = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(ri) = updates.next().await {
            let recorded = ri.ok().and_then(|ri| ri.status?.replication?.switchover);
            if let Some(switchover) = recorded {
                return switchover;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("a recorded switchover within 180 s");
    operator.kill();
    let _operator = Operator::start(&ns.name);
    wait_restarts(&ns, NAME, 2).await;
    let primary = settled(&ns, 3).await;
    let repl = replication(&ns).await;
    assert_eq!(
        repl.role_changes, 3,
        "one role change for the third: {repl:?}"
    );
    assert_eq!(
        primary.name_any(),
        switching.to,
        "the recorded switchover's target took over"
    );
}

/// `GET key` on the pod named `pod`.
async fn get_on(ns: &TestNamespace, pod: &str, key: &str) -> Result<String, String> {
    let pod = ns.api::<Pod>().get(pod).await.map_err(|e| e.to_string())?;
    if pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .is_none()
    {
        return Err("no IP yet".to_owned());
    }
    common::try_pod_cli(&pod, &["GET", key]).await
}

#[tokio::test]
async fn an_earlier_multi_pod_instance_converts_on_consent_and_scale_downs_move_the_primary_first()
{
    let (_client, ns, operator) = setup("conversion", &[]).await;
    let mut instance = example("redis-example.yaml");
    instance
        .spec
        .config
        .insert("appendonly".into(), "yes".into());
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;

    // Three unrelated servers, as a version before replication ran `replicas: 3`: the same
    // StatefulSet scaled, and the status that version wrote.
    operator.stop();
    let scale = json!({"spec": {"replicas": 3}});
    ns.api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    wait_for(Duration::from_secs(120), "three ready pods", || async {
        let ready = pods(&ns, NAME)
            .await
            .iter()
            .filter(|p| common::is_ready(p))
            .count();
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await;
    let scaled: k8s_openapi::api::apps::v1::StatefulSet = ns.api().get(NAME).await.unwrap();
    let ran = json!({"status": {
        "readyReplicas": 3,
        "statefulSetGeneration": scaled.metadata.generation,
    }});
    ns.api::<RedisInstance>()
        .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&ran))
        .await
        .unwrap();
    for (ordinal, pod) in pods(&ns, NAME).await.iter().enumerate() {
        assert_eq!(
            redis_cli(pod, &["SET", "origin", &ordinal.to_string()]).await,
            "OK"
        );
        assert_eq!(
            redis_cli(pod, &["SET", &format!("own-{ordinal}"), "x"]).await,
            "OK"
        );
    }

    // Upgraded: it keeps running so, and says why.
    let operator = Operator::start(&ns.name);
    wait_for(Duration::from_secs(60), "ReplicationNotEnabled", || async {
        let reasons = event_reasons(&ns, NAME).await;
        if reasons.iter().any(|r| r == "ReplicationNotEnabled") {
            Ok(())
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    for ordinal in 0..3 {
        let origin = get_on(&ns, &format!("{NAME}-{ordinal}"), "origin").await;
        assert_eq!(
            origin,
            Ok(ordinal.to_string()),
            "pod {ordinal} without consent"
        );
    }
    assert!(with_role(&ns, "primary").await.is_empty());

    // Consent: pod 0's data everywhere, told before any pod's own data is replaced.
    let consent =
        json!({"metadata": {"annotations": {"redis.github.com/convert-to-replication": "true"}}});
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&consent))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "pod 1 and pod 2 resynced from pod 0",
        || async {
            let mut replaced = 0;
            for ordinal in 1..3 {
                let origin = get_on(&ns, &format!("{NAME}-{ordinal}"), "origin").await;
                if origin.as_deref().is_ok_and(|o| o != ordinal.to_string()) {
                    replaced += 1;
                }
            }
            if replaced > 0 {
                let reasons = event_reasons(&ns, NAME).await;
                assert!(
                    reasons.iter().any(|r| r == "ReplicationConversion"),
                    "a pod's data replaced before the Event: {reasons:?}"
                );
            }
            if replaced == 2 {
                Ok(())
            } else {
                Err(format!("{replaced} resynced"))
            }
        },
    )
    .await;
    let primary = settled(&ns, 3).await;
    let reasons = event_reasons(&ns, NAME).await;
    assert!(
        !reasons.iter().any(|r| r == "DriftRepaired"),
        "the conversion is no drift: {reasons:?}"
    );
    for pod in pods(&ns, NAME).await {
        assert_eq!(
            redis_cli(&pod, &["GET", "origin"]).await,
            "0",
            "{}",
            pod.name_any()
        );
        assert_eq!(redis_cli(&pod, &["EXISTS", "own-0"]).await, "1");
        for ordinal in 1..3 {
            let own = format!("own-{ordinal}");
            assert_eq!(redis_cli(&pod, &["EXISTS", &own]).await, "0", "{own}");
        }
    }

    // A scale-down that removes the primary's pod: it hands its role over first, and no
    // acknowledged write is lost. Pod 2 is made the primary by taking the others away.
    let last = format!("{NAME}-2");
    make_primary(&ns, &primary, &last, 3).await;
    let changes = replication(&ns).await.role_changes;
    let ledger = Ledger::start(&ns, "scale", false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = json!({"spec": {"replicas": 2}});
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&down))
        .await
        .unwrap();
    wait_for(Duration::from_secs(120), "pod 2 gone", || async {
        match ns.api::<Pod>().get_opt(&last).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.map(|p| p.name_any())))),
        }
    })
    .await;
    let primary = settled(&ns, 2).await;
    let acked = ledger.finish().await;
    assert!(acked.len() > 100, "only {} writes got through", acked.len());
    assert_eq!(
        lost(&primary, &acked).await,
        Vec::<String>::new(),
        "acknowledged writes lost in the scale-down"
    );
    assert_eq!(
        replication(&ns).await.role_changes,
        changes + 1,
        "one switchover"
    );

    // Scaled to one pod while pod 1 is the primary: pod 1 hands its role to pod 0 first, then
    // pod 0 runs alone, restarted as a single server, with every acknowledged write.
    make_primary(&ns, &primary, &format!("{NAME}-1"), 2).await;
    let changes = replication(&ns).await.role_changes;
    let ledger = Ledger::start(&ns, "single", false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one = json!({"spec": {"replicas": 1}});
    ns.api::<RedisInstance>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&one))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(180),
        "pod 0 alone, its restart done",
        || async {
            let instance = ns.api::<RedisInstance>().get(NAME).await.unwrap();
            let status = instance.status.unwrap_or_default();
            let left: Vec<String> = pods(&ns, NAME).await.iter().map(|p| p.name_any()).collect();
            let primary = status.replication.as_ref().and_then(|r| r.primary.clone());
            if left == [format!("{NAME}-0")]
                && status.ready_replicas == 1
                && status.rollout.is_none()
                && primary.as_deref() == Some(format!("{NAME}-0").as_str())
            {
                Ok(())
            } else {
                Err(format!(
                    "pods {left:?}, ready {}, rollout {:?}, primary {primary:?}",
                    status.ready_replicas, status.rollout
                ))
            }
        },
    )
    .await;
    let single = common::ready_pod(&ns, &format!("{NAME}-0")).await;
    let acked = ledger.finish().await;
    assert!(acked.len() > 100, "only {} writes got through", acked.len());
    assert_eq!(
        lost(&single, &acked).await,
        Vec::<String>::new(),
        "acknowledged writes lost in the scale-down to one pod"
    );
    assert_eq!(
        replication(&ns).await.role_changes,
        changes + 1,
        "one switchover to pod 0"
    );
    assert!(
        redis_cli(&single, &["INFO", "replication"])
            .await
            .contains("role:master"),
        "pod 0 serves alone"
    );
    drop(operator);
}

/// Makes `target` the primary, unless `primary` is it, by deleting every other pod (the replica
/// left is promoted), and waits until the `replicas` pods have settled around it.
async fn make_primary(ns: &TestNamespace, primary: &Pod, target: &str, replicas: usize) {
    if primary.name_any() == target {
        return;
    }
    for pod in pods(ns, NAME)
        .await
        .iter()
        .filter(|p| p.name_any() != target)
    {
        ns.api::<Pod>()
            .delete(&pod.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_for(Duration::from_secs(60), "the target promoted", || async {
        let repl = replication(ns).await;
        if repl.primary.as_deref() == Some(target) {
            Ok(())
        } else {
            Err(format!("{target}: {repl:?}"))
        }
    })
    .await;
    settled(ns, replicas).await;
}

/// Freezes a process with SIGSTOP, and lets it go on (SIGCONT) when dropped, whatever happens.
struct Frozen(String);

impl Frozen {
    fn signal(pid: &str, signal: &str) -> bool {
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), pid])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn new(pid: String) -> Self {
        assert!(Self::signal(&pid, "STOP"), "kill -STOP {pid}");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // No assert: a panic while unwinding would abort and hide the first one.
        Self::signal(&self.0, "CONT");
    }
}

#[tokio::test]
async fn with_min_replicas_to_write_an_isolated_primary_refuses_writes_within_its_lag_bound() {
    const MAX_LAG_SECONDS: u64 = 2;
    let (_client, ns, _operator) = setup("replication-isolated", &[]).await;
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    for (key, value) in [
        ("min-replicas-to-write", "1".to_owned()),
        ("min-replicas-max-lag", MAX_LAG_SECONDS.to_string()),
    ] {
        instance.spec.config.insert(key.into(), value);
    }
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;
    let primary = settled(&ns, 2).await;
    assert_eq!(redis_cli(&primary, &["SET", "before", "1"]).await, "OK");
    let [replica] = with_role(&ns, "replica").await.try_into().unwrap();

    // Cut the primary off from its only replica: the replica's Redis frozen (its link stays
    // open, so only its acknowledgements stop, as when the network between them fails).
    let frozen = Frozen::new(common::container_pid(&replica));
    let cut = std::time::Instant::now();
    let refused = wait_for(
        Duration::from_secs(MAX_LAG_SECONDS + 8),
        "the isolated primary refusing writes",
        || async {
            let out = common::try_pod_cli(&primary, &["SET", "isolated", "1"]).await?;
            if out.starts_with("NOREPLICAS") {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await;
    let took = cut.elapsed();
    // Redis counts a replica as good while its last acknowledgement (sent once a second) is at
    // most max-lag whole seconds old, and recounts once a second: about max-lag + 3 s at worst,
    // measured 2.4 to 3.5 s here; 1 s more for a busy machine.
    assert!(
        took <= Duration::from_secs(MAX_LAG_SECONDS + 4),
        "refused only after {took:?}: {refused}"
    );
    eprintln!("isolated primary refused writes {took:?} after the cut: {refused}");
    // Reads go on, and the operator changes no role meanwhile: the primary still answers.
    assert_eq!(redis_cli(&primary, &["GET", "before"]).await, "1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = replication(&ns).await;
    drop(frozen);

    assert_eq!(
        during.primary.as_deref(),
        Some(primary.name_any().as_str()),
        "{during:?}"
    );
    assert_eq!(
        (during.role_changes, during.failovers),
        (0, 0),
        "{during:?}"
    );
    eprintln!("status while isolated: {:?}", during.pods);
    wait_for(
        Duration::from_secs(10),
        "the primary taking writes again",
        || async {
            match common::try_pod_cli(&primary, &["SET", "after", "1"]).await? {
                out if out == "OK" => Ok(()),
                out => Err(out),
            }
        },
    )
    .await;
    let after = settled(&ns, 2).await;
    assert_eq!(after.name_any(), primary.name_any());
    assert_eq!(replication(&ns).await.role_changes, 0);
}
