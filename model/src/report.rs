//! The job report: what the daemon stores in the ledger and `janitorctl` reads back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::RepoRef;

/// Version of the report document.
pub const REPORT_SCHEMA: u32 = 1;

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
        }
    }
}

/// The pipeline's steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    Clone,
    Build,
    Run,
    Gpu,
    Agent,
}

impl StepName {
    pub const ALL: [StepName; 5] = [
        StepName::Clone,
        StepName::Build,
        StepName::Run,
        StepName::Gpu,
        StepName::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Clone => "clone",
            StepName::Build => "build",
            StepName::Run => "run",
            StepName::Gpu => "gpu",
            StepName::Agent => "agent",
        }
    }
}

/// How a step ended. `not_run` is a step never reached because an earlier one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    Interrupted,
    NotRun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: StepName,
    pub status: StepStatus,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub detail: String,
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
    pub cache: CacheInfo,
    pub disk: DiskInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    /// What the job printed and what reached the log group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputCounts>,
    /// The agent container's own JSON output, merged as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<serde_json::Value>,
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
            cache: CacheInfo::default(),
            disk: DiskInfo::default(),
            estimated_cost_usd: None,
            output: None,
            agent: None,
            daemon_version: version.to_string(),
        }
    }
}
