//! deploy/ on the local cluster: the kustomize base and its overlay, and the Helm chart with
//! the matching values, pass a server-side dry run, and the real operator runs a restart with
//! nothing but the ServiceAccount's RBAC from deploy/ (it impersonates the ServiceAccount),
//! while that RBAC refuses what it must not do.

mod common;
mod e2e;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::DeleteParams;
use redis_operator::crd::RedisInstance;

use common::{TestNamespace, kubeconfig_path, wait_for};
use e2e::*;

const SERVICE_ACCOUNT: &str = "system:serviceaccount:redis-operator:redis-operator";

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn the_manifests_pass_a_server_side_dry_run() {
    let client = common::client().await;
    install_crd(&client).await;
    // A dry run creates nothing, so objects in a namespace the same run would create are
    // refused: the namespaces exist first, as after a first install.
    for namespace in ["redis-operator", "redis"] {
        let manifest = kubectl(&[
            "create",
            "namespace",
            namespace,
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/e2e-logs")
            .join(format!("namespace-{namespace}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, manifest).unwrap();
        kubectl(&["apply", "--server-side", "-f", &path.to_string_lossy()]);
    }
    for dir in ["deploy", "deploy/overlays/namespaced"] {
        let out = kubectl(&["apply", "--dry-run=server", "-k", &repo(dir)]);
        assert!(
            out.contains("deployment.apps/redis-operator"),
            "{dir}: {out}"
        );
    }
    // The chart likewise: `helm template` with the defaults and in namespaced mode, its output
    // applied as a file (the monitoring objects need the Prometheus Operator's CRDs).
    for (name, values) in [
        ("default", &[][..]),
        (
            "namespaced",
            &["watchNamespace=redis", "createWatchNamespace=true"][..],
        ),
    ] {
        let rendered = helm_template(&repo_path("deploy/helm/redis-operator"), values);
        let path = repo_path("target/e2e-logs").join(format!("helm-{name}.yaml"));
        std::fs::write(&path, rendered).unwrap();
        let out = kubectl(&["apply", "--dry-run=server", "-f", &path.to_string_lossy()]);
        assert!(
            out.contains("deployment.apps/redis-operator")
                && out.contains("customresourcedefinition.apiextensions.k8s.io/redisinstances"),
            "chart, {name} values: {out}"
        );
    }
}

/// A kubeconfig that acts as the operator's ServiceAccount.
fn impersonating_kubeconfig(dir: &str) -> PathBuf {
    let admin = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    let user = &mut config["users"][0]["user"];
    user["as"] = SERVICE_ACCOUNT.into();
    user["as-groups"] = serde_yaml::to_value([
        "system:serviceaccounts",
        "system:serviceaccounts:redis-operator",
        "system:authenticated",
    ])
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e-logs")
        .join(format!("{dir}.kubeconfig"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// `kubectl auth can-i` as the operator's ServiceAccount; `resource` may name a subresource
/// after a slash.
fn can_i(verb: &str, resource: &str, namespace: &str) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let subresource = format!("--subresource={subresource}");
    let mut args = vec!["auth", "can-i", verb, resource, "--as", SERVICE_ACCOUNT];
    if !subresource.ends_with('=') {
        args.push(&subresource);
    }
    if namespace == "*" {
        args.push("--all-namespaces");
    } else {
        args.extend(["-n", namespace]);
    }
    let out = kubectl_output(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_needs_only_the_rbac_in_deploy() {
    let client = common::client().await;
    install_crd(&client).await;
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &repo("deploy/base/namespace.yaml"),
        "-f",
        &repo("deploy/base/rbac.yaml"),
    ]);
    let ns = TestNamespace::create(&client, "rbac").await;

    for (verb, resource, namespace) in [
        ("watch", "redisinstances.redis.github.com", "*"),
        ("patch", "redisinstances.redis.github.com/status", &ns.name),
        ("patch", "statefulsets.apps", &ns.name),
        ("delete", "pods", &ns.name),
        ("delete", "services", &ns.name),
        ("delete", "configmaps", &ns.name),
        ("patch", "pods", &ns.name),
        ("list", "endpointslices.discovery.k8s.io", &ns.name),
        ("watch", "networkpolicies.networking.k8s.io", "*"),
        ("delete", "networkpolicies.networking.k8s.io", &ns.name),
        ("update", "leases.coordination.k8s.io", "redis-operator"),
        ("get", "secrets", &ns.name),
        ("create", "secrets", &ns.name),
        ("patch", "secrets", &ns.name),
    ] {
        assert!(can_i(verb, resource, namespace), "cannot {verb} {resource}");
    }
    for (verb, resource, namespace) in [
        ("delete", "secrets", ns.name.as_str()),
        ("update", "secrets", &ns.name),
        ("delete", "namespaces", "*"),
        ("create", "deployments.apps", &ns.name),
        ("update", "redisinstances.redis.github.com", &ns.name),
        ("update", "networkpolicies.networking.k8s.io", &ns.name),
        ("delete", "persistentvolumeclaims", &ns.name),
        ("patch", "persistentvolumeclaims", &ns.name),
        ("list", "persistentvolumeclaims", &ns.name),
        ("update", "leases.coordination.k8s.io", &ns.name),
    ] {
        assert!(
            !can_i(verb, resource, namespace),
            "may {verb} {resource} in {namespace}"
        );
    }

    let kubeconfig = impersonating_kubeconfig(&ns.name);
    let lease = format!("lease-{}", ns.name);
    let operator = Operator::start_with(
        &ns.name,
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "--lease-namespace",
            "redis-operator",
            "--lease-name",
            &lease,
        ],
    );
    let mut instance = example("redis-example.yaml");
    apply_instance(&ns, &instance).await.unwrap();
    wait_ready(&ns, "redis-example", None, Duration::from_secs(180)).await;
    instance
        .spec
        .config
        .insert("maxmemory".into(), "140mb".into());
    apply_instance(&ns, &instance).await.unwrap();
    let hash = redis_operator::config::rendered(&instance).hash;
    let ready = wait_ready(&ns, "redis-example", Some(&hash), Duration::from_secs(180)).await;
    assert_eq!(ready.status.unwrap().restarts, 1);
    ns.api::<RedisInstance>()
        .delete("redis-example", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the StatefulSet to be collected",
        || async {
            match ns.api::<StatefulSet>().get_opt("redis-example").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let log = std::fs::read_to_string(&operator.log_path).unwrap();
    assert!(log.contains("acquired the lease"), "{log}");
    assert!(
        !log.contains("forbidden: User"),
        "the operator was refused something:\n{log}"
    );
}
