//! The one door through which janitord reads a repository's own files (its Dockerfile, tests
//! files, hub.json, workflows): a path whose real location leaves the checkout is refused, the
//! file is opened without following a last link and without blocking (a FIFO cannot hold the
//! open), only a regular file is read, and at most its limit is read. The async form runs the
//! read off the async threads and gives up at the job's deadline, whatever the kernel does.

use std::io::Read as _;
use std::path::Path;

use tokio::time::Instant;

/// The largest Dockerfile read (the largest public ones are a few tens of KiB).
pub const MAX_DOCKERFILE_BYTES: u64 = 1024 * 1024;

/// Why a repository file was not read. Each says which file, as the repository names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// Its real path (through a link anywhere on the way) is outside the checkout.
    OutOfTree {
        rel: String,
    },
    /// A FIFO, a device, a socket or a directory.
    NotRegular {
        rel: String,
        kind: &'static str,
    },
    TooLarge {
        rel: String,
        bytes: u64,
        limit: u64,
    },
    NotText {
        rel: String,
    },
    /// The read did not end before the job's deadline.
    Deadline {
        rel: String,
    },
    Io {
        rel: String,
        message: String,
    },
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::OutOfTree { rel } => write!(
                f,
                "{rel} is a link out of the repository; it must be a file in the repository"
            ),
            FileError::NotRegular { rel, kind } => {
                write!(f, "{rel} is {kind}, not a regular file")
            }
            FileError::TooLarge { rel, bytes, limit } => write!(
                f,
                "{rel} is {bytes} bytes, over the {limit}-byte limit for this file"
            ),
            FileError::NotText { rel } => write!(f, "{rel} is not UTF-8 text"),
            FileError::Deadline { rel } => {
                write!(f, "reading {rel} did not finish before the job's deadline")
            }
            FileError::Io { rel, message } => write!(f, "cannot read {rel}: {message}"),
        }
    }
}

impl std::error::Error for FileError {}

fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Reads `rel` under `root` as text: `Ok(None)` when there is no such file.
pub fn read_text(root: &Path, rel: &str, limit: u64) -> Result<Option<String>, FileError> {
    let io = |e: std::io::Error| FileError::Io {
        rel: rel.to_string(),
        message: e.to_string(),
    };
    let path = root.join(rel);
    // Resolving reads links, never the files: a FIFO or a device on the way does not block.
    let real = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link is a link to somewhere else, not a missing file.
            return match std::fs::symlink_metadata(&path) {
                Ok(_) => Err(FileError::OutOfTree {
                    rel: rel.to_string(),
                }),
                Err(_) => Ok(None),
            };
        }
        Err(e) => return Err(io(e)),
    };
    let top = std::fs::canonicalize(root).map_err(io)?;
    if !real.starts_with(&top) {
        return Err(FileError::OutOfTree {
            rel: rel.to_string(),
        });
    }
    let file = open_no_follow(&real).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            FileError::OutOfTree {
                rel: rel.to_string(),
            }
        } else {
            io(e)
        }
    })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            rel: rel.to_string(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            rel: rel.to_string(),
            bytes: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            rel: rel.to_string(),
            bytes: bytes.len() as u64,
            limit,
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| FileError::NotText {
            rel: rel.to_string(),
        })
}

/// Read-only, not through a last link, not blocking on a FIFO's writer, never becoming the
/// controlling terminal.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
}

/// [`read_text`] off the async threads, given up at `deadline`.
pub async fn read_text_by(
    root: &Path,
    rel: &str,
    limit: u64,
    deadline: Instant,
) -> Result<Option<String>, FileError> {
    let (root, name) = (root.to_path_buf(), rel.to_string());
    let task = tokio::task::spawn_blocking(move || read_text(&root, &name, limit));
    match tokio::time::timeout_at(deadline, task).await {
        Err(_) => Err(FileError::Deadline {
            rel: rel.to_string(),
        }),
        Ok(Err(e)) => Err(FileError::Io {
            rel: rel.to_string(),
            message: e.to_string(),
        }),
        Ok(Ok(read)) => read,
    }
}

/// Runs blocking work on the repository's files (discovery reads several) off the async
/// threads, given up at `deadline`; `what` names it in the error.
pub async fn by_deadline<T: Send + 'static>(
    deadline: Instant,
    what: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(work)).await {
        Err(_) => Err(format!("{what} did not finish before the job's deadline")),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Ok(Ok(r)) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/sub")).unwrap();
        std::fs::write(dir.path().join("repo/sub/Dockerfile"), "FROM x\n").unwrap();
        dir
    }

    #[test]
    fn a_file_in_the_tree_is_read_and_a_missing_one_is_none() {
        let dir = tree();
        let repo = dir.path().join("repo");
        assert_eq!(
            read_text(&repo, "sub/Dockerfile", 100).unwrap().as_deref(),
            Some("FROM x\n")
        );
        assert_eq!(read_text(&repo, "Dockerfile", 100).unwrap(), None);
        // A link inside the tree to a file inside the tree is that file.
        std::os::unix::fs::symlink("sub/Dockerfile", repo.join("Dockerfile")).unwrap();
        assert_eq!(
            read_text(&repo, "Dockerfile", 100).unwrap().as_deref(),
            Some("FROM x\n")
        );
    }

    /// `/dev/zero`, a FIFO (which would block the open forever), a host file, a dangling
    /// link, a directory and a file over its limit: each refused by name, at once.
    #[test]
    fn devices_fifos_links_out_and_giants_are_refused_at_once() {
        let dir = tree();
        let repo = dir.path().join("repo");
        std::os::unix::fs::symlink("/dev/zero", repo.join("zero")).unwrap();
        assert_eq!(
            read_text(&repo, "zero", 1 << 20).unwrap_err(),
            FileError::OutOfTree { rel: "zero".into() }
        );
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            repo.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            read_text(&repo, "fifo", 1 << 20).unwrap_err().to_string(),
            "fifo is a FIFO, not a regular file"
        );
        std::os::unix::fs::symlink("fifo", repo.join("to-fifo")).unwrap();
        assert_eq!(
            read_text(&repo, "to-fifo", 1 << 20)
                .unwrap_err()
                .to_string(),
            "to-fifo is a FIFO, not a regular file"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        std::fs::write(dir.path().join("host"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("host"), repo.join("host")).unwrap();
        assert!(matches!(
            read_text(&repo, "host", 100),
            Err(FileError::OutOfTree { .. })
        ));
        std::os::unix::fs::symlink("/nonexistent/x", repo.join("dangling")).unwrap();
        assert!(matches!(
            read_text(&repo, "dangling", 100),
            Err(FileError::OutOfTree { .. })
        ));
        assert_eq!(
            read_text(&repo, "sub", 100).unwrap_err().to_string(),
            "sub is a directory, not a regular file"
        );
        assert_eq!(
            read_text(&repo, "sub/Dockerfile", 3)
                .unwrap_err()
                .to_string(),
            "sub/Dockerfile is 7 bytes, over the 3-byte limit for this file"
        );
    }

    #[tokio::test]
    async fn the_deadline_holds() {
        let dir = tree();
        let past = Instant::now();
        let slow = by_deadline(past, "reading the tests", || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        })
        .await;
        assert_eq!(
            slow.unwrap_err(),
            "reading the tests did not finish before the job's deadline"
        );
        let later = Instant::now() + std::time::Duration::from_secs(10);
        assert!(
            read_text_by(&dir.path().join("repo"), "sub/Dockerfile", 100, later)
                .await
                .unwrap()
                .is_some()
        );
    }
}
