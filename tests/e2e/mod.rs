//! Harness for the operator's end-to-end tests: a namespace per test, an operator process per
//! test, bounded waits, and the checks a user would run (objects, Events, redis-cli).

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use redis_operator::crd::RedisInstance;

/// Where `hack/local-cluster up` writes the admin kubeconfig (overridable for other clusters).
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local-cluster/kubeconfig")
        })
}

/// A client for the local cluster; fails the test with a hint when it is not up.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "no local cluster kubeconfig at {} ({e}); run `hack/local-cluster up` (make test does)",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = Client::try_from(config).expect("a client");
    client.apiserver_version().await.unwrap_or_else(|e| {
        panic!(
            "local cluster at {} does not answer ({e}); run `hack/local-cluster up`",
            path.display()
        )
    });
    client
}

/// Polls `check` every 500ms until it returns `Some`, or fails after `timeout` naming `what`
/// and the last observation.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Installs the CRD (server-side apply, so concurrent tests agree) and waits until it serves.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = RedisInstance::crd();
    api.patch(
        &crd.name_any(),
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait_for(
        Duration::from_secs(30),
        "the RedisInstance CRD to be established",
        || {
            let api = api.clone();
            async move {
                let crd = api
                    .get("redisinstances.redis.github.com")
                    .await
                    .map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    Ok(())
                } else {
                    Err("not established".into())
                }
            }
        },
    )
    .await;
}

/// A namespace that lives as long as the test; labelled so leftovers are easy to find.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let name = format!("e2e-{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "redis-operator.dev/test": "e2e" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        Self {
            name,
            client: client.clone(),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        // Drop cannot be async; the tests run on the multi-threaded runtime.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            })
        });
    }
}

/// The operator binary, running against the local cluster and watching one namespace.
pub struct Operator {
    child: Child,
    pub log_path: PathBuf,
    pub metrics_addr: String,
}

impl Operator {
    /// Starts `redis-operator run --namespace <ns>`; logs go to `target/e2e-logs/<ns>.log`.
    pub fn start(namespace: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = dir.join(format!("{namespace}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--metrics-addr",
                &metrics_addr,
                "--log-format",
                "json",
            ])
            .args(["--resync", "10", "--recreate-timeout", "60"])
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .env("RUST_LOG", "info,redis_operator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redis-operator");
        Self {
            child,
            log_path,
            metrics_addr,
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// SIGKILL: no chance to reach a safe point.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("operator did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The JSON log lines so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics").await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// A minimal HTTP/1.0 GET, enough for the operator's own endpoints.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to operator http");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// An example manifest from `examples/`, placed in `namespace`.
pub fn example(file: &str) -> RedisInstance {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies a RedisInstance as a user would (`kubectl apply --server-side`).
pub async fn apply_instance(
    ns: &TestNamespace,
    instance: &RedisInstance,
) -> Result<RedisInstance, kube::Error> {
    let mut instance = instance.clone();
    instance.metadata.namespace = Some(ns.name.clone());
    instance.metadata.resource_version = None;
    instance.status = None;
    ns.api::<RedisInstance>()
        .patch(
            &instance.name_any(),
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(&instance),
        )
        .await
}

/// Waits until the instance reports Ready=True for its current generation and runs `hash`
/// (any hash when `None`); returns it.
pub async fn wait_ready(
    ns: &TestNamespace,
    name: &str,
    hash: Option<&str>,
    timeout: Duration,
) -> RedisInstance {
    let api = ns.api::<RedisInstance>();
    wait_for(
        timeout,
        &format!("RedisInstance {name} to be Ready"),
        || {
            let api = api.clone();
            async move {
                let ri = api.get(name).await.map_err(|e| e.to_string())?;
                let status = ri.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let current = status.observed_generation == ri.metadata.generation;
                let hash_ok = hash.is_none_or(|h| status.config_hash.as_deref() == Some(h));
                let settled = status.phase.map(|p| p.as_str()) == Some("Running");
                if ready && current && hash_ok && settled {
                    Ok(ri)
                } else {
                    Err(format!("{status:?}"))
                }
            }
        },
    )
    .await
}

/// The pods of an instance, by name.
pub async fn pods(ns: &TestNamespace, instance: &str) -> Vec<Pod> {
    let mut pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
        .await
        .unwrap()
        .items;
    pods.sort_by_key(|p| p.name_any());
    pods
}

/// The running, ready pod `name`, waiting for it.
pub async fn ready_pod(ns: &TestNamespace, name: &str) -> Pod {
    let api = ns.api::<Pod>();
    wait_for(
        Duration::from_secs(120),
        &format!("pod {name} to be Running and Ready"),
        || {
            let api = api.clone();
            async move {
                let pod = api.get(name).await.map_err(|e| e.to_string())?;
                let status = pod.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if status.phase.as_deref() == Some("Running")
                    && ready
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    Ok(pod)
                } else {
                    Err(format!("phase {:?}, ready {ready}", status.phase))
                }
            }
        },
    )
    .await
}

/// Runs `redis-cli -h <pod IP>` with `args`; returns stdout lines.
pub fn redis_cli(pod: &Pod, args: &[&str]) -> Vec<String> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod has an IP");
    let out = Command::new("redis-cli")
        .args(["-h", &ip, "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli is installed (hack/local-cluster installs redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `CONFIG GET <name>` on the pod: the value.
pub fn config_get(pod: &Pod, name: &str) -> String {
    let lines = redis_cli(pod, &["CONFIG", "GET", name]);
    assert_eq!(
        lines.first().map(String::as_str),
        Some(name),
        "CONFIG GET {name} answered {lines:?}"
    );
    lines.get(1).cloned().unwrap_or_default()
}

/// The live ConfigMap's redis.conf and the StatefulSet's hash annotation.
pub async fn config_map_and_hash(ns: &TestNamespace, instance: &str) -> (String, Option<String>) {
    let cm = ns
        .api::<ConfigMap>()
        .get(&format!("{instance}-config"))
        .await
        .unwrap();
    let text = cm
        .data
        .unwrap_or_default()
        .remove("redis.conf")
        .expect("redis.conf key");
    let sts = ns.api::<StatefulSet>().get(instance).await.unwrap();
    let hash = sts
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|mut a| a.remove("redis.github.com/config-hash"));
    (text, hash)
}

/// What `sha256sum` prints for `text`, as a user would check the annotation.
pub fn sha256sum(text: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("redis-conf-{}-{}", std::process::id(), text.len()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Events on the instance, as (type, reason, note).
pub async fn instance_events(ns: &TestNamespace, instance: &str) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(instance))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("RedisInstance"))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// A pod's uid, to tell a restarted pod from the same one.
pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap()
}
