//! The operator as users run it: `kubectl apply -k deploy/` for real, two replicas as pods on the
//! local cluster (the node agent runs the image `redis-operator` that `make image` built: its
//! layer unpacked into a root of its own, the entrypoint run there as the image's non-root user,
//! with a ServiceAccount token and KUBERNETES_SERVICE_HOST as a kubelet gives them), in-cluster
//! config, the RBAC of deploy/ only, and a takeover when the leader's pod is deleted. Alone in
//! its test binary: while it runs, an operator acts on every namespace.

mod common;
mod e2e;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
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

/// The uid of the image's user (`USER` in the Dockerfile).
const IMAGE_UID: &str = "65532";

/// Checks the operator's process in a pod as the node agent started it (its pid is in the
/// container ID the agent reports): the image's user, no privilege escalation, and a root of
/// its own holding the binary and no shell.
fn assert_runs_from_the_image(pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let id = status.container_id.as_deref().unwrap_or_default();
    let pid = id
        .strip_prefix("node-agent://")
        .unwrap_or_else(|| panic!("{name}: container ID {id:?}"));
    assert!(
        status.image_id.contains("@sha256:"),
        "{name}: image ID {:?} names no image digest",
        status.image_id
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    // Real, effective, saved and filesystem ids.
    assert_eq!(field("Uid:"), [IMAGE_UID; 4], "{name}: {proc_status}");
    assert_eq!(field("Gid:"), [IMAGE_UID; 4], "{name}: {proc_status}");
    assert!(field("Groups:").is_empty(), "{name}: {proc_status}");
    // allowPrivilegeEscalation: false in deploy/.
    assert_eq!(field("NoNewPrivs:"), ["1"], "{name}");
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_ne!(root, PathBuf::from("/"), "{name}: not in the image's root");
    let inside = PathBuf::from(format!("/proc/{pid}/root"));
    assert!(inside.join("redis-operator").is_file(), "{name}: {root:?}");
    assert!(
        !inside.join("bin/sh").exists(),
        "{name}: a shell in the image"
    );
    assert!(
        inside
            .join("var/run/secrets/kubernetes.io/serviceaccount/token")
            .is_file(),
        "{name}: the ServiceAccount token is not mounted in the image's root"
    );
}

/// The node agent's log directories of the operator's pods, deleted ones included.
fn operator_log_dirs() -> Vec<PathBuf> {
    let pods = kubeconfig_path().with_file_name("node").join("pods");
    // None yet on a fresh cluster.
    std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{NAMESPACE}_redis-operator-"))
        })
        .map(|e| e.path())
        .collect()
}

/// The container logs of the operator's pods, but for those of earlier runs (`earlier`).
fn operator_logs(earlier: &[PathBuf]) -> String {
    let mut text = String::new();
    for dir in operator_log_dirs() {
        if !earlier.contains(&dir) {
            text.push_str(&std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default());
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
    let earlier_logs = operator_log_dirs();
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
    for pod in operator_pods(&client).await {
        assert_runs_from_the_image(&pod);
    }
    // A Lease left by an operator that died without releasing it names a pod that is gone.
    let leader = wait_for(Duration::from_secs(60), "a leader", || async {
        let pods = operator_pods(&client).await;
        match lease_holder(&client).await {
            Some(holder)
                if pods
                    .iter()
                    .any(|p| p.metadata.name.as_ref() == Some(&holder)) =>
            {
                Ok(holder)
            }
            other => Err(format!("holder {other:?}")),
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

    let logs = operator_logs(&earlier_logs);
    assert!(
        logs.contains("acquired the lease") && logs.contains(&successor),
        "{logs}"
    );
    assert!(
        !logs.contains("forbidden: User"),
        "the operator was refused something:\n{logs}"
    );
}
