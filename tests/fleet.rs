//! A fleet of instances on the local cluster, its API requests counted from the API server's
//! audit log: a restarted operator writes nothing to a converged fleet, an idle fleet costs no
//! request at all, and a status update starts no step.

mod common;
mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use redis_operator::crd::RedisInstance;
use serde_json::json;

use common::{AuditLog, AuditedRequest, TestNamespace, wait_for};
use e2e::{Operator, apply_instance, example, install_crd};

const FLEET: usize = 50;
/// Instances that run a real Redis pod; the others are scaled to zero, so the machine stays
/// responsive while every instance still has its ConfigMap, Service and StatefulSet.
const RUNNING: usize = 10;
const OPERATOR_AGENT: &str = "redis-operator/";

/// Requests about instances; the leader Lease's renewals are the operator's own, a few a
/// minute whatever the fleet's size, and are counted apart.
fn about_instances(requests: Vec<AuditedRequest>) -> (Vec<AuditedRequest>, usize) {
    let (lease, instances): (Vec<_>, Vec<_>) =
        requests.into_iter().partition(|r| r.resource == "leases");
    (instances, lease.len())
}

fn describe(requests: &[AuditedRequest]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {}/{} {}", r.verb, r.resource, r.subresource, r.name))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn ready_count(ns: &TestNamespace) -> Result<usize, String> {
    let list = ns
        .api::<RedisInstance>()
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|ri| {
            ri.status.as_ref().is_some_and(|s| {
                s.observed_generation == ri.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Progressing" && c.status == "False")
            })
        })
        .count())
}

/// Waits until the operator has gone `quiet` without a write in `ns`.
async fn settle(ns: &TestNamespace, quiet: Duration) {
    wait_for(
        Duration::from_secs(120),
        "the operator to stop writing",
        || async {
            let audit = AuditLog::from_now();
            tokio::time::sleep(quiet).await;
            let (requests, _) = about_instances(audit.requests(OPERATOR_AGENT, &ns.name));
            let writes: Vec<_> = requests
                .into_iter()
                .filter(AuditedRequest::is_write)
                .collect();
            if writes.is_empty() {
                Ok(())
            } else {
                Err(describe(&writes))
            }
        },
    )
    .await;
}

async fn pod_uids(ns: &TestNamespace) -> BTreeMap<String, (String, i32)> {
    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|pod| {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            (pod.name_any(), (pod.uid().unwrap_or_default(), restarts))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converged_fleet_costs_no_request_at_rest_and_no_write_after_an_operator_restart() {
    let client = common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "fleet").await;
    let operator = Operator::start(&ns.name);
    for i in 0..FLEET {
        let mut instance = example("redis-example.yaml");
        instance.metadata.name = Some(format!("fleet-{i:02}"));
        instance.spec.replicas = i32::from(i < RUNNING);
        apply_instance(&ns, &instance).await.unwrap();
    }
    wait_for(
        Duration::from_secs(300),
        "every instance Ready and converged",
        || async {
            match ready_count(&ns).await? {
                n if n == FLEET => Ok(()),
                n => Err(format!("{n}/{FLEET}")),
            }
        },
    )
    .await;
    settle(&ns, Duration::from_secs(5)).await;

    // A restarted operator lists the fleet, takes one step per instance, and writes nothing.
    let pods_before = pod_uids(&ns).await;
    assert_eq!(pods_before.len(), RUNNING);
    assert!(operator.stop().success());
    let restart_audit = AuditLog::from_now();
    let operator = Operator::start(&ns.name);
    operator.wait_for_passes(FLEET, None).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (requests, _) = about_instances(restart_audit.requests(OPERATOR_AGENT, &ns.name));
    let writes: Vec<_> = requests.iter().filter(|r| r.is_write()).cloned().collect();
    assert!(
        writes.is_empty(),
        "a restarted operator wrote to a converged fleet:\n{}",
        describe(&writes)
    );
    let reads: Vec<_> = requests
        .iter()
        .filter(|r| r.verb == "get")
        .cloned()
        .collect();
    assert!(
        reads.is_empty(),
        "reads come from the watch caches:\n{}",
        describe(&reads)
    );
    assert_eq!(pod_uids(&ns).await, pods_before, "no pod restarted");

    // At rest: a status update (as the operator's own status writes come back) starts no step,
    // and a minute passes without a single request.
    let steps = |op: &Operator| {
        op.log_lines()
            .iter()
            .filter(|l| l["message"] == "next step")
            .count()
    };
    let steps_before = steps(&operator);
    let rest_audit = AuditLog::from_now();
    ns.api::<RedisInstance>()
        .patch_status(
            &format!("fleet-{:02}", FLEET - 1),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastRestartTime": "2026-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (requests, lease_requests) = about_instances(rest_audit.requests(OPERATOR_AGENT, &ns.name));
    // Watches are open streams, not requests made at rest. A watch the API server ends may be
    // re-established with one relist of its kind: that is the resync, shared by the fleet,
    // not a request per instance, so at most one list per kind is let through.
    let mut lists_per_kind = std::collections::BTreeMap::<String, usize>::new();
    let requests: Vec<_> = requests
        .into_iter()
        .filter(|r| r.verb != "watch")
        .filter(|r| {
            if r.verb != "list" || !r.name.is_empty() {
                return true;
            }
            let seen = lists_per_kind.entry(r.resource.clone()).or_default();
            *seen += 1;
            *seen > 1
        })
        .collect();
    // One renewal every 5 s with the default 15 s lease.
    assert!(
        lease_requests <= 14,
        "{lease_requests} lease requests in a minute"
    );
    assert!(
        requests.is_empty(),
        "{} requests by an idle operator:\n{}",
        requests.len(),
        describe(&requests)
    );
    assert_eq!(
        steps(&operator),
        steps_before,
        "a status update started a step"
    );
    assert_eq!(pod_uids(&ns).await, pods_before);
}
