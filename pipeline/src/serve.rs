//! The `test` step: the built image started once in the runpod SDK's server mode
//! (`RUNPOD_REALTIME_PORT`, published on loopback), a bounded wait for its first HTTP answer
//! (the cold start), then each test through `POST /runsync` under its own timeout, judged by
//! [`runpod::judge`]. The worker's output goes through the same sink and `ERROR` scan as every
//! other step; its GPU use is sampled meanwhile.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use janitor_model::report::{GpuUsage, TestMode, TestResult, TestStatus, TestsReport};
use janitor_model::runpod::{self, TestCase};
use janitor_services::engine::{ContainerEngine, ContainerOutcome, ContainerSpec, StopReason};
use janitor_services::gpu::GpuProbe;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::job_labels;
use crate::discover::Discovered;
use crate::gpu_usage::{self, Tracker};
use crate::http;
use crate::preflight;
use crate::scan::ErrorScanner;
use crate::steps::{round_ms, StepEnv, StepOutcome};

/// The port the SDK's server mode serves on inside the worker's container
/// (`RUNPOD_REALTIME_PORT`). RunPod itself sets none; janitord needs one, and it must be one no
/// worker binds by convention: 8000 is uvicorn's and vLLM's default (worker-vllm starts
/// `vllm serve --port 8000` before the SDK), 8080 and 3000 are common health and UI ports.
/// It lives in the container's own network namespace and is published to an ephemeral port
/// on the host's loopback only.
pub const WORKER_PORT: u16 = 47_211;
/// The longest a worker may take to answer its first request (heavy workers load many GB of
/// weights at start), within the job's own deadline.
pub const START_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the port is tried while the worker starts.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long one try may take: a connection Docker's proxy accepted while the worker started
/// can be left unanswered, and must not hold the start past its bound.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the worker's log may lag its HTTP answer.
const LOG_LAG: Duration = Duration::from_secs(1);
/// How long the engine may take to report a worker that died while answering.
const EXIT_LAG: Duration = Duration::from_secs(3);
/// The last line of the traceback the SDK's local /runsync fails with when it finds no
/// `output`, and the source line that fails for a job that COMPLETED with none (runpod 1.12.0's
/// `_sim_runsync`; a generator that raised fails elsewhere, on its stream item).
const NO_OUTPUT: &str = "KeyError: 'output'";
const NO_OUTPUT_AT: &str = r#""status": "COMPLETED", "output": job_output["output"]"#;
/// uvicorn's line before a traceback of the SDK's local server.
const SERVER_TRACEBACK: &str = "Exception in ASGI application";
/// Lines of the worker's output kept to explain a crash.
const TAIL_LINES: usize = 200;

/// What the step produced besides its outcome.
pub struct Tested {
    pub outcome: StepOutcome,
    pub report: TestsReport,
    pub usage: Option<GpuUsage>,
}

/// The worker's last lines, and where the current test's began.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    total: u64,
}

impl Tail {
    fn push(&mut self, line: &str) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.chars().take(500).collect());
        self.total += 1;
    }

    /// The line that best explains a failure among those since `since`: the last one that
    /// names an error or exception, else the last one.
    /// Whether a line since `since` (among those kept) contains `needle`.
    fn since_has(&self, since: u64, needle: &str) -> bool {
        let fresh = usize::try_from(self.total.saturating_sub(since)).unwrap_or(usize::MAX);
        self.lines
            .iter()
            .rev()
            .take(fresh)
            .any(|l| l.contains(needle))
    }

    fn cause(&self, since: u64) -> Option<String> {
        let fresh = usize::try_from(self.total.saturating_sub(since)).unwrap_or(usize::MAX);
        let mut lines: Vec<&String> = self.lines.iter().rev().take(fresh).collect();
        lines.reverse();
        // uvicorn's traceback of the SDK's own server (a local /runsync that failed on an
        // error item) says nothing about the worker: only what came before it.
        if let Some(at) = lines.iter().position(|l| l.contains(SERVER_TRACEBACK)) {
            lines.truncate(at);
        }
        let recent: Vec<&String> = lines
            .into_iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .collect();
        // A Python exception line (`ModuleNotFoundError: …`) first, then any line naming an
        // error, then the last line.
        let exception = |l: &&&String| {
            l.trim().split_once(": ").is_some_and(|(head, _)| {
                !head.contains(' ') && (head.ends_with("Error") || head.ends_with("Exception"))
            })
        };
        let names_error = |l: &&&String| {
            ["ERROR", "Error", "Exception", "Traceback"]
                .iter()
                .any(|w| l.contains(w))
        };
        recent
            .iter()
            .find(exception)
            .or_else(|| recent.iter().find(names_error))
            .or(recent.first())
            .map(|l| without_sdk_prefix(l.trim()).to_string())
    }
}

/// A runpod SDK log line without its `LEVEL  | job-id | ` prefix.
fn without_sdk_prefix(line: &str) -> &str {
    let mut parts = line.splitn(3, " | ");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(level), Some(_job), Some(rest))
            if matches!(level.trim(), "ERROR" | "WARN" | "INFO" | "DEBUG") =>
        {
            rest
        }
        _ => line,
    }
}

enum Started {
    Ready {
        addr: SocketAddr,
        cold_start: Duration,
    },
    Failed(String),
    Stopped(StopReason),
}

/// One worker container and the tests it runs: the whole file in one container, or one group
/// of `.github/tests.json` (its template's command and environment).
struct Worker<'t> {
    /// The group's label, when the tests are grouped.
    label: Option<String>,
    cmd: Option<Vec<String>>,
    /// The command as the report says it, and where it came from.
    command: String,
    command_from: String,
    env: Vec<String>,
    env_from: String,
    tests: Vec<(usize, &'t TestCase)>,
}

/// What the worker's output said about the SDK while it ran.
#[derive(Default)]
struct Heard {
    /// `--- Starting Serverless Worker |  Version 1.12.0 ---`.
    sdk_version: Option<String>,
    /// `Starting API server.` without `for realtime`: `--rp_serve_api` took the SDK out of
    /// server mode on our port.
    serve_api: bool,
    /// Answers the SDK's local server failed (HTTP 500) where RunPod completes the job; each
    /// left uvicorn's `ERROR: Exception in ASGI application` in the output.
    local_500s: u32,
}

impl Heard {
    fn hear(&mut self, line: &str) {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("--- Starting Serverless Worker") {
            let v = rest
                .split("Version")
                .nth(1)
                .map(|v| v.trim().trim_end_matches('-').trim().to_string())
                .filter(|v| !v.is_empty() && v.len() < 40);
            if v.is_some() {
                self.sdk_version = v;
            }
        }
        if l.ends_with("Starting API server.") {
            self.serve_api = true;
        }
    }
}

/// Why a worker started with `--rp_serve_api` is not tested.
const SERVE_API: &str = "the worker's command passes --rp_serve_api: the SDK then serves its local test API on --rp_api_host:--rp_api_port (localhost:8000 unless given) and never takes a job, so on RunPod no request would be answered; remove --rp_serve_api from the command (RunPod sends jobs through its queue)";

/// The image's command in words, for the report.
fn words(w: &[String]) -> String {
    w.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The containers the tests need: one per `.github/tests.json` group, else one for all.
fn workers<'t>(
    found: &Discovered,
    tests: &'t [TestCase],
    smoke: Option<&Vec<String>>,
    image_cmd: Option<&[String]>,
) -> Vec<Worker<'t>> {
    let env_from = if found.env.is_empty() {
        "none".to_string()
    } else {
        "the job's environment".to_string()
    };
    let default_cmd = || match (smoke, image_cmd) {
        (Some(c), _) => (Some(c.clone()), words(c), "smoke_command".to_string()),
        (None, Some(c)) => (None, words(c), "the image's CMD".to_string()),
        (None, None) => (None, "CMD".to_string(), "the image's CMD".to_string()),
    };
    if found.groups.is_empty() {
        let (cmd, command, command_from) = default_cmd();
        return vec![Worker {
            label: None,
            cmd,
            command,
            command_from,
            env: found.env.clone(),
            env_from,
            tests: tests.iter().enumerate().collect(),
        }];
    }
    found
        .groups
        .iter()
        .map(|g| {
            let (cmd, command, command_from) = match (&g.command, &g.command_from) {
                (Some(c), from) => (Some(c.clone()), words(c), from.clone().unwrap_or_default()),
                (None, _) => default_cmd(),
            };
            // The template's variables over the job's.
            let mut env: Vec<String> = found
                .env
                .iter()
                .filter(|kv| {
                    let key = kv.split('=').next().unwrap_or("");
                    !g.env.iter().any(|(k, _)| k == key)
                })
                .cloned()
                .collect();
            env.extend(g.env.iter().map(|(k, v)| format!("{k}={v}")));
            Worker {
                label: Some(g.label.clone()),
                cmd,
                command,
                command_from,
                env,
                env_from: g
                    .env_from
                    .as_ref()
                    .map_or(env_from.clone(), |f| format!("{env_from} and {f}")),
                tests: g
                    .tests
                    .iter()
                    .filter_map(|&i| tests.get(i).map(|t| (i, t)))
                    .collect(),
            }
        })
        .collect()
}

/// Runs the tests against the built image `tag`.
pub async fn test<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    tag: &str,
    found: &Discovered,
    tests: &[TestCase],
    probe: &dyn GpuProbe,
    scanner: &mut ErrorScanner,
) -> Tested {
    let spec = &env.ctx.job.spec;
    let mut report = TestsReport {
        source: found.source.clone(),
        mode: TestMode::Server,
        dockerfile: found.dockerfile.clone(),
        cold_start_seconds: None,
        passed: 0,
        total: u32::try_from(tests.len()).unwrap_or(u32::MAX),
        results: Vec::new(),
        notes: found.notes.clone(),
        realtime_port: Some(WORKER_PORT),
        sdk_version: None,
    };
    let facts = env.engine.image(tag).await;
    // The built image's own CUDA requirement (its base may have been pulled during the build).
    if spec.gpu_required {
        if let Some(v) = facts.as_ref().and_then(|f| preflight::image_cuda(&f.env)) {
            let driver = probe.inventory().cuda_version;
            if let Err(e) = preflight::cuda_fits(v, "the image", driver.as_deref()) {
                return Tested {
                    outcome: StepOutcome::error(e),
                    report,
                    usage: None,
                };
            }
        }
    }
    let image_cmd = facts.as_ref().map(|f| {
        f.entrypoint
            .iter()
            .chain(f.cmd.iter())
            .cloned()
            .collect::<Vec<_>>()
    });
    let workers = workers(
        found,
        tests,
        spec.smoke_command.as_ref(),
        image_cmd.as_deref(),
    );
    let grouped = workers.len() > 1;
    let tracker = Mutex::new(Tracker::default());
    let mut first_failure: Option<String> = None;
    let mut stopped: Option<StopReason> = None;
    let mut runs = 0usize;
    let ignored_before = scanner.outside_runpod;
    'workers: for w in &workers {
        let from = report.results.len();
        let mut next = 0;
        while next < w.tests.len() {
            let name = match runs {
                0 => format!("janitor-{}-test", env.ctx.job.job_id),
                n => format!("janitor-{}-test-{n}", env.ctx.job.job_id),
            };
            runs += 1;
            let ran = run_worker(
                env,
                tag,
                &name,
                w,
                &w.tests[next..],
                found.gpu_count,
                probe,
                scanner,
                &tracker,
                &mut report,
            )
            .await;
            match ran {
                Ran::Stopped(reason) => {
                    stopped = Some(reason);
                    break 'workers;
                }
                Ran::StartFailed(detail) => {
                    let detail = match &w.label {
                        Some(l) if grouped => format!("group `{l}`: {detail}"),
                        _ => detail,
                    };
                    first_failure.get_or_insert(detail);
                    break;
                }
                Ran::All => break,
                Ran::Died { after, why } => {
                    next += after;
                    if next < w.tests.len() {
                        report.notes.push(format!(
                            "{why} during `{}`; a fresh worker ran the tests after it, as RunPod starts a new worker",
                            w.tests[next - 1].1.name
                        ));
                    }
                }
            }
        }
        for r in &mut report.results[from..] {
            r.command = Some(w.command.clone());
            r.command_from = Some(w.command_from.clone());
            r.env_from = Some(w.env_from.clone());
        }
    }
    // The file's order, whatever order the groups ran in.
    report.results.sort_by_key(|r| r.index);
    let ignored = scanner.outside_runpod - ignored_before;
    if ignored > 0 {
        report.notes.push(format!(
            "{ignored} SDK ERROR line(s) not counted: outside RunPod the SDK posts progress_update and streamed results to a placeholder URL (`Failed to return job results. | JOB_DONE_URL…`), and its local /runsync fails a job with no output (`Exception in ASGI application`); on RunPod neither happens"
        ));
    }
    let usage = spec
        .gpu_required
        .then(|| tracker.into_inner().unwrap_or_default().finish());
    let outcome = match (stopped, first_failure) {
        (Some(reason), _) => StepOutcome::stopped(reason, spec.timeout),
        (None, Some(detail)) => StepOutcome::failed(detail),
        (None, None) if report.passed == report.total => StepOutcome::succeeded(format!(
            "{} from {}; cold start {:.1} s",
            report.summary(),
            report.source,
            report.cold_start_seconds.unwrap_or_default()
        )),
        (None, None) => StepOutcome::failed(report.summary()),
    };
    Tested {
        outcome,
        report,
        usage,
    }
}

/// How one worker container's run ended.
enum Ran {
    /// Every test it was given ran.
    All,
    /// It exited during a test: `after` tests ran (the last one failed with it).
    Died {
        after: usize,
        why: String,
    },
    /// It never answered; its tests are `not_run`. The step's detail.
    StartFailed(String),
    Stopped(StopReason),
}

/// Starts one worker container and runs `tests` against it.
#[allow(clippy::too_many_arguments)]
async fn run_worker<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    tag: &str,
    name: &str,
    w: &Worker<'_>,
    tests: &[(usize, &TestCase)],
    gpu_count: Option<u64>,
    probe: &dyn GpuProbe,
    scanner: &mut ErrorScanner,
    tracker: &Mutex<Tracker>,
    report: &mut TestsReport,
) -> Ran {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
    // janitord's port, never one the repository's environment names.
    let mut vars: Vec<String> = w
        .env
        .iter()
        .filter(|kv| !kv.starts_with("RUNPOD_REALTIME_PORT="))
        .cloned()
        .collect();
    vars.push(format!("RUNPOD_REALTIME_PORT={WORKER_PORT}"));
    let container = ContainerSpec {
        name: name.to_string(),
        image: tag.to_string(),
        cmd: w.cmd.clone(),
        env: vars,
        gpu: spec.gpu_required,
        gpu_count: gpu_count.and_then(|n| u32::try_from(n).ok()),
        labels: job_labels(ctx),
        publish: Some(WORKER_PORT),
        ..Default::default()
    };
    // A command that names --rp_serve_api is not a worker RunPod can send jobs to.
    if w.cmd
        .as_ref()
        .is_some_and(|c| c.iter().any(|a| a == "--rp_serve_api"))
    {
        for (i, t) in tests {
            report.results.push(not_run(
                *i,
                &t.name,
                "the worker's command passes --rp_serve_api",
            ));
        }
        return Ran::StartFailed(SERVE_API.to_string());
    }
    let tail = Mutex::new(Tail::default());
    let heard = Mutex::new(Heard::default());
    let ended: Mutex<Option<Result<ContainerOutcome, String>>> = Mutex::new(None);
    let stop = cancel.child_token();
    let mut on_line = |l: &str| {
        scanner.scan(l);
        sink.line(&format!("[test] {l}"));
        if let Ok(mut t) = tail.lock() {
            t.push(l);
        }
        if let Ok(mut h) = heard.lock() {
            h.hear(l);
            // Server mode on the SDK's own port: ours will never answer.
            if h.serve_api {
                stop.cancel();
            }
        }
    };
    let server = async {
        let o = engine
            .run(&container, deadline, ctx.graces, &stop, &mut on_line)
            .await;
        if let Ok(mut e) = ended.lock() {
            *e = Some(o.map_err(|e| e.to_string()));
        }
        // The worker is gone: the tests cannot go on.
        stop.cancel();
    };
    let sampler = async {
        if spec.gpu_required {
            gpu_usage::sample(engine, probe, name, &stop, tracker).await;
        }
    };
    let driver = async {
        let started = Instant::now();
        let result = drive(
            engine, name, tests, deadline, cancel, &stop, &ended, &tail, &heard, started, report,
        )
        .await;
        stop.cancel();
        result
    };
    let ((), (), ran) = tokio::join!(server, sampler, driver);
    if let Ok(h) = heard.lock() {
        if report.sdk_version.is_none() {
            report.sdk_version = h.sdk_version.clone();
        }
        scanner.forgive(SERVER_TRACEBACK, h.local_500s);
    }
    ran
}

/// The exit of a worker that ended on its own, in words.
fn exit_words(ended: &Mutex<Option<Result<ContainerOutcome, String>>>) -> Option<String> {
    let e = ended.lock().ok()?;
    match e.as_ref()? {
        Ok(o) => Some(match o.exit_code {
            Some(c) => format!("the worker exited with code {c}"),
            None => "the worker stopped".to_string(),
        }),
        Err(err) => Some(format!("the worker could not run: {err}")),
    }
}

/// The rule a test is judged by, as the report names it.
fn rule(t: &TestCase) -> &'static str {
    match (&t.expected_output, t.expectation_advisory) {
        (Some(_), false) => "status+expected_output",
        (Some(_), true) => "status; expectedOutput reported, not judged",
        (None, _) => "status",
    }
}

/// Waits for the worker, then runs the tests.
#[allow(clippy::too_many_arguments)]
async fn drive<E: ContainerEngine>(
    engine: &E,
    name: &str,
    tests: &[(usize, &TestCase)],
    deadline: Instant,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    ended: &Mutex<Option<Result<ContainerOutcome, String>>>,
    tail: &Mutex<Tail>,
    heard: &Mutex<Heard>,
    started: Instant,
    report: &mut TestsReport,
) -> Ran {
    let start_by = deadline.min(started + START_TIMEOUT);
    let addr = match wait_ready(engine, name, start_by, deadline, cancel, stop, started).await {
        Started::Stopped(r) => return Ran::Stopped(r),
        Started::Failed(why) => {
            let serve_api = heard.lock().is_ok_and(|h| h.serve_api);
            let detail = if serve_api {
                SERVE_API.to_string()
            } else {
                let exit = exit_words(ended);
                let cause = tail.lock().ok().and_then(|t| t.cause(0));
                let mut detail = match exit {
                    Some(e) => format!("{e} before it answered on its port"),
                    None => why,
                };
                if let Some(c) = cause {
                    detail.push_str(&format!("; its last line: {c}"));
                }
                detail
            };
            for (i, t) in tests {
                report
                    .results
                    .push(not_run(*i, &t.name, "the worker did not start"));
            }
            return Ran::StartFailed(detail);
        }
        Started::Ready { addr, cold_start } => {
            report
                .cold_start_seconds
                .get_or_insert(round_ms(cold_start));
            addr
        }
    };
    for (k, (index, t)) in tests.iter().enumerate() {
        let index = u32::try_from(*index).ok();
        if let Some(problem) = t.timeout_problem() {
            report.results.push(TestResult {
                name: t.name.clone(),
                status: TestStatus::Failed,
                error: Some(problem),
                index,
                rule: Some("timeout".to_string()),
                ..TestResult::default()
            });
            continue;
        }
        let since = tail.lock().map(|t| t.total).unwrap_or(0);
        let limit = Duration::from_millis(t.timeout_ms.unwrap_or(runpod::DEFAULT_TEST_TIMEOUT_MS));
        let until = (Instant::now() + limit).min(deadline);
        let began = Instant::now();
        let body = runpod::runsync_body(&t.input);
        let answer = tokio::select! {
            a = http::request(addr, "POST", "/runsync", body) => Some(a),
            () = tokio::time::sleep_until(until) => None,
            () = cancel.cancelled() => {
                for (i, rest) in &tests[k..] {
                    report.results.push(not_run(*i, &rest.name, "the job was stopped"));
                }
                return Ran::Stopped(StopReason::Interrupted);
            }
        };
        let took = began.elapsed();
        let mut result = TestResult {
            name: t.name.clone(),
            status: TestStatus::Passed,
            duration_seconds: round_ms(took),
            index,
            rule: Some(rule(t).to_string()),
            ..TestResult::default()
        };
        let cause = || tail.lock().ok().and_then(|tl| tl.cause(since));
        match answer {
            None if Instant::now() >= deadline => {
                result.status = TestStatus::TimedOut;
                result.error = Some("stopped at the job's hard timeout".to_string());
                report.results.push(result);
                for (i, rest) in &tests[k + 1..] {
                    report
                        .results
                        .push(not_run(*i, &rest.name, "the job's hard timeout passed"));
                }
                return Ran::Stopped(StopReason::Deadline);
            }
            None => {
                result.status = TestStatus::TimedOut;
                result.error = Some(format!(
                    "no answer within its {} ms timeout",
                    limit.as_millis()
                ));
            }
            Some(Err(e)) => {
                result.status = TestStatus::Failed;
                // Give the engine a moment to report a worker that died mid-test.
                let until = Instant::now() + EXIT_LAG;
                while Instant::now() < until && exit_words(ended).is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let mut why = match exit_words(ended) {
                    Some(exit) => format!("{exit} during the test"),
                    None => format!("no answer from /runsync: {e}"),
                };
                if let Some(c) = cause() {
                    why.push_str(&format!("; its last line: {c}"));
                }
                result.error = Some(why);
            }
            Some(Ok(a)) => {
                // The worker's log lags its answer: give the traceback behind a 500 a moment
                // to arrive, since it says whether RunPod would have completed the job.
                if a.status == 500 {
                    let until = Instant::now() + LOG_LAG;
                    while Instant::now() < until
                        && !tail.lock().is_ok_and(|tl| tl.since_has(since, NO_OUTPUT))
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                judge_answer(t, &a, &mut result, tail, heard, since);
            }
        }
        if result.status == TestStatus::Passed {
            report.passed += 1;
        }
        report.results.push(result);
        // The worker is gone: a fresh one runs the rest, as RunPod would start one.
        if let Some(why) = exit_words(ended) {
            return Ran::Died { after: k + 1, why };
        }
    }
    Ran::All
}

/// Judges an HTTP answer of `/runsync` into `result`.
fn judge_answer(
    t: &TestCase,
    a: &http::Answer,
    result: &mut TestResult,
    tail: &Mutex<Tail>,
    heard: &Mutex<Heard>,
    since: u64,
) {
    result.http_status = Some(a.status);
    let cause = || tail.lock().ok().and_then(|tl| tl.cause(since));
    let mut parsed: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
    // A handler that returns `{}` or only `refresh_worker`: on RunPod the job COMPLETES with
    // no output; the SDK's local /runsync cannot say so and answers 500 (`KeyError: 'output'`
    // in `_sim_runsync`, runpod 1.12.0).
    let no_output = a.status == 500
        && tail
            .lock()
            .is_ok_and(|tl| tl.since_has(since, NO_OUTPUT) && tl.since_has(since, NO_OUTPUT_AT));
    if no_output {
        if let Ok(mut h) = heard.lock() {
            h.local_500s += 1;
        }
        parsed = Some(serde_json::json!({"status": "COMPLETED"}));
        result.rule = Some(format!(
            "{}; the job completed with no output (the SDK's local /runsync answers that with HTTP 500, RunPod with COMPLETED)",
            rule(t)
        ));
    }
    if let Some(out) = parsed.as_ref().and_then(|v| v.get("output")) {
        result.output = Some(runpod::excerpt(out));
    }
    // The runner's `expectedOutput` is compared and reported, never judged.
    let judged = t
        .expected_output
        .as_ref()
        .filter(|_| !t.expectation_advisory);
    if let (true, Some(want), Some(v)) =
        (t.expectation_advisory, t.expected_output.as_ref(), &parsed)
    {
        result.output_matches = Some(runpod::expectation_met(v, want));
    }
    let verdict = match (a.status, &parsed) {
        (_, Some(v)) if no_output => runpod::judge(v, judged),
        (200, Some(v)) => runpod::judge(v, judged),
        (200, None) => Err(format!(
            "/runsync answered 200 with a body that is not JSON: {}",
            text_excerpt(&a.body)
        )),
        (404, _) => {
            let sdk = heard
                .lock()
                .ok()
                .and_then(|h| h.sdk_version.clone())
                .map_or(String::new(), |v| format!(" (it runs runpod {v})"));
            Err(format!(
                "/runsync answered HTTP 404: this worker's runpod SDK has no local /runsync{sdk}; it came in runpod 0.10, and answers with a status from 1.5: pin runpod 1.5 or later"
            ))
        }
        (status, _) => {
            let mut why = format!("/runsync answered HTTP {status}: {}", text_excerpt(&a.body));
            if let Some(c) = cause() {
                why.push_str(&format!("; the worker's last line: {c}"));
            }
            Err(why)
        }
    };
    if let Err(why) = verdict {
        result.status = TestStatus::Failed;
        result.error = Some(why);
    }
}

fn not_run(index: usize, name: &str, why: &str) -> TestResult {
    TestResult {
        name: name.to_string(),
        status: TestStatus::NotRun,
        error: Some(why.to_string()),
        index: u32::try_from(index).ok(),
        ..TestResult::default()
    }
}

fn text_excerpt(body: &[u8]) -> String {
    runpod::excerpt(&serde_json::Value::String(
        String::from_utf8_lossy(body).into_owned(),
    ))
}

/// Waits until the worker answers HTTP on its published port.
async fn wait_ready<E: ContainerEngine>(
    engine: &E,
    name: &str,
    start_by: Instant,
    deadline: Instant,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    started: Instant,
) -> Started {
    loop {
        if cancel.is_cancelled() {
            return Started::Stopped(StopReason::Interrupted);
        }
        if stop.is_cancelled() {
            return Started::Failed(
                "the worker stopped before it answered on its port".to_string(),
            );
        }
        let now = Instant::now();
        if now >= deadline {
            return Started::Stopped(StopReason::Deadline);
        }
        if now >= start_by {
            return Started::Failed(format!(
                "the worker did not answer on port {WORKER_PORT} within {} s of its start (RUNPOD_REALTIME_PORT server mode)",
                START_TIMEOUT.as_secs().min(start_by.saturating_duration_since(started).as_secs())
            ));
        }
        let published = tokio::time::timeout(PROBE_TIMEOUT, engine.published(name, WORKER_PORT));
        if let Ok(Ok(Some(addr))) = published.await {
            if let Ok(true) = tokio::time::timeout(PROBE_TIMEOUT, http::answers(addr)).await {
                return Started::Ready {
                    addr,
                    cold_start: started.elapsed(),
                };
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sdk_without_runsync_is_said_with_its_version() {
        let tail = Mutex::new(Tail::default());
        let heard = Mutex::new(Heard::default());
        heard
            .lock()
            .unwrap()
            .hear("--- Starting Serverless Worker |  Version 0.9.12 ---");
        let t = TestCase {
            name: "t".into(),
            input: serde_json::json!({}),
            timeout_ms: None,
            expected_output: None,
            expectation_advisory: false,
        };
        let mut result = TestResult::default();
        let a = http::Answer {
            status: 404,
            body: br#"{"detail":"Not Found"}"#.to_vec(),
        };
        judge_answer(&t, &a, &mut result, &tail, &heard, 0);
        assert_eq!(result.status, TestStatus::Failed);
        let why = result.error.unwrap();
        assert!(
            why.contains("has no local /runsync (it runs runpod 0.9.12)")
                && why.contains("pin runpod 1.5 or later"),
            "{why}"
        );
        // --rp_serve_api's line, from 1.12.0 and from 1.3.3.
        for line in ["INFO   | Starting API server.", "Starting API server."] {
            let mut h = Heard::default();
            h.hear(line);
            assert!(h.serve_api, "{line}");
        }
        let mut h = Heard::default();
        h.hear("INFO   | Starting API server for realtime on port 47211.");
        assert!(!h.serve_api);
    }

    #[test]
    fn the_cause_is_the_last_error_line_since_the_test_began() {
        let mut t = Tail::default();
        t.push("INFO:     Uvicorn running on http://0.0.0.0:8000");
        let since = t.total;
        t.push("INFO   | test-1 | Started.");
        t.push("ERROR  | test-1 | tokenizer exploded at chunk 1");
        t.push("INFO:     127.0.0.1:4000 - \"POST /runsync\" 500");
        assert_eq!(
            t.cause(since).as_deref(),
            Some("tokenizer exploded at chunk 1")
        );
        // Nothing naming an error: the last line.
        let mut quiet = Tail::default();
        quiet.push("loading weights");
        quiet.push("Killed");
        assert_eq!(quiet.cause(0).as_deref(), Some("Killed"));
        assert_eq!(without_sdk_prefix("a | b"), "a | b");
        // The exception, not the server's words after it.
        let mut crash = Tail::default();
        crash.push("Traceback (most recent call last):");
        crash.push("ModuleNotFoundError: No module named 'torch'");
        crash.push("ERROR:    Application startup failed. Exiting.");
        assert_eq!(
            crash.cause(0).as_deref(),
            Some("ModuleNotFoundError: No module named 'torch'")
        );
        // A generator that raised: the SDK's line, not its local server's traceback after it.
        let mut gen = Tail::default();
        gen.push("ERROR  | test-1 | tokenizer exploded at chunk 1");
        gen.push("ERROR:    Exception in ASGI application");
        gen.push("Traceback (most recent call last):");
        gen.push("KeyError: 'output'");
        assert_eq!(
            gen.cause(0).as_deref(),
            Some("tokenizer exploded at chunk 1")
        );
    }
}
