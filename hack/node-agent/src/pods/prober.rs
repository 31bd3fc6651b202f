//! Runs a container's startup, readiness and liveness probes on their schedules and publishes
//! the verdicts for the pod worker.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::probe::{Action, ProbeSpec, Tracker};

/// A container's probes; `None` where the container defines none.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub startup: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
}

/// Where probes are aimed.
#[derive(Debug, Clone)]
pub struct Target {
    pub pod_ip: Ipv4Addr,
    /// The container's main process: exec probes join its namespaces, root and working dir.
    pub pid: u32,
    pub env: Vec<(String, String)>,
    /// The uid and gid of a container of an image, which exec probes take too.
    pub user: Option<(u32, u32)>,
}

/// The verdicts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub started: bool,
    pub ready: bool,
    /// Set when a startup or liveness probe failed for good: the container must be restarted.
    pub failed: Option<String>,
}

/// Owns the probe task; dropping it stops the probes.
#[derive(Debug)]
pub struct Prober {
    pub verdict: watch::Receiver<Verdict>,
    task: JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    /// Starts probing a container that started at `started_at`.
    pub fn spawn(probes: Probes, target: Target, started_at: Instant) -> Self {
        let initial = Verdict {
            started: probes.startup.is_none(),
            ready: probes.startup.is_none() && probes.readiness.is_none(),
            failed: None,
        };
        let (tx, verdict) = watch::channel(initial);
        let task = tokio::spawn(run(probes, target, started_at, tx));
        Self { verdict, task }
    }
}

async fn run(probes: Probes, target: Target, started_at: Instant, tx: watch::Sender<Verdict>) {
    if let Some(startup) = &probes.startup {
        // Until the startup probe passes, readiness and liveness are not checked.
        let passed = probe_loop(startup, &target, started_at, false, |passing, message| {
            if passing {
                return true;
            }
            if let Some(message) = message {
                tx.send_modify(|v| v.failed = Some(message));
                return true;
            }
            false
        })
        .await;
        if !passed {
            return;
        }
        tx.send_modify(|v| {
            v.started = true;
            v.ready = probes.readiness.is_none();
        });
    }
    let readiness = async {
        if let Some(spec) = &probes.readiness {
            probe_loop(spec, &target, started_at, false, |passing, _| {
                tx.send_if_modified(|v| std::mem::replace(&mut v.ready, passing) != passing);
                false
            })
            .await;
        }
    };
    let liveness = async {
        if let Some(spec) = &probes.liveness {
            probe_loop(spec, &target, started_at, true, |passing, message| {
                if !passing && let Some(message) = message {
                    tx.send_modify(|v| v.failed = Some(message));
                    return true;
                }
                false
            })
            .await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Probes every period from `initialDelaySeconds` after the container start. After each result
/// `on_result` gets the verdict and, once `failureThreshold` consecutive failures are reached, a
/// message; it returns true to stop. Returns the final verdict.
async fn probe_loop(
    spec: &ProbeSpec,
    target: &Target,
    started_at: Instant,
    initially_passing: bool,
    mut on_result: impl FnMut(bool, Option<String>) -> bool,
) -> bool {
    let mut tracker = Tracker::new(spec, initially_passing);
    let mut ticker = tokio::time::interval_at(started_at + spec.initial_delay, spec.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = check(&spec.action, target, spec.timeout).await;
        let passing = tracker.record(result.is_ok());
        let gave_up = match &result {
            Err(reason) => {
                tracing::debug!(kind = %spec.kind, pid = target.pid, %reason, "probe failed");
                tracker
                    .exhausted()
                    .then(|| format!("{} probe failed: {reason}", spec.kind))
            }
            Ok(()) => None,
        };
        if on_result(passing, gave_up) {
            return passing;
        }
    }
}

/// One check; `Err` carries why it failed.
async fn check(action: &Action, target: &Target, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        match action {
            Action::Exec(command) => exec(command, target).await,
            Action::Tcp { host, port } => {
                let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
                TcpStream::connect((host.as_str(), *port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
            }
            Action::Http {
                host,
                port,
                path,
                headers,
            } => {
                let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
                http_get(&host, *port, path, headers).await
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {}s", timeout.as_secs())))
}

/// Runs the command in the container's mount, network and UTS namespaces, root and working
/// directory, as its user, with its environment.
async fn exec(command: &[String], target: &Target) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec probe has an empty command".into());
    };
    let mut nsenter = Command::new("nsenter");
    nsenter.args([
        "--target",
        &target.pid.to_string(),
        "--mount",
        "--net",
        "--uts",
        "--root",
        "--wd",
    ]);
    if let Some((uid, gid)) = target.user {
        nsenter.args(["--setuid", &uid.to_string(), "--setgid", &gid.to_string()]);
    }
    let output = nsenter
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("failed to run nsenter: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let mut out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(format!(
            "command {command:?} exited with {}: {}",
            output.status,
            out.trim()
        ))
    }
}

/// A minimal HTTP/1.0 GET: any 2xx or 3xx status passes, as with the kubelet.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let mut request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: node-agent-probe\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}
