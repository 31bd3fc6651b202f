//! A pod's sandbox: a sleeping process holding the pod's network and UTS namespaces so they
//! outlive container restarts, and the pid records that let a later run kill leftovers.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::host;
use crate::network::{self, Network};

/// Creating the sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `unshare` could not be started.
    #[error("failed to start the pod sandbox: {0}")]
    Spawn(#[source] std::io::Error),
    /// The sandbox process died or never entered its namespaces.
    #[error("failed to start the pod sandbox: {0}")]
    NotStarted(String),
    /// Setting the hostname failed.
    #[error("failed to set the pod hostname: {0}")]
    Hostname(#[source] host::Error),
    /// The network could not be connected.
    #[error(transparent)]
    Network(#[from] network::Error),
    /// The pid record could not be written; without it a crash would leak processes.
    #[error("failed to record pid in {0}: {1}")]
    Record(String, #[source] std::io::Error),
}

const PIDS_FILE: &str = "pids";
/// Linux limits hostnames to 64 bytes; the kubelet truncates pod hostnames to 63.
const MAX_HOSTNAME: usize = 63;

#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    pub pid: u32,
    pub ip: Ipv4Addr,
    veth: String,
}

impl Sandbox {
    pub async fn create(
        network: &Network,
        ip: Ipv4Addr,
        hostname: &str,
        pod_dir: &Path,
    ) -> Result<Self, Error> {
        let child = Command::new("unshare")
            .args(["--net", "--uts", "--", "sleep", "infinity"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::Spawn)?;
        let pid = child
            .id()
            .ok_or_else(|| Error::NotStarted("exited at once".into()))?;
        record_pid(pod_dir, pid)?;
        let mut sandbox = Self {
            child,
            pid,
            ip,
            veth: network.veth_name(ip),
        };
        if let Err(e) = sandbox.configure(network, hostname).await {
            sandbox.destroy(network).await;
            return Err(e);
        }
        Ok(sandbox)
    }

    async fn configure(&mut self, network: &Network, hostname: &str) -> Result<(), Error> {
        self.wait_for_exec().await?;
        let hostname: String = hostname
            .trim_end_matches('.')
            .chars()
            .take(MAX_HOSTNAME)
            .collect();
        host::run(
            "nsenter",
            &[
                "--target",
                &self.pid.to_string(),
                "--uts",
                "--",
                "sh",
                "-c",
                r#"printf %s "$1" >/proc/sys/kernel/hostname"#,
                "sh",
                &hostname,
            ],
        )
        .await
        .map_err(Error::Hostname)?;
        self.veth = network.attach(self.pid, self.ip).await?;
        Ok(())
    }

    /// `unshare` enters the new namespaces before it execs `sleep`; entering them earlier
    /// would enter the host's.
    async fn wait_for_exec(&mut self) -> Result<(), Error> {
        for _ in 0..500 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NotStarted(format!("unshare exited: {status}")));
            }
            let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid));
            if exe.is_ok_and(|p| p.file_name().is_some_and(|n| n == "sleep")) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Error::NotStarted("unshare did not exec within 5s".into()))
    }

    pub async fn destroy(mut self, network: &Network) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = self.child.wait().await;
        network.detach(&self.veth).await;
    }
}

/// Appends `pid` with its start time to the pod's record.
pub fn record_pid(pod_dir: &Path, pid: u32) -> Result<(), Error> {
    let path = pod_dir.join(PIDS_FILE);
    let fail = |e| Error::Record(path.display().to_string(), e);
    let start = host::start_time(pid).unwrap_or(0);
    std::fs::create_dir_all(pod_dir).map_err(fail)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    writeln!(file, "{pid} {start}").map_err(fail)
}

/// Kills the process groups recorded for a pod whose pid still names the same process, and
/// waits (briefly) for them to go. Returns how many were alive.
pub async fn kill_recorded(pod_dir: &Path) -> usize {
    let path = pod_dir.join(PIDS_FILE);
    let Ok(records) = std::fs::read_to_string(&path) else {
        return 0;
    };
    let mut killed = Vec::new();
    for line in records.lines() {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start))) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        if host::start_time(pid) == Some(start) {
            let target = Pid::from_raw(pid as i32);
            let _ = killpg(target, Signal::SIGKILL);
            let _ = kill(target, Signal::SIGKILL);
            killed.push((pid, start));
        }
    }
    // Namespaces go away only when their last process has exited.
    for _ in 0..100 {
        if killed.iter().all(|(pid, start)| !alive(*pid, *start)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&path);
    killed.len()
}

/// Alive and not a zombie (a zombie has already released its namespaces).
fn alive(pid: u32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    host::start_time(pid) == Some(start) && state != Some("Z")
}
