//! Repositories shaped like the runpod workers, validated the way their maintainers do: the
//! real `runpod` SDK (installed offline in a Debian image) serving `/runsync`, driven by the
//! pipeline on the machine's Docker engine. Each test is one repository; the verdict, the
//! failing test's name and the first cause are what a maintainer would act on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use janitor_model::config::JobSpec;
use janitor_model::report::{
    JobStatus, Report, StepName, StepStatus, TestMode, TestStatus, TestsReport,
};
use janitor_testkit::{ensure_runpod_image, git_repo, spec};

/// A worker's Dockerfile on the runpod image: the handler copied, `test_input.json` not.
fn worker_dockerfile(handler: &str) -> String {
    format!(
        "FROM {}\nWORKDIR /\nCOPY {handler} /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\"]\n",
        ensure_runpod_image()
    )
}

/// Runs one repository through the pipeline; returns its report and its output.
async fn validate(
    name: &str,
    files: &[(&str, &str)],
    tweak: impl FnOnce(&mut JobSpec),
) -> (Report, Vec<String>) {
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(repos.path(), name, files);
    validate_url(name, &url, tweak).await
}

/// Runs the repository at `url` (a local directory is copied by the clone step).
async fn validate_url(
    name: &str,
    url: &str,
    tweak: impl FnOnce(&mut JobSpec),
) -> (Report, Vec<String>) {
    let mut job = spec(name, url, Duration::from_secs(240));
    tweak(&mut job);
    let work = tempfile::tempdir().unwrap();
    let ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261201T000000Z-runpod",
        job,
        "local",
        work.path(),
    );
    janitor_testkit::run_in_process(&ctx).await
}

fn tests(r: &Report) -> &TestsReport {
    r.tests
        .as_ref()
        .unwrap_or_else(|| panic!("no tests in {r:#?}"))
}

const ECHO_HANDLER: &str = r#"import time
import runpod

def handler(job):
    inp = job["input"]
    if inp.get("mode") == "error":
        return {"error": "model weights missing: /models/sdxl.safetensors"}
    if inp.get("mode") == "raise":
        raise ValueError("prompt must not be empty")
    if inp.get("mode") == "sleep":
        time.sleep(inp["seconds"])
        return {"slept": inp["seconds"]}
    return {"echo": inp.get("prompt"), "n": 3}

runpod.serverless.start({"handler": handler})
"#;

/// worker-basic's shape: the Dockerfile does not copy `test_input.json`, so the image's CMD
/// exits 1 in the SDK's local mode; in server mode the same input passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_image_lacks_test_input_json_passes_in_server_mode() {
    let (r, out) = validate(
        "rp-basic",
        &[
            ("Dockerfile", &worker_dockerfile("rp_handler.py")),
            ("rp_handler.py", ECHO_HANDLER),
            (
                "test_input.json",
                r#"{"input": {"prompt": "John Doe", "seconds": 15}}"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{}", out.join("\n"));
    let t = tests(&r);
    assert_eq!(
        (t.source.as_str(), &t.mode),
        ("test_input.json", &TestMode::Server)
    );
    assert_eq!((t.passed, t.total), (1, 1));
    assert_eq!(t.results[0].name, "test_input");
    assert_eq!(t.results[0].http_status, Some(200));
    assert!(
        t.results[0].output.as_deref().unwrap().contains("John Doe"),
        "{t:#?}"
    );
    assert!(t.cold_start_seconds.unwrap() > 0.0);
    assert_eq!(t.summary(), "passed 1/1 tests");
    let test = r.step(StepName::Test).unwrap();
    assert!(
        test.detail
            .starts_with("passed 1/1 tests from test_input.json; cold start"),
        "{}",
        test.detail
    );
    assert!(r.step(StepName::Run).is_none());
    assert_eq!(
        r.step(StepName::Preflight).unwrap().status,
        StepStatus::Succeeded
    );
    // The worker's own output went through the sink, marked with the step.
    assert!(
        out.iter()
            .any(|l| l.starts_with("[test] ") && l.contains("Starting Serverless Worker")),
        "{out:?}"
    );
    assert_eq!(r.schema, 2);
}

/// Three kinds of failing test beside a passing one, and a timeout under a second called out.
#[tokio::test(flavor = "multi_thread")]
async fn failing_tests_are_named_with_their_first_cause() {
    let tests_json = r#"{"tests": [
        {"name": "hello", "input": {"prompt": "hi"}, "expected_output": {"echo": "hi"}, "timeout": 10000},
        {"name": "returns-error", "input": {"mode": "error"}, "timeout": 10000},
        {"name": "raises", "input": {"mode": "raise"}, "timeout": 10000},
        {"name": "wrong-answer", "input": {"prompt": "x"}, "expected_output": {"echo": "y"}, "timeout": 10000},
        {"name": "unit-mistake", "input": {"prompt": "z"}, "timeout": 30},
        {"name": "too-slow", "input": {"mode": "sleep", "seconds": 4}, "timeout": 1500}
    ], "config": {"gpuCount": 1}}"#;
    let (r, out) = validate(
        "rp-failing",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", ECHO_HANDLER),
            (".runpod/tests.json", tests_json),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{}", out.join("\n"));
    let t = tests(&r);
    assert_eq!(t.source, ".runpod/tests.json");
    assert_eq!((t.passed, t.total), (1, 6));
    let by = |n: &str| t.results.iter().find(|x| x.name == n).unwrap();
    assert_eq!(by("hello").status, TestStatus::Passed);
    let err = by("returns-error");
    assert_eq!(err.status, TestStatus::Failed);
    assert!(
        err.error
            .as_deref()
            .unwrap()
            .contains("model weights missing: /models/sdxl.safetensors"),
        "{err:#?}"
    );
    assert_eq!(
        by("raises").error.as_deref(),
        Some("the job FAILED: ValueError: prompt must not be empty")
    );
    let wrong = by("wrong-answer").error.clone().unwrap();
    assert!(
        wrong.contains("does not match expected_output {\"echo\":\"y\"}"),
        "{wrong}"
    );
    assert!(by("unit-mistake")
        .error
        .as_deref()
        .unwrap()
        .contains("did you mean 30000"));
    let slow = by("too-slow");
    assert_eq!(slow.status, TestStatus::TimedOut);
    assert_eq!(
        slow.error.as_deref(),
        Some("no answer within its 1500 ms timeout")
    );
    assert!(
        slow.duration_seconds >= 1.5 && slow.duration_seconds < 3.0,
        "{slow:#?}"
    );
    // The one-line reason names the first failing test and why.
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.starts_with(
            "test: 1/6 tests passed; `returns-error` failed: the job FAILED: model weights missing"
        ),
        "{reason}"
    );
    assert!(
        t.notes.iter().any(|n| n.contains("unit-mistake")),
        "{:?}",
        t.notes
    );
}

const STREAM_HANDLER: &str = r#"import runpod

def handler(job):
    inp = job["input"]
    for i in range(inp.get("n", 3)):
        if inp.get("fail_at") == i:
            raise ValueError(f"tokenizer exploded at chunk {i}")
        yield {"chunk": i}

runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
"#;

/// A generator handler: local mode skips it (a false pass); server mode runs it and collects
/// its chunks. One that raises makes `/runsync` answer HTTP 500, and the test says so.
#[tokio::test(flavor = "multi_thread")]
async fn generator_handlers_run_and_a_raising_one_fails() {
    let tests_json = r#"{"tests": [
        {"name": "stream", "input": {"n": 3}, "expected_output": [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]},
        {"name": "stream-raises", "input": {"n": 3, "fail_at": 1}}
    ]}"#;
    let (r, out) = validate(
        "rp-stream",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", STREAM_HANDLER),
            (".runpod/tests.json", tests_json),
        ],
        |_| {},
    )
    .await;
    let t = tests(&r);
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{}", out.join("\n"));
    assert_eq!(t.results[0].status, TestStatus::Passed, "{t:#?}");
    let raised = &t.results[1];
    assert_eq!(raised.status, TestStatus::Failed);
    let why = raised.error.as_deref().unwrap();
    assert!(why.contains("tokenizer exploded at chunk 1"), "{why}");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("`stream-raises` failed"),
        "{:?}",
        r.reason
    );
}

/// A worker that dies on import: the test step fails quoting its traceback's last line.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_crashes_on_import_fails_with_its_traceback() {
    let (r, out) = validate(
        "rp-crash",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            (
                "handler.py",
                "import runpod\nimport torch_that_is_not_installed\n",
            ),
            ("test_input.json", r#"{"input": {"prompt": "x"}}"#),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{}", out.join("\n"));
    let test = r.step(StepName::Test).unwrap();
    assert!(
        test.detail.starts_with("the worker exited with code 1 before it answered on its port; its last line: ModuleNotFoundError: No module named 'torch_that_is_not_installed'"),
        "{}",
        test.detail
    );
    assert_eq!(tests(&r).results[0].status, TestStatus::NotRun);
}

/// The Hub's layout: `.runpod/Dockerfile` is built (the root one would not build), and the
/// worker starts with the hub's preset for a required variable.
#[tokio::test(flavor = "multi_thread")]
async fn the_hub_layout_builds_runpod_dockerfile_with_its_environment() {
    let handler = "import os\nimport runpod\n\ndef handler(job):\n    return {\"model\": os.environ.get(\"MODEL_NAME\"), \"mode\": os.environ.get(\"MODE\")}\n\nrunpod.serverless.start({\"handler\": handler})\n";
    let hub = r#"{"title": "t", "config": {"containerDiskInGb": 1,
        "presets": [{"name": "small", "defaults": {"MODEL_NAME": "preset-model"}}],
        "env": [{"key": "MODEL_NAME", "input": {"name": "Model", "required": true}},
                {"key": "MODE", "input": {"default": "fast"}}]}}"#;
    let tests_json = r#"{"tests": [{"name": "env", "input": {}, "expected_output": {"model": "preset-model", "mode": "fast"}}]}"#;
    let (r, out) = validate(
        "rp-hub",
        &[
            ("Dockerfile", "FROM janitor-no-such-image:never\n"),
            (".runpod/Dockerfile", &format!("FROM {}\nCOPY worker/handler.py /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\"]\n", ensure_runpod_image())),
            ("worker/handler.py", handler),
            (".runpod/hub.json", hub),
            (".runpod/tests.json", tests_json),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{}", out.join("\n"));
    assert_eq!(tests(&r).dockerfile, ".runpod/Dockerfile");
    let pre = r.step(StepName::Preflight).unwrap();
    assert!(pre.detail.contains("1 GB of disk needed"), "{}", pre.detail);
}

/// A required variable nobody gives is not the repository's fault: `error`, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_required_variable_is_an_error_before_the_build() {
    let hub = r#"{"config": {"env": [{"key": "HF_TOKEN", "input": {"required": true}}]}}"#;
    let (r, _) = validate(
        "rp-noenv",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", ECHO_HANDLER),
            (".runpod/hub.json", hub),
            ("test_input.json", r#"{"input": {}}"#),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Error, "{r:#?}");
    let pre = r.step(StepName::Preflight).unwrap();
    assert_eq!(pre.status, StepStatus::Error);
    assert!(
        pre.detail.starts_with(
            "the worker needs the environment variable HF_TOKEN (required by .runpod/hub.json"
        ),
        "{}",
        pre.detail
    );
    assert_eq!(r.step(StepName::Build).unwrap().status, StepStatus::NotRun);
    // Given in the config, it passes.
    let (r, _) = validate(
        "rp-withenv",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", ECHO_HANDLER),
            (".runpod/hub.json", hub),
            ("test_input.json", r#"{"input": {}}"#),
        ],
        |s| s.env = vec![("HF_TOKEN".into(), "hf_x".into())],
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}");
}

/// A tests file that does not parse is the repository's mistake: failed, naming file and field.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_tests_file_fails_naming_the_field() {
    let (r, _) = validate(
        "rp-badtests",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", ECHO_HANDLER),
            (
                ".runpod/tests.json",
                r#"{"tests": [{"name": "a", "input": "not an object"}]}"#,
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(
        r.reason.as_deref(),
        Some("preflight: .runpod/tests.json: tests[0].input: must be an object (the job's input), found a string")
    );
}

/// The runpod-shaped examples (`make demo`) build from the image the tests use, at the pin.
#[test]
fn the_examples_build_from_the_pinned_runpod_image() {
    let root = janitor_testkit::workspace_root();
    let want = format!("FROM {}", janitor_testkit::runpod_image());
    for file in [
        "examples/repos/worker-basic/Dockerfile",
        "examples/repos/worker-hub/.runpod/Dockerfile",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.lines().any(|l| l == want),
            "{file} must start `{want}` (testkit/runpod-requirements.txt)"
        );
    }
}

/// The examples themselves, validated as `make demo` does: worker-basic's shape passes its
/// `test_input.json`, the Hub layout passes both tests with its preset's MODEL_NAME.
#[tokio::test(flavor = "multi_thread")]
async fn the_runpod_examples_pass() {
    ensure_runpod_image();
    let root = janitor_testkit::workspace_root().join("examples/repos");
    for name in ["worker-basic", "worker-hub"] {
        let url = format!("file://{}", root.join(name).display());
        let (r, out) = validate_url(&format!("example-{name}"), &url, |_| {}).await;
        assert_eq!(
            r.status,
            JobStatus::Succeeded,
            "{name}: {r:#?}\n{}",
            out.join("\n")
        );
        let t = tests(&r);
        assert_eq!(t.passed, t.total);
        assert!(t.total >= 1);
    }
}

/// worker-vllm's shape: the worker's own server binds port 8000 before the SDK starts. The
/// SDK's server mode gets a port no worker uses by convention, so the tests run (on a port
/// 8000 realtime port the SDK's uvicorn could not bind and the worker exited before any test).
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_own_server_takes_port_8000_is_still_tested() {
    const BUSY_8000: &str = r#"import http.server, threading
import runpod

# The worker's own engine, as `vllm serve --port 8000` is for worker-vllm.
engine = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=engine.serve_forever, daemon=True).start()
print("engine listening on 8000", flush=True)

def handler(job):
    return {"echo": job["input"].get("prompt")}

runpod.serverless.start({"handler": handler})
"#;
    let (r, out) = validate(
        "rp-port-8000",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", BUSY_8000),
            ("test_input.json", r#"{"input": {"prompt": "hi"}}"#),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{}", out.join("\n"));
    assert!(out.iter().any(|l| l.contains("engine listening on 8000")));
    let t = tests(&r);
    assert_eq!((t.passed, t.total), (1, 1));
    assert_eq!(t.realtime_port, Some(janitor_pipeline::serve::WORKER_PORT));
    assert_ne!(t.realtime_port, Some(8000));
}

/// A generator that yields `{"error": …}` (worker-vllm and worker-sglang do on any engine
/// failure): local `/runsync` answers COMPLETED, but the platform fails the job, and so does
/// the test, with that error as its cause.
#[tokio::test(flavor = "multi_thread")]
async fn a_generator_that_yields_an_error_fails_as_on_the_platform() {
    const YIELDS_ERROR: &str = r#"import runpod

def handler(job):
    yield {"token": "Hello"}
    yield {"error": "engine died: CUDA error: device-side assert triggered"}

runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
"#;
    let (r, out) = validate(
        "rp-yield-error",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", YIELDS_ERROR),
            ("test_input.json", r#"{"input": {"prompt": "hi"}}"#),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{}", out.join("\n"));
    let why = tests(&r).results[0].error.clone().unwrap();
    assert!(
        why.contains("yielded item 2 has an `error`")
            && why.contains("engine died: CUDA error: device-side assert triggered"),
        "{why}"
    );
}

/// `.github/tests.json` as runpod's test runner reads it: tests named by their
/// `endpointConfig.name`, `expectedOutput` compared and reported but not failed, and each
/// request's timeout from the workflow's `request-timeout` (3 s here, so a 4 s test times out:
/// the value is read; under the runner's default 300 s it would pass).
#[tokio::test(flavor = "multi_thread")]
async fn the_runners_tests_file_follows_the_runner() {
    let runner_tests = r#"[
        {"hardwareConfig": {"endpointConfig": {"name": "echo-a10", "gpuIds": "AMPERE_24"}},
         "input": {"prompt": "cat"}, "expectedOutput": {"echo": "dog"}},
        {"hardwareConfig": {"endpointConfig": {"name": "slow-a10"}},
         "input": {"mode": "sleep", "seconds": 4}}
    ]"#;
    let workflow = "name: CI\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: runpod/runpod-test-runner@v1.7\n        with:\n          image-tag: x\n          request-timeout: 3\n";
    let (r, out) = validate(
        "rp-runner",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", ECHO_HANDLER),
            (".github/tests.json", runner_tests),
            (".github/workflows/ci.yml", workflow),
        ],
        |_| {},
    )
    .await;
    let t = tests(&r);
    assert_eq!(t.source, ".github/tests.json");
    let names: Vec<&str> = t.results.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        ["echo-a10", "slow-a10"],
        "{t:#?}\n{}",
        out.join("\n")
    );
    // The mismatch is reported, not failed.
    assert_eq!(t.results[0].status, TestStatus::Passed, "{t:#?}");
    assert_eq!(t.results[0].output_matches, Some(false));
    // The workflow's 3 s, not 300 s.
    assert_eq!(t.results[1].status, TestStatus::TimedOut, "{t:#?}");
    assert!(
        t.notes
            .iter()
            .any(|n| n
                .contains("request-timeout` of runpod-test-runner at .github/workflows/ci.yml:10")),
        "{:?}",
        t.notes
    );
    assert_eq!(r.status, JobStatus::Failed);
}

/// The test runner's templates: each distinct `hardwareConfig` is its own worker container,
/// started with its `templateConfig.dockerArgs` and `env`. Two templates select different
/// handlers; the report says per test which command and environment it ran with, and the
/// results keep the file's order though the groups run one after the other.
#[tokio::test(flavor = "multi_thread")]
async fn each_runner_template_runs_its_own_command() {
    const GEN: &str = r#"import os, runpod
print("generator handler up", flush=True)

def handler(job):
    yield {"token": os.environ.get("MODE_WORD", "unset")}
    yield {"token": job["input"]["prompt"]}

runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
"#;
    const PLAIN: &str = r#"import os, runpod
print("plain handler up", flush=True)

def handler(job):
    return {"echo": job["input"]["prompt"], "mode": os.environ.get("MODE_WORD", "unset")}

runpod.serverless.start({"handler": handler})
"#;
    let dockerfile = format!(
        "FROM {}\nWORKDIR /\nCOPY gen.py /gen.py\nCOPY plain.py /plain.py\nCMD [\"python3\", \"-u\", \"/plain.py\"]\n",
        ensure_runpod_image()
    );
    let gen = r#"{"endpointConfig": {"name": "gen-a10", "gpuIds": "AMPERE_24", "gpuCount": 1},
                  "templateConfig": {"name": "generator", "dockerArgs": "python3 -u /gen.py --label 'two words'",
                                     "env": [{"key": "MODE_WORD", "value": "from-template"}]}}"#;
    let runner_tests = format!(
        r#"[
        {{"hardwareConfig": {gen}, "input": {{"prompt": "a"}}}},
        {{"hardwareConfig": {{"endpointConfig": {{"name": "plain"}}}}, "input": {{"prompt": "b"}}, "expectedOutput": {{"echo": "b"}}}},
        {{"hardwareConfig": {gen}, "input": {{"prompt": "c"}}}}
    ]"#
    );
    let (r, out) = validate(
        "rp-templates",
        &[
            ("Dockerfile", &dockerfile),
            ("gen.py", GEN),
            ("plain.py", PLAIN),
            (".github/tests.json", &runner_tests),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:#?}\n{}", out.join("\n"));
    let t = tests(&r);
    let names: Vec<&str> = t.results.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["gen-a10", "plain", "gen-a10 #3"]);
    let indexes: Vec<Option<u32>> = t.results.iter().map(|x| x.index).collect();
    assert_eq!(indexes, [Some(0), Some(1), Some(2)]);
    // The generator's template: its command, its environment, a generator's output.
    let g = &t.results[0];
    assert_eq!(
        g.command.as_deref(),
        Some("python3 -u /gen.py --label 'two words'")
    );
    assert_eq!(
        g.command_from.as_deref(),
        Some(".github/tests.json [0].hardwareConfig.templateConfig.dockerArgs")
    );
    assert!(
        g.env_from
            .as_deref()
            .unwrap()
            .contains(".github/tests.json [0].hardwareConfig.templateConfig.env"),
        "{g:#?}"
    );
    assert!(
        g.output.as_deref().unwrap().contains("from-template"),
        "{g:#?}"
    );
    assert_eq!(g.rule.as_deref(), Some("status"));
    assert_eq!(t.results[2].command, g.command);
    // The other: the image's own CMD, the job's environment only.
    let p = &t.results[1];
    assert_eq!(p.command.as_deref(), Some("python3 -u /plain.py"));
    assert_eq!(p.command_from.as_deref(), Some("the image's CMD"));
    assert!(
        p.output.as_deref().unwrap().contains("\"mode\":\"unset\""),
        "{p:#?}"
    );
    assert_eq!(p.output_matches, Some(true));
    assert_eq!(
        p.rule.as_deref(),
        Some("status; expectedOutput reported, not judged")
    );
    // Each handler started, each once.
    let count = |s: &str| out.iter().filter(|l| l.contains(s)).count();
    assert_eq!(count("generator handler up"), 1, "{}", out.join("\n"));
    assert_eq!(count("plain handler up"), 1);
}

const QUIRKS_HANDLER: &str = r#"import os, time
import runpod

def handler(job):
    inp = job["input"]
    if inp.get("mode") == "progress":
        runpod.serverless.progress_update(job, "half way")
        time.sleep(1)
        return {"done": True}
    if inp.get("mode") == "refresh":
        return {"refresh_worker": True}
    if inp.get("mode") == "exit":
        os._exit(3)
    return {"echo": inp.get("prompt")}

runpod.serverless.start({"handler": handler})
"#;

/// What the SDK (1.12.0) does in server mode that RunPod does not: `progress_update` logs an
/// `ERROR` for its placeholder URL (not counted, and said); a handler that returns only
/// `refresh_worker` makes the local `/runsync` answer 500 though RunPod completes the job
/// (passed, the rule says why); `os._exit` in a handler fails that test and a fresh worker runs
/// the rest, as RunPod starts a new one.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdks_server_mode_quirks_are_judged_as_runpod_would() {
    let tests_json = r#"{"tests": [
        {"name": "progress", "input": {"mode": "progress"}, "timeout": 20000},
        {"name": "refresh", "input": {"mode": "refresh"}, "timeout": 20000},
        {"name": "exits", "input": {"mode": "exit"}, "timeout": 20000},
        {"name": "after-exit", "input": {"prompt": "still here"}, "timeout": 20000}
    ]}"#;
    let (r, out) = validate(
        "rp-quirks",
        &[
            ("Dockerfile", &worker_dockerfile("handler.py")),
            ("handler.py", QUIRKS_HANDLER),
            (".runpod/tests.json", tests_json),
        ],
        |_| {},
    )
    .await;
    let all = out.join("\n");
    let t = tests(&r);
    assert_eq!(t.sdk_version.as_deref(), Some("1.12.0"), "{t:#?}");
    let by = |n: &str| t.results.iter().find(|x| x.name == n).unwrap();
    // progress_update: passes; the SDK's ERROR line is in the log but not counted.
    assert_eq!(by("progress").status, TestStatus::Passed, "{t:#?}\n{all}");
    assert!(
        all.contains("Failed to return job results. | JOB_DONE_URL"),
        "{all}"
    );
    assert_eq!(r.errors.count, 0, "{:?}", r.errors);
    assert!(
        t.notes.iter().any(|n| n.contains("SDK ERROR line(s)")),
        "{:?}",
        t.notes
    );
    // refresh_worker only: completed with no output.
    let refresh = by("refresh");
    assert_eq!(refresh.status, TestStatus::Passed, "{refresh:#?}");
    assert!(refresh
        .rule
        .as_deref()
        .unwrap()
        .contains("completed with no output"));
    // os._exit: that test fails naming the exit; a fresh worker runs the next.
    let exits = by("exits");
    assert_eq!(exits.status, TestStatus::Failed);
    assert!(
        exits
            .error
            .as_deref()
            .unwrap()
            .starts_with("the worker exited with code 3 during the test"),
        "{exits:#?}"
    );
    assert_eq!(by("after-exit").status, TestStatus::Passed, "{t:#?}\n{all}");
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("during `exits`; a fresh worker ran the tests after it")),
        "{:?}",
        t.notes
    );
    assert_eq!((t.passed, t.total), (3, 4));
    assert_eq!(r.status, JobStatus::Failed);
}

/// runpod 1.3.3 (worker-insanely-fast-whisper's pin): `/runsync` answers the result alone,
/// without a `status`. An output passes, a raised error fails with the exception.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_sdk_without_a_status_is_judged() {
    let image = janitor_testkit::ensure_old_runpod_image();
    let dockerfile = format!(
        "FROM {image}\nWORKDIR /\nCOPY handler.py /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\"]\n"
    );
    let tests_json = r#"{"tests": [
        {"name": "hello", "input": {"prompt": "hi"}, "expected_output": {"echo": "hi"}},
        {"name": "raises", "input": {"mode": "raise"}}
    ]}"#;
    let (r, out) = validate(
        "rp-old-sdk",
        &[
            ("Dockerfile", &dockerfile),
            ("handler.py", ECHO_HANDLER),
            (".runpod/tests.json", tests_json),
        ],
        |_| {},
    )
    .await;
    let t = tests(&r);
    assert_eq!(
        t.sdk_version.as_deref(),
        Some("1.3.3"),
        "{t:#?}\n{}",
        out.join("\n")
    );
    assert_eq!(
        t.results[0].status,
        TestStatus::Passed,
        "{t:#?}\n{}",
        out.join("\n")
    );
    assert_eq!(t.results[0].rule.as_deref(), Some("status+expected_output"));
    assert_eq!(
        t.results[1].error.as_deref(),
        Some("the job FAILED: ValueError: prompt must not be empty"),
        "{t:#?}"
    );
}

/// `--rp_serve_api` in the image's CMD: the SDK serves its local API on localhost:8000 instead
/// of taking jobs (on RunPod no request would be answered). Said from its log line, not left
/// to the start timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_with_rp_serve_api_is_said_plainly() {
    let dockerfile = format!(
        "FROM {}\nWORKDIR /\nCOPY handler.py /handler.py\nCMD [\"python3\", \"-u\", \"/handler.py\", \"--rp_serve_api\"]\n",
        ensure_runpod_image()
    );
    let (r, out) = validate(
        "rp-serve-api",
        &[
            ("Dockerfile", &dockerfile),
            ("handler.py", ECHO_HANDLER),
            ("test_input.json", r#"{"input": {"prompt": "hi"}}"#),
        ],
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}\n{}", out.join("\n"));
    let test = r.step(StepName::Test).unwrap();
    assert!(
        test.detail
            .starts_with("the worker's command passes --rp_serve_api"),
        "{}",
        test.detail
    );
    assert_eq!(tests(&r).results[0].status, TestStatus::NotRun);
}
