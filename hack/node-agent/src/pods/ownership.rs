//! A volume handed to the pod's `fsGroup`, as the kubelet does on mount: every file's group
//! becomes the fsGroup and gains read-write, or read for a file volume (directories also
//! search, and setgid on a writable one so that files created later inherit the group).

use std::io;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

/// Group read and write for files, plus owner's: the kubelet's mask for a writable volume.
const READ_WRITE: u32 = 0o660;
/// Search for directories.
const SEARCH: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Group read for files (search for directories): the kubelet's mask for a file volume
/// (ConfigMap, Secret, projected), which the pod reads but never writes.
const READ: u32 = 0o440;

/// Hands a file volume to group `fs_group`, read-only, as the kubelet does: a Secret file of
/// mode 0440 is then readable by a pod running as a non-root user of that group.
pub fn give_to_group_read_only(root: &Path, fs_group: u32) -> io::Result<()> {
    hand_over(root, fs_group, READ, SEARCH)
}

/// Hands `root` and everything under it to group `fs_group`, without following symlinks. Done
/// on every mount, so a volume written by an earlier pod running as another user (an upgrade
/// from root) becomes writable too.
pub fn give_to_group(root: &Path, fs_group: u32) -> io::Result<()> {
    hand_over(root, fs_group, READ_WRITE, SEARCH | SETGID)
}

/// `root` and everything under it joins `fs_group`, every entry gaining the bits of `mask`,
/// directories those of `dir_mask` too; symlinks are not followed.
fn hand_over(root: &Path, fs_group: u32, mask: u32, dir_mask: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    lchown(root, None, Some(fs_group))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mode = meta.permissions().mode() | mask;
    if meta.is_dir() {
        mode |= dir_mask;
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode & 0o7777))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            hand_over(&entry?.path(), fs_group, mask, dir_mask)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn file_volumes_join_the_group_read_only() {
        let root = std::env::temp_dir().join(format!("node-agent-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("users.acl"), b"x").unwrap();
        std::fs::set_permissions(root.join("users.acl"), PermissionsExt::from_mode(0o400)).unwrap();
        give_to_group_read_only(&root, 4242).unwrap();
        let meta = std::fs::symlink_metadata(root.join("users.acl")).unwrap();
        assert_eq!(meta.gid(), 4242);
        assert_eq!(meta.mode() & 0o7777, 0o440);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn files_and_directories_join_the_group_and_become_group_writable() {
        let root = std::env::temp_dir().join(format!("node-agent-fsgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("appendonlydir")).unwrap();
        std::fs::write(root.join("dump.rdb"), b"x").unwrap();
        std::fs::write(root.join("appendonlydir/a.aof"), b"y").unwrap();
        std::fs::set_permissions(root.join("dump.rdb"), PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::set_permissions(root.join("appendonlydir"), PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        give_to_group(&root, 4242).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!(meta("dump.rdb").gid(), 4242);
        assert_eq!(meta("dump.rdb").mode() & 0o7777, 0o664);
        assert_eq!(meta("appendonlydir").mode() & 0o7777, 0o2775);
        assert_eq!(meta("appendonlydir/a.aof").gid(), 4242);
        assert_eq!(meta("").mode() & 0o2070, 0o2070);
        assert_eq!(meta("link").gid(), 4242);
        assert_ne!(
            std::fs::metadata("/etc/passwd").unwrap().gid(),
            4242,
            "a symlink's target is left alone"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
