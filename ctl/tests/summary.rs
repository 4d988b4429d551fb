//! `janitorctl show RUN --format markdown` on a run stored in moto with every verdict (and a
//! queued and a running job), against the golden file `ctl/tests/golden/show.md`. Set
//! `UPDATE_GOLDEN=1` to write the file from the output instead (then read the diff).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_model::config::RepoRef;
use janitor_model::ledger::{self, ManifestJob, RunManifest, StartedRecord};
use janitor_model::report::{
    FixReport, InstanceInfo, JobIdentity, JobStatus, Report, TestMode, TestResult, TestStatus,
    TestsReport,
};
use janitor_testkit::{workspace_root, Fixture, Proc};
use time::OffsetDateTime;

const RUN: &str = "20261203T030000Z-golden";

fn at(seconds: i64) -> OffsetDateTime {
    // 2026-12-03 03:00:00 UTC, the run's start.
    OffsetDateTime::from_unix_timestamp(1_796_266_800 + seconds).unwrap()
}

fn instance() -> InstanceInfo {
    InstanceInfo {
        id: "i-0golden".into(),
        instance_type: "g5.xlarge".into(),
        availability_zone: "us-east-1a".into(),
        lifecycle: "on-demand".into(),
    }
}

fn report(name: &str, status: JobStatus, seconds: f64, reason: &str) -> Report {
    let mut r = Report::without_steps(
        JobIdentity {
            job_id: format!("{name}-1"),
            run_id: RUN.into(),
            repo: RepoRef {
                organization: "runpod-workers".into(),
                name: name.into(),
                url: None,
                git_ref: None,
            },
            prompt: "validate".into(),
            gpu_required: true,
            enqueued_at: at(0),
            attempt: 1,
        },
        instance(),
        status,
        reason.into(),
        "test",
    );
    r.timings.started_at = at(10);
    r.timings.finished_at = at(10 + seconds as i64);
    r.timings.duration_seconds = seconds;
    r.estimated_cost_usd = Some(seconds / 3600.0 * 1.006);
    r
}

fn tests(results: Vec<TestResult>) -> TestsReport {
    TestsReport {
        source: ".runpod/tests.json".into(),
        mode: TestMode::Server,
        dockerfile: "Dockerfile".into(),
        cold_start_seconds: Some(3.2),
        passed: results
            .iter()
            .filter(|r| r.status == TestStatus::Passed)
            .count() as u32,
        total: results.len() as u32,
        results,
        notes: Vec::new(),
        realtime_port: Some(47211),
        sdk_version: Some("1.12.0".into()),
    }
}

fn test(name: &str, status: TestStatus, seconds: f64, error: Option<&str>) -> TestResult {
    TestResult {
        name: name.into(),
        status,
        duration_seconds: seconds,
        error: error.map(str::to_string),
        ..TestResult::default()
    }
}

fn fix(pr: Option<&str>) -> FixReport {
    FixReport {
        max_attempts: 2,
        attempts: Vec::new(),
        patch: None,
        patch_error: None,
        patch_text: None,
        head_commit: None,
        pr_status: if pr.is_some() {
            "created"
        } else {
            "not_applicable"
        }
        .into(),
        pr_url: pr.map(str::to_string),
        pr_error: None,
    }
}

/// Every verdict a finished job can have, plus one queued and one running.
fn stored_run() -> (RunManifest, Vec<Report>, Vec<StartedRecord>) {
    let mut ok = report("worker-basic", JobStatus::Succeeded, 272.0, "");
    ok.tests = Some(tests(vec![
        test("basic", TestStatus::Passed, 0.9, None),
        test("batch", TestStatus::Passed, 4.0, None),
    ]));
    let mut failed = report(
        "worker-sdxl",
        JobStatus::Failed,
        61.5,
        "test: 1/3 tests passed; `raises` failed: the job FAILED: ValueError: prompt must not be empty",
    );
    let mut advisory = test("echo-a10", TestStatus::Passed, 1.2, None);
    advisory.output_matches = Some(false);
    failed.tests = Some(tests(vec![
        advisory,
        test(
            "raises",
            TestStatus::Failed,
            0.4,
            Some("the job FAILED: ValueError: prompt must not be empty"),
        ),
        test(
            "slow | ![pixel](https://evil.example/p.png)",
            TestStatus::TimedOut,
            30.0,
            Some("no answer within its 30000 ms timeout <script>alert(1)</script>"),
        ),
    ]));
    let timed_out = report(
        "worker-vllm",
        JobStatus::TimedOut,
        1800.0,
        "test: stopped at the job's hard timeout (30m00s)",
    );
    let error = report(
        "worker-a1111",
        JobStatus::Error,
        12.0,
        "preflight: .runpod/tests.json asks for a 48 GB GPU (ADA_48_PRO); this g5.xlarge has an NVIDIA A10G with 22.5 GiB",
    );
    let mut fixed = report(
        "worker-comfyui",
        JobStatus::Fixed,
        540.0,
        "fixed by the agent's change (attempt 1)",
    );
    fixed.fix = Some(fix(Some(
        "https://github.com/runpod-workers/worker-comfyui/pull/12",
    )));
    fixed.model_cost_usd = Some(0.42);
    let mut unfixable = report(
        "worker-tgi",
        JobStatus::Unfixable,
        300.0,
        "the agent: the base image needs a licence key the repository cannot hold",
    );
    unfixable.fix = Some(fix(None));
    let mut changed = report(
        "worker-sglang",
        JobStatus::Changed,
        420.0,
        "the prompt's change passed its validation",
    );
    changed.fix = Some(fix(Some(
        "https://github.com/runpod-workers/worker-sglang/pull/7",
    )));
    let mut reports = vec![ok, failed, timed_out, error, fixed, unfixable, changed];
    let names: Vec<String> = reports
        .iter()
        .map(|r| r.repo.name.clone())
        .chain(["worker-queued".to_string(), "worker-running".to_string()])
        .collect();
    let manifest = RunManifest {
        schema: 1,
        run_id: RUN.into(),
        config_path: "--org runpod-workers".into(),
        created_by: "nightly@github-actions".into(),
        created_at: at(0),
        max_concurrent_instances: 10,
        jobs: names
            .iter()
            .map(|n| ManifestJob {
                job_id: format!("{n}-1"),
                repository: format!("runpod-workers/{n}"),
                prompt: "validate".into(),
                gpu_required: true,
                timeout_seconds: 1800,
                instance_type: Some("g5.xlarge".into()),
            })
            .collect(),
        estimated_cost_usd: Some(4.53),
        discovery: None,
    };
    let started: Vec<StartedRecord> = names
        .iter()
        .filter(|n| n.as_str() != "worker-queued")
        .map(|n| StartedRecord {
            job_id: format!("{n}-1"),
            run_id: RUN.into(),
            attempt: 1,
            instance: instance(),
            started_at: at(10),
        })
        .collect();
    for r in &mut reports {
        r.attempt = 1;
    }
    (manifest, reports, started)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_markdown_summary_of_a_stored_run_matches_the_golden_file() {
    let fx = Fixture::start(&[]).await;
    let (manifest, reports, started) = stored_run();
    let s3 = fx.s3();
    let put = |key: String, body: String| {
        let s3 = s3.clone();
        let bucket = fx.bucket.clone();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    };
    put(
        ledger::manifest_key(RUN),
        serde_json::to_string(&manifest).unwrap(),
    )
    .await;
    for s in &started {
        put(
            ledger::started_key(RUN, &s.job_id, 1),
            serde_json::to_string(s).unwrap(),
        )
        .await;
    }
    for r in &reports {
        put(
            ledger::report_key(RUN, &r.job_id),
            serde_json::to_string(r).unwrap(),
        )
        .await;
    }
    let mut p = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitorctl")),
        &["show", RUN, "--format", "markdown"],
        &fx.env(None),
    );
    assert_eq!(p.wait(Duration::from_secs(60)), 0, "{}", p.output());
    let got = p.output();
    let golden = workspace_root().join("ctl/tests/golden/show.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "the Markdown differs from {}", golden.display());
    // Whatever the golden file says, nothing a worker wrote opens HTML or an image.
    assert!(!got.contains("<script>") && !got.contains("!["), "{got}");
}
