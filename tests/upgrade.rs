//! An upgrade of the operator, on the local cluster with real Redis: the objects an older
//! version left behind are taken over by this one without a restart, an Event or a count.
//!
//! `fixtures/upgrade-from-ac59065.json` holds what the operator at commit ac59065 (before the
//! healthy spec moved to status and before each revision had a ConfigMap of its own) wrote for
//! a single-pod instance and a three-pod replicated one, read from the API server once they
//! were Ready: the instances with their status, their Secrets, ConfigMaps, Services,
//! NetworkPolicies and StatefulSets, and the role of each pod. The test creates them in a fresh
//! namespace, lets the StatefulSet controller start the pods, gives them the roles that version
//! had given them, and only then starts this operator.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use redis_operator::crd::RedisInstance;
use serde_json::{Value, json};

use common::{AuditLog, TestNamespace, pod_ip, ready_pod, redis_cli, wait_for};
use e2e::*;

const FIXTURE: &str = include_str!("fixtures/upgrade-from-ac59065.json");
const ROLE_LABEL: &str = "redis.github.com/role";

/// Creates `object` (a fixture entry) as a `K` in the namespace.
async fn create<K>(ns: &TestNamespace, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let typed: K = serde_json::from_value(object).expect("a fixture object of its kind");
    ns.api::<K>()
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", typed.name_any()))
}

/// Creates every fixture object, owners first; returns the roles the older version gave.
async fn recreate_older_versions_objects(ns: &TestNamespace) -> BTreeMap<String, String> {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    let mut owners = BTreeMap::new();
    for mut object in fixture["objects"].as_array().expect("objects").clone() {
        if let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() {
            for owner in refs {
                let name = owner["name"].as_str().expect("an owner's name");
                owner["uid"] = json!(owners[name]);
            }
        }
        match object["kind"].as_str().expect("a kind") {
            "RedisInstance" => {
                let status = object["status"].take();
                let created: RedisInstance = create(ns, object).await;
                let name = created.name_any();
                ns.api::<RedisInstance>()
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                    .expect("the older version's status");
                owners.insert(name, created.uid().expect("a uid"));
            }
            "Secret" => drop(create::<Secret>(ns, object).await),
            "ConfigMap" => drop(create::<ConfigMap>(ns, object).await),
            "Service" => drop(create::<Service>(ns, object).await),
            "NetworkPolicy" => drop(create::<NetworkPolicy>(ns, object).await),
            "StatefulSet" => drop(create::<StatefulSet>(ns, object).await),
            other => panic!("no fixture kind {other}"),
        }
    }
    serde_json::from_value(fixture["roles"].clone()).expect("roles by pod")
}

/// What the older version did to a replicated instance's Redis, which no object records: the
/// primary promoted, each replica told how to log in and whom to follow, and each pod labelled.
async fn give_roles(ns: &TestNamespace, roles: &BTreeMap<String, String>) {
    let primary_name = roles
        .iter()
        .find_map(|(pod, role)| (role == "primary").then_some(pod))
        .expect("a primary");
    let primary = ready_pod(ns, primary_name).await;
    redis_cli(&primary, &["REPLICAOF", "NO", "ONE"]).await;
    let secret = ns.api::<Secret>().get("trio-operator").await.unwrap();
    let replication =
        String::from_utf8(secret.data.unwrap()["replication-password"].0.clone()).unwrap();
    for (name, role) in roles {
        let pod = ready_pod(ns, name).await;
        if role == "replica" {
            let login = ["CONFIG", "SET", "masteruser", "replication", "masterauth"];
            let mut args = login.to_vec();
            args.push(&replication);
            redis_cli(&pod, &args).await;
            redis_cli(&pod, &["REPLICAOF", &pod_ip(&primary), "6379"]).await;
        }
        ns.api::<Pod>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { ROLE_LABEL: role } } })),
            )
            .await
            .expect("the role label");
    }
}

/// Per pod: its uid, Redis's run id (a new one after any restart of the process) and role.
async fn running(ns: &TestNamespace, names: &[&str]) -> BTreeMap<String, (String, String, String)> {
    let mut seen = BTreeMap::new();
    for name in names {
        let pod = ready_pod(ns, name).await;
        let server = redis_cli(&pod, &["INFO", "server"]).await;
        let run_id = server
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .expect("a run_id")
            .trim()
            .to_owned();
        let role = redis_cli(&pod, &["ROLE"]).await;
        let role = role.lines().next().unwrap_or_default().to_owned();
        seen.insert(name.to_string(), (common::uid(&pod), run_id, role));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_operator_takes_over_an_older_versions_instances_without_a_restart_or_an_event()
{
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "upgrade").await;
    let roles = recreate_older_versions_objects(&ns).await;
    give_roles(&ns, &roles).await;
    let pods = ["single-0", "trio-0", "trio-1", "trio-2"];
    redis_cli(&ready_pod(&ns, "single-0").await, &["SET", "kept", "yes"]).await;
    redis_cli(&ready_pod(&ns, "trio-0").await, &["SET", "kept", "yes"]).await;
    for name in pods {
        let pod = ready_pod(&ns, name).await;
        wait_for(Duration::from_secs(30), "the key on every pod", || async {
            match redis_cli(&pod, &["GET", "kept"]).await.as_str() {
                "yes" => Ok(()),
                other => Err(format!("{name}: {other:?}")),
            }
        })
        .await;
    }
    let before = running(&ns, &pods).await;
    let history = e2e::PodHistory::start(&ns).await;
    let audit = AuditLog::from_now();

    let operator = Operator::start(&ns.name);
    // This version's first step records the healthy spec, which the older one never wrote.
    for name in ["single", "trio"] {
        let first_status =
            |ri: &RedisInstance| ri.status.as_ref().is_some_and(|s| s.healthy_spec.is_some());
        let what = "this version's first status";
        instance_where(&ns, name, what, Duration::from_secs(60), first_status).await;
    }
    // A restart, a repair or an Event would follow within the first steps: ten quiet seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;

    assert_eq!(
        running(&ns, &pods).await,
        before,
        "a pod, a process or a role changed"
    );
    assert!(history.restarts().await.values().all(|&n| n == 0));
    for name in pods {
        let pod = ready_pod(&ns, name).await;
        assert_eq!(redis_cli(&pod, &["GET", "kept"]).await, "yes", "{name}");
    }
    for name in ["single", "trio"] {
        let ri = ns.api::<RedisInstance>().get(name).await.unwrap();
        let status = ri.status.unwrap();
        assert_eq!(status.restarts, 0, "{name}");
        assert_eq!(instance_events(&ns, name).await, [], "{name}");
    }
    let writes = audit.operator_writes(&ns.name);
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("patch redisinstances/status ")),
        "only status was to be written: {writes:?}"
    );
    drop(operator);
}
