//! Harness for tests against the local cluster of `hack/local-cluster up`: a client, a labelled
//! namespace per test (deleted when the test ends, pass or fail), bounded polling, and the
//! checks a user would run (pod readiness, `redis-cli`).

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};

/// Overrides where the cluster's kubeconfig is read from.
pub const KUBECONFIG_ENV: &str = "LOCAL_CLUSTER_KUBECONFIG";
/// Set (to anything) to keep test namespaces for inspection instead of deleting them.
pub const KEEP_NAMESPACES_ENV: &str = "KEEP_TEST_NAMESPACES";
/// Label on every test namespace: `kubectl delete ns -l redis-operator.dev/test=true` cleans up
/// after interrupted runs.
pub const TEST_LABEL: &str = "redis-operator.dev/test";
/// The node `hack/local-cluster` registers.
pub const NODE_NAME: &str = "local-node";
/// How long a pod may take to become Running and Ready on the (slow, 2-core) local cluster.
pub const POD_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `wait_for` re-checks.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `$LOCAL_CLUSTER_KUBECONFIG`, else `$LOCAL_CLUSTER_DIR/kubeconfig`, else the repository's
/// `.local-cluster/kubeconfig`, where `hack/local-cluster up` writes it.
pub fn kubeconfig_path() -> PathBuf {
    if let Some(path) = std::env::var_os(KUBECONFIG_ENV) {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("LOCAL_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local-cluster"));
    dir.join("kubeconfig")
}

async fn connect() -> Result<Client, String> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("unusable kubeconfig {}: {e}", path.display()))?;
    Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))
}

/// A client for the local cluster. Fails the test, saying what to run, unless the apiserver
/// answers and the node is Ready: these tests must never pass vacuously.
pub async fn client() -> Client {
    let hint = "start the cluster with `hack/local-cluster up`";
    let client = connect()
        .await
        .unwrap_or_else(|e| panic!("local cluster is not up: {e}; {hint}"));
    if let Err(e) = client.apiserver_version().await {
        panic!("local cluster is not up: the apiserver does not answer ({e}); {hint}");
    }
    let node = Api::<Node>::all(client.clone()).get_opt(NODE_NAME).await;
    let ready = node
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .is_some_and(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_deref());
            conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    if !ready {
        panic!(
            "local cluster is not up: node {NODE_NAME} is not Ready (is the node agent running? \
             see .local-cluster/logs/node-agent.log); {hint}"
        );
    }
    client
}

/// Polls `check` until it returns `Ok`, at most for `timeout`. `Err` carries what was observed;
/// on timeout the test fails naming `what` was awaited and that last observation.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let observed = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {observed}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A namespace for one test, labelled `redis-operator.dev/test=true`, deleted on drop (also
/// when the test panics).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let unique =
            nanos ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{unique:08x}");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("failed to create test namespace {name}: {e}"));
        Self {
            name,
            client: client.clone(),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_NAMESPACES_ENV).is_some() {
            eprintln!(
                "keeping test namespace {} ({KEEP_NAMESPACES_ENV} is set)",
                self.name
            );
            return;
        }
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be single-threaded or unwinding from a
        // panic: delete from a thread with its own runtime and client.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = connect().await?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("failed to delete test namespace {}: {e}", self.name),
            Err(_) => eprintln!(
                "failed to delete test namespace {}: cleanup panicked",
                self.name
            ),
        }
    }
}

pub fn uid<K: Resource>(object: &K) -> String {
    object.meta().uid.clone().unwrap_or_default()
}

pub fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
}

/// A one-line summary of a pod for failure messages: phase, readiness, container states.
pub fn describe(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let containers: Vec<String> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let state = match (state.running, state.waiting, state.terminated) {
                (Some(_), _, _) => "running".to_owned(),
                (_, Some(w), _) => format!("waiting {:?}: {:?}", w.reason, w.message),
                (_, _, Some(t)) => format!("terminated {} {:?}", t.exit_code, t.reason),
                _ => "unknown".to_owned(),
            };
            format!("{} {state} restarts={}", c.name, c.restart_count)
        })
        .collect();
    format!(
        "uid {} phase {:?} ready {} deleting {} [{}]",
        uid(pod),
        status.phase,
        is_ready(pod),
        pod.metadata.deletion_timestamp.is_some(),
        containers.join("; ")
    )
}

/// Waits until pod `name` is Running and Ready (and not terminating); returns it.
pub async fn ready_pod(ns: &TestNamespace, name: &str) -> Pod {
    ready_pod_not(ns, name, None).await
}

/// Like `ready_pod`, but the pod must not be the one with uid `old` (a replacement).
pub async fn ready_pod_not(ns: &TestNamespace, name: &str, old: Option<&str>) -> Pod {
    let api = ns.api::<Pod>();
    let what = match old {
        Some(old) => format!(
            "pod {}/{name} to be replaced (old uid {old}) and Ready",
            ns.name
        ),
        None => format!("pod {}/{name} to be Running and Ready", ns.name),
    };
    wait_for(POD_READY_TIMEOUT, &what, || {
        let api = api.clone();
        async move {
            let pod = api
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no such pod")?;
            if is_ready(&pod) && old.is_none_or(|old| uid(&pod) != old) {
                Ok(pod)
            } else {
                Err(describe(&pod))
            }
        }
    })
    .await
}

pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| panic!("pod {} has no IP", pod.name_any()))
}

/// The host pid of the pod's first container: the node agent reports it in the container ID.
pub fn container_pid(pod: &Pod) -> String {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .unwrap_or_else(|| panic!("no container ID: {}", describe(pod)));
    id.strip_prefix("node-agent://")
        .filter(|pid| pid.parse::<u32>().is_ok())
        .unwrap_or_else(|| panic!("container ID {id:?} names no pid"))
        .to_owned()
}

/// `/proc/<pid>/status` of a process, read once.
pub struct ProcStatus(pub String);

impl ProcStatus {
    pub fn read(pid: &str) -> Self {
        Self(std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap())
    }

    /// The words of the line that starts with `key` (`"Uid:"`), empty when there is none.
    pub fn field(&self, key: &str) -> Vec<&str> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }
}

/// `redis-cli -h <ip> <args>`: its stdout, or why it failed.
pub async fn try_redis_cli(ip: &str, args: &[&str]) -> Result<String, String> {
    try_redis_cli_with(ip, None, args).await
}

/// [`try_redis_cli`] logged in as `default` with `password`, passed in the environment
/// (`REDISCLI_AUTH`) so that it never shows on a command line.
pub async fn try_redis_cli_with(
    ip: &str,
    password: Option<&str>,
    args: &[&str],
) -> Result<String, String> {
    let mut command = tokio::process::Command::new("redis-cli");
    command.args(["-h", ip]).args(args);
    match password {
        Some(password) => command.env("REDISCLI_AUTH", password),
        None => command.env_remove("REDISCLI_AUTH"),
    };
    let output = command
        .output()
        .await
        .map_err(|e| format!("failed to run redis-cli (hack/local-cluster installs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned();
    // redis-cli exits 0 on server errors; those arrive as "ERR ..." on stdout.
    if !output.status.success()
        || stdout.starts_with("ERR")
        || stdout.starts_with("NOAUTH")
        || stdout.starts_with("WRONGPASS")
        || stdout.starts_with("AUTH failed")
        || stdout.starts_with("Could not connect")
    {
        return Err(format!(
            "redis-cli -h {ip} {args:?}: {} {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(stdout)
}

/// The password the operator generated for the instance a pod belongs to (key `password` of
/// the Secret `<instance>-auth`), if it generated one.
pub async fn generated_password(pod: &Pod) -> Option<String> {
    let instance = pod.labels().get("app.kubernetes.io/instance")?.clone();
    let namespace = pod.namespace()?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(connect().await.ok()?, &namespace);
    let secret = secrets.get_opt(&format!("{instance}-auth")).await.ok()??;
    let bytes = secret.data?.get("password")?.0.clone();
    String::from_utf8(bytes).ok()
}

/// `redis-cli` against a pod of an instance, logged in with the password the operator
/// generated for it (none when auth is off or the instance names its own users).
pub async fn try_pod_cli(pod: &Pod, args: &[&str]) -> Result<String, String> {
    let password = generated_password(pod).await;
    try_redis_cli_with(&pod_ip(pod), password.as_deref(), args).await
}

/// [`try_pod_cli`]; fails the test if it fails. Returns stdout.
pub async fn redis_cli(pod: &Pod, args: &[&str]) -> String {
    try_pod_cli(pod, args)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The API server's audit log (`hack/local-cluster` writes every request at Metadata level):
/// requests are counted from it exactly, never estimated.
pub struct AuditLog {
    path: PathBuf,
    start: u64,
}

/// One finished request, as the audit log records it.
#[derive(Debug, Clone)]
pub struct AuditedRequest {
    pub verb: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub user_agent: String,
    /// The HTTP status the API server answered with.
    pub code: u64,
    /// When the API server received the request.
    pub received: Option<k8s_openapi::jiff::Timestamp>,
}

impl AuditedRequest {
    /// A write the API server carried out: a write answered with a 2xx.
    pub fn landed(&self) -> bool {
        self.is_write() && (200..300).contains(&self.code)
    }

    /// create, update, patch, delete (and deletecollection).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

impl AuditLog {
    /// Requests recorded from now on.
    pub fn from_now() -> Self {
        let path = kubeconfig_path().with_file_name("logs").join("audit.log");
        let start = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("no audit log at {}: {e}", path.display()))
            .len();
        Self { path, start }
    }

    /// The operator's writes about `namespace` since [`AuditLog::from_now`], its Lease renewals
    /// left out, each as `verb resource/subresource name`.
    pub fn operator_writes(&self, namespace: &str) -> Vec<String> {
        self.requests("redis-operator/", namespace)
            .into_iter()
            .filter(|r| r.is_write() && r.resource != "leases")
            .map(|r| format!("{} {}/{} {}", r.verb, r.resource, r.subresource, r.name))
            .collect()
    }

    /// Finished requests since [`AuditLog::from_now`] whose user agent starts with `agent` and
    /// that concern `namespace`.
    pub fn requests(&self, agent: &str, namespace: &str) -> Vec<AuditedRequest> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.start)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(agent))
            })
            .filter(|e| e["objectRef"]["namespace"] == namespace)
            .map(|e| {
                let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                AuditedRequest {
                    verb: field(&e["verb"]),
                    resource: field(&e["objectRef"]["resource"]),
                    namespace: field(&e["objectRef"]["namespace"]),
                    name: field(&e["objectRef"]["name"]),
                    subresource: field(&e["objectRef"]["subresource"]),
                    user_agent: field(&e["userAgent"]),
                    code: e["responseStatus"]["code"].as_u64().unwrap_or_default(),
                    received: e["requestReceivedTimestamp"]
                        .as_str()
                        .and_then(|t| t.parse().ok()),
                }
            })
            .collect()
    }
}
