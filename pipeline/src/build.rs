//! The `build` step: the repository's Dockerfile built to the repository's tag through the
//! engine, with the layer cache's hits counted.

use std::collections::HashMap;
use std::path::Path;

use janitor_model::report::CacheInfo;
use janitor_services::engine::{BuildSpec, ContainerEngine};

use crate::steps::{StepEnv, StepOutcome};

/// What a builder prints when the instance, not the Dockerfile, is the problem.
const INSTANCE_FAILURES: &[&str] = &[
    "no space left on device",
    "dial tcp",
    "i/o timeout",
    "tls handshake timeout",
    "connection reset by peer",
    "temporary failure in name resolution",
    "net/http: request canceled",
];

/// Whether a build failure is the instance's (disk, network) rather than the repository's.
pub fn is_instance_failure(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    INSTANCE_FAILURES.iter().any(|m| lower.contains(m))
}

/// Builds the checkout in `repo_dir` to `tag` from `dockerfile`; the cache figures go into
/// `cache`.
pub async fn build<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    repo_dir: &Path,
    dockerfile: &str,
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
        Err(e) => return StepOutcome::engine(&e),
        Ok(b) => b,
    };
    cache.hits = b.cache_hits;
    cache.steps = b.steps;
    let cached = format!("{} of {} steps from the layer cache", b.cache_hits, b.steps);
    match (b.stopped, b.error) {
        (Some(reason), _) => StepOutcome::stopped(reason, spec.timeout),
        (None, Some(err)) if is_instance_failure(&err) => {
            StepOutcome::error(format!("{err} ({cached})"))
        }
        (None, Some(err)) => StepOutcome::failed(format!("{err} ({cached})")),
        (None, None) => StepOutcome::succeeded(format!("built {tag}; {cached}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_or_repository() {
        assert!(super::is_instance_failure(
            "failed to register layer: write /usr/lib/x: no space left on device"
        ));
        assert!(super::is_instance_failure("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"));
        assert!(!super::is_instance_failure(
            "The command '/bin/sh -c pip install nope' returned a non-zero code: 1"
        ));
        assert!(!super::is_instance_failure(
            "pull access denied for nosuch/image, repository does not exist"
        ));
    }
}
