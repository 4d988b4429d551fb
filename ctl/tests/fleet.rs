//! `janitorctl` driving a fleet: the real binaries against moto (with the fixture's ASG and
//! IMDS) and Docker. Daemons scaling in is issue of the daemon; here the test plays that part by
//! lowering the desired capacity once the daemons are done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use janitor_testkit::{dockerfile, ensure_base_image, eventually, git_repo, Fixture, Proc};

fn ctl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_janitorctl"))
}

fn ctl(fx: &Fixture, args: &[&str]) -> (i32, String) {
    let mut p = Proc::spawn(ctl_bin(), args, &fx.env(None));
    let code = p.wait(Duration::from_secs(120));
    (code, p.output())
}

fn ctl_json(fx: &Fixture, args: &[&str]) -> serde_json::Value {
    let mut p = Proc::spawn(ctl_bin(), args, &fx.env(None));
    assert_eq!(p.wait(Duration::from_secs(60)), 0, "{}", p.output());
    serde_json::from_str(&p.output())
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{}", p.output()))
}

fn daemon(fx: &Fixture, instance: &str, cache: &Path) -> Proc {
    daemon_with(fx, instance, cache, &["--stop-grace-seconds", "2"])
}

/// A daemon that leaves when idle, polls every second and takes local repositories, with `extra`.
fn daemon_with(fx: &Fixture, instance: &str, cache: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--exit-when-idle",
        "--allow-local-repos",
        "--poll-wait-seconds",
        "1",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(
        &janitor_testkit::janitord_beside(ctl_bin()),
        &args,
        &fx.env(Some(instance)),
    )
}

/// `janitorctl enqueue FILE --no-scale`; returns the run id it prints last.
fn enqueue(fx: &Fixture, cfg: &Path) -> String {
    let (code, text) = ctl(
        fx,
        &[
            "enqueue",
            cfg.to_str().unwrap(),
            "--allow-local-repos",
            "--no-scale",
        ],
    );
    assert_eq!(code, 0, "{text}");
    text.lines().last().unwrap().trim().to_string()
}

fn config(dir: &Path, name: &str, repos: &[(&str, &str)], max: u32) -> PathBuf {
    let mut text = String::from("repositories:\n");
    for (repo, script) in repos {
        if !dir.join(repo).exists() {
            git_repo(dir, repo, &[("Dockerfile", &dockerfile(script))]);
        }
        text.push_str(&format!("  - {{name: {repo}, organization: local, url: ./{repo}, gpu_required: false, timeout: 2m, instance_type: g5.xlarge}}\n"));
    }
    text.push_str(&format!("max_concurrent_instances: {max}\n"));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_two_instances_prints_the_table_and_waits_for_scale_in() {
    ensure_base_image();
    let (a, b) = ("i-0f1ee70000000001", "i-0f1ee70000000002");
    let fx = Fixture::start(&[a, b]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "fleet.yaml",
        &[
            ("fleet-one", "sleep 2; echo one"),
            ("fleet-two", "sleep 2; echo two"),
            ("fleet-three", "sleep 2; echo three"),
        ],
        2,
    );
    let mut run = Proc::spawn(
        ctl_bin(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--yes",
            "--allow-local-repos",
            "--poll-seconds",
            "1",
            "--wait-minutes",
            "2",
        ],
        &fx.env(None),
    );
    // ctl raises the group to min(max_concurrent_instances, jobs) = 2.
    eventually(Duration::from_secs(30), "desired capacity 2", || async {
        (fx.group().await.0 == 2).then_some(())
    })
    .await;
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut da = daemon(&fx, a, ca.path());
    let mut db = daemon(&fx, b, cb.path());
    assert_eq!(da.wait(Duration::from_secs(120)), 0, "{}", da.output());
    assert_eq!(db.wait(Duration::from_secs(120)), 0, "{}", db.output());
    fx.set_desired(0).await;
    let code = run.wait(Duration::from_secs(120));
    let out = run.output();
    assert_eq!(code, 0, "{out}");
    for name in ["fleet-one", "fleet-two", "fleet-three"] {
        assert!(out.contains(&format!("✓ {name}: success (")), "{out}");
    }
    assert!(
        out.contains("Overall Status: 3/3 repositories successful"),
        "{out}"
    );
    assert!(
        out.contains("Cost estimate (if every job used its whole timeout): $0.10"),
        "{out}"
    );
    assert!(
        out.contains("3 × g5.xlarge × 2m00s at $1.006/h = $0.10"),
        "{out}"
    );
    assert!(
        out.contains("Desired capacity of janitor-asg: 0 → 2"),
        "{out}"
    );
    assert!(
        out.contains("All instances of janitor-asg stopped"),
        "{out}"
    );
    let run_id = out
        .lines()
        .find_map(|l| l.strip_prefix("Run ").and_then(|r| r.split(':').next()))
        .unwrap()
        .to_string();
    // The run's page beside the manifest, and a presigned link that fetches it.
    let page = fx
        .s3()
        .get_object()
        .bucket(&fx.bucket)
        .key(format!("janitor-reports/runs/{run_id}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.content_type(), Some("text/html; charset=utf-8"));
    let link = out
        .lines()
        .find_map(|l| l.strip_prefix("The run's page (valid 7 days): "))
        .unwrap_or_else(|| panic!("no page link in:\n{out}"));
    assert!(
        link.contains(&format!("runs/{run_id}/index.html")) && link.contains("X-Amz-Signature="),
        "{link}"
    );
    let shown = ctl_json(&fx, &["show", &run_id, "--json"]);
    let instances: std::collections::BTreeSet<&str> = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        instances.into_iter().collect::<Vec<_>>(),
        [a, b],
        "both instances took jobs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_1_and_every_query_answers_in_text_and_json() {
    ensure_base_image();
    let inst = "i-0f1ee70000000003";
    let fx = Fixture::start(&[inst]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "mixed.yaml",
        &[
            ("q-ok", "echo fine"),
            ("q-broken", "echo 'ERROR: it broke'"),
        ],
        4,
    );

    let (code, out) = ctl(&fx, &["run", cfg.to_str().unwrap(), "--allow-local-repos"]);
    assert_eq!(code, 2, "no --yes off a terminal: {out}");
    assert!(out.contains("pass --yes"), "{out}");

    let mut run = Proc::spawn(
        ctl_bin(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--yes",
            "--allow-local-repos",
            "--poll-seconds",
            "1",
            "--wait-minutes",
            "1",
        ],
        &fx.env(None),
    );
    eventually(Duration::from_secs(30), "desired capacity 2", || async {
        (fx.group().await.0 == 2).then_some(())
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = daemon(&fx, inst, cache.path());
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    fx.set_desired(0).await;
    assert_eq!(run.wait(Duration::from_secs(60)), 1, "{}", run.output());
    let out = run.output();
    assert!(out.contains("✗ q-broken: failed ("), "{out}");
    assert!(
        out.contains("1 unexpected ERROR line(s), first: ERROR: it broke"),
        "{out}"
    );
    assert!(
        out.contains("Overall Status: 1/2 repositories successful"),
        "{out}"
    );
    let first_run = out
        .lines()
        .find_map(|l| l.strip_prefix("Run ").and_then(|r| r.split(':').next()))
        .unwrap()
        .to_string();

    // show: text and JSON carry the same facts.
    let (code, text) = ctl(&fx, &["show", &first_run]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("Run ID: {first_run}"))
            && text.contains(&format!("Configuration: {}", cfg.display())),
        "{text}"
    );
    assert!(
        text.contains("Timeout: 2 minutes (not enforced)") && text.contains("Total Duration: "),
        "{text}"
    );
    let json = ctl_json(&fx, &["show", &first_run, "--json"]);
    for job in json["jobs"].as_array().unwrap() {
        let name = job["repository"]
            .as_str()
            .unwrap()
            .split('/')
            .nth(1)
            .unwrap();
        let word = if job["status"] == "succeeded" {
            "success".to_string()
        } else {
            job["status"].as_str().unwrap().to_string()
        };
        assert!(
            text.contains(&format!("{name}: {word} (")),
            "{name} {word} not in {text}"
        );
    }

    // A second run of one repository, for history order.
    let one = config(dir.path(), "one.yaml", &[("q-ok", "echo fine")], 1);
    let (code, out) = ctl(
        &fx,
        &[
            "enqueue",
            one.to_str().unwrap(),
            "--allow-local-repos",
            "--no-scale",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let second_run = out.lines().last().unwrap().trim().to_string();
    let mut d = daemon(&fx, inst, cache.path());
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let history = ctl_json(&fx, &["results", "--repo", "q-ok", "--json"]);
    let runs: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        runs,
        [second_run.as_str(), first_run.as_str()],
        "newest first"
    );
    let (code, text) = ctl(&fx, &["results", "--repo", "local/q-ok", "--limit", "1"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Repository: local/q-ok (1 result(s), newest first)")
            && text.contains(&format!("run {second_run}")),
        "{text}"
    );
    assert!(
        text.contains("clone ✓  preflight ✓  build ✓  run ✓  gpu –  agent –")
            && text.contains("ERROR lines: 0"),
        "{text}"
    );

    // fetch-report: the latest run by default, one file per report plus the combined run.json.
    let out_dir = dir.path().join("fetched");
    let fetched = ctl_json(
        &fx,
        &["fetch-report", "--out", out_dir.to_str().unwrap(), "--json"],
    );
    assert_eq!(fetched["run_id"], second_run.as_str());
    let combined: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join(&second_run).join("run.json")).unwrap())
            .unwrap();
    assert_eq!(combined["reports"].as_array().unwrap().len(), 1);
    assert_eq!(fetched["files"].as_array().unwrap().len(), 2);

    // logs: the job's CloudWatch stream.
    let job_id = json["jobs"][0]["job_id"].as_str().unwrap();
    let (code, logs) = ctl(&fx, &["logs", job_id]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("[run] fine"), "{logs}");

    // One-line errors.
    let (code, out) = ctl(&fx, &["show", "20990101T000000Z-nope00"]);
    assert_eq!(code, 2);
    assert_eq!(out.trim(), format!("janitorctl: no run `20990101T000000Z-nope00` in s3://janitor-test/janitor-reports/runs/ (the latest is {second_run})"));
    let mut p = Proc::spawn(ctl_bin(), &["status"], &[]);
    assert_eq!(p.wait(Duration::from_secs(30)), 2);
    assert_eq!(p.output().trim(), "janitorctl: missing setting `bucket`: pass --bucket, set JANITOR_BUCKET, or name an environment with --env (ENV=dev in the Makefile) whose infra/env/<ENV>.json has it");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_a_running_job() {
    ensure_base_image();
    let inst = "i-0f1ee70000000004";
    let fx = Fixture::start(&[inst]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "slow.yaml",
        &[
            ("s-slow", "echo begin; sleep 8; echo end"),
            ("s-next", "echo next"),
        ],
        1,
    );
    let (code, out) = ctl(
        &fx,
        &[
            "run",
            cfg.to_str().unwrap(),
            "--yes",
            "--no-wait",
            "--allow-local-repos",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Use 'make check-parallel-status"), "{out}");
    let cache = tempfile::tempdir().unwrap();
    let mut d = daemon(&fx, inst, cache.path());
    let status = eventually(
        Duration::from_secs(60),
        "a running job in status --json",
        || async {
            let s = ctl_json(&fx, &["status", "--json"]);
            s["run"]["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["state"] == "running")
                .then_some(s)
        },
    )
    .await;
    assert_eq!(status["group"]["desired_capacity"], 1);
    assert!(status["minutes_left"].as_i64().unwrap() > 0);
    let (code, text) = ctl(&fx, &["status"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("s-slow: ⏳ running (") && text.contains(&format!("attempt 1, {inst})")),
        "{text}"
    );
    assert!(text.contains("s-next: ⏳ queued"), "{text}");
    assert!(
        text.contains("Queue: 1 waiting, 1 in flight; dead-letter queue: 0"),
        "{text}"
    );
    assert!(
        text.contains("Instances of janitor-asg (desired 1, min 0, max 4):"),
        "{text}"
    );
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let (_, text) = ctl(&fx, &["status"]);
    assert!(
        text.contains("s-slow: ✓ completed (just now)")
            && text.contains("Timeout: 4 minutes (run finished)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_all_purges_scales_to_zero_and_cancels() {
    let fx = Fixture::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "- runpod-workers/other-run\n").unwrap();
    let (code, out) = ctl(&fx, &["enqueue", other.to_str().unwrap(), "--no-scale"]);
    assert_eq!(code, 0, "{out}");
    let cfg = dir.path().join("three.yaml");
    std::fs::write(&cfg, "repositories:\n  - runpod-workers/k-one\n  - runpod-workers/k-two\n  - runpod-workers/k-three\nmax_concurrent_instances: 3\n").unwrap();
    let (code, out) = ctl(&fx, &["enqueue", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let run_id = out.lines().last().unwrap().trim().to_string();
    let (desired, instances) = fx.group().await;
    assert_eq!((desired, instances.len()), (3, 3));
    // One busy instance, as a daemon would mark it.
    fx.asg()
        .set_instance_protection()
        .auto_scaling_group_name(&fx.asg_name)
        .instance_ids(&instances[0].0)
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();

    let killed = ctl_json(&fx, &["kill-all", "--json"]);
    assert_eq!(killed["run_id"], run_id.as_str());
    assert_eq!(killed["purged"], 3);
    assert_eq!(killed["released"], 1, "the other run's job stays");
    assert_eq!(killed["desired_before"], 3);
    assert_eq!(killed["unprotected"].as_array().unwrap().len(), 1);
    assert_eq!(killed["terminated"].as_array().unwrap().len(), 3);
    assert_eq!(killed["cancelled"].as_array().unwrap().len(), 3);
    assert_eq!(fx.group().await, (0, vec![]));
    assert_eq!(fx.depth(&fx.queue_url).await, (1, 0));
    let shown = ctl_json(&fx, &["show", &run_id, "--json"]);
    assert!(
        shown["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "cancelled" && j["state"] == "finished"),
        "{shown:#}"
    );

    let (code, text) = ctl(&fx, &["kill-all", "--all"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Purged 1 pending job(s) of any run from the queue")
            && text.contains("Desired capacity of janitor-asg: 0 → 0"),
        "{text}"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
}

/// A refused message claiming a made-up, newer run id leaves no run folder behind: `status`
/// and `fetch-report` still pick the real latest run, whose job finished.
#[tokio::test(flavor = "multi_thread")]
async fn a_made_up_run_id_does_not_hide_the_latest_run() {
    ensure_base_image();
    let inst = "i-0f1ee70000000009";
    let fx = Fixture::start(&[inst]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "one.yaml", &[("m-real", "echo real")], 1);
    let run_id = enqueue(&fx, &cfg);
    fx.send_raw(r#"{"schema": 7, "job_id": "fake-1", "run_id": "29991231T235959Z-zzzzzz"}"#)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = daemon_with(&fx, inst, cache.path(), &["--reject-retry-seconds", "0"]);
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    assert!(
        fx.keys("janitor-reports/runs/29991231T235959Z-zzzzzz/")
            .await
            .is_empty(),
        "no folder for the made-up run"
    );
    let status = ctl_json(&fx, &["status", "--json"]);
    assert_eq!(status["run"]["run_id"], run_id.as_str(), "{status:#}");
    assert_eq!(status["run"]["jobs"][0]["state"], "finished");
    let out = tempfile::tempdir().unwrap();
    let (code, text) = ctl(
        &fx,
        &["fetch-report", "--out", out.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert!(out.path().join(&run_id).join("run.json").exists(), "{text}");
}

/// Two runpod-shaped workers through the real daemon: worker-basic's shape (its image lacks
/// `test_input.json`) passes on its own test, a `.runpod/tests.json` worker fails naming its
/// failing test, and `janitorctl show` prints a line per test. A clone that fails on the
/// network is `error`, not the repository's fault: the daemon hands it back until the queue's
/// maxReceiveCount moves it to the dead-letter queue, and the report says attempt 3.
#[tokio::test(flavor = "multi_thread")]
async fn runpod_workers_are_judged_by_their_tests_and_errors_are_retried() {
    let image = janitor_testkit::ensure_runpod_image();
    let inst = "i-0f1ee7000000000a";
    let fx = Fixture::start(&[inst]).await;
    let dir = tempfile::tempdir().unwrap();
    let handler = "import runpod\n\ndef handler(job):\n    if job['input'].get('mode') == 'error':\n        return {'error': 'CUDA out of memory'}\n    return {'greeting': 'Hello, ' + job['input']['name']}\n\nrunpod.serverless.start({'handler': handler})\n";
    let docker = format!(
        "FROM {image}\nCOPY rp_handler.py /\nCMD [\"python3\", \"-u\", \"rp_handler.py\"]\n"
    );
    git_repo(
        dir.path(),
        "worker-basic",
        &[
            ("Dockerfile", &docker),
            ("rp_handler.py", handler),
            ("test_input.json", r#"{"input": {"name": "John Doe"}}"#),
        ],
    );
    git_repo(
        dir.path(),
        "worker-hub",
        &[
            ("Dockerfile", &docker),
            ("rp_handler.py", handler),
            (
                ".runpod/tests.json",
                r#"{"tests": [{"name": "greets", "input": {"name": "Ada"}, "expected_output": {"greeting": "Hello, Ada"}}, {"name": "oom", "input": {"name": "x", "mode": "error"}}]}"#,
            ),
        ],
    );
    let cfg = dir.path().join("workers.yaml");
    std::fs::write(
        &cfg,
        "repositories:\n  - {name: worker-basic, organization: local, url: ./worker-basic, gpu_required: false, timeout: 3m}\n  - {name: worker-hub, organization: local, url: ./worker-hub, gpu_required: false, timeout: 3m}\n  - {name: worker-offline, organization: local, url: 'http://127.0.0.1:9/offline.git', gpu_required: false, timeout: 1m}\n",
    )
    .unwrap();
    let run_id = enqueue(&fx, &cfg);
    let cache = tempfile::tempdir().unwrap();
    let mut d = daemon_with(&fx, inst, cache.path(), &["--error-retry-seconds", "0"]);
    assert_eq!(d.wait(Duration::from_secs(300)), 0, "{}", d.output());
    let (_, shown) = ctl(&fx, &["show", &run_id]);
    assert!(shown.contains("✓ worker-basic: success"), "{shown}");
    assert!(shown.contains("— passed 1/1 tests"), "{shown}");
    assert!(shown.contains("    ✓ test_input ("), "{shown}");
    assert!(shown.contains("✗ worker-hub: failed"), "{shown}");
    assert!(
        shown.contains("test: 1/2 tests passed; `oom` failed: the job FAILED: CUDA out of memory"),
        "{shown}"
    );
    assert!(shown.contains("    ✓ greets ("), "{shown}");
    assert!(shown.contains("    ✗ oom failed ("), "{shown}");
    assert!(shown.contains("✗ worker-offline: error"), "{shown}");
    assert!(
        shown.contains("clone: git clone http://127.0.0.1:9/offline.git failed"),
        "{shown}"
    );
    let view = ctl_json(&fx, &["show", &run_id, "--json"]);
    let job = |repo: &str| {
        view["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["repository"] == repo)
            .unwrap()
            .clone()
    };
    // The worker's own output reached CloudWatch through the same shipping, marked `[test]`.
    let basic = job("local/worker-basic");
    let stream = format!("{inst}/{}", basic["job_id"].as_str().unwrap());
    let lines = fx.log_lines(&stream).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[test] --- Starting Serverless Worker")),
        "{lines:#?}"
    );
    let offline = job("local/worker-offline");
    assert_eq!(offline["status"], "error", "{view:#}");
    assert_eq!(offline["attempt"], 3, "{offline:#}");
    let (waiting, in_flight) = fx.depth(&fx.dlq_url).await;
    assert_eq!(
        (waiting, in_flight),
        (1, 0),
        "the job that kept erroring is on the dead-letter queue"
    );
}

/// CloudWatch throttles every PutLogEvents of a job: the job's verdict stands, its report and
/// the results table say how many events are missing and why, and `janitorctl logs` prints
/// the whole output from the archive beside the report.
#[tokio::test(flavor = "multi_thread")]
async fn throttled_shipping_is_counted_and_logs_reads_the_archive() {
    const INSTANCE: &str = "i-0c7100000000000a";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "throttled.yaml",
        &[("q-throttled", "for i in $(seq 1 300); do echo out $i; done")],
        1,
    );
    // More throttling than the shipper's attempts can outlast.
    fx.fail_next("PutLogEvents", 400, "ThrottlingException", 10_000);
    let run_id = enqueue(&fx, &cfg);
    let cache = tempfile::tempdir().unwrap();
    let mut d = daemon(&fx, INSTANCE, cache.path());
    assert_eq!(d.wait(Duration::from_secs(240)), 0, "{}", d.output());
    let view = ctl_json(&fx, &["show", &run_id, "--json"]);
    let job = &view["jobs"][0];
    assert_eq!(job["status"], "succeeded", "{view:#}");
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{}/report.json",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    let out = &report["output"];
    assert_eq!(out["shipped_events"], 0, "{out}");
    assert_eq!(out["failed_events"], out["events"], "{out}");
    assert!(
        out["missing_reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "{} events not taken by CloudWatch after the retries",
                out["events"]
            )),
        "{out}"
    );
    let run = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "run")
        .unwrap();
    assert_eq!(run["output"]["lines"], 300, "{run:#}");
    assert_eq!(run["output"]["failed_events"], 300, "{run:#}");
    let (code, table) = ctl(&fx, &["show", &run_id]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains(
            "output events not in CloudWatch; janitorctl logs reads it all from the archive]"
        ),
        "{table}"
    );
    let (code, logs) = ctl(&fx, &["logs", job["job_id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{logs}");
    let run_lines: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("[run] "))
        .collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("out {i}")).collect();
    assert_eq!(run_lines, expected);
}
