//! `janitorctl` end to end: the real binary against moto, the fixture and Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use janitor_testkit::{dockerfile, ensure_base_image, git_repo, workspace_root, Fixture, Proc};

fn ctl(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let mut p = Proc::spawn(Path::new(env!("CARGO_BIN_EXE_janitorctl")), args, env);
    let code = p.wait(Duration::from_secs(180));
    (code, p.output())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn shipped_configs_are_valid() {
    for file in [
        "infra/workers-config.yaml",
        "infra/repos.yaml",
        "examples/demo.yaml",
    ] {
        let path = workspace_root().join(file);
        let (code, out) = ctl(
            &["validate", path.to_str().unwrap(), "--allow-local-repos"],
            &[],
        );
        assert_eq!(code, 0, "{file}: {out}");
        assert!(out.contains(": valid: "), "{out}");
    }
    let (_, out) = ctl(
        &[
            "validate",
            workspace_root()
                .join("infra/workers-config.yaml")
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert!(
        out.contains(
            "valid: 3 repositories (3 need a GPU), longest timeout 30m00s, at most 10 instances"
        ),
        "{out}"
    );
}

#[test]
fn validate_prints_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "bad.yaml", "repositories:\n  - name: worker basic\n    organization: runpod-workers\n    url: file:///srv/x\n  - name: ok\n    organization: o\n    timeout: soon\nmax_concurrent_instances: many\n");
    let (code, out) = ctl(&["validate", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    let p = f.display();
    for expected in [
        format!("{p}:2: repositories[0].name: `worker basic` is not a GitHub repository name"),
        format!("{p}:4: repositories[0].url: `file:///srv/x` is a local repository, refused unless local repositories are allowed"),
        format!("{p}:7: repositories[1].timeout: `soon` is not a duration"),
        format!("{p}:8: max_concurrent_instances: must be a whole number from 1 to 100, found `many`"),
        format!("{p}: 4 problem(s); nothing was started"),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
    let (code, out) = ctl(&["validate", "/nonexistent/x.yaml"], &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains(
            "/nonexistent/x.yaml: cannot read /nonexistent/x.yaml: No such file or directory"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_writes_the_manifest_and_one_message_per_repository() {
    let fx = Fixture::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let repos: String = (0..12)
        .map(|i| format!("  - runpod-workers/repo-{i}\n"))
        .collect();
    let f = write(
        dir.path(),
        "twelve.yaml",
        &format!("repositories:\n{repos}default_timeout_minutes: 20\n"),
    );
    let (code, out) = ctl(
        &["enqueue", f.to_str().unwrap(), "--timeout-minutes", "45"],
        &fx.env(None),
    );
    assert_eq!(code, 0, "{out}");
    let run_id = out.lines().last().unwrap().trim().to_string();
    assert!(
        out.contains(&format!("enqueued 12 job(s) for run {run_id}")),
        "{out}"
    );
    let manifest = fx
        .json(&format!("janitor-reports/runs/{run_id}/manifest.json"))
        .await;
    assert_eq!(manifest["jobs"].as_array().unwrap().len(), 12);
    assert_eq!(manifest["jobs"][0]["timeout_seconds"], 2700);
    assert_eq!(manifest["config_path"], f.display().to_string());
    assert_eq!(fx.depth(&fx.queue_url).await, (12, 0));
    let msgs = fx
        .sqs()
        .receive_message()
        .queue_url(&fx.queue_url)
        .max_number_of_messages(1)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(msgs.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body["schema"], 1);
    assert_eq!(body["run_id"], run_id);
    assert_eq!(body["timeout"], 2700);
    assert_eq!(
        body["prompt"],
        "validate the repo and see if its still working"
    );
}

#[test]
fn enqueue_without_settings_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", "- a/b\n");
    let (code, out) = ctl(&["enqueue", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert_eq!(out.trim(), "janitorctl: missing setting `queue_url`: pass --queue-url, set JANITOR_QUEUE_URL, or name an environment with --env (ENV=dev in the Makefile) whose infra/env/<ENV>.json has it");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueued_run_is_processed_by_janitord_into_every_ledger_key() {
    ensure_base_image();
    let instance = "i-0c71000000000001";
    let fx = Fixture::start(&[instance]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = git_repo(
        dir.path(),
        "ctl-ledger",
        &[("Dockerfile", &dockerfile("echo ledger"))],
    );
    let f = write(dir.path(), "one.yaml", &format!("repositories:\n  - name: ctl-ledger\n    organization: local\n    url: {url}\n    gpu_required: false\n    timeout: 2m\n"));
    let mut env = fx.env(None);
    env.push(("JANITOR_ALLOW_LOCAL_REPOS".into(), "true".into()));
    let (code, out) = ctl(&["enqueue", f.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}");
    let run_id = out.lines().last().unwrap().trim().to_string();
    let cache = tempfile::tempdir().unwrap();
    let mut d = Proc::spawn(
        &janitor_testkit::janitord_beside(Path::new(env!("CARGO_BIN_EXE_janitorctl"))),
        &[
            "--exit-when-idle",
            "--allow-local-repos",
            "--poll-wait-seconds",
            "1",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &fx.env(Some(instance)),
    );
    assert_eq!(d.wait(Duration::from_secs(120)), 0, "{}", d.output());
    let manifest = fx
        .json(&format!("janitor-reports/runs/{run_id}/manifest.json"))
        .await;
    let job_id = manifest["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let keys = fx.keys("janitor-reports/").await;
    let want = [
        format!("janitor-reports/runs/{run_id}/manifest.json"),
        format!("janitor-reports/runs/{run_id}/jobs/{job_id}/started-1.json"),
        format!("janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"),
    ];
    for k in &want {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("janitor-reports/repos/local/ctl-ledger/")
                && k.ends_with(&format!("-{job_id}.json"))),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("janitor-reports/instances/{instance}/"))),
        "{keys:?}"
    );
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert!(report["timings"]["queue_wait_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn local_run_reports_and_exit_codes() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    git_repo(
        dir.path(),
        "local-ok",
        &[("Dockerfile", &dockerfile("echo all good"))],
    );
    git_repo(
        dir.path(),
        "local-broken",
        &[(
            "Dockerfile",
            &dockerfile("echo 'ERROR: model failed to load'; exit 1"),
        )],
    );
    let one = write(dir.path(), "ok.yaml", "repositories:\n  - {name: local-ok, organization: local, url: ./local-ok, gpu_required: false, timeout: 1m}\n");
    let out_dir = dir.path().join("reports");
    let (code, out) = ctl(
        &[
            "run",
            "--local",
            one.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✓ local-ok: success ("), "{out}");
    assert!(
        out.contains("Overall Status: 1/1 repositories successful"),
        "{out}"
    );
    let run_dir = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The run's page beside the reports, its path the last line.
    let page = run_dir.join("index.html");
    assert!(
        out.contains(&format!("The run's page: {}", page.display())),
        "{out}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("local/local-ok") && html.contains("<svg"),
        "{html}"
    );
    let files: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let report_file = files.iter().find(|f| f.ends_with(".json")).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join(report_file)).unwrap()).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["instance"]["lifecycle"], "local");
    assert!(files.iter().any(|f| f.ends_with(".log")), "{files:?}");

    let two = write(dir.path(), "two.yaml", "repositories:\n  - {name: local-ok, organization: local, url: ./local-ok, gpu_required: false}\n  - {name: local-broken, organization: local, url: ./local-broken, gpu_required: false}\n");
    let (code, out) = ctl(
        &[
            "run",
            "--local",
            two.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("✗ local-broken: failed ("), "{out}");
    assert!(
        out.contains("Overall Status: 1/2 repositories successful"),
        "{out}"
    );
}

#[test]
fn validate_says_how_each_agent_reaches_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.yaml");
    std::fs::write(
        &path,
        "repositories:\n  - name: keyed\n    organization: o\n    agent_image: janitor-agent:latest\n    agent: always\n    model: claude-sonnet-4-5\n    secrets:\n      ANTHROPIC_API_KEY: secretsmanager:janitor/anthropic\n  - name: bedrock\n    organization: o\n    agent_image: janitor-agent:latest\n    model_budget_usd: 1.50\n  - name: plain\n    organization: o\nmodel_api_url: https://llm-gateway.example/anthropic\n",
    )
    .unwrap();
    let (code, out) = ctl(&["validate", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(
        "agent for keyed: always (janitor-agent:latest), model: an API key (ANTHROPIC_API_KEY from secretsmanager:janitor/anthropic), endpoint https://llm-gateway.example/anthropic, model claude-sonnet-4-5, at most 30 turns per attempt and $5.00 per job"
    ), "{out}");
    assert!(
        out.contains("agent for bedrock: on_failure (janitor-agent:latest), model: Amazon Bedrock"),
        "{out}"
    );
    assert!(out.contains("and $1.50 per job"), "{out}");
    assert!(!out.contains("agent for plain"), "{out}");
}

/// A worker's test name and error, and the agent's summary, carry terminal escape codes that
/// would move the cursor up and overwrite the failed result with a passing one: janitorctl
/// shows them as text and obeys none (no control byte reaches the terminal but newlines).
#[test]
fn local_run_output_shows_escape_codes_never_obeys_them() {
    let runpod = janitor_testkit::ensure_runpod_image();
    janitor_testkit::agent_image(
        "janitor-test-escape-agent:latest",
        r#"printf '{"status":"unfixable","summary":"\\u001b[1A\\u001b[2K\\r\\u009b32m\\u202e all fixed"}' > "$JANITOR_RESULT""#,
    );
    let dir = tempfile::tempdir().unwrap();
    git_repo(
        dir.path(),
        "escape-worker",
        &[
            (
                "Dockerfile",
                &format!("FROM {runpod}\nCOPY handler.py /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\"]\n"),
            ),
            (
                "handler.py",
                "import runpod\n\ndef handler(job):\n    return {\"error\": \"\\x1b[1A\\x1b[2K\\r\\u2713 escape-worker: success\"}\n\nrunpod.serverless.start({\"handler\": handler})\n",
            ),
            (
                ".runpod/tests.json",
                r#"{"tests": [{"name": "\u001b[2K\u001b[32mlooks fine\nline two", "input": {}}]}"#,
            ),
        ],
    );
    let config = write(
        dir.path(),
        "escape.yaml",
        "repositories:\n  - {name: escape-worker, organization: local, url: ./escape-worker, gpu_required: false, timeout: 4m, agent_image: 'janitor-test-escape-agent:latest', max_fix_attempts: 1}\n",
    );
    let out_dir = dir.path().join("reports");
    let (code, out) = ctl(
        &[
            "run",
            "--local",
            config.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    let obeyed: Vec<char> = out
        .chars()
        .filter(|c| (c.is_control() && *c != '\n' && *c != '\t') || *c == '\u{202e}')
        .collect();
    assert!(obeyed.is_empty(), "{obeyed:?} reached the terminal:\n{out}");
    let result = out
        .lines()
        .find(|l| l.starts_with("✗ escape-worker: unfixable"))
        .unwrap_or_else(|| panic!("no result line in:\n{out}"));
    assert!(
        result.contains(r"failed: the job FAILED: \x1b[1A\x1b[2K ✓ escape-worker: success"),
        "{result}"
    );
    assert!(
        result.contains(r"cannot be fixed: \x1b[1A\x1b[2K \x9b32m\u{202e} all fixed"),
        "{result}"
    );
    // The test's name is one line, its newline shown.
    assert!(
        out.lines()
            .any(|l| l.contains(r"✗ \x1b[2K\x1b[32mlooks fine\nline two failed")),
        "{out}"
    );
}
