//! A hostile repository and agent against the host, through the real pipeline on the real
//! Docker engine: a nested repository whose filter host git would run as root (over a
//! committed gitlink, and planted for a later attempt), a Dockerfile that is a link to
//! `/dev/zero` or a FIFO, a build cache mount read across repositories, a fix that deletes the
//! failing test, a build secret printed encoded, a pull request the agent's Markdown would
//! steer, and two repository names that once shared an image tag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use janitor_model::report::{JobStatus, Report, StepName, StepStatus};
use janitor_testkit::{
    agent_image, broken_worker, ensure_base_image, ensure_runpod_image, git, git_repo, spec,
    BASE_IMAGE, FIX_MODEL,
};

async fn run(
    name: &str,
    url: &str,
    edit: impl FnOnce(&mut janitor_pipeline::JobContext),
) -> (Report, Vec<String>) {
    let job = spec(name, url, Duration::from_secs(240));
    let work = tempfile::tempdir().unwrap();
    let mut ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261208T000000Z-escapes",
        job,
        "local",
        work.path(),
    );
    edit(&mut ctx);
    janitor_testkit::run_in_process(&ctx).await
}

fn with_agent(image: &str) -> impl FnOnce(&mut janitor_pipeline::JobContext) + '_ {
    move |ctx| ctx.job.spec.agent_image = Some(image.into())
}

/// A word unique to this test run, for a `RUN` line: BuildKit takes a step from its layer
/// cache unless the command itself differs (a comment does not count).
fn fresh() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("run-{}-{nanos}", std::process::id())
}

fn attempt_detail(r: &Report, n: usize) -> String {
    r.fix.as_ref().unwrap().attempts[n].agent.detail.clone()
}

/// Commits what is staged in a test's own repository.
fn commit(repo: &Path, message: &str) {
    git(
        repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            message,
        ],
    );
}

/// The job ran nothing on the host and ended `failed` after exactly one attempt, the agent's
/// step refused for the nested repository at `sub/.git`, nothing of it kept.
fn assert_nested_refused(marks: &Path, r: &Report, out: &[String]) {
    let left: Vec<String> = std::fs::read_dir(marks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the host ran the nested filter: {out:#?}");
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let fix = r.fix.as_ref().unwrap();
    assert_eq!(fix.attempts.len(), 1, "{r:#?}");
    let detail = attempt_detail(r, 0);
    assert!(
        detail.contains("the agent left a .git in /workspace (`sub/.git`)"),
        "{detail}"
    );
    assert_eq!(fix.patch_text, None);
}

/// A git repository with one commit, its own config naming a clean filter that writes `id`
/// to `marks/ran` (as whoever runs it), and attributes putting every file through it; as a
/// base64 tar of the directory `inner`, for an agent script to unpack. Unpacked, its file's
/// stat no longer matches its index, so `git status` inside it hashes the file: through the
/// filter. Returns the tar and the repository's commit.
fn nested_repository(marks: &Path) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    git_repo(dir.path(), "inner", &[("f", "a\n")]);
    let inner = dir.path().join("inner");
    let config = inner.join(".git/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[filter \"x\"]\n\tclean = \"id > {}/ran; cat\"\n",
        marks.display()
    ));
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(inner.join(".git/info")).unwrap();
    std::fs::write(inner.join(".git/info/attributes"), "* filter=x\n").unwrap();
    let commit = git(&inner, &["rev-parse", "HEAD"]).trim().to_string();
    std::fs::remove_dir_all(inner.join(".git/hooks")).unwrap();
    let tar = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -czf - inner | base64 -w0",
            dir.path().display()
        ))
        .output()
        .unwrap();
    assert!(tar.status.success());
    (String::from_utf8(tar.stdout).unwrap(), commit)
}

/// The agent unpacks a nested repository at `sub`, over the empty directory of a gitlink the
/// repository commits, and fixes the worker. Host git would have asked the nested repository
/// for its status while adding the change, and run its filter as root: nothing runs, the
/// attempt is refused naming the `.git`, and nothing of it is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_nested_repository_over_a_committed_gitlink_runs_nothing_on_the_host() {
    ensure_base_image();
    let marks = tempfile::tempdir().unwrap();
    let (tar, inner_commit) = nested_repository(marks.path());
    agent_image(
        "janitor-test-nested-gitlink:latest",
        &format!(
            "cd /workspace\nrmdir sub 2>/dev/null || true\necho {tar} | base64 -d | tar -xz\nmv inner sub\n{FIX_MODEL}"
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "nested-gitlink");
    let origin = repos.path().join("nested-gitlink");
    git(
        &origin,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{inner_commit},sub"),
        ],
    );
    commit(&origin, "a submodule");
    let (r, out) = run(
        "nested-gitlink",
        &url,
        with_agent("janitor-test-nested-gitlink:latest"),
    )
    .await;
    assert_nested_refused(marks.path(), &r, &out);
}

/// Attempt 1 plants the nested repository (no gitlink in the repository) with a change that
/// still fails; attempt 2 would have fired its filter when host git looked at the gitlink
/// attempt 1's change recorded. Attempt 1 is refused, so there is no attempt 2 and nothing
/// runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_nested_repository_planted_for_a_later_attempt_runs_nothing_on_the_host() {
    ensure_base_image();
    let marks = tempfile::tempdir().unwrap();
    let (tar, _) = nested_repository(marks.path());
    agent_image(
        "janitor-test-nested-later:latest",
        &format!(
            r#"cd /workspace
if [ "$JANITOR_ATTEMPT" = 1 ]; then
  echo {tar} | base64 -d | tar -xz
  mv inner sub
  echo 'MODEL=/models/still-wrong.bin' > config.env
  printf '{{"status":"fixed","summary":"try 1"}}' > "$JANITOR_RESULT"
else
  {FIX_MODEL}
fi"#
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "nested-later");
    let (r, out) = run(
        "nested-later",
        &url,
        with_agent("janitor-test-nested-later:latest"),
    )
    .await;
    assert_nested_refused(marks.path(), &r, &out);
}

/// A repository commits its Dockerfile as a link to `/dev/zero`: the preflight refuses it by
/// name at once, without reading a byte of it (an unbounded read grew janitorctl past 4 GiB
/// in seconds).
#[tokio::test(flavor = "multi_thread")]
async fn a_committed_dockerfile_linked_to_a_device_is_refused_at_once() {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), "zero-dockerfile", &[("README.md", "x\n")]);
    let origin = repos.path().join("zero-dockerfile");
    std::os::unix::fs::symlink("/dev/zero", origin.join("Dockerfile")).unwrap();
    git(&origin, &["add", "Dockerfile"]);
    commit(&origin, "zero");
    let started = Instant::now();
    let (r, _) = run("zero-dockerfile", &url, |_| {}).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by far"
    );
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let pre = r.step(StepName::Preflight).unwrap();
    assert_eq!(pre.status, StepStatus::Failed);
    assert_eq!(
        pre.detail,
        "Dockerfile is a link out of the repository; it must be a file in the repository"
    );
    assert_eq!(r.step(StepName::Build).unwrap().status, StepStatus::NotRun);
}

/// The agent's first change links the Dockerfile to `/dev/zero`, its second links it to a FIFO
/// in the workspace that `.gitignore` hides from git (its open blocked the job in the kernel,
/// past its deadline, with no report). Each re-validation's preflight refuses the file by
/// name at once, and the job ends with its report long before its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_makes_the_dockerfile_a_device_or_a_fifo_ends_at_once() {
    ensure_base_image();
    agent_image(
        "janitor-test-fifo-dockerfile:latest",
        &format!(
            r#"cd /workspace
rm -f Dockerfile
if [ "$JANITOR_ATTEMPT" = 1 ]; then
  ln -s /dev/zero Dockerfile
else
  mkfifo .build.fifo && echo .build.fifo >> .gitignore && ln -s .build.fifo Dockerfile
fi
{FIX_MODEL}"#
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "fifo-dockerfile");
    let started = Instant::now();
    let (r, _) = run("fifo-dockerfile", &url, |ctx| {
        ctx.job.spec.agent_image = Some("janitor-test-fifo-dockerfile:latest".into());
        ctx.job.spec.max_fix_attempts = 2;
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "not held to the deadline"
    );
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let fix = r.fix.as_ref().unwrap();
    assert_eq!(fix.attempts.len(), 2, "{r:#?}");
    let preflight = |n: usize| {
        fix.attempts[n]
            .steps
            .iter()
            .find(|s| s.name == StepName::Preflight)
            .unwrap()
            .detail
            .clone()
    };
    assert_eq!(
        preflight(0),
        "Dockerfile is a link out of the repository; it must be a file in the repository"
    );
    assert_eq!(preflight(1), "Dockerfile is a FIFO, not a regular file");
}

/// Repository A (one organisation) leaves a marker in a BuildKit cache mount; repository B
/// (another organisation) mounts the same target and looks for it. B never sees A's bytes; A's
/// own next build still finds them (the cache still works, per repository).
#[tokio::test(flavor = "multi_thread")]
async fn build_cache_mounts_are_kept_to_their_repository() {
    ensure_base_image();
    let (nonce, run_a, run_b) = (janitor_testkit::build_nonce(), fresh(), fresh());
    let repos = tempfile::tempdir().unwrap();
    let a = git_repo(
        &repos.path().join("org-a"),
        "cache-writer",
        &[(
            "Dockerfile",
            &format!(
                "{nonce}FROM {BASE_IMAGE}\nRUN --mount=type=cache,target=/shared \\\n    echo {run_a} && echo A-cache-bytes > /shared/a\nCMD [\"true\"]\n"
            ),
        )],
    );
    let b = git_repo(
        &repos.path().join("org-b"),
        "cache-reader",
        &[(
            "Dockerfile",
            &format!(
                "{nonce}FROM {BASE_IMAGE}\nRUN --mount=type=cache,target=/shared echo {run_b} && cat /shared/a 2>/dev/null || echo nothing-of-A\nCMD [\"true\"]\n"
            ),
        )],
    );
    let (ra, _) = run("cache-writer", &a, |ctx| {
        ctx.job.spec.repo.organization = "org-a".into();
    })
    .await;
    assert_eq!(ra.status, JobStatus::Succeeded, "{ra:#?}");
    assert_eq!(ra.build.as_ref().unwrap().cache_mounts, 1);
    let (rb, out) = run("cache-reader", &b, |ctx| {
        ctx.job.spec.repo.organization = "org-b".into();
    })
    .await;
    assert_eq!(rb.status, JobStatus::Succeeded, "{rb:#?}");
    assert!(
        !out.iter().any(|l| l.contains("A-cache-bytes")),
        "B read A's cache: {out:#?}"
    );
    assert!(out.iter().any(|l| l.contains("nothing-of-A")), "{out:#?}");
    assert!(
        rb.step(StepName::Build)
            .unwrap()
            .detail
            .contains("1 cache mount(s) kept to this repository's own cache"),
        "{rb:#?}"
    );
}

const TWO_TESTS_HANDLER: &str = r#"import runpod

def handler(job):
    if job["input"].get("mode") == "broken":
        return {"error": "the upscaler is missing"}
    return {"ok": True}

runpod.serverless.start({"handler": handler})
"#;

/// The agent "fixes" a failing worker by deleting its failing test. The change is judged by
/// the tests as they were, so it is not `fixed`: the report names the removed test and the
/// failure it still has.
#[tokio::test(flavor = "multi_thread")]
async fn a_fix_that_deletes_the_failing_test_is_judged_by_it() {
    let runpod = ensure_runpod_image();
    agent_image(
        "janitor-test-test-deleter:latest",
        r#"printf '{"tests": [{"name": "works", "input": {}}]}' > /workspace/.runpod/tests.json
printf '{"status":"fixed","summary":"removed the flaky test"}' > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "test-deleter",
        &[
            (
                "Dockerfile",
                &format!("FROM {runpod}\nCOPY handler.py /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\"]\n"),
            ),
            ("handler.py", TWO_TESTS_HANDLER),
            (
                ".runpod/tests.json",
                r#"{"tests": [{"name": "works", "input": {}}, {"name": "upscales", "input": {"mode": "broken"}}]}"#,
            ),
        ],
    );
    let (r, out) = run("test-deleter", &url, |ctx| {
        ctx.job.spec.agent_image = Some("janitor-test-test-deleter:latest".into());
        ctx.job.spec.max_fix_attempts = 1;
    })
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{out:#?}");
    let attempt = &r.fix.as_ref().unwrap().attempts[0];
    assert!(attempt.changed);
    assert_eq!(attempt.tests_changed, ["removed test `upscales`"]);
    let tests = attempt.tests.as_ref().unwrap();
    assert_eq!((tests.passed, tests.total), (1, 2), "{tests:#?}");
    assert!(
        tests
            .notes
            .iter()
            .any(|n| n.contains("judged by the tests as they were before it")),
        "{tests:#?}"
    );
    let reason = r.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("not fixed after 1 attempt(s)"),
        "{reason}"
    );
    assert!(reason.contains("upscales"), "{reason}");
    assert_eq!(r.fix.as_ref().unwrap().patch_text, None);
}

/// A Dockerfile prints its build secret base64-encoded and reversed: neither reaches a line.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_secret_printed_encoded_is_redacted() {
    ensure_base_image();
    const SECRET: &str = "hf_encodedBuildSecret0123";
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "encoded-secret",
        &[(
            "Dockerfile",
            &format!(
                "{}FROM {BASE_IMAGE}\nRUN --mount=type=secret,id=HF echo {} && base64 /run/secrets/HF && rev /run/secrets/HF && echo done\nCMD [\"true\"]\n",
                janitor_testkit::build_nonce(),
                fresh()
            ),
        )],
    );
    let (r, out) = run("encoded-secret", &url, |ctx| {
        ctx.job.spec.build.secrets = vec!["HF".into()];
        ctx.job.spec.secrets = vec![("HF".into(), "ssm:/janitor/hf".into())];
        ctx.secrets =
            janitor_services::secrets::SecretValues::new(vec![("HF".into(), SECRET.into())]);
    })
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{out:#?}");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let reversed: String = SECRET.chars().rev().collect();
    let core = &encoded[..encoded.len() - 4];
    for l in &out {
        assert!(!l.contains(core) && !l.contains(&reversed), "{l}");
    }
    assert!(
        out.iter().any(|l| l.contains("done")),
        "the build ran: {out:#?}"
    );
}

/// The agent's summary mentions a maintainer, closes an issue and embeds a tracking image:
/// the pull request's title and commit message keep the words but none of them acts, and the
/// body shows the summary in a code block.
#[tokio::test(flavor = "multi_thread")]
async fn the_pull_request_renders_none_of_the_agents_markdown() {
    ensure_base_image();
    agent_image(
        "janitor-test-markdown-fixer:latest",
        r#"sed -i 's#/models/large.bin#/models/tiny.bin#' /workspace/config.env
printf '{"status":"fixed","summary":"Closes #1, cc @maintainer ![t](https://evil.example/t.png)"}' > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(&repos.path().join("local"), "markdown-fix");
    let gh = janitor_testkit::github::GitHubFixture::start().await;
    let git_url = format!("file://{}", repos.path().display());
    let origin = repos.path().join("local/markdown-fix");
    let (r, _) = run("markdown-fix", &url, |ctx| {
        ctx.job.spec.agent_image = Some("janitor-test-markdown-fixer:latest".into());
        ctx.publish = Some(janitor_pipeline::publish::PublishSettings {
            api_url: gh.url.clone(),
            git_url,
            token: "ghp_markdownTestToken".into(),
            author_name: "janitor-test".into(),
            author_email: "janitor@test".into(),
            status_target_url: None,
        });
    })
    .await;
    assert_eq!(r.status, JobStatus::Fixed, "{r:#?}");
    let created = gh
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .unwrap()
        .body;
    let (title, body) = (
        created["title"].as_str().unwrap().to_string(),
        created["body"].as_str().unwrap().to_string(),
    );
    let message = git(
        &origin,
        &[
            "log",
            "-1",
            "--format=%B",
            "janitor/20261208T000000Z-escapes",
        ],
    );
    for text in [&title, &message] {
        for active in ["#1", "@maintainer", "https://evil"] {
            assert!(!text.contains(active), "{active} acts in {text}");
        }
        assert!(
            text.replace('\u{200B}', "")
                .contains("Closes #1, cc @maintainer"),
            "{text}"
        );
    }
    let change = &body[body.find("**The change**").unwrap()..];
    let open = change.find("\n```text\n").unwrap();
    let image = change.find("![t](").unwrap();
    assert!(open < image && change[image..].contains("\n```"), "{body}");
    assert!(!change[..open].contains("![t]"), "{body}");
}

/// `worker.x` and `worker-x` of one organisation build to two images, not one.
#[tokio::test(flavor = "multi_thread")]
async fn names_that_differ_by_a_separator_build_different_images() {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let mut tags = Vec::new();
    for name in ["worker.x", "worker-x"] {
        let url = git_repo(
            repos.path(),
            name,
            &[(
                "Dockerfile",
                &janitor_testkit::dockerfile(&format!("echo {name}")),
            )],
        );
        let (r, out) = run(name, &url, |_| {}).await;
        assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
        assert!(
            out.iter().any(|l| l == &format!("[run] {name}")),
            "{out:#?}"
        );
        tags.push(janitor_pipeline::image_tag("local", name));
    }
    assert_ne!(tags[0], tags[1]);
    for tag in &tags {
        janitor_testkit::docker(&["image", "inspect", tag]);
    }
}
