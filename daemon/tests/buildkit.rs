//! Builds as current GPU workers write them, through the pipeline on the machine's Docker
//! engine with BuildKit: cache mounts that persist across builds, secret mounts that reach no
//! layer, log or report, multi-stage targets, build arguments, cache hits counted from BuildKit's
//! status stream, an unchanged build's image reused without a builder round trip, a heredoc
//! refused as the instance's problem on an engine too old for it, and the classic builder kept
//! as an explicit choice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_model::config::{Builder, JobSpec};
use janitor_model::report::{JobStatus, Report, StepName, StepStatus};
use janitor_testkit::engine::TestEngine;
use janitor_testkit::{docker, ensure_base_image, git_repo, spec, BASE_IMAGE};

/// Runs the repository at `url` through the pipeline with its secrets in `secrets_dir`.
async fn validate(
    name: &str,
    url: &str,
    secrets_dir: Option<&Path>,
    tweak: impl FnOnce(&mut JobSpec),
) -> (Report, Vec<String>) {
    let mut job = spec(name, url, Duration::from_secs(180));
    tweak(&mut job);
    let work = tempfile::tempdir().unwrap();
    let mut ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261201T000000Z-bkit01",
        job,
        "local",
        work.path(),
    );
    if let Some(dir) = secrets_dir {
        ctx.secrets_dir = dir.to_path_buf();
    }
    janitor_testkit::run_in_process(&ctx).await
}

fn step(r: &Report, name: StepName) -> &janitor_model::report::StepReport {
    r.step(name)
        .unwrap_or_else(|| panic!("no {name:?} step in {r:#?}"))
}

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The second build finds what the first left in the cache mount, though its layer missed
/// the cache (the build argument changed); the report names BuildKit and the engine.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_mount_persists_across_builds() {
    ensure_base_image();
    let id = unique();
    let df = format!(
        "FROM {BASE_IMAGE}\nARG ROUND\nRUN --mount=type=cache,id=janitor-test-{id},target=/cache echo \"$ROUND\" >> /cache/rounds && wc -l < /cache/rounds > /seen\nCMD [\"sh\", \"-c\", \"echo rounds seen: $(cat /seen)\"]\n"
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-cache", &[("Dockerfile", &df)]);
    for round in ["1", "2"] {
        let (r, out) = validate("bk-cache", &url, None, |s| {
            s.build.args = vec![("ROUND".into(), round.into())];
        })
        .await;
        assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{out:#?}");
        assert!(
            out.iter()
                .any(|l| l.ends_with(&format!("rounds seen: {round}"))),
            "round {round}: {out:#?}"
        );
        let build = r
            .build
            .as_ref()
            .expect("the report says what built the image");
        assert_eq!(build.builder, Builder::Buildkit);
        assert!(build.engine_version.starts_with("20.10"), "{build:?}");
        assert_eq!(build.api_version, "1.41");
        // BuildKit's cache is measured for the cache budget; a keep-storage prune above what
        // it holds removes nothing of it.
        let engine = TestEngine::connect().await;
        use janitor_services::engine::{ContainerEngine, Prune};
        let held = engine.build_cache_bytes().await.unwrap();
        assert!(
            held > 0,
            "the cache mount and layers are in the build cache"
        );
        engine
            .prune(Prune::BuildCacheKeep(u64::MAX / 4))
            .await
            .unwrap();
        // BuildKit's plain progress reaches the log, numbered per vertex.
        assert!(
            out.iter()
                .any(|l| l.starts_with("[build] #") && l.contains("RUN --mount=type=cache")),
            "{out:#?}"
        );
    }
}

/// A secret mount reads the instance's secret; its value is in no layer, no history, no log
/// line and no report, and the image does not carry the secret's file.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_mount_reaches_the_build_and_nothing_else() {
    ensure_base_image();
    const VALUE: &str = "hf_Zq8sEcReTvAlUe";
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("HF_TOKEN"), format!("{VALUE}\n")).unwrap();
    let df = format!(
        "FROM {BASE_IMAGE}\nARG NONCE={}\nRUN --mount=type=secret,id=HF_TOKEN,required=true case \"$(cat /run/secrets/HF_TOKEN)\" in hf_Zq8s*) echo secret-ok;; esac && echo \"leaked: $(cat /run/secrets/HF_TOKEN)\" && wc -c < /run/secrets/HF_TOKEN > /token-length\nCMD [\"sh\", \"-c\", \"cat /run/secrets/HF_TOKEN 2>/dev/null || echo no secret in the image; echo length $(cat /token-length)\"]\n",
        unique()
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-secret", &[("Dockerfile", &df)]);
    let (r, out) = validate("bk-secret", &url, Some(secrets.path()), |s| {
        s.build.secrets = vec!["HF_TOKEN".into()];
    })
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{out:#?}");
    assert!(out.iter().any(|l| l.ends_with("secret-ok")), "{out:#?}");
    assert!(out.iter().any(|l| l.ends_with("leaked: ***")), "{out:#?}");
    assert!(
        out.iter().any(|l| l.ends_with("no secret in the image")),
        "{out:#?}"
    );
    // One trailing newline of the file is dropped: the token is 17 bytes.
    assert!(out.iter().any(|l| l.ends_with("length 17")), "{out:#?}");
    assert!(!out.iter().any(|l| l.contains(VALUE)), "{out:#?}");
    let report = serde_json::to_string(&r).unwrap();
    assert!(!report.contains(VALUE), "{report}");
    assert!(report.contains("\"secrets\":[\"HF_TOKEN\"]"), "{report}");
    let tag = janitor_pipeline::image_tag("local", "bk-secret");
    let history = docker(&["history", "--no-trunc", &tag]);
    assert!(!history.contains(VALUE), "{history}");
    let saved = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker save {tag} | grep -a -c {VALUE} || true"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&saved.stdout).trim(),
        "0",
        "the value is in a layer"
    );
}

/// A secret the build names that the instance lacks is the instance's problem, named.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_an_error_naming_it() {
    ensure_base_image();
    let secrets = tempfile::tempdir().unwrap();
    let df = format!("FROM {BASE_IMAGE}\nRUN --mount=type=secret,id=HF_TOKEN true\n");
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-nosecret", &[("Dockerfile", &df)]);
    let (r, _) = validate("bk-nosecret", &url, Some(secrets.path()), |s| {
        s.build.secrets = vec!["HF_TOKEN".into()];
    })
    .await;
    assert_eq!(r.status, JobStatus::Error, "{r:#?}");
    let b = step(&r, StepName::Build);
    assert!(
        b.detail
            .starts_with("build secret `HF_TOKEN` is not on this instance: cannot read"),
        "{}",
        b.detail
    );
}

/// `target` builds that stage and stops: the stage after it (which would fail) is not built,
/// and the build argument reaches the stage.
#[tokio::test(flavor = "multi_thread")]
async fn a_multi_stage_target_is_built_alone() {
    ensure_base_image();
    let df = format!(
        "FROM {BASE_IMAGE} AS builder\nRUN echo built-by-builder > /artifact\n\nFROM {BASE_IMAGE} AS runtime\nARG FLAVOUR=plain\nCOPY --from=builder /artifact /artifact\nRUN echo \"$FLAVOUR\" > /flavour\nCMD [\"sh\", \"-c\", \"echo runtime $(cat /artifact) $(cat /flavour)\"]\n\nFROM runtime AS broken\nRUN exit 7\n"
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-target", &[("Dockerfile", &df)]);
    let (r, out) = validate("bk-target", &url, None, |s| {
        s.build.target = Some("runtime".into());
        s.build.args = vec![("FLAVOUR".into(), "spicy".into())];
    })
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{out:#?}");
    assert!(
        out.iter()
            .any(|l| l.ends_with("runtime built-by-builder spicy")),
        "{out:#?}"
    );
    assert!(!out.iter().any(|l| l.contains("exit 7")), "{out:#?}");
    assert_eq!(r.build.as_ref().unwrap().target.as_deref(), Some("runtime"));
}

/// A failing `RUN` fails the build naming the instruction; a rebuild of what succeeded is all
/// cache hits, counted from BuildKit's cached vertices (the `FROM` is no step: the base is
/// resolved afresh each build).
#[tokio::test(flavor = "multi_thread")]
async fn failures_name_the_instruction_and_rebuilds_count_cache_hits() {
    ensure_base_image();
    let id = unique();
    let ok = format!("FROM {BASE_IMAGE}\nRUN echo {id} > /a\nRUN echo two > /b\nCMD [\"true\"]\n");
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-hits", &[("Dockerfile", &ok)]);
    let (first, out) = validate("bk-hits", &url, None, |_| {}).await;
    assert_eq!(first.status, JobStatus::Succeeded, "{first:#?}\n{out:#?}");
    assert_eq!(
        (first.cache.hits, first.cache.steps),
        (0, 2),
        "{:?}",
        first.cache
    );
    // The same inputs again: the image on the instance is reused, no builder round trip.
    let (same, _) = validate("bk-hits", &url, None, |_| {}).await;
    assert_eq!(same.status, JobStatus::Succeeded, "{same:#?}");
    let b = same.build.as_ref().unwrap();
    assert!(b.reused, "{b:#?}");
    assert_eq!(b.inputs, first.build.as_ref().unwrap().inputs);
    assert!(
        step(&same, StepName::Build).detail.starts_with(
            "reused janitor/local/bk-hits:latest: the build's inputs are unchanged (sha256:"
        ),
        "{}",
        step(&same, StepName::Build).detail
    );
    assert_eq!((same.cache.hits, same.cache.steps), (0, 0));
    // A file of the context changed (one no step reads): built, every step from the cache.
    let url = git_repo(
        repos.path(),
        "bk-hits-readme",
        &[("Dockerfile", &ok), ("README.md", "# changed\n")],
    );
    let (again, _) = validate("bk-hits", &url, None, |_| {}).await;
    let b = again.build.as_ref().unwrap();
    assert!(!b.reused, "{b:#?}");
    assert!(
        b.reuse.as_deref().unwrap().starts_with(
            "built: the inputs changed since janitor/local/bk-hits:latest was built (sha256:"
        ),
        "{b:#?}"
    );
    assert_eq!(
        (again.cache.hits, again.cache.steps),
        (2, 2),
        "{:?}",
        again.cache
    );
    assert!(
        step(&again, StepName::Build)
            .detail
            .ends_with("2 of 2 steps from the layer cache"),
        "{}",
        step(&again, StepName::Build).detail
    );

    let bad = format!("FROM {BASE_IMAGE}\nRUN echo {id} > /a\nRUN echo about to fail && exit 3\n");
    let url = git_repo(repos.path(), "bk-fail", &[("Dockerfile", &bad)]);
    let (r, out) = validate("bk-fail", &url, None, |_| {}).await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let b = step(&r, StepName::Build);
    assert_eq!(b.status, StepStatus::Failed);
    assert!(
        b.detail
            .starts_with("[3/3] RUN echo about to fail && exit 3: "),
        "{}",
        b.detail
    );
    assert!(
        out.iter().any(|l| l.ends_with(" about to fail")),
        "{out:#?}"
    );
}

/// This engine's built-in Dockerfile frontend predates heredocs: the job ends `error` naming the
/// engine it needs, not `failed` as if the repository were broken.
#[tokio::test(flavor = "multi_thread")]
async fn a_heredoc_on_an_old_engine_is_an_error_naming_the_engine_it_needs() {
    ensure_base_image();
    let df = format!("FROM {BASE_IMAGE}\nRUN <<EOT\necho from a heredoc\nEOT\n");
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-heredoc", &[("Dockerfile", &df)]);
    let (r, _) = validate("bk-heredoc", &url, None, |_| {}).await;
    assert_eq!(r.status, JobStatus::Error, "{r:#?}");
    let b = step(&r, StepName::Build);
    assert!(
        b.detail.starts_with(
            "Dockerfile:2 uses a heredoc (`RUN <<EOT`), which needs Docker Engine 23.0 or later"
        ),
        "{}",
        b.detail
    );
    // And the engine really cannot: built anyway, its frontend refuses the instruction.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), &df).unwrap();
    let engine = TestEngine::connect().await;
    use janitor_services::engine::{BuildSpec, ContainerEngine};
    let spec = BuildSpec {
        context_dir: dir.path(),
        dockerfile: "Dockerfile",
        tag: "janitor-test/heredoc:latest",
        labels: Default::default(),
        builder: Builder::Buildkit,
        target: None,
        args: &[],
        secrets: Default::default(),
        dockerfile_text: None,
    };
    let outcome = engine
        .build(
            &spec,
            tokio::time::Instant::now() + Duration::from_secs(60),
            &tokio_util::sync::CancellationToken::new(),
            &mut |_| {},
        )
        .await
        .unwrap();
    let err = outcome
        .error
        .expect("this engine's frontend rejects heredocs");
    assert!(err.contains("unknown instruction"), "{err}");
}

/// `builder: classic` still builds with the legacy builder, its cache hits counted.
#[tokio::test(flavor = "multi_thread")]
async fn the_classic_builder_is_an_explicit_choice() {
    ensure_base_image();
    let df = format!(
        "FROM {BASE_IMAGE}\nRUN echo {} > /a\nCMD [\"true\"]\n",
        unique()
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "bk-classic", &[("Dockerfile", &df)]);
    let classic = |s: &mut JobSpec| s.build.builder = Builder::Classic;
    let (_, _) = validate("bk-classic", &url, None, classic).await;
    let (r, out) = validate("bk-classic", &url, None, classic).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
    assert_eq!(r.build.as_ref().unwrap().builder, Builder::Classic);
    // FROM, RUN, CMD and the LABEL step the classic builder adds for the labels; all but
    // FROM from the cache.
    assert_eq!((r.cache.hits, r.cache.steps), (3, 4), "{:?}", r.cache);
    assert!(
        out.iter().any(|l| l.starts_with("[build] Step 1/4 : FROM")),
        "{out:#?}"
    );
}
