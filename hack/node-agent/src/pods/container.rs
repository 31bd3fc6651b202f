//! One container: a process in the pod's namespaces (under the host's root, or chrooted into its
//! image's root as its user) with its volumes bind-mounted, its exit, a graceful stop, and the
//! kubelet's restart backoff.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::prober::{Prober, Probes, Target};
use super::sandbox;
use super::security::Identity;
use super::status::ContainerView;
use crate::host;
use crate::logs::{self, ContainerLogs};

/// A bind mount into the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The root filesystem of a container of an OCI image, and who runs in it.
#[derive(Debug, Clone)]
pub struct RootFs {
    /// The image unpacked: the read-only lower layer, shared by every container of the image.
    pub image: PathBuf,
    pub identity: Identity,
}

/// Everything needed to start the container process.
#[derive(Debug)]
pub struct Launch {
    pub sandbox_pid: u32,
    pub pod_ip: Ipv4Addr,
    pub pod_dir: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub mounts: Vec<Mount>,
    /// The image's root, for an OCI image; `None`: the host's root.
    pub root: Option<RootFs>,
    /// Who a process under the host's root runs as (an image's root carries its own).
    pub host_identity: Identity,
    /// What the pod's status reports as the container's imageID.
    pub image_id: String,
    /// An empty directory no mount target covers; see `START_SCRIPT` and `IMAGE_START_SCRIPT`.
    pub stage: PathBuf,
    pub logs: ContainerLogs,
    /// Where the run's log capture reports that it still writes.
    pub log_registry: Arc<logs::Registry>,
    pub probes: Probes,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: a failed run's message is the tail
    /// of its output.
    pub fallback_to_logs: bool,
}

/// Runs inside a fresh private mount namespace (inside the pod's network namespace), then
/// execs the command, so the container's pid is this script's. Arguments: the staging
/// directory, the mount sources, `--`, (target, ro|rw) pairs, `--`, working dir, then the user:
/// uid, gid, the fsGroup (or empty), yes|no (no_new_privs), ro|rw (the root), yes|no (drop
/// every capability), the host's setpriv, then argv.
///
/// Containers share the host's root, so a volume mounted at, say, /work would hide sources
/// under /work (such as this repository's state directory) from the mounts after it. Every
/// source is therefore first bind-mounted to `<stage>/<i>`, which no target covers, and the
/// targets are mounted from there. A read-only root is the host's root remounted read-only in
/// this namespace only; the volumes, mounted on it, keep their own mode. A user other than
/// root is taken on with `setpriv` as the last step, after the mounts that need root.
const START_SCRIPT: &str = r#"set -e
stage=$1; shift
i=0
while [ "$1" != "--" ]; do mount --bind "$1" "$stage/$i"; i=$((i + 1)); shift; done
shift
i=0
while [ "$1" != "--" ]; do
  if [ -d "$stage/$i" ]; then mkdir -p "$1"; else mkdir -p "$(dirname "$1")"; [ -e "$1" ] || : >"$1"; fi
  mount --bind "$stage/$i" "$1"
  if [ "$2" = ro ]; then mount -o remount,bind,ro "$1"; fi
  i=$((i + 1)); shift 2
done
shift
if [ "$i" -gt 0 ]; then umount -l "$stage"/*; fi
mkdir -p "$1"
cd "$1"
uid=$2 gid=$3 fs_group=$4 no_new_privs=$5 root_mode=$6 drop_caps=$7 setpriv=$8
shift 8
if [ "$root_mode" = ro ]; then mount -o remount,bind,ro /; fi
if [ "$uid:$gid:$fs_group:$no_new_privs:$drop_caps" = "0:0::no:no" ]; then exec "$@"; fi
if [ -n "$fs_group" ]; then groups=--groups=$fs_group; else groups=--clear-groups; fi
set -- --reuid="$uid" --regid="$gid" "$groups" -- "$@"
if [ "$no_new_privs" = yes ]; then set -- --no-new-privs "$@"; fi
if [ "$drop_caps" = yes ]; then set -- --inh-caps=-all --bounding-set=-all "$@"; fi
exec "$setpriv" "$@"
"#;

/// Like `START_SCRIPT`, for a container of an OCI image. Arguments: the staging directory, the
/// unpacked image, ro|rw (the root), uid, gid, yes|no (no_new_privs), the host's PATH, working
/// dir, (source, target, ro|rw) triples, `--`, argv.
///
/// The root is an overlay: the shared unpacked image under a tmpfs layer of this run, which
/// goes away with the mount namespace, so each run starts from the image as a runtime's
/// container does, and mount points never touch the image. As a runtime does, it gets /proc,
/// a read-only /sys and a small /dev (null, zero, full, random, urandom, tty, shm): a static
/// glibc binary reads /dev/urandom for randomness. Mount targets lie under the root,
/// so sources need no staging. `unshare --root` chroots (from the host's tools, as the image
/// holds no shell) and becomes the user, then execs the entrypoint under the root: a binary
/// that needs a file the image lacks (a libc, a CA bundle) fails there.
const IMAGE_START_SCRIPT: &str = r#"set -e
layer=$1 image=$2 root_mode=$3 uid=$4 gid=$5 no_new_privs=$6 wd=$8
had_path=${PATH+yes} container_path=${PATH-}
PATH=$7
shift 8
mount -t tmpfs -o mode=0755 container-layer "$layer"
mkdir "$layer/upper" "$layer/work" "$layer/root"
mount -t overlay overlay -o "lowerdir=$image,upperdir=$layer/upper,workdir=$layer/work" "$layer/root"
root=$layer/root
mkdir -p "$root/proc" "$root/dev" "$root/sys"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,mode=0755,size=64k dev "$root/dev"
for device in null zero full random urandom tty; do
  : >"$root/dev/$device"; mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir "$root/dev/shm" "$root/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"; ln -s /proc/self/fd/1 "$root/dev/stdout"; ln -s /proc/self/fd/2 "$root/dev/stderr"
while [ "$1" != "--" ]; do
  if [ -d "$1" ]; then mkdir -p "$root$2"; else mkdir -p "$(dirname "$root$2")"; [ -e "$root$2" ] || : >"$root$2"; fi
  mount --bind "$1" "$root$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
  shift 3
done
shift
mkdir -p "$root$wd"
if [ "$root_mode" = ro ]; then mount -o remount,bind,ro "$root"; fi
set -- "$(command -v unshare)" --root="$root" --wd="$wd" --setuid "$uid" --setgid "$gid" -- "$@"
if [ "$no_new_privs" = yes ]; then set -- "$(command -v setpriv)" --no-new-privs "$@"; fi
if [ "$had_path" = yes ]; then PATH=$container_path; else unset PATH; fi
exec "$@"
"#;

/// Restart delays: none for the first restart, then `initial` doubling up to `max`; reset once
/// a container ran for `reset_after`. The kubelet uses 10s, 300s and 10 minutes.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

#[derive(Debug, Clone)]
struct Backoff {
    config: BackoffConfig,
    next: Duration,
}

impl Backoff {
    fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.config.reset_after {
            self.next = Duration::ZERO;
        }
        let delay = self.next;
        self.next = if delay.is_zero() {
            self.config.initial
        } else {
            (delay * 2).min(self.config.max)
        };
        delay
    }
}

/// The kubelet's limits on a termination message taken from the logs: the last 80 lines,
/// and of those the last 2048 bytes.
const MESSAGE_LINES: u64 = 80;
const MESSAGE_BYTES: usize = 2048;
/// How long an exited run's output may take to reach its run file (the pipes close with the
/// process group; a background process that keeps them open is not waited for).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Whether a run's termination message comes from its output: the kubelet's rule for
/// `FallbackToLogsOnError` is a non-zero exit code. Under `File` (the default) the message
/// would come from the file at `terminationMessagePath`, which this agent does not support,
/// so it stays unset.
fn falls_back_to_logs(fallback_to_logs: bool, exit_code: i32) -> bool {
    fallback_to_logs && exit_code != 0
}

/// The last `MESSAGE_LINES` lines of a run file's output (both streams), cut to their last
/// `MESSAGE_BYTES` bytes as the kubelet's ring buffer does; a character split by the cut is
/// dropped.
fn output_tail(run_file: &Path) -> std::io::Result<String> {
    let opts = logs::read::LogOptions {
        tail_lines: Some(MESSAGE_LINES),
        ..logs::read::LogOptions::default()
    };
    let mut reader = logs::read::LogReader::open(run_file, opts)?;
    let mut output = Vec::new();
    loop {
        let chunk = reader.read_more()?;
        if chunk.is_empty() {
            break;
        }
        output.extend_from_slice(&chunk);
    }
    Ok(keep_end(&output, MESSAGE_BYTES))
}

/// The last `max` bytes of `bytes` as text, without a leading partial UTF-8 character.
fn keep_end(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // UTF-8 continuation bytes are 0b10xxxxxx.
    while start < bytes.len() && start > 0 && bytes[start] & 0xC0 == 0x80 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// How a run of the container ended.
#[derive(Debug, Clone)]
pub struct Termination {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
    /// Killed because a liveness or startup probe failed: restarted even under `OnFailure`.
    pub probe_failure: bool,
}

impl Termination {
    fn state(&self) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: self.exit_code,
                signal: self.signal,
                reason: Some(self.reason.clone()),
                message: self.message.clone(),
                started_at: Some(Time(self.started_at)),
                finished_at: Some(Time(self.finished_at)),
                container_id: self.container_id.clone(),
            }),
            ..ContainerState::default()
        }
    }
}

#[derive(Debug)]
enum State {
    /// Not running and not run yet (or failed to start); try at `retry_at`.
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Instant,
    },
    Running {
        child: Child,
        pid: u32,
        started_at: Timestamp,
        prober: Prober,
        /// Copies the run's output into `run_file`; ends when the pipes close.
        capture: JoinHandle<()>,
        run_file: PathBuf,
        fallback_to_logs: bool,
    },
    /// Ended; restarted at `restart_at` if the restart policy says so.
    Exited {
        termination: Termination,
        restart_at: Option<Instant>,
        delay: Duration,
    },
}

/// What `poll` noticed.
#[derive(Debug)]
pub enum Event {
    Exited,
    /// A liveness or startup probe gave up: the worker stops the container.
    ProbeFailed(String),
}

#[derive(Debug)]
pub struct ContainerRuntime {
    pub name: String,
    image: String,
    image_id: String,
    pub sidecar: bool,
    restart_count: i32,
    state: State,
    last_termination: Option<Termination>,
    /// It ran under an earlier agent run, so its first start here is a restart.
    restored_run: bool,
    backoff: Backoff,
}

impl ContainerRuntime {
    /// `previous` is the container's status from before an agent restart: its restart count
    /// carries on, and a container that was running counts as killed (the restart reclaimed it).
    pub fn new(
        name: &str,
        image: &str,
        sidecar: bool,
        previous: Option<&ContainerStatus>,
        backoff: BackoffConfig,
    ) -> Self {
        let ran = previous
            .and_then(|s| s.state.as_ref())
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
        let now = Timestamp::now();
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            sidecar,
            restart_count: previous.map_or(0, |s| s.restart_count),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
                retry_at: Instant::now(),
            },
            last_termination: ran.then(|| Termination {
                exit_code: 137,
                signal: Some(9),
                reason: "Error".into(),
                message: Some("killed when the node agent restarted".into()),
                started_at: now,
                finished_at: now,
                container_id: None,
                probe_failure: false,
            }),
            restored_run: ran,
            backoff: Backoff {
                config: backoff,
                next: Duration::ZERO,
            },
        }
    }

    /// Reports why the container cannot start yet; the worker retries at `retry_at`.
    pub fn wait(&mut self, reason: &str, message: Option<String>, retry_in: Duration) {
        if matches!(self.state, State::Running { .. }) {
            return;
        }
        self.state = State::Waiting {
            reason: reason.into(),
            message,
            retry_at: Instant::now() + retry_in,
        };
    }

    pub fn waiting_reason(&self) -> Option<&str> {
        match &self.state {
            State::Waiting { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Waiting (or backed off) and its time has come.
    pub fn is_due(&self, now: Instant) -> bool {
        match &self.state {
            State::Waiting { retry_at, .. } => *retry_at <= now,
            State::Exited { restart_at, .. } => restart_at.is_some_and(|at| at <= now),
            State::Running { .. } => false,
        }
    }

    pub fn termination(&self) -> Option<&Termination> {
        match &self.state {
            State::Exited { termination, .. } => Some(termination),
            _ => None,
        }
    }

    /// A delay for the next start attempt after a failure to start.
    pub fn retry_delay(&mut self) -> Duration {
        self.backoff
            .delay(Duration::ZERO)
            .max(Duration::from_secs(1))
    }

    /// Notices an exit or a failed probe.
    pub async fn poll(&mut self) -> Option<Event> {
        let State::Running { child, prober, .. } = &mut self.state else {
            return None;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.finish(Some(status), false).await;
            return Some(Event::Exited);
        }
        prober
            .verdict
            .borrow()
            .failed
            .clone()
            .map(Event::ProbeFailed)
    }

    /// Marks the container exited with `status` (None: unknown).
    async fn finish(&mut self, status: Option<ExitStatus>, probe_failure: bool) {
        let State::Running {
            pid,
            started_at,
            capture,
            run_file,
            fallback_to_logs,
            ..
        } = &mut self.state
        else {
            return;
        };
        let (exit_code, signal) = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (code, None),
                // Container runtimes report death by signal N as exit code 128+N.
                (None, Some(sig)) => (128 + sig, Some(sig)),
                (None, None) => (-1, None),
            },
            None => (-1, None),
        };
        let message = if falls_back_to_logs(*fallback_to_logs, exit_code) {
            // The run's last lines may still be on their way from the pipes.
            let _ = tokio::time::timeout(OUTPUT_DRAIN, capture).await;
            match output_tail(run_file) {
                Ok(tail) => Some(tail),
                Err(e) => Some(format!(
                    "Error on reading termination message from logs: {e}"
                )),
            }
        } else {
            None
        };
        let termination = Termination {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at: *started_at,
            finished_at: Timestamp::now(),
            container_id: Some(container_id(*pid)),
            probe_failure,
        };
        self.state = State::Exited {
            termination,
            restart_at: None,
            delay: Duration::ZERO,
        };
    }

    /// Schedules a restart of an exited container after the backoff delay.
    pub fn schedule_restart(&mut self) {
        if let State::Exited {
            termination,
            restart_at,
            delay,
        } = &mut self.state
            && restart_at.is_none()
        {
            let ran_for = termination
                .finished_at
                .duration_since(termination.started_at)
                .unsigned_abs();
            *delay = self.backoff.delay(ran_for);
            *restart_at = Some(Instant::now() + *delay);
        }
    }

    /// Starts the container process. On failure the container waits with a reason and a retry
    /// time, and the error is returned for logging.
    pub async fn start(&mut self, launch: Launch) -> Result<(), String> {
        let restart = matches!(self.state, State::Exited { .. }) || self.restored_run;
        let run = self.restart_count + i32::from(restart);
        match self.spawn(&launch, run) {
            Ok((child, capture)) => {
                let pid = child.id().unwrap_or_default();
                if let Err(e) = sandbox::record_pid(&launch.pod_dir, pid) {
                    tracing::warn!(error = %e, "container pid not recorded; a crash would leak it");
                }
                let since = Instant::now();
                let target = Target {
                    pod_ip: launch.pod_ip,
                    pid,
                    env: launch.env,
                    user: match &launch.root {
                        Some(root) => Some((root.identity.uid, root.identity.gid)),
                        None if launch.host_identity.is_plain_root() => None,
                        None => Some((launch.host_identity.uid, launch.host_identity.gid)),
                    },
                };
                if let State::Exited { termination, .. } = &self.state {
                    self.last_termination = Some(termination.clone());
                    self.restart_count += 1;
                } else if std::mem::take(&mut self.restored_run) {
                    self.restart_count += 1;
                }
                self.image_id = launch.image_id;
                self.state = State::Running {
                    child,
                    pid,
                    started_at: Timestamp::now(),
                    prober: Prober::spawn(launch.probes, target, since),
                    capture,
                    run_file: launch.logs.run_file(run),
                    fallback_to_logs: launch.fallback_to_logs,
                };
                Ok(())
            }
            Err(message) => {
                let delay = self.retry_delay();
                self.wait("CreateContainerError", Some(message.clone()), delay);
                Err(message)
            }
        }
    }

    /// Starts run `run` (the restart count it will have) with its output captured by the
    /// returned task.
    fn spawn(&self, launch: &Launch, run: i32) -> Result<(Child, JoinHandle<()>), String> {
        let sink = logs::capture::Sink::open(&launch.logs, run, launch.log_registry.clone())
            .map_err(|e| {
                let dir = launch.logs.runs_dir.display();
                format!("failed to open the log files of {dir}: {e}")
            })?;
        let mut cmd = Command::new(tool("nsenter"));
        cmd.args([
            "--target",
            &launch.sandbox_pid.to_string(),
            "--net",
            "--uts",
            "--",
        ])
        .args([
            tool("unshare"),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
        ]);
        match &launch.root {
            None => {
                cmd.args([tool("sh"), "-c".into(), START_SCRIPT.into(), "sh".into()])
                    .arg(&launch.stage);
                stage(&launch.stage, &launch.mounts)
                    .map_err(|e| format!("failed to prepare {}: {e}", launch.stage.display()))?;
                cmd.args(launch.mounts.iter().map(|m| &m.source)).arg("--");
                for mount in &launch.mounts {
                    cmd.arg(&mount.target).arg(mode(mount.read_only));
                }
                let identity = launch.host_identity;
                cmd.arg("--")
                    .arg(&launch.working_dir)
                    .arg(identity.uid.to_string())
                    .arg(identity.gid.to_string())
                    .arg(identity.fs_group.map(|g| g.to_string()).unwrap_or_default())
                    .arg(yes_no(identity.no_new_privs))
                    .arg(mode(identity.read_only_root))
                    .arg(yes_no(identity.drop_all_capabilities))
                    .arg(tool("setpriv"));
            }
            Some(root) => {
                let identity = root.identity;
                cmd.args([
                    tool("sh"),
                    "-c".into(),
                    IMAGE_START_SCRIPT.into(),
                    "sh".into(),
                ])
                .arg(&launch.stage)
                .arg(&root.image)
                .arg(mode(identity.read_only_root))
                .arg(identity.uid.to_string())
                .arg(identity.gid.to_string())
                .arg(yes_no(identity.no_new_privs))
                .arg(std::env::var_os("PATH").unwrap_or_default())
                .arg(&launch.working_dir);
                // A layer is mounted on the staging directory, in the container's namespace.
                stage(&launch.stage, &[])
                    .map_err(|e| format!("failed to prepare {}: {e}", launch.stage.display()))?;
                for mount in &launch.mounts {
                    cmd.arg(&mount.source)
                        .arg(&mount.target)
                        .arg(mode(mount.read_only));
                }
                cmd.arg("--");
            }
        }
        cmd.args(&launch.argv)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // Through the agent, which timestamps each line as a container runtime does.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it reaches the processes it forks.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("failed to start container: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.start_kill();
            return Err("failed to start container: its output pipes are missing".into());
        };
        Ok((child, logs::capture::start(sink, stdout, stderr)))
    }

    /// SIGTERM to the container's process group, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration, probe_failure: bool) {
        let State::Running { child, pid, .. } = &mut self.state else {
            return;
        };
        let group = Pid::from_raw(*pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        // Whatever the main process left behind in its group.
        let _ = killpg(group, Signal::SIGKILL);
        self.finish(status, probe_failure).await;
        if let State::Exited { termination, .. } = &mut self.state
            && probe_failure
        {
            termination.message = Some("killed after a failed probe".into());
        }
    }

    pub fn view(&self, now: Instant) -> ContainerView {
        let last = self.last_termination.as_ref().map(Termination::state);
        let (state, last_state, ready, started, container_id) = match &self.state {
            State::Waiting {
                reason, message, ..
            } => (waiting(reason, message.clone()), last, false, false, None),
            State::Running {
                pid,
                started_at,
                prober,
                ..
            } => {
                let verdict = prober.verdict.borrow();
                let running = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(*started_at)),
                    }),
                    ..ContainerState::default()
                };
                (
                    running,
                    last,
                    verdict.ready,
                    verdict.started,
                    Some(container_id(*pid)),
                )
            }
            State::Exited {
                termination,
                restart_at: Some(at),
                delay,
            } if *at > now && !delay.is_zero() => {
                let message = format!(
                    "back-off {}s restarting failed container={}",
                    delay.as_secs(),
                    self.name
                );
                let state = waiting("CrashLoopBackOff", Some(message));
                (
                    state,
                    Some(termination.state()),
                    false,
                    false,
                    termination.container_id.clone(),
                )
            }
            State::Exited { termination, .. } => (
                termination.state(),
                last,
                false,
                false,
                termination.container_id.clone(),
            ),
        };
        ContainerView {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id,
            state,
            last_state,
            ready,
            started,
            restart_count: self.restart_count,
            sidecar: self.sidecar,
        }
    }
}

/// Fresh mount points `<stage>/<i>`, each a directory or a file like its source. Nothing is
/// mounted here in the host's namespace (mounts happen in the container's), so removing is safe.
fn stage(stage: &Path, mounts: &[Mount]) -> std::io::Result<()> {
    if stage.exists() {
        std::fs::remove_dir_all(stage)?;
    }
    std::fs::create_dir_all(stage)?;
    for (i, mount) in mounts.iter().enumerate() {
        let point = stage.join(i.to_string());
        if mount.source.is_dir() {
            std::fs::create_dir(&point)?;
        } else {
            std::fs::File::create(&point)?;
        }
    }
    Ok(())
}

fn mode(read_only: bool) -> &'static str {
    if read_only { "ro" } else { "rw" }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..ContainerState::default()
    }
}

fn container_id(pid: u32) -> String {
    format!("node-agent://{pid}")
}

/// Absolute paths of the host tools, so a container's own `PATH` cannot redirect them.
fn tool(name: &str) -> String {
    static PATHS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        ["nsenter", "unshare", "sh", "setpriv"]
            .iter()
            .map(|t| {
                let found = host::find_executable(t, &path).map(|p| p.display().to_string());
                (t.to_string(), found.unwrap_or_else(|| t.to_string()))
            })
            .collect()
    });
    paths
        .iter()
        .find(|(t, _)| t == name)
        .map_or_else(|| name.to_owned(), |(_, p)| p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_restarts_at_once_then_doubles_to_the_cap_and_resets() {
        let config = BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
            reset_after: Duration::from_secs(600),
        };
        let mut backoff = Backoff {
            config,
            next: Duration::ZERO,
        };
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..5).map(|_| backoff.delay(short).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 40]);
        assert_eq!(backoff.delay(Duration::from_secs(601)), Duration::ZERO);
        assert_eq!(backoff.delay(short), Duration::from_secs(10));
    }

    #[test]
    fn only_a_failed_run_under_fallback_to_logs_takes_its_message_from_the_logs() {
        // (FallbackToLogsOnError, exit code) -> message from the logs
        let table = [
            (false, 0, false),
            (false, 1, false),
            (false, 137, false),
            (true, 0, false),
            (true, 1, true),
            (true, 3, true),
            (true, 137, true),
            (true, -1, true),
        ];
        for (fallback, exit_code, want) in table {
            assert_eq!(
                falls_back_to_logs(fallback, exit_code),
                want,
                "fallback {fallback}, exit code {exit_code}"
            );
        }
    }

    /// A run file holding `records` as (stream, partial, content), in a directory of its own.
    fn run_file(name: &str, records: &[(logs::read::Stream, bool, &[u8])]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("node-agent-tail-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        let now = Timestamp::now();
        let bytes: Vec<u8> = records
            .iter()
            .flat_map(|(stream, partial, content)| {
                logs::read::format_record(now, *stream, *partial, content)
            })
            .collect();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn the_message_is_the_last_80_lines_of_both_streams() {
        use logs::read::Stream::{Stderr, Stdout};
        let lines: Vec<String> = (1..=100).map(|i| format!("line {i}")).collect();
        let mut records: Vec<(logs::read::Stream, bool, &[u8])> = lines
            .iter()
            .map(|l| (Stdout, false, l.as_bytes()))
            .collect();
        records.push((Stderr, false, b"the reason"));
        let path = run_file("lines", &records);
        let want: String = lines[21..]
            .iter()
            .map(|l| format!("{l}\n"))
            .chain(["the reason\n".to_string()])
            .collect();
        assert_eq!(output_tail(&path).unwrap(), want);

        let short = run_file(
            "short",
            &[(Stderr, false, b"bad"), (Stdout, true, b"no newline")],
        );
        assert_eq!(output_tail(&short).unwrap(), "bad\nno newline");
        let empty = run_file("empty", &[]);
        assert_eq!(output_tail(&empty).unwrap(), "");
        assert!(output_tail(Path::new("/nonexistent/run.log")).is_err());
        for file in [path, short, empty] {
            std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn a_long_output_keeps_its_last_2048_bytes() {
        use logs::read::Stream::Stdout;
        let first = vec![b'a'; 3000];
        let path = run_file("bytes", &[(Stdout, false, &first), (Stdout, false, b"end")]);
        let tail = output_tail(&path).unwrap();
        assert_eq!(tail.len(), MESSAGE_BYTES);
        assert!(tail.ends_with("aaa\nend\n"), "{tail:?}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();

        assert_eq!(keep_end(b"abcdef", 3), "def");
        assert_eq!(keep_end(b"abc", 10), "abc");
        // "é" is two bytes: a cut through it drops the half.
        assert_eq!(keep_end("xé!".as_bytes(), 2), "!");
        assert_eq!(keep_end("xé!".as_bytes(), 3), "é!");
    }
}
