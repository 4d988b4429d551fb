//! The `build` step: the repository's Dockerfile built to the repository's tag through the
//! engine, with the layer cache's hits counted.

use std::collections::HashMap;
use std::path::Path;

use janitor_model::report::CacheInfo;
use janitor_services::engine::{BuildSpec, ContainerEngine};

use crate::steps::{StepEnv, StepOutcome};

/// Builds the checkout in `repo_dir` to `tag`; the cache figures go into `cache`.
pub async fn build<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    repo_dir: &Path,
    tag: &str,
    cache: &mut CacheInfo,
) -> StepOutcome {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
    let dockerfile = spec.dockerfile.as_deref().unwrap_or("Dockerfile");
    if !repo_dir.join(dockerfile).is_file() {
        return StepOutcome::failed(format!(
            "no Dockerfile at `{dockerfile}` in the repository (set `dockerfile:` for another path)"
        ));
    }
    // Only stable labels: a per-job label would make the last build step miss the cache.
    let labels = HashMap::from([("janitor.repo".to_string(), spec.repo.full_name())]);
    let mut on_line = |l: &str| sink.line(&format!("[build] {l}"));
    let build = BuildSpec {
        context_dir: repo_dir,
        dockerfile,
        tag,
        labels,
    };
    let b = match engine.build(&build, deadline, cancel, &mut on_line).await {
        Err(e) => return StepOutcome::failed(e.to_string()),
        Ok(b) => b,
    };
    cache.hits = b.cache_hits;
    cache.steps = b.steps;
    let cached = format!("{} of {} steps from the layer cache", b.cache_hits, b.steps);
    match (b.stopped, b.error) {
        (Some(reason), _) => StepOutcome::stopped(reason, spec.timeout),
        (None, Some(err)) => StepOutcome::failed(format!("{err} ({cached})")),
        (None, None) => StepOutcome::succeeded(format!("built {tag}; {cached}")),
    }
}
