//! Tests of the local cluster itself (`hack/local-cluster up`): that a plain StatefulSet behaves
//! as the operator will rely on: config and data volumes, persistence across pod recreation,
//! rolling order, garbage collection; that `kubectl logs` reads pods' output through the
//! node agent's kubelet port; and that kube-proxy routes a Service's ClusterIP to the pod it
//! selects. Fails (never skips) when the cluster is not up.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, Pod, PodSpec, PodTemplateSpec, Probe, Service, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const CONFIG_DIR: &str = "/usr/local/etc/redis";

fn redis_conf(extra: &str) -> String {
    format!("port 6379\nbind * -::*\nprotected-mode no\ndir /data\n{extra}")
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), name.to_owned())])
}

fn config_map(name: &str, conf: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-config")),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("redis.conf".to_owned(), conf.to_owned())])),
        ..ConfigMap::default()
    }
}

/// What the operator will build, minus the operator: redis-server with the ConfigMap at
/// /usr/local/etc/redis and a `data` claim per pod at /data.
fn statefulset(name: &str, replicas: i32) -> StatefulSet {
    let redis = Container {
        name: "redis".into(),
        image: Some("redis:7.2".into()),
        command: Some(vec![
            "redis-server".into(),
            format!("{CONFIG_DIR}/redis.conf"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: 6379,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "redis-cli ping | grep -q PONG".into(),
                ]),
            }),
            period_seconds: Some(1),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![redis],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: format!("{name}-config"),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    termination_grace_period_seconds: Some(10),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            Quantity("64Mi".into()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// Creates the ConfigMap and the StatefulSet `name` in `ns`.
async fn create_redis(ns: &TestNamespace, name: &str, replicas: i32, conf: &str) {
    let pp = PostParams::default();
    ns.api::<ConfigMap>()
        .create(&pp, &config_map(name, conf))
        .await
        .expect("create configmap");
    ns.api::<StatefulSet>()
        .create(&pp, &statefulset(name, replicas))
        .await
        .expect("create statefulset");
}

async fn claims(ns: &TestNamespace) -> Vec<PersistentVolumeClaim> {
    ns.api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .expect("list claims")
        .items
}

fn claim_phase(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}={:?}",
        pvc.name_any(),
        pvc.status.as_ref().and_then(|s| s.phase.clone())
    )
}

#[tokio::test]
async fn statefulset_pod_runs_redis_with_the_configmap_and_a_bound_claim() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-config").await;
    create_redis(&ns, "redis", 1, &redis_conf("maxmemory 23mb\n")).await;

    let pod = ready_pod(&ns, "redis-0").await;

    assert_eq!(
        redis_cli(&pod, &["CONFIG", "GET", "maxmemory"]).await,
        "maxmemory\n24117248"
    );
    assert_eq!(
        redis_cli(&pod, &["CONFIG", "GET", "dir"]).await,
        "dir\n/data"
    );
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get("data-redis-0")
        .await
        .expect("claim exists");
    assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    assert!(
        pod_ip(&pod).starts_with("10.244."),
        "pod IP from the pod CIDR"
    );
}

#[tokio::test]
async fn appendonly_data_survives_pod_recreation() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-persist").await;
    create_redis(&ns, "redis", 1, &redis_conf("appendonly yes\n")).await;
    let pod = ready_pod(&ns, "redis-0").await;
    assert_eq!(redis_cli(&pod, &["SET", "greeting", "hello"]).await, "OK");

    ns.api::<Pod>()
        .delete("redis-0", &DeleteParams::default())
        .await
        .expect("delete pod");
    let replacement = ready_pod_not(&ns, "redis-0", Some(&uid(&pod))).await;

    assert_eq!(redis_cli(&replacement, &["GET", "greeting"]).await, "hello");
}

#[tokio::test]
async fn rolling_update_replaces_the_highest_ordinal_first() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-rolling").await;
    create_redis(&ns, "redis", 3, &redis_conf("")).await;
    let mut old = BTreeMap::new();
    for ordinal in 0..3 {
        let pod = ready_pod(&ns, &format!("redis-{ordinal}")).await;
        old.insert(ordinal, uid(&pod));
    }

    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"example.com/restarted": "1"}}}}});
    ns.api::<StatefulSet>()
        .patch("redis", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch template");

    // Ordinals in the order their replacement pods first appear.
    let order: Arc<Mutex<Vec<i32>>> = Arc::default();
    let pods = ns.api::<Pod>();
    wait_for(
        Duration::from_secs(300),
        "all 3 pods to be replaced and Ready",
        || {
            let (pods, old, order) = (pods.clone(), old.clone(), order.clone());
            async move {
                let list = pods
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut replaced_ready = 0;
                let mut seen = Vec::new();
                for pod in &list.items {
                    let ordinal: i32 = pod
                        .name_any()
                        .rsplit('-')
                        .next()
                        .and_then(|o| o.parse().ok())
                        .unwrap_or(-1);
                    if old.get(&ordinal) == Some(&uid(pod)) {
                        seen.push(format!("{} old", pod.name_any()));
                        continue;
                    }
                    let mut order = order.lock().unwrap();
                    if !order.contains(&ordinal) {
                        order.push(ordinal);
                    }
                    replaced_ready += usize::from(is_ready(pod));
                    seen.push(format!("{} new {}", pod.name_any(), describe(pod)));
                }
                if replaced_ready == 3 {
                    Ok(())
                } else {
                    Err(seen.join(", "))
                }
            }
        },
    )
    .await;

    assert_eq!(*order.lock().unwrap(), [2, 1, 0], "replacement order");
    let statefulsets = ns.api::<StatefulSet>();
    wait_for(
        Duration::from_secs(30),
        "the StatefulSet to report the rollout done",
        || {
            let statefulsets = statefulsets.clone();
            async move {
                let status = statefulsets
                    .get("redis")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                let done = status.updated_replicas == Some(3)
                    && status.current_revision == status.update_revision;
                if done {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_the_statefulset_collects_pods_and_keeps_claims_bound() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-gc").await;
    create_redis(&ns, "redis", 2, &redis_conf("")).await;
    ready_pod(&ns, "redis-0").await;
    ready_pod(&ns, "redis-1").await;

    ns.api::<StatefulSet>()
        .delete("redis", &DeleteParams::background())
        .await
        .expect("delete statefulset");

    let pods = ns.api::<Pod>();
    wait_for(
        Duration::from_secs(120),
        "the garbage collector to remove the pods",
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if list.items.is_empty() {
                    Ok(())
                } else {
                    Err(list
                        .items
                        .iter()
                        .map(|p| format!("{}: {}", p.name_any(), describe(p)))
                        .collect::<Vec<_>>()
                        .join(", "))
                }
            }
        },
    )
    .await;

    let phases: Vec<String> = claims(&ns).await.iter().map(claim_phase).collect();
    assert_eq!(
        phases,
        [
            r#"data-redis-0=Some("Bound")"#,
            r#"data-redis-1=Some("Bound")"#
        ],
        "claims outlive their pods"
    );
}

#[tokio::test]
async fn unsupported_images_are_refused_with_a_clear_reason() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-image").await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let api = ns.api::<Pod>();
    let message = wait_for(
        Duration::from_secs(60),
        "pod web to wait with ImageNotSupported",
        || {
            let api = api.clone();
            async move {
                let pod = api.get("web").await.map_err(|e| e.to_string())?;
                let waiting = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.waiting.clone());
                match waiting {
                    Some(w) if w.reason.as_deref() == Some("ImageNotSupported") => {
                        Ok(w.message.unwrap_or_default())
                    }
                    _ => Err(describe(&pod)),
                }
            }
        },
    )
    .await;
    assert!(
        message.contains("nginx:1.27") && message.contains("redis"),
        "{message}"
    );
}

/// As with the official image (built with protected mode off), a config file that says
/// nothing about `protected-mode` serves clients on the pod IP; one that turns it on refuses
/// them: the file still decides.
#[tokio::test]
async fn redis_pods_keep_the_official_image_default_of_protected_mode_off() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-protected").await;
    create_redis(&ns, "open", 1, "port 6379\ndir /data\n").await;
    create_redis(
        &ns,
        "closed",
        1,
        "port 6379\ndir /data\nprotected-mode yes\n",
    )
    .await;
    let open = ready_pod(&ns, "open-0").await;
    assert_eq!(redis_cli(&open, &["PING"]).await, "PONG");
    let closed = ready_pod(&ns, "closed-0").await;
    let refused = try_redis_cli(&pod_ip(&closed), &["PING"]).await;
    assert!(
        format!("{refused:?}").contains("DENIED"),
        "protected mode set in the file applies: {refused:?}"
    );
}

/// `kubectl --kubeconfig <the cluster's> <args>`, the kubectl hack/build-controlplane builds.
fn kubectl(args: &[&str]) -> tokio::process::Command {
    let cache = std::env::var_os("REDIS_OPERATOR_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/redis-operator")
        });
    let mut command = tokio::process::Command::new(cache.join("kubernetes-v1.37.2/kubectl"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .kill_on_drop(true);
    command
}

/// `kubectl logs -n <ns> <args>`: stdout, or stderr when it fails.
async fn kubectl_logs(ns: &TestNamespace, args: &[&str]) -> Result<String, String> {
    let output = kubectl(&[&["logs", "-n", &ns.name], args].concat())
        .output()
        .await
        .expect("run kubectl (hack/build-controlplane builds it)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A bare pod running redis-server with the DEBUG command enabled, so that a test can make it
/// log a line of its choosing (`DEBUG LOG <text>`).
async fn create_debuggable_redis(ns: &TestNamespace, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{
                "name": "redis",
                "image": "redis:7.2",
                "command": ["redis-server", "--enable-debug-command", "yes", "--save", ""],
                "readinessProbe": {
                    "exec": {"command": ["sh", "-c", "redis-cli ping | grep -q PONG"]},
                    "periodSeconds": 1
                }
            }],
            "terminationGracePeriodSeconds": 5
        }
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    ready_pod(ns, name).await
}

/// Waits until `kubectl logs <args>` prints `text`; returns the output.
async fn logs_containing(ns: &TestNamespace, args: &[&str], text: &str) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("kubectl logs {args:?} to print {text:?}"),
        || async move {
            let out = kubectl_logs(ns, args).await?;
            if out.contains(text) {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await
}

const REDIS_READY_LINE: &str = "Ready to accept connections";

#[tokio::test]
async fn kubectl_logs_prints_the_containers_output_and_follows_new_lines() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-logs").await;
    let pod = create_debuggable_redis(&ns, "redis").await;

    logs_containing(&ns, &["redis"], REDIS_READY_LINE).await;
    let last = kubectl_logs(&ns, &["redis", "--tail=1", "--timestamps"])
        .await
        .expect("kubectl logs --tail=1 --timestamps");
    assert_eq!(last.lines().count(), 1, "{last:?}");
    let (time, _) = last.split_once(' ').expect("a timestamp, then the line");
    time.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{time:?} is no RFC 3339 time: {e}"));

    let mut follow = kubectl(&["logs", "-f", "-n", &ns.name, "redis"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kubectl logs -f");
    let followed: Arc<Mutex<String>> = Arc::default();
    let reader = {
        let followed = followed.clone();
        let stdout = follow.stdout.take().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut followed = followed.lock().unwrap();
                followed.push_str(&line);
                followed.push('\n');
            }
        })
    };
    let seen = |text: String| {
        let followed = followed.clone();
        move || {
            let out = followed.lock().unwrap().clone();
            let found = out.contains(&text);
            async move { if found { Ok(()) } else { Err(out) } }
        }
    };
    // The stream is open once it has shown what was logged before it began.
    wait_for(
        Duration::from_secs(30),
        "kubectl logs -f to print the start-up lines",
        seen(REDIS_READY_LINE.into()),
    )
    .await;

    let marker = format!("marker-{}", ns.name);
    assert_eq!(redis_cli(&pod, &["DEBUG", "LOG", &marker]).await, "OK");
    wait_for(
        Duration::from_secs(30),
        "kubectl logs -f to deliver the line logged after it began",
        seen(format!("DEBUG LOG: {marker}")),
    )
    .await;
    assert!(
        follow.try_wait().expect("poll kubectl").is_none(),
        "kubectl logs -f keeps following a running container"
    );
    follow.kill().await.expect("stop kubectl logs -f");
    reader.await.unwrap();
}

#[tokio::test]
async fn kubectl_logs_previous_shows_the_run_before_a_restart() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-prevlogs").await;
    let pod = create_debuggable_redis(&ns, "redis").await;
    let refused = kubectl_logs(&ns, &["redis", "--previous"]).await;
    assert!(
        refused.as_ref().is_err_and(
            |e| e.contains(r#"previous terminated container "redis" in pod "redis" not found"#)
        ),
        "{refused:?}"
    );
    let marker = format!("marker-{}", ns.name);
    assert_eq!(redis_cli(&pod, &["DEBUG", "LOG", &marker]).await, "OK");
    logs_containing(&ns, &["redis"], &marker).await;

    // Redis exits 0; restartPolicy Always restarts it at once.
    let _ = try_redis_cli(&pod_ip(&pod), &["SHUTDOWN", "NOSAVE"]).await;
    let api = ns.api::<Pod>();
    wait_for(
        Duration::from_secs(60),
        "redis to be restarted and Ready",
        || {
            let api = api.clone();
            async move {
                let pod = api.get("redis").await.map_err(|e| e.to_string())?;
                let restarts = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .map_or(0, |c| c.restart_count);
                if restarts == 1 && is_ready(&pod) {
                    Ok(())
                } else {
                    Err(describe(&pod))
                }
            }
        },
    )
    .await;

    let previous = logs_containing(&ns, &["redis", "--previous"], &marker).await;
    assert!(previous.contains("ready to exit"), "{previous}");
    let current = logs_containing(&ns, &["redis"], REDIS_READY_LINE).await;
    assert!(!current.contains(&marker), "{current}");
}

/// Creates a pod whose container prints 100 numbered lines and `last`, then exits 3, under
/// `terminationMessagePolicy` `policy`; returns its container's status once a run ended and
/// the container restarted (so that `lastState` holds that run).
async fn failing_pod_status(
    ns: &TestNamespace,
    name: &str,
    policy: &str,
    last: &str,
) -> k8s_openapi::api::core::v1::ContainerStatus {
    let script = format!("for i in $(seq 1 100); do echo line $i; done; echo '{last}'; exit 3");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{
                "name": "main",
                "image": "redis:7.2",
                "command": ["sh", "-c", script],
                "terminationMessagePolicy": policy
            }],
            "terminationGracePeriodSeconds": 1
        }
    }))
    .unwrap();
    let api = ns.api::<Pod>();
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    wait_for(
        Duration::from_secs(60),
        &format!("pod {name} to restart after its container exited 3"),
        || {
            let api = api.clone();
            async move {
                let pod = api.get(name).await.map_err(|e| e.to_string())?;
                let status = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .cloned();
                let restarted = status.as_ref().is_some_and(|s| {
                    s.last_state
                        .as_ref()
                        .and_then(|l| l.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 3)
                });
                match status {
                    Some(status) if restarted => Ok(status),
                    _ => Err(describe(&pod)),
                }
            }
        },
    )
    .await
}

/// The termination messages in a container status: of `state` and of `lastState`, for runs
/// that ended with exit code 3.
fn exit_3_messages(status: &k8s_openapi::api::core::v1::ContainerStatus) -> Vec<Option<String>> {
    [status.state.as_ref(), status.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .filter(|t| t.exit_code == 3)
        .map(|t| t.message.clone())
        .collect()
}

#[tokio::test]
async fn a_failed_container_under_fallback_to_logs_on_error_reports_its_last_output() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-termmsg").await;
    let last = "refused: the reason is here";

    let status = failing_pod_status(&ns, "fallback", "FallbackToLogsOnError", last).await;
    let messages = exit_3_messages(&status);
    assert!(!messages.is_empty(), "{status:?}");
    for message in messages {
        // The last 80 lines: lines 22 to 100 and the last one.
        let message = message.unwrap_or_else(|| panic!("no message in {status:?}"));
        assert!(
            message.ends_with(&format!("line 100\n{last}\n")),
            "{message:?}"
        );
        assert!(message.starts_with("line 22\n"), "{message:?}");
        assert_eq!(message.lines().count(), 80, "{message:?}");
    }

    // `File`, the default: no terminationMessagePath file support, and no fallback.
    let status = failing_pod_status(&ns, "file", "File", last).await;
    let messages = exit_3_messages(&status);
    assert!(!messages.is_empty(), "{status:?}");
    assert!(messages.iter().all(Option::is_none), "{status:?}");
}

/// How long kube-proxy may take to route a ClusterIP to the pod a Service newly selects.
const SERVICE_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A ClusterIP Service `name` on port 6379 selecting pods labelled `app=<name>,serving=yes`;
/// returns its ClusterIP.
async fn create_service(ns: &TestNamespace, name: &str) -> String {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name, "serving": "yes"},
            "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}]
        }
    }))
    .unwrap();
    let service = ns
        .api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
    service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| ip.starts_with("10.96."))
        .unwrap_or_else(|| panic!("service {name} got no ClusterIP in 10.96.0.0/16"))
}

/// A bare pod `name` labelled `app=<app>,serving=<serving>` running redis-server with
/// `dbfilename <name>.rdb`: `CONFIG GET dbfilename` through a Service says which pod answered.
/// `extra` containers run beside Redis, in the same network namespace.
async fn create_named_redis(
    ns: &TestNamespace,
    app: &str,
    name: &str,
    serving: &str,
    extra: &[serde_json::Value],
) {
    let redis = json!({
        "name": "redis",
        "image": "redis:7.2",
        "command": ["redis-server", "--save", "", "--dbfilename", format!("{name}.rdb")],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", "redis-cli ping | grep -q PONG"]},
            "periodSeconds": 1
        }
    });
    let containers = [&[redis], extra].concat();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app, "serving": serving}},
        "spec": {
            "containers": containers,
            "terminationGracePeriodSeconds": 1
        }
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Which pod answers on `ip` port 6379 (the `<pod>` of its `<pod>.rdb`), asked from this
/// process, on the host, as a client outside the pod network. Bounded: a ClusterIP no rule
/// routes yet would leave the connection hanging.
async fn answering_pod(ip: &str) -> Result<String, String> {
    let output = tokio::process::Command::new("timeout")
        .args(["3", "redis-cli", "-h", ip, "CONFIG", "GET", "dbfilename"])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("failed to run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().collect::<Vec<_>>()[..] {
        ["dbfilename", file] if output.status.success() => file
            .strip_suffix(".rdb")
            .map(str::to_owned)
            .ok_or_else(|| format!("unexpected dbfilename {file:?}")),
        _ => Err(format!(
            "redis-cli -h {ip}: {} {stdout:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// Waits until the pod answering on `ip` is `want`; returns how long that took.
async fn wait_answering(ip: &str, want: &str) -> Duration {
    let start = Instant::now();
    wait_for(
        SERVICE_ROUTE_TIMEOUT,
        &format!("ClusterIP {ip} to reach pod {want}"),
        || async move {
            match answering_pod(ip).await? {
                pod if pod == want => Ok(()),
                pod => Err(format!("pod {pod} answered")),
            }
        },
    )
    .await;
    start.elapsed()
}

/// Runs a pod `name` (restartPolicy Never) whose only container runs `script` with `sh -c`;
/// returns its exit code and its log once it ended.
async fn run_to_completion(ns: &TestNamespace, name: &str, script: &str) -> (i32, String) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": "redis:7.2", "command": ["sh", "-c", script]}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1
        }
    }))
    .unwrap();
    let api = ns.api::<Pod>();
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let exit_code = wait_for(
        POD_READY_TIMEOUT,
        &format!("pod {name} to run to completion"),
        || {
            let api = api.clone();
            async move {
                let pod = api.get(name).await.map_err(|e| e.to_string())?;
                let terminated = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code);
                terminated.ok_or_else(|| describe(&pod))
            }
        },
    )
    .await;
    let log = kubectl_logs(ns, &[name])
        .await
        .unwrap_or_else(|e| panic!("kubectl logs {name}: {e}"));
    (exit_code, log)
}

/// kube-proxy routes a ClusterIP as in a real cluster: from the host, from another pod, from
/// the selected pod to itself (hairpin), and to another pod once the selector's match moves.
#[tokio::test]
async fn a_cluster_ip_reaches_the_selected_pod_from_the_host_and_from_pods() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cluster-svc").await;
    let app = "svc";
    let cluster_ip = create_service(&ns, app).await;

    // Pod a also asks its own Service, until it is routed back to itself.
    let self_check = json!({
        "name": "self-check",
        "image": "redis:7.2",
        "command": ["sh", "-c", format!(
            "until [ \"$(timeout 3 redis-cli -h {cluster_ip} CONFIG GET dbfilename | tail -n 1)\" = a.rdb ]; \
             do sleep 0.5; done; echo reached itself through {cluster_ip}; exec sleep infinity"
        )]
    });
    create_named_redis(&ns, app, "a", "yes", &[self_check]).await;
    create_named_redis(&ns, app, "b", "no", &[]).await;
    ready_pod(&ns, "a").await;
    ready_pod(&ns, "b").await;

    let first = wait_answering(&cluster_ip, "a").await;
    eprintln!("ClusterIP {cluster_ip} reached pod a from the host {first:?} after both were Ready");
    logs_containing(
        &ns,
        &["a", "-c", "self-check"],
        &format!("reached itself through {cluster_ip}"),
    )
    .await;

    let (exit_code, log) = run_to_completion(
        &ns,
        "client",
        &format!(
            "set -e; timeout 5 redis-cli -h {cluster_ip} PING; \
             timeout 5 redis-cli -h {cluster_ip} CONFIG GET dbfilename"
        ),
    )
    .await;
    assert_eq!(
        (exit_code, log.lines().collect::<Vec<_>>()),
        (0, vec!["PONG", "dbfilename", "a.rdb"]),
        "a client pod asks the Service; pod a answers"
    );

    // The Service now selects b instead of a.
    let relabel =
        |serving: &'static str| Patch::Merge(json!({"metadata": {"labels": {"serving": serving}}}));
    let pods = ns.api::<Pod>();
    let pp = PatchParams::default();
    pods.patch("a", &pp, &relabel("no"))
        .await
        .expect("relabel a");
    pods.patch("b", &pp, &relabel("yes"))
        .await
        .expect("relabel b");
    let moved = wait_answering(&cluster_ip, "b").await;
    eprintln!("ClusterIP {cluster_ip} reached pod b {moved:?} after the relabel");
    for _ in 0..5 {
        assert_eq!(
            answering_pod(&cluster_ip).await.as_deref(),
            Ok("b"),
            "only b is selected now"
        );
    }
}
