//! What one job's run needs besides its services: the job, the attempt, where it works, the
//! graces; and the names it gives to its images and containers.

use std::collections::HashMap;
use std::path::PathBuf;

use janitor_model::job::Job;
use janitor_model::report::{InstanceInfo, LogRef};
use janitor_services::engine::{Graces, INSTANCE_LABEL};

/// Everything the pipeline needs besides the engine, the registry login and the log sink.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job: Job,
    pub attempt: u32,
    pub instance: InstanceInfo,
    /// Job workspaces are made under here (on the cache volume on real instances).
    pub work_root: PathBuf,
    /// Between SIGTERM and SIGKILL when a container must stop.
    pub graces: Graces,
    pub allow_local_repos: bool,
    pub log_ref: Option<LogRef>,
    /// Build secrets, a file per id.
    pub secrets_dir: PathBuf,
    /// Where fixes are published; `None` without a GitHub token (the patch is kept).
    pub publish: Option<crate::publish::PublishSettings>,
    /// The job's secrets (`secrets:`), fetched when it started; redacted from everything it
    /// writes and reports.
    pub secrets: janitor_services::secrets::SecretValues,
    /// The agent container's user and limits.
    pub agent_limits: crate::agent::AgentLimits,
    /// `KEY=value` credentials minted for this job's agent (Bedrock's short-lived role
    /// credentials); redacted like secrets.
    pub agent_credentials: Vec<String>,
}

/// The largest file of the secrets directory read for redaction.
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

impl JobContext {
    /// Everything that must not leave the instance, for this job: its secrets, the publish
    /// token (and its HTTP basic form), and every value in the secrets directory.
    pub fn redactor(&self) -> janitor_services::secrets::Redactor {
        let mut also = Vec::new();
        if let Some(p) = &self.publish {
            also.push(p.token.clone());
            also.push(crate::git::basic_credentials(&p.token));
        }
        if let Ok(entries) = std::fs::read_dir(&self.secrets_dir) {
            for entry in entries.flatten() {
                let regular = entry.file_type().is_ok_and(|t| t.is_file());
                let small = entry.metadata().is_ok_and(|m| m.len() <= SECRET_FILE_LIMIT);
                if regular && small {
                    if let Ok(text) = std::fs::read_to_string(entry.path()) {
                        also.push(text.trim_end_matches('\n').to_string());
                    }
                }
            }
        }
        also.extend(
            self.agent_credentials
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.to_string())),
        );
        self.secrets.redactor(&also)
    }
}

/// Labels on a job's containers: restart recovery reads them to record the crashed attempt.
pub fn job_labels(ctx: &JobContext) -> HashMap<String, String> {
    HashMap::from([
        ("janitor.job_id".to_string(), ctx.job.job_id.clone()),
        ("janitor.run_id".to_string(), ctx.job.run_id.clone()),
        ("janitor.attempt".to_string(), ctx.attempt.to_string()),
        (INSTANCE_LABEL.to_string(), ctx.instance.id.clone()),
    ])
}

/// The image tag a repository builds to: one per repository, so rebuilds replace it, and
/// never one another repository's name maps to. GitHub's names are case-insensitive, so the
/// path is lower case; a name that is already a valid Docker path component is used as it is
/// with the tag `latest` (`worker-basic`, `worker.x` and `worker_x` stay apart); any other is
/// written with `-` for what Docker refuses and tagged `n-` and a hash of the exact
/// lower-cased `org/name`, a tag no `latest` can equal.
pub fn image_tag(org: &str, name: &str) -> String {
    let (org, name) = (org.to_ascii_lowercase(), name.to_ascii_lowercase());
    if docker_component(&org) && docker_component(&name) {
        return format!("janitor/{org}/{name}:latest");
    }
    let clean = |s: &str| {
        let mapped: String = s
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let trimmed = mapped.trim_matches('-').to_string();
        if trimmed.is_empty() {
            "x".to_string()
        } else {
            trimmed
        }
    };
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{org}/{name}").as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("janitor/{}/{}:n-{hash}", clean(&org), clean(&name))
}

/// Whether `s` is one path component of a Docker repository name as it is:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn docker_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let dashes = sep.bytes().all(|c| c == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_docker_safe_and_never_shared() {
        assert_eq!(
            image_tag("runpod-workers", "worker-faster_whisper"),
            "janitor/runpod-workers/worker-faster_whisper:latest"
        );
        assert_eq!(image_tag("Org", "A.b"), "janitor/org/a.b:latest");
        assert_eq!(
            image_tag("org", "a.b"),
            image_tag("ORG", "A.B"),
            "one GitHub repository"
        );
        let names = [
            "worker.x",
            "worker-x",
            "worker_x",
            "worker__x",
            "worker--x",
            "worker---x",
            ".worker-x",
            "worker-x.",
            "-worker-x",
            "worker-.x",
            "worker._x",
            "worker..x",
            "_x",
            "x_",
            ".x",
            "x",
            "__",
            "-",
            "..",
            "worker_-x",
        ];
        let tags: Vec<String> = names.iter().map(|n| image_tag("org", n)).collect();
        for (i, a) in tags.iter().enumerate() {
            assert!(
                bollard_safe(a),
                "{a} (from {}) is not a valid image reference",
                names[i]
            );
            for (j, b) in tags.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {} share a tag", names[i], names[j]);
            }
        }
    }

    /// Docker's reference grammar for `janitor/<component>/<component>:<tag>`.
    fn bollard_safe(reference: &str) -> bool {
        let Some((path, tag)) = reference.rsplit_once(':') else {
            return false;
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        tag_ok && path.split('/').all(docker_component)
    }
}
