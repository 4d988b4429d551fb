//! The `clone` step: a shallow `git clone` of the repository at its ref (through the isolated
//! runner of [`crate::git`], its git directory beside the work tree, never in it), or a copy of
//! a local directory that is not a git repository (local runs), bounded by the job's deadline.

use std::path::Path;

use janitor_model::names::{self, CloneSource};
use janitor_services::engine::StopReason;
use janitor_services::logs::LogSink;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::JobContext;
use crate::steps::StepOutcome;

/// Clones (or copies) the job's repository into `dest`.
pub async fn clone(
    ctx: &JobContext,
    dest: &Path,
    deadline: Instant,
    cancel: &CancellationToken,
    sink: &dyn LogSink,
) -> StepOutcome {
    let repo = &ctx.job.spec.repo;
    let url = repo.clone_url();
    let source = match names::check_url(&url, ctx.allow_local_repos, None) {
        Ok(s) => s,
        Err(e) => return StepOutcome::failed(e),
    };
    if let CloneSource::Local(path) = &source {
        if !path.join(".git").exists() {
            if repo.git_ref.is_some() {
                return StepOutcome::failed(format!(
                    "{} is not a git repository, so `ref` cannot be checked out",
                    path.display()
                ));
            }
            let (from, to) = (path.clone(), dest.to_path_buf());
            return match tokio::task::spawn_blocking(move || copy_tree(&from, &to)).await {
                Ok(Ok(files)) => StepOutcome::succeeded(format!(
                    "copied {files} files from the local directory {} (not a git repository)",
                    path.display()
                )),
                Ok(Err(e)) => StepOutcome::failed(format!("cannot copy {}: {e}", path.display())),
                Err(e) => StepOutcome::failed(format!("copy task failed: {e}")),
            };
        }
    }
    let repo_git = crate::git::Repo::for_job(dest.parent().unwrap_or(dest), deadline);
    // The git directory is kept apart from the work tree (which the agent gets): nothing
    // written into the checkout can configure the host's git.
    let transport = if ctx.allow_local_repos {
        crate::git::Transport::RemoteAndLocal
    } else {
        crate::git::Transport::Remote
    };
    let mut cmd = crate::git::isolated(transport);
    cmd.arg("clone")
        .arg("--depth=1")
        .arg("--single-branch")
        .arg("--no-tags")
        .arg("--no-recurse-submodules")
        .arg(format!("--separate-git-dir={}", repo_git.git_dir.display()));
    if let Some(r) = &repo.git_ref {
        cmd.arg("--branch").arg(r);
    }
    cmd.arg("--").arg(&url).arg(dest);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return StepOutcome::error(format!("cannot start git: {e} (is git installed?)")),
    };
    let mut tail = Vec::new();
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return StepOutcome::failed("git's output could not be read");
    };
    let mut out = BufReader::new(out).lines();
    let mut err = BufReader::new(err).lines();
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => sink.line(&format!("[clone] {}", bounded(&l))),
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) => {
                    let l = bounded(&l);
                    sink.line(&format!("[clone] {l}"));
                    tail.push(l);
                    if tail.len() > 3 { tail.remove(0); }
                }
                _ => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            () = tokio::time::sleep_until(deadline) => {
                let _ = child.kill().await;
                return StepOutcome::stopped(StopReason::Deadline, ctx.job.spec.timeout);
            }
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return StepOutcome::stopped(StopReason::Interrupted, ctx.job.spec.timeout);
            }
        }
    };
    match status {
        Ok(s) if s.success() => {
            // The `.git` file clone leaves in the work tree points at the git directory: it
            // goes, so the agent's workspace has no way back to it.
            let _ = std::fs::remove_file(dest.join(".git"));
            let head = repo_git
                .run(&["rev-parse", "HEAD"])
                .await
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string());
            StepOutcome::succeeded(format!("cloned {url} at {head}"))
        }
        Ok(s) => {
            let said = tail.join(" / ");
            let detail = format!("git clone {url} failed ({s}): {said}");
            if is_network_failure(&said) {
                StepOutcome::error(detail)
            } else {
                StepOutcome::failed(detail)
            }
        }
        Err(e) => StepOutcome::error(format!("git clone {url} failed: {e}")),
    }
}

/// One line of git's output, cut to a length a log line can hold.
fn bounded(line: &str) -> String {
    const MAX: usize = 4096;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// What git prints when the network, not the repository, is the problem.
const NETWORK_FAILURES: &[&str] = &[
    "could not resolve host",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "connection reset",
    "operation timed out",
    "network is unreachable",
    "temporary failure in name resolution",
    "the remote end hung up unexpectedly",
    "early eof",
    "rpc failed",
    "tls",
    "ssl",
    "returned error: 5",
];

/// Whether git's last lines say the network failed (the job is tried again) rather than the
/// repository (it does not exist, the ref is not there).
pub fn is_network_failure(said: &str) -> bool {
    let lower = said.to_ascii_lowercase();
    NETWORK_FAILURES.iter().any(|m| lower.contains(m))
}

/// Copies a directory tree (regular files and directories; links, special files and any
/// `.git` — a nested repository's history, which host git must never look into — are left
/// out). Returns the file count.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut files = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name().eq_ignore_ascii_case(".git") {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            files += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::is_network_failure;

    #[test]
    fn network_or_repository() {
        assert!(is_network_failure(
            "fatal: unable to access 'https://github.com/o/r/': Could not resolve host: github.com"
        ));
        assert!(is_network_failure("fatal: unable to access 'http://127.0.0.1:1/r.git/': Failed to connect to 127.0.0.1 port 1"));
        assert!(is_network_failure(
            "error: RPC failed; curl 56 GnuTLS recv error / fatal: early EOF"
        ));
        assert!(!is_network_failure("remote: Repository not found. / fatal: repository 'https://github.com/o/nope/' not found"));
        assert!(!is_network_failure("warning: Could not find remote branch v9 to clone. / fatal: Remote branch v9 not found in upstream origin"));
    }
}
