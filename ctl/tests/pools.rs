//! Pools end to end: `janitorctl run` routes each repository to its pool's queue (by `pool:`,
//! `gpu_required`, hub.json's `runsOn` and tests.json's GPU ids, read from the repository),
//! raises each pool's group, and the real daemons of each pool, each reading only its own queue,
//! store every report once; `status`, `show` and `kill-all` cover every pool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_testkit::{dockerfile, ensure_base_image, eventually, git_repo, Fixture, Proc};

fn ctl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_janitorctl"))
}

/// janitorctl's environment with the fixture's pools.
fn ctl_env(fx: &Fixture) -> Vec<(String, String)> {
    let mut env = fx.env(None);
    env.push(("JANITOR_POOLS".into(), fx.pools.to_string()));
    env
}

fn ctl(fx: &Fixture, args: &[&str]) -> (i32, String) {
    let mut p = Proc::spawn(ctl_bin(), args, &ctl_env(fx));
    let code = p.wait(Duration::from_secs(120));
    (code, p.output())
}

/// A daemon of `pool`: its queue is the pool's, as its launch template would say.
fn daemon(fx: &Fixture, pool: &str, instance: &str, cache: &Path) -> Proc {
    let mut env = fx.env(Some(instance));
    env.push((
        "JANITOR_QUEUE_URL".into(),
        fx.pools[pool]["queue_url"].as_str().unwrap().to_string(),
    ));
    Proc::spawn(
        &janitor_testkit::janitord_beside(ctl_bin()),
        &[
            "--exit-when-idle",
            "--allow-local-repos",
            "--poll-wait-seconds",
            "1",
            "--stop-grace-seconds",
            "2",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &env,
    )
}

const HUB_CPU: &str =
    r#"{"title": "CPU worker", "config": {"runsOn": "CPU", "containerDiskInGb": 5}}"#;

fn tests_json(gpu: &str) -> String {
    format!(
        r#"{{"tests": [{{"name": "basic", "input": {{"prompt": "hi"}}, "timeout": 10000}}], "config": {{"gpuTypeId": "{gpu}", "gpuCount": 1}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_repository_runs_in_its_pool_and_every_pool_is_covered() {
    ensure_base_image();
    let (c1, c2, g1) = (
        "i-0f1ee70000000101",
        "i-0f1ee70000000102",
        "i-0f1ee70000000201",
    );
    let fx = Fixture::start_with_pools(
        &[c1, c2, g1],
        &[
            "cpu:c7i.xlarge:0:2",
            "gpu-24:g5.xlarge:24:2",
            "gpu-48:g6e.xlarge:48:1",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ok = dockerfile("sleep 1; echo done");
    git_repo(dir.path(), "plain", &[("Dockerfile", &ok)]);
    git_repo(
        dir.path(),
        "hub-cpu",
        &[("Dockerfile", &ok), (".runpod/hub.json", HUB_CPU)],
    );
    git_repo(dir.path(), "pinned", &[("Dockerfile", &ok)]);
    git_repo(
        dir.path(),
        "big",
        &[
            ("Dockerfile", &ok),
            (".runpod/tests.json", &tests_json("ADA_48_PRO")),
        ],
    );
    git_repo(
        dir.path(),
        "huge",
        &[
            ("Dockerfile", &ok),
            (".runpod/tests.json", &tests_json("AMPERE_80")),
        ],
    );
    let cfg = dir.path().join("pools.yaml");
    std::fs::write(
        &cfg,
        "repositories:\n\
         \x20 - {name: plain, organization: local, url: ./plain, gpu_required: false, timeout: 2m}\n\
         \x20 - {name: hub-cpu, organization: local, url: ./hub-cpu, timeout: 2m}\n\
         \x20 - {name: pinned, organization: local, url: ./pinned, gpu_required: false, pool: gpu-24, timeout: 2m}\n\
         \x20 - {name: big, organization: local, url: ./big, timeout: 2m}\n\
         \x20 - {name: huge, organization: local, url: ./huge, timeout: 2m}\n\
         max_concurrent_instances: 5\n\
         max_instances_by_pool: {cpu: 1}\n",
    )
    .unwrap();

    // A limit for a pool the fleet lacks is refused before anything is sent.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "repositories:\n  - {name: plain, organization: local, url: ./plain, gpu_required: false}\nmax_instances_by_pool: {gpu-80: 1}\n",
    )
    .unwrap();
    let (code, out) = ctl(
        &fx,
        &[
            "run",
            typo.to_str().unwrap(),
            "--yes",
            "--no-wait",
            "--allow-local-repos",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "max_instances_by_pool: no pool named `gpu-80`; the pools are cpu, gpu-24, gpu-48"
        ),
        "{out}"
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
    let run_id = out.lines().last().unwrap().trim().to_string();
    for line in [
        "Pool cpu (c7i.xlarge): 2 job(s)",
        "  local/plain: `gpu_required: false`",
        "  local/hub-cpu: `.runpod/hub.json` says `runsOn: CPU`",
        "Pool gpu-24 (g5.xlarge): 1 job(s)",
        "  local/pinned: its `pool:`",
        "Pool gpu-48 (g6e.xlarge): 1 job(s)",
        "  local/big: `ADA_48_PRO` in .runpod/tests.json needs a 48 GB GPU",
        "Not run: local/huge: `AMPERE_80` in .runpod/tests.json needs a 80 GB GPU and no pool has one",
        "  cpu: 2 × c7i.xlarge × 2m00s at $0.1785/h = $0.01",
        "  gpu-24: 1 × g5.xlarge × 2m00s at $1.006/h = $0.03",
        "  gpu-48: 1 × g6e.xlarge × 2m00s at $1.861/h = $0.06",
        // The config's limit for the pool, under the group's own maximum (2).
        "Desired capacity of janitor-cpu: 0 → 1",
        "Desired capacity of janitor-gpu-24: 0 → 1",
        "Desired capacity of janitor-gpu-48: 0 → 1",
    ] {
        assert!(
            out.lines().any(|l| l == line || (line.starts_with("Not run") && l.starts_with(line))),
            "no line {line:?} in:\n{out}"
        );
    }
    // Each job on its own pool's queue; none on the single queue of old.
    let depth = |pool: &str| fx.pools[pool]["queue_url"].as_str().unwrap().to_string();
    assert_eq!(fx.depth(&depth("cpu")).await, (2, 0));
    assert_eq!(fx.depth(&depth("gpu-24")).await, (1, 0));
    assert_eq!(fx.depth(&depth("gpu-48")).await, (1, 0));
    assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    let manifest = fx
        .json(&format!("janitor-reports/runs/{run_id}/manifest.json"))
        .await;
    assert_eq!(manifest["not_run"][0]["name"], "local/huge", "{manifest:#}");
    let pool_of = |repo: &str| {
        manifest["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["repository"] == repo)
            .map(|j| (j["pool"].clone(), j["instance_type"].clone()))
            .unwrap()
    };
    assert_eq!(
        pool_of("local/hub-cpu"),
        ("cpu".into(), "c7i.xlarge".into())
    );
    assert_eq!(pool_of("local/big"), ("gpu-48".into(), "g6e.xlarge".into()));

    // The daemons of the CPU and 24 GB pools; none for 48 GB (this machine has no such GPU).
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut daemons = [
        daemon(&fx, "cpu", c1, caches[0].path()),
        daemon(&fx, "cpu", c2, caches[1].path()),
        daemon(&fx, "gpu-24", g1, caches[2].path()),
    ];
    for d in &mut daemons {
        assert_eq!(d.wait(Duration::from_secs(180)), 0, "{}", d.output());
    }
    let shown: serde_json::Value = {
        let (code, text) = ctl(&fx, &["show", &run_id, "--json"]);
        assert_eq!(code, 0, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    for (repo, pool, instances) in [
        ("local/plain", "cpu", vec![c1, c2]),
        ("local/hub-cpu", "cpu", vec![c1, c2]),
        ("local/pinned", "gpu-24", vec![g1]),
    ] {
        let job = shown["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["repository"] == repo)
            .unwrap();
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(job["pool"], pool);
        assert!(
            instances.contains(&job["instance_id"].as_str().unwrap()),
            "{repo} ran on {} (pool {pool}: {instances:?})",
            job["instance_id"]
        );
        // One report per job, whatever the daemons did.
        let reports = fx
            .keys(&format!(
                "janitor-reports/runs/{run_id}/jobs/{}/",
                job["job_id"].as_str().unwrap()
            ))
            .await
            .into_iter()
            .filter(|k| k.ends_with("/report.json"))
            .count();
        assert_eq!(reports, 1, "{repo}");
    }
    // The CPU pool ran the runsOn-CPU worker without a GPU.
    let hub = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["repository"] == "local/hub-cpu")
        .unwrap();
    assert_eq!(hub["report"]["gpu_required"], false, "{hub:#}");

    let (code, text) = ctl(&fx, &["status", &run_id]);
    assert_eq!(code, 0, "{text}");
    for line in [
        "Pool cpu:",
        "Pool gpu-48:",
        "  big: ⏳ queued",
        "local/huge: not run — `AMPERE_80` in .runpod/tests.json needs a 80 GB GPU and no pool has one (the pools are cpu (c7i.xlarge, no GPU), gpu-24 (g5.xlarge, 24 GB GPU), gpu-48 (g6e.xlarge, 48 GB GPU)): add a pool with such a GPU to Terraform's `pools`, or set `pool:` to run it on a smaller one",
        "Pool gpu-48 (g6e.xlarge):",
        "Queue: 1 waiting, 0 in flight; dead-letter queue: 0",
    ] {
        assert!(
            text.lines().any(|l| l == line || l.starts_with(line)),
            "no line {line:?} in:\n{text}"
        );
    }
    let (_, text) = ctl(&fx, &["show", &run_id]);
    assert!(
        text.contains("By pool:\n  cpu: 2 job(s), 2 passed"),
        "{text}"
    );
    assert!(text.contains("  gpu-48: 1 job(s), 0 passed"), "{text}");
    assert!(text.contains("Not run: local/huge: "), "{text}");

    // kill-all empties every pool: the 48 GB job is purged and cancelled, every group at 0.
    let (code, text) = ctl(&fx, &["kill-all", "--json"]);
    assert_eq!(code, 0, "{text}");
    let killed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(killed["purged"], 1, "{killed:#}");
    assert_eq!(killed["pools"].as_array().unwrap().len(), 3, "{killed:#}");
    assert_eq!(
        killed["cancelled"].as_array().unwrap().len(),
        1,
        "{killed:#}"
    );
    for group in ["janitor-cpu", "janitor-gpu-24", "janitor-gpu-48"] {
        let (desired, instances) = fx.group_of(group).await;
        assert_eq!((desired, instances.len()), (0, 0), "{group}");
    }
    assert_eq!(fx.depth(&depth("gpu-48")).await, (0, 0));
    // scale: each pool by its own queue; --desired names its pool.
    let (code, text) = ctl(&fx, &["scale", "--desired", "1"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--desired sets one group: name its pool with --pool (cpu, gpu-24, gpu-48)"),
        "{text}"
    );
    let (code, text) = ctl(
        &fx,
        &["scale", "--desired", "1", "--pool", "gpu-24", "--json"],
    );
    assert_eq!(code, 0, "{text}");
    let one: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (one["pool"].as_str(), one["after"].as_i64()),
        (Some("gpu-24"), Some(1)),
        "{one:#}"
    );
    let (code, text) = ctl(&fx, &["scale", "--auto", "--json"]);
    assert_eq!(code, 0, "{text}");
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let after: Vec<(&str, i64)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["pool"].as_str().unwrap(), s["after"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        after,
        [("cpu", 0), ("gpu-24", 0), ("gpu-48", 0)],
        "empty queues: every pool to zero"
    );
    let _ = eventually(Duration::from_secs(5), "the run finished", || async {
        let (_, t) = ctl(&fx, &["status", &run_id]);
        t.contains("big: ✗ cancelled").then_some(())
    })
    .await;
}
