//! A pod's volumes on the host: ConfigMap/Secret/downward-API/token files kept in sync, emptyDirs,
//! hostPaths, and the directories behind bound PersistentVolumeClaims.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::env::{self, Addresses};
use super::files::{self, Files, Source};
use super::ownership;

/// A volume cannot be provided (yet); the pod's containers wait.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Which volume failed, around the cause.
    #[error("volume {0:?}: {1}")]
    InVolume(String, #[source] Box<Error>),
    /// Projection failed (missing object or key, bad path).
    #[error(transparent)]
    Files(#[from] files::Error),
    /// A downward API field could not be read.
    #[error(transparent)]
    Field(#[from] env::Error),
    /// The claim exists but is not Bound.
    #[error("persistentVolumeClaim {0:?} is not bound yet")]
    NotBound(String),
    /// The bound PersistentVolume is not a local directory.
    #[error("persistentVolume {0:?} has neither a hostPath nor a local path")]
    NotLocal(String),
    /// A volume type this agent does not implement.
    #[error(
        "volume type not supported by the local node agent (supported: configMap, secret, projected, downwardAPI, emptyDir, hostPath, persistentVolumeClaim)"
    )]
    Unsupported,
    /// An apiserver call failed.
    #[error("failed to {0}: {1}")]
    Api(&'static str, #[source] kube::Error),
    /// Writing the volume's files failed.
    #[error("failed to write {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Volume types whose mounts Kubernetes always makes read-only.
fn always_read_only(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.downward_api.is_some()
}

/// Projected token lifetime when the pod does not choose one (the Kubernetes default).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;

#[derive(Debug)]
struct Token {
    value: Vec<u8>,
    refresh_at: Instant,
}

#[derive(Debug)]
pub struct Volumes {
    /// `<pod dir>/volumes`
    dir: PathBuf,
    /// Host directory per volume, once provided.
    paths: BTreeMap<String, PathBuf>,
    read_only: BTreeMap<String, bool>,
    /// Service-account tokens by (volume, source index), refreshed at 80% of their lifetime.
    tokens: HashMap<(String, usize), Token>,
}

impl Volumes {
    pub fn new(pod_dir: &Path) -> Self {
        Self {
            dir: pod_dir.join("volumes"),
            paths: BTreeMap::new(),
            read_only: BTreeMap::new(),
            tokens: HashMap::new(),
        }
    }

    /// The host directory behind a volume, once `sync` provided it.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.paths.get(name).map(PathBuf::as_path)
    }

    pub fn is_read_only(&self, name: &str) -> bool {
        self.read_only.get(name).copied().unwrap_or(false)
    }

    /// Provides every volume and brings file volumes up to date with their sources. Called
    /// before the first container starts and then periodically, as the kubelet does.
    pub async fn sync(
        &mut self,
        client: &Client,
        pod: &Pod,
        addresses: Addresses,
    ) -> Result<(), Error> {
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default();
        for volume in volumes {
            self.sync_one(client, pod, volume, addresses)
                .await
                .map_err(|e| Error::InVolume(volume.name.clone(), Box::new(e)))?;
        }
        Ok(())
    }

    async fn sync_one(
        &mut self,
        client: &Client,
        pod: &Pod,
        volume: &Volume,
        addresses: Addresses,
    ) -> Result<(), Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let dir = self.dir.join(&volume.name);
        let path = if let Some(cm) = &volume.config_map {
            let source = Source {
                kind: "configmap",
                name: &cm.name,
                optional: cm.optional == Some(true),
            };
            let data = config_map(client, ns, &cm.name).await?;
            write_for(
                pod,
                &dir,
                &files::project(source, data.as_ref(), cm.items.as_deref(), cm.default_mode)?,
            )?
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let source = Source {
                kind: "secret",
                name,
                optional: secret.optional == Some(true),
            };
            let data = self::secret(client, ns, name).await?;
            write_for(
                pod,
                &dir,
                &files::project(
                    source,
                    data.as_ref(),
                    secret.items.as_deref(),
                    secret.default_mode,
                )?,
            )?
        } else if let Some(downward) = &volume.downward_api {
            let items = downward.items.as_deref().unwrap_or_default();
            write(
                &dir,
                &downward_files(pod, items, downward.default_mode, addresses)?,
            )?
        } else if let Some(projected) = &volume.projected {
            let mut all = Files::new();
            for (index, source) in projected.sources.iter().flatten().enumerate() {
                let default_mode = projected.default_mode;
                if let Some(cm) = &source.config_map {
                    let src = Source {
                        kind: "configmap",
                        name: &cm.name,
                        optional: cm.optional == Some(true),
                    };
                    let data = config_map(client, ns, &cm.name).await?;
                    all.extend(files::project(
                        src,
                        data.as_ref(),
                        cm.items.as_deref(),
                        default_mode,
                    )?);
                } else if let Some(s) = &source.secret {
                    let src = Source {
                        kind: "secret",
                        name: &s.name,
                        optional: s.optional == Some(true),
                    };
                    let data = self::secret(client, ns, &s.name).await?;
                    all.extend(files::project(
                        src,
                        data.as_ref(),
                        s.items.as_deref(),
                        default_mode,
                    )?);
                } else if let Some(d) = &source.downward_api {
                    let items = d.items.as_deref().unwrap_or_default();
                    all.extend(downward_files(pod, items, default_mode, addresses)?);
                } else if let Some(t) = &source.service_account_token {
                    let token = self
                        .token(
                            client,
                            pod,
                            (volume.name.clone(), index),
                            t.audience.clone(),
                            t.expiration_seconds,
                        )
                        .await?;
                    let mode = files::mode(default_mode, 0o600);
                    all.insert(files::checked(&t.path)?, (token, mode));
                }
                // clusterTrustBundle and podCertificate sources are left out: nothing here uses them.
            }
            write_for(pod, &dir, &all)?
        } else if volume.empty_dir.is_some() {
            if !dir.exists() {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::Io(dir.display().to_string(), e))?;
                give_to_fs_group(pod, &dir)?;
            }
            dir
        } else if let Some(host_path) = &volume.host_path {
            let path = PathBuf::from(&host_path.path);
            if host_path.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&path).map_err(|e| Error::Io(host_path.path.clone(), e))?;
            }
            path
        } else if let Some(claim) = &volume.persistent_volume_claim {
            self.read_only
                .insert(volume.name.clone(), claim.read_only == Some(true));
            match self.paths.get(&volume.name) {
                // A claim's binding never changes, so it is resolved once.
                Some(path) => path.clone(),
                None => {
                    let path = claim_path(client, ns, &claim.claim_name).await?;
                    if claim.read_only != Some(true) {
                        give_to_fs_group(pod, &path)?;
                    }
                    path
                }
            }
        } else {
            return Err(Error::Unsupported);
        };
        if volume.persistent_volume_claim.is_none() {
            self.read_only
                .insert(volume.name.clone(), always_read_only(volume));
        }
        self.paths.insert(volume.name.clone(), path);
        Ok(())
    }

    async fn token(
        &mut self,
        client: &Client,
        pod: &Pod,
        key: (String, usize),
        audience: Option<String>,
        expiration_seconds: Option<i64>,
    ) -> Result<Vec<u8>, Error> {
        if let Some(token) = self.tokens.get(&key)
            && token.refresh_at > Instant::now()
        {
            return Ok(token.value.clone());
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        let seconds = expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience.map(|a| vec![a]),
                expiration_seconds: Some(seconds),
                // Bound to the pod: the token dies with it.
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::Api("request a service account token", e))?;
        let value = response
            .status
            .and_then(|s| s.token)
            .unwrap_or_default()
            .into_bytes();
        let lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(600));
        self.tokens.insert(
            key,
            Token {
                value: value.clone(),
                refresh_at: Instant::now() + lifetime.mul_f64(0.8),
            },
        );
        Ok(value)
    }
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|gid| u32::try_from(gid).ok())
}

/// A writable volume handed to the pod's `fsGroup` when the pod first mounts it, as the kubelet
/// does.
fn give_to_fs_group(pod: &Pod, path: &Path) -> Result<(), Error> {
    match fs_group(pod) {
        Some(gid) => ownership::give_to_group(path, gid)
            .map_err(|e| Error::Io(format!("{} (fsGroup {gid})", path.display()), e)),
        None => Ok(()),
    }
}

/// A file volume (ConfigMap, Secret, projected) written out: its files join the pod's
/// `fsGroup` with group read, so a Secret of mode 0440 is readable by a non-root pod.
fn write_for(pod: &Pod, dir: &Path, files: &Files) -> Result<PathBuf, Error> {
    let path = write(dir, files)?;
    if let Some(gid) = fs_group(pod) {
        ownership::give_to_group_read_only(&path, gid)
            .map_err(|e| Error::Io(format!("{} (fsGroup {gid})", path.display()), e))?;
    }
    Ok(path)
}

fn write(dir: &Path, files: &Files) -> Result<PathBuf, Error> {
    files::write_all(dir, files).map_err(|e| Error::Io(dir.display().to_string(), e))?;
    Ok(dir.to_owned())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    addresses: Addresses,
) -> Result<Files, Error> {
    let default_mode = files::mode(default_mode, files::DEFAULT_MODE);
    let mut out = Files::new();
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(env::Error::UnsupportedSource(item.path.clone()).into());
        };
        let value = env::pod_field(pod, &field.field_path, addresses)?;
        out.insert(
            files::checked(&item.path)?,
            (value.into_bytes(), files::mode(item.mode, default_mode)),
        );
    }
    Ok(out)
}

async fn config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::Api("read a configmap", e))?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

pub(super) async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::Api("read a secret", e))?;
    Ok(secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }))
}

pub(super) async fn config_map_strings(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    Ok(config_map(client, ns, name).await?.map(lossy))
}

pub(super) async fn secret_strings(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    Ok(secret(client, ns, name).await?.map(lossy))
}

fn lossy(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    data.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// The directory of the PersistentVolume bound to a claim.
async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, Error> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| Error::Api("read a persistentvolumeclaim", e))?
        .ok_or_else(|| files::Error::NotFound {
            kind: "persistentvolumeclaim",
            name: claim.to_owned(),
        })?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| bound && !v.is_empty());
    let Some(volume_name) = volume_name else {
        return Err(Error::NotBound(claim.to_owned()));
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .map_err(|e| Error::Api("read a persistentvolume", e))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or(Error::NotLocal(volume_name))?;
    std::fs::create_dir_all(&path).map_err(|e| Error::Io(path.clone(), e))?;
    Ok(PathBuf::from(path))
}
