//! Host paths created as mount points for container volumes (`/data`, `/usr/local/etc/redis`).
//! Containers share the host's filesystem, so a mount target must exist there; the agent
//! records what it created and removes it again (if still empty) when it stops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Creating a mount point failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to create mount point {0}: {1}")]
pub struct Error(String, #[source] std::io::Error);

const RECORD: &str = "created-mountpoints";

#[derive(Debug)]
pub struct MountPoints {
    record: PathBuf,
    /// Serialises check-then-create across pods starting at the same time.
    lock: Mutex<()>,
}

impl MountPoints {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            record: state_dir.join(RECORD),
            lock: Mutex::new(()),
        }
    }

    /// Makes `target` exist on the host: a directory, or an empty file when `file` is set
    /// (bind-mounting a single file needs a file to mount over). Records what it creates.
    pub fn ensure(&self, target: &Path, file: bool) -> Result<(), Error> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |p: &Path, e| Error(p.display().to_string(), e);
        let mut created = Vec::new();
        let dirs: Vec<&Path> = if file {
            target.parent().into_iter().collect()
        } else {
            vec![target]
        };
        for dir in dirs {
            let mut missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
            missing.reverse();
            for p in missing {
                std::fs::create_dir(p).map_err(|e| fail(p, e))?;
                created.push(format!("d {}", p.display()));
            }
        }
        if file && !target.exists() {
            std::fs::File::create(target).map_err(|e| fail(target, e))?;
            created.push(format!("f {}", target.display()));
        }
        if !created.is_empty() {
            let mut record = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.record)
                .map_err(|e| fail(&self.record, e))?;
            for line in created {
                writeln!(record, "{line}").map_err(|e| fail(&self.record, e))?;
            }
        }
        Ok(())
    }

    /// Removes the recorded paths that are still empty, deepest first; anything something
    /// else has put content into stays.
    pub fn remove_created(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(record) = std::fs::read_to_string(&self.record) else {
            return;
        };
        let mut entries: Vec<(&str, &Path)> = record
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(kind, path)| (kind, Path::new(path)))
            .collect();
        entries.sort_by_key(|(_, p)| std::cmp::Reverse(p.components().count()));
        entries.dedup();
        for (kind, path) in entries {
            let _ = match kind {
                "f" if path.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) => {
                    std::fs::remove_file(path)
                }
                "d" => std::fs::remove_dir(path),
                _ => Ok(()),
            };
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_records_and_removes_only_what_it_made() {
        let root = std::env::temp_dir().join(format!("node-agent-mp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("existing")).unwrap();
        let points = MountPoints::new(&root);
        points.ensure(&root.join("existing/a/b"), false).unwrap();
        points.ensure(&root.join("c/file.conf"), true).unwrap();
        points.ensure(&root.join("existing/a/b"), false).unwrap();
        assert!(root.join("existing/a/b").is_dir());
        assert!(root.join("c/file.conf").is_file());
        std::fs::write(root.join("existing/a/keep"), "x").unwrap();
        points.remove_created();
        assert!(!root.join("existing/a/b").exists());
        assert!(root.join("existing/a/keep").exists(), "non-empty dirs stay");
        assert!(!root.join("c").exists());
        assert!(!root.join(RECORD).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
