//! The fix loop: a broken repository, an agent that follows the contract (`/workspace`,
//! `/janitor/job.json`, `/janitor/result.json`), and the changed tree validated again. Agents
//! that fix, that make things worse, and that say the failure cannot be fixed; the fix stored
//! as a patch beside the report by the real janitord.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use janitor_model::report::{JobStatus, Report, StepName, StepStatus};
use janitor_testkit::{ensure_base_image, git_repo, spec, Fixture, BASE_IMAGE};

/// The real janitord on the fixture, leaving when the queue is empty.
fn janitord(
    fx: &Fixture,
    instance: &str,
    cache: &std::path::Path,
    extra: &[&str],
) -> janitor_testkit::Proc {
    let mut args = vec!["--exit-when-idle", "--stop-grace-seconds", "2"];
    args.extend_from_slice(extra);
    janitor_testkit::spawn_janitord(
        std::path::Path::new(env!("CARGO_BIN_EXE_janitord")),
        fx,
        instance,
        cache,
        &args,
    )
}

use janitor_testkit::{agent_image as agent, broken_worker as broken_repo, FIX_MODEL};

async fn validate(name: &str, url: &str, image: &str) -> (Report, Vec<String>) {
    let mut job = spec(name, url, Duration::from_secs(240));
    job.agent_image = Some(image.into());
    let work = tempfile::tempdir().unwrap();
    let ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261201T000000Z-fix001",
        job,
        "local",
        work.path(),
    );
    janitor_testkit::run_in_process(&ctx).await
}

/// The agent reads the failure from job.json, fixes config.env in /workspace, and the
/// re-validation passes: `fixed`, with the change as a patch and both validations reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_worker_is_fixed_and_revalidated() {
    ensure_base_image();
    agent(
        "janitor-test-fixer:latest",
        r#"grep -q 'ERROR: model /models/large.bin not found' "$JANITOR_JOB"
grep -q '"attempt":1' "$JANITOR_JOB"
grep -q '"output_tail":\[' "$JANITOR_JOB"
sed -i 's#/models/large.bin#/models/tiny.bin#' /workspace/config.env
echo "agent: pointed MODEL at the weights the image has"
printf '{"status":"fixed","summary":"MODEL pointed at /models/tiny.bin","files":["config.env"]}' > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_repo(repos.path(), "fix-me");
    let (r, out) = validate("fix-me", &url, "janitor-test-fixer:latest").await;
    assert_eq!(r.status, JobStatus::Fixed, "{r:#?}\n{out:#?}");
    assert_eq!(
        r.reason.as_deref(),
        Some("fixed by the agent in attempt 1 of 3: MODEL pointed at /models/tiny.bin")
    );
    // The first validation is the report's steps; the attempt has its own.
    assert_eq!(r.step(StepName::Run).unwrap().status, StepStatus::Failed);
    let fix = r.fix.as_ref().unwrap();
    assert_eq!(fix.attempts.len(), 1);
    let a = &fix.attempts[0];
    assert!(a.changed);
    assert_eq!(a.status, Some(JobStatus::Succeeded));
    assert!(a
        .steps
        .iter()
        .any(|s| s.name == StepName::Run && s.status == StepStatus::Succeeded));
    assert_eq!(
        a.result.as_ref().unwrap()["files"][0],
        "config.env",
        "extra fields are kept"
    );
    let patch = fix.patch_text.as_deref().unwrap();
    assert!(
        patch.contains("-MODEL=/models/large.bin") && patch.contains("+MODEL=/models/tiny.bin"),
        "{patch}"
    );
    assert!(
        out.iter().any(|l| l == "[run] loaded /models/tiny.bin"),
        "{out:#?}"
    );
    assert!(out
        .iter()
        .any(|l| l == "[agent] agent: pointed MODEL at the weights the image has"));
}

/// An agent whose every change still fails: `failed` after the three attempts, each with its
/// re-validation, the last failure given to the next attempt; no patch is kept.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_makes_things_worse_fails_after_the_attempts() {
    ensure_base_image();
    agent(
        "janitor-test-worse:latest",
        r#"n=$(sed -n 's/.*"attempt":\([0-9]*\).*/\1/p' "$JANITOR_JOB")
echo "MODEL=/models/try-$n.bin" > /workspace/config.env
printf '{"status":"fixed","summary":"tried %s"}' "$n" > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_repo(repos.path(), "fix-worse");
    let (r, _) = validate("fix-worse", &url, "janitor-test-worse:latest").await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let fix = r.fix.as_ref().unwrap();
    assert_eq!(fix.attempts.len(), 3);
    assert!(fix
        .attempts
        .iter()
        .all(|a| a.changed && a.status == Some(JobStatus::Failed)));
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("not fixed after 3 attempt(s); last: run: "),
        "{:?}",
        r.reason
    );
    assert!(fix.patch_text.is_none());
    assert_eq!(fix.pr_status, "not_applicable");
}

/// An agent that answers `unfixable` ends the job so, with its reason.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_says_unfixable_ends_the_job_unfixable() {
    ensure_base_image();
    agent(
        "janitor-test-giveup:latest",
        r#"printf '{"status":"unfixable","summary":"the weights are gated: needs an HF_TOKEN"}' > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_repo(repos.path(), "fix-giveup");
    let (r, _) = validate("fix-giveup", &url, "janitor-test-giveup:latest").await;
    assert_eq!(r.status, JobStatus::Unfixable, "{r:#?}");
    assert!(
        r.reason.as_deref().unwrap().ends_with(
            "; the agent says it cannot be fixed: the weights are gated: needs an HF_TOKEN"
        ),
        "{:?}",
        r.reason
    );
    assert_eq!(r.fix.as_ref().unwrap().pr_status, "no_changes");
}

/// Through janitord: the fix is stored as `fix.patch` beside the report, which names it.
#[tokio::test(flavor = "multi_thread")]
async fn janitord_stores_the_fix_beside_the_report() {
    const INSTANCE: &str = "i-0f1x000000000001";
    ensure_base_image();
    agent("janitor-test-fixer2:latest", FIX_MODEL);
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = broken_repo(repos.path(), "fix-daemon");
    let mut job = spec("fix-daemon", &url, Duration::from_secs(240));
    job.agent_image = Some("janitor-test-fixer2:latest".into());
    let run_id = "20261201T000000Z-fix002";
    let job_id = fx.send_job(run_id, &job).await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &[]);
    assert_eq!(d.wait(Duration::from_secs(240)), 0, "{}", d.output());
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "fixed", "{report:#}");
    let key = format!("janitor-reports/runs/{run_id}/jobs/{job_id}/fix.patch");
    assert_eq!(report["fix"]["patch"], key.as_str());
    assert!(report["fix"].get("patch_text").is_none());
    let patch = String::from_utf8(fx.bytes(&key).await).unwrap();
    assert!(patch.contains("+MODEL=/models/tiny.bin"), "{patch}");
}

/// A fix is committed on `janitor/{run_id}`, pushed to the repository's remote, and proposed
/// as one pull request whose body has the validation before and after; the job run again
/// (a retry) updates that pull request instead of opening a second, and a 502 is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_fix_is_pushed_and_proposed_once_even_when_the_job_is_retried() {
    ensure_base_image();
    agent(
        "janitor-test-fixer3:latest",
        r#"sed -i 's#/models/large.bin#/models/tiny.bin#' /workspace/config.env
printf '{"status":"fixed","summary":"point MODEL at the baked weights"}' > "$JANITOR_RESULT""#,
    );
    let gh = janitor_testkit::github::GitHubFixture::start().await;
    let repos = tempfile::tempdir().unwrap();
    // The fix goes to {git_url}/{organization}/{name}: the repository's home on that host.
    let url = broken_repo(&repos.path().join("local"), "fix-pr");
    let origin = repos.path().join("local/fix-pr");
    let run_id = "20261201T000000Z-fixpr1";
    gh.fail_next(&[502]);
    let validated = janitor_testkit::git(&origin, &["rev-parse", "HEAD"]);
    let validated = validated.trim();
    let mut heads = Vec::new();
    for round in 1..=2 {
        let mut job = spec("fix-pr", &url, Duration::from_secs(240));
        job.agent_image = Some("janitor-test-fixer3:latest".into());
        job.report_status = Some(true);
        let work = tempfile::tempdir().unwrap();
        let mut ctx = janitor_testkit::job_context(
            &format!("fix-pr-{round}"),
            run_id,
            job,
            "local",
            work.path(),
        );
        ctx.publish = Some(janitor_pipeline::publish::PublishSettings {
            api_url: gh.url.clone(),
            git_url: format!("file://{}", repos.path().display()),
            token: "t0ken-value".into(),
            author_name: "janitor-test".into(),
            author_email: "janitor@test".into(),
            status_target_url: None,
        });
        let (r, _) = janitor_testkit::run_in_process(&ctx).await;
        assert_eq!(r.status, JobStatus::Fixed, "{r:#?}");
        let fix = r.fix.as_ref().unwrap();
        let want = if round == 1 { "created" } else { "updated" };
        assert_eq!(fix.pr_status, want, "{fix:#?}");
        assert_eq!(fix.pr_url.as_deref(), Some("https://github.example/pull/1"));
        // The verdict on the validated commit (failed, fixed in the pull request), and the
        // pull request's head passing; the retried job finds its own status on the first.
        assert_eq!(r.commit.as_deref(), Some(validated));
        let head = fix.head_commit.clone().unwrap();
        assert_eq!(r.statuses.len(), 2, "{:#?}", r.statuses);
        assert_eq!(r.statuses[0].commit, validated);
        assert_eq!(r.statuses[0].state, "failure");
        assert!(
            r.statuses[0]
                .description
                .ends_with("; fixed in the pull request"),
            "{:#?}",
            r.statuses
        );
        let first = if round == 1 {
            "posted"
        } else {
            "already_posted"
        };
        assert_eq!(r.statuses[0].outcome, first, "{:#?}", r.statuses);
        assert_eq!(
            (
                r.statuses[1].commit.as_str(),
                r.statuses[1].state.as_str(),
                r.statuses[1].outcome.as_str()
            ),
            (head.as_str(), "success", "posted")
        );
        heads.push(head);
    }
    // One status on the validated commit however often the job ran; one on each head pushed.
    let on = |sha: &str| gh.statuses().iter().filter(|(c, _)| c == sha).count();
    assert_eq!(on(validated), 1, "{:#?}", gh.statuses());
    assert!(heads.iter().all(|h| on(h) == 1), "{:#?}", gh.statuses());
    let (_, posted) = &gh.statuses()[0];
    assert_eq!(posted["context"], "janitor/validate");
    let seen: Vec<_> = gh
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/pulls"))
        .collect();
    let posts: Vec<_> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 1, "one pull request: {seen:#?}");
    let gets = seen.iter().filter(|s| s.method == "GET").count();
    assert_eq!(
        gets, 3,
        "the first answered 502 and retried, then one per round: {seen:#?}"
    );
    assert!(seen
        .iter()
        .any(|s| s.method == "PATCH" && s.path == "/repos/local/fix-pr/pulls/1"));
    assert!(gh
        .seen()
        .iter()
        .all(|s| s.authorization == "Bearer t0ken-value"));
    let created = &posts[0].body;
    assert_eq!(created["head"], format!("janitor/{run_id}"));
    assert_eq!(
        created["title"],
        "janitor: point MODEL at the baked weights"
    );
    let body = created["body"].as_str().unwrap();
    // The worker's failure is its text, fenced: nothing in it renders.
    assert!(
        body.contains("**Before:**\n\n```text\nrun: exited with code 1\n```"),
        "{body}"
    );
    assert!(body.contains("**After:** every step passed"), "{body}");
    // The branch is on the remote, with the change and the configured author.
    let log = janitor_testkit::git(
        &origin,
        &[
            "log",
            "-1",
            "--format=%an <%ae>%n%s",
            &format!("janitor/{run_id}"),
        ],
    );
    assert!(
        log.starts_with("janitor-test <janitor@test>\njanitor: point MODEL at the baked weights"),
        "{log}"
    );
    let file = janitor_testkit::git(&origin, &["show", &format!("janitor/{run_id}:config.env")]);
    assert_eq!(file.trim(), "MODEL=/models/tiny.bin");
}

/// Job secrets from Secrets Manager and SSM reach their audiences only — the build's as a
/// secret mount, the agent's (named only under `secrets:`) as its environment, the publish
/// token neither — and nothing of their values reaches CloudWatch or the report, even when
/// the repository's code and the agent print them; a secret that is not there is an `error`
/// naming it.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_build_and_the_agent_and_are_redacted_everywhere() {
    const INSTANCE: &str = "i-0f1x000000000002";
    const KEY: &str = "sk-ant-api03-Zm9vYmFyYmF6";
    const TOKEN: &str = "ghp_s3cretT0kenValue";
    const HF: &str = "hf_buildOnlyValue77";
    ensure_base_image();
    agent(
        "janitor-test-secretive:latest",
        r#"echo "agent key: $ANTHROPIC_API_KEY token: ${GITHUB_TOKEN:-none} hf: ${HF_TOKEN:-none}"
printf '{"status":"unfixable","summary":"key %s does not help"}' "$ANTHROPIC_API_KEY" > "$JANITOR_RESULT""#,
    );
    let fx = Fixture::start(&[INSTANCE]).await;
    fx.put_secret("janitor/anthropic", KEY).await;
    fx.put_parameter("/janitor/github-token", TOKEN).await;
    fx.put_secret("janitor/hf", HF).await;
    let repos = tempfile::tempdir().unwrap();
    // A repository that leaks what its build was given, and then fails quoting it.
    let url = git_repo(
        repos.path(),
        "fix-secrets",
        &[(
            "Dockerfile",
            &format!(
                "FROM {BASE_IMAGE}\nARG NONCE={}\nRUN --mount=type=secret,id=HF_TOKEN echo \"build sees $(cat /run/secrets/HF_TOKEN)\" && cat /run/secrets/HF_TOKEN > /leaked\nCMD [\"sh\", \"-c\", \"echo ERROR: bad key $(cat /leaked); exit 1\"]\n",
                // A fresh layer each run: a cached one would print nothing.
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ),
        )],
    );
    let mut job = spec("fix-secrets", &url, Duration::from_secs(240));
    job.agent_image = Some("janitor-test-secretive:latest".into());
    job.build.secrets = vec!["HF_TOKEN".into()];
    job.secrets = vec![
        (
            "ANTHROPIC_API_KEY".into(),
            "secretsmanager:janitor/anthropic".into(),
        ),
        ("GITHUB_TOKEN".into(), "ssm:/janitor/github-token".into()),
        ("HF_TOKEN".into(), "secretsmanager:janitor/hf".into()),
    ];
    let mut missing = spec("fix-nosecret", &url, Duration::from_secs(60));
    missing.secrets = vec![("HF_TOKEN".into(), "secretsmanager:janitor/hf-gone".into())];
    let run_id = "20261201T000000Z-fix003";
    let job_id = fx.send_job(run_id, &job).await;
    let missing_id = fx.send_job(run_id, &missing).await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &["--error-retry-seconds", "0"]);
    assert_eq!(d.wait(Duration::from_secs(300)), 0, "{}", d.output());
    let report_key = |id: &str| format!("janitor-reports/runs/{run_id}/jobs/{id}/report.json");
    let r = fx.json(&report_key(&job_id)).await;
    assert_eq!(r["status"], "unfixable", "{r:#}");
    assert_eq!(r["errors"]["first"][0], "ERROR: bad key ***", "{r:#}");
    assert_eq!(r["agent"]["summary"], "key *** does not help", "{r:#}");
    let text = r.to_string();
    assert!(
        !text.contains(KEY) && !text.contains(TOKEN) && !text.contains(HF),
        "{text}"
    );
    let lines = fx.log_lines(&format!("{INSTANCE}/{job_id}")).await;
    assert!(
        lines.iter().any(|l| l.ends_with("build sees ***")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "[agent] agent key: *** token: none hf: none"),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(KEY) || l.contains(TOKEN) || l.contains(HF)),
        "{lines:#?}"
    );
    let archive = janitor_services::logs::read_archive(
        &fx.bytes(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/output.log.gz"
        ))
        .await,
    )
    .unwrap();
    assert!(!archive.contains(KEY), "the archive is redacted too");

    let m = fx.json(&report_key(&missing_id)).await;
    assert_eq!(m["status"], "error", "{m:#}");
    assert!(
        m["reason"]
            .as_str()
            .unwrap()
            .starts_with("secret `HF_TOKEN` (secretsmanager:janitor/hf-gone) could not be read: "),
        "{m:#}"
    );
}

/// Through janitord: the instance's GitHub token (the secrets directory's `GITHUB_TOKEN`)
/// and `--github-api-url` publish the fix; the report names the pull request.
#[tokio::test(flavor = "multi_thread")]
async fn janitord_publishes_the_fix_with_the_instance_token() {
    const INSTANCE: &str = "i-0f1x000000000003";
    ensure_base_image();
    agent("janitor-test-fixer4:latest", FIX_MODEL);
    let gh = janitor_testkit::github::GitHubFixture::start().await;
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = broken_repo(&repos.path().join("local"), "fix-publish");
    let git_url = format!("file://{}", repos.path().display());
    let mut job = spec("fix-publish", &url, Duration::from_secs(240));
    job.agent_image = Some("janitor-test-fixer4:latest".into());
    let run_id = "20261201T000000Z-fix004";
    let job_id = fx.send_job(run_id, &job).await;
    let cache = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("GITHUB_TOKEN"), "ghp_instanceToken1\n").unwrap();
    let mut d = janitord(
        &fx,
        INSTANCE,
        cache.path(),
        &[
            "--secrets-dir",
            secrets.path().to_str().unwrap(),
            "--github-api-url",
            &gh.url,
            "--github-git-url",
            &git_url,
        ],
    );
    assert_eq!(d.wait(Duration::from_secs(240)), 0, "{}", d.output());
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "fixed", "{report:#}");
    assert_eq!(report["fix"]["pr_status"], "created", "{report:#}");
    assert_eq!(report["fix"]["pr_url"], "https://github.example/pull/1");
    let seen = gh.seen();
    let post = seen
        .iter()
        .find(|s| s.method == "POST")
        .expect("a pull request was opened");
    assert_eq!(post.authorization, "Bearer ghp_instanceToken1");
    assert_eq!(post.path, "/repos/local/fix-publish/pulls");
    assert!(!report.to_string().contains("ghp_instanceToken1"));
}
