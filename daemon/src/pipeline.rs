//! One job, start to end: clone, build, run, GPU check, agent. Shared by `janitord` and
//! `janitorctl run --local`; it never talks to AWS and always returns a report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use janitor_model::job::Job;
use janitor_model::names::{self, CloneSource};
use janitor_model::report::{
    CacheInfo, DiskInfo, ErrorLines, GpuInfo, InstanceInfo, JobStatus, LogRef, Report, StepName,
    StepReport, StepStatus, Timings, REPORT_SCHEMA,
};
use regex::Regex;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::docker::{
    BuildSpec, ContainerSpec, Engine, Graces, RegistryCredentials, StopReason, INSTANCE_LABEL,
};
use crate::logs::LogSink;

/// How many unexpected `ERROR` lines a report quotes.
pub const ERROR_LINES_KEPT: usize = 10;
/// The file an agent writes its JSON findings to, inside its `/janitor` mount.
pub const AGENT_OUTPUT: &str = "agent.json";
/// At most this much agent output is merged into the report.
const AGENT_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// Everything the pipeline needs besides the engine and the log sink.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job: Job,
    pub attempt: u32,
    pub instance: InstanceInfo,
    /// Job workspaces are made under here (on the cache volume on real instances).
    pub work_root: PathBuf,
    /// Between SIGTERM and SIGKILL when a container must stop.
    pub graces: Graces,
    pub allow_local_repos: bool,
    pub log_ref: Option<LogRef>,
    /// Credentials for pulling the agent image, when its registry needs them (ECR).
    pub agent_credentials: Option<RegistryCredentials>,
}

/// Finds `ERROR` lines that none of the job's `expected_errors` patterns explain.
pub struct ErrorScanner {
    word: Regex,
    expected: Vec<Regex>,
    found: ErrorLines,
}

impl ErrorScanner {
    /// Patterns were validated when the job was decoded; one that still fails to compile is
    /// ignored rather than failing the job.
    pub fn new(expected: &[String]) -> Self {
        // A literal pattern, covered by the tests below.
        #[allow(clippy::expect_used)]
        let word = Regex::new(r"\bERROR\b").expect("static regex");
        ErrorScanner {
            word,
            expected: expected.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            found: ErrorLines::default(),
        }
    }

    pub fn scan(&mut self, line: &str) {
        if self.word.is_match(line) && !self.expected.iter().any(|r| r.is_match(line)) {
            self.found.count += 1;
            if self.found.first.len() < ERROR_LINES_KEPT {
                self.found.first.push(line.chars().take(1000).collect());
            }
        }
    }

    pub fn into_lines(self) -> ErrorLines {
        self.found
    }
}

/// Labels on a job's containers: restart recovery reads them to record the crashed attempt.
pub fn job_labels(ctx: &JobContext) -> HashMap<String, String> {
    HashMap::from([
        ("janitor.job_id".to_string(), ctx.job.job_id.clone()),
        ("janitor.run_id".to_string(), ctx.job.run_id.clone()),
        ("janitor.attempt".to_string(), ctx.attempt.to_string()),
        (INSTANCE_LABEL.to_string(), ctx.instance.id.clone()),
    ])
}

/// The image tag a repository builds to: one per repository, so rebuilds replace it.
pub fn image_tag(org: &str, name: &str) -> String {
    let clean = |s: &str| {
        let lowered: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let trimmed = lowered.trim_matches('-').to_string();
        if trimmed.is_empty() {
            "x".to_string()
        } else {
            trimmed
        }
    };
    format!("janitor/{}/{}:latest", clean(org), clean(name))
}

struct Steps {
    list: Vec<StepReport>,
}

impl Steps {
    fn record(
        &mut self,
        name: StepName,
        status: StepStatus,
        started: Instant,
        exit_code: Option<i64>,
        detail: impl Into<String>,
    ) {
        self.list.push(StepReport {
            name,
            status,
            duration_seconds: round_ms(started.elapsed()),
            exit_code,
            detail: detail.into(),
        });
    }

    fn not_run(&mut self, name: StepName, why: &str) {
        self.list.push(StepReport {
            name,
            status: StepStatus::NotRun,
            duration_seconds: 0.0,
            exit_code: None,
            detail: why.to_string(),
        });
    }

    fn stopped(&self) -> bool {
        self.list
            .iter()
            .any(|s| matches!(s.status, StepStatus::TimedOut | StepStatus::Interrupted))
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn stop_status(reason: StopReason) -> StepStatus {
    match reason {
        StopReason::Deadline => StepStatus::TimedOut,
        StopReason::Interrupted => StepStatus::Interrupted,
    }
}

fn stop_detail(reason: StopReason, timeout: Duration) -> String {
    match reason {
        StopReason::Deadline => format!(
            "stopped at the job's {} hard timeout",
            janitor_model::duration::format(timeout)
        ),
        StopReason::Interrupted => "stopped: the instance is being interrupted".to_string(),
    }
}

/// Runs the job and returns its report. Never panics on the job's input; an engine that cannot
/// be reached fails the step that needed it.
#[tracing::instrument(skip_all, fields(job_id = %ctx.job.job_id, repo = %ctx.job.spec.repo.full_name()))]
pub async fn run_job(
    engine: &Engine,
    ctx: &JobContext,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
) -> Report {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let spec = &ctx.job.spec;
    let deadline = clock + spec.timeout;
    let job_dir = ctx.work_root.join(&ctx.job.job_id);
    let repo_dir = job_dir.join("repo");
    let io_dir = job_dir.join("janitor");
    let free_before = free_bytes(&ctx.work_root);
    let mut steps = Steps { list: Vec::new() };
    let mut scanner = ErrorScanner::new(&spec.expected_errors);
    let mut cache = CacheInfo::default();
    let mut gpu = None;
    let mut agent_output = None;

    // Start clean: a directory left by an earlier attempt on this instance is stale.
    let _ = tokio::fs::remove_dir_all(&job_dir).await;
    let prepared = tokio::fs::create_dir_all(&io_dir).await;

    // clone
    let t = Instant::now();
    let cloned = match prepared {
        Err(e) => {
            steps.record(
                StepName::Clone,
                StepStatus::Failed,
                t,
                None,
                format!("cannot create the workspace {}: {e}", job_dir.display()),
            );
            false
        }
        Ok(()) => {
            let (status, detail) = clone(ctx, &repo_dir, deadline, cancel, sink).await;
            let ok = status == StepStatus::Succeeded;
            steps.record(StepName::Clone, status, t, None, detail);
            ok
        }
    };

    // build
    let tag = image_tag(&spec.repo.organization, &spec.repo.name);
    let built = if !cloned {
        steps.not_run(StepName::Build, "the clone did not succeed");
        false
    } else {
        let t = Instant::now();
        let dockerfile = spec.dockerfile.as_deref().unwrap_or("Dockerfile");
        if !repo_dir.join(dockerfile).is_file() {
            steps.record(StepName::Build, StepStatus::Failed, t, None, format!("no Dockerfile at `{dockerfile}` in the repository (set `dockerfile:` for another path)"));
            false
        } else {
            // Only stable labels: a per-job label would make the last build step miss the cache.
            let labels = HashMap::from([("janitor.repo".to_string(), spec.repo.full_name())]);
            let mut on_line = |l: &str| sink.line(&format!("[build] {l}"));
            let build = BuildSpec {
                context_dir: &repo_dir,
                dockerfile,
                tag: &tag,
                labels,
            };
            match engine.build(&build, deadline, cancel, &mut on_line).await {
                Err(e) => {
                    steps.record(StepName::Build, StepStatus::Failed, t, None, e.to_string());
                    false
                }
                Ok(b) => {
                    cache.hits = b.cache_hits;
                    cache.steps = b.steps;
                    let cached =
                        format!("{} of {} steps from the layer cache", b.cache_hits, b.steps);
                    match (b.stopped, b.error) {
                        (Some(reason), _) => {
                            steps.record(
                                StepName::Build,
                                stop_status(reason),
                                t,
                                None,
                                stop_detail(reason, spec.timeout),
                            );
                            false
                        }
                        (None, Some(err)) => {
                            steps.record(
                                StepName::Build,
                                StepStatus::Failed,
                                t,
                                None,
                                format!("{err} ({cached})"),
                            );
                            false
                        }
                        (None, None) => {
                            steps.record(
                                StepName::Build,
                                StepStatus::Succeeded,
                                t,
                                None,
                                format!("built {tag}; {cached}"),
                            );
                            true
                        }
                    }
                }
            }
        }
    };

    // run
    let labels = job_labels(ctx);
    if !built {
        steps.not_run(StepName::Run, "the image was not built");
    } else {
        let t = Instant::now();
        let container = ContainerSpec {
            name: format!("janitor-{}-run", ctx.job.job_id),
            image: tag.clone(),
            cmd: spec.smoke_command.clone(),
            gpu: spec.gpu_required,
            labels: labels.clone(),
            ..Default::default()
        };
        let mut on_line = |l: &str| {
            scanner.scan(l);
            sink.line(&format!("[run] {l}"));
        };
        let (status, code, detail) = match engine
            .run(&container, deadline, ctx.graces, cancel, &mut on_line)
            .await
        {
            Err(e) => (StepStatus::Failed, None, e.to_string()),
            Ok(o) => match (o.stopped, o.exit_code) {
                (Some(reason), code) => {
                    (stop_status(reason), code, stop_detail(reason, spec.timeout))
                }
                (None, Some(0)) => (
                    StepStatus::Succeeded,
                    Some(0),
                    "exited with code 0".to_string(),
                ),
                (None, Some(code)) => (
                    StepStatus::Failed,
                    Some(code),
                    format!("exited with code {code}"),
                ),
                (None, None) => (
                    StepStatus::Failed,
                    None,
                    "the container's exit code could not be read".to_string(),
                ),
            },
        };
        steps.record(StepName::Run, status, t, code, detail);
    }

    // gpu
    if !spec.gpu_required {
        steps.list.push(StepReport {
            name: StepName::Gpu,
            status: StepStatus::Skipped,
            duration_seconds: 0.0,
            exit_code: None,
            detail: "the job does not require a GPU".to_string(),
        });
    } else if !built || steps.stopped() {
        steps.not_run(
            StepName::Gpu,
            if built {
                "the job was stopped"
            } else {
                "the image was not built"
            },
        );
    } else {
        let t = Instant::now();
        let container = ContainerSpec {
            name: format!("janitor-{}-gpu", ctx.job.job_id),
            image: tag.clone(),
            entrypoint: Some(vec!["nvidia-smi".to_string()]),
            cmd: Some(vec![
                "--query-gpu=name,driver_version,memory.total".to_string(),
                "--format=csv,noheader,nounits".to_string(),
            ]),
            gpu: true,
            labels: labels.clone(),
            ..Default::default()
        };
        let lines = Mutex::new(Vec::new());
        let mut on_line = |l: &str| {
            sink.line(&format!("[gpu] {l}"));
            if let Ok(mut v) = lines.lock() {
                v.push(l.to_string());
            }
        };
        let outcome = engine
            .run(&container, deadline, ctx.graces, cancel, &mut on_line)
            .await;
        let lines = lines.into_inner().unwrap_or_default();
        let (status, code, detail) = match outcome {
            Err(e) => (
                StepStatus::Failed,
                None,
                format!("no usable NVIDIA GPU in the container: {e}"),
            ),
            Ok(o) => match (o.stopped, o.exit_code) {
                (Some(reason), code) => {
                    (stop_status(reason), code, stop_detail(reason, spec.timeout))
                }
                (None, Some(0)) => match parse_gpus(&lines) {
                    Some(info) => {
                        let detail = format!(
                            "{} GPU(s): {}",
                            info.count,
                            info.model.clone().unwrap_or_default()
                        );
                        gpu = Some(info);
                        (StepStatus::Succeeded, Some(0), detail)
                    }
                    None => (
                        StepStatus::Failed,
                        Some(0),
                        "nvidia-smi listed no GPU".to_string(),
                    ),
                },
                (None, code) => (
                    StepStatus::Failed,
                    code,
                    format!(
                        "nvidia-smi failed with exit code {}",
                        code.map_or("unknown".to_string(), |c| c.to_string())
                    ),
                ),
            },
        };
        steps.record(StepName::Gpu, status, t, code, detail);
    }

    // agent
    match &spec.agent_image {
        None => steps.list.push(StepReport {
            name: StepName::Agent,
            status: StepStatus::Skipped,
            duration_seconds: 0.0,
            exit_code: None,
            detail: "no agent image configured".to_string(),
        }),
        Some(_) if !cloned || steps.stopped() => steps.not_run(
            StepName::Agent,
            if cloned {
                "the job was stopped"
            } else {
                "the clone did not succeed"
            },
        ),
        Some(image) => {
            let t = Instant::now();
            let (status, code, detail, output) = run_agent(
                engine,
                ctx,
                image,
                &repo_dir,
                &io_dir,
                &steps.list,
                deadline,
                cancel,
                sink,
            )
            .await;
            agent_output = output;
            steps.record(StepName::Agent, status, t, code, detail);
        }
    }

    let errors = scanner.into_lines();
    let finished_at = OffsetDateTime::now_utc();
    let (status, reason) = verdict(&steps.list, &errors);
    if let Err(e) = tokio::fs::remove_dir_all(&job_dir).await {
        tracing::warn!(path = %job_dir.display(), error = %e, "could not remove the job workspace");
    }
    let duration = (finished_at - started_at).as_seconds_f64().max(0.0);
    Report {
        schema: REPORT_SCHEMA,
        job_id: ctx.job.job_id.clone(),
        run_id: ctx.job.run_id.clone(),
        repo: spec.repo.clone(),
        prompt: spec.prompt.clone(),
        gpu_required: spec.gpu_required,
        status,
        reason,
        attempt: ctx.attempt,
        steps: steps.list,
        timings: Timings {
            enqueued_at: ctx.job.enqueued_at,
            started_at,
            finished_at,
            queue_wait_seconds: round_ms(
                (started_at - ctx.job.enqueued_at)
                    .try_into()
                    .unwrap_or_default(),
            ),
            duration_seconds: round_ms(Duration::from_secs_f64(duration)),
        },
        errors,
        logs: ctx.log_ref.clone(),
        instance: ctx.instance.clone(),
        gpu,
        cache,
        disk: DiskInfo {
            path: ctx.work_root.display().to_string(),
            free_before_bytes: free_before,
            free_after_bytes: free_bytes(&ctx.work_root),
            free_inodes_after: crate::hygiene::disk(&ctx.work_root).map(|d| d.free_inodes),
        },
        estimated_cost_usd: janitor_model::pricing::cost_usd(&ctx.instance.instance_type, duration),
        agent: agent_output,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The final status and its one-line reason, from the steps and the scanned output.
pub fn verdict(steps: &[StepReport], errors: &ErrorLines) -> (JobStatus, Option<String>) {
    let first = |want: StepStatus| steps.iter().find(|s| s.status == want);
    let because = |s: &StepReport| Some(format!("{}: {}", s.name.as_str(), s.detail));
    if let Some(s) = first(StepStatus::TimedOut) {
        return (JobStatus::TimedOut, because(s));
    }
    if let Some(s) = first(StepStatus::Interrupted) {
        return (JobStatus::Interrupted, because(s));
    }
    if let Some(s) = first(StepStatus::Failed) {
        return (JobStatus::Failed, because(s));
    }
    if errors.count > 0 {
        let first_line = errors.first.first().cloned().unwrap_or_default();
        return (
            JobStatus::Failed,
            Some(format!(
                "{} unexpected ERROR line(s), first: {first_line}",
                errors.count
            )),
        );
    }
    (JobStatus::Succeeded, None)
}

/// `name, driver, memory MiB` lines from `nvidia-smi --query-gpu`.
pub fn parse_gpus(lines: &[String]) -> Option<GpuInfo> {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split(',').map(str::trim).collect::<Vec<_>>())
        .filter(|f| f.len() >= 3 && !f[0].is_empty())
        .collect();
    let first = rows.first()?;
    Some(GpuInfo {
        count: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        model: Some(first[0].to_string()),
        driver: Some(first[1].to_string()),
        memory_mib: first[2].parse().ok(),
    })
}

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

async fn clone(
    ctx: &JobContext,
    dest: &Path,
    deadline: Instant,
    cancel: &CancellationToken,
    sink: &dyn LogSink,
) -> (StepStatus, String) {
    let repo = &ctx.job.spec.repo;
    let url = repo.clone_url();
    let source = match names::check_url(&url, ctx.allow_local_repos, None) {
        Ok(s) => s,
        Err(e) => return (StepStatus::Failed, e),
    };
    if let CloneSource::Local(path) = &source {
        if !path.join(".git").exists() {
            if repo.git_ref.is_some() {
                return (
                    StepStatus::Failed,
                    format!(
                        "{} is not a git repository, so `ref` cannot be checked out",
                        path.display()
                    ),
                );
            }
            let (from, to) = (path.clone(), dest.to_path_buf());
            return match tokio::task::spawn_blocking(move || copy_tree(&from, &to)).await {
                Ok(Ok(files)) => (
                    StepStatus::Succeeded,
                    format!(
                        "copied {files} files from the local directory {} (not a git repository)",
                        path.display()
                    ),
                ),
                Ok(Err(e)) => (
                    StepStatus::Failed,
                    format!("cannot copy {}: {e}", path.display()),
                ),
                Err(e) => (StepStatus::Failed, format!("copy task failed: {e}")),
            };
        }
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("clone")
        .arg("--depth=1")
        .arg("--single-branch")
        .arg("--no-tags");
    if let Some(r) = &repo.git_ref {
        cmd.arg("--branch").arg(r);
    }
    cmd.arg("--").arg(&url).arg(dest);
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                StepStatus::Failed,
                format!("cannot start git: {e} (is git installed?)"),
            )
        }
    };
    let mut tail = Vec::new();
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return (
            StepStatus::Failed,
            "git's output could not be read".to_string(),
        );
    };
    let mut out = BufReader::new(out).lines();
    let mut err = BufReader::new(err).lines();
    let (mut out_open, mut err_open) = (true, true);
    let status = loop {
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => sink.line(&format!("[clone] {l}")),
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) => {
                    sink.line(&format!("[clone] {l}"));
                    tail.push(l);
                    if tail.len() > 3 { tail.remove(0); }
                }
                _ => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => break status,
            () = tokio::time::sleep_until(deadline) => {
                let _ = child.kill().await;
                return (StepStatus::TimedOut, stop_detail(StopReason::Deadline, ctx.job.spec.timeout));
            }
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return (StepStatus::Interrupted, stop_detail(StopReason::Interrupted, ctx.job.spec.timeout));
            }
        }
    };
    match status {
        Ok(s) if s.success() => {
            let head = tokio::process::Command::new("git")
                .arg("-C")
                .arg(dest)
                .arg("rev-parse")
                .arg("HEAD")
                .stdin(Stdio::null())
                .output()
                .await
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown".to_string());
            (StepStatus::Succeeded, format!("cloned {url} at {head}"))
        }
        Ok(s) => (
            StepStatus::Failed,
            format!("git clone {url} failed ({s}): {}", tail.join(" / ")),
        ),
        Err(e) => (StepStatus::Failed, format!("git clone {url} failed: {e}")),
    }
}

/// Copies a directory tree (regular files and directories; links are skipped). Returns the file count.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut files = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            files += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            files += 1;
        }
    }
    Ok(files)
}

#[allow(clippy::too_many_arguments)]
async fn run_agent(
    engine: &Engine,
    ctx: &JobContext,
    image: &str,
    repo_dir: &Path,
    io_dir: &Path,
    steps: &[StepReport],
    deadline: Instant,
    cancel: &CancellationToken,
    sink: &dyn LogSink,
) -> (StepStatus, Option<i64>, String, Option<serde_json::Value>) {
    if !engine.has_image(image).await {
        if let Err(e) = engine.pull(image).await {
            return (
                StepStatus::Failed,
                None,
                format!("agent image {image} is not present and could not be pulled: {e}"),
                None,
            );
        }
    }
    let input = serde_json::json!({
        "job_id": ctx.job.job_id,
        "run_id": ctx.job.run_id,
        "repo": ctx.job.spec.repo,
        "prompt": ctx.job.spec.prompt,
        "steps": steps,
    });
    if let Err(e) = tokio::fs::write(io_dir.join("steps.json"), input.to_string()).await {
        return (
            StepStatus::Failed,
            None,
            format!("cannot write the agent's input: {e}"),
            None,
        );
    }
    if !repo_dir.exists() {
        let _ = tokio::fs::create_dir_all(repo_dir).await;
    }
    let container = ContainerSpec {
        name: format!("janitor-{}-agent", ctx.job.job_id),
        image: image.to_string(),
        env: vec![
            format!("JANITOR_PROMPT={}", ctx.job.spec.prompt),
            format!("JANITOR_REPO={}", ctx.job.spec.repo.full_name()),
            format!("JANITOR_JOB_ID={}", ctx.job.job_id),
            "JANITOR_WORKSPACE=/workspace".to_string(),
            "JANITOR_STEPS=/janitor/steps.json".to_string(),
            format!("JANITOR_OUTPUT=/janitor/{AGENT_OUTPUT}"),
        ],
        binds: vec![
            format!("{}:/workspace", repo_dir.display()),
            format!("{}:/janitor", io_dir.display()),
        ],
        labels: job_labels(ctx),
        gpu: ctx.job.spec.gpu_required,
        ..Default::default()
    };
    let mut on_line = |l: &str| sink.line(&format!("[agent] {l}"));
    let outcome = match engine
        .run(&container, deadline, ctx.graces, cancel, &mut on_line)
        .await
    {
        Err(e) => return (StepStatus::Failed, None, e.to_string(), None),
        Ok(o) => o,
    };
    if let Some(reason) = outcome.stopped {
        return (
            stop_status(reason),
            outcome.exit_code,
            stop_detail(reason, ctx.job.spec.timeout),
            None,
        );
    }
    let path = io_dir.join(AGENT_OUTPUT);
    let output = match tokio::fs::metadata(&path).await {
        Err(_) => Ok(None),
        Ok(m) if m.len() > AGENT_OUTPUT_LIMIT => Err(format!(
            "{AGENT_OUTPUT} is {} bytes, over the {AGENT_OUTPUT_LIMIT}-byte limit",
            m.len()
        )),
        Ok(_) => match tokio::fs::read_to_string(&path).await {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map(Some)
                .map_err(|e| format!("{AGENT_OUTPUT} is not JSON: {e}")),
            Err(e) => Err(format!("cannot read {AGENT_OUTPUT}: {e}")),
        },
    };
    match (outcome.exit_code, output) {
        (_, Err(e)) => (StepStatus::Failed, outcome.exit_code, e, None),
        (Some(0), Ok(out)) => {
            let detail = if out.is_some() {
                "exited with code 0; its JSON output is merged under `agent`"
            } else {
                "exited with code 0 without writing JSON output"
            };
            (StepStatus::Succeeded, Some(0), detail.to_string(), out)
        }
        (code, Ok(out)) => (
            StepStatus::Failed,
            code,
            format!(
                "exited with code {}",
                code.map_or("unknown".to_string(), |c| c.to_string())
            ),
            out,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_scanner_matches_the_word_only() {
        let mut s = ErrorScanner::new(&["ERROR: cuda warmup".to_string()]);
        for line in [
            "ERROR: disk full",
            "xERRORx",
            "an error",
            "ERROR: cuda warmup skipped",
            "[ERROR] bad",
        ] {
            s.scan(line);
        }
        let found = s.into_lines();
        assert_eq!(found.count, 2);
        assert_eq!(found.first, ["ERROR: disk full", "[ERROR] bad"]);
    }

    #[test]
    fn tags_are_docker_safe() {
        assert_eq!(
            image_tag("runpod-workers", "worker-faster_whisper"),
            "janitor/runpod-workers/worker-faster-whisper:latest"
        );
        assert_eq!(image_tag("Org", "A.b"), "janitor/org/a-b:latest");
    }

    #[test]
    fn gpu_lines() {
        let info = parse_gpus(&[
            "NVIDIA A10G, 550.54.15, 23028".to_string(),
            "NVIDIA A10G, 550.54.15, 23028".to_string(),
        ])
        .unwrap();
        assert_eq!(info.count, 2);
        assert_eq!(info.memory_mib, Some(23028));
        assert_eq!(parse_gpus(&["No devices were found".to_string()]), None);
    }

    fn step(name: StepName, status: StepStatus) -> StepReport {
        StepReport {
            name,
            status,
            duration_seconds: 0.0,
            exit_code: None,
            detail: "d".into(),
        }
    }

    #[test]
    fn verdicts() {
        let none = ErrorLines::default();
        let ok = [
            step(StepName::Clone, StepStatus::Succeeded),
            step(StepName::Gpu, StepStatus::Skipped),
        ];
        assert_eq!(verdict(&ok, &none), (JobStatus::Succeeded, None));
        let errs = ErrorLines {
            count: 1,
            first: vec!["ERROR x".into()],
        };
        assert_eq!(verdict(&ok, &errs).0, JobStatus::Failed);
        let failed = [
            step(StepName::Build, StepStatus::Failed),
            step(StepName::Run, StepStatus::NotRun),
        ];
        assert_eq!(
            verdict(&failed, &none),
            (JobStatus::Failed, Some("build: d".into()))
        );
        let timed = [
            step(StepName::Build, StepStatus::Failed),
            step(StepName::Run, StepStatus::TimedOut),
        ];
        assert_eq!(verdict(&timed, &none).0, JobStatus::TimedOut);
        let intr = [step(StepName::Run, StepStatus::Interrupted)];
        assert_eq!(verdict(&intr, &none).0, JobStatus::Interrupted);
    }
}
