//! The `build` step: the repository's Dockerfile built to the repository's tag through the
//! engine, with the layer cache's hits counted.

use std::collections::HashMap;
use std::path::Path;

use janitor_model::config::Builder;
use janitor_model::report::{BuildReport, CacheInfo};
use janitor_services::buildkit::{self, SecretStore};
use janitor_services::engine::{BuildSpec, ContainerEngine, EngineVersions};

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
/// `cache` and what built it into `built`.
pub async fn build<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    repo_dir: &Path,
    dockerfile: &str,
    tag: &str,
    cache: &mut CacheInfo,
    built: &mut Option<BuildReport>,
) -> StepOutcome {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
    let opts = &spec.build;
    let versions = engine.versions();
    *built = Some(BuildReport {
        builder: opts.builder,
        engine_version: versions.engine.clone(),
        api_version: versions.api.clone(),
        buildkit_version: versions.buildkit.clone(),
        target: opts.target.clone(),
        secrets: opts.secrets.clone(),
    });
    let path = repo_dir.join(dockerfile);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return StepOutcome::failed(format!(
            "no Dockerfile at `{dockerfile}` in the repository (set `dockerfile:` for another path)"
        ));
    };
    if let Some(why) = unbuildable(
        &text,
        dockerfile,
        opts.builder,
        !opts.secrets.is_empty(),
        &versions,
    ) {
        return why;
    }
    if opts
        .secrets
        .iter()
        .any(|id| id == janitor_model::audience::PUBLISH_TOKEN)
    {
        return StepOutcome::failed(format!(
            "`build_secrets` names {}, the token that publishes fixes: it is never given to a build (name another secret for what the build needs)",
            janitor_model::audience::PUBLISH_TOKEN
        ));
    }
    let (secrets, values) = match read_secrets(&ctx.secrets_dir, &opts.secrets, &ctx.secrets) {
        Ok(found) => found,
        Err(why) => return StepOutcome::error(why),
    };
    // Only stable labels: a per-job label would make the last build step miss the cache.
    let labels = HashMap::from([("janitor.repo".to_string(), spec.repo.full_name())]);
    let redactor = janitor_services::secrets::Redactor::new(values);
    let mut on_line = |l: &str| sink.line(&format!("[build] {}", redactor.redact(l)));
    let build = BuildSpec {
        context_dir: repo_dir,
        dockerfile,
        tag,
        labels,
        builder: opts.builder,
        target: opts.target.as_deref(),
        args: &opts.args,
        secrets,
    };
    let b = match engine.build(&build, deadline, cancel, &mut on_line).await {
        Err(e) => return StepOutcome::engine(&e),
        Ok(b) => b,
    };
    cache.hits = b.cache_hits;
    cache.steps = b.steps;
    let cached = format!("{} of {} steps from the layer cache", b.cache_hits, b.steps);
    match (b.stopped, b.error.map(|e| redactor.redact(&e))) {
        (Some(reason), _) => StepOutcome::stopped(reason, spec.timeout),
        (None, Some(err)) if is_instance_failure(&err) => {
            StepOutcome::error(format!("{err} ({cached})"))
        }
        (None, Some(err)) => StepOutcome::failed(format!("{err} ({cached})")),
        (None, None) => StepOutcome::succeeded(format!("built {tag}; {cached}")),
    }
}

/// Why this Dockerfile cannot be built here, before the builder is asked: a heredoc on an
/// engine whose built-in frontend predates them is the instance's problem (`error`); secrets
/// with the classic builder are the repository's (`failed`).
fn unbuildable(
    dockerfile_text: &str,
    dockerfile: &str,
    builder: Builder,
    wants_secrets: bool,
    versions: &EngineVersions,
) -> Option<StepOutcome> {
    if builder == Builder::Classic && wants_secrets {
        return Some(StepOutcome::failed(
            "`build_secrets` need BuildKit, and this repository asks for `builder: classic`; remove one of the two",
        ));
    }
    let (line, instruction) = buildkit::first_heredoc(dockerfile_text)?;
    if builder == Builder::Classic {
        return Some(StepOutcome::failed(format!(
            "{dockerfile}:{line} uses a heredoc (`{instruction}`), which the classic builder cannot parse; remove `builder: classic` to build with BuildKit"
        )));
    }
    let old = buildkit::engine_major(&versions.engine)
        .is_some_and(|major| major < buildkit::HEREDOC_ENGINE_MAJOR);
    (old && !buildkit::has_syntax_directive(dockerfile_text)).then(|| {
        StepOutcome::error(format!(
            "{dockerfile}:{line} uses a heredoc (`{instruction}`), which needs Docker Engine {}.0 or later (its built-in Dockerfile frontend 1.4+); this instance runs Docker Engine {}: run it on an instance from the current AMI",
            buildkit::HEREDOC_ENGINE_MAJOR, versions.engine
        ))
    })
}

/// The build's secrets: the job's own (`secrets:`) by name, else a file per id in `dir` (one
/// trailing newline dropped); with their values for redaction. A missing one is the
/// instance's problem, named with its path.
fn read_secrets(
    dir: &Path,
    ids: &[String],
    job: &janitor_services::secrets::SecretValues,
) -> Result<(SecretStore, Vec<String>), String> {
    let mut found = HashMap::new();
    let mut values = Vec::new();
    for id in ids {
        if let Some(v) = job.get(id) {
            values.push(v.to_string());
            found.insert(id.clone(), v.as_bytes().to_vec());
            continue;
        }
        let path = dir.join(id);
        let mut data = std::fs::read(&path).map_err(|e| {
            format!(
                "build secret `{id}` is not on this instance: cannot read {}: {e} (janitord's secrets_dir holds a file per secret id)",
                path.display()
            )
        })?;
        if data.ends_with(b"\n") {
            data.pop();
        }
        if let Ok(text) = std::str::from_utf8(&data) {
            if !text.is_empty() {
                values.push(text.to_string());
            }
        }
        found.insert(id.clone(), data);
    }
    Ok((SecretStore::new(found), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(version: &str) -> EngineVersions {
        EngineVersions {
            engine: version.into(),
            api: "1.41".into(),
            buildkit: None,
        }
    }

    #[test]
    fn heredocs_need_a_new_engine_and_secrets_need_buildkit() {
        let df = "FROM x\nRUN <<EOT\necho hi\nEOT\n";
        let old = unbuildable(
            df,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("20.10.24"),
        )
        .expect("refused on 20.10");
        assert_eq!(old.status, janitor_model::report::StepStatus::Error);
        assert!(old.detail.contains("Dockerfile:2 uses a heredoc (`RUN <<EOT`), which needs Docker Engine 23.0 or later"), "{}", old.detail);
        assert!(
            old.detail.contains("Docker Engine 20.10.24"),
            "{}",
            old.detail
        );
        assert!(unbuildable(
            df,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("27.3.1")
        )
        .is_none());
        let own = format!("# syntax=docker/dockerfile:1.7\n{df}");
        assert!(unbuildable(
            &own,
            "Dockerfile",
            Builder::Buildkit,
            false,
            &engine("20.10.24")
        )
        .is_none());
        let classic = unbuildable(df, "Dockerfile", Builder::Classic, false, &engine("27.3.1"))
            .expect("classic");
        assert_eq!(classic.status, janitor_model::report::StepStatus::Failed);
        let secrets = unbuildable(
            "FROM x\n",
            "Dockerfile",
            Builder::Classic,
            true,
            &engine("27.3.1"),
        )
        .expect("secrets");
        assert!(
            secrets.detail.contains("`build_secrets` need BuildKit"),
            "{}",
            secrets.detail
        );
    }

    #[test]
    fn secrets_are_read_by_id_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("HF_TOKEN"), "hf_abc123\n").unwrap();
        let (store, values) =
            read_secrets(dir.path(), &["HF_TOKEN".into()], &Default::default()).unwrap();
        assert_eq!(values, ["hf_abc123"]);
        assert!(!format!("{store:?}").contains("hf_abc123"));
        assert_eq!(
            janitor_services::secrets::Redactor::new(values).redact("token=hf_abc123 ok"),
            "token=*** ok"
        );
        let missing = read_secrets(dir.path(), &["NOPE".into()], &Default::default()).unwrap_err();
        assert!(
            missing.contains("build secret `NOPE` is not on this instance: cannot read"),
            "{missing}"
        );
        assert!(
            missing.contains(&dir.path().join("NOPE").display().to_string()),
            "{missing}"
        );
    }

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
