//! `janitorctl show RUN --format markdown` on a run stored in moto with every verdict (and a
//! queued and a running job), against the golden file `ctl/tests/golden/show.md` (set
//! `UPDATE_GOLDEN=1` to write the file from the output instead, then read the diff); and
//! `show RUN --html FILE` for a 45-job run over 20 instances, loaded in headless Chromium
//! (Debian's `chromium`, installed by scripts/test-deps.sh): every repository's row and one
//! timeline bar per started job in the DOM, no network request made, screenshots at desktop
//! and phone widths kept in `target/screenshots/`.
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
use std::process::Command;
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
                ..ManifestJob::default()
            })
            .collect(),
        estimated_cost_usd: Some(4.53),
        discovery: None,
        not_run: Vec::new(),
        pool_instances: Default::default(),
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

/// Stores the run in moto.
async fn store(
    fx: &Fixture,
    manifest: &RunManifest,
    reports: &[Report],
    started: &[StartedRecord],
) {
    let run = manifest.run_id.clone();
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
        ledger::manifest_key(&run),
        serde_json::to_string(manifest).unwrap(),
    )
    .await;
    for s in started {
        put(
            ledger::started_key(&run, &s.job_id, 1),
            serde_json::to_string(s).unwrap(),
        )
        .await;
    }
    for r in reports {
        put(
            ledger::report_key(&run, &r.job_id),
            serde_json::to_string(r).unwrap(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_markdown_summary_of_a_stored_run_matches_the_golden_file() {
    let fx = Fixture::start(&[]).await;
    let (manifest, reports, started) = stored_run();
    store(&fx, &manifest, &reports, &started).await;
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

/// 45 jobs over 20 instances: the seven verdicts' reports and 38 more succeeded or failed ones,
/// each with its steps, started in waves.
fn big_run() -> (RunManifest, Vec<Report>, Vec<StartedRecord>) {
    use janitor_model::report::{StepName, StepReport, StepStatus};
    let (mut manifest, mut reports, mut started) = stored_run();
    for n in 0..38 {
        let name = format!("worker-{n:02}");
        let ok = n % 5 != 0;
        let mut r = report(
            &name,
            if ok {
                JobStatus::Succeeded
            } else {
                JobStatus::Failed
            },
            60.0 + f64::from(n * 7 % 50),
            if ok {
                ""
            } else {
                "test: 0/1 tests passed; `basic` failed: CUDA out of memory"
            },
        );
        reports.push(r.clone());
        manifest.jobs.push(ManifestJob {
            job_id: format!("{name}-1"),
            repository: format!("runpod-workers/{name}"),
            prompt: "validate".into(),
            gpu_required: true,
            timeout_seconds: 1800,
            instance_type: Some("g5.xlarge".into()),
            ..ManifestJob::default()
        });
        r.steps.clear();
        started.push(StartedRecord {
            job_id: format!("{name}-1"),
            run_id: RUN.into(),
            attempt: 1,
            instance: instance(),
            started_at: at(10),
        });
    }
    // Twenty instances, each job on one; steps in every report.
    for (i, r) in reports.iter_mut().enumerate() {
        let wave = (i / 20) as i64;
        r.instance.id = format!("i-0{:015}", i % 20);
        r.timings.started_at = at(10 + wave * 400);
        r.timings.finished_at = at(10 + wave * 400 + r.timings.duration_seconds as i64);
        let d = r.timings.duration_seconds;
        r.steps = [
            (StepName::Clone, 0.05),
            (StepName::Preflight, 0.02),
            (StepName::Build, 0.4),
            (StepName::Test, 0.5),
            (StepName::Agent, 0.03),
        ]
        .iter()
        .map(|(name, share)| StepReport {
            name: *name,
            status: StepStatus::Succeeded,
            duration_seconds: d * share,
            exit_code: None,
            detail: "ok".into(),
            output: None,
        })
        .collect();
    }
    for s in &mut started {
        match reports.iter().find(|r| r.job_id == s.job_id) {
            Some(r) => {
                s.instance.id = r.instance.id.clone();
                s.started_at = r.timings.started_at;
            }
            // The running job, on the first instance.
            None => s.instance.id = format!("i-0{:015}", 0),
        }
    }
    (manifest, reports, started)
}

/// Loads `page` in headless Chromium behind a proxy that counts every request; returns the
/// DOM and the requests the proxy saw.
fn chromium(page: &Path, args: &[&str]) -> (String, Vec<String>) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    // The proxy answers every request at once with 502 and records its first line.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = lines.clone();
    std::thread::spawn(move || {
        for conn in proxy.incoming() {
            let Ok(mut c) = conn else { break };
            c.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if line == "STOP" {
                break;
            }
            recorded.lock().unwrap().push(line);
            let _ = c.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--no-pings",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
            "--timeout=10000",
            &format!("--proxy-server=http://127.0.0.1:{port}"),
            "--proxy-bypass-list=<-loopback>",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium must be installed (scripts/test-deps.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = c.write_all(b"STOP\r\n");
    }
    // The browser's own services (its clock, component updates, sign-in) are not the page's.
    let browser_own = |line: &String| {
        ["google.com", "googleapis.com", "gvt1.com", "gstatic.com"]
            .iter()
            .any(|h| {
                line.split_whitespace()
                    .nth(1)
                    .is_some_and(|t| t.contains(h))
            })
    };
    let seen = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !browser_own(l))
        .cloned()
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_page_renders_offline_in_a_real_browser() {
    let fx = Fixture::start(&[]).await;
    let (manifest, reports, started) = big_run();
    store(&fx, &manifest, &reports, &started).await;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("index.html");
    let mut p = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitorctl")),
        &["show", RUN, "--html", page.to_str().unwrap()],
        &fx.env(None),
    );
    assert_eq!(p.wait(Duration::from_secs(60)), 0, "{}", p.output());
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 1_000_000, "the page is {size} bytes");
    let began = std::time::Instant::now();
    let (dom, requests) = chromium(&page, &["--dump-dom"]);
    eprintln!(
        "page: {size} bytes; loaded and dumped by headless chromium in {:.2} s",
        began.elapsed().as_secs_f64()
    );
    let jobs = manifest.jobs.len();
    assert_eq!(jobs, 47);
    assert_eq!(
        dom.matches("<tr id=\"row-").count(),
        jobs,
        "every repository's row"
    );
    // One bar per started job (the queued one has none).
    assert_eq!(dom.matches("<g class=\"job\"").count(), started.len());
    assert_eq!(
        dom.matches("class=\"lane\"").count(),
        20,
        "one lane per instance"
    );
    assert!(
        dom.contains("Timeline of the run"),
        "the timeline's text alternative"
    );
    assert!(!dom.contains("<script>alert"), "a worker's text stays text");
    assert!(requests.is_empty(), "the page made requests: {requests:?}");
    // The proxy does see a page's request: a page with an outside image is caught.
    let leaky = dir.path().join("leaky.html");
    std::fs::write(
        &leaky,
        "<!doctype html><img src=\"http://pixel.example.invalid/p.png\">",
    )
    .unwrap();
    let (_, caught) = chromium(&leaky, &["--dump-dom"]);
    assert!(
        caught.iter().any(|r| r.contains("pixel.example.invalid")),
        "{caught:?}"
    );
    // Screenshots at desktop and phone widths, kept for CI's artefacts.
    let shots = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, size) in [("desktop", "1280,2400"), ("phone", "390,2400")] {
        let file = shots.join(format!("run-page-{name}.png"));
        let _ = std::fs::remove_file(&file);
        let (_, requests) = chromium(
            &page,
            &[
                &format!("--screenshot={}", file.display()),
                &format!("--window-size={size}"),
            ],
        );
        assert!(requests.is_empty(), "{requests:?}");
        let png = std::fs::read(&file).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: {} bytes",
            png.len()
        );
    }
}
