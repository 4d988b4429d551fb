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
