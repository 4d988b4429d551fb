//! Filesystem facts: free space and inodes, and whether a path is on its own volume.

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
