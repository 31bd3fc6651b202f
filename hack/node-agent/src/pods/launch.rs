//! Everything needed to start one container: its image (host binaries or an unpacked OCI
//! image), probes, environment, argv, mounts, working directory, user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::Ctx;
use super::container::{Launch, Mount, RootFs};
use super::env::{self, Addresses, Sources};
use super::probe::{Kind, ProbeSpec};
use super::prober::Probes;
use super::security;
use super::volumes::{self, Volumes};
use crate::host;
use crate::image;
use crate::logs::ContainerLogs;
use crate::oci;

/// Staging area for containers whose mounts cover the pod directory; see `container.rs`.
pub const STAGE_FALLBACK: &str = "/run/node-agent-stage";
/// How long to wait before retrying an unsupported image (the pod may be updated).
pub const IMAGE_RETRY: Duration = Duration::from_secs(10);

/// What of the pod a container start needs.
pub struct PodRefs<'a> {
    pub ctx: &'a Ctx,
    pub pod: &'a Pod,
    pub volumes: &'a Volumes,
    pub sandbox_pid: u32,
    pub addresses: Addresses,
    pub pod_dir: &'a Path,
    pub log_dir: &'a Path,
}

/// Why a container cannot start: its waiting reason and message, and when to retry (`None`:
/// after the container's back-off).
#[derive(Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    pub retry: Option<Duration>,
}

/// What runs a container's image.
enum Runner {
    /// Host binaries, under the host's root.
    Host(&'static image::HostImage),
    /// An image of the OCI layout, unpacked at `root`.
    Oci { image: oci::Image, root: PathBuf },
}

/// The runner for an image: the operator's from the OCI layout, others from the host.
async fn runner(p: &PodRefs<'_>, image_name: &str) -> Result<Runner, Refusal> {
    if image::repository_name(image_name) != image::OPERATOR_IMAGE {
        return image::resolve(image_name)
            .map(Runner::Host)
            .map_err(|e| Refusal {
                reason: "ImageNotSupported",
                message: e.to_string(),
                retry: Some(IMAGE_RETRY),
            });
    }
    let Some(layout) = &p.ctx.operator_image else {
        return Err(Refusal {
            reason: "ImageNotSupported",
            message: format!(
                "image {image_name:?} runs from an OCI image layout; the node agent was started without --operator-image-dir"
            ),
            retry: Some(IMAGE_RETRY),
        });
    };
    // Nothing is ever pulled: the kubelet's reason for an image that is not on the node.
    let never_pulled = |e: oci::Error| Refusal {
        reason: "ErrImageNeverPull",
        message: e.to_string(),
        retry: Some(IMAGE_RETRY),
    };
    let image = layout.find(image_name).map_err(never_pulled)?;
    let root = layout.unpacked(&image).await.map_err(never_pulled)?;
    Ok(Runner::Oci { image, root })
}

/// Everything to start a container, or why it cannot start.
pub async fn launch(p: &PodRefs<'_>, spec: &Container) -> Result<Launch, Refusal> {
    let config_error = |message: String| Refusal {
        reason: "CreateContainerConfigError",
        message,
        retry: None,
    };
    let image_name = spec.image.as_deref().unwrap_or_default();
    let runner = runner(p, image_name).await?;
    let addresses = p.addresses;
    let ports = spec.ports.as_deref().unwrap_or_default();
    let parse = |kind, probe: &Option<_>| match probe {
        Some(p) => ProbeSpec::parse(kind, p, ports).map(Some),
        None => Ok(None),
    };
    let probes = Probes {
        startup: parse(Kind::Startup, &spec.startup_probe)
            .map_err(|e| config_error(e.to_string()))?,
        readiness: parse(Kind::Readiness, &spec.readiness_probe)
            .map_err(|e| config_error(e.to_string()))?,
        liveness: parse(Kind::Liveness, &spec.liveness_probe)
            .map_err(|e| config_error(e.to_string()))?,
    };
    let sources = env_sources(p, spec).await.map_err(config_error)?;
    let image_env = match &runner {
        Runner::Host(_) => Vec::new(),
        Runner::Oci { image, .. } => image.config.env(),
    };
    let mut env = env::build(p.pod, spec, addresses, &sources, &image_env)
        .map_err(|e| config_error(e.to_string()))?;
    if let Some(api) = p.ctx.api_service {
        // First, so that the container's own env may override them, as with the kubelet.
        env.splice(0..0, env::api_service(api));
    }
    let host_identity = match &runner {
        // A host image has no USER of its own: root unless the securityContext says otherwise.
        Runner::Host(_) => {
            security::identity(p.pod, spec, "").map_err(|e| config_error(e.to_string()))?
        }
        Runner::Oci { .. } => security::Identity::ROOT,
    };
    let (argv, root, image_id, image_working_dir) = match &runner {
        Runner::Host(host_image) => {
            let argv = host_argv(p, spec, host_image, &env)?;
            let image_id = format!("host://{}", argv.first().cloned().unwrap_or_default());
            (argv, None, image_id, host_image.working_dir)
        }
        Runner::Oci { image, root } => {
            let has_args = spec.args.as_ref().is_some_and(|a| !a.is_empty());
            let default = image.config.default_command(has_args);
            let default: Vec<&str> = default.iter().map(String::as_str).collect();
            let argv = env::argv(spec, &default, &env);
            if argv.is_empty() {
                return Err(config_error(format!(
                    "image {image_name:?} has no entrypoint or cmd and the container sets no command"
                )));
            }
            let user = image.config.user.as_deref().unwrap_or_default();
            let identity =
                security::identity(p.pod, spec, user).map_err(|e| config_error(e.to_string()))?;
            let rootfs = RootFs {
                image: root.clone(),
                identity,
            };
            let name = image_name.split('@').next().unwrap_or(image_name);
            let image_id = format!("{name}@{}", image.manifest_digest);
            let working_dir = image.config.working_dir.as_deref().unwrap_or("/");
            (argv, Some(rootfs), image_id, working_dir)
        }
    };
    let mut mounts = mounts(p, spec, &env, root.as_ref()).map_err(config_error)?;
    if let Some(rootfs) = &root
        && !mounts.iter().any(|m| m.target == "/etc/hosts")
    {
        oci::check_in_root(&rootfs.image, "/etc/hosts").map_err(|e| config_error(e.to_string()))?;
        // The kubelet's hosts file: a host image sees the host's, an image's root has none.
        let hosts = p.pod_dir.join("etc-hosts");
        let text = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            addresses.pod_ip,
            env::hostname(p.pod)
        );
        std::fs::write(&hosts, text)
            .map_err(|e| config_error(format!("failed to write {}: {e}", hosts.display())))?;
        mounts.push(Mount {
            source: hosts,
            target: "/etc/hosts".into(),
            read_only: false,
        });
    }
    let working_dir = match &spec.working_dir {
        Some(dir) if !dir.is_empty() => dir.clone(),
        _ if root.is_some() => image_working_dir.into(),
        // The image's WORKDIR where a volume provides it; otherwise "/" rather than
        // creating directories on the host.
        _ if mounts.iter().any(|m| m.target == image_working_dir) => image_working_dir.into(),
        _ => "/".into(),
    };
    let stage = match &root {
        Some(rootfs) => {
            // Created inside the container's root, never on the host.
            oci::check_in_root(&rootfs.image, &working_dir)
                .map_err(|e| config_error(e.to_string()))?;
            p.pod_dir.join("stage").join(&spec.name)
        }
        None => {
            if !mounts
                .iter()
                .any(|m| Path::new(&working_dir).starts_with(&m.target))
            {
                p.ctx
                    .mountpoints
                    .ensure(Path::new(&working_dir), false)
                    .map_err(|e| config_error(e.to_string()))?;
            }
            stage_dir(p, &spec.name, &mounts).map_err(config_error)?
        }
    };
    std::fs::create_dir_all(p.log_dir)
        .map_err(|e| config_error(format!("failed to create {}: {e}", p.log_dir.display())))?;
    Ok(Launch {
        sandbox_pid: p.sandbox_pid,
        pod_ip: addresses.pod_ip,
        pod_dir: p.pod_dir.to_owned(),
        argv,
        env,
        working_dir,
        mounts,
        root,
        host_identity,
        image_id,
        stage,
        logs: ContainerLogs::new(p.log_dir, &spec.name),
        log_registry: p.ctx.logs.clone(),
        probes,
        fallback_to_logs: spec.termination_message_policy.as_deref()
            == Some("FallbackToLogsOnError"),
    })
}

/// The argv of a host image: `command[0]` found on the container's PATH on the host, and
/// redis-server given the official image's defaults.
fn host_argv(
    p: &PodRefs<'_>,
    spec: &Container,
    host_image: &image::HostImage,
    env: &[(String, String)],
) -> Result<Vec<String>, Refusal> {
    let image_name = spec.image.as_deref().unwrap_or_default();
    let mut argv = env::argv(spec, host_image.default_command, env);
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let program = argv.first().cloned().unwrap_or_default();
    let resolved = host::find_executable(&program, path).ok_or_else(|| {
        let message = format!("executable {program:?} not found on the host (PATH {path}); image {image_name:?} runs host binaries");
        Refusal {
            reason: "RunContainerError",
            message,
            retry: None,
        }
    })?;
    argv[0] = resolved.display().to_string();
    if host_image.name == "redis" {
        let file = p.pod_dir.join(format!("{}.image-defaults.conf", spec.name));
        if let Some((with_defaults, text)) =
            image::official_redis_defaults(&argv, &file.display().to_string())
        {
            std::fs::write(&file, text).map_err(|e| Refusal {
                reason: "CreateContainerConfigError",
                message: format!("failed to write {}: {e}", file.display()),
                retry: None,
            })?;
            argv = with_defaults;
        }
    }
    Ok(argv)
}

/// Where a container's mount sources are staged: under the pod directory unless a mount
/// target covers that, else under /run.
fn stage_dir(p: &PodRefs<'_>, container: &str, mounts: &[Mount]) -> Result<PathBuf, String> {
    let uid = p.pod.uid().unwrap_or_default();
    [p.pod_dir.join("stage"), Path::new(STAGE_FALLBACK).join(uid)]
        .into_iter()
        .map(|dir| dir.join(container))
        .find(|dir| !mounts.iter().any(|m| dir.starts_with(&m.target)))
        .ok_or_else(|| {
            format!(
                "volume mounts cover both {} and {STAGE_FALLBACK}",
                p.pod_dir.display()
            )
        })
}

async fn env_sources(p: &PodRefs<'_>, spec: &Container) -> Result<Sources, String> {
    let ns = p.pod.namespace().unwrap_or_default();
    let (config_maps, secrets) = env::referenced_sources(spec);
    let mut sources = Sources::default();
    for name in config_maps {
        if let Some(data) = volumes::config_map_strings(&p.ctx.client, &ns, &name)
            .await
            .map_err(|e| e.to_string())?
        {
            sources.config_maps.insert(name, data);
        }
    }
    for name in secrets {
        if let Some(data) = volumes::secret_strings(&p.ctx.client, &ns, &name)
            .await
            .map_err(|e| e.to_string())?
        {
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// Bind mounts, parents before children. Under the host's root, mount points are created (and
/// recorded) unless they lie inside another mount of the container; under an image's root,
/// they are created in the container's own layer when it starts, and must not pass through a
/// symlink of the image.
fn mounts(
    p: &PodRefs<'_>,
    spec: &Container,
    env: &[(String, String)],
    root: Option<&RootFs>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for vm in spec.volume_mounts.iter().flatten() {
        let base = p.volumes.path(&vm.name).ok_or_else(|| {
            format!(
                "volume {:?} of mount {:?} is not defined",
                vm.name, vm.mount_path
            )
        })?;
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(env::expand(e, |n| {
                env.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            })),
            _ => None,
        };
        let source = match sub {
            Some(sub) => {
                let sub = super::files::checked(&sub).map_err(|e| e.to_string())?;
                let source = base.join(sub);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| {
                        format!("failed to create subPath {}: {e}", source.display())
                    })?;
                }
                source
            }
            None => base.to_owned(),
        };
        mounts.push(Mount {
            source,
            target: vm.mount_path.trim_end_matches('/').to_owned(),
            read_only: vm.read_only == Some(true) || p.volumes.is_read_only(&vm.name),
        });
    }
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    if let Some(rootfs) = root {
        for m in &mounts {
            oci::check_in_root(&rootfs.image, &m.target).map_err(|e| e.to_string())?;
        }
        return Ok(mounts);
    }
    for (i, m) in mounts.iter().enumerate() {
        let target = Path::new(&m.target);
        let nested = mounts[..i]
            .iter()
            .any(|parent| target.starts_with(&parent.target));
        if !nested {
            p.ctx
                .mountpoints
                .ensure(target, !m.source.is_dir())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(mounts)
}
