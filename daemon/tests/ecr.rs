//! The ECR login janitord makes for a private agent image, against moto's ECR, and the proof
//! that the agent step's pull carries it (through the engine trait: no registry is reachable
//! from a test, so the pull itself is refused, after it was asked with the credentials).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use janitor_model::report::{StepName, StepStatus};
use janitor_pipeline::{run_job, Tools};
use janitor_services::logs::NullSink;
use janitor_services::registry::{EcrAuth, RegistryAuth};
use janitor_testkit::engine::TestEngine;
use janitor_testkit::{dockerfile, ensure_base_image, git_repo, job_context, spec, Fixture};
use tokio_util::sync::CancellationToken;

const AGENT: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/janitor-agent:latest";

#[tokio::test(flavor = "multi_thread")]
async fn an_ecr_agent_image_gets_a_registry_login() {
    let fx = Fixture::start(&[]).await;
    let auth = EcrAuth {
        config: fx.sdk.clone(),
    };
    let creds = auth.credentials(AGENT).await.unwrap().unwrap();
    assert_eq!(creds.username, "AWS");
    assert_eq!(creds.password, "123456789012-auth-token");
    assert_eq!(
        creds.server,
        "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
    );
    assert!(
        !format!("{creds:?}").contains("auth-token"),
        "Debug never prints the password"
    );
    assert_eq!(
        auth.credentials("janitor-agent:latest").await.unwrap(),
        None,
        "an image outside ECR needs no login"
    );
}

/// Runs a job whose agent image is in ECR through the pipeline; returns the pulls and the
/// agent step.
async fn run_with_ecr_agent(
    fx: &Fixture,
    name: &str,
) -> (
    Vec<(
        String,
        Option<janitor_services::registry::RegistryCredentials>,
    )>,
    janitor_model::report::StepReport,
) {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        name,
        // A failing repository: the agent runs only to fix something.
        &[("Dockerfile", &dockerfile("echo broken; exit 1"))],
    );
    let mut job_spec = spec(name, &url, Duration::from_secs(120));
    job_spec.agent_image = Some(AGENT.to_string());
    let work = tempfile::tempdir().unwrap();
    let ctx = job_context(
        &format!("{name}-1"),
        "20261201T000000Z-ecr001",
        job_spec,
        "i-0ecr000000000001",
        work.path(),
    );
    let engine = TestEngine::connect().await;
    let registry = EcrAuth {
        config: fx.sdk.clone(),
    };
    let tools = Tools {
        engine: &engine,
        registry: &registry,
        gpu: &janitor_services::gpu::Probe::none("no GPU in this test"),
        sink: &NullSink,
    };
    let report = run_job(&tools, &ctx, &CancellationToken::new()).await;
    let pulls = engine.hooks.lock().unwrap().pulls.clone();
    (pulls, report.step(StepName::Agent).unwrap().clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_pull_carries_the_ecr_login() {
    let fx = Fixture::start(&[]).await;
    let (pulls, agent) = run_with_ecr_agent(&fx, "ecr-agent").await;
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].0, AGENT);
    let creds = pulls[0].1.as_ref().expect("the pull carried credentials");
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("AWS", "123456789012-auth-token")
    );
    assert_eq!(agent.status, StepStatus::Failed, "{agent:?}");
    assert!(
        agent.detail.contains("could not be pulled"),
        "{}",
        agent.detail
    );
}

/// ECR refusing the login (past the SDK's retries) leaves the pull anonymous, not the job stuck.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_ecr_login_leaves_the_pull_anonymous() {
    let fx = Fixture::start(&[]).await;
    fx.fail_next("GetAuthorizationToken", 503, "ServerException", 3);
    let (pulls, agent) = run_with_ecr_agent(&fx, "ecr-down").await;
    assert_eq!(fx.faults_fired("GetAuthorizationToken"), 3);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].1, None, "no login, so none is sent");
    assert_eq!(agent.status, StepStatus::Failed, "{agent:?}");
}

/// `prefetch_images`: an absent ECR image is pulled at start with the registry's login (the
/// pull itself is refused here: no registry is reachable), a present one is left alone, and
/// a failure is reported, never fatal.
#[tokio::test(flavor = "multi_thread")]
async fn prefetch_pulls_absent_images_with_the_registry_login() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let auth = EcrAuth {
        config: fx.sdk.clone(),
    };
    let engine = TestEngine::connect().await;
    let images = vec![AGENT.to_string(), janitor_testkit::BASE_IMAGE.to_string()];
    let got = janitord::hygiene::prefetch(&engine, &auth, &images).await;
    assert!(
        got[0].as_ref().unwrap_err().contains("could not be pulled"),
        "{got:?}"
    );
    assert_eq!(got[1], Ok(()), "present: nothing to pull");
    let pulls = engine.hooks.lock().unwrap().pulls.clone();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].0, AGENT);
    assert_eq!(pulls[0].1.as_ref().unwrap().username, "AWS");
}
