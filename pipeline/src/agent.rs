//! The `agent` step's container: the agent image (pulled with the registry login when it is
//! not present) runs with the checkout read-write at `/workspace` and `/janitor/job.json` (the
//! prompt, the repository and the failed validation); it answers in `/janitor/result.json`.

use std::path::Path;

use janitor_services::engine::{ContainerEngine, ContainerSpec};
use janitor_services::registry::RegistryAuth;

use crate::context::job_labels;
use crate::steps::{StepEnv, StepOutcome};

/// What the agent is given, inside its `/janitor` mount.
pub const AGENT_INPUT: &str = "job.json";
/// The file an agent writes its answer to, inside its `/janitor` mount.
pub const AGENT_OUTPUT: &str = "result.json";
/// What an agent may answer in `result.json`'s `status`.
pub const AGENT_STATUSES: &[&str] = &["passed", "fixed", "failed", "unfixable"];
/// At most this much agent output is merged into the report.
const AGENT_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// Where the agent works and what it is told.
pub struct AgentInput<'a> {
    pub image: &'a str,
    pub repo_dir: &'a Path,
    pub io_dir: &'a Path,
    /// `/janitor/job.json`.
    pub job: &'a serde_json::Value,
    /// The round: 1 for the first attempt.
    pub attempt: u32,
}

/// Makes sure the agent image is present: pulled with the registry's login when it has one
/// (ECR), anonymously otherwise.
async fn ensure_image<E: ContainerEngine, R: RegistryAuth>(
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
    if let Err(e) = ensure_image(engine, registry, image).await {
        return (StepOutcome::failed(e), None);
    }
    let _ = tokio::fs::remove_file(input.io_dir.join(AGENT_OUTPUT)).await;
    if let Err(e) = tokio::fs::write(input.io_dir.join(AGENT_INPUT), input.job.to_string()).await {
        return (
            StepOutcome::failed(format!("cannot write the agent's input: {e}")),
            None,
        );
    }
    if !input.repo_dir.exists() {
        let _ = tokio::fs::create_dir_all(input.repo_dir).await;
    }
    let container = ContainerSpec {
        name: format!("janitor-{}-agent-{}", ctx.job.job_id, input.attempt),
        image: image.to_string(),
        env: [
            format!("JANITOR_PROMPT={}", ctx.job.spec.prompt),
            format!("JANITOR_REPO={}", ctx.job.spec.repo.full_name()),
            format!("JANITOR_JOB_ID={}", ctx.job.job_id),
            format!("JANITOR_ATTEMPT={}", input.attempt),
            "JANITOR_WORKSPACE=/workspace".to_string(),
            format!("JANITOR_JOB=/janitor/{AGENT_INPUT}"),
            format!("JANITOR_RESULT=/janitor/{AGENT_OUTPUT}"),
        ]
        .into_iter()
        // The job's secrets (an LLM's API key, a GitHub token) are the agent's environment.
        .chain(ctx.secrets.env())
        .collect(),
        binds: vec![
            format!("{}:/workspace", input.repo_dir.display()),
            format!("{}:/janitor", input.io_dir.display()),
        ],
        labels: job_labels(ctx),
        gpu: ctx.job.spec.gpu_required,
        ..Default::default()
    };
    let mut on_line = |l: &str| sink.line(&format!("[agent] {l}"));
    let outcome = match engine
        .run(&container, deadline, ctx.graces, cancel, &mut on_line)
        .await
    {
        Err(e) => return (StepOutcome::failed(e.to_string()), None),
        Ok(o) => o,
    };
    if let Some(reason) = outcome.stopped {
        return (
            StepOutcome::stopped(reason, ctx.job.spec.timeout).with_code(outcome.exit_code),
            None,
        );
    }
    let output = read_output(&input.io_dir.join(AGENT_OUTPUT)).await;
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

/// The agent's JSON output: `Ok(None)` when it wrote none.
async fn read_output(path: &Path) -> Result<Option<serde_json::Value>, String> {
    match tokio::fs::metadata(path).await {
        Err(_) => Ok(None),
        Ok(m) if m.len() > AGENT_OUTPUT_LIMIT => Err(format!(
            "{AGENT_OUTPUT} is {} bytes, over the {AGENT_OUTPUT_LIMIT}-byte limit",
            m.len()
        )),
        Ok(_) => match tokio::fs::read_to_string(path).await {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map(Some)
                .map_err(|e| format!("{AGENT_OUTPUT} is not JSON: {e}")),
            Err(e) => Err(format!("cannot read {AGENT_OUTPUT}: {e}")),
        },
    }
}
