//! Images from an OCI image layout on disk (what `make image` writes): the runtime config of a
//! tagged manifest, and its layers unpacked once per manifest digest into a shared root
//! filesystem that each container overlays with a layer of its own.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::Mutex;

/// Reading or unpacking an image failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the layout could not be read.
    #[error("failed to read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// A file of the layout is not the JSON it should be.
    #[error("failed to parse {0}: {1}")]
    Parse(String, #[source] serde_json::Error),
    /// No manifest of the layout carries the reference's tag or digest.
    #[error(
        "image {reference:?} is not in the OCI layout {layout} (tags there: {tags}); `make image` builds it"
    )]
    NotFound {
        reference: String,
        layout: String,
        tags: String,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob {0} does not match its digest")]
    DigestMismatch(String),
    /// Only sha256 digests are checked here.
    #[error("unsupported digest {0:?}: only sha256 is supported")]
    UnsupportedDigest(String),
    /// Creating the directory of unpacked images failed.
    #[error("failed to prepare {0}: {1}")]
    Prepare(String, #[source] std::io::Error),
    /// `umoci raw unpack` failed.
    #[error("failed to unpack image {0}: {1}")]
    Unpack(String, String),
    /// A mount target or working directory passes through a symlink of the image, which could
    /// point out of its root.
    #[error("path {0:?} passes through a symlink in the image; not supported")]
    Symlink(String),
    /// A mount target or working directory that is not an absolute, plain path.
    #[error("path {0:?} must be absolute, without `..`")]
    BadPath(String),
}

/// The annotation that names a manifest's tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    fn tag(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Debug, Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<RuntimeConfig>,
}

/// The part of an image's config that says how to run it (null fields read as empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

impl RuntimeConfig {
    /// The image's environment as pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .flatten()
            .map(|entry| match entry.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (entry.clone(), String::new()),
            })
            .collect()
    }

    /// What runs when the container sets no `command`: the entrypoint, followed by the image's
    /// cmd unless the container gives `args` (which then replace it), as in Kubernetes.
    pub fn default_command(&self, container_has_args: bool) -> Vec<String> {
        let entrypoint = self.entrypoint.iter().flatten();
        let cmd = self.cmd.iter().flatten().filter(|_| !container_has_args);
        entrypoint.chain(cmd).cloned().collect()
    }
}

/// One image of the layout, found by tag or digest.
#[derive(Debug, Clone)]
pub struct Image {
    /// The tag umoci unpacks it by.
    pub tag: String,
    /// `sha256:<hex>` of its manifest: names the image and its unpacked copy.
    pub manifest_digest: String,
    pub config: RuntimeConfig,
}

/// An OCI image layout and the shared unpacked copies of its images.
#[derive(Debug)]
pub struct Layout {
    dir: PathBuf,
    /// `<state dir>/images/<manifest hex>`: one read-only lower layer per image.
    unpacked_dir: PathBuf,
    /// Two pods starting at once unpack an image once.
    unpacking: Mutex<()>,
}

impl Layout {
    pub fn new(dir: PathBuf, unpacked_dir: PathBuf) -> Self {
        Self {
            dir,
            unpacked_dir,
            unpacking: Mutex::new(()),
        }
    }

    /// The image a pod's `image` names: `name:tag` matches the tag (default `latest`),
    /// `name@sha256:..` the manifest digest. Registry and name are not compared: the
    /// layout holds one repository.
    pub fn find(&self, reference: &str) -> Result<Image, Error> {
        let index_path = self.dir.join("index.json");
        let index: Index = read_json(&index_path)?;
        let wanted = Wanted::parse(reference);
        let descriptor = index
            .manifests
            .iter()
            .find(|d| match &wanted {
                Wanted::Digest(digest) => d.digest == *digest,
                Wanted::Tag(tag) => d.tag() == Some(tag),
            })
            .filter(|d| d.tag().is_some())
            .ok_or_else(|| Error::NotFound {
                reference: reference.to_owned(),
                layout: self.dir.display().to_string(),
                tags: index
                    .manifests
                    .iter()
                    .filter_map(Descriptor::tag)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let manifest: Manifest = serde_json::from_slice(&self.blob(&descriptor.digest)?)
            .map_err(|e| Error::Parse(descriptor.digest.clone(), e))?;
        let config: ConfigBlob = serde_json::from_slice(&self.blob(&manifest.config.digest)?)
            .map_err(|e| Error::Parse(manifest.config.digest.clone(), e))?;
        Ok(Image {
            tag: descriptor.tag().unwrap_or_default().to_owned(),
            manifest_digest: descriptor.digest.clone(),
            config: config.config.unwrap_or_default(),
        })
    }

    /// A blob's content, checked against its digest.
    fn blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let hex = sha256_hex(digest)?;
        let path = self.dir.join("blobs/sha256").join(hex);
        let bytes = std::fs::read(&path).map_err(|e| Error::Read(path.display().to_string(), e))?;
        if format!("{:x}", Sha256::digest(&bytes)) != hex {
            return Err(Error::DigestMismatch(digest.to_owned()));
        }
        Ok(bytes)
    }

    /// The image's layers unpacked (once; umoci checks the layer digests), for use as the
    /// read-only lower layer of containers' root filesystems.
    pub async fn unpacked(&self, image: &Image) -> Result<PathBuf, Error> {
        let _only_one = self.unpacking.lock().await;
        let root = self.unpacked_dir.join(sha256_hex(&image.manifest_digest)?);
        if root.is_dir() {
            return Ok(root);
        }
        let partial = root.with_extension("partial");
        let prepare = |e| Error::Prepare(partial.display().to_string(), e);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(prepare)?;
        }
        std::fs::create_dir_all(&self.unpacked_dir).map_err(prepare)?;
        let source = format!("{}:{}", self.dir.display(), image.tag);
        let output = Command::new("umoci")
            .args(["raw", "unpack", "--image", &source])
            .arg(&partial)
            .output()
            .await
            .map_err(|e| Error::Unpack(source.clone(), format!("failed to run umoci: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::Unpack(source, stderr.trim().to_owned()));
        }
        std::fs::rename(&partial, &root).map_err(prepare)?;
        tracing::info!(image = %image.manifest_digest, root = %root.display(), "image unpacked");
        Ok(root)
    }
}

enum Wanted {
    Tag(String),
    Digest(String),
}

impl Wanted {
    fn parse(reference: &str) -> Self {
        if let Some((_, digest)) = reference.split_once('@') {
            return Self::Digest(digest.to_owned());
        }
        let last = reference.rsplit('/').next().unwrap_or(reference);
        match last.split_once(':') {
            Some((_, tag)) => Self::Tag(tag.to_owned()),
            None => Self::Tag("latest".to_owned()),
        }
    }
}

fn sha256_hex(digest: &str) -> Result<&str, Error> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::UnsupportedDigest(digest.to_owned()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read(path).map_err(|e| Error::Read(path.display().to_string(), e))?;
    serde_json::from_slice(&text).map_err(|e| Error::Parse(path.display().to_string(), e))
}

/// Checks that `path` (absolute, in the container) reaches no symlink of the unpacked image,
/// so that creating it under the root cannot leave the root. A real runtime resolves such
/// links inside the root; this agent only runs images without them on these paths.
pub fn check_in_root(root: &Path, path: &str) -> Result<(), Error> {
    let mut host = root.to_path_buf();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => {
                host.push(part);
                let is_link = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_symlink());
                if is_link {
                    return Err(Error::Symlink(path.to_owned()));
                }
            }
            _ => return Err(Error::BadPath(path.to_owned())),
        }
    }
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Error::BadPath(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout in a fresh directory holding one manifest tagged `tag` with this config.
    fn layout(name: &str, tag: &str, config: &str) -> (Layout, String) {
        let dir =
            std::env::temp_dir().join(format!("node-agent-oci-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let put = |bytes: &[u8]| {
            let hex = format!("{:x}", Sha256::digest(bytes));
            std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
            format!("sha256:{hex}")
        };
        let config_digest = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let manifest_digest = put(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"{REF_NAME}":"{tag}"}}}}]}}"#,
            manifest.len()
        );
        std::fs::write(dir.join("index.json"), index).unwrap();
        let unpacked = dir.join("unpacked");
        (Layout::new(dir, unpacked), manifest_digest)
    }

    const OPERATOR_CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"User":"65532:65532","Entrypoint":["/redis-operator"],"Cmd":["run"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn a_tag_or_the_manifest_digest_finds_the_image_and_its_config() {
        let (layout, digest) = layout("find", "0.1.0", OPERATOR_CONFIG);
        for reference in [
            "redis-operator:0.1.0",
            "registry.example:5000/team/redis-operator:0.1.0",
            &format!("redis-operator@{digest}"),
        ] {
            let image = layout
                .find(reference)
                .unwrap_or_else(|e| panic!("{reference}: {e}"));
            assert_eq!(image.manifest_digest, digest);
            assert_eq!(image.tag, "0.1.0");
            assert_eq!(image.config.user.as_deref(), Some("65532:65532"));
            assert_eq!(
                image.config.default_command(false),
                ["/redis-operator", "run"]
            );
        }
        let err = layout.find("redis-operator:0.2.0").unwrap_err().to_string();
        assert!(
            err.contains("\"redis-operator:0.2.0\"") && err.contains("0.1.0"),
            "{err}"
        );
        // No tag means `latest`, which this layout does not have.
        assert!(matches!(
            layout.find("redis-operator"),
            Err(Error::NotFound { .. })
        ));
        std::fs::remove_dir_all(&layout.dir).unwrap();
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let (layout, digest) = layout("tampered", "v1", OPERATOR_CONFIG);
        let path = layout
            .dir
            .join("blobs/sha256")
            .join(sha256_hex(&digest).unwrap());
        let mut manifest = std::fs::read(&path).unwrap();
        manifest.push(b' ');
        std::fs::write(&path, manifest).unwrap();
        assert!(matches!(layout.find("x:v1"), Err(Error::DigestMismatch(d)) if d == digest));
        std::fs::remove_dir_all(&layout.dir).unwrap();
    }

    #[test]
    fn args_replace_the_image_cmd_and_null_fields_read_as_empty() {
        let config: ConfigBlob = serde_json::from_str(
            r#"{"config":{"Entrypoint":null,"Cmd":["a"],"Env":["PATH=/bin","EMPTY"]}}"#,
        )
        .unwrap();
        let config = config.config.unwrap();
        assert_eq!(config.default_command(false), ["a"]);
        assert!(config.default_command(true).is_empty());
        assert_eq!(
            config.env(),
            [
                ("PATH".into(), "/bin".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        let bare: ConfigBlob = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.config, None);
    }

    #[test]
    fn paths_through_symlinks_of_the_image_are_refused() {
        let root = std::env::temp_dir().join(format!("node-agent-oci-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        check_in_root(&root, "/var/lib/data").unwrap();
        check_in_root(&root, "/not/there/yet").unwrap();
        assert!(matches!(
            check_in_root(&root, "/var/run/secrets/kubernetes.io/serviceaccount"),
            Err(Error::Symlink(_))
        ));
        assert!(matches!(
            check_in_root(&root, "/a/../../etc"),
            Err(Error::BadPath(_))
        ));
        assert!(matches!(
            check_in_root(&root, "relative"),
            Err(Error::BadPath(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
