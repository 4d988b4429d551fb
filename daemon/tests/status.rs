//! The verdict on the commit (`report_status: true`): a commit status on the validated commit
//! through the GitHub fixture, its state and description from the verdict, a 5xx retried, one
//! status per commit however often the job runs, and none without a token (said in the report).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use janitor_model::report::{JobStatus, Report};
use janitor_testkit::github::GitHubFixture;
use janitor_testkit::{dockerfile, ensure_base_image, git_repo, spec};

async fn validate(name: &str, url: &str, gh: Option<&GitHubFixture>) -> Report {
    let mut job = spec(name, url, Duration::from_secs(120));
    job.report_status = Some(true);
    let work = tempfile::tempdir().unwrap();
    let mut ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261203T000000Z-status",
        job,
        "local",
        work.path(),
    );
    ctx.publish = gh.map(|gh| janitor_pipeline::publish::PublishSettings {
        api_url: gh.url.clone(),
        git_url: "https://github.invalid".into(),
        token: "st4tus-token".into(),
        author_name: "janitor-test".into(),
        author_email: "janitor@test".into(),
        status_target_url: Some("https://janitor.example/runs/{run_id}#{job_id}".into()),
    });
    janitor_testkit::run_in_process(&ctx).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn each_verdict_is_posted_once_on_the_validated_commit() {
    ensure_base_image();
    let gh = GitHubFixture::start().await;
    let repos = tempfile::tempdir().unwrap();
    let good = git_repo(
        repos.path(),
        "st-good",
        &[("Dockerfile", &dockerfile("echo fine"))],
    );
    let bad = git_repo(
        repos.path(),
        "st-bad",
        &[(
            "Dockerfile",
            &dockerfile("echo 'the model is missing'; exit 3"),
        )],
    );
    let head = |name: &str| {
        janitor_testkit::git(&repos.path().join(name), &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    };
    // The first call (the look at the commit's statuses) answers 502: retried.
    gh.fail_next(&[502]);
    let r = validate("st-good", &good, Some(&gh)).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
    assert_eq!(r.commit.as_deref(), Some(head("st-good").as_str()));
    assert_eq!(r.statuses.len(), 1, "{:#?}", r.statuses);
    let s = &r.statuses[0];
    assert_eq!(
        (s.state.as_str(), s.description.as_str(), s.outcome.as_str()),
        ("success", "passed", "posted")
    );
    assert_eq!(
        s.target_url.as_deref(),
        Some("https://janitor.example/runs/20261203T000000Z-status#st-good-1")
    );
    // Run again (a retried job): its own status is there, not posted twice.
    let again = validate("st-good", &good, Some(&gh)).await;
    assert_eq!(again.statuses[0].outcome, "already_posted");

    let r = validate("st-bad", &bad, Some(&gh)).await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let s = &r.statuses[0];
    assert_eq!(s.state, "failure");
    assert!(s.description.contains("exited with code 3"), "{s:#?}");

    let posted = gh.statuses();
    let on = |sha: &str| posted.iter().filter(|(c, _)| c == sha).count();
    assert_eq!(on(&head("st-good")), 1, "{posted:#?}");
    assert_eq!(on(&head("st-bad")), 1, "{posted:#?}");
    let (_, first) = &posted[0];
    assert_eq!(first["context"], "janitor/validate");
    assert_eq!(first["state"], "success");
    assert!(gh
        .seen()
        .iter()
        .all(|s| s.authorization == "Bearer st4tus-token"));
    let seen = gh.seen();
    let count = |method: &str, part: &str| {
        seen.iter()
            .filter(|s| s.method == method && s.path.contains(part))
            .count()
    };
    assert_eq!(count("POST", "/statuses/"), 2, "one per commit: {seen:#?}");
    // The first look at the commit's statuses answered 502 and was retried; then one per run.
    assert_eq!(count("GET", "/statuses"), 4, "{seen:#?}");

    // No token on the instance: nothing posted, the report says why.
    let r = validate("st-good", &good, None).await;
    assert_eq!(r.statuses[0].outcome, "failed");
    assert!(r.statuses[0]
        .error
        .as_deref()
        .unwrap()
        .contains("no GitHub token"));
}
