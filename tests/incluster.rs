//! The operator as users run it: `kubectl apply -k deploy/` for real, two replicas as pods on the
//! local cluster (the node agent runs the image `redis-operator` from the built binary, with a
//! ServiceAccount token and KUBERNETES_SERVICE_HOST as a kubelet gives them), in-cluster config,
//! the RBAC of deploy/ only, and a takeover when the leader's pod is deleted. Alone in its test
//! binary: while it runs, an operator acts on every namespace.

mod common;
mod e2e;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use redis_operator::config::render::render;

use common::{TestNamespace, is_ready, kubeconfig_path, wait_for};
use e2e::*;

const NAMESPACE: &str = "redis-operator";
const SELECTOR: &str = "app.kubernetes.io/name=redis-operator";

/// Deletes the operator's Deployment and waits for its pods to go, pass or fail, so that no
/// cluster-wide operator outlives this test.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = kubectl_output(&[
            "-n",
            NAMESPACE,
            "delete",
            "deployment",
            "redis-operator",
            "--ignore-not-found",
            "--wait=true",
        ]);
        let _ = kubectl_output(&[
            "-n",
            NAMESPACE,
            "wait",
            "--for=delete",
            "pod",
            "-l",
            SELECTOR,
            "--timeout=60s",
        ]);
    }
}

async fn operator_pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap()
        .items
}

async fn lease_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get_opt("redis-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// The container logs the node agent keeps for the operator's pods, deleted ones included.
fn operator_logs() -> String {
    let pods = kubeconfig_path().with_file_name("node").join("pods");
    let mut text = String::new();
    for entry in std::fs::read_dir(&pods).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{NAMESPACE}_redis-operator-")) {
            let log: PathBuf = entry.path().join("operator.log");
            text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn deployed_with_kustomize_the_operator_runs_as_pods_and_fails_over() {
    let client = common::client().await;
    install_crd(&client).await;
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let _installed = Installed;
    kubectl(&["apply", "-k", &deploy.to_string_lossy()]);
    wait_for(
        Duration::from_secs(120),
        "both operator pods Ready",
        || async {
            let pods = operator_pods(&client).await;
            let ready = pods.iter().filter(|p| is_ready(p)).count();
            if ready == 2 {
                Ok(())
            } else {
                Err(format!("{ready}/2 ready of {}", pods.len()))
            }
        },
    )
    .await;
    // One of these pods: a Lease left by an earlier install names a pod that is gone, and is
    // taken over once it expires.
    let leader = wait_for(Duration::from_secs(60), "a leader", || async {
        let pods: Vec<String> = operator_pods(&client)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        match lease_holder(&client).await {
            Some(holder) if pods.contains(&holder) => Ok(holder),
            other => Err(format!("{other:?} is none of {pods:?}")),
        }
    })
    .await;

    let ns = TestNamespace::create(&client, "incluster").await;
    let mut instance = example("redis-example.yaml");
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, Duration::from_secs(180)).await;
    let history = PodHistory::start(&ns).await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "150mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let hash = render(&instance.spec.config).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(ready.status.unwrap().restarts, 1);

    // Delete the leader's pod: the other replica takes the Lease and handles the next edit.
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let successor = wait_for(
        Duration::from_secs(60),
        "another replica to lead",
        || async {
            match lease_holder(&client).await {
                Some(holder) if holder != leader && !holder.is_empty() => Ok(holder),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "160mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let hash = render(&instance.spec.config).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(ready.status.unwrap().restarts, 2, "one restart per edit");
    assert_eq!(history.restarts().await["redis-example-0"], 2);
    let pod = common::ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "167772160");

    let logs = operator_logs();
    assert!(
        logs.contains("acquired the lease") && logs.contains(&successor),
        "{logs}"
    );
    assert!(
        !logs.contains("forbidden: User"),
        "the operator was refused something:\n{logs}"
    );
}
