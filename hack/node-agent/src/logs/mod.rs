//! Container logs as the kubelet keeps them: a timestamped CRI-format file per container run.
//!
//! ```text
//! pods/<ns>_<name>_<uid>/<container>.log          raw stdout+stderr of every run (for people)
//! pods/<ns>_<name>_<uid>/<container>/<run>.log    one run, CRI format (served by kubelet_api)
//! ```
//! `<run>` is the container's restart count when that run started. Only the two newest run files
//! are kept: the kubelet, too, serves just the current and the previous instance.

pub mod capture;
pub mod read;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// Run files kept per container: the current run and the one before it (`previous=true`).
const RUNS_KEPT: usize = 2;

/// `<state>/pods/<namespace>_<name>_<uid>`: a pod's logs, kept after the pod is gone.
pub fn log_dir(state_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
}

/// Where one container's logs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogs {
    /// Every run's stdout and stderr as written, without timestamps.
    pub raw: PathBuf,
    /// Holds `<run>.log` per run.
    pub runs_dir: PathBuf,
}

impl ContainerLogs {
    pub fn new(log_dir: &Path, container: &str) -> Self {
        Self {
            raw: log_dir.join(format!("{container}.log")),
            runs_dir: log_dir.join(container),
        }
    }

    pub fn run_file(&self, run: i32) -> PathBuf {
        self.runs_dir.join(format!("{run}.log"))
    }

    /// The run files present, oldest first.
    pub fn runs(&self) -> Vec<(i32, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.runs_dir) else {
            return Vec::new();
        };
        let mut runs: Vec<(i32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let run = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some((run, e.path()))
            })
            .collect();
        runs.sort();
        runs
    }

    /// Removes all but the newest `RUNS_KEPT` run files.
    pub fn prune(&self) {
        let runs = self.runs();
        for (_, path) in &runs[..runs.len().saturating_sub(RUNS_KEPT)] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A pod whose container logs can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogs {
    pub uid: String,
    pub log_dir: PathBuf,
    /// Init and regular containers, as named in the spec.
    pub containers: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    /// Registration order: a name reused by a new pod maps to the newest.
    seq: u64,
    namespace: String,
    name: String,
    logs: PodLogs,
}

#[derive(Debug, Default)]
struct Inner {
    /// By uid.
    pods: HashMap<String, Entry>,
    next: u64,
    /// Run files a capture is still writing to: a follower stops once its file is not here.
    active: HashSet<PathBuf>,
}

/// What the log server needs to know of the pod workers: which pods run here, and which run
/// files are still being written. Shared by the pod manager, the captures and the server.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `pod`'s logs servable until [`Registry::remove_pod`].
    pub fn add_pod(&self, state_dir: &Path, pod: &Pod) {
        let (Some(uid), Some(namespace)) = (pod.uid(), pod.namespace()) else {
            return;
        };
        let name = pod.name_any();
        let spec = pod.spec.as_ref();
        let containers = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .chain(spec.map(|s| s.containers.as_slice()).unwrap_or_default())
            .map(|c| c.name.clone())
            .collect();
        let logs = PodLogs {
            log_dir: log_dir(state_dir, &namespace, &name, &uid),
            uid: uid.clone(),
            containers,
        };
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        let entry = Entry {
            seq,
            namespace,
            name,
            logs,
        };
        inner.pods.insert(uid, entry);
    }

    pub fn remove_pod(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    /// The newest pod registered under `namespace`/`name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodLogs> {
        self.lock()
            .pods
            .values()
            .filter(|e| e.namespace == namespace && e.name == name)
            .max_by_key(|e| e.seq)
            .map(|e| e.logs.clone())
    }

    pub fn set_active(&self, run_file: &Path, active: bool) {
        let mut inner = self.lock();
        if active {
            inner.active.insert(run_file.to_owned());
        } else {
            inner.active.remove(run_file);
        }
    }

    pub fn is_active(&self, run_file: &Path) -> bool {
        self.lock().active.contains(run_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": uid},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "main"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_recreated_pod_is_found_under_its_name_until_removed() {
        let registry = Registry::default();
        let state = Path::new("/state");
        registry.add_pod(state, &pod("old"));
        registry.add_pod(state, &pod("new"));
        let found = registry.pod("ns", "web").unwrap();
        assert_eq!(found.uid, "new");
        assert_eq!(found.log_dir, Path::new("/state/pods/ns_web_new"));
        assert_eq!(found.containers, ["init", "main"]);
        registry.remove_pod("new");
        assert_eq!(registry.pod("ns", "web").unwrap().uid, "old");
        registry.remove_pod("old");
        assert_eq!(registry.pod("ns", "web"), None);
        assert_eq!(registry.pod("other", "web"), None);
    }

    #[test]
    fn runs_are_listed_in_numeric_order_and_pruned_to_the_newest_two() {
        let dir = std::env::temp_dir().join(format!("node-agent-runs-{}", std::process::id()));
        let logs = ContainerLogs::new(&dir, "c");
        std::fs::create_dir_all(&logs.runs_dir).unwrap();
        for run in [0, 2, 10] {
            std::fs::write(logs.run_file(run), "").unwrap();
        }
        std::fs::write(logs.runs_dir.join("notes.txt"), "").unwrap();
        let runs: Vec<i32> = logs.runs().into_iter().map(|(r, _)| r).collect();
        assert_eq!(runs, [0, 2, 10]);
        logs.prune();
        let runs: Vec<i32> = logs.runs().into_iter().map(|(r, _)| r).collect();
        assert_eq!(runs, [2, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
