//! Replicated instances on the local cluster with real Redis: one primary and its replicas; a
//! restart-class edit under a write load sent through the primary Service and kube-proxy
//! (replicas first, one switchover, no acknowledged write lost); the primary's pod deleted
//! (the replica furthest ahead promoted, no write acknowledged by a replica lost, the old
//! primary back as a replica); the operator killed mid-switchover (no second one).

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

/// Writes unique keys through the `<name>-primary` Service's ClusterIP, as a client in the
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
        let svc: k8s_openapi::api::core::v1::Service =
            ns.api().get(&format!("{NAME}-primary")).await.unwrap();
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
    for role in ["primary", "replicas"] {
        let svc: k8s_openapi::api::core::v1::Service =
            ns.api().get(&format!("{NAME}-{role}")).await.unwrap();
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector[ROLE], role.trim_end_matches('s'));
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
