//! Instance hygiene end to end: the layer-cache budget with real images, cleanup around a
//! running container, disk floors, the no-NVML path, and /health and /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_testkit::{
    docker, dockerfile, ensure_base_image, eventually, git_repo, spec, workspace_root, Fixture,
    Proc, BASE_IMAGE,
};

fn janitord(fx: &Fixture, instance: &str, cache: &Path, extra: &[&str]) -> Proc {
    janitor_testkit::spawn_janitord(
        Path::new(env!("CARGO_BIN_EXE_janitord")),
        fx,
        instance,
        cache,
        extra,
    )
}

fn image_exists(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap()
        .status
        .success()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_budget_evicts_least_recently_used_first_and_pinned_last() {
    ensure_base_image();
    let fx = Fixture::start(&["i-0ca0000000000001"]).await;
    let repos = tempfile::tempdir().unwrap();
    let run_id = "20261122T000000Z-hyg001";
    let blob = |n: &str| {
        format!("{}FROM {BASE_IMAGE}\nRUN dd if=/dev/zero of=/blob-{n} bs=1M count=8 2>/dev/null\nCMD [\"echo\", \"{n}\"]\n", janitor_testkit::build_nonce())
    };
    let mut ids = Vec::new();
    for n in ["hyg-a", "hyg-b", "hyg-c"] {
        let url = git_repo(repos.path(), n, &[("Dockerfile", &blob(n))]);
        ids.push(
            fx.send_job(run_id, &spec(n, &url, Duration::from_secs(120)))
                .await,
        );
    }
    let url = git_repo(
        repos.path(),
        "hyg-d",
        &[("Dockerfile", &dockerfile("echo small"))],
    );
    let last = fx
        .send_job(run_id, &spec("hyg-d", &url, Duration::from_secs(120)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    // Three ~10 MB images against 30 MB: over the 80 % mark after the third, evicted to 60 %.
    let mut d = janitord(
        &fx,
        "i-0ca0000000000001",
        cache.path(),
        &[
            "--exit-when-idle",
            "--cache-budget-bytes",
            "30000000",
            "--pinned-image",
            "janitor/local/hyg-a:latest",
        ],
    );
    assert_eq!(d.wait(Duration::from_secs(180)), 0, "{}", d.output());
    assert!(
        image_exists("janitor/local/hyg-a:latest"),
        "the pinned image stays"
    );
    assert!(
        !image_exists("janitor/local/hyg-b:latest"),
        "least recently used goes first"
    );
    assert!(
        !image_exists("janitor/local/hyg-c:latest"),
        "then the next, before any pinned one"
    );
    let r = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{last}/report.json"
        ))
        .await;
    assert_eq!(
        r["cache"]["evicted"],
        serde_json::json!(["janitor/local/hyg-b:latest", "janitor/local/hyg-c:latest"]),
        "{r:#}"
    );
    assert!(
        r["cache"]["bytes_used"].as_u64().unwrap() <= 18_000_000,
        "under the low watermark after eviction: {r:#}"
    );
    assert_eq!(r["cache"]["own_volume"], false);
    assert!(
        r["disk"]["free_before_bytes"].as_u64().unwrap() > 0
            && r["disk"]["free_after_bytes"].as_u64().unwrap() > 0
    );
    let first = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{}/report.json",
            ids[0]
        ))
        .await;
    assert_eq!(
        first["cache"]["evicted"],
        serde_json::json!([]),
        "nothing evicted under the high watermark"
    );
    // The RUN: BuildKit makes no step of the FROM or the CMD.
    assert_eq!(first["cache"]["steps"], 1);
    let _ = docker(&[
        "rmi",
        "-f",
        "janitor/local/hyg-a:latest",
        "janitor/local/hyg-d:latest",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_spares_the_image_and_container_of_a_running_job() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nRUN echo running > /tag\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "-t",
        "janitor-test-hyg-running:latest",
        dir.path().to_str().unwrap(),
    ]);
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nRUN echo idle > /tag\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "-t",
        "janitor-test-hyg-idle:latest",
        dir.path().to_str().unwrap(),
    ]);
    let container = docker(&[
        "run",
        "-d",
        "--rm",
        "janitor-test-hyg-running:latest",
        "sleep",
        "60",
    ])
    .trim()
    .to_string();
    let cache = tempfile::tempdir().unwrap();
    let mut usage = janitord::hygiene::Usage::load(cache.path());
    let long_ago = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
    usage.touch("janitor-test-hyg-running:latest", long_ago);
    usage.touch("janitor-test-hyg-idle:latest", long_ago);
    let mut policy = janitord::settings::load(&janitord::settings::Flags {
        queue_url: Some("q".into()),
        bucket: Some("b".into()),
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap()
    .hygiene();
    policy.budget_bytes = Some(1); // everything is over budget
    policy.journald_days = 0;
    policy.docker_prune = false; // a shared machine: only janitord's own images are in play
    let engine = janitor_services::engine::DockerEngine::connect()
        .await
        .unwrap();
    let done = janitord::hygiene::cleanup(
        &engine,
        &policy,
        &mut usage,
        time::OffsetDateTime::now_utc(),
    )
    .await;
    assert_eq!(done.evicted, ["janitor-test-hyg-idle:latest"], "{done:?}");
    assert!(
        image_exists("janitor-test-hyg-running:latest"),
        "the running job's image stays"
    );
    let running = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("id={container}"),
    ]);
    assert!(
        running.contains(&container),
        "the running container is untouched"
    );
    let _ = docker(&["rm", "-f", &container]);
    let _ = docker(&["rmi", "-f", "janitor-test-hyg-running:latest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_the_disk_floor_no_job_is_taken_and_the_instance_is_marked_unhealthy() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let me = fx.launch(1).await.remove(0);
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "hyg-floor",
        &[("Dockerfile", &dockerfile("echo never"))],
    );
    fx.send_job(
        "20261122T000000Z-hyg002",
        &spec("hyg-floor", &url, Duration::from_secs(60)),
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(
        &fx,
        &me,
        cache.path(),
        &["--min-free-bytes", "1000000000000000000"],
    );
    let health = eventually(
        Duration::from_secs(30),
        "the instance marked unhealthy",
        || async {
            let out = fx
                .asg()
                .describe_auto_scaling_instances()
                .instance_ids(&me)
                .send()
                .await
                .ok()?;
            let h = out
                .auto_scaling_instances()
                .first()?
                .health_status()?
                .to_string();
            (h == "UNHEALTHY" || h == "Unhealthy").then_some(h)
        },
    )
    .await;
    assert!(!health.is_empty());
    let keys = fx.keys(&format!("janitor-reports/instances/{me}/")).await;
    let key = keys
        .iter()
        .find(|k| k.ends_with("-unhealthy.json"))
        .unwrap_or_else(|| panic!("{keys:?}"));
    let record = fx.json(key).await;
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("under the 1000000000000000000-byte floor"),
        "{record:#}"
    );
    d.wait_for_output(
        "this instance cannot take jobs; marking it unhealthy",
        Duration::from_secs(60),
    );
    assert!(
        d.output()
            .contains("under the 1000000000000000000-byte floor"),
        "{}",
        d.output()
    );
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (1, 0),
        "the job was not taken"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nvml_gpu_jobs_are_handed_back_and_gpu_check_fails() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_janitord"))
        .arg("gpu-check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("no usable GPU: NVML is not available"),
        "{text}"
    );

    let fx = Fixture::start(&["i-0ca0000000000003"]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "hyg-gpu",
        &[("Dockerfile", &dockerfile("nvidia-smi"))],
    );
    let mut job = spec("hyg-gpu", &url, Duration::from_secs(60));
    job.gpu_required = true;
    let run_id = "20261122T000000Z-hyg003";
    let job_id = fx.send_job(run_id, &job).await;
    let cache = tempfile::tempdir().unwrap();
    let d = janitord(
        &fx,
        "i-0ca0000000000003",
        cache.path(),
        &["--reject-retry-seconds", "30"],
    );
    let rec = fx
        .wait_for_json(
            &format!("janitor-reports/runs/{run_id}/jobs/{job_id}/handed-back-1.json"),
            Duration::from_secs(30),
        )
        .await;
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .starts_with("no usable GPU: NVML is not available"),
        "{rec:#}"
    );
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (0, 1),
        "handed back, hidden for the retry delay"
    );
    assert!(
        fx.keys(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await
        .is_empty(),
        "not run here"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_carry_every_fact() {
    ensure_base_image();
    let fx = Fixture::start(&["i-0ca0000000000004"]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "hyg-metrics",
        &[("Dockerfile", &dockerfile("echo measured"))],
    );
    let run_id = "20261122T000000Z-hyg004";
    let job_id = fx
        .send_job(run_id, &spec("hyg-metrics", &url, Duration::from_secs(60)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = janitord(
        &fx,
        "i-0ca0000000000004",
        cache.path(),
        &["--metrics-addr", &addr],
    );
    eventually(Duration::from_secs(60), "the report", || async {
        (!fx.keys(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await
        .is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health: serde_json::Value = serde_json::from_str(&get(port, "/health")).unwrap();
    for field in [
        "state",
        "current_job",
        "last_successful_poll",
        "disk",
        "cache",
        "gpus",
        "jobs_by_status",
        "process",
        "instance_id",
        "version",
    ] {
        assert!(
            health.get(field).is_some(),
            "/health lacks `{field}`: {health:#}"
        );
    }
    assert_eq!(health["jobs_by_status"]["succeeded"], 1);
    assert!(health["disk"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(health["gpus"]["count"], 0);
    assert!(health["last_successful_poll"].is_string());
    assert!(
        health["state"].as_str().unwrap().starts_with("Idle"),
        "{health:#}"
    );

    let metrics = get(port, "/metrics");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let parsed = std::process::Command::new(workspace_root().join(".venv/bin/python"))
        .arg("-c")
        .arg("import sys, json; from prometheus_client.parser import text_string_to_metric_families as p; print(json.dumps({f.name: [[s.name, s.labels, s.value] for s in f.samples] for f in p(open(sys.argv[1]).read())}))")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "the Prometheus parser refused /metrics: {}\n{metrics}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    for name in [
        "janitor_jobs",
        "janitor_job_duration_seconds",
        "janitor_queue_wait_seconds",
        "janitor_cache_bytes",
        "janitor_disk_free_bytes",
        "janitor_gpus",
        "janitor_gpu_utilization_percent",
        "janitor_process_resident_memory_bytes",
        "janitor_process_cpu_percent",
    ] {
        assert!(families.get(name).is_some(), "no `{name}` in {families:#}");
    }
    let succeeded = families["janitor_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[1]["status"] == "succeeded")
        .unwrap();
    assert_eq!(succeeded[2], 1.0);
    assert!(
        families["janitor_process_resident_memory_bytes"][0][2]
            .as_f64()
            .unwrap()
            > 1_000_000.0
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_janitord"))
        .args(["status", "--addr", &addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("on i-0ca0000000000004: Idle")
            && text.contains("job:       none")
            && text.contains("gpus:      none (NVML is not available"),
        "{text}"
    );
    drop(d);
}
