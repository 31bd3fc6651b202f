//! Operator-specific harness for the end-to-end tests, on top of `tests/common`: the CRD, an
//! operator process per test, and the checks a user would run (objects, hashes, Events).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use redis_operator::crd::RedisInstance;

use crate::common::{TestNamespace, kubeconfig_path, redis_cli, wait_for};

/// Installs the CRD (server-side apply, so concurrent tests agree) and waits until it serves.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = redis_operator::crd::definition();
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

/// The `(flag, value)` pairs of `defaults` whose flag `flags` does not set itself.
fn defaults(flags: &[&str], defaults: &[(&str, &str)]) -> Vec<String> {
    defaults
        .iter()
        .filter(|(flag, _)| !flags.contains(flag))
        .flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()])
        .collect()
}

/// Debian's libfaketime for multithreaded programs.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The operator binary, running against the local cluster and watching one namespace.
pub struct Operator {
    child: Child,
    pub log_path: PathBuf,
}

impl Operator {
    /// Starts `redis-operator run --namespace <ns>`; logs go to `target/e2e-logs/<ns>.<n>.log`.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// [`Operator::start`] with more flags (they override the defaults given here).
    pub fn start_with(namespace: &str, flags: &[&str]) -> Self {
        Self::start_inner(namespace, flags, None, &[])
    }

    /// [`Operator::start_with`] with more environment variables, e.g. `POD_NAMESPACE` as a
    /// Deployment sets it.
    pub fn start_with_env(namespace: &str, flags: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_inner(namespace, flags, None, env)
    }

    /// [`Operator::start_with`], its wall clock moved by `offset` (libfaketime's `+30s` or
    /// `-30s`; its monotonic clock is left alone), as on a machine whose clock is off.
    pub fn start_skewed(namespace: &str, flags: &[&str], offset: &str) -> Self {
        Self::start_inner(namespace, flags, Some(offset), &[])
    }

    fn start_inner(
        namespace: &str,
        flags: &[&str],
        clock_offset: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        // One file per process: operators of one test may run side by side.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = dir.join(format!("{namespace}.{n}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_redis-operator"));
        if let Some(offset) = clock_offset {
            // libfaketime preloaded into the operator itself (the `faketime` command would run
            // it as a child, which a signal to the command does not stop).
            assert!(
                Path::new(LIBFAKETIME).exists(),
                "{LIBFAKETIME} missing: hack/test installs Debian's faketime"
            );
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            // Port 0: the operator picks a free port and logs it, so parallel tests never clash.
            .args([
                "run",
                "--namespace",
                namespace,
                "--metrics-addr",
                "127.0.0.1:0",
                "--debug-addr",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json"])
            .args(defaults(flags, &[("--progress-deadline", "60")]))
            .args(flags)
            .args(defaults(
                flags,
                &[("--kubeconfig", &kubeconfig_path().to_string_lossy())],
            ))
            .env("RUST_LOG", "info,redis_operator=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redis-operator");
        Self { child, log_path }
    }

    /// Waits until this operator says it stands by because another holds the Lease.
    pub async fn wait_standby(&self) {
        wait_for(
            Duration::from_secs(30),
            "the operator to stand by",
            || async {
                let standby = self
                    .log_lines()
                    .iter()
                    .any(|l| l["message"] == "standby: another operator holds the lease");
                if standby {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            },
        )
        .await;
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// The exit status, once the process has ended by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
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

    /// The JSON log lines this operator process wrote so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until this operator has made `count` passes over its instance (each logs "Config
    /// hash comparison"), counting only after the first line with message `after`, if given.
    pub async fn wait_for_passes(&self, count: usize, after: Option<&str>) {
        let what = format!("{count} operator passes after {after:?}");
        wait_for(Duration::from_secs(60), &what, || {
            let lines = self.log_lines();
            async move {
                let start = match after {
                    Some(message) => lines.iter().position(|l| l["message"] == message),
                    None => Some(0),
                };
                let passes = start.map_or(0, |i| {
                    lines[i..]
                        .iter()
                        .filter(|l| l["message"] == "next step")
                        .count()
                });
                if passes >= count {
                    Ok(())
                } else {
                    Err(format!("{passes} passes"))
                }
            }
        })
        .await
    }

    /// Waits until this operator has logged `instance`'s actor hibernating `times` times.
    pub async fn wait_hibernated(&self, instance: &str, times: usize) {
        let what = format!("{instance}'s actor to hibernate {times} times");
        wait_for(Duration::from_secs(60), &what, || {
            let lines = self.log_lines();
            async move {
                let hibernated = lines
                    .iter()
                    .filter(|l| {
                        l["message"] == "instance actor hibernating" && l["instance"] == instance
                    })
                    .count();
                if hibernated >= times {
                    Ok(())
                } else {
                    Err(format!("{hibernated} times"))
                }
            }
        })
        .await
    }

    /// `/metrics` as text, from the address the operator logged.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await
    }

    /// The body of `path` on the operator's HTTP server.
    pub async fn get(&self, path: &str) -> String {
        http_get(&self.http_addr(), path).await
    }

    /// `host:port` of the operator's HTTP server, as it logged it.
    pub fn http_addr(&self) -> String {
        self.log_lines()
            .iter()
            .find_map(|l| l["addr"].as_str().map(str::to_owned))
            .expect("the operator logs the address it serves on")
    }

    /// The body of `path` (`/logs/...`, `/instances`) on the operator's loopback listener.
    pub async fn debug_get(&self, path: &str) -> String {
        http_get(&self.debug_addr(), path).await
    }

    /// `host:port` of the operator's loopback listener for `/instances` and `/logs`.
    pub fn debug_addr(&self) -> String {
        self.log_lines()
            .iter()
            .find_map(|l| l["debug_addr"].as_str().map(str::to_owned))
            .expect("the operator logs the address of its debug listener")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// A minimal HTTP/1.0 GET, enough for the operator's own endpoints; panics if nothing listens.
pub async fn http_get(addr: &str, path: &str) -> String {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from the operator: {e}"))
}

/// [`http_get`] that reports a server not (yet) listening instead of panicking.
pub async fn try_http_get(addr: &str, path: &str) -> Result<String, String> {
    http_get_status(addr, path).await.map(|(_, body)| body)
}

/// The status code and body of `GET path`, or why the server could not be asked.
pub async fn http_get_status(addr: &str, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    // "HTTP/1.1 404 Not Found"
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// A client, the CRD installed, a fresh namespace named from `prefix`, and an operator
/// watching it started with `flags`.
pub async fn setup(prefix: &str, flags: &[&str]) -> (Client, TestNamespace, Operator) {
    let client = crate::common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let operator = Operator::start_with(&ns.name, flags);
    (client, ns, operator)
}

/// Waits (at most `timeout`) until the instance `name` satisfies `ok`; returns it.
pub async fn instance_where(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&RedisInstance) -> bool + Clone,
) -> RedisInstance {
    let api = ns.api::<RedisInstance>();
    wait_for(timeout, what, || {
        let (api, ok) = (api.clone(), ok.clone());
        async move {
            let ri = api.get(name).await.map_err(|e| e.to_string())?;
            match ok(&ri) {
                true => Ok(ri),
                false => Err(format!("{:?}", ri.status)),
            }
        }
    })
    .await
}

/// [`setup`] with the operator's wall clock moved by `offset` (see [`Operator::start_skewed`]).
pub async fn setup_skewed(
    prefix: &str,
    flags: &[&str],
    offset: &str,
) -> (Client, TestNamespace, Operator) {
    let client = crate::common::client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let operator = Operator::start_skewed(&ns.name, flags, offset);
    (client, ns, operator)
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

/// The instance's revision ConfigMaps (`<instance>-config-<hash>`, the ones pods mount), by
/// name.
pub async fn revision_config_maps(ns: &TestNamespace, instance: &str) -> Vec<ConfigMap> {
    let shared = format!("{instance}-config");
    let mut found: Vec<ConfigMap> = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|cm| cm.name_any().starts_with(&format!("{shared}-")))
        .collect();
    found.sort_by_key(|cm| cm.name_any());
    found
}

/// Waits (at most 120 s) until the instance's revision ConfigMaps are exactly `names`.
pub async fn wait_revision_config_maps(ns: &TestNamespace, instance: &str, names: &[&str]) {
    wait_for(
        Duration::from_secs(120),
        "the revision ConfigMaps nothing mounts to be collected",
        || async {
            let left: Vec<String> = revision_config_maps(ns, instance)
                .await
                .iter()
                .map(|cm| cm.name_any())
                .collect();
            if left == names {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}

/// The ConfigMap a pod's config volume mounts.
pub fn mounted_config_map(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == "config"))
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| panic!("pod {} mounts no config ConfigMap", pod.name_any()))
}

/// `redis.conf` of the ConfigMap `name`.
pub async fn config_map_text(ns: &TestNamespace, name: &str) -> String {
    let cm = ns.api::<ConfigMap>().get(name).await.unwrap();
    cm.data
        .unwrap_or_default()
        .remove("redis.conf")
        .expect("redis.conf key")
}

/// What `sha256sum` prints for `text`, as a user would check the annotation.
pub fn sha256sum(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Events on the instance, as (type, reason, note).
pub async fn instance_events(ns: &TestNamespace, instance: &str) -> Vec<(String, String, String)> {
    events_about(ns, instance)
        .await
        .into_iter()
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

/// [`instance_events`] once one of them matches `wanted` (at most 10 s): the operator posts
/// Events in the background, so one can reach the API server after the status write it goes
/// with.
pub async fn instance_events_once(
    ns: &TestNamespace,
    instance: &str,
    wanted: impl Fn(&(String, String, String)) -> bool,
) -> Vec<(String, String, String)> {
    wait_for(Duration::from_secs(10), "the Event wanted", || async {
        let events = instance_events(ns, instance).await;
        match events.iter().any(&wanted) {
            true => Ok(events),
            false => Err(format!("{events:?}")),
        }
    })
    .await
}

/// Reasons of the Events on the instance.
pub async fn event_reasons(ns: &TestNamespace, instance: &str) -> Vec<String> {
    instance_events(ns, instance)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect()
}

/// `CONFIG GET <name>` on the pod: the value.
pub async fn config_get(pod: &Pod, name: &str) -> String {
    let out = redis_cli(pod, &["CONFIG", "GET", name]).await;
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(name),
        "CONFIG GET {name} answered {out:?}"
    );
    lines.next().unwrap_or_default().to_owned()
}

/// Runs the kubectl that `hack/build-controlplane` built (as a user would) against the local
/// cluster; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = kubectl_output(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs that kubectl and returns its output, whether it succeeded or not.
pub fn kubectl_output(args: &[&str]) -> std::process::Output {
    run_cached_binary("kubernetes-v1.37.2/kubectl", args, &[])
}

/// Runs the helm that `hack/build-controlplane` built (the version `hack/lib/common.sh` pins)
/// against the local cluster; returns stdout.
pub fn helm(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs that helm and returns its output, whether it succeeded or not. Its configuration,
/// cache and data directories are under target/, so tests never touch the user's.
pub fn helm_output(args: &[&str]) -> std::process::Output {
    let home = repo_path("target/helm-home");
    let env = [
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_DATA_HOME", home.join("data")),
    ];
    run_cached_binary("helm-v4.3.2/helm", args, &env)
}

/// The chart of deploy/helm/, as `helm template` renders it with the CRD, released as
/// `redis-operator` in the namespace `redis-operator`; `values` are `--set` assignments.
pub fn helm_template(chart: &std::path::Path, values: &[&str]) -> String {
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "template",
        "redis-operator",
        &chart,
        "--namespace",
        "redis-operator",
        "--include-crds",
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    helm(&args)
}

/// A path in the repository.
pub fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The path of a binary that `hack/build-controlplane` put in the cache.
pub fn cached_binary(binary: &str) -> PathBuf {
    let cache = std::env::var_os("REDIS_OPERATOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/redis-operator")
        });
    cache.join(binary)
}

/// Runs a binary that `hack/build-controlplane` put in the cache, with the local cluster's
/// kubeconfig.
fn run_cached_binary(binary: &str, args: &[&str], env: &[(&str, PathBuf)]) -> std::process::Output {
    let binary = cached_binary(binary);
    Command::new(&binary)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}); hack/build-controlplane builds it",
                binary.display()
            )
        })
}

/// Every pod uid seen under each pod name, from a watch started at [`PodHistory::start`]: the
/// restarts that really happened, to hold the recorded count against.
pub struct PodHistory {
    seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>>,
    task: tokio::task::JoinHandle<()>,
    api: Api<Pod>,
}

impl PodHistory {
    /// Starts watching the namespace's pods; returns once the first list is recorded.
    pub async fn start(ns: &TestNamespace) -> Self {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let record = seen.clone();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let api = ns.api::<Pod>();
        let watched = api.clone();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed_tx);
            let mut events = std::pin::pin!(watcher(watched, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let mut seen: std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> =
                    record.lock().unwrap();
                seen.entry(pod.name_any())
                    .or_default()
                    .insert(pod.uid().unwrap_or_default());
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), listed_rx).await;
        Self { seen, task, api }
    }

    /// Pod name -> times it was replaced since the watch began. Waits first until the watch has
    /// seen every pod that exists now, since a busy API server may deliver it late.
    pub async fn restarts(&self) -> BTreeMap<String, usize> {
        wait_for(
            Duration::from_secs(30),
            "the pod watch to catch up",
            || async {
                let pods = self
                    .api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let seen = self.seen.lock().unwrap().clone();
                let missing: Vec<_> = pods
                    .items
                    .iter()
                    .filter(|p| {
                        !seen
                            .get(&p.name_any())
                            .is_some_and(|uids| uids.contains(&p.uid().unwrap_or_default()))
                    })
                    .map(|p| p.name_any())
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not yet seen: {missing:?}"))
                }
            },
        )
        .await;
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(name, uids)| (name.clone(), uids.len() - 1))
            .collect()
    }
}

impl Drop for PodHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many times Events of `reason` were posted on the instance: repeats are aggregated into
/// one Event whose `series.count` says how often it happened.
pub async fn event_count(ns: &TestNamespace, instance: &str, reason: &str) -> i64 {
    events_about(ns, instance)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.map_or(1, |s| i64::from(s.count)))
        .sum()
}

/// [`event_count`] once at least `at_least` are there (at most 10 s): the operator posts Events
/// in the background, so one can reach the API server after the status write it goes with.
pub async fn event_count_once(
    ns: &TestNamespace,
    instance: &str,
    reason: &str,
    at_least: i64,
) -> i64 {
    let what = format!("{at_least} {reason} Event(s)");
    wait_for(Duration::from_secs(10), &what, || async {
        match event_count(ns, instance, reason).await {
            n if n >= at_least => Ok(n),
            n => Err(format!("{n} so far")),
        }
    })
    .await
}

/// Waits until the instance has recorded `restarts` restarts, none is in flight, and it runs
/// Ready on its current generation; returns it.
pub async fn wait_restarts(ns: &TestNamespace, name: &str, restarts: i64) -> RedisInstance {
    let api = ns.api::<RedisInstance>();
    wait_for(
        Duration::from_secs(180),
        &format!("{name} to settle after {restarts} restarts"),
        || {
            let api = api.clone();
            async move {
                let ri = api.get(name).await.map_err(|e| e.to_string())?;
                let status = ri.status.clone().unwrap_or_default();
                let settled = status.restarts == restarts
                    && status.rollout.is_none()
                    && status.observed_generation == ri.metadata.generation
                    && status.phase.map(|p| p.as_str()) == Some("Running");
                if settled {
                    Ok(ri)
                } else {
                    Err(format!("{status:?}"))
                }
            }
        },
    )
    .await
}

/// Deletes the Events about `instance` with `reason`, as if they had never been posted.
pub async fn delete_events(ns: &TestNamespace, instance: &str, reason: &str) {
    use k8s_openapi::api::events::v1::Event;
    for event in events_about(ns, instance).await {
        if event.reason.as_deref() == Some(reason) {
            let name = event.metadata.name.unwrap_or_default();
            ns.api::<Event>()
                .delete(&name, &Default::default())
                .await
                .unwrap();
        }
    }
    assert_eq!(event_count(ns, instance, reason).await, 0);
}

/// Events in the namespace about the object named `name`.
pub async fn events_about(
    ns: &TestNamespace,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    use k8s_openapi::api::events::v1::Event;
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}
