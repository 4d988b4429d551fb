//! Filesystem facts: free space and inodes, whether a path is on its own volume, a tree's
//! size; and a tree's ownership, handed to the agent's user and taken back.

use std::path::Path;

use serde::Serialize;

/// Free space of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskStats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

/// The filesystem holding `path`; `None` when it cannot be read.
pub fn disk(path: &Path) -> Option<DiskStats> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(DiskStats {
        total_bytes: s.f_blocks.saturating_mul(s.f_frsize),
        free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
        total_inodes: s.f_files,
        free_inodes: s.f_favail,
    })
}

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    disk(path).map(|d| d.free_bytes)
}

/// True when `path` is on another filesystem than `/` (the cache volume is mounted there).
pub fn own_volume(path: &Path) -> bool {
    match (rustix::fs::stat(path), rustix::fs::stat("/")) {
        (Ok(a), Ok(b)) => a.st_dev != b.st_dev,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_not_its_own_volume_and_has_room() {
        assert!(!own_volume(Path::new("/")));
        let d = disk(Path::new("/")).unwrap();
        assert!(d.total_bytes >= d.free_bytes);
        assert_eq!(disk(Path::new("/no/such/path")), None);
    }
}

/// The largest build context, and the most an agent may leave in its workspace, unless
/// janitord's settings say otherwise.
pub const MAX_TREE_BYTES: u64 = 4 << 30;

/// The bytes of the regular files under `dir` (links are not followed, `.git` at the top is
/// left out); `Err` names the file that took the total over `max_bytes`, with its size. A
/// sparse file counts at its apparent size: that is what a tar or a diff of it would read.
pub fn tree_bytes(dir: &Path, max_bytes: u64) -> Result<u64, String> {
    fn walk(dir: &Path, top: bool, total: &mut u64, max: u64, root: &Path) -> Result<(), String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            if top && entry.file_name() == ".git" {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            if kind.is_dir() {
                walk(&entry.path(), false, total, max, root)?;
            } else if kind.is_file() {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                *total = total.saturating_add(len);
                if *total > max {
                    let path = entry.path();
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    return Err(format!(
                        "{} ({len} bytes) takes the tree over its {max}-byte limit",
                        rel.display()
                    ));
                }
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, true, &mut total, max_bytes, dir)?;
    Ok(total)
}

/// Gives the tree under `dir` (links not followed) to `uid:gid`, so that the non-root agent
/// can change it. Needs `CAP_CHOWN`, the one capability janitord's unit keeps. Bottom up: a
/// directory is given away after what is in it, since without the DAC capabilities this
/// process cannot list a directory it no longer owns.
pub fn give_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            give_tree(&entry?.path(), uid, gid)?;
        }
    }
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
}

/// Takes back a tree another user wrote (the agent, as uid 10001): top down, each entry is
/// given to this process's user and group (links not followed), then a directory gets its
/// owner's read, write and search bits and a file its owner's read and write bits (execute
/// bits, which git records, are kept). After it, janitord reads, diffs and removes the tree
/// as its owner, whatever modes the other user left (a 0600 `result.json`, a 0500
/// directory), with no capability but `CAP_CHOWN`. Returns how many entries it took back.
pub fn reclaim_tree(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    fn walk(path: &Path, uid: u32, gid: u32) -> std::io::Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
            return Ok(1);
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        let owner = if meta.is_dir() { 0o700 } else { 0o600 };
        let mode = meta.permissions().mode() & 0o7777;
        if (meta.is_dir() || meta.is_file()) && mode & owner != owner {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | owner))?;
        }
        let mut n = 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                n += walk(&entry?.path(), uid, gid)?;
            }
        }
        Ok(n)
    }
    walk(dir, uid, gid)
}

#[cfg(test)]
mod ownership_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tree left with modes its owner cannot read or enter is taken back: owned by this
    /// process, readable, removable; execute bits and links are as they were.
    #[test]
    fn a_tree_another_user_locked_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("locked/deeper")).unwrap();
        std::fs::write(tree.join("locked/deeper/secret"), "x").unwrap();
        std::fs::write(tree.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let set = |p: &str, m: u32| {
            std::fs::set_permissions(tree.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("run.sh", 0o055);
        set("locked/deeper/secret", 0o000);
        set("locked/deeper", 0o000);
        set("locked", 0o000);
        assert_eq!(reclaim_tree(&tree).unwrap(), 6);
        let mode = |p: &str| std::fs::symlink_metadata(tree.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode("locked"), 0o700);
        assert_eq!(mode("locked/deeper/secret"), 0o600);
        assert_eq!(mode("run.sh"), 0o655, "execute bits kept");
        assert_eq!(
            std::fs::read_to_string(tree.join("locked/deeper/secret")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_link(tree.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().mode() & 0o777,
            0o644,
            "a link's target is never touched"
        );
        std::fs::remove_dir_all(&tree).unwrap();
    }
}

#[cfg(test)]
mod tree_tests {
    #[test]
    fn a_sparse_giant_is_named_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/small"), "x").unwrap();
        let f = std::fs::File::create(dir.path().join("a/b/huge.bin")).unwrap();
        f.set_len(64 << 30).unwrap();
        let e = super::tree_bytes(dir.path(), 1 << 30).unwrap_err();
        assert!(e.starts_with("a/b/huge.bin (68719476736 bytes)"), "{e}");
        std::fs::remove_file(dir.path().join("a/b/huge.bin")).unwrap();
        assert_eq!(super::tree_bytes(dir.path(), 1 << 30).unwrap(), 1);
    }
}
