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
/// Lines of the worker's output kept to explain a crash.
const TAIL_LINES: usize = 40;

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
    fn cause(&self, since: u64) -> Option<String> {
        let fresh = usize::try_from(self.total.saturating_sub(since)).unwrap_or(usize::MAX);
        let recent: Vec<&String> = self
            .lines
            .iter()
            .rev()
            .take(fresh)
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

/// Runs the tests against the built image `tag`.
pub async fn test<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    tag: &str,
    found: &Discovered,
    tests: &[TestCase],
    probe: &dyn GpuProbe,
    scanner: &mut ErrorScanner,
) -> Tested {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
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
    };
    // The built image's own CUDA requirement (its base may have been pulled during the build).
    if spec.gpu_required {
        if let Some(facts) = engine.image(tag).await {
            if let Some(v) = preflight::image_cuda(&facts.env) {
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
    }
    let name = format!("janitor-{}-test", ctx.job.job_id);
    let mut vars = found.env.clone();
    vars.push(format!("RUNPOD_REALTIME_PORT={WORKER_PORT}"));
    let container = ContainerSpec {
        name: name.clone(),
        image: tag.to_string(),
        cmd: spec.smoke_command.clone(),
        env: vars,
        gpu: spec.gpu_required,
        labels: job_labels(ctx),
        publish: Some(WORKER_PORT),
        ..Default::default()
    };
    let tail = Mutex::new(Tail::default());
    let ended: Mutex<Option<Result<ContainerOutcome, String>>> = Mutex::new(None);
    let stop = cancel.child_token();
    let tracker = Mutex::new(Tracker::default());
    let mut on_line = |l: &str| {
        scanner.scan(l);
        sink.line(&format!("[test] {l}"));
        if let Ok(mut t) = tail.lock() {
            t.push(l);
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
            gpu_usage::sample(engine, probe, &name, &stop, &tracker).await;
        }
    };
    let driver = async {
        let started = Instant::now();
        let result = drive(
            engine,
            &name,
            tests,
            deadline,
            cancel,
            &stop,
            &ended,
            &tail,
            started,
            &mut report,
        )
        .await;
        stop.cancel();
        result
    };
    let ((), (), outcome) = tokio::join!(server, sampler, driver);
    let usage = spec
        .gpu_required
        .then(|| tracker.into_inner().unwrap_or_default().finish());
    let outcome = match outcome {
        Err(reason) => StepOutcome::stopped(reason, spec.timeout),
        Ok(None) if report.passed == report.total => StepOutcome::succeeded(format!(
            "{} from {}; cold start {:.1} s",
            report.summary(),
            report.source,
            report.cold_start_seconds.unwrap_or_default()
        )),
        Ok(None) => StepOutcome::failed(report.summary()),
        Ok(Some(start_failure)) => start_failure,
    };
    Tested {
        outcome,
        report,
        usage,
    }
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

/// Waits for the worker, then runs the tests. `Err` is a stop (deadline, interruption);
/// `Ok(Some)` a start that failed (the step's outcome); `Ok(None)` tests that ran.
#[allow(clippy::too_many_arguments)]
async fn drive<E: ContainerEngine>(
    engine: &E,
    name: &str,
    tests: &[TestCase],
    deadline: Instant,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    ended: &Mutex<Option<Result<ContainerOutcome, String>>>,
    tail: &Mutex<Tail>,
    started: Instant,
    report: &mut TestsReport,
) -> Result<Option<StepOutcome>, StopReason> {
    let start_by = deadline.min(started + START_TIMEOUT);
    let addr = match wait_ready(engine, name, start_by, deadline, cancel, stop, started).await {
        Started::Stopped(r) => return Err(r),
        Started::Failed(why) => {
            let exit = exit_words(ended);
            let cause = tail.lock().ok().and_then(|t| t.cause(0));
            let mut detail = match exit {
                Some(e) => format!("{e} before it answered on its port"),
                None => why,
            };
            if let Some(c) = cause {
                detail.push_str(&format!("; its last line: {c}"));
            }
            for t in tests {
                report
                    .results
                    .push(not_run(&t.name, "the worker did not start"));
            }
            return Ok(Some(StepOutcome::failed(detail)));
        }
        Started::Ready { addr, cold_start } => {
            report.cold_start_seconds = Some(round_ms(cold_start));
            addr
        }
    };
    for (i, t) in tests.iter().enumerate() {
        if let Some(problem) = t.timeout_problem() {
            report.results.push(TestResult {
                name: t.name.clone(),
                status: TestStatus::Failed,
                duration_seconds: 0.0,
                http_status: None,
                error: Some(problem),
                output: None,
                output_matches: None,
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
                for rest in &tests[i..] {
                    report.results.push(not_run(&rest.name, "the job was stopped"));
                }
                return Err(StopReason::Interrupted);
            }
        };
        let took = began.elapsed();
        let mut result = TestResult {
            name: t.name.clone(),
            status: TestStatus::Passed,
            duration_seconds: round_ms(took),
            http_status: None,
            error: None,
            output: None,
            output_matches: None,
        };
        let cause = || tail.lock().ok().and_then(|tl| tl.cause(since));
        match answer {
            None if Instant::now() >= deadline => {
                result.status = TestStatus::TimedOut;
                result.error = Some("stopped at the job's hard timeout".to_string());
                report.results.push(result);
                for rest in &tests[i + 1..] {
                    report
                        .results
                        .push(not_run(&rest.name, "the job's hard timeout passed"));
                }
                return Err(StopReason::Deadline);
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
                tokio::time::sleep(Duration::from_millis(200)).await;
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
                result.http_status = Some(a.status);
                let parsed: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
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
                    (200, Some(v)) => runpod::judge(v, judged),
                    (200, None) => Err(format!(
                        "/runsync answered 200 with a body that is not JSON: {}",
                        text_excerpt(&a.body)
                    )),
                    (status, _) => {
                        let mut why =
                            format!("/runsync answered HTTP {status}: {}", text_excerpt(&a.body));
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
        }
        if result.status == TestStatus::Passed {
            report.passed += 1;
        }
        report.results.push(result);
        // The worker is gone: the rest cannot run.
        if let Some(why) = exit_words(ended).filter(|_| stop.is_cancelled()) {
            for rest in &tests[i + 1..] {
                report.results.push(not_run(&rest.name, &why));
            }
            break;
        }
    }
    Ok(None)
}

fn not_run(name: &str, why: &str) -> TestResult {
    TestResult {
        name: name.to_string(),
        status: TestStatus::NotRun,
        duration_seconds: 0.0,
        http_status: None,
        error: Some(why.to_string()),
        output: None,
        output_matches: None,
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
    }
}
