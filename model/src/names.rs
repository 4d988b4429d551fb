//! Checks for the names and strings that end up in URLs, S3 keys, log streams and Docker calls.

use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are literals in this file, covered by the tests below: they compile.
    #[allow(clippy::expect_used)]
    cell.get_or_init(|| Regex::new(pattern).expect("static regex"))
}

/// GitHub's rules for an organization or user login: letters, digits and single hyphens,
/// not at either end, at most 39 characters.
pub fn check_organization(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if s.len() > 39 {
        return Err(format!(
            "`{s}` is longer than GitHub's 39 characters for an organization"
        ));
    }
    if !re(&R, r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$").is_match(s) {
        return Err(format!(
            "`{s}` is not a GitHub organization name: use letters, digits and single hyphens, not at the start or end"
        ));
    }
    Ok(())
}

/// GitHub's rules for a repository name: letters, digits, `.`, `_`, `-`, at most 100
/// characters, and not `.` or `..`.
pub fn check_repo_name(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if s.is_empty() || s.len() > 100 {
        return Err(format!("`{s}` must be 1 to 100 characters long"));
    }
    if s == "." || s == ".." || s.ends_with(".git") {
        return Err(format!("`{s}` is not a usable repository name"));
    }
    if !re(&R, r"^[A-Za-z0-9._-]+$").is_match(s) {
        return Err(format!(
            "`{s}` is not a GitHub repository name: use letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// Run and job ids: they become S3 key segments, log stream names and container names.
pub fn check_id(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if !re(&R, r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$").is_match(s) {
        return Err(format!(
            "`{s}` is not a valid id: 1 to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// A git ref as `git clone --branch` takes it (branch or tag).
/// A build secret's id (`RUN --mount=type=secret,id=ID`), also its file name under the
/// daemon's secrets directory.
pub fn check_secret_id(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a secret id (1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`)"))
    }
}

pub fn check_ref(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("@{")
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(format!(
            "`{s}` is not a git branch or tag name (no spaces, `..`, `~^:?*[\\`, leading `-`)"
        ));
    }
    Ok(())
}

/// A pool's name, as Terraform's `pools` map keys it: `gpu-48`.
pub fn check_pool(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if !re(&R, r"^[a-z][a-z0-9-]{0,19}$").is_match(s) {
        return Err(format!(
            "`{s}` is not a pool name: 1 to 20 lowercase letters, digits or `-`, starting with a letter (such as `gpu-48`)"
        ));
    }
    Ok(())
}

/// An instance type such as `g5.xlarge`.
pub fn check_instance_type(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if !re(&R, r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$").is_match(s) {
        return Err(format!(
            "`{s}` is not an EC2 instance type such as `g5.xlarge`"
        ));
    }
    Ok(())
}

/// A Docker image reference such as `ghcr.io/org/agent:1.2` or `janitor-agent@sha256:…`.
pub fn check_image(s: &str) -> Result<(), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";
    if !re(&R, pattern).is_match(s) {
        return Err(format!(
            "`{s}` is not a Docker image reference such as `registry/name:tag`"
        ));
    }
    Ok(())
}

/// A path inside the repository: relative, and never climbing out of it.
pub fn check_repo_path(s: &str) -> Result<(), String> {
    let path = std::path::Path::new(s);
    if s.is_empty() || path.is_absolute() {
        return Err(format!(
            "`{s}` must be a path relative to the repository root"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("`{s}` must stay inside the repository (no `..`)"));
    }
    Ok(())
}

/// Where a repository is cloned from: a remote URL, or a local one when allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneSource {
    Remote(String),
    Local(std::path::PathBuf),
}

/// Checks a clone URL override. `file://` URLs (and, with `base`, relative paths such as
/// `./repos/x`) are local and accepted only when `allow_local` is set.
pub fn check_url(
    s: &str,
    allow_local: bool,
    base: Option<&std::path::Path>,
) -> Result<CloneSource, String> {
    let local = if let Some(rest) = s.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "`{s}` must be an absolute file:// URL such as file:///srv/repos/x"
            ));
        }
        Some(std::path::PathBuf::from(rest))
    } else if s.starts_with("./") || s.starts_with("../") || s.starts_with('/') {
        match base {
            Some(base) => Some(base.join(s)),
            None if s.starts_with('/') => Some(std::path::PathBuf::from(s)),
            None => {
                return Err(format!(
                    "`{s}`: a relative path needs a config file to be relative to"
                ))
            }
        }
    } else {
        None
    };
    if let Some(path) = local {
        if !allow_local {
            return Err(format!(
                "`{s}` is a local repository, refused unless local repositories are allowed (janitorctl --allow-local-repos, janitord --allow-local-repos, or `run --local`)"
            ));
        }
        return Ok(CloneSource::Local(path));
    }
    let remote_ok = ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|p| s.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
        || (s.starts_with("git@") && s.contains(':'));
    if !remote_ok || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{s}` is not a clone URL: use https://host/org/name, ssh://…, git@host:org/name, or file:///path for local repositories"
        ));
    }
    Ok(CloneSource::Remote(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizations() {
        for ok in ["runpod-workers", "a", "A1-b2"] {
            assert!(check_organization(ok).is_ok(), "{ok}");
        }
        for bad in ["-x", "x-", "a--b", "a_b", "", &"a".repeat(40)] {
            assert!(check_organization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_names() {
        for ok in ["worker-basic", "worker-faster_whisper", "a.b"] {
            assert!(check_repo_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "x.git"] {
            assert!(check_repo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("https://github.com/a/b", false, None).is_ok());
        assert!(check_url("git@github.com:a/b.git", false, None).is_ok());
        assert!(check_url("file:///tmp/x", false, None).is_err());
        assert_eq!(
            check_url("file:///tmp/x", true, None),
            Ok(CloneSource::Local("/tmp/x".into()))
        );
        assert_eq!(
            check_url("./r", true, Some(std::path::Path::new("/cfg"))),
            Ok(CloneSource::Local("/cfg/./r".into()))
        );
        assert!(check_url("github.com/a/b", true, None).is_err());
    }

    #[test]
    fn images_refs_paths_ids() {
        assert!(check_image("janitor-agent:latest").is_ok());
        assert!(check_image("123.dkr.ecr.us-east-1.amazonaws.com/janitor/agent:v1").is_ok());
        assert!(check_image("Bad Image").is_err());
        assert!(check_ref("main").is_ok());
        assert!(check_ref("v1.2/x").is_ok());
        assert!(check_ref("a..b").is_err());
        assert!(check_repo_path("docker/Dockerfile").is_ok());
        assert!(check_repo_path("../x").is_err());
        assert!(check_repo_path("/etc/passwd").is_err());
        assert!(check_id("worker-basic-1a2b").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_instance_type("g5.xlarge").is_ok());
        assert!(check_instance_type("g5").is_err());
    }
}
