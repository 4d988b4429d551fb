//! The job report: what the daemon stores in the ledger and `janitorctl` reads back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Builder, RepoRef};

/// Version of the report document. Version 2 added `tests`, `gpu_usage`, the `error` status
/// and the `preflight` and `test` steps; readers take every version up to this one.
pub const REPORT_SCHEMA: u32 = 2;

/// A job's final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
    Rejected,
    Cancelled,
    /// Not the repository's fault (the engine, the disk, the network, the daemon, a mismatch
    /// between the worker's needs and this instance): the job is tried again.
    Error,
    /// Failed, then passed after the agent's change (which is kept as a patch or a PR).
    Fixed,
    /// Failed, and the agent says it cannot be fixed, with its reason.
    Unfixable,
    /// Passed, and the agent's change for the prompt (`agent: always`) passed too.
    Changed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Rejected => "rejected",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Error => "error",
            JobStatus::Fixed => "fixed",
            JobStatus::Unfixable => "unfixable",
            JobStatus::Changed => "changed",
        }
    }

    /// Whether the run did what it should for the repository: it passed, was fixed, or was
    /// changed as its prompt asked.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Fixed | JobStatus::Changed
        )
    }
}

/// The pipeline's steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    Clone,
    Preflight,
    Build,
    /// The worker's own tests against it in server mode.
    Test,
    /// The image's smoke command or CMD run to its exit (no runpod tests).
    Run,
    Gpu,
    Agent,
}

impl StepName {
    pub const ALL: [StepName; 7] = [
        StepName::Clone,
        StepName::Preflight,
        StepName::Build,
        StepName::Test,
        StepName::Run,
        StepName::Gpu,
        StepName::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Clone => "clone",
            StepName::Preflight => "preflight",
            StepName::Build => "build",
            StepName::Test => "test",
            StepName::Run => "run",
            StepName::Gpu => "gpu",
            StepName::Agent => "agent",
        }
    }
}

/// How a step ended. `not_run` is a step never reached because an earlier one failed;
/// `error` a step that could not do its work for a reason outside the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    Interrupted,
    NotRun,
    Error,
}

/// Where a job's tests came from: the first of these a repository has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestMode {
    /// The worker served HTTP (`RUNPOD_REALTIME_PORT`) and each test went through `/runsync`.
    Server,
    /// The smoke command or the image's CMD ran to its exit.
    RunToExit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Passed,
    Failed,
    TimedOut,
    #[default]
    NotRun,
}

/// One test's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    pub status: TestStatus,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of its output (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// For an expectation that is reported, not judged (`.github/tests.json`'s
    /// `expectedOutput`): whether the output met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_matches: Option<bool>,
    /// Its place in the tests file (from 0): names may repeat there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The worker's command it ran against, as words (the image's CMD is said as `CMD`), and
    /// where that command and the environment came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<String>,
    /// The rule that judged the answer (`status`, `status+expected_output`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// The worker's tests: where they came from, how they ran, and each one's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestsReport {
    /// `config`, the tests file's path, `test_input.json`, `smoke_command` or `cmd`.
    pub source: String,
    pub mode: TestMode,
    /// The Dockerfile that was built.
    pub dockerfile: String,
    /// Container start to the worker's first HTTP answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_seconds: Option<f64>,
    pub passed: u32,
    pub total: u32,
    #[serde(default)]
    pub results: Vec<TestResult>,
    /// What a maintainer should know about the tests file (a likely unit mistake, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The container port the SDK's server mode was given (`RUNPOD_REALTIME_PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_port: Option<u16>,
    /// The runpod SDK version the worker printed at its start (`--- Starting Serverless
    /// Worker |  Version 1.12.0 ---`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
}

impl TestsReport {
    /// `passed 3/3 tests`, or the first failing test and why.
    pub fn summary(&self) -> String {
        if self.mode == TestMode::RunToExit {
            return match self.source.as_str() {
                "smoke_command" => "no runpod tests; ran smoke_command to its exit".to_string(),
                _ => "no runpod tests; ran the image's CMD to its exit".to_string(),
            };
        }
        match self.results.iter().find(|r| r.status != TestStatus::Passed) {
            None => format!("passed {}/{} tests", self.passed, self.total),
            Some(r) => format!(
                "{}/{} tests passed; `{}` {}{}",
                self.passed,
                self.total,
                r.name,
                match r.status {
                    TestStatus::TimedOut => "timed out",
                    TestStatus::NotRun => "did not run",
                    _ => "failed",
                },
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Whether the worker used the GPU while its tests ran (NVML's per-process accounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageState {
    Used,
    Unused,
    /// No NVML on the instance, or it gave no per-process figures: never counted as a pass.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub state: UsageState,
    pub samples: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_utilization_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: StepName,
    pub status: StepStatus,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub detail: String,
    /// What the step printed and what of it reached the log group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
}

/// One step's output: lines and bytes, and its CloudWatch events (a line over 256 KiB is
/// several) shipped, dropped or not taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    pub lines: u64,
    pub bytes: u64,
    pub events: u64,
    pub shipped_events: u64,
    pub dropped_events: u64,
    pub failed_events: u64,
}

/// A job's output: every line is scanned for `ERROR`; these say how much of it reached
/// CloudWatch (a line over the event size is several events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCounts {
    pub lines: u64,
    pub bytes: u64,
    pub shipped_events: u64,
    /// Events the job wrote faster than shipping took them.
    pub dropped_events: u64,
    /// Events CloudWatch did not take after the retries.
    pub failed_events: u64,
    /// Why events are missing from the log group, when some are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_reason: Option<String>,
    /// Every event the output makes (shipped + dropped + failed).
    #[serde(default)]
    pub events: u64,
    /// The whole output, gzipped, under the ledger (`runs/{run}/jobs/{job}/output.log.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Why there is no archive, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_error: Option<String>,
}

/// What the agent's fix attempts did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixReport {
    pub max_attempts: u32,
    pub attempts: Vec<FixAttempt>,
    /// The change against the cloned commit, stored beside the report (`fix.patch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Why there is no stored patch although there is a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_error: Option<String>,
    /// The patch's text, for the daemon to store; never in the report itself.
    #[serde(skip)]
    pub patch_text: Option<String>,
    /// The commit pushed for the pull request (its head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<String>,
    /// `created | updated | failed | no_changes | not_applicable`.
    pub pr_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// Why publishing failed, when it did (the patch is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_error: Option<String>,
}

/// A commit status janitord posted on GitHub (`context` `janitor/validate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedStatus {
    pub commit: String,
    /// `success`, `failure` or `error`.
    pub state: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// `posted`, `already_posted` (a retried job found its own status there), or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One round: the agent, then the changed tree validated again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixAttempt {
    pub attempt: u32,
    pub agent: StepReport,
    /// The agent's `/janitor/result.json`, as it wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Whether the agent left changes in the checkout.
    pub changed: bool,
    /// The re-validation's steps (none when nothing changed).
    pub steps: Vec<StepReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsReport>,
    /// The re-validation's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the agent's change did to the repository's tests (`removed test \`x\``): the
    /// re-validation ran the tests as they were before it, plus the ones it added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests_changed: Vec<String>,
}

/// The builder a job's image was built with, on which engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildReport {
    pub builder: Builder,
    /// The Docker Engine's version (`20.10.24`, `27.3.1`): its built-in Dockerfile frontend
    /// follows it.
    pub engine_version: String,
    pub api_version: String,
    /// BuildKit's own version, where the engine says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildkit_version: Option<String>,
    /// The multi-stage target built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Ids of the secrets offered to the build (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The hash of the build's inputs (`sha256:…`): the context's content, the Dockerfile's
    /// path, the target, the build arguments, the secrets' ids and the base images' ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// Whether the image on the instance was reused instead of built, and why (or why not).
    #[serde(default)]
    pub reused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<String>,
    /// How many `RUN --mount=type=cache` mounts were given this repository's own cache id
    /// (no other repository's build reads or writes them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_mounts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub queue_wait_seconds: f64,
    pub duration_seconds: f64,
}

/// `ERROR` lines that matched none of the job's `expected_errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorLines {
    pub count: u64,
    pub first: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRef {
    pub group: String,
    pub stream: String,
}

/// Where the job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub instance_type: String,
    pub availability_zone: String,
    /// `spot`, `on-demand`, or `local` for `janitorctl run --local`.
    pub lifecycle: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub count: u32,
    pub model: Option<String>,
    pub driver: Option<String>,
    pub memory_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Build steps answered from the layer cache.
    pub hits: u32,
    /// Build steps in all.
    pub steps: u32,
    /// Bytes the layer cache takes (the volume's used bytes, or the budgeted images'), where known.
    pub bytes_used: Option<u64>,
    /// Images evicted since the previous job, to stay under the cache budget.
    #[serde(default)]
    pub evicted: Vec<String>,
    /// Whether the cache is on its own volume; `false` means it shares the root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_volume: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: String,
    pub free_before_bytes: Option<u64>,
    pub free_after_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_inodes_after: Option<u64>,
}

/// The final report of one job attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub job_id: String,
    pub run_id: String,
    pub repo: RepoRef,
    pub prompt: String,
    pub gpu_required: bool,
    pub status: JobStatus,
    /// One line saying why the job did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempt: u32,
    pub steps: Vec<StepReport>,
    pub timings: Timings,
    pub errors: ErrorLines,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogRef>,
    pub instance: InstanceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuInfo>,
    /// The worker's tests and their results (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsReport>,
    /// What the worker's processes did on the GPU while the tests ran (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<GpuUsage>,
    /// What built the image: the builder and the engine's versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildReport>,
    pub cache: CacheInfo,
    pub disk: DiskInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    /// What the agent's model calls cost, every attempt together (from each `result.json`'s
    /// `cost_usd`), beside the instance's estimated cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cost_usd: Option<f64>,
    /// What the job printed and what reached the log group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputCounts>,
    /// The agent container's own JSON output, merged as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<serde_json::Value>,
    /// The agent's fix attempts, each re-validated, and what became of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixReport>,
    /// The commit validated (the checkout's `HEAD`), when the repository is a git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The commit statuses posted (`report_status: true`), or why one was not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<PostedStatus>,
    pub daemon_version: String,
}

/// Who and what a job was, for a report written without running its steps.
#[derive(Debug, Clone)]
pub struct JobIdentity {
    pub job_id: String,
    pub run_id: String,
    pub repo: RepoRef,
    pub prompt: String,
    pub gpu_required: bool,
    pub enqueued_at: OffsetDateTime,
    pub attempt: u32,
}

impl Report {
    pub fn step(&self, name: StepName) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// A report with no steps: a job the pipeline could not finish, or one cancelled before it ran.
    pub fn without_steps(
        job: JobIdentity,
        instance: InstanceInfo,
        status: JobStatus,
        reason: String,
        version: &str,
    ) -> Report {
        let now = OffsetDateTime::now_utc();
        Report {
            schema: REPORT_SCHEMA,
            job_id: job.job_id,
            run_id: job.run_id,
            repo: job.repo,
            prompt: job.prompt,
            gpu_required: job.gpu_required,
            status,
            reason: Some(reason),
            attempt: job.attempt,
            steps: Vec::new(),
            timings: Timings {
                enqueued_at: job.enqueued_at,
                started_at: now,
                finished_at: now,
                queue_wait_seconds: 0.0,
                duration_seconds: 0.0,
            },
            errors: ErrorLines::default(),
            logs: None,
            instance,
            gpu: None,
            tests: None,
            gpu_usage: None,
            build: None,
            cache: CacheInfo::default(),
            disk: DiskInfo::default(),
            estimated_cost_usd: None,
            model_cost_usd: None,
            output: None,
            agent: None,
            fix: None,
            commit: None,
            statuses: Vec::new(),
            daemon_version: version.to_string(),
        }
    }
}
