//! Fleet lifecycle end to end: the real `janitord` as a member of moto's Auto Scaling group,
//! its IMDS played by the fixture, jobs run on the real Docker engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use janitor_testkit::{dockerfile, ensure_base_image, eventually, git_repo, spec, Fixture, Proc};

fn janitord(fx: &Fixture, instance: &str, cache: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--stop-grace-seconds",
        "2",
        "--interrupt-grace-seconds",
        "2",
        "--imds-interval-seconds",
        "1",
    ];
    args.extend_from_slice(extra);
    janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        fx,
        instance,
        cache,
        &args,
    )
}

fn actions(fx: &Fixture, instance: &str) -> Vec<String> {
    fx.lifecycle_actions()
        .into_iter()
        .filter(|a| a["InstanceId"] == instance)
        .map(|a| a["Action"].as_str().unwrap().to_string())
        .collect()
}

async fn set_hook_timeout(fx: &Fixture, seconds: i32) {
    fx.asg()
        .put_lifecycle_hook()
        .auto_scaling_group_name(&fx.asg_name)
        .lifecycle_hook_name("janitor-drain")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(seconds)
        .default_result("CONTINUE")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_in_while_busy_lets_the_job_finish_with_heartbeats_then_completes_once() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    set_hook_timeout(&fx, 15).await; // heartbeats every 5 s
    let me = fx.launch(1).await.remove(0);
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-busy",
        &[(
            "Dockerfile",
            &dockerfile("echo started; sleep 12; echo finished"),
        )],
    );
    let run_id = "20261122T000000Z-lc0001";
    let job_id = fx
        .send_job(run_id, &spec("lc-busy", &url, Duration::from_secs(120)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, &me, cache.path(), &["--exit-when-idle"]);
    fx.wait_for_log_line(&format!("{me}/{job_id}"), "[run] started")
        .await;
    let (_, instances) = fx.group().await;
    assert!(
        instances
            .iter()
            .any(|(id, _, protected)| *id == me && *protected),
        "a busy instance is protected from scale-in: {instances:?}"
    );
    let drained_at = Instant::now();
    fx.set_imds(&me, "target-lifecycle-state", "Terminated");
    assert_eq!(d.wait(Duration::from_secs(60)), 0, "{}", d.output());
    let took = drained_at.elapsed();
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(
        report["status"], "succeeded",
        "the job finished during the drain: {report:#}"
    );
    let acts = actions(&fx, &me);
    let completes = acts
        .iter()
        .filter(|a| *a == "CompleteLifecycleAction")
        .count();
    let beats = acts
        .iter()
        .filter(|a| *a == "RecordLifecycleActionHeartbeat")
        .count();
    assert_eq!(completes, 1, "{acts:?}");
    assert!(beats >= 2, "heartbeats while the job ran: {acts:?}");
    assert_eq!(
        acts.last().map(String::as_str),
        Some("CompleteLifecycleAction"),
        "complete comes last: {acts:?}"
    );
    let complete = fx
        .lifecycle_actions()
        .into_iter()
        .find(|a| a["Action"] == "CompleteLifecycleAction")
        .unwrap();
    assert_eq!(complete["LifecycleActionResult"], "CONTINUE");
    assert_eq!(complete["LifecycleHookName"], "janitor-drain");
    assert_eq!(complete["AutoScalingGroupName"], "janitor-asg");
    let keys = fx.keys(&format!("janitor-reports/instances/{me}/")).await;
    assert!(
        keys.iter().any(|k| k.ends_with("-drain.json"))
            && keys.iter().any(|k| k.ends_with("-drained.json")),
        "{keys:?}"
    );
    let (_, instances) = fx.group().await;
    assert!(
        instances.iter().all(|(_, _, p)| !p),
        "protection cleared when the job ended"
    );
    eprintln!("measured: busy drain (target state changed → lifecycle action completed): {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_in_while_idle_completes_within_one_poll() {
    let fx = Fixture::start(&[]).await;
    let me = fx.launch(1).await.remove(0);
    let cache = tempfile::tempdir().unwrap();
    // The default 5 s metadata interval: completion must come within one of them.
    let mut args = vec![
        "--allow-local-repos",
        "--poll-wait-seconds",
        "1",
        "--idle-timeout-seconds",
        "600",
        "--log-format",
        "text",
        "--cache-dir",
    ];
    args.push(cache.path().to_str().unwrap());
    let d = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &args,
        &fx.env(Some(&me)),
    );
    d.wait_for_output("janitord is serving", Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    fx.set_imds(&me, "target-lifecycle-state", "Warmed:Stopped");
    eventually(
        Duration::from_secs(10),
        "CompleteLifecycleAction",
        || async {
            actions(&fx, &me)
                .contains(&"CompleteLifecycleAction".to_string())
                .then_some(())
        },
    )
    .await;
    let took = t0.elapsed();
    assert!(took <= Duration::from_secs(6), "idle drain took {took:?}");
    assert_eq!(
        actions(&fx, &me),
        ["CompleteLifecycleAction"],
        "no heartbeat when idle"
    );
    eprintln!("measured: idle drain (target state changed → lifecycle action completed): {took:?}");
    // Parked: it takes no more jobs.
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-parked",
        &[("Dockerfile", &dockerfile("echo no"))],
    );
    fx.send_job(
        "20261122T000000Z-lc0002",
        &spec("lc-parked", &url, Duration::from_secs(60)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (1, 0),
        "a drained daemon takes no job"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_scale_in_lowers_the_desired_capacity_by_one_and_respects_the_floor() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let ids = fx.launch(3).await;
    let me = ids[0].clone();
    // The other two are busy elsewhere.
    fx.asg()
        .set_instance_protection()
        .auto_scaling_group_name(&fx.asg_name)
        .instance_ids(&ids[1])
        .instance_ids(&ids[2])
        .protected_from_scale_in(true)
        .send()
        .await
        .unwrap();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-idle",
        &[("Dockerfile", &dockerfile("echo quick"))],
    );
    let run_id = "20261122T000000Z-lc0003";
    let job_id = fx
        .send_job(run_id, &spec("lc-idle", &url, Duration::from_secs(60)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(&fx, &me, cache.path(), &["--idle-timeout-seconds", "3"]);
    eventually(Duration::from_secs(60), "the job's report", || async {
        let keys = fx
            .keys(&format!(
                "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
            ))
            .await;
        (!keys.is_empty()).then_some(())
    })
    .await;
    let finished = Instant::now();
    eventually(Duration::from_secs(30), "desired capacity 2", || async {
        (fx.group().await.0 == 2).then_some(())
    })
    .await;
    let took = finished.elapsed();
    let (desired, instances) = fx.group().await;
    assert_eq!(desired, 2);
    assert!(
        !instances.iter().any(|(id, _, _)| *id == me),
        "the idle instance is the one that left: {instances:?}"
    );
    let keys = fx.keys(&format!("janitor-reports/instances/{me}/")).await;
    assert!(
        keys.iter().any(|k| k.ends_with("-scale-in.json")),
        "{keys:?}"
    );
    eprintln!(
        "measured: last job finished → desired capacity lowered: {took:?} (idle timeout 3 s)"
    );
    drop(d);

    // The floor: with the group's minimum at its size, an idle instance stays.
    let fx = Fixture::start(&[]).await;
    fx.asg()
        .update_auto_scaling_group()
        .auto_scaling_group_name(&fx.asg_name)
        .min_size(1)
        .send()
        .await
        .unwrap();
    let me = fx.launch(1).await.remove(0);
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(&fx, &me, cache.path(), &["--idle-timeout-seconds", "1"]);
    d.wait_for_output("may not shrink below its floor", Duration::from_secs(60));
    assert_eq!(fx.group().await.0, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spot_notice_hands_the_job_to_another_instance() {
    ensure_base_image();
    let (a, b) = ("i-0590700000000001", "i-0590700000000002");
    let fx = Fixture::start(&[&format!("{a}:g5.xlarge:us-east-1a:spot"), b]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-spot",
        &[(
            "Dockerfile",
            &dockerfile("echo started; sleep 6; echo finished"),
        )],
    );
    let run_id = "20261122T000000Z-lc0004";
    let job_id = fx
        .send_job(run_id, &spec("lc-spot", &url, Duration::from_secs(120)))
        .await;
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let da = janitord(&fx, a, ca.path(), &[]);
    fx.wait_for_log_line(&format!("{a}/{job_id}"), "[run] started")
        .await;
    fx.set_imds(
        a,
        "spot-instance-action",
        r#"{"action": "terminate", "time": "2026-11-22T16:00:00Z"}"#,
    );
    let interrupted = eventually(
        Duration::from_secs(30),
        "the interrupted report",
        || async {
            let keys = fx
                .keys(&format!(
                    "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
                ))
                .await;
            if keys.is_empty() {
                return None;
            }
            Some(fx.json(&keys[0]).await)
        },
    )
    .await;
    assert_eq!(interrupted["status"], "interrupted", "{interrupted:#}");
    assert_eq!(interrupted["attempt"], 1);
    assert_eq!(interrupted["instance"]["lifecycle"], "spot");
    let mut db = janitord(&fx, b, cb.path(), &["--exit-when-idle"]);
    assert_eq!(db.wait(Duration::from_secs(90)), 0, "{}", db.output());
    let fin = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(fin["status"], "succeeded");
    assert_eq!(fin["attempt"], 2);
    assert_eq!(fin["instance"]["id"], b);
    let history = fx.keys("janitor-reports/repos/local/lc-spot/").await;
    assert_eq!(history.len(), 1, "one entry per job: {history:?}");
    assert_eq!(
        fx.json(&history[0]).await["attempt"],
        2,
        "the entry is the final attempt's report"
    );
    assert!(fx
        .keys(&format!("janitor-reports/instances/{a}/"))
        .await
        .iter()
        .any(|k| k.ends_with("-spot-notice.json")));
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    assert_eq!(
        da.output().matches("job taken").count(),
        1,
        "the parked spot instance took nothing more:\n{}",
        da.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_restarts_removes_its_orphan_and_the_job_runs_once_more() {
    ensure_base_image();
    let me = "i-0dead00000000001";
    let fx = Fixture::start(&[me]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-orphan",
        &[(
            "Dockerfile",
            &dockerfile("echo started; sleep 6; echo finished"),
        )],
    );
    let run_id = "20261122T000000Z-lc0005";
    let job_id = fx
        .send_job(run_id, &spec("lc-orphan", &url, Duration::from_secs(120)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(
        &fx,
        me,
        cache.path(),
        &["--visibility-timeout-seconds", "6"],
    );
    fx.wait_for_log_line(&format!("{me}/{job_id}"), "[run] started")
        .await;
    d.signal("KILL");
    drop(d);
    let label = format!("label=janitor.job_id={job_id}");
    assert!(
        !janitor_testkit::docker(&["ps", "-q", "--filter", &label])
            .trim()
            .is_empty(),
        "the container outlived its daemon"
    );
    // Killed again, right after recovery wrote the crash record: the record is there and the
    // container is still there for the next start to find.
    let mut hooked = janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &fx,
        me,
        cache.path(),
        &["--test-kill-after-crash-record"],
    );
    assert_ne!(
        hooked.wait(Duration::from_secs(60)),
        0,
        "{}",
        hooked.output()
    );
    let crashed_first = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/crashed-1.json"
        ))
        .await;
    assert_eq!(crashed_first["attempt"], "1");
    assert!(
        !janitor_testkit::docker(&["ps", "-aq", "--filter", &label])
            .trim()
            .is_empty(),
        "killed between the record and the removal: the container is still there"
    );
    let mut d = janitord(
        &fx,
        me,
        cache.path(),
        &["--visibility-timeout-seconds", "6", "--exit-when-idle"],
    );
    // The message comes back after its visibility timeout; --exit-when-idle waits for it
    // because an in-flight message keeps the queue from counting as empty.
    assert_eq!(d.wait(Duration::from_secs(90)), 0, "{}", d.output());
    assert!(
        d.output()
            .contains("removing a container left by an earlier janitord"),
        "{}",
        d.output()
    );
    let crashed = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/crashed-1.json"
        ))
        .await;
    assert_eq!(crashed["attempt"], "1");
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["attempt"], 2);
    assert_eq!(
        fx.keys("janitor-reports/repos/local/lc-orphan/")
            .await
            .len(),
        1,
        "exactly one final report"
    );
    assert!(janitor_testkit::docker(&["ps", "-aq", "--filter", &label])
        .trim()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_metadata_service_does_not_stop_the_daemon() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let me = fx.launch(1).await.remove(0);
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(&fx, &me, cache.path(), &[]);
    d.wait_for_output("janitord is serving", Duration::from_secs(60));
    fx.set_imds(&me, "fail-for", "6");
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-imds",
        &[("Dockerfile", &dockerfile("echo fine"))],
    );
    let run_id = "20261122T000000Z-lc0006";
    let job_id = fx
        .send_job(run_id, &spec("lc-imds", &url, Duration::from_secs(60)))
        .await;
    let report = fx
        .wait_for_json(
            &format!("janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(report["status"], "succeeded", "jobs go on while IMDS fails");
    d.wait_for_output(
        "instance metadata could not be read; retrying",
        Duration::from_secs(60),
    );
    d.wait_for_output("instance metadata answers again", Duration::from_secs(60));
    fx.set_imds(&me, "target-lifecycle-state", "Terminated");
    eventually(
        Duration::from_secs(15),
        "the drain after IMDS recovered",
        || async {
            actions(&fx, &me)
                .contains(&"CompleteLifecycleAction".to_string())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_then_watchdog_pings_and_the_heartbeat_file_moves() {
    let fx = Fixture::start(&["i-05d0000000000001"]).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut env = fx.env(Some("i-05d0000000000001"));
    env.push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    env.push(("WATCHDOG_USEC".into(), "2000000".into()));
    let beat = cache.path().join("janitord.heartbeat");
    let d = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &[
            "--poll-wait-seconds",
            "1",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &env,
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got
        .iter()
        .filter(|m: &&String| m.as_str() == "WATCHDOG=1")
        .count()
        < 2
    {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification ({e}); got {got:?}; output:\n{}",
                d.output()
            )
        });
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got[0], "READY=1", "{got:?}");
    let first: i64 = std::fs::read_to_string(&beat)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - first).abs() <= 15);
    d.signal("TERM");
    let n = sock.recv(&mut buf).unwrap();
    let mut rest = vec![String::from_utf8_lossy(&buf[..n]).into_owned()];
    while !rest.contains(&"STOPPING=1".to_string()) {
        let n = sock.recv(&mut buf).unwrap();
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

/// Idle is per instance: while one instance runs a long job (its message in flight), an idle
/// one beside it leaves after its idle timeout instead of billing until the job ends.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_leaves_while_another_is_busy() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let ids = fx.launch(2).await;
    let (busy, idle) = (ids[0].clone(), ids[1].clone());
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-long",
        &[(
            "Dockerfile",
            &dockerfile("echo started; sleep 25; echo finished"),
        )],
    );
    let run_id = "20261201T000000Z-lc0009";
    let job_id = fx
        .send_job(run_id, &spec("lc-long", &url, Duration::from_secs(120)))
        .await;
    let busy_cache = tempfile::tempdir().unwrap();
    let _b = janitord(
        &fx,
        &busy,
        busy_cache.path(),
        &["--idle-timeout-seconds", "600"],
    );
    fx.wait_for_log_line(&format!("{busy}/{job_id}"), "[run] started")
        .await;
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (0, 1),
        "the job is in flight"
    );
    let idle_cache = tempfile::tempdir().unwrap();
    let _i = janitord(
        &fx,
        &idle,
        idle_cache.path(),
        &["--idle-timeout-seconds", "2"],
    );
    eventually(
        Duration::from_secs(20),
        "the idle instance leaves",
        || async {
            let (desired, instances) = fx.group().await;
            (desired == 1 && !instances.iter().any(|(id, _, _)| *id == idle)).then_some(())
        },
    )
    .await;
    let report_key = format!("janitor-reports/runs/{run_id}/jobs/{job_id}/report.json");
    assert!(
        fx.keys(&report_key).await.is_empty(),
        "it left while the other instance's job still ran"
    );
    let (_, instances) = fx.group().await;
    assert!(
        instances.iter().any(|(id, _, p)| *id == busy && *p),
        "the busy one stays, protected: {instances:?}"
    );
}

/// `janitord leave`, the dead-man's last resort: out of the group with the desired capacity
/// lowered, so the group launches no replacement for the stuck instance.
#[tokio::test(flavor = "multi_thread")]
async fn leave_takes_the_instance_out_and_lowers_the_desired_capacity() {
    let fx = Fixture::start(&[]).await;
    let ids = fx.launch(2).await;
    let me = ids[0].clone();
    let mut p = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        &["--instance-id", &me, "leave"],
        &fx.env(Some(&me)),
    );
    assert_eq!(p.wait(Duration::from_secs(60)), 0, "{}", p.output());
    assert!(p.output().contains("left janitor-asg"), "{}", p.output());
    let (desired, instances) = fx.group().await;
    assert_eq!(
        desired, 1,
        "no replacement: the desired capacity went down with it"
    );
    assert!(
        !instances.iter().any(|(id, _, _)| *id == me),
        "{instances:?}"
    );
}

/// A warm-pool instance's first boot: its lifecycle target is `Warmed:Stopped` from the start.
/// It must not take a job before it has read that; it completes the lifecycle action and parks,
/// leaving the message for an instance in service.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_first_boot_takes_no_job_before_its_lifecycle_state_is_read() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let me = fx.launch(1).await.remove(0);
    fx.set_imds(&me, "target-lifecycle-state", "Warmed:Stopped");
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "lc-warm",
        &[("Dockerfile", &dockerfile("echo warm"))],
    );
    let run_id = "20261201T000000Z-lc0010";
    let job_id = fx
        .send_job(run_id, &spec("lc-warm", &url, Duration::from_secs(60)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let mut d = janitord(&fx, &me, cache.path(), &["--exit-when-idle"]);
    assert_eq!(d.wait(Duration::from_secs(60)), 0, "{}", d.output());
    assert!(
        fx.keys(&format!("janitor-reports/runs/{run_id}/jobs/{job_id}/"))
            .await
            .is_empty(),
        "no job started: {}",
        d.output()
    );
    assert_eq!(fx.depth(&fx.queue_url).await, (1, 0), "the message waits");
    assert!(actions(&fx, &me).contains(&"CompleteLifecycleAction".to_string()));
}
