//! janitor's own agent image (agent/: Claude Code from the claude-agent-sdk wheel, run
//! headless by its entrypoint) in the fix loop, against the testkit's scripted Messages API:
//! real tool calls change the checkout, the change is validated again, and the model's cost
//! is in the report. The model API's failures are retried, then the attempt is `error`.
//! `agent: always` carries out a prompt on a passing repository (`changed`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use janitor_model::config::AgentMode;
use janitor_model::report::{JobStatus, Report};
use janitor_testkit::model_api::{ModelApiFixture, Turn};
use janitor_testkit::{
    broken_worker, ensure_agent_image, ensure_base_image, git_repo, spec, BASE_IMAGE,
};

const KEY: &str = "sk-ant-api03-agentTestKey42";

/// The job in-process with janitor's agent pointed at the fake: on the host's network (the
/// fake listens on loopback), the CLI's own retries off and no backoff, so a test takes
/// seconds.
async fn run(
    name: &str,
    url: &str,
    fake: &ModelApiFixture,
    edit: impl FnOnce(&mut janitor_model::config::JobSpec),
) -> (Report, Vec<String>) {
    let mut job = spec(name, url, Duration::from_secs(300));
    job.agent_image = Some(ensure_agent_image());
    job.prompt = "keep the worker loading its baked weights".into();
    job.secrets = vec![(
        "ANTHROPIC_API_KEY".into(),
        "secretsmanager:janitor/anthropic".into(),
    )];
    edit(&mut job);
    let work = tempfile::tempdir().unwrap();
    let mut ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261203T000000Z-agent",
        job,
        "local",
        work.path(),
    );
    ctx.secrets = janitor_services::secrets::SecretValues::new(vec![(
        "ANTHROPIC_API_KEY".into(),
        KEY.into(),
    )]);
    ctx.agent_limits.network = Some("host".into());
    ctx.agent_limits.env = vec![
        format!("ANTHROPIC_BASE_URL={}", fake.url),
        "CLAUDE_CODE_MAX_RETRIES=0".into(),
        "JANITOR_AGENT_RETRY_SECONDS=0".into(),
    ];
    janitor_testkit::run_in_process(&ctx).await
}

/// Claude Code reads the failure from the task janitor's entrypoint wrote, runs the fix as a
/// real Bash tool call in /workspace, and answers; janitord validates the change again:
/// `fixed`, with the turns, tokens and cost in result.json and the model cost in the report.
#[tokio::test(flavor = "multi_thread")]
async fn the_product_agent_fixes_a_broken_worker() {
    ensure_base_image();
    let fake = ModelApiFixture::start(vec![
        Turn::Bash("sed -i 's#/models/large.bin#/models/tiny.bin#' config.env && cat config.env".into()),
        Turn::Text("Point MODEL at the weights the image bakes\n\nconfig.env named a file the build never downloads.".into()),
    ])
    .await;
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "agent-fix");
    let (r, out) = run("agent-fix", &url, &fake, |_| {}).await;
    assert_eq!(r.status, JobStatus::Fixed, "{r:#?}\n{out:#?}");
    assert_eq!(
        r.reason.as_deref(),
        Some("fixed by the agent in attempt 1 of 3: Point MODEL at the weights the image bakes")
    );
    let answer = r.agent.clone().unwrap();
    assert_eq!(answer["status"], "fixed");
    assert_eq!(answer["files"], serde_json::json!(["config.env"]));
    assert_eq!(answer["turns"], 2, "{answer:#}");
    assert_eq!(answer["tokens"]["input"], 2000, "{answer:#}");
    let cost = answer["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "{answer:#}");
    assert_eq!(r.model_cost_usd, Some(cost));
    // The task held the repository's prompt, the failure and what a runpod worker is; the
    // key was the job's secret.
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.api_key == KEY));
    let task = &calls[0].text;
    for want in [
        "keep the worker loading its baked weights",
        "ERROR: model /models/large.bin not found",
        "test_input.json",
        "UNFIXABLE:",
    ] {
        assert!(task.contains(want), "{want} not in the task");
    }
    // Its progress is in the job's output, and its key nowhere.
    assert!(
        out.iter()
            .any(|l| l.starts_with("[agent] agent: Bash: sed -i")),
        "{out:#?}"
    );
    assert!(!out.iter().any(|l| l.contains(KEY)));
    assert!(!serde_json::to_string(&r).unwrap().contains(KEY));
}

/// The model API overloaded past the agent's tries: the attempt is `error` (the instance's
/// problem, tried again), not the repository's failure; one 429 before a good answer is
/// retried and the job is fixed.
#[tokio::test(flavor = "multi_thread")]
async fn model_api_failures_are_retried_then_an_error() {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "agent-529");
    let down =
        ModelApiFixture::start(vec![Turn::Fail(529), Turn::Fail(529), Turn::Fail(503)]).await;
    let (r, out) = run("agent-529", &url, &down, |_| {}).await;
    assert_eq!(r.status, JobStatus::Error, "{r:#?}\n{out:#?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("the agent could not work in attempt 1: the agent's model API failed"),
        "{:?}",
        r.reason
    );
    assert_eq!(down.calls().len(), 3, "three tries");
    assert_eq!(
        r.agent.as_ref().unwrap()["api_errors"],
        serde_json::json!([529, 529, 503])
    );

    let url = broken_worker(repos.path(), "agent-429");
    let flaky = ModelApiFixture::start(vec![
        Turn::Fail(429),
        Turn::Bash("sed -i 's#/models/large.bin#/models/tiny.bin#' config.env".into()),
        Turn::Text("Fix MODEL".into()),
    ])
    .await;
    let (r, out) = run("agent-429", &url, &flaky, |_| {}).await;
    assert_eq!(r.status, JobStatus::Fixed, "{r:#?}\n{out:#?}");
    assert_eq!(r.agent.as_ref().unwrap()["tries"], 2);
}

/// `agent: always` on a passing repository: the prompt is carried out, the change passes
/// the same validation, and the verdict is `changed` with the patch kept.
#[tokio::test(flavor = "multi_thread")]
async fn agent_always_carries_out_the_prompt_on_a_passing_repository() {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "agent-always",
        &[(
            "Dockerfile",
            &format!("FROM {BASE_IMAGE}\nCOPY . /app\nCMD [\"sh\", \"-c\", \"ls /app && echo worker ok\"]\n"),
        )],
    );
    let fake = ModelApiFixture::start(vec![
        Turn::Bash("mkdir -p .runpod && printf '{\"tests\": []}' > .runpod/hub-notes.json".into()),
        Turn::Text("Add .runpod/hub-notes.json as asked".into()),
    ])
    .await;
    let (r, out) = run("agent-always", &url, &fake, |job| {
        job.agent.mode = AgentMode::Always;
        job.prompt = "add .runpod/hub-notes.json".into();
    })
    .await;
    assert_eq!(r.status, JobStatus::Changed, "{r:#?}\n{out:#?}");
    let fix = r.fix.as_ref().unwrap();
    assert!(fix
        .patch_text
        .as_deref()
        .unwrap()
        .contains("+++ b/.runpod/hub-notes.json"));
    assert!(
        fake.calls()[0]
            .text
            .contains("**passes**. Carry out the maintainer's instructions"),
        "the change prompt"
    );
}
