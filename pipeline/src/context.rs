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

/// The image tag a repository builds to: one per repository, so rebuilds replace it.
pub fn image_tag(org: &str, name: &str) -> String {
    let clean = |s: &str| {
        let lowered: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let trimmed = lowered.trim_matches('-').to_string();
        if trimmed.is_empty() {
            "x".to_string()
        } else {
            trimmed
        }
    };
    format!("janitor/{}/{}:latest", clean(org), clean(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_docker_safe() {
        assert_eq!(
            image_tag("runpod-workers", "worker-faster_whisper"),
            "janitor/runpod-workers/worker-faster-whisper:latest"
        );
        assert_eq!(image_tag("Org", "A.b"), "janitor/org/a-b:latest");
    }
}
