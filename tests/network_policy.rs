//! The NetworkPolicy every instance gets, enforced on the local cluster by kube-router's
//! firewall, for a two-pod instance whose clients are the pods labelled `role=client`: the
//! policy is put back when deleted by hand; a client pod of the instance's namespace reaches
//! Redis, one of another namespace is refused while the policy exists, but one labelled as the
//! operator's pods, in the namespace the operator says it runs in, gets through; the replica's
//! link, cut, comes back (the instance's own pods are admitted though no client label selects
//! them); the operator (a process on the host here) still applies a live config change; and
//! with `networkPolicy.enabled: false` the policy is deleted and the other namespace gets
//! through. Fails (never skips) when nothing enforces the policy.

mod common;
mod e2e;

use std::time::Duration;

use common::{TestNamespace, pod_ip, wait_for};
use e2e::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{LogParams, Patch, PatchParams, PostParams};
use redis_operator::crd::{ClientSelector, ConfigUpdate};
use serde_json::json;

const NAME: &str = "redis-example";
/// kube-router adds a new pod to its rules within a second or two of the pod getting its IP.
const RULES_SYNC: Duration = Duration::from_secs(60);

/// The label of the client pods, and the one the operator's pods carry.
const CLIENT: (&str, &str) = ("role", "client");
const OPERATOR: (&str, &str) = ("app.kubernetes.io/name", "redis-operator");

/// A pod `name` labelled `label` in `ns` that tries `PING` on `ip` twice a second, forever, one
/// line per try: `PONG`, or why it failed (refused, timed out). It logs in with the
/// instance's generated password, copied into a Secret of its own namespace as an
/// application's deployment would hold it.
async fn start_client(
    ns: &TestNamespace,
    name: &str,
    label: (&str, &str),
    ip: &str,
    password: &str,
) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-auth")},
        "stringData": {"password": password},
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the client's Secret");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {label.0: label.1}},
        "spec": {
            "containers": [{"name": "main", "image": "redis:7.2", "command": ["sh", "-c", format!(
                "while true; do echo \"$(timeout 2 redis-cli -h {ip} PING 2>&1 | tr -d '\\n')\"; \
                 sleep 0.5; done"
            )],
            // The instance's generated password, as an application would get it.
            "env": [{"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {
                "name": format!("{name}-auth"), "key": "password"}}}]}],
            "terminationGracePeriodSeconds": 1
        }
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the client pod");
}

/// The last `n` tries of client `name`, once it has made that many.
async fn last_tries(ns: &TestNamespace, name: &str, n: usize) -> Result<Vec<String>, String> {
    let params = LogParams {
        tail_lines: Some(n as i64),
        ..LogParams::default()
    };
    let log = ns
        .api::<Pod>()
        .logs(name, &params)
        .await
        .map_err(|e| e.to_string())?;
    let tries: Vec<String> = log.lines().map(str::to_owned).collect();
    if tries.len() < n {
        return Err(format!("only {} tries so far: {tries:?}", tries.len()));
    }
    Ok(tries)
}

/// Waits until the last three tries of client `name` all got through (`true`) or all failed.
async fn wait_client(ns: &TestNamespace, name: &str, through: bool, what: &str) -> Vec<String> {
    wait_for(RULES_SYNC, what, || async {
        let tries = last_tries(ns, name, 3).await?;
        if tries.iter().all(|t| (t == "PONG") == through) {
            Ok(tries)
        } else {
            Err(format!("{tries:?}"))
        }
    })
    .await
}

/// The primary's pod and the replica's, once the replica is linked.
async fn linked_pair(ns: &TestNamespace) -> (Pod, Pod) {
    wait_for(
        Duration::from_secs(60),
        "a primary and a linked replica",
        || async {
            let mut pods = pods(ns, NAME).await;
            let role = |p: &Pod| p.labels().get("redis.github.com/role").cloned();
            pods.sort_by_key(|p| role(p) != Some("primary".into()));
            let [primary, replica] = pods.as_slice() else {
                return Err(format!("{} pods", pods.len()));
            };
            let linked = (role(primary).as_deref(), role(replica).as_deref())
                == (Some("primary"), Some("replica"));
            let info = common::try_pod_cli(replica, &["INFO", "replication"]).await?;
            if linked && info.contains("master_link_status:up") {
                Ok((primary.clone(), replica.clone()))
            } else {
                Err(info)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_selected_clients_and_the_own_pods_reach_redis_until_the_policy_is_disabled() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "netpol").await;
    let other = TestNamespace::create(&client, "netpol-other").await;
    // As if the operator ran in a pod of `other`: the policy admits the operator's pods there.
    let _operator = Operator::start_with_env(&ns.name, &[], &[("POD_NAMESPACE", &other.name)]);
    let mut instance = example("redis-example.yaml");
    instance.spec.replicas = 2;
    instance.spec.config_update = ConfigUpdate::Live;
    instance.spec.network_policy.clients = Some(ClientSelector {
        namespace_selector: None,
        pod_selector: Some(LabelSelector {
            match_labels: Some([("role".to_owned(), "client".to_owned())].into()),
            match_expressions: None,
        }),
    });
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, NAME, None, Duration::from_secs(180)).await;

    let policy = ns.api::<NetworkPolicy>().get(NAME).await.unwrap();
    let owner = &policy.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("RedisInstance", NAME)
    );
    // Deleted by hand, it is put back.
    ns.api::<NetworkPolicy>()
        .delete(NAME, &Default::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the NetworkPolicy to be put back",
        || async {
            match ns.api::<NetworkPolicy>().get_opt(NAME).await {
                Ok(Some(p)) if p.uid() != policy.uid() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (primary, replica) = linked_pair(&ns).await;
    let ip = pod_ip(&primary);
    let password = String::from_utf8(
        ns.api::<k8s_openapi::api::core::v1::Secret>()
            .get(&format!("{NAME}-auth"))
            .await
            .unwrap()
            .data
            .unwrap()["password"]
            .0
            .clone(),
    )
    .unwrap();
    start_client(&ns, "client", CLIENT, &ip, &password).await;
    start_client(&other, "client", CLIENT, &ip, &password).await;
    start_client(&other, "operator", OPERATOR, &ip, &password).await;
    let own = wait_client(
        &ns,
        "client",
        true,
        "the client of the instance's namespace to get PONG",
    )
    .await;
    let refused = wait_client(
        &other,
        "client",
        false,
        "the client of another namespace to be refused",
    )
    .await;
    // Redis answers all along: the refusal is the policy's, seen after the own client got through.
    wait_client(
        &ns,
        "client",
        true,
        "the own client to get PONG after the refusal",
    )
    .await;
    wait_client(
        &other,
        "operator",
        true,
        "a pod labelled as the operator's, in its namespace, to get PONG",
    )
    .await;
    eprintln!("own namespace: {own:?}; other namespace: {refused:?}");
    assert!(
        refused
            .iter()
            .any(|t| t.contains("refused") || t.is_empty()),
        "a refused connection, not a Redis error: {refused:?}"
    );

    // Replication: the replica's link to the primary, cut, is made again under the policy.
    let killed = common::try_pod_cli(&replica, &["CLIENT", "KILL", "TYPE", "master"])
        .await
        .unwrap();
    assert_eq!(killed, "1", "the replica's link to its primary was cut");
    wait_for(
        Duration::from_secs(30),
        "the replica to link to its primary again",
        || async {
            let info = common::try_pod_cli(&replica, &["INFO", "replication"]).await?;
            info.contains("master_link_status:up")
                .then_some(())
                .ok_or(info)
        },
    )
    .await;

    // The operator still reaches the pods: a live change is applied without a restart.
    instance
        .spec
        .config
        .insert("maxmemory".into(), "110mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    for pod in [&primary, &replica] {
        wait_for(
            Duration::from_secs(60),
            "the live maxmemory on both pods",
            || async {
                let value = config_get(pod, "maxmemory").await;
                (value == "115343360").then_some(()).ok_or(value)
            },
        )
        .await;
    }
    let uids: Vec<_> = pods(&ns, NAME).await.iter().map(|p| p.uid()).collect();
    assert_eq!(
        uids,
        vec![primary.uid(), replica.uid()],
        "applied live, not by a restart"
    );

    // Disabled: the policy goes, and the other namespace gets through.
    ns.api::<redis_operator::crd::RedisInstance>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networkPolicy": {"enabled": false}}})),
        )
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the NetworkPolicy to be deleted",
        || async {
            match ns.api::<NetworkPolicy>().get_opt(NAME).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    wait_client(
        &other,
        "client",
        true,
        "the other namespace to get PONG without the policy",
    )
    .await;
}
