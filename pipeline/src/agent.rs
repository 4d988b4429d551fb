//! The `agent` step: the agent image (pulled with the registry login when it is not present)
//! runs with the workspace, the steps so far and the prompt; its JSON findings join the report.

use std::path::Path;

use janitor_model::report::StepReport;
use janitor_services::engine::{ContainerEngine, ContainerSpec};
use janitor_services::registry::RegistryAuth;

use crate::context::job_labels;
use crate::steps::{StepEnv, StepOutcome};

/// The file an agent writes its JSON findings to, inside its `/janitor` mount.
pub const AGENT_OUTPUT: &str = "agent.json";
/// At most this much agent output is merged into the report.
const AGENT_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// Where the agent works and what it has seen.
pub struct AgentInput<'a> {
    pub image: &'a str,
    pub repo_dir: &'a Path,
    pub io_dir: &'a Path,
    pub steps: &'a [StepReport],
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
    let job_input = serde_json::json!({
        "job_id": ctx.job.job_id,
        "run_id": ctx.job.run_id,
        "repo": ctx.job.spec.repo,
        "prompt": ctx.job.spec.prompt,
        "steps": input.steps,
    });
    if let Err(e) = tokio::fs::write(input.io_dir.join("steps.json"), job_input.to_string()).await {
        return (
            StepOutcome::failed(format!("cannot write the agent's input: {e}")),
            None,
        );
    }
    if !input.repo_dir.exists() {
        let _ = tokio::fs::create_dir_all(input.repo_dir).await;
    }
    let container = ContainerSpec {
        name: format!("janitor-{}-agent", ctx.job.job_id),
        image: image.to_string(),
        env: vec![
            format!("JANITOR_PROMPT={}", ctx.job.spec.prompt),
            format!("JANITOR_REPO={}", ctx.job.spec.repo.full_name()),
            format!("JANITOR_JOB_ID={}", ctx.job.job_id),
            "JANITOR_WORKSPACE=/workspace".to_string(),
            "JANITOR_STEPS=/janitor/steps.json".to_string(),
            format!("JANITOR_OUTPUT=/janitor/{AGENT_OUTPUT}"),
        ],
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
        (Some(0), Ok(out)) => {
            let detail = if out.is_some() {
                "exited with code 0; its JSON output is merged under `agent`"
            } else {
                "exited with code 0 without writing JSON output"
            };
            (StepOutcome::succeeded(detail).with_code(Some(0)), out)
        }
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
