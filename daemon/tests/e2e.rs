//! End-to-end: the real `janitord` binary against moto (with the project's fixture) and the
//! machine's Docker engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_testkit::{dockerfile, ensure_base_image, eventually, git_repo, spec, Fixture, Proc};

fn janitord(fx: &Fixture, instance: &str, cache: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--exit-when-idle", "--stop-grace-seconds", "2"];
    args.extend_from_slice(extra);
    janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        fx,
        instance,
        cache,
        &args,
    )
}

fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_pass_fail_stream_logs_and_fill_the_ledger() {
    const INSTANCE: &str = "i-0e2e000000000001";
    ensure_base_image();
    janitor_testkit::build_image(
        "janitor-test-agent:latest",
        &[
            ("agent.sh", "#!/bin/sh\necho \"agent got: $JANITOR_PROMPT\"\ntest -f /workspace/Dockerfile || exit 7\ngrep -q '\"name\":\"run\"' \"$JANITOR_JOB\" || exit 8\ngrep -q 'ERROR: something broke' \"$JANITOR_JOB\" || exit 9\nprintf '{\"status\":\"failed\",\"summary\":\"looked, changed nothing\",\"prompt\":\"%s\"}' \"$JANITOR_PROMPT\" > \"$JANITOR_RESULT\"\n"),
            ("Dockerfile", &format!("FROM {}\nCOPY agent.sh /agent.sh\nCMD [\"/agent.sh\"]\n", janitor_testkit::BASE_IMAGE)),
        ],
    );
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let good_script =
        "for i in $(seq 1 50); do echo line $i; done; echo 'ERROR: known warmup glitch'; echo done";
    let good = git_repo(
        repos.path(),
        "e2e-good",
        &[("Dockerfile", &dockerfile(good_script))],
    );
    let bad = git_repo(
        repos.path(),
        "e2e-badbuild",
        &[(
            "Dockerfile",
            &format!(
                "FROM {}\nRUN echo compiling && exit 3\n",
                janitor_testkit::BASE_IMAGE
            ),
        )],
    );
    let noisy = git_repo(
        repos.path(),
        "e2e-noisy",
        &[(
            "Dockerfile",
            &dockerfile("echo starting; echo 'ERROR: something broke'; exit 0"),
        )],
    );

    let mut good_spec = spec("e2e-good", &good, Duration::from_secs(120));
    good_spec.expected_errors = vec!["known warmup".into()];
    good_spec.agent_image = Some("janitor-test-agent:latest".into());
    let run_id = "20261122T000000Z-e2e001";
    let good_id = fx.send_job(run_id, &good_spec).await;
    let bad_id = fx
        .send_job(
            run_id,
            &spec("e2e-badbuild", &bad, Duration::from_secs(120)),
        )
        .await;
    let mut noisy_spec = spec("e2e-noisy", &noisy, Duration::from_secs(120));
    noisy_spec.agent_image = Some("janitor-test-agent:latest".into());
    let noisy_id = fx.send_job(run_id, &noisy_spec).await;

    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &[]);
    let code = d.wait(Duration::from_secs(240));
    assert_eq!(code, 0, "janitord output:\n{}", d.output());

    let report = |id: &str| format!("janitor-reports/runs/{run_id}/jobs/{id}/report.json");
    let good_r = fx.json(&report(&good_id)).await;
    assert_eq!(good_r["status"], "succeeded", "{good_r:#}");
    assert_eq!(good_r["errors"]["count"], 0);
    // A passing validation leaves the agent nothing to fix.
    assert_eq!(step(&good_r, "agent")["status"], "skipped");
    assert_eq!(
        step(&good_r, "agent")["detail"],
        "the validation passed: nothing to fix (`agent: always` runs the prompt on a passing repository)"
    );
    assert_eq!(step(&good_r, "gpu")["status"], "skipped");
    assert_eq!(good_r["instance"]["id"], INSTANCE);
    assert_eq!(good_r["instance"]["instance_type"], "g5.xlarge");
    assert_eq!(good_r["attempt"], 1);
    assert_eq!(good_r["logs"]["stream"], format!("{INSTANCE}/{good_id}"));
    // The RUN (BuildKit makes no step of the FROM or the CMD).
    assert_eq!(good_r["cache"]["steps"], 1, "{good_r:#}");
    assert_eq!(good_r["build"]["builder"], "buildkit", "{good_r:#}");
    assert!(good_r["disk"]["free_before_bytes"].as_u64().unwrap() > 0);

    let bad_r = fx.json(&report(&bad_id)).await;
    assert_eq!(bad_r["status"], "failed");
    assert_eq!(step(&bad_r, "build")["status"], "failed");
    assert_eq!(step(&bad_r, "run")["status"], "not_run");
    assert!(
        bad_r["reason"].as_str().unwrap().starts_with("build: "),
        "{bad_r:#}"
    );

    let noisy_r = fx.json(&report(&noisy_id)).await;
    assert_eq!(noisy_r["status"], "failed");
    assert_eq!(step(&noisy_r, "run")["status"], "succeeded");
    assert_eq!(noisy_r["errors"]["count"], 1);
    assert_eq!(noisy_r["errors"]["first"][0], "ERROR: something broke");
    // The agent was given the failure, looked and changed nothing: the verdict stands.
    assert_eq!(noisy_r["agent"]["status"], "failed", "{noisy_r:#}");
    assert_eq!(noisy_r["agent"]["prompt"], "check e2e-noisy");
    assert_eq!(noisy_r["fix"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(noisy_r["fix"]["pr_status"], "no_changes");
    assert!(
        noisy_r["reason"]
            .as_str()
            .unwrap()
            .ends_with("the agent changed nothing in attempt 1: looked, changed nothing"),
        "{noisy_r:#}"
    );

    // The container's output reached CloudWatch, complete and in order.
    let lines = fx.log_lines(&format!("{INSTANCE}/{good_id}")).await;
    let run_lines: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("[run] "))
        .collect();
    let expected: Vec<String> = (1..=50)
        .map(|i| format!("line {i}"))
        .chain(["ERROR: known warmup glitch".into(), "done".into()])
        .collect();
    assert_eq!(run_lines, expected);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[build] #") && l.ends_with("RUN echo layer > /layer")),
        "{lines:?}"
    );
    let noisy_lines = fx.log_lines(&format!("{INSTANCE}/{noisy_id}")).await;
    assert!(
        noisy_lines
            .iter()
            .any(|l| l == "[agent] agent got: check e2e-noisy"),
        "{noisy_lines:?}"
    );

    // Every ledger key the design names for the daemon.
    let keys = fx.keys("janitor-reports/").await;
    for id in [&good_id, &bad_id, &noisy_id] {
        assert!(
            keys.contains(&format!(
                "janitor-reports/runs/{run_id}/jobs/{id}/started-1.json"
            )),
            "{keys:?}"
        );
        assert!(keys.contains(&report(id)));
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("janitor-reports/repos/local/e2e-good/")
                && k.ends_with(&format!("-{good_id}.json"))),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(
            |k| k.starts_with(&format!("janitor-reports/instances/{INSTANCE}/"))
                && k.ends_with("-daemon-start.json")
        ),
        "{keys:?}"
    );
    let started = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{good_id}/started-1.json"
        ))
        .await;
    assert_eq!(started["instance"]["availability_zone"], "us-east-1a");
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    // Nothing of the jobs is left behind on the instance.
    assert!(janitor_testkit::docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=janitor.managed=true",
        "--filter",
        &format!("label=janitor.run_id={run_id}")
    ])
    .trim()
    .is_empty());
    assert_eq!(
        std::fs::read_dir(cache.path().join("workspaces"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("spool"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overrunning_job_is_killed_after_the_grace() {
    const INSTANCE: &str = "i-0e2e000000000002";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    // Ignores SIGTERM, so only the kill after the grace ends it.
    let url = git_repo(
        repos.path(),
        "e2e-sleeper",
        &[(
            "Dockerfile",
            &dockerfile("trap '' TERM; echo started; while true; do sleep 1; done"),
        )],
    );
    let timeout = Duration::from_secs(6);
    let job_id = fx
        .send_job(
            "20261122T000000Z-e2e002",
            &spec("e2e-sleeper", &url, timeout),
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &[]);
    assert_eq!(d.wait(Duration::from_secs(90)), 0, "{}", d.output());
    let r = fx
        .json(&format!(
            "janitor-reports/runs/20261122T000000Z-e2e002/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(r["status"], "timed_out", "{r:#}");
    assert_eq!(step(&r, "run")["status"], "timed_out");
    let took = r["timings"]["duration_seconds"].as_f64().unwrap();
    let bound = timeout.as_secs_f64() + 2.0 + 5.0;
    assert!(
        took >= timeout.as_secs_f64() && took <= bound,
        "job took {took}s, expected within {bound}s"
    );
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (0, 0),
        "a timed-out job's message is settled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_go_to_the_dead_letter_queue_and_the_daemon_goes_on() {
    const INSTANCE: &str = "i-0e2e000000000003";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    fx.send_raw("this is not json").await;
    fx.send_raw(r#"{"schema": 99, "job_id": "future-1", "run_id": "20261122T000000Z-e2e003"}"#)
        .await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "e2e-after-bad",
        &[("Dockerfile", &dockerfile("echo fine"))],
    );
    let job_id = fx
        .send_job(
            "20261122T000000Z-e2e003",
            &spec("e2e-after-bad", &url, Duration::from_secs(60)),
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(
        &fx,
        INSTANCE,
        cache.path(),
        &["--reject-retry-seconds", "0"],
    );
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let r = fx
        .json(&format!(
            "janitor-reports/runs/20261122T000000Z-e2e003/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        fx.depth(&fx.dlq_url).await.0,
        2,
        "both bad messages reach the dead-letter queue"
    );
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    let rejected = fx.keys("janitor-reports/rejected/").await;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let today = janitor_model::ledger::rejected_day_prefix(time::OffsetDateTime::now_utc());
    assert!(
        rejected.iter().all(|k| k.starts_with(&today)),
        "{rejected:?}"
    );
    let mut future = None;
    for k in &rejected {
        let v = fx.json(k).await;
        if v["job_id"] == "future-1" {
            future = Some(v);
        }
    }
    let future = future.expect("the refusal names the job it claimed");
    assert_eq!(future["run_id"], "20261122T000000Z-e2e003");
    assert_eq!(
        future["reason"],
        "unsupported schema version 99; this janitord understands version 1"
    );
    assert!(
        fx.keys("janitor-reports/runs/20261122T000000Z-e2e003/jobs/future-1/")
            .await
            .is_empty(),
        "a refused message writes nothing under runs/"
    );
    assert!(d.output().contains("message rejected"), "{}", d.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_job_and_hands_the_message_back() {
    const INSTANCE: &str = "i-0e2e000000000004";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "e2e-long",
        &[("Dockerfile", &dockerfile("echo started; sleep 600"))],
    );
    let run_id = "20261122T000000Z-e2e004";
    let job_id = fx
        .send_job(run_id, &spec("e2e-long", &url, Duration::from_secs(600)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    // Far shorter than the job: only the keep-alive holds the message.
    let mut d = janitord(
        &fx,
        INSTANCE,
        cache.path(),
        &["--visibility-timeout-seconds", "6"],
    );
    let stream = format!("{INSTANCE}/{job_id}");
    eventually(
        Duration::from_secs(60),
        "the job's container to start",
        || async {
            let out = fx
                .logs()
                .get_log_events()
                .log_group_name(&fx.log_group)
                .log_stream_name(&stream)
                .send()
                .await
                .ok()?;
            out.events()
                .iter()
                .any(|e| e.message() == Some("[run] started"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (0, 1),
        "the running job's message stays invisible past the visibility timeout"
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.output());
    let r = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(r["status"], "interrupted", "{r:#}");
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (1, 0),
        "the message is handed back for another instance"
    );
}

#[test]
fn bad_settings_name_what_to_set() {
    let mut d = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &["--poll-wait-seconds", "99"],
        &[],
    );
    assert_eq!(d.wait(Duration::from_secs(10)), 2);
    let out = d.output();
    assert!(
        out.contains("missing setting `queue_url`: pass --queue-url, set JANITOR_QUEUE_URL"),
        "{out}"
    );
    assert!(out.contains("missing setting `bucket`"), "{out}");
    assert!(
        out.contains("setting `poll_wait_seconds` is 99; it must be from 0 to 20"),
        "{out}"
    );
}

/// SIGTERM while a long poll is open and about to bring a message: the message is made
/// visible again at once, not hidden for the visibility timeout.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_poll_hands_its_message_back_at_once() {
    const INSTANCE: &str = "i-0e2e000000000006";
    let fx = Fixture::start(&[INSTANCE]).await;
    let cache = tempfile::tempdir().unwrap();
    let d = janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &fx,
        INSTANCE,
        cache.path(),
        &["--visibility-timeout-seconds", "120"],
    );
    d.wait_for_output("janitord is serving", Duration::from_secs(60));
    // The next poll takes the message at moto and its answer is held back 4 s: long enough
    // for the stop signal to arrive while it is open.
    fx.delay_next("ReceiveMessage", 4.0, 1);
    fx.send_raw(r#"{"schema": 1, "job_id": "late-1"}"#).await;
    eventually(Duration::from_secs(10), "the message in flight", || async {
        (fx.depth(&fx.queue_url).await == (0, 1)).then_some(())
    })
    .await;
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.output());
    assert!(
        d.output()
            .contains("a message received while stopping was handed back"),
        "{}",
        d.output()
    );
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (1, 0),
        "visible again at once, not after 120 s"
    );
}

/// A million output lines (about 60 MB) in a container whose json-file log rotates at
/// 10m × 3: the output is read from the attach stream, not the rotated log, so the `ERROR` at
/// line 300,001 is seen and the job fails quoting it.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_deep_in_a_rotated_output_is_seen() {
    const INSTANCE: &str = "i-0e2e000000000007";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let script = r#"awk 'BEGIN { for (i = 1; i <= 1000000; i++) { if (i == 300001) print "ERROR: line 300001 broke"; else printf "line %d ..................................................\n", i } }'"#;
    let url = git_repo(
        repos.path(),
        "e2e-million",
        &[("Dockerfile", &dockerfile(script))],
    );
    let run_id = "20261201T000000Z-e2e007";
    let job_id = fx
        .send_job(run_id, &spec("e2e-million", &url, Duration::from_secs(300)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &[]);
    assert_eq!(d.wait(Duration::from_secs(300)), 0, "{}", d.output());
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["errors"]["count"], 1);
    assert_eq!(report["errors"]["first"][0], "ERROR: line 300001 broke");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("ERROR: line 300001 broke"),
        "{report:#}"
    );
    // Every line counted, exactly: the run step's million, and the job's with the clone's and
    // the build's few; all of them shipped, none dropped.
    let out = &report["output"];
    eprintln!("measured: output of the million-line job: {out}");
    let run = step(&report, "run");
    assert_eq!(run["output"]["lines"], 1_000_000, "{run:#}");
    assert_eq!(run["output"]["shipped_events"], 1_000_000, "{run:#}");
    assert_eq!(run["output"]["dropped_events"], 0, "{run:#}");
    let lines = out["lines"].as_u64().unwrap();
    assert!((1_000_000..1_000_200).contains(&lines), "{out}");
    assert_eq!(out["shipped_events"], out["events"], "{out}");
    assert_eq!(
        (
            out["dropped_events"].as_u64(),
            out["failed_events"].as_u64()
        ),
        (Some(0), Some(0)),
        "{out}"
    );
    assert!(out.get("missing_reason").is_none(), "{out}");
    // In CloudWatch: every line of the run, in order, none twice.
    let stream = format!("{INSTANCE}/{job_id}");
    let shipped = fx.all_log_lines(&stream).await;
    let run_lines: Vec<&str> = shipped
        .iter()
        .filter_map(|l| l.strip_prefix("[run] "))
        .collect();
    assert_eq!(run_lines.len(), 1_000_000);
    for (i, l) in run_lines.iter().enumerate() {
        let n = i + 1;
        if n == 300_001 {
            assert_eq!(*l, "ERROR: line 300001 broke");
        } else {
            assert!(l.starts_with(&format!("line {n} ")), "line {n} is `{l}`");
        }
    }
    // The archive beside the report has them too.
    let key = out["archive"].as_str().unwrap();
    assert_eq!(
        key,
        format!("janitor-reports/runs/{run_id}/jobs/{job_id}/output.log.gz")
    );
    let text = janitor_services::logs::read_archive(&fx.bytes(key).await).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("[run] ")).count(),
        1_000_000
    );
}

/// A 1 MiB line reaches CloudWatch whole: split into events under the 256 KiB limit, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_mebibyte_line_is_split_never_cut() {
    const INSTANCE: &str = "i-0e2e000000000008";
    ensure_base_image();
    let fx = Fixture::start(&[INSTANCE]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "e2e-longline",
        &[(
            "Dockerfile",
            &dockerfile("head -c 1048576 /dev/zero | tr '\\0' x; echo; echo after"),
        )],
    );
    let run_id = "20261201T000000Z-e2e008";
    let job_id = fx
        .send_job(
            run_id,
            &spec("e2e-longline", &url, Duration::from_secs(120)),
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, INSTANCE, cache.path(), &[]);
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let lines = fx.log_lines(&format!("{INSTANCE}/{job_id}")).await;
    let start = lines
        .iter()
        .position(|l| l.starts_with("[run] xxx"))
        .expect("the long line's first part");
    let after = lines.iter().position(|l| l == "[run] after").unwrap();
    let joined: String = lines[start..after].concat();
    assert_eq!(joined.len(), "[run] ".len() + 1_048_576, "nothing cut");
    assert!(joined["[run] ".len()..].bytes().all(|b| b == b'x'));
    assert!(
        after - start >= 5,
        "split into events under 256 KiB: {}",
        after - start
    );
}

/// A container left with a job's name (an earlier attempt's) does not stop the run: it is
/// removed and the container created again.
#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_container_of_the_same_name_is_replaced() {
    use janitor_services::engine::{ContainerEngine, ContainerSpec, Graces};
    ensure_base_image();
    let name = format!("janitor-e2e-leftover-{}", std::process::id());
    janitor_testkit::docker(&[
        "create",
        "--name",
        &name,
        janitor_testkit::BASE_IMAGE,
        "true",
    ]);
    let engine = janitor_testkit::engine::TestEngine::connect().await;
    let spec = ContainerSpec {
        name: name.clone(),
        image: janitor_testkit::BASE_IMAGE.to_string(),
        cmd: Some(vec!["sh".into(), "-c".into(), "echo fresh".into()]),
        ..ContainerSpec::default()
    };
    let mut lines = Vec::new();
    let out = engine
        .run(
            &spec,
            tokio::time::Instant::now() + Duration::from_secs(60),
            Graces {
                deadline: Duration::from_secs(2),
                interrupt: Duration::from_secs(2),
            },
            &tokio_util::sync::CancellationToken::new(),
            &mut |l| lines.push(l.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(lines, ["fresh"]);
    let left = janitor_testkit::docker(&["ps", "-a", "--filter", &format!("name=^{name}$"), "-q"]);
    assert!(left.trim().is_empty(), "removed afterwards: {left}");
}
