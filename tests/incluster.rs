//! The operator as users run it: installed once with `helm install` of deploy/helm/ for real,
//! two replicas as pods on the local cluster (the node agent runs the image `redis-operator`
//! that `make image` built: its layer unpacked into a root of its own, the entrypoint run there
//! as the image's non-root user, with a ServiceAccount token and KUBERNETES_SERVICE_HOST as a
//! kubelet gives them), in-cluster config, the chart's RBAC only, a takeover when the leader's
//! pod is deleted, and `helm uninstall` removing it all but the CRD. Alone in its test binary:
//! while it runs, an operator acts on every namespace.

mod common;
mod e2e;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use common::{TestNamespace, is_ready, kubeconfig_path, wait_for};
use e2e::*;

const NAMESPACE: &str = "redis-operator";
const SELECTOR: &str = "app.kubernetes.io/name=redis-operator";

/// The Helm release, named as the chart's objects are.
const RELEASE: &str = "redis-operator";

/// The chart installed as the release `redis-operator`; uninstalled on drop, pass or fail, and
/// its pods awaited, so that no cluster-wide operator outlives this test.
struct HelmRelease;

impl HelmRelease {
    /// `helm install`, after removing what an interrupted run or the kustomize tests may have
    /// left: Helm refuses to take over objects it did not create, and a fresh install is what
    /// users do. The CRD stays (other tests' instances use it), so Helm skips its own copy.
    fn install() -> Self {
        helm(&[
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
            "--wait",
        ]);
        let leftovers = ["rbac.yaml", "service.yaml", "deployment.yaml"].map(|file| {
            repo_path("deploy/base")
                .join(file)
                .to_string_lossy()
                .into_owned()
        });
        let mut delete = vec!["delete", "--ignore-not-found", "--wait=true"];
        for file in &leftovers {
            delete.extend(["-f", file]);
        }
        kubectl(&delete);
        wait_for_no_operator_pods();
        let chart = repo_path("deploy/helm/redis-operator");
        helm(&[
            "install",
            RELEASE,
            &chart.to_string_lossy(),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
        ]);
        Self
    }

    fn uninstall() -> std::process::Output {
        let out = helm_output(&[
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
            "--wait",
        ]);
        wait_for_no_operator_pods();
        out
    }
}

/// Waits until the pods of a removed Deployment are gone (at most their grace period).
fn wait_for_no_operator_pods() {
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

impl Drop for HelmRelease {
    fn drop(&mut self) {
        Self::uninstall();
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
    let pid = common::container_pid(pod);
    assert!(
        status.image_id.contains("@sha256:"),
        "{name}: image ID {:?} names no image digest",
        status.image_id
    );
    let process = common::ProcStatus::read(&pid);
    let (field, proc_status) = (|key: &str| process.field(key), &process.0);
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

/// From outside the pod (this host, over the pod network) `/metrics` answers, while `/logs` and
/// `/instances` are neither on the metrics port nor reachable on the debug port, which answers
/// on the pod's own loopback only (where `kubectl port-forward` connects). Only the leader
/// keeps instances' log lines; a standby knows no instance.
async fn assert_debug_endpoints_stay_on_loopback(pod: &Pod, instance_logs: &str, leader: &str) {
    let name = pod.name_any();
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (status, body) = http_get_status(&format!("{ip}:8080"), "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200, "{name}: /metrics: {body}");
    assert!(body.contains("redis_operator_leader"), "{name}: {body}");
    for path in [instance_logs, "/instances"] {
        let (status, body) = http_get_status(&format!("{ip}:8080"), path).await.unwrap();
        assert_eq!(status, 404, "{name}: {path} on the metrics port: {body}");
        let refused = http_get_status(&format!("{ip}:8081"), path).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("refused")),
            "{name}: {path} on the debug port from outside the pod: {refused:?}"
        );
        let answer = if path == instance_logs && name != leader {
            "404"
        } else {
            "200"
        };
        assert_eq!(
            from_the_pods_loopback(pod, path),
            answer,
            "{name}: {path} on the pod's loopback"
        );
    }
}

/// The status code of `GET http://127.0.0.1:8081{path}` inside the pod's network namespace.
fn from_the_pods_loopback(pod: &Pod, path: &str) -> String {
    let pid = common::container_pid(pod);
    let out = std::process::Command::new("nsenter")
        .args(["--target", &pid, "--net", "--"])
        .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:8081{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directories where the node agent keeps the operator's pods' logs, deleted pods included
/// (named namespace_pod_uid).
fn operator_pod_dirs() -> BTreeSet<PathBuf> {
    let pods = kubeconfig_path().with_file_name("node").join("pods");
    std::fs::read_dir(&pods)
        .unwrap()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            name.to_string_lossy()
                .starts_with(&format!("{NAMESPACE}_redis-operator-"))
        })
        .map(|entry| entry.path())
        .collect()
}

/// The container logs of the operator's pods, but those of `earlier` runs: their pods log
/// refusals while they stop, as `helm uninstall` deletes the RBAC at the same time.
fn operator_logs(earlier: &BTreeSet<PathBuf>) -> String {
    let mut text = String::new();
    for dir in operator_pod_dirs().difference(earlier) {
        text.push_str(&std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default());
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn installed_with_helm_the_operator_runs_as_pods_and_fails_over() {
    let client = common::client().await;
    install_crd(&client).await;
    let earlier_pods = operator_pod_dirs();
    let _release = HelmRelease::install();
    let status: serde_json::Value =
        serde_json::from_str(&helm(&["status", RELEASE, "-n", NAMESPACE, "-o", "json"])).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");
    let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get("redis-operator")
        .await
        .unwrap();
    assert_eq!(
        deployment
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm"),
        "the Deployment is not the chart's"
    );
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
    // The Lease may still name a pod of an earlier run: `helm uninstall` deletes the RBAC while
    // the pods stop, so they cannot release it, and it expires by itself.
    let leader = wait_for(
        Duration::from_secs(60),
        "one of the pods to lead",
        || async {
            let pods: Vec<String> = operator_pods(&client)
                .await
                .iter()
                .map(|pod| pod.name_any())
                .collect();
            match lease_holder(&client).await {
                Some(holder) if pods.contains(&holder) => Ok(holder),
                other => Err(format!("holder {other:?}, pods {pods:?}")),
            }
        },
    )
    .await;

    let ns = TestNamespace::create(&client, "incluster").await;
    let mut instance = example("redis-example.yaml");
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, Duration::from_secs(180)).await;
    let instance_logs = format!("/logs/{}/redis-example", ns.name);
    for pod in operator_pods(&client).await {
        assert_debug_endpoints_stay_on_loopback(&pod, &instance_logs, &leader).await;
    }
    let history = PodHistory::start(&ns).await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "150mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let hash = redis_operator::config::rendered(&instance).hash;
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
    let hash = redis_operator::config::rendered(&instance).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(ready.status.unwrap().restarts, 2, "one restart per edit");
    assert_eq!(history.restarts().await["redis-example-0"], 2);
    let pod = common::ready_pod(&ns, "redis-example-0").await;
    assert_eq!(config_get(&pod, "maxmemory").await, "167772160");

    let logs = operator_logs(&earlier_pods);
    assert!(
        logs.contains("acquired the lease") && logs.contains(&successor),
        "{logs}"
    );
    assert!(
        !logs.contains("forbidden: User"),
        "the operator was refused something:\n{logs}"
    );

    // `helm uninstall` takes the operator and its RBAC away, and leaves the CRD (Helm never
    // deletes the CRDs of crds/), so that RedisInstances survive an uninstall.
    let out = HelmRelease::uninstall();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        operator_pods(&client).await.is_empty(),
        "operator pods left"
    );
    for (kind, namespace) in [
        ("deployment", NAMESPACE),
        ("clusterrole", ""),
        ("serviceaccount", NAMESPACE),
    ] {
        let mut args = vec!["get", kind, "redis-operator", "--ignore-not-found"];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        assert_eq!(kubectl(&args), "", "{kind} left after helm uninstall");
    }
    kubectl(&["get", "crd", "redisinstances.redis.github.com"]);
}
