//! `janitorctl run --org`: the real binary against the testkit's GitHub fixture (three pages of
//! repositories, archived ones, forks, one without a Dockerfile, one with `.runpod/Dockerfile`,
//! an empty one, a 5xx and a used-up rate limit) and, for the enqueue, moto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use janitor_testkit::github::{GitHubFixture, OrgRepo};
use janitor_testkit::{Fixture, Proc};

fn ctl(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let mut p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_janitorctl")), args, env);
    let code = p.wait(Duration::from_secs(120));
    (code, p.output())
}

fn repo(name: &str, files: &[&str]) -> OrgRepo {
    OrgRepo {
        name: name.into(),
        files: Some(files.iter().map(|f| f.to_string()).collect()),
        ..OrgRepo::default()
    }
}

/// Eight repositories, three a page: three pages.
async fn organisation() -> GitHubFixture {
    let gh = GitHubFixture::start().await;
    gh.set_org(
        vec![
            repo(
                "worker-basic",
                &["Dockerfile", "src/handler.py", "test_input.json"],
            ),
            repo(
                "worker-hub",
                &[".runpod/Dockerfile", ".runpod/hub.json", "README.md"],
            ),
            OrgRepo {
                archived: true,
                ..repo("old-worker", &["Dockerfile"])
            },
            OrgRepo {
                fork: true,
                ..repo("forked-worker", &["Dockerfile"])
            },
            repo("docs", &["README.md", "docs/index.md"]),
            OrgRepo {
                name: "worker-empty".into(),
                files: None,
                ..OrgRepo::default()
            },
            repo("worker-vllm", &["docker/Dockerfile", "src/main.py"]),
            repo("tools-ci", &["Dockerfile"]),
        ],
        3,
    );
    gh
}

fn env(gh: &GitHubFixture, token: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![("JANITOR_GITHUB_API_URL".to_string(), gh.url.clone())];
    if let Some(t) = token {
        env.push(("GITHUB_TOKEN".to_string(), t.to_string()));
    }
    env
}

const OVERRIDES: &str = "max_concurrent_instances: 4\nrepositories:\n  - organization: acme\n    name: worker-vllm\n    dockerfile: docker/Dockerfile\n    timeout_minutes: 90\n  - acme/worker-retired\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_the_organisations_config_and_what_it_skipped() {
    let gh = organisation().await;
    // The first listing call fails with a 502: retried.
    gh.fail_next(&[502]);
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(&overrides, OVERRIDES).unwrap();
    let (code, out) = ctl(
        &[
            "run",
            "--org",
            "acme",
            overrides.to_str().unwrap(),
            "--exclude",
            "tools-*",
            "--dry-run",
        ],
        &env(&gh, Some("tok-123")),
    );
    assert_eq!(code, 0, "{out}");
    // What it skipped, and why, on standard error.
    for line in [
        "acme: 3 repositories with a Dockerfile, 5 skipped",
        "  skipped docs: no Dockerfile at .runpod/Dockerfile or Dockerfile on main",
        "  skipped forked-worker: a fork (pass --include-forks to run it)",
        "  skipped old-worker: archived (pass --include-archived to run it)",
        "  skipped tools-ci: excluded by --exclude 'tools-*'",
        "  skipped worker-empty: an empty repository",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}` in:\n{out}"
        );
    }
    // The generated config, line by line.
    let config: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("# janitorctl run --org acme"))
        .take_while(|l| !l.starts_with("Pool "))
        .collect();
    let expected = [
        "# settings and overrides from OVERRIDES",
        "max_concurrent_instances: 4",
        "repositories:",
        "  - organization: acme",
        "    name: worker-basic",
        "  - organization: acme",
        "    name: worker-hub",
        "  - organization: acme",
        "    name: worker-vllm",
        "    dockerfile: docker/Dockerfile",
        "    timeout_minutes: 90",
        "# override for worker-retired not used: acme has no such repository",
        "# skipped docs: no Dockerfile at .runpod/Dockerfile or Dockerfile on main",
        "# skipped forked-worker: a fork (pass --include-forks to run it)",
        "# skipped old-worker: archived (pass --include-archived to run it)",
        "# skipped tools-ci: excluded by --exclude 'tools-*'",
        "# skipped worker-empty: an empty repository",
    ];
    let overrides_line = format!("# settings and overrides from {}", overrides.display());
    assert!(
        config[0].ends_with(": 3 repositories with a Dockerfile, 5 skipped (listed at the end)"),
        "{out}"
    );
    let got: Vec<String> = config[1..]
        .iter()
        .map(|l| l.replace(&overrides_line, "# settings and overrides from OVERRIDES"))
        .collect();
    assert_eq!(got, expected, "{out}");
    // Then where each would run among Terraform's default pools (no settings here), and the
    // estimate by pool.
    for line in [
        "Pool gpu-24 (g5.xlarge): 3 job(s)",
        "  acme/worker-vllm: no GPU id in its files: the smallest GPU pool",
        "  gpu-24: 2 × g5.xlarge × 30m00s at $1.006/h = $1.01",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}` in:\n{out}"
        );
    }
    // Every page read (the first twice: the 502), the token sent, one tree call per candidate.
    let seen = gh.seen();
    let pages: Vec<&str> = seen
        .iter()
        .filter(|s| s.path.starts_with("/orgs/acme/repos"))
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert!(pages[3].ends_with("&page=3"), "{pages:?}");
    assert!(seen.iter().all(|s| s.authorization == "Bearer tok-123"));
    let trees = seen
        .iter()
        .filter(|s| s.path.contains("/git/trees/"))
        .count();
    assert_eq!(
        trees, 5,
        "docs, worker-basic, worker-hub, worker-empty, worker-vllm"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_up_rate_limit_is_said_with_its_reset() {
    let gh = organisation().await;
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() as u64 + 40 * 60;
    gh.rate_limit_next(reset);
    let (code, out) = ctl(&["run", "--org", "acme", "--dry-run"], &env(&gh, None));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no GITHUB_TOKEN: GitHub allows 60 requests an hour"),
        "{out}"
    );
    assert!(
        out.contains("cannot list the repositories of acme: GET /orgs/acme/repos?type=all&per_page=100: GitHub's API rate limit (60 requests an hour) is used up; it resets at ")
            && out.contains("(in 40 min): set GITHUB_TOKEN to a token"),
        "{out}"
    );
    // Anonymous: no Authorization header at all.
    assert!(gh.seen().iter().all(|s| s.authorization.is_empty()));
    // --include narrows; a bad organisation name is refused before any call.
    let (code, out) = ctl(&["run", "--org", "acme corp", "--dry-run"], &env(&gh, None));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--org acme corp:"), "{out}");
    let (code, out) = ctl(
        &[
            "run",
            "--org",
            "acme",
            "--include",
            "worker-b*",
            "--dry-run",
        ],
        &env(&gh, None),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("acme: 1 repositories with a Dockerfile, 7 skipped"),
        "{out}"
    );
    assert!(
        out.contains("  skipped worker-hub: not matched by --include 'worker-b*'"),
        "{out}"
    );
}

/// The organisation's jobs enqueued against moto: one message per discovered repository, and
/// the manifest records the discovery.
#[tokio::test(flavor = "multi_thread")]
async fn an_organisation_run_records_its_discovery_in_the_manifest() {
    let gh = organisation().await;
    let fx = Fixture::start(&[]).await;
    let mut e = fx.env(None);
    e.extend(env(&gh, Some("tok-123")));
    let (code, out) = ctl(&["run", "--org", "acme", "--no-wait", "--yes"], &e);
    assert_eq!(code, 0, "{out}");
    let run_id = out.lines().last().unwrap().trim().to_string();
    let manifest = fx
        .json(&format!("janitor-reports/runs/{run_id}/manifest.json"))
        .await;
    let d = &manifest["discovery"];
    assert_eq!(d["organization"], "acme");
    assert_eq!(
        d["discovered"],
        serde_json::json!(["tools-ci", "worker-basic", "worker-hub"])
    );
    let skipped: Vec<&str> = d["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            "docs",
            "forked-worker",
            "old-worker",
            "worker-empty",
            "worker-vllm"
        ]
    );
    assert_eq!(manifest["config_path"], "--org acme");
    assert_eq!(manifest["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(fx.depth(&fx.queue_url).await, (3, 0));
}

/// With pools, each repository of the organisation goes to the pool its own files ask for:
/// hub.json's `runsOn: CPU` to `cpu`, a tests.json L40S to `gpu-48`, nothing to the smallest
/// GPU pool. The files are read through the contents API only where the tree has them, and
/// what a hostile file writes in its GPU ids never reaches the terminal.
#[tokio::test(flavor = "multi_thread")]
async fn an_organisation_run_routes_each_repository_by_its_files() {
    let gh = GitHubFixture::start().await;
    let with = |name: &str, files: &[&str], texts: &[(&str, &str)]| OrgRepo {
        texts: texts
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
        ..repo(name, files)
    };
    gh.set_org(
        vec![
            with(
                "worker-cpu",
                &[".runpod/Dockerfile", ".runpod/hub.json"],
                &[(".runpod/hub.json", r#"{"config": {"runsOn": "CPU"}}"#)],
            ),
            with(
                "worker-big",
                &["Dockerfile", ".runpod/tests.json"],
                &[(
                    ".runpod/tests.json",
                    r#"{"tests": [{"name": "t", "input": {}}], "config": {"gpuTypeId": "NVIDIA L40S"}}"#,
                )],
            ),
            with("worker-basic", &["Dockerfile"], &[]),
            with(
                "worker-hostile",
                &["Dockerfile", ".runpod/hub.json"],
                &[(
                    ".runpod/hub.json",
                    "{\"config\": {\"runsOn\": \"GPU\", \"gpuIds\": \"\\u001b]0;pwned\\u0007,\\u001b[2J\"}}",
                )],
            ),
        ],
        10,
    );
    let fx = Fixture::start_with_pools(
        &[],
        &[
            "cpu:c7i.xlarge:0",
            "gpu-24:g5.xlarge:24",
            "gpu-48:g6e.xlarge:48",
        ],
    )
    .await;
    let mut e = fx.env(None);
    e.extend(env(&gh, None));
    e.push(("JANITOR_POOLS".into(), fx.pools.to_string()));
    let (code, out) = ctl(&["run", "--org", "acme", "--no-wait", "--yes"], &e);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "a repository's escape codes reached the terminal:\n{out:?}"
    );
    for line in [
        "  acme/worker-cpu: `.runpod/hub.json` says `runsOn: CPU`",
        "  acme/worker-big: `NVIDIA L40S` in .runpod/tests.json needs a 48 GB GPU",
        "  acme/worker-basic: no GPU id in its files: the smallest GPU pool",
        "  acme/worker-hostile: none of its 2 GPU id(s) is a RunPod GPU pool or type this fleet knows: the smallest GPU pool",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
    }
    let contents: Vec<String> = gh
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/contents/"))
        .map(|s| s.path)
        .collect();
    let mut want = vec![
        "/repos/acme/worker-big/contents/.runpod/tests.json",
        "/repos/acme/worker-cpu/contents/.runpod/hub.json",
        "/repos/acme/worker-hostile/contents/.runpod/hub.json",
    ];
    let mut got: Vec<&str> = contents
        .iter()
        .map(|p| p.split('?').next().unwrap())
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "one contents call per file the tree lists");
    let queue = |pool: &str| fx.pools[pool]["queue_url"].as_str().unwrap().to_string();
    assert_eq!(fx.depth(&queue("cpu")).await, (1, 0));
    assert_eq!(fx.depth(&queue("gpu-24")).await, (2, 0));
    assert_eq!(fx.depth(&queue("gpu-48")).await, (1, 0));
    let run_id = out.lines().last().unwrap().trim().to_string();
    let manifest = fx
        .json(&format!("janitor-reports/runs/{run_id}/manifest.json"))
        .await;
    let cpu = manifest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["repository"] == "acme/worker-cpu")
        .unwrap();
    assert_eq!(cpu["pool"], "cpu");
    assert_eq!(
        cpu["gpu_required"], false,
        "the CPU pool runs it without a GPU"
    );
}
