//! The `agent` step's container: the agent image (pulled with the registry login when it is
//! not present) runs confined (a non-root user, no capabilities, no new privileges, a
//! read-only root with a tmpfs `/tmp`, memory, CPU and process limits) with the checkout
//! read-write at `/workspace` (no `.git` in it) and a fresh `/janitor` per attempt holding
//! `job.json`; it answers in `/janitor/result.json`, read without following links and bounded.
//! It gets only the secrets whose audience is the agent.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use janitor_model::audience::{may_see, Audience};
use janitor_services::disk;
use janitor_services::engine::{Confinement, ContainerEngine, ContainerSpec};
use janitor_services::registry::RegistryAuth;

use crate::context::job_labels;
use crate::steps::{StepEnv, StepOutcome};

/// What the agent is given, inside its `/janitor` mount.
pub const AGENT_INPUT: &str = "job.json";
/// The file an agent writes its answer to, inside its `/janitor` mount.
pub const AGENT_OUTPUT: &str = "result.json";
/// What an agent may answer in `result.json`'s `status`; `error` says its model API failed
/// (the instance's problem: the job is tried again).
pub const AGENT_STATUSES: &[&str] = &["passed", "fixed", "failed", "unfixable", "error"];
/// At most this much agent output is merged into the report.
const AGENT_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// The agent container's user and limits (janitord's settings; these are the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLimits {
    pub uid: u32,
    pub gid: u32,
    pub memory_bytes: i64,
    pub cpus: f64,
    pub pids: i64,
    /// The size of its `/tmp` (and `HOME`).
    pub tmp_bytes: u64,
    /// Docker network mode (`bridge` when unset).
    pub network: Option<String>,
    /// `KEY=value` the operator gives every agent (the model's endpoint and name, Bedrock's
    /// switch); secrets never go here, they come from the job's `secrets:`.
    pub env: Vec<String>,
    /// The agent a job that asks for one (`agent:`) without naming an image gets: janitor's
    /// own (on instances, the ECR image Terraform names).
    pub default_image: Option<String>,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            uid: 10001,
            gid: 10001,
            memory_bytes: 8 << 30,
            cpus: 2.0,
            pids: 4096,
            tmp_bytes: 2 << 30,
            network: None,
            env: Vec::new(),
            default_image: None,
        }
    }
}

impl AgentLimits {
    /// The engine's options for these limits.
    pub fn confinement(&self) -> Confinement {
        Confinement {
            user: Some(format!("{}:{}", self.uid, self.gid)),
            drop_all_capabilities: true,
            no_new_privileges: true,
            read_only_root: true,
            tmpfs: vec![(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}", self.tmp_bytes),
            )],
            memory_bytes: Some(self.memory_bytes),
            nano_cpus: Some((self.cpus * 1e9) as i64),
            pids_limit: Some(self.pids),
            network: self.network.clone(),
        }
    }
}

/// Where the agent works and what it is told.
pub struct AgentInput<'a> {
    pub image: &'a str,
    pub repo_dir: &'a Path,
    /// Each attempt gets a fresh directory under here as its `/janitor`.
    pub io_root: &'a Path,
    /// `/janitor/job.json`.
    pub job: &'a serde_json::Value,
    /// The round: 1 for the first attempt.
    pub attempt: u32,
}

/// Makes sure the agent image is present: pulled with the registry's login when it has one
/// (ECR), anonymously otherwise. (janitord also calls it at start for `prefetch_images`.)
pub async fn ensure_image<E: ContainerEngine, R: RegistryAuth>(
    engine: &E,
    registry: &R,
    image: &str,
) -> Result<(), String> {
    if engine.has_image(image).await {
        return Ok(());
    }
    let credentials = match registry.credentials(image).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, image, "no registry login; pulling the agent image anonymously");
            None
        }
    };
    engine
        .pull(image, credentials.as_ref())
        .await
        .map_err(|e| format!("agent image {image} is not present and could not be pulled: {e}"))
}

/// Takes the trees the agent wrote back before anything reads them (see
/// [`disk::reclaim_tree`]), off the async threads.
async fn take_back(dirs: &[&Path]) -> Result<(), String> {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    tokio::task::spawn_blocking(move || {
        for d in &dirs {
            disk::reclaim_tree(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A fresh `/janitor` for this attempt with `job.json` in it, created anew (never through a
/// link or over a file an earlier attempt left).
fn prepare_io(input: &AgentInput<'_>, limits: &AgentLimits) -> Result<PathBuf, String> {
    let dir = input.io_root.join(format!("attempt-{}", input.attempt));
    std::fs::create_dir_all(input.io_root)
        .map_err(|e| format!("cannot create {}: {e}", input.io_root.display()))?;
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut file = no_follow()
        .write(true)
        .create_new(true)
        .open(dir.join(AGENT_INPUT))
        .map_err(|e| format!("cannot write the agent's input: {e}"))?;
    std::io::Write::write_all(&mut file, input.job.to_string().as_bytes())
        .map_err(|e| format!("cannot write the agent's input: {e}"))?;
    disk::give_tree(&dir, limits.uid, limits.gid)
        .map_err(|e| format!("cannot give {} to the agent's user: {e}", dir.display()))?;
    Ok(dir)
}

/// Open options that refuse a symbolic link as the last component (`O_NOFOLLOW`).
fn no_follow() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    o
}

/// Runs the agent; returns the step's outcome and the agent's JSON output, if it wrote any.
pub async fn run_agent<E: ContainerEngine, R: RegistryAuth>(
    env: &StepEnv<'_, E>,
    registry: &R,
    input: &AgentInput<'_>,
) -> (StepOutcome, Option<serde_json::Value>) {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let image = input.image;
    let limits = &ctx.agent_limits;
    if let Err(e) = ensure_image(engine, registry, image).await {
        return (StepOutcome::failed(e), None);
    }
    if !input.repo_dir.exists() {
        let _ = tokio::fs::create_dir_all(input.repo_dir).await;
    }
    let io_dir = match prepare_io(input, limits) {
        Ok(d) => d,
        Err(e) => return (StepOutcome::error(e), None),
    };
    if let Err(e) = disk::give_tree(input.repo_dir, limits.uid, limits.gid) {
        return (
            StepOutcome::error(format!(
                "cannot give the checkout to the agent's user {}: {e}",
                limits.uid
            )),
            None,
        );
    }
    let spec = &ctx.job.spec;
    let container = ContainerSpec {
        name: format!("janitor-{}-agent-{}", ctx.job.job_id, input.attempt),
        image: image.to_string(),
        env: [
            format!("JANITOR_PROMPT={}", spec.prompt),
            format!("JANITOR_REPO={}", spec.repo.full_name()),
            format!("JANITOR_JOB_ID={}", ctx.job.job_id),
            format!("JANITOR_ATTEMPT={}", input.attempt),
            "JANITOR_WORKSPACE=/workspace".to_string(),
            format!("JANITOR_JOB=/janitor/{AGENT_INPUT}"),
            format!("JANITOR_RESULT=/janitor/{AGENT_OUTPUT}"),
            // The root is read-only: HOME is the tmpfs.
            "HOME=/tmp".to_string(),
        ]
        .into_iter()
        .chain(limits.env.iter().cloned())
        // The job's model settings over the operator's (the last of a name wins).
        .chain(
            spec.agent
                .api_url
                .iter()
                .map(|u| format!("ANTHROPIC_BASE_URL={u}")),
        )
        .chain(
            spec.agent
                .model
                .iter()
                .map(|m| format!("ANTHROPIC_MODEL={m}")),
        )
        .chain(ctx.agent_credentials.iter().cloned())
        // Only the secrets meant for the agent (its model key); never the publish token.
        .chain(
            ctx.secrets
                .env_for(|name| may_see(name, spec, Audience::Agent)),
        )
        .collect(),
        binds: vec![
            format!("{}:/workspace", input.repo_dir.display()),
            format!("{}:/janitor", io_dir.display()),
        ],
        labels: job_labels(ctx),
        gpu: spec.gpu_required,
        confine: limits.confinement(),
        ..Default::default()
    };
    let mut on_line = |l: &str| sink.line(&format!("[agent] {l}"));
    let ran = engine
        .run(&container, deadline, ctx.graces, cancel, &mut on_line)
        .await;
    // Whatever became of the container, what it wrote is janitord's again before anything
    // reads, diffs or removes it.
    if let Err(e) = take_back(&[input.repo_dir, &io_dir]).await {
        return (
            StepOutcome::error(format!("cannot take back the agent's files: {e}")),
            None,
        );
    }
    let outcome = match ran {
        Err(e) => return (StepOutcome::failed(e.to_string()), None),
        Ok(o) => o,
    };
    if let Some(reason) = outcome.stopped {
        return (
            StepOutcome::stopped(reason, spec.timeout).with_code(outcome.exit_code),
            None,
        );
    }
    // janitord keeps the repository's history outside the workspace: a `.git` there, at any
    // depth, was planted (a gitfile, or a nested repository whose config has hooks,
    // fsmonitor, filters or push URLs that host git would run while it looks at a gitlink).
    if let Err(why) = no_planted_git(input.repo_dir, deadline).await {
        return (StepOutcome::failed(why).with_code(outcome.exit_code), None);
    }
    let output = read_output(&io_dir.join(AGENT_OUTPUT));
    match (outcome.exit_code, output) {
        (code, Err(e)) => (StepOutcome::failed(e).with_code(code), None),
        (Some(0), Ok(None)) => (
            StepOutcome::failed(format!(
                "exited with code 0 without writing /janitor/{AGENT_OUTPUT} (`{{\"status\": \"fixed\", \"summary\": \"…\"}}`)"
            ))
            .with_code(Some(0)),
            None,
        ),
        (Some(0), Ok(Some(out))) => match answer(&out) {
            Ok((status, summary)) if status == "error" => (
                StepOutcome::error(format!("the agent's model API failed: {summary}"))
                    .with_code(Some(0)),
                Some(out),
            ),
            Ok((status, summary)) => (
                StepOutcome::succeeded(format!("answered `{status}`: {summary}")).with_code(Some(0)),
                Some(out),
            ),
            Err(e) => (StepOutcome::failed(e).with_code(Some(0)), Some(out)),
        },
        (code, Ok(out)) => (
            StepOutcome::failed(format!(
                "exited with code {}",
                code.map_or("unknown".to_string(), |c| c.to_string())
            ))
            .with_code(code),
            out,
        ),
    }
}

/// `Err` saying where, when the agent left a `.git` anywhere in the workspace (removed then,
/// so that nothing reads it later) or the tree could not be checked before the deadline.
/// No git runs on the tree before this has passed.
async fn no_planted_git(repo_dir: &Path, deadline: tokio::time::Instant) -> Result<(), String> {
    let dir = repo_dir.to_path_buf();
    let walk = tokio::task::spawn_blocking(move || crate::git::planted(&dir));
    let found = match tokio::time::timeout_at(deadline, walk).await {
        Err(_) => return Err("the agent's workspace could not be checked for a planted .git before the job's deadline".into()),
        Ok(Err(e)) => return Err(format!("the agent's workspace could not be checked: {e}")),
        Ok(Ok(Err(e))) => return Err(format!("the agent's workspace could not be checked for a planted .git: {e}")),
        Ok(Ok(Ok(found))) => found,
    };
    let Some(rel) = found else { return Ok(()) };
    let path = repo_dir.join(&rel);
    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    Err(format!(
        "the agent left a .git in /workspace (`{}`); janitord keeps the repository's history outside the workspace and runs no git on a repository written there",
        rel.display()
    ))
}

/// The agent's `status` and `summary`, checked.
pub fn answer(result: &serde_json::Value) -> Result<(String, String), String> {
    let status = result.get("status").and_then(|s| s.as_str()).unwrap_or("");
    if !AGENT_STATUSES.contains(&status) {
        return Err(format!(
            "{AGENT_OUTPUT}: status: must be one of {}, found {}",
            AGENT_STATUSES.join(", "),
            result
                .get("status")
                .map_or("nothing".to_string(), |s| s.to_string())
        ));
    }
    let summary = result
        .get("summary")
        .and_then(|s| s.as_str())
        .unwrap_or("(no summary)");
    Ok((
        status.to_string(),
        janitor_model::runpod::excerpt(&serde_json::Value::String(summary.to_string())),
    ))
}

/// The agent's JSON output: `Ok(None)` when it wrote none. Opened without following a link
/// (one planted there would point at a host file), only a regular file, at most
/// [`AGENT_OUTPUT_LIMIT`] bytes read.
fn read_output(path: &Path) -> Result<Option<serde_json::Value>, String> {
    let file = match no_follow().read(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(format!(
                "{AGENT_OUTPUT} is a symbolic link; the agent must write a regular file"
            ))
        }
        Err(e) => return Err(format!("cannot read {AGENT_OUTPUT}: {e}")),
        Ok(f) => f,
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {AGENT_OUTPUT}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{AGENT_OUTPUT} is not a regular file"));
    }
    let mut text = String::new();
    file.take(AGENT_OUTPUT_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {AGENT_OUTPUT}: {e}"))?;
    if text.len() as u64 > AGENT_OUTPUT_LIMIT {
        return Err(format!(
            "{AGENT_OUTPUT} is over the {AGENT_OUTPUT_LIMIT}-byte limit"
        ));
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .map(Some)
        .map_err(|e| format!("{AGENT_OUTPUT} is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-file");
        std::fs::write(&host, r#"{"status":"fixed","summary":"host"}"#).unwrap();
        let link = dir.path().join(AGENT_OUTPUT);
        std::os::unix::fs::symlink(&host, &link).unwrap();
        let e = read_output(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::write(dir.path().join("big"), vec![b' '; 2 << 20]).unwrap();
        assert!(read_output(&dir.path().join("big"))
            .unwrap_err()
            .contains("limit"));
    }

    #[test]
    fn each_attempt_gets_a_fresh_directory() {
        let root = tempfile::tempdir().unwrap();
        let job = serde_json::json!({"attempt": 1});
        let limits = AgentLimits {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            ..Default::default()
        };
        let input = AgentInput {
            image: "x",
            repo_dir: root.path(),
            io_root: &root.path().join("io"),
            job: &job,
            attempt: 1,
        };
        let dir = prepare_io(&input, &limits).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(AGENT_INPUT)).unwrap(),
            r#"{"attempt":1}"#
        );
        // A second preparation of the same attempt is refused, never written through.
        assert!(prepare_io(&input, &limits).is_err());
    }
}
