//! The only place janitord runs git. A checkout is untrusted (the repository and the agent
//! write it), so every call: keeps the repository's git directory outside the work tree (and
//! outside every container mount), reads no system, global or repository config it did not
//! write itself, runs no hook, fsmonitor, external diff or textconv driver, speaks only the
//! protocols it was allowed, gets a token only through its environment (never argv), and is
//! killed at its deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

/// The longest one git call may take when its job's deadline is further away.
pub const GIT_CALL_LIMIT: Duration = Duration::from_secs(600);
/// At most this much of git's standard output is kept (a patch, a branch name).
pub const GIT_OUTPUT_LIMIT: usize = 256 * 1024 * 1024;

/// Configuration every host git call runs with, given on the command line so that no file can
/// override it. (The repository's own config lives outside the work tree and is written only
/// by janitord; these hold even if it were not.)
const HARDENING: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.sshCommand=ssh",
    "credential.helper=",
    "protocol.allow=never",
    "submodule.recurse=false",
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "safe.directory=*",
];

/// The most entries [`planted`] walks before it refuses the tree as too large to check.
pub const MAX_TREE_ENTRIES: u64 = 1_000_000;

/// Which transports a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No network: local operations only.
    None,
    /// `https`, `http` and `ssh` (a clone from a forge).
    Remote,
    /// The above, and local paths and `file://` (local runs and tests).
    RemoteAndLocal,
}

impl Transport {
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Transport::None => &[],
            Transport::Remote => &["https", "http", "ssh"],
            Transport::RemoteAndLocal => &["https", "http", "ssh", "file"],
        }
    }
}

/// Why a git call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitError {
    /// git could not be started.
    Spawn(String),
    /// It ran past its deadline and was killed.
    Deadline { command: String },
    /// It exited non-zero: what it said on standard error.
    Failed { command: String, stderr: String },
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Spawn(e) => write!(f, "cannot run git: {e} (is git installed?)"),
            GitError::Deadline { command } => {
                write!(f, "git {command} ran past its deadline and was stopped")
            }
            GitError::Failed { command, stderr } => write!(f, "git {command} failed: {stderr}"),
        }
    }
}

impl std::error::Error for GitError {}

/// A git command with janitord's isolation: a clean environment (only `PATH`, the operator's
/// proxy variables and git's own switches), no config files, the hardening above, and only the
/// transports asked for.
pub fn isolated(transport: Transport) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear();
    for keep in [
        "PATH",
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.env("HOME", "/nonexistent")
        .env("LANG", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0");
    for c in HARDENING {
        cmd.arg("-c").arg(c);
    }
    for p in transport.allowed() {
        cmd.arg("-c").arg(format!("protocol.{p}.allow=always"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A checkout whose git directory is kept apart from its work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    pub git_dir: PathBuf,
    pub work_tree: PathBuf,
    /// No call runs past this.
    pub deadline: Instant,
}

impl Repo {
    /// The job's checkout: the work tree at `job_dir/repo`, its git directory at `job_dir/git`.
    pub fn for_job(job_dir: &Path, deadline: Instant) -> Repo {
        Repo {
            git_dir: job_dir.join("git"),
            work_tree: job_dir.join("repo"),
            deadline,
        }
    }

    fn command(&self, transport: Transport) -> tokio::process::Command {
        let mut cmd = isolated(transport);
        cmd.arg("--git-dir")
            .arg(&self.git_dir)
            .arg("--work-tree")
            .arg(&self.work_tree)
            .current_dir(&self.work_tree);
        cmd
    }

    /// Runs `git ARGS` on this checkout with no network; its standard output.
    pub async fn run(&self, args: &[&str]) -> Result<String, GitError> {
        self.run_with(args, Transport::None, &[]).await
    }

    /// Runs `git ARGS` with the transports given and extra environment (a token's
    /// `GIT_CONFIG_*`, so that it never appears in argv).
    pub async fn run_with(
        &self,
        args: &[&str],
        transport: Transport,
        env: &[(String, String)],
    ) -> Result<String, GitError> {
        let mut cmd = self.command(transport);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(cmd, args.first().copied().unwrap_or(""), self.deadline).await
    }
}

/// Runs a prepared command to its end or its deadline (the earlier of `deadline` and
/// [`GIT_CALL_LIMIT`] from now); stdout on success.
pub async fn output(
    mut cmd: tokio::process::Command,
    name: &str,
    deadline: Instant,
) -> Result<String, GitError> {
    let limit = deadline.min(Instant::now() + GIT_CALL_LIMIT);
    let child = cmd.spawn().map_err(|e| GitError::Spawn(e.to_string()))?;
    // kill_on_drop: a timed-out call's process is killed when the future is dropped.
    let out = match tokio::time::timeout_at(limit, child.wait_with_output()).await {
        Err(_) => {
            return Err(GitError::Deadline {
                command: name.to_string(),
            })
        }
        Ok(Err(e)) => return Err(GitError::Spawn(e.to_string())),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        let stdout = &out.stdout[..out.stdout.len().min(GIT_OUTPUT_LIMIT)];
        Ok(String::from_utf8_lossy(stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.trim().chars().take(2000).collect();
        Err(GitError::Failed {
            command: name.to_string(),
            stderr,
        })
    }
}

/// `GIT_CONFIG_COUNT`/`KEY`/`VALUE` that give git an `Authorization` header for URLs under
/// `url_prefix` only (git sends it to no other host, and not after a redirect elsewhere).
pub fn token_env(url_prefix: &str, token: &str) -> Vec<(String, String)> {
    vec![
        ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
        (
            "GIT_CONFIG_KEY_0".to_string(),
            format!("http.{}/.extraHeader", url_prefix.trim_end_matches('/')),
        ),
        (
            "GIT_CONFIG_VALUE_0".to_string(),
            format!("Authorization: Basic {}", basic_credentials(token)),
        ),
    ]
}

/// The token as HTTP basic credentials, as git sends it (also redacted wherever it appears).
pub fn basic_credentials(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

/// The first `.git` (directory, file or link, at any depth, in any letter case) in the work
/// tree, as a path relative to it. janitord keeps the repository's git directory elsewhere and
/// a clone checks out none, so one there was written by the checkout's user: a nested
/// repository whose own config (a filter, fsmonitor or hook) host git would run while it
/// looks at the gitlink. Links are not followed; `Err` when the tree cannot be read or holds
/// more than [`MAX_TREE_ENTRIES`] entries.
pub fn planted(work_tree: &Path) -> Result<Option<PathBuf>, String> {
    let mut seen = 0u64;
    let mut dirs = vec![work_tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            seen += 1;
            if seen > MAX_TREE_ENTRIES {
                return Err(format!(
                    "the tree holds more than {MAX_TREE_ENTRIES} files and directories"
                ));
            }
            let path = entry.path();
            if entry.file_name().eq_ignore_ascii_case(".git") {
                return Ok(Some(
                    path.strip_prefix(work_tree).unwrap_or(&path).to_path_buf(),
                ));
            }
            // `file_type` is the entry's own (a link is a link, never followed).
            if entry
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .is_dir()
            {
                dirs.push(path);
            }
        }
    }
    Ok(None)
}

/// The paths the index holds as gitlinks (mode 160000: a submodule's commit), which a change
/// must not touch and `git add` must not look into. `git ls-files` reads only the index.
pub async fn gitlinks(repo: &Repo) -> Result<Vec<String>, GitError> {
    let listed = repo.run(&["ls-files", "-s", "-z"]).await?;
    Ok(listed
        .split('\0')
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            meta.starts_with("160000 ").then(|| path.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_in_the_environment_scoped_to_one_host() {
        let env = token_env("https://github.com/", "ghp_x");
        assert_eq!(env[1].1, "http.https://github.com/.extraHeader");
        assert!(env[2].1.starts_with("Authorization: Basic "));
        assert!(!env.iter().any(|(_, v)| v.contains("ghp_x")), "{env:?}");
    }

    #[test]
    fn argv_has_no_secret_and_every_hardening() {
        let cmd = isolated(Transport::Remote);
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for h in HARDENING {
            assert!(args.iter().any(|a| a == h), "{h} in {args:?}");
        }
        assert!(args.iter().any(|a| a == "protocol.https.allow=always"));
        assert!(!args.iter().any(|a| a.contains("file.allow")));
        let envs: Vec<_> = cmd
            .as_std()
            .get_envs()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(envs.contains(&"GIT_CONFIG_NOSYSTEM".to_string()));
        assert!(envs.contains(&"GIT_CONFIG_GLOBAL".to_string()));
    }

    #[test]
    fn a_git_at_any_depth_is_found_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), "x").unwrap();
        assert_eq!(planted(&tree).unwrap(), None);
        // A link to a directory holding a .git is a link, not a directory to walk.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join(".git")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/linked")).unwrap();
        assert_eq!(planted(&tree).unwrap(), None);
        std::fs::create_dir_all(tree.join("a/b/sub/.git")).unwrap();
        assert_eq!(planted(&tree).unwrap(), Some(PathBuf::from("a/b/sub/.git")));
        std::fs::remove_dir(tree.join("a/b/sub/.git")).unwrap();
        std::fs::write(tree.join("a/.GIT"), "gitdir: /elsewhere").unwrap();
        assert_eq!(planted(&tree).unwrap(), Some(PathBuf::from("a/.GIT")));
        std::fs::remove_file(tree.join("a/.GIT")).unwrap();
        std::os::unix::fs::symlink("/tmp", tree.join(".git")).unwrap();
        assert_eq!(planted(&tree).unwrap(), Some(PathBuf::from(".git")));
    }
}
