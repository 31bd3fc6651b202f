//! Projecting key/value data (ConfigMap, Secret, downward API) to files, and writing a file set
//! into a volume directory so that readers never see a half-written file.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::KeyToPath;

/// Relative path -> (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// The volume file mode when neither the item nor the volume sets one, as in Kubernetes.
pub const DEFAULT_MODE: u32 = 0o644;

/// Projecting failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The referenced object does not exist and is not optional.
    #[error("failed to find {kind} {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// An `items` entry names a key the object lacks.
    #[error("failed to find key {key:?} in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    /// A target path that would escape the volume directory.
    #[error("failed to project {0:?}: paths must be relative and must not contain '..'")]
    BadPath(String),
}

/// Where one object's data is projected from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    pub optional: bool,
}

/// Files for `data` (None: the object does not exist): every key, or just `items` when given.
pub fn project(
    source: Source<'_>,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
) -> Result<Files, Error> {
    let default_mode = mode(default_mode, DEFAULT_MODE);
    let Some(data) = data else {
        return if source.optional {
            Ok(Files::new())
        } else {
            Err(Error::NotFound {
                kind: source.kind,
                name: source.name.to_owned(),
            })
        };
    };
    let mut files = Files::new();
    match items {
        None => {
            for (key, value) in data {
                files.insert(checked(key)?, (value.clone(), default_mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        files.insert(
                            checked(&item.path)?,
                            (value.clone(), mode(item.mode, default_mode)),
                        );
                    }
                    None if source.optional => {}
                    None => {
                        return Err(Error::MissingKey {
                            kind: source.kind,
                            name: source.name.to_owned(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(files)
}

pub fn mode(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(default, |m| m & 0o7777)
}

/// Rejects absolute paths and `..`, which the apiserver also refuses; checked again because
/// these files are written as root.
pub fn checked(path: &str) -> Result<String, Error> {
    let ok = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(path.to_owned())
    } else {
        Err(Error::BadPath(path.to_owned()))
    }
}

/// Makes `dir` hold exactly `files`. Each changed file is written to a temporary name and
/// renamed over the old one, so readers (a Redis reading its config) see old or new, never half.
/// Returns whether anything changed.
pub fn write_all(dir: &Path, files: &Files) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mut changed = false;
    for (rel, (content, mode)) in files {
        let path = dir.join(rel);
        let current = std::fs::read(&path).ok();
        let current_mode = path
            .metadata()
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        if current.as_ref() == Some(content) && current_mode == Some(*mode) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))?;
        std::fs::rename(&tmp, &path)?;
        changed = true;
    }
    changed |= remove_stale(dir, dir, files)?;
    Ok(changed)
}

/// Deletes files under `dir` that are not in `files`, and directories left empty.
fn remove_stale(root: &Path, dir: &Path, files: &Files) -> io::Result<bool> {
    let mut changed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            changed |= remove_stale(root, &path, files)?;
            if std::fs::read_dir(&path)?.next().is_none() {
                std::fs::remove_dir(&path)?;
                changed = true;
            }
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
            if !files.contains_key(rel.as_ref()) {
                std::fs::remove_file(&path)?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("redis.conf".into(), b"port 6379\n".to_vec()),
            ("extra".into(), b"x".to_vec()),
        ])
    }

    const CM: Source<'static> = Source {
        kind: "configmap",
        name: "cfg",
        optional: false,
    };

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            user: None,
        }
    }

    #[test]
    fn projects_every_key_by_default() {
        let files = project(CM, Some(&data()), None, Some(0o600)).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["redis.conf"], (b"port 6379\n".to_vec(), 0o600));
    }

    #[test]
    fn honours_items_paths_and_modes() {
        let items = [item("redis.conf", "conf/main.conf", Some(0o400))];
        let files = project(CM, Some(&data()), Some(&items), None).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["conf/main.conf"]);
        assert_eq!(files["conf/main.conf"].1, 0o400);
    }

    #[test]
    fn missing_objects_and_keys_fail_unless_optional() {
        assert_eq!(
            project(CM, None, None, None),
            Err(Error::NotFound {
                kind: "configmap",
                name: "cfg".into()
            })
        );
        let items = [item("nope", "nope", None)];
        assert!(matches!(
            project(CM, Some(&data()), Some(&items), None),
            Err(Error::MissingKey { .. })
        ));
        let optional = Source {
            optional: true,
            ..CM
        };
        assert_eq!(project(optional, None, None, None), Ok(Files::new()));
        assert_eq!(
            project(optional, Some(&data()), Some(&items), None),
            Ok(Files::new())
        );
    }

    #[test]
    fn refuses_escaping_paths() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert_eq!(checked(bad), Err(Error::BadPath(bad.into())), "{bad}");
        }
    }

    #[test]
    fn write_all_syncs_the_directory() {
        let dir = std::env::temp_dir().join(format!("node-agent-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = project(CM, Some(&data()), None, None).unwrap();
        files.insert("sub/dir/file".into(), (b"1".to_vec(), 0o644));
        assert!(write_all(&dir, &files).unwrap());
        assert!(!write_all(&dir, &files).unwrap(), "nothing changed");
        files.remove("sub/dir/file");
        files.insert("redis.conf".into(), (b"port 7000\n".to_vec(), 0o644));
        assert!(write_all(&dir, &files).unwrap());
        assert_eq!(
            std::fs::read(dir.join("redis.conf")).unwrap(),
            b"port 7000\n"
        );
        assert!(!dir.join("sub").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
