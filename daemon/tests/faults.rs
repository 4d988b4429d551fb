//! Outside services failing on cue, and what the real `janitord` does then. The fixture answers
//! chosen API calls with the errors the real services send (503, throttling), so the real SDK
//! clients see them; Docker is made unreachable by pointing the daemon at a closed port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_testkit::{dockerfile, ensure_base_image, eventually, git_repo, spec, Fixture, Proc};

fn janitord(fx: &Fixture, instance: &str, cache: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--stop-grace-seconds", "2"];
    args.extend_from_slice(extra);
    janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        fx,
        instance,
        cache,
        &args,
    )
}

/// SQS, CloudWatch Logs and S3 each fail past the SDK's own retries: the daemon backs off and
/// polls again, the shipper retries the throttled batches, the report upload is retried; the
/// job runs once, its report is stored, every line is in CloudWatch in order, and its metrics
/// reach the log group as embedded-metric-format events.
#[tokio::test(flavor = "multi_thread")]
async fn queue_logs_and_store_failing_on_cue_cost_no_result() {
    const INSTANCE: &str = "i-0fault00000000001";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "fault-repo",
        &[(
            "Dockerfile",
            &dockerfile("for i in $(seq 1 20); do echo line $i; done"),
        )],
    );
    let run_id = "20261201T000000Z-fault1";
    let job_id = fx
        .send_job(run_id, &spec("fault-repo", &url, Duration::from_secs(120)))
        .await;
    // The SDK tries each call 3 times: these outlast its retries.
    fx.fail_next("ReceiveMessage", 503, "ServiceUnavailable", 6);
    fx.fail_next("PutLogEvents", 400, "ThrottlingException", 4);
    fx.fail_next("S3:PUT", 503, "SlowDown", 4);
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &["--exit-when-idle"]);
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let out = d.output();
    assert!(out.contains("could not poll the queue"), "{out}");
    assert!(
        out.contains("unavailable"),
        "the error's kind is logged: {out}"
    );
    assert_eq!(fx.faults_fired("ReceiveMessage"), 6);
    assert_eq!(fx.faults_fired("PutLogEvents"), 4);
    assert_eq!(fx.faults_fired("S3:PUT"), 4);

    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["attempt"], 1, "the job ran once");
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    let lines = fx.log_lines(&format!("{INSTANCE}/{job_id}")).await;
    let numbered: Vec<&String> = lines.iter().filter(|l| l.contains("] line ")).collect();
    assert_eq!(numbered.len(), 20, "{lines:?}");
    for (i, l) in numbered.iter().enumerate() {
        assert!(l.ends_with(&format!("line {}", i + 1)), "out of order: {l}");
    }
    let metrics = fx.log_lines(&format!("{INSTANCE}/metrics")).await;
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    let emf: serde_json::Value = serde_json::from_str(&metrics[0]).unwrap();
    assert_eq!(emf["Status"], "succeeded");
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Janitor");
}

/// The group refuses the idle scale-in once: the daemon stays, and leaves after the next idle
/// period.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_scale_in_is_tried_again_after_the_next_idle_period() {
    let fx = Fixture::start(&[]).await;
    let me = fx.launch(2).await.remove(0);
    fx.fail_next("SetDesiredCapacity", 503, "ServiceUnavailable", 3);
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(
        &fx,
        &me,
        cache.path(),
        &[
            "--idle-timeout-seconds",
            "2",
            "--imds-interval-seconds",
            "1",
        ],
    );
    d.wait_for_output(
        "could not lower the desired capacity",
        Duration::from_secs(60),
    );
    eventually(Duration::from_secs(60), "desired capacity 1", || async {
        (fx.group().await.0 == 1).then_some(())
    })
    .await;
    assert_eq!(fx.faults_fired("SetDesiredCapacity"), 3);
    // The group's scale-in picks which unprotected instance goes (both are idle here).
    let (_, instances) = fx.group().await;
    assert_eq!(instances.len(), 1, "{instances:?}");
}

/// An engine socket nothing listens on: janitord does not start, exits 1 and says which engine.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_engine_stops_the_start_with_exit_1() {
    const INSTANCE: &str = "i-0fault00000000002";
    let fx = Fixture::start(&[INSTANCE]).await;
    let cache = tempfile::tempdir().unwrap();
    let mut env = fx.env(Some(INSTANCE));
    let sock = cache.path().join("no-engine.sock");
    env.push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    let mut d = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &[
            "--log-format",
            "text",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(d.wait(Duration::from_secs(60)), 1, "{}", d.output());
    assert!(
        d.output().contains("cannot reach the Docker engine"),
        "{}",
        d.output()
    );
}

/// The engine dropping the connection during a build: the build step ends `error` with the
/// engine's own words (not the repository's fault), later steps do not run, and the report
/// still comes back.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_lost_mid_job_is_an_error_of_the_step_that_needed_it() {
    use janitor_model::report::{JobStatus, StepName, StepStatus};
    use janitor_pipeline::{run_job, Tools};
    use janitor_services::logs::NullSink;
    use janitor_services::registry::Anonymous;
    use janitor_testkit::engine::TestEngine;

    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "engine-lost",
        &[("Dockerfile", &dockerfile("echo ok"))],
    );
    let work = tempfile::tempdir().unwrap();
    let ctx = janitor_testkit::job_context(
        "engine-lost-1",
        "20261201T000000Z-fault2",
        spec("engine-lost", &url, Duration::from_secs(60)),
        "local",
        work.path(),
    );
    let engine = TestEngine::connect().await;
    engine.hooks.lock().unwrap().unreachable_builds = 1;
    let tools = Tools {
        engine: &engine,
        registry: &Anonymous,
        gpu: &janitor_services::gpu::Probe::none("no GPU in this test"),
        sink: &NullSink,
    };
    let report = run_job(&tools, &ctx, &tokio_util::sync::CancellationToken::new()).await;
    assert_eq!(report.status, JobStatus::Error);
    let build = report.step(StepName::Build).unwrap();
    assert_eq!(build.status, StepStatus::Error);
    assert!(
        build.detail.contains("cannot reach the Docker engine"),
        "{}",
        build.detail
    );
    assert_eq!(
        report.step(StepName::Run).unwrap().status,
        StepStatus::NotRun
    );
    assert!(report
        .reason
        .as_deref()
        .unwrap()
        .starts_with("build: cannot reach"));
}

/// The store is down when a job ends: its report waits in the spool, its message stays
/// invisible (the keep-alive goes on), no new job is taken until the report is stored, the job
/// is not run again, and its history has one entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_at_the_end_of_a_job_holds_the_queue_until_the_report_is_stored() {
    const INSTANCE: &str = "i-0fault00000000003";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let first = git_repo(
        repos.path(),
        "outage-first",
        &[("Dockerfile", &dockerfile("echo first; sleep 2"))],
    );
    let second = git_repo(
        repos.path(),
        "outage-second",
        &[("Dockerfile", &dockerfile("echo second"))],
    );
    let run_id = "20261201T000000Z-fault3";
    let first_id = fx
        .send_job(
            run_id,
            &spec("outage-first", &first, Duration::from_secs(120)),
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(
        &fx,
        INSTANCE,
        cache.path(),
        &["--exit-when-idle", "--visibility-timeout-seconds", "6"],
    );
    fx.wait_for_log_line(&format!("{INSTANCE}/{first_id}"), "[run] first")
        .await;
    let second_id = fx
        .send_job(
            run_id,
            &spec("outage-second", &second, Duration::from_secs(120)),
        )
        .await;
    // Every S3 write fails for a while: far longer than the 6 s visibility timeout.
    fx.fail_next("S3:PUT", 503, "ServiceUnavailable", 45);
    assert_eq!(d.wait(Duration::from_secs(240)), 0, "{}", d.output());
    let out = d.output();
    let held = out
        .find("a report is not stored yet: no new job until it is")
        .unwrap_or_else(|| panic!("the daemon held the queue: {out}"));
    let second_taken = out.rfind("job taken").unwrap();
    assert!(held < second_taken, "the second job waited: {out}");
    assert_eq!(fx.faults_fired("S3:PUT"), 45);

    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{first_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["attempt"], 1, "the first job ran once");
    let first_keys = fx
        .keys(&format!("janitor-reports/runs/{run_id}/jobs/{first_id}/"))
        .await;
    assert!(
        !first_keys.iter().any(|k| k.ends_with("started-2.json")),
        "{first_keys:?}"
    );
    let history = fx.keys("janitor-reports/repos/local/outage-first/").await;
    assert_eq!(history.len(), 1, "{history:?}");
    let second_report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{second_id}/report.json"
        ))
        .await;
    assert_eq!(second_report["status"], "succeeded");
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    assert_eq!(
        std::fs::read_dir(cache.path().join("spool"))
            .unwrap()
            .count(),
        0
    );
}
